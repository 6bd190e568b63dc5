"""The match handler with the exact in-memory gallery: outputs, no-candidate lists, dead letters, retries, metrics."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from support.events import probe_fields
from support.kafka import FakeMsg

from rfr.core.schemas import (
    CandidateList,
    EmbeddingEvent,
    FaceQuality,
    OutcomeEvent,
    OutcomeStatus,
    SubmissionMeta,
    decode,
    template_bytes,
)
from rfr.core.settings import MatchSettings
from rfr.core.stream import PoisonMessage, RetryableError
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace, GalleryUnavailableError, SubjectHit
from rfr.gallery.memory import InMemoryGallery
from services.match.handler import MatchHandler
from services.match.metrics import GallerySizeUpdater, MatchMetrics

MODEL = "facenet-test"
DIM = 16
RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = RECEIVED + timedelta(seconds=3)
TOPICS = Topics("t")


def basis(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    v += np.random.default_rng(seed).normal(size=DIM).astype(np.float32) * noise
    return v / np.linalg.norm(v)


def event(face_index: int, vector: np.ndarray, model_id: str = MODEL, sub: str = "sub_1") -> EmbeddingEvent:
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=RECEIVED)
    return EmbeddingEvent(
        event_id=f"{sub}:f{face_index}", face_id=f"{sub}:f{face_index}", submission_id=sub, meta=meta,
        received_at=RECEIVED,
        quality=FaceQuality(face_px=80, score=0.9, sharpness=100, eye_distance_px=30, pose_ok=True),
        model_id=model_id, weights_sha256="ab" * 32, template=template_bytes(vector), **probe_fields(),
    )


def msgs(*values: bytes | None) -> Sequence[Message]:
    return cast(Sequence[Message], [FakeMsg(v) for v in values])


@pytest.fixture
def gallery() -> InMemoryGallery:
    g = InMemoryGallery(MODEL)
    g.add([
        GalleryFace("a1", "alice", "custody", basis(0), "alice/1.jpg"),
        GalleryFace("a2", "alice", "custody", basis(0, 0.3, seed=1), "alice/2.jpg"),
        GalleryFace("b1", "bob", "custody", basis(1), "bob/1.jpg"),
        GalleryFace("c1", "carol", "other", basis(2), "carol/1.jpg"),
    ])
    return g


def make(gallery: Any, **settings: Any) -> tuple[MatchHandler, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = MatchMetrics.create(registry)
    cfg = MatchSettings(**({"threshold": 0.6, "top_k": 3, "watch_lists": ["custody"]} | settings))
    return MatchHandler(gallery, cfg, TOPICS, metrics, clock=lambda: NOW), registry


def test_candidates_and_no_candidate_lists_with_outcomes(gallery: InMemoryGallery) -> None:
    handler, registry = make(gallery)
    batch = [event(0, basis(0, 0.05, seed=5)), event(1, basis(2)), event(2, basis(3))]  # alice / carol(other) / none
    results = handler.handle_batch(msgs(*(e.to_bytes() for e in batch)))
    assert gallery.search_calls == 1
    assert len(results) == 3
    first = results[0]
    assert isinstance(first, list)
    assert [o.topic for o in first] == [TOPICS.matches, TOPICS.outcomes]
    cl = decode(CandidateList, first[0].value)
    assert (first[0].key, first[0].event_id) == ("sub_1", "sub_1:f0")
    assert cl.outcome == "candidates" and cl.threshold == 0.6 and cl.model_id == MODEL and cl.top_k == 3
    assert [(c.rank, c.subject_id, c.watch_list) for c in cl.candidates] == [(1, "alice", "custody")]
    assert cl.candidates[0].gallery_face_id in {"a1", "a2"} and cl.watch_lists == ["custody"]
    assert "not an identification" in cl.notice
    oc = decode(OutcomeEvent, first[1].value)
    assert oc.status is OutcomeStatus.PASSED_FOR_REVIEW and oc.face_id == "sub_1:f0"
    assert "alice" not in first[1].value.decode() and "identified" not in oc.detail
    for res in results[1:]:
        assert isinstance(res, list)
        cl = decode(CandidateList, res[0].value)
        assert cl.outcome == "no_candidate" and cl.candidates == [] and cl.threshold == 0.6
        assert decode(OutcomeEvent, res[1].value).status is OutcomeStatus.NO_CANDIDATE
    assert registry.get_sample_value("rfr_match_searches_total", {"outcome": "candidates"}) == 1
    assert registry.get_sample_value("rfr_match_searches_total", {"outcome": "no_candidate"}) == 2
    assert registry.get_sample_value("rfr_match_end_to_end_seconds_sum") == pytest.approx(9.0)
    assert (registry.get_sample_value("rfr_match_search_seconds_sum") or 0.0) > 0


def test_bad_input_is_dead_lettered_and_the_rest_still_searched(gallery: InMemoryGallery) -> None:
    handler, _ = make(gallery)
    good = event(0, basis(1)).to_bytes()
    wrong_model = event(1, basis(1), model_id="facenet-other").to_bytes()
    wrong_dim = event(2, np.ones(DIM * 2, np.float32)).to_bytes()
    zero = event(3, np.zeros(DIM, np.float32)).to_bytes()
    results = handler.handle_batch(msgs(good, b"{not json", None, wrong_model, wrong_dim, zero))
    reasons = [r.reason if isinstance(r, PoisonMessage) else "ok" for r in results]
    assert reasons == ["ok", "invalid_message", "invalid_message", "model_mismatch", "dim_mismatch", "invalid_vector"]
    ok = results[0]
    assert isinstance(ok, list)
    assert decode(CandidateList, ok[0].value).candidates[0].subject_id == "bob"


def test_template_travels_as_float32_bytes_and_a_ragged_one_is_dead_lettered(gallery: InMemoryGallery) -> None:
    probe = basis(1, 0.01, seed=3)
    raw = json.loads(event(0, probe).to_bytes())
    assert "vector" not in raw and base64.urlsafe_b64decode(raw["template"]) == probe.astype("<f4").tobytes()
    assert np.array_equal(decode(EmbeddingEvent, json.dumps(raw)).vector, probe)
    raw["template"] = base64.b64encode(probe.astype("<f4").tobytes() + b"\x00\x00").decode()  # 16.5 floats
    handler, _ = make(gallery)
    [result] = handler.handle_batch(msgs(json.dumps(raw).encode()))
    assert isinstance(result, PoisonMessage) and result.reason == "invalid_message"
    assert "whole number of float32 values" in result.detail


def test_a_version_1_embedding_is_dead_lettered_as_unsupported(gallery: InMemoryGallery) -> None:
    raw = json.loads(event(0, basis(1)).to_bytes())
    del raw["template"]
    raw |= {"schema_version": 1, "vector": [float(x) for x in basis(1)]}  # the v1 shape: a JSON list of floats
    raw["quality"] |= {"schema_version": 1}
    handler, _ = make(gallery)
    [result] = handler.handle_batch(msgs(json.dumps(raw).encode()))
    assert isinstance(result, PoisonMessage) and result.reason == "unsupported_schema_version"
    assert str(result) == "unsupported_schema_version: got 1, accepts 3, 4 (EmbeddingEvent)"


# Scores that are exact in float32: the unit probe (1/2, 1/2, 1/2, 1/2, 0, ...) against the unit vector e0
# has cosine 1/2 with no rounding anywhere, so "at the threshold" is exactly that and not an approximation.
HALF_PROBE = np.array([0.5, 0.5, 0.5, 0.5] + [0.0] * (DIM - 4), dtype=np.float32)


@pytest.mark.parametrize(("threshold", "named"), [
    (0.5, ["alice"]),  # alice scores exactly 0.5: at the threshold, a candidate (>=); bob (~0.4999) is not
    (float(np.nextafter(0.5, 1.0)), []),  # one ulp above alice's score: she is just below, so no candidate
    (0.49, ["alice", "bob"]),
])
def test_a_score_exactly_at_the_threshold_is_a_candidate_and_just_below_is_not(threshold: float,
                                                                               named: list[str]) -> None:
    g = InMemoryGallery(MODEL)
    below = np.zeros(DIM, np.float32)
    below[0], below[4] = 0.9998, float(np.sqrt(1 - 0.9998**2))  # cosine with the probe: 0.4999
    g.add([GalleryFace("a1", "alice", "custody", basis(0)), GalleryFace("b1", "bob", "custody", below)])
    handler, _ = make(g, threshold=threshold)
    [res] = handler.handle_batch(msgs(event(0, HALF_PROBE).to_bytes()))
    assert isinstance(res, list)
    cl = decode(CandidateList, res[0].value)
    assert [c.subject_id for c in cl.candidates] == named
    assert cl.outcome == ("candidates" if named else "no_candidate") and cl.threshold == threshold
    if named:
        assert cl.candidates[0].score == 0.5


def test_erased_subject_is_never_named(gallery: InMemoryGallery) -> None:
    handler, _ = make(gallery)
    assert gallery.delete_subject("alice") == 2
    [res] = handler.handle_batch(msgs(event(0, basis(0)).to_bytes()))
    assert isinstance(res, list)
    assert "alice" not in res[0].value.decode()
    assert decode(CandidateList, res[0].value).outcome == "no_candidate"


def test_top_k_subjects_ranked_by_score() -> None:
    g = InMemoryGallery(MODEL)
    probe = basis(0)
    g.add([GalleryFace(f"f{i}", f"s{i}", "custody", basis(0, 0.1 * (i + 1), seed=i)) for i in range(6)])
    handler, _ = make(g, threshold=-1.0, top_k=4)
    [res] = handler.handle_batch(msgs(event(0, probe).to_bytes()))
    assert isinstance(res, list)
    scores = [c.score for c in decode(CandidateList, res[0].value).candidates]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)


class DownGallery(InMemoryGallery):
    def search(self, vectors: np.ndarray, top_k: int, watch_lists: Sequence[str], threshold: float
               ) -> list[list[SubjectHit]]:
        raise GalleryUnavailableError("milvus down")


def test_gallery_down_is_retryable_not_dead_lettered() -> None:
    g = DownGallery(MODEL, dim=DIM)
    handler, _ = make(g)
    with pytest.raises(RetryableError, match="milvus down"):
        handler.handle_batch(msgs(event(0, basis(0)).to_bytes()))


def test_empty_gallery_gives_no_candidate_without_searching() -> None:
    g = InMemoryGallery(MODEL)
    handler, _ = make(g)
    [res] = handler.handle_batch(msgs(event(0, basis(0)).to_bytes()))
    assert isinstance(res, list)
    assert decode(CandidateList, res[0].value).outcome == "no_candidate"
    assert g.search_calls == 0


def test_gallery_size_gauge_updates_and_survives_outages(gallery: InMemoryGallery) -> None:
    registry = CollectorRegistry()
    metrics = MatchMetrics.create(registry)
    GallerySizeUpdater(gallery, metrics.gallery_faces).update()
    assert registry.get_sample_value("rfr_match_gallery_faces") == 4

    class Broken(InMemoryGallery):
        def count(self, watch_lists: Sequence[str] | None = None) -> int:
            raise GalleryUnavailableError("down")

    GallerySizeUpdater(Broken(MODEL), metrics.gallery_faces).update()  # logged, not raised
    assert registry.get_sample_value("rfr_match_gallery_faces") == 4
