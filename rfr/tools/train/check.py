"""A quick held-out check of a (fine-tuned) FaceNet while training: never on training identities, never the
reported numbers (those come from ``rfr eval``).

Identities: the non-training ones (:func:`rfr.tools.train.split.training_identities`) in the CALIBRATION half
of ``rfr eval``'s split (:func:`rfr.tools.eval.splits.half_of`, same seed), so tuning never looks at the half the
eval reports on. Each identity with >= 2 photos enrols its first photo and probes with its second; singles
alternate between gallery distractors and strangers (non-mated probes). Probes are aligned crops of the photo as
it is (``original``) and of the face seen 40 and 32 px wide through the ``mild`` camera of
:mod:`rfr.tools.degrade` (without the scene warp), keypoints jittered 3 % of the face width; seeded per photo.
Reports rank-1 and TPIR at FPIR 1 % (threshold: the 99th percentile of strangers' top scores, on this set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rfr.core.image_files import identity_folders
from rfr.tools.degrade import LEVELS
from rfr.tools.eval.splits import CALIBRATION, half_of
from rfr.tools.train.data import FaceSet, clean_crop, degrade_face, load_faceset
from rfr.tools.train.lowres import embed_all

CONDITIONS: dict[str, float | None] = {"original": None, "mild40": 40.0, "mild32": 32.0}
CAMERA = replace(LEVELS["mild"], max_rotation_deg=0.0, max_perspective=0.0)
JITTER = 0.03


@dataclass(frozen=True)
class CheckSet:
    gallery: FaceSet
    mated: FaceSet
    strangers: FaceSet


def check_set(root: Path, training: frozenset[str], cache: Path | None, model_dir: Path, seed: int = 0) -> CheckSet:
    """The held-out faces (see the module docstring)."""
    folders = {k: v for k, v in identity_folders(root).items()
               if k not in training and half_of(k, seed) == CALIBRATION}
    mated = {k: v for k, v in folders.items() if len(v) >= 2}
    singles = sorted(k for k, v in folders.items() if len(v) == 1)
    gallery = {k: v[:1] for k, v in mated.items()} | {k: folders[k] for k in singles[0::2]}
    return CheckSet(
        gallery=load_faceset(gallery, cache, model_dir),
        mated=load_faceset({k: v[1:2] for k, v in mated.items()}, cache, model_dir),
        strangers=load_faceset({k: folders[k] for k in singles[1::2]}, cache, model_dir),
    )


def probe_crops(faces: FaceSet, face_px: float | None, seed: int) -> npt.NDArray[np.uint8]:
    """Each photo's crop under one condition, seeded by the photo's position (the same for every model)."""
    crops = []
    for i, (image, detection) in enumerate(zip(faces.images, faces.detections, strict=True)):
        if face_px is None:
            crops.append(clean_crop(image, detection))
        else:
            rng = np.random.default_rng([seed, int(face_px), i])
            crops.append(degrade_face(image, detection, face_px, CAMERA, False, rng, JITTER))
    return np.stack(crops)


def open_set(gallery: torch.Tensor, gallery_ids: list[str], mated: torch.Tensor, mated_ids: list[str],
             strangers: torch.Tensor) -> dict[str, float]:
    """Rank-1 and TPIR at FPIR 1 % (threshold from the strangers' top scores) of unit embeddings."""
    scores = (mated @ gallery.T).numpy()
    best = scores.argmax(axis=1)
    hit = np.array([gallery_ids[b] == m for b, m in zip(best, mated_ids, strict=True)])
    top_stranger = (strangers @ gallery.T).numpy().max(axis=1)
    threshold = float(np.quantile(top_stranger, 0.99))
    tpir = hit & (scores.max(axis=1) > threshold)
    return {"rank1": round(float(hit.mean()), 4), "tpir_fpir1": round(float(tpir.mean()), 4)}


def evaluate(model: nn.Module, data: CheckSet, seed: int = 0) -> dict[str, dict[str, float]]:
    """Rank-1 and TPIR@FPIR1% per condition (the gallery is always the clean crops)."""
    gallery = embed_all(model, probe_crops(data.gallery, None, seed))
    gallery_ids = [data.gallery.identities[i] for i in data.gallery.labels]
    mated_ids = [data.mated.identities[i] for i in data.mated.labels]
    result = {}
    for name, px in CONDITIONS.items():
        mated = embed_all(model, probe_crops(data.mated, px, seed))
        strangers = embed_all(model, probe_crops(data.strangers, px, seed))
        result[name] = open_set(gallery, gallery_ids, mated, mated_ids, strangers)
    return result
