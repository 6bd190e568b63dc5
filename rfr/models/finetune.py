"""Fine-tuned FaceNet weights shipped as a small delta inside the package, merged with the fetched base weights.

``casia-webface-lowres-v1`` is facenet-pytorch's ``InceptionResnetV1`` with the CASIA-WebFace weights
(``rfr models fetch``) and its last blocks fine-tuned for small, soft faces by ``rfr train lowres``
(rfr/tools/train/lowres.py, docs/eval/report.md). Only what training changed ships, as a ``torch.save`` dict of
tensors (``rfr/models/weights/<name>.delta.pt``, pinned by sha256 in :data:`DELTAS`):

* ``<name>`` (a key of the base state dict): the tensor that replaces the base one (fp16 or fp32);
* ``<conv>.weight.lora_down`` (r, in, kh, kw) and ``<conv>.weight.lora_up`` (out, r): a low-rank update added
  to the base convolution weight, ``W + up @ down`` (the scale folded into ``up``).

``rfr models fetch`` builds the full state dict from the base file and the delta
(:func:`build_finetuned`, a :class:`rfr.models.Conversion`), so the embedder loads it like any other weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from rfr.models._store import ModelIntegrityError, ModelMissingError, atomic_output

LORA_DOWN = ".lora_down"
LORA_UP = ".lora_up"


@dataclass(frozen=True)
class Delta:
    """A packaged fine-tune: its model name, the base model it applies to, its file and pinned sha256."""

    model: str
    base: str
    resource: str
    sha256: str


LOWRES_V1 = Delta(
    model="casia-webface-lowres-v1",
    base="facenet-casia-webface",
    resource="casia-webface-lowres-v1.delta.pt",
    sha256="4f1789156e15bd6b06e643ca94cd4468c6883fbaa7dfeb0beade6c8235aec9b1",
)
"""``rfr train lowres`` defaults (LoRA rank 8 on every convolution from ``mixed_6a`` on, ``last_linear`` and
``last_bn`` fully; 500 steps of 32; fp16, 3.8 MB), trained on issue #17's 200 training identities of the shared
LFW faces (1,173 photos). This file came from that training on a lent H200 (``TrainConfig(device="cuda",
workers=14)``, the base weights rounded to fp16 to travel there); the same command on the CPU gives a delta of the
same quality but not the same bytes (docs/eval/report.md)."""

DELTAS: dict[str, Delta] = {LOWRES_V1.model: LOWRES_V1}
"""Fine-tuned models by name (``EmbedSettings.model``)."""


def delta_path(delta: Delta) -> Path:
    """The packaged delta file (``rfr/models/weights/...``)."""
    return Path(str(resources.files("rfr.models").joinpath("weights", delta.resource)))


def read_delta(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """The delta's tensors, after checking the file against its pinned sha256 (:class:`ModelIntegrityError`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelMissingError(f"the packaged fine-tune {path} is missing ({exc}); reinstall rfr") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelIntegrityError(f"{path}: sha256 {actual} is not the pinned {sha256}; reinstall rfr")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return {str(k): v for k, v in loaded.items()}


def apply_delta(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base`` with ``delta`` applied (see the module docstring); every result tensor has its base dtype.

    Raises ``KeyError`` for a delta key the base lacks, ``ValueError`` for a shape that does not fit.
    """
    merged = dict(base)
    for key, value in delta.items():
        if key.endswith(LORA_UP):
            continue
        if key.endswith(LORA_DOWN):
            name = key[: -len(LORA_DOWN)]
            down, up = value.float(), delta[name + LORA_UP].float()
            update = (up @ down.flatten(1)).reshape(base[name].shape)
            merged[name] = (base[name].float() + update).to(base[name].dtype)
        else:
            if key not in base:
                raise KeyError(f"the fine-tune changes {key}, which the base weights do not have")
            if value.shape != base[key].shape:
                raise ValueError(f"{key}: fine-tune shape {tuple(value.shape)} != base {tuple(base[key].shape)}")
            merged[key] = value.to(base[key].dtype)
    return merged


def build_finetuned(base_path: Path, out_path: Path, delta: Delta) -> None:
    """Write the full state dict of ``delta.model`` (the base at ``base_path`` plus the delta) to ``out_path``."""
    base = torch.load(base_path, map_location="cpu", weights_only=True)
    merged = apply_delta(base, read_delta(delta_path(delta), delta.sha256))
    with atomic_output(out_path) as fh:
        torch.save(merged, fh)
