"""The match service's threshold policy and score normalisation (services/match/thresholds.py, handler.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import Message
from support.events import probe_fields
from support.kafka import FakeMsg

from rfr.core.schemas import CandidateList, EmbeddingEvent, FaceQuality, SubmissionMeta, decode, template_bytes
from rfr.core.settings import MatchSettings
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace, normalise
from rfr.gallery.memory import InMemoryGallery
from rfr.gallery.scoring import Cohort, ThresholdTable, cohort_stats, fmr_for_fpir
from services.match.handler import MatchHandler

MODEL = "facenet-test"
DIM = 16
WHEN = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def vec(seed: int) -> np.ndarray:
    out: np.ndarray = normalise(np.random.default_rng(seed).normal(size=DIM))[0]
    return out


def gallery_of(n: int) -> InMemoryGallery:
    g = InMemoryGallery(MODEL)
    g.add([GalleryFace(f"f{i}", f"s{i}", "custody", vec(i), f"s{i}/1.jpg") for i in range(n)])
    return g


def search(handler: MatchHandler, vectors: Sequence[np.ndarray]) -> list[CandidateList]:
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=WHEN)
    quality = FaceQuality(face_px=80, score=0.9, sharpness=100, eye_distance_px=30, pose_ok=True)
    events = [EmbeddingEvent(event_id=f"e{i}", face_id=f"e{i}", submission_id="sub", meta=meta, received_at=WHEN,
                             quality=quality, model_id=MODEL, weights_sha256="ab" * 32, template=template_bytes(v),
                             **probe_fields()) for i, v in enumerate(vectors)]
    results = handler.handle_batch(cast(Sequence[Message], [FakeMsg(e.to_bytes()) for e in events]))
    out = []
    for r in results:
        assert isinstance(r, list)
        out.append(decode(CandidateList, r[0].value))
    return out


def make(gallery: InMemoryGallery, **settings: Any) -> MatchHandler:
    cfg = MatchSettings(**({"top_k": 3, "watch_lists": ["custody"]} | settings))
    return MatchHandler(gallery, cfg, Topics("t"), None, clock=lambda: WHEN)


def test_fixed_policy_records_itself_and_the_gallery_size() -> None:
    handler = make(gallery_of(5), threshold=0.6)
    [cl] = search(handler, [vec(0)])
    assert (cl.threshold_policy, cl.score_norm, cl.gallery_size, cl.threshold) == ("fixed", "none", 5, 0.6)
    assert [c.subject_id for c in cl.candidates] == ["s0"]


def test_gallery_size_policy_takes_the_tables_threshold_for_the_size(tmp_path: Path) -> None:
    impostor = np.random.default_rng(1).normal(0.0, 0.2, size=100_000)
    path = ThresholdTable.from_impostor(impostor, MODEL).save(tmp_path / "table.json")
    thresholds = []
    for n in (2, 40):
        handler = make(gallery_of(n), threshold_policy="gallery_size", threshold_table=path, target_fpir=0.05)
        [cl] = search(handler, [vec(0)])
        assert (cl.threshold_policy, cl.gallery_size) == ("gallery_size", n)
        expected = ThresholdTable.load(path).threshold_at(fmr_for_fpir(0.05, n))
        assert cl.threshold == pytest.approx(expected)
        assert all(c.score >= cl.threshold for c in cl.candidates)
        thresholds.append(cl.threshold)
    assert thresholds[0] < thresholds[1]


def test_cohort_norm_gives_each_probe_its_own_cosine_threshold(tmp_path: Path) -> None:
    cohort = Cohort(normalise(np.random.default_rng(2).normal(size=(50, DIM))), tuple(f"c{i}" for i in range(50)),
                    MODEL)
    path = cohort.save(tmp_path / "cohort.npz")
    handler = make(gallery_of(6), score_norm="cohort", cohort_file=path, cohort_threshold=2.0)
    probes = [vec(0), vec(1), vec(99)]
    lists = search(handler, probes)
    mean, std = cohort_stats(np.stack(probes), cohort.vectors)
    for cl, m, s in zip(lists, mean, std, strict=True):
        assert cl.score_norm == "cohort" and cl.threshold == pytest.approx(m + 2.0 * s)
        assert all(c.score >= cl.threshold for c in cl.candidates)
    assert lists[0].candidates[0].subject_id == "s0"  # scores stay cosines: the probe's own photo scores 1.0
    assert lists[0].candidates[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="rebuild"):
        make(InMemoryGallery("facenet-other"), score_norm="cohort", cohort_file=path)
