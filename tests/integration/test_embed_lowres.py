"""The packaged low-resolution fine-tune (casia-webface-lowres-v1) as provisioned by `rfr models fetch`, on real
faces of identities it was never trained on: its own model id, clean faces as good, small faces better.

Faces: the first LFW people with two photos outside issue #17's training identities, aligned as the services
align them (MediaPipe keypoints, rfr/face/align.py); the first photo enrols, the second probes, as it is and seen
32 px wide through the ``mild`` camera (rfr/tools/train/check.py, seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rfr.core.image_files import identity_folders
from rfr.core.settings import EmbedSettings
from rfr.embedding.embedder import load_embedder
from rfr.models import read_manifest
from rfr.tools.train.check import probe_crops
from rfr.tools.train.data import FaceSet, load_faceset
from rfr.tools.train.split import training_identities

PEOPLE = 150
RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module")
def unseen(lfw_dir: Path, model_dir: Path) -> tuple[FaceSet, FaceSet]:
    training = training_identities(lfw_dir)
    folders = {k: v for k, v in identity_folders(lfw_dir).items() if len(v) >= 2 and k not in training}
    people = sorted(folders)[:PEOPLE]
    gallery = load_faceset({k: folders[k][:1] for k in people}, None, model_dir)
    probes = load_faceset({k: folders[k][1:2] for k in people}, None, model_dir)
    return gallery, probes


def rank1(gallery: np.ndarray, gallery_faces: FaceSet, probes: np.ndarray, probe_faces: FaceSet) -> float:
    best = (probes @ gallery.T).argmax(axis=1)
    names = [gallery_faces.identities[i] for i in gallery_faces.labels]
    pairs = zip(best, probe_faces.labels, strict=True)
    return float(np.mean([names[b] == probe_faces.identities[i] for b, i in pairs]))


def test_lowres_model_is_its_own_model_and_better_on_small_faces(
    model_dir: Path, unseen: tuple[FaceSet, FaceSet], record_property: RecordProperty
) -> None:
    base = load_embedder(EmbedSettings(device="cpu", precision="fp32"), model_dir)
    tuned = load_embedder(EmbedSettings(device="cpu", precision="fp32", model="casia-webface-lowres-v1"), model_dir)
    assert tuned.model_id == "facenet-casia-webface-lowres-v1" != base.model_id
    assert tuned.weights_sha256 == read_manifest(model_dir)["facenet-casia-webface-lowres-v1"].sha256
    gallery_faces, probe_faces = unseen
    crops = {"gallery": probe_crops(gallery_faces, None, 0), "clean": probe_crops(probe_faces, None, 0),
             "small": probe_crops(probe_faces, 32.0, 0)}
    result = {}
    for name, emb in (("base", base), ("lowres", tuned)):
        g = emb.embed(crops["gallery"])
        result[name] = {c: rank1(g, gallery_faces, emb.embed(crops[c]), probe_faces) for c in ("clean", "small")}
        record_property(f"{name}_rank1", result[name])
    assert result["lowres"]["clean"] >= result["base"]["clean"] - 0.02  # clean faces as good (3 of 150)
    assert result["lowres"]["small"] > result["base"]["small"]  # 32 px faces found more often
