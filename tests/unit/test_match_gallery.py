"""Gallery semantics without Milvus: per-subject ranking, ids, validation, and the exact in-memory gallery."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusException

from rfr.core.settings import MilvusSettings
from rfr.gallery.base import (
    FaceHit,
    GalleryFace,
    GalleryMismatchError,
    GalleryUnavailableError,
    check_face,
    collection_name,
    enrol_face_id,
    normalise,
    rank_subjects,
)
from rfr.gallery.memory import InMemoryGallery
from rfr.gallery.milvus import MilvusGallery
from rfr.gallery.milvus_schema import partition_for, watch_list_filter


def unit(*values: float, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def face(face_id: str, subject: str, vector: np.ndarray, watch_list: str = "custody") -> GalleryFace:
    return GalleryFace(face_id=face_id, subject_id=subject, watch_list=watch_list, vector=vector,
                       source_ref=f"{face_id}.jpg")


def test_rank_subjects_keeps_best_photo_per_subject_and_applies_threshold() -> None:
    hits = [
        FaceHit("a1", "alice", "custody", 0.71), FaceHit("b1", "bob", "custody", 0.80),
        FaceHit("a2", "alice", "custody", 0.90), FaceHit("c1", "carol", "custody", 0.40),
        FaceHit("d1", "dave", "other", 0.80),
    ]
    ranked = rank_subjects(hits, top_k=5, threshold=0.5)
    assert [(h.subject_id, h.face_id, h.score) for h in ranked] == [
        ("alice", "a2", 0.90), ("bob", "b1", 0.80), ("dave", "d1", 0.80)]
    assert [h.subject_id for h in rank_subjects(hits, top_k=2, threshold=0.0)] == ["alice", "bob"]
    assert rank_subjects(hits, top_k=5, threshold=0.95) == []
    # inclusive: a score equal to the threshold is a candidate, one just below it is not
    assert [h.subject_id for h in rank_subjects(hits, top_k=5, threshold=0.80)] == ["alice", "bob", "dave"]
    assert [h.subject_id for h in rank_subjects(hits, top_k=5, threshold=float(np.nextafter(0.80, 1.0)))] == [
        "alice"]


def test_collection_name_is_valid_and_separates_models_that_sanitise_alike() -> None:
    a, b = collection_name("rfr_faces", "facenet-casia"), collection_name("rfr_faces", "facenet_casia")
    assert a != b
    assert a.startswith("rfr_faces__facenet_casia_")
    assert collection_name("rfr_faces", "facenet-casia") == a
    with pytest.raises(ValueError, match="invalid Milvus collection name"):
        collection_name("bad prefix!", "m")


def test_enrol_face_id_is_deterministic_and_distinguishes_watch_list_and_subject() -> None:
    fid = enrol_face_id("custody", "alice", "ab" * 32)
    # unchanged by the gallery -> watch-list rename, so re-runs still match what was enrolled before it
    assert fid == "gf_7c69bfe9692006cefa9cc37e566ff583b7164633"
    assert fid == enrol_face_id("custody", "alice", "ab" * 32)
    assert fid != enrol_face_id("other", "alice", "ab" * 32)
    assert fid != enrol_face_id("custody", "bob", "ab" * 32)
    assert len(fid) <= 64


def test_check_face_rejects_bad_records() -> None:
    good = face("f1", "alice", unit(1.0))
    check_face(good, 8)
    with pytest.raises(GalleryMismatchError):
        check_face(good, 16)
    with pytest.raises(ValueError, match="subject id"):
        check_face(face("f1", "al ice", unit(1.0)), 8)
    with pytest.raises(ValueError, match="watch-list name"):
        check_face(face("f1", "alice", unit(1.0), watch_list="bad-name"), 8)
    with pytest.raises(ValueError, match="zero or not finite"):
        check_face(face("f1", "alice", np.zeros(8, np.float32)), 8)


def test_normalise_rows() -> None:
    out = normalise([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_in_memory_gallery_search_watch_lists_erasure_and_listing() -> None:
    g = InMemoryGallery("m")
    g.add([face("a1", "alice", unit(1, 0)), face("a2", "alice", unit(1, 0.2)), face("b1", "bob", unit(0, 1)),
           face("c1", "carol", unit(1, 0.1), watch_list="other")])
    assert g.dim() == 8
    assert g.count() == 4
    assert g.count(["custody"]) == 3
    [hits] = g.search(unit(1, 0.05)[None, :], top_k=5, watch_lists=["custody"], threshold=0.5)
    assert [h.subject_id for h in hits] == ["alice"]
    [both] = g.search(unit(1, 0.05)[None, :], top_k=5, watch_lists=["custody", "other"], threshold=0.5)
    assert {h.subject_id for h in both} == {"alice", "carol"}
    assert [(s.watch_list, s.subject_id, s.faces) for s in g.list_subjects()] == [
        ("custody", "alice", 2), ("custody", "bob", 1), ("other", "carol", 1)]
    assert g.existing_face_ids(["a1", "zz"]) == {"a1"}
    assert g.subject_faces("alice") == [("a1", "custody"), ("a2", "custody")]  # what delete_subject would erase
    assert g.subject_faces("carol", ["custody"]) == [] and g.subject_faces("nobody") == []
    with pytest.raises(ValueError, match="subject id"):
        g.subject_faces("bad id!")
    assert g.delete_subject("alice") == 2
    assert g.subject_faces("alice") == []
    [after] = g.search(unit(1, 0.05)[None, :], top_k=5, watch_lists=["custody"], threshold=-1.0)
    assert "alice" not in {h.subject_id for h in after}
    with pytest.raises(GalleryMismatchError):
        g.search(np.ones((1, 4), np.float32), top_k=1, watch_lists=["custody"], threshold=0.0)


def test_watch_list_filter_and_partition_names_keep_the_on_disk_names() -> None:
    assert watch_list_filter(None) == ""
    assert watch_list_filter(["custody", "b2"]) == 'gallery in ["custody", "b2"]'  # the stored field's name
    assert partition_for("custody") == "g_custody"
    with pytest.raises(ValueError):
        watch_list_filter(['x"] or 1 == 1 or gallery in ["'])


class _DownClient:
    def __getattr__(self, name: str) -> Any:
        def fail(*_a: object, **_k: object) -> None:
            raise MilvusException(code=2, message="Fail connecting to server")

        return fail


def test_milvus_failures_surface_as_gallery_unavailable() -> None:
    g = MilvusGallery(MilvusSettings(uri="http://127.0.0.1:9"), "m", client_factory=_DownClient)
    with pytest.raises(GalleryUnavailableError, match="describe collection"):
        g.search(unit(1.0)[None, :], top_k=1, watch_lists=["custody"], threshold=0.0)
    with pytest.raises(GalleryUnavailableError):
        g.count()


def test_milvus_gallery_refuses_a_collection_of_another_model() -> None:
    class OtherModel:
        def has_collection(self, _name: str) -> bool:
            return True

        def describe_collection(self, _name: str) -> dict[str, Any]:
            return {"properties": {"rfr.model_id": "someone-else", "rfr.dim": "8"},
                    "fields": [{"name": "vector", "params": {"dim": 8}}]}

    g = MilvusGallery(MilvusSettings(), "mine", client_factory=OtherModel)
    with pytest.raises(GalleryMismatchError, match="someone-else"):
        g.dim()
