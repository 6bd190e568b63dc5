#!/usr/bin/env python3
"""The embed service's own code on a GPU: device/precision resolution, ``FacenetEmbedder`` on CUDA, and its speed.

``gpu_embed.py`` measures the model and the decode paths with its own code; this runs the service's classes
(``rfr.core.settings.EmbedSettings`` -> ``resolve_runtime`` -> ``FacenetEmbedder.embed`` on host uint8 crops, as the
handler calls it) and checks their embeddings against the CPU fp32 reference. Prints JSON.

Needs what ``gpu_embed.py prepare`` writes (``.rfr/gpu_embed/``) and, on the bare GPU machine, the service's
pure-Python dependencies as wheels in ``.whl/`` (pydantic, pydantic-core for CPython 3.12, pydantic-settings,
python-dotenv, typing-inspection, annotated-types, typing-extensions, facenet-pytorch). ONE device call::

    run(command="S=/tmp/site; python3 -m pip install -q --no-index --no-deps --target $S .whl/*.whl && "
                "PYTHONPATH=$S python3 benchmarks/gpu_service_check.py --out $OUT",
        carry=[".whl", ".rfr/gpu_embed"], timeout_s=240)

``--cpu`` runs the same checks on the CPU (tiny sizes) to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpu_embed import CFG, PREP, WEIGHTS, cpu_decoder, load_inputs, timed, write_report  # noqa: E402

from rfr.core.settings import EmbedSettings  # noqa: E402 - after the repository is on the path
from rfr.embedding.device import resolve_runtime  # noqa: E402
from rfr.embedding.embedder import FacenetEmbedder  # noqa: E402


def crops_and_reference() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The prepared LFW crops as N x 160 x 160 x 3 uint8 RGB (OpenCV, as the handler decodes them), their fp32
    CPU embeddings under the original fp32 weights, and prepare's meta."""
    jpegs, ref, meta = load_inputs()
    if ref is None:
        raise SystemExit(f"no prepared crops in {PREP}: run `gpu_embed.py prepare` first")
    decode, _ = cpu_decoder()
    return np.stack([decode(b) for b in jpegs]), np.asarray(ref, dtype=np.float32), meta


def faces_per_s(embedder: FacenetEmbedder, crops: np.ndarray, batch: int) -> float:
    """Median faces/s of ``embed`` on host crops (it returns host numpy: the device work is complete)."""
    x = crops[np.arange(batch) % len(crops)]
    return timed(lambda: embedder.embed(x), batch)


def check(settings: EmbedSettings, crops: np.ndarray, ref: np.ndarray, meta: dict[str, Any],
          batches: tuple[int, ...]) -> dict[str, Any]:
    runtime = resolve_runtime(settings)
    embedder = FacenetEmbedder(PREP / WEIGHTS, meta["model_id"], meta["weights_sha256_fp32"],
                               runtime).load()
    vectors = embedder.embed(crops)
    cosine = (vectors * ref).sum(axis=1)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "runtime": runtime.describe(), "reason": runtime.reason,
        "vs_cpu_fp32_reference": {"min": round(float(cosine.min()), 6), "mean": round(float(cosine.mean()), 6)},
        "unit_norm_max_error": float(np.abs(norms - 1).max()),
        "faces_per_s_by_batch": {str(b): faces_per_s(embedder, crops, b) for b in batches},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parser.add_argument("--cpu", action="store_true", help="check the script on the CPU, tiny sizes")
    args = parser.parse_args()
    crops, ref, meta = crops_and_reference()
    if args.cpu:
        crops, ref = crops[:8], ref[:8]
        plans = {"cpu_auto": EmbedSettings(device="cpu")}
        batches, CFG.device, CFG.seconds = (1, 8), "cpu", 0.0
    else:
        plans = {"cuda_auto": EmbedSettings(), "cuda_fp32": EmbedSettings(device="cuda", precision="fp32")}
        batches, CFG.seconds = (1, 8, 32, 256, 1024), 1.5
    import torch

    result: dict[str, Any] = {"torch": torch.__version__,
                              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                              "faces": len(crops)}
    for name, settings in plans.items():
        result[name] = check(settings, crops, ref, meta, batches)
    write_report(result, args.out, "gpu_service_check.json")


if __name__ == "__main__":
    main()
