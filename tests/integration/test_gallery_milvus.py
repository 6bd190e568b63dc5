"""The Milvus gallery through a real milvus-lite server: search, galleries, erasure, model checks, outages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from rfr.core.settings import MilvusSettings
from rfr.gallery.base import GalleryFace, GalleryMismatchError, GalleryUnavailableError, SubjectHit
from rfr.gallery.milvus import PROP_MODEL, MilvusGallery
from rfr.tools import procs

pytestmark = pytest.mark.integration

DIM = 32


def settings(uri: str, **kw: object) -> MilvusSettings:
    return MilvusSettings(uri=uri, collection_prefix=f"t{uuid.uuid4().hex[:10]}", **kw)


@pytest.fixture(params=["HNSW", "FLAT"])
def gallery(milvus_uri: str, request: pytest.FixtureRequest) -> Iterator[MilvusGallery]:
    g = MilvusGallery(settings(milvus_uri, index_type=request.param), "facenet-test")
    yield g
    g.drop()
    g.close()


def people(n: int, per: int, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    photos = np.repeat(centres, per, axis=0) + rng.normal(size=(n * per, DIM)).astype(np.float32) * noise
    return centres, photos


def enrol(g: MilvusGallery, photos: np.ndarray, per: int, gallery: str = "custody", prefix: str = "s") -> None:
    g.add([GalleryFace(f"{gallery}-{i}", f"{prefix}{i // per}", gallery, v, f"{i}.jpg") for i, v in enumerate(photos)])


def test_search_ranks_subjects_and_respects_galleries_and_threshold(gallery: MilvusGallery) -> None:
    centres, photos = people(30, 3)
    enrol(gallery, photos, 3)
    _, others = people(5, 1, seed=9)
    enrol(gallery, others, 1, gallery="other", prefix="o")
    gallery.flush()
    assert gallery.dim() == DIM and gallery.count() == 95 and gallery.count(["other"]) == 5
    found = gallery.search(centres[:10], top_k=3, galleries=["custody"], threshold=0.5)
    assert [hits[0].subject_id for hits in found] == [f"s{i}" for i in range(10)]
    for hits in found:
        assert len({h.subject_id for h in hits}) == len(hits)  # one entry per subject
        assert all(h.score >= 0.5 and h.gallery == "custody" for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    [other] = gallery.search(others[:1], top_k=3, galleries=["custody"], threshold=0.9)
    assert other == []  # that person is only in the "other" gallery
    [both] = gallery.search(others[:1], top_k=3, galleries=["custody", "other"], threshold=0.9)
    assert both[0].subject_id == "o0" and both[0].gallery == "other"
    assert gallery.search(centres[:1], top_k=3, galleries=["nonexistent"], threshold=0.0) == [[]]


def test_erasure_removes_every_photo_of_a_subject(gallery: MilvusGallery) -> None:
    centres, photos = people(10, 4)
    enrol(gallery, photos, 4)
    enrol(gallery, photos[:4], 4, gallery="other")  # s0 is on two watch-lists
    assert {(s.gallery, s.subject_id, s.faces) for s in gallery.list_subjects()} >= {("custody", "s0", 4),
                                                                                     ("other", "s0", 4)}
    assert gallery.delete_subject("s0") == 8
    found = gallery.search(centres, top_k=10, galleries=["custody", "other"], threshold=-1.0)
    assert all(h.subject_id != "s0" for hits in found for h in hits)
    assert gallery.count() == 36
    assert "s0" not in {s.subject_id for s in gallery.list_subjects()}
    assert gallery.delete_subject("s0") == 0


def test_add_is_idempotent_per_face_id(gallery: MilvusGallery) -> None:
    _, photos = people(3, 2)
    enrol(gallery, photos, 2)
    enrol(gallery, photos, 2)
    assert gallery.count() == 6
    assert gallery.existing_face_ids(["custody-0", "custody-5", "nope"]) == {"custody-0", "custody-5"}


def test_dimension_and_model_mismatch_are_errors(milvus_uri: str) -> None:
    s = settings(milvus_uri)
    g = MilvusGallery(s, "facenet-a")
    _, photos = people(2, 1)
    enrol(g, photos, 1)
    with pytest.raises(GalleryMismatchError):
        g.add([GalleryFace("x", "x", "custody", np.ones(DIM * 2, np.float32))])
    with pytest.raises(GalleryMismatchError):
        g.search(np.ones((1, DIM * 2), np.float32), 3, ["custody"], 0.0)
    client = MilvusClient(uri=milvus_uri)
    client.alter_collection_properties(g.collection, properties={PROP_MODEL: "facenet-b"})
    with pytest.raises(GalleryMismatchError, match="facenet-b"):
        MilvusGallery(s, "facenet-a").dim()
    g.drop()


def retry_search(g: MilvusGallery, queries: np.ndarray, deadline_s: float = 30.0) -> list[list[SubjectHit]]:
    """Search as the stream loop does after an outage: retry with a short backoff until the server answers."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return g.search(queries, 1, ["custody"], 0.0)
        except GalleryUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_unreachable_server_is_unavailable_and_recovers(tmp_path: Path) -> None:
    port = procs.free_port()
    argv = procs.milvus_argv(tmp_path / "data", port)
    _info, proc = procs.spawn("milvus-outage", argv, tmp_path)
    try:
        procs.wait_port("127.0.0.1", port, 60, proc)
        g = MilvusGallery(settings(f"http://127.0.0.1:{port}", timeout_s=5), "facenet-test")
        centres, photos = people(4, 1)
        enrol(g, photos, 1)
        g.flush()
        proc.terminate()
        proc.wait(20)
        with pytest.raises(GalleryUnavailableError):
            g.search(centres, 1, ["custody"], 0.0)
        _info, proc = procs.spawn("milvus-outage", argv, tmp_path)
        procs.wait_port("127.0.0.1", port, 60, proc)
        assert [h[0].subject_id for h in retry_search(g, centres)] == ["s0", "s1", "s2", "s3"]
    finally:
        proc.terminate()
        proc.wait(20)
