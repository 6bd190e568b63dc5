"""Build what ``benchmarks/gpu_embed.py run`` needs on the bare GPU machine (called by ``gpu_embed.py prepare``).

* ``.whl/facenet_pytorch-2.5.3-py3-none-any.whl`` (pip download, no dependencies);
* ``.rfr/gpu_embed/casia-webface-fp16.pt``: the CASIA-WebFace state dict stored as fp16 (47 MB; fp32 is 94 MB,
  over the 64 MiB the device call can carry), with the cosine between embeddings under the original and the
  rounded weights (both computed in fp32 here) in ``meta.json`` as ``weights_fp16_rounding``;
* ``.rfr/gpu_embed/crops.npz``: LFW centre crops as JPEG and their fp32 CPU embeddings under the original
  weights, so the GPU run compares every path with the true fp32 result. Git-ignored; delete after the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rfr.core.imaging import encode_jpeg
from rfr.core.settings import EmbedSettings, load_settings
from rfr.embedding.device import Runtime
from rfr.embedding.embedder import CLASSIFIER_PREFIX, CROP_SIZE, FacenetEmbedder, load_embedder, read_state_dict
from rfr.embedding.samples import centre_crop, lfw_people
from rfr.face.crops import decode_crop
from rfr.models import facenet_weights_path

PEOPLE = 128  # two photos each: 256 crops


def _wheel(wheels: Path, requirement: str) -> Path:
    found = sorted(wheels.glob("facenet_pytorch-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
               "-d", str(wheels)]
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob("facenet_pytorch-*.whl"))
    return found[0]


def _crops(lfw_dir: Path) -> tuple[list[bytes], np.ndarray]:
    people = lfw_people(lfw_dir, min_images=2, limit=PEOPLE)
    jpegs = [encode_jpeg(centre_crop(images[k])) for k in (0, 1) for images in people]
    return jpegs, np.stack([decode_crop(j, CROP_SIZE) for j in jpegs])


def prepare(model_dir: Path | None, lfw_dir: Path, prep: Path, wheels: Path, weights_name: str, crops_name: str,
            requirement: str) -> None:
    model_dir = model_dir or load_settings().model_dir
    prep.mkdir(parents=True, exist_ok=True)
    wheel = _wheel(wheels, requirement)
    torch.set_num_threads(2)
    fp32 = load_embedder(EmbedSettings(device="cpu", precision="fp32"), model_dir).load()
    state = {k: v for k, v in read_state_dict(facenet_weights_path(model_dir)).items()
             if not k.startswith(CLASSIFIER_PREFIX)}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(half, prep / weights_name)
    meta: dict[str, object] = {"model_id": fp32.model_id, "weights_sha256_fp32": fp32.weights_sha256}
    if lfw_dir.is_dir():
        jpegs, crops = _crops(lfw_dir)
        ref = fp32.embed(crops)
        rounded = FacenetEmbedder(prep / weights_name, fp32.model_id, "fp16-rounded",
                                  Runtime("cpu", "fp32", True, 2, "prepare")).load()
        cos = (rounded.embed(crops) * ref).sum(axis=1)
        meta["weights_fp16_rounding"] = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
        offsets = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
        np.savez(prep / crops_name, jpeg_data=np.frombuffer(b"".join(jpegs), dtype=np.uint8),
                 jpeg_offsets=offsets, ref_fp32=ref.astype(np.float32))
        meta["crops"] = len(jpegs)
    else:
        meta["crops"] = "none: LFW absent, the GPU run uses synthetic crops and skips the fp32-reference check"
    (prep / "meta.json").write_text(json.dumps(meta, indent=2))
    size = sum(f.stat().st_size for f in [wheel, *prep.iterdir()]) / 2**20
    print(json.dumps({"wheel": str(wheel), "prep": str(prep), "carry_mib": round(size, 1), **meta}, indent=2))
