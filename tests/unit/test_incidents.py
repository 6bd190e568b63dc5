"""Multi-still incidents without Kafka: template fusion, completeness, the timeout and the rule for faces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from support.events import probe_fields

from rfr.core.schemas import (
    EmbeddingEvent,
    FaceQuality,
    IncidentStillReport,
    StillStatus,
    SubmissionMeta,
    template_bytes,
)
from rfr.embedding.incidents import Incident, fuse_templates, incident_event_id, plan_incident

T0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
DIM = 16


def meta(stills: int | None = 3, incident: str = "inc-1") -> SubmissionMeta:
    return SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=T0, incident_id=incident,
                          incident_stills=stills)


def report(sub: str, faces: int, at: int = 0, stills: int | None = 3) -> IncidentStillReport:
    return IncidentStillReport(event_id=f"{sub}:incident", submission_id=sub, meta=meta(stills),
                               received_at=T0 + timedelta(seconds=at), still_ref=f"sha256:{sub}",
                               face_ids=[f"{sub}:f{i}" for i in range(faces)])


def face(sub: str, index: int, vector: np.ndarray, px: float = 40.0, gated: str | None = None,
         at: int = 0) -> EmbeddingEvent:
    return EmbeddingEvent(
        event_id=f"{sub}:f{index}", face_id=f"{sub}:f{index}", submission_id=sub, meta=meta(),
        received_at=T0 + timedelta(seconds=at),
        quality=FaceQuality(face_px=px, score=0.9, sharpness=50, eye_distance_px=15, pose_ok=True),
        model_id="m", weights_sha256="ab", template=template_bytes(vector), gated_reason=gated, **probe_fields())


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def incident(reports: list[IncidentStillReport], faces: list[EmbeddingEvent], expected: int | None = 3) -> Incident:
    return Incident("r1/inc-1", expected, T0, {r.submission_id: r for r in reports}, {f.face_id: f for f in faces})


# --- fusion ------------------------------------------------------------------------------------------------------
def test_fusion_is_the_renormalised_mean_of_unit_templates() -> None:
    a, b = unit(1) * 3.0, unit(2) * 0.5  # lengths must not weigh: each still counts once
    fused = fuse_templates([a, b])
    expected = a / np.linalg.norm(a) + b / np.linalg.norm(b)
    assert fused.dtype == np.float32 and fused.shape == (DIM,)
    assert np.linalg.norm(fused) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(fused, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(fuse_templates([a]), a / np.linalg.norm(a), atol=1e-6)


def test_a_fused_template_is_closer_to_the_identity_than_its_noisy_stills() -> None:
    identity = unit(0)
    rng = np.random.default_rng(5)
    stills = [identity + rng.normal(size=DIM).astype(np.float32) * 0.35 for _ in range(3)]
    single = [float(s @ identity / np.linalg.norm(s)) for s in stills]
    assert float(fuse_templates(stills) @ identity) > np.mean(single)


@pytest.mark.parametrize("bad", [[], [np.zeros(DIM)], [np.full(DIM, np.nan)], [np.ones(DIM), -np.ones(DIM)],
                                 [np.ones(DIM), np.ones(DIM + 1)]])
def test_fusion_refuses_what_cannot_be_searched(bad: list[np.ndarray]) -> None:
    with pytest.raises(ValueError):
        fuse_templates(bad)


def test_incident_event_id_is_deterministic_and_per_retailer() -> None:
    assert incident_event_id("r1", "inc-1") == incident_event_id("r1", "inc-1")
    assert incident_event_id("r1", "inc-1") != incident_event_id("r2", "inc-1")
    assert incident_event_id("r1", "inc-1").startswith("inc_") and len(incident_event_id("r1", "x")) == 36


# --- completeness and timeout ------------------------------------------------------------------------------------
def test_complete_only_when_every_still_reported_and_every_named_face_arrived() -> None:
    reports = [report("s1", 1), report("s2", 1), report("s3", 0)]
    faces = [face("s1", 0, unit(1)), face("s2", 0, unit(2))]
    assert incident(reports, faces).is_complete()
    assert not incident(reports[:2], faces).is_complete()  # a still has not reported
    assert not incident(reports, faces[:1]).is_complete()  # a face has not arrived
    assert not incident(reports, faces, expected=None).is_complete()  # unknown size: only the timeout


def test_a_still_without_a_usable_face_counts_so_the_incident_never_waits_for_it() -> None:
    reports = [report("s1", 1), report("s2", 0), report("s3", 0)]
    assert incident(reports, [face("s1", 0, unit(1))]).is_complete()


def test_due_when_complete_or_after_the_timeout() -> None:
    waiting = incident([report("s1", 1)], [face("s1", 0, unit(1))])
    assert not waiting.is_due(T0 + timedelta(seconds=119), 120)
    assert waiting.is_due(T0 + timedelta(seconds=120), 120)
    done = incident([report("s1", 1), report("s2", 0), report("s3", 0)], [face("s1", 0, unit(1))])
    assert done.is_due(T0, 120)


# --- the rule for faces ------------------------------------------------------------------------------------------
def test_plan_fuses_single_face_stills_and_names_every_still() -> None:
    reports = [report("s1", 1, at=0), report("s2", 2, at=1), report("s3", 0, at=2), report("s4", 1, at=3)]
    faces = [face("s1", 0, unit(1), px=30), face("s2", 0, unit(2)), face("s2", 1, unit(3)),
             face("s4", 0, unit(4), px=50, gated="too_small", at=3)]
    plan = plan_incident(incident(reports, faces, expected=5))
    assert [e.face_id for e in plan.fused] == ["s1:f0", "s4:f0"]
    assert [e.face_id for e in plan.separate] == ["s2:f0", "s2:f1"]
    assert [(s.submission_id, s.status) for s in plan.stills] == [
        ("s1", StillStatus.SEARCHED), ("s2", StillStatus.SEVERAL_FACES), ("s3", StillStatus.NO_USABLE_FACE),
        ("s4", StillStatus.SEARCHED)]
    assert plan.representative is not None and plan.representative.face_id == "s4:f0"  # the largest face
    assert plan.low_quality  # one fused face was let through the gate by an investigative search
    assert plan.template is not None
    assert np.allclose(np.frombuffer(plan.template, "<f4"), fuse_templates([unit(1), unit(4)]), atol=1e-6)


def test_plan_after_a_timeout_names_a_face_that_never_came() -> None:
    plan = plan_incident(incident([report("s1", 1), report("s2", 1)], [face("s2", 0, unit(2))]))
    assert [(s.submission_id, s.status, s.face_id) for s in plan.stills] == [
        ("s1", StillStatus.NOT_ARRIVED, "s1:f0"), ("s2", StillStatus.SEARCHED, "s2:f0")]
    assert not plan.low_quality and [e.face_id for e in plan.fused] == ["s2:f0"]


def test_plan_of_faces_without_reports_uses_what_arrived() -> None:
    plan = plan_incident(incident([], [face("s1", 0, unit(1))], expected=None))
    assert [e.face_id for e in plan.fused] == ["s1:f0"] and plan.stills[0].still_ref is None


def test_plan_with_no_usable_face_searches_nothing() -> None:
    plan = plan_incident(incident([report("s1", 0), report("s2", 0)], []))
    assert plan.fused == [] and plan.template is None and plan.representative is None
    assert {s.status for s in plan.stills} == {StillStatus.NO_USABLE_FACE}
