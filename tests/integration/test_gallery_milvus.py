"""The Milvus gallery through a real milvus-lite server: search, watch-lists, the threshold, erasure, model checks,
outages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient
from support.events import probe_fields
from support.kafka import FakeMsg

from rfr.core.schemas import CandidateList, EmbeddingEvent, FaceQuality, SubmissionMeta, decode, template_bytes
from rfr.core.settings import MatchSettings, MilvusSettings
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace, GalleryMismatchError, GalleryUnavailableError, SubjectHit, normalise
from rfr.gallery.hubness import HubnessSearch
from rfr.gallery.memory import InMemoryGallery
from rfr.gallery.milvus import PROP_MODEL, MilvusGallery
from rfr.gallery.scoring import Cohort
from rfr.tools import procs
from services.match.handler import MatchHandler

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


def enrol(g: MilvusGallery | InMemoryGallery, photos: np.ndarray, per: int, watch_list: str = "custody",
          prefix: str = "s") -> None:
    g.add([GalleryFace(f"{watch_list}-{i}", f"{prefix}{i // per}", watch_list, v, f"{i}.jpg")
           for i, v in enumerate(photos)])


def test_search_ranks_subjects_and_respects_watch_lists_and_threshold(gallery: MilvusGallery) -> None:
    centres, photos = people(30, 3)
    enrol(gallery, photos, 3)
    _, others = people(5, 1, seed=9)
    enrol(gallery, others, 1, watch_list="other", prefix="o")
    gallery.flush()
    assert gallery.dim() == DIM and gallery.count() == 95 and gallery.count(["other"]) == 5
    found = gallery.search(centres[:10], top_k=3, watch_lists=["custody"], threshold=0.5)
    assert [hits[0].subject_id for hits in found] == [f"s{i}" for i in range(10)]
    for hits in found:
        assert len({h.subject_id for h in hits}) == len(hits)  # one entry per subject
        assert all(h.score >= 0.5 and h.watch_list == "custody" for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    [other] = gallery.search(others[:1], top_k=3, watch_lists=["custody"], threshold=0.9)
    assert other == []  # that person is only on the "other" watch-list
    [both] = gallery.search(others[:1], top_k=3, watch_lists=["custody", "other"], threshold=0.9)
    assert both[0].subject_id == "o0" and both[0].watch_list == "other"
    assert gallery.search(centres[:1], top_k=3, watch_lists=["nonexistent"], threshold=0.0) == [[]]


# The unit probe (1/2, 1/2, 1/2, 1/2, 0, ...) against the unit vector e0: cosine exactly 1/2 in float32, whatever
# the order of the sums, so "at the threshold" is exact and not an approximation.
HALF_PROBE = np.array([0.5] * 4 + [0.0] * (DIM - 4), dtype=np.float32)


def _at_and_below(gallery: MilvusGallery) -> None:
    below = np.zeros(DIM, np.float32)
    below[0], below[4] = 0.9998, float(np.sqrt(1 - 0.9998**2))  # cosine with the probe: 0.4999
    gallery.add([GalleryFace("a1", "alice", "custody", np.eye(DIM, dtype=np.float32)[0]),
                 GalleryFace("b1", "bob", "custody", below)])
    gallery.flush()


def test_a_score_exactly_at_the_threshold_is_a_candidate_and_just_below_is_not(gallery: MilvusGallery) -> None:
    _at_and_below(gallery)
    [at] = gallery.search(HALF_PROBE[None, :], top_k=5, watch_lists=["custody"], threshold=0.5)
    assert [(h.subject_id, h.score) for h in at] == [("alice", 0.5)]  # >=: alice is in, bob (0.4999) is not
    [above] = gallery.search(HALF_PROBE[None, :], top_k=5, watch_lists=["custody"],
                             threshold=float(np.nextafter(0.5, 1.0)))
    assert above == []  # alice's 0.5 is now just below the threshold
    [both] = gallery.search(HALF_PROBE[None, :], top_k=5, watch_lists=["custody"], threshold=0.49)
    assert [h.subject_id for h in both] == ["alice", "bob"]


def test_the_match_stage_on_milvus_lists_a_candidate_at_the_threshold(gallery: MilvusGallery) -> None:
    _at_and_below(gallery)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=datetime.now(UTC))
    probe = EmbeddingEvent(event_id="sub_t:f0", face_id="sub_t:f0", submission_id="sub_t", meta=meta,
                           received_at=datetime.now(UTC), model_id="facenet-test", weights_sha256="ab",
                           quality=FaceQuality(face_px=64, score=0.9, sharpness=300, eye_distance_px=26, pose_ok=True),
                           template=template_bytes(HALF_PROBE), **probe_fields())
    lists = []
    for threshold in (0.5, float(np.nextafter(0.5, 1.0))):
        handler = MatchHandler(gallery, MatchSettings(threshold=threshold, watch_lists=["custody"]), Topics("t"))
        [result] = handler.handle_batch([FakeMsg(probe.to_bytes())])  # type: ignore[list-item]
        assert isinstance(result, list)
        lists.append(decode(CandidateList, result[0].value))
    assert [(c.subject_id, c.score, c.watch_list) for c in lists[0].candidates] == [("alice", 0.5, "custody")]
    assert lists[1].outcome == "no_candidate" and lists[1].candidates == []


def test_hubness_search_reads_photo_vectors_and_agrees_with_the_exact_gallery(gallery: MilvusGallery,
                                                                            tmp_path: Path) -> None:
    centres, photos = people(20, 2)
    enrol(gallery, photos, 2)
    gallery.flush()
    held = gallery.face_vectors(["custody-0", "custody-3", "custody-missing"])
    assert held.keys() == {"custody-0", "custody-3"}
    np.testing.assert_allclose(held["custody-3"], normalise(photos[3])[0], atol=1e-5)  # stored, as a unit row
    exact = InMemoryGallery("facenet-test")
    enrol(exact, photos, 2)
    cohort = normalise(people(30, 1, seed=5)[1])
    limits = np.zeros(5)
    got = HubnessSearch(cohort, 5, 40).search(gallery, centres[:5], 3, ["custody"], limits)
    want = HubnessSearch(cohort, 5, 40).search(exact, centres[:5], 3, ["custody"], limits)
    assert [[h.subject_id for h in row] for row in got] == [[h.subject_id for h in row] for row in want]
    assert [h.score for row in got for h in row] == pytest.approx([h.score for row in want for h in row], abs=1e-4)
    assert [row[0].subject_id for row in got] == [f"s{i}" for i in range(5)]
    cohort_file = Cohort(cohort, tuple(f"c{i}" for i in range(len(cohort))), "facenet-test").save(tmp_path / "c.npz")
    settings = MatchSettings(top_k=3, watch_lists=["custody"], score_norm="hubness", hubness_k=5, hubness_depth=40,
                             hubness_threshold=0.0, cohort_file=cohort_file)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=datetime.now(UTC))
    probe = EmbeddingEvent(event_id="sub_h:f0", face_id="sub_h:f0", submission_id="sub_h", meta=meta,
                           received_at=datetime.now(UTC), model_id="facenet-test", weights_sha256="ab",
                           quality=FaceQuality(face_px=64, score=0.9, sharpness=300, eye_distance_px=26, pose_ok=True),
                           template=template_bytes(centres[0]), **probe_fields())
    handler = MatchHandler(gallery, settings, Topics("t"))
    [result] = handler.handle_batch([FakeMsg(probe.to_bytes())])  # type: ignore[list-item]
    assert isinstance(result, list)
    listed = decode(CandidateList, result[0].value)
    assert (listed.score_norm, listed.threshold) == ("hubness", 0.0)
    assert [(c.subject_id, c.score) for c in listed.candidates] == [
        (h.subject_id, pytest.approx(h.score, abs=1e-5)) for h in got[0]]


def test_erasure_removes_every_photo_of_a_subject(gallery: MilvusGallery) -> None:
    centres, photos = people(10, 4)
    enrol(gallery, photos, 4)
    enrol(gallery, photos[:4], 4, watch_list="other")  # s0 is on two watch-lists
    assert {(s.watch_list, s.subject_id, s.faces) for s in gallery.list_subjects()} >= {("custody", "s0", 4),
                                                                                        ("other", "s0", 4)}
    on_both = gallery.subject_faces("s0")  # what delete_subject erases, read first to tell the review service
    assert on_both == [(f"{w}-{i}", w) for w in ("custody", "other") for i in range(4)]
    assert gallery.subject_faces("s0", ["other"]) == [(f"other-{i}", "other") for i in range(4)]
    assert gallery.delete_subject("s0") == 8
    found = gallery.search(centres, top_k=10, watch_lists=["custody", "other"], threshold=-1.0)
    assert all(h.subject_id != "s0" for hits in found for h in hits)
    assert gallery.count() == 36
    assert "s0" not in {s.subject_id for s in gallery.list_subjects()}
    assert gallery.delete_subject("s0") == 0
    assert gallery.subject_faces("s0") == []


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
        # Searched once before the outage: the index is built and on disk. milvus-lite stopped while it still writes
        # an index file leaves it truncated, and the restarted server cannot load the collection (seen once in CI).
        assert [h[0].subject_id for h in g.search(centres, 1, ["custody"], 0.0)] == ["s0", "s1", "s2", "s3"]
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
