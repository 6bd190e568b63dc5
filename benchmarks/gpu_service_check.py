#!/usr/bin/env python3
"""The embed service's own code on a GPU: device/precision resolution, ``FacenetEmbedder`` on CUDA, and its speed.

``gpu_embed.py`` measures the model and the decode paths with its own code; this runs the service's classes
(``rfr.settings.EmbedSettings`` -> ``resolve_runtime`` -> ``FacenetEmbedder.embed`` on host uint8 crops, as the
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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpu_embed import write_report  # noqa: E402 - the sibling script (its folder is on sys.path)

from rfr.settings import EmbedSettings  # noqa: E402 - after the repository is on the path
from services.embed.device import resolve_runtime  # noqa: E402
from services.embed.embedder import FacenetEmbedder  # noqa: E402

PREP = REPO / ".rfr" / "gpu_embed"


def crops_and_reference() -> tuple[np.ndarray, np.ndarray]:
    """The prepared LFW crops as N x 160 x 160 x 3 uint8 RGB (decoded as the handler does) and their fp32 CPU
    embeddings under the original fp32 weights."""
    data = np.load(PREP / "crops.npz")
    buf, offsets = data["jpeg_data"], data["jpeg_offsets"]
    crops = []
    for i in range(len(offsets) - 1):
        bgr = cv2.imdecode(np.frombuffer(buf[offsets[i]:offsets[i + 1]].tobytes(), np.uint8), cv2.IMREAD_COLOR)
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(crops), np.asarray(data["ref_fp32"], dtype=np.float32)


def faces_per_s(embedder: FacenetEmbedder, crops: np.ndarray, batch: int, seconds: float) -> float:
    x = crops[np.arange(batch) % len(crops)]
    embedder.embed(x)
    rates: list[float] = []
    started = time.perf_counter()
    while len(rates) < 3 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        embedder.embed(x)  # returns host numpy: the device work is complete
        rates.append(batch / (time.perf_counter() - t0))
    return round(float(np.median(rates)), 1)


def check(settings: EmbedSettings, crops: np.ndarray, ref: np.ndarray, batches: tuple[int, ...],
          seconds: float) -> dict[str, Any]:
    runtime = resolve_runtime(settings)
    meta = json.loads((PREP / "meta.json").read_text())
    embedder = FacenetEmbedder(PREP / "casia-webface-fp16.pt", meta["model_id"], meta["weights_sha256_fp32"],
                               runtime).load()
    vectors = embedder.embed(crops)
    cosine = (vectors * ref).sum(axis=1)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "runtime": runtime.describe(), "reason": runtime.reason,
        "vs_cpu_fp32_reference": {"min": round(float(cosine.min()), 6), "mean": round(float(cosine.mean()), 6)},
        "unit_norm_max_error": float(np.abs(norms - 1).max()),
        "faces_per_s_by_batch": {str(b): faces_per_s(embedder, crops, b, seconds) for b in batches},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parser.add_argument("--cpu", action="store_true", help="check the script on the CPU, tiny sizes")
    args = parser.parse_args()
    crops, ref = crops_and_reference()
    if args.cpu:
        crops, ref = crops[:8], ref[:8]
        plans = {"cpu_auto": EmbedSettings(device="cpu")}
        batches, seconds = (1, 8), 0.0
    else:
        plans = {"cuda_auto": EmbedSettings(), "cuda_fp32": EmbedSettings(device="cuda", precision="fp32")}
        batches, seconds = (1, 8, 32, 256, 1024), 1.5
    import torch

    result: dict[str, Any] = {"torch": torch.__version__,
                              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                              "faces": len(crops)}
    for name, settings in plans.items():
        result[name] = check(settings, crops, ref, batches, seconds)
    write_report(result, args.out, "gpu_service_check.json")


if __name__ == "__main__":
    main()
