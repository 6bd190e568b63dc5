from __future__ import annotations

from datetime import UTC, datetime

from support.events import search_fields

from rfr.core.schemas import Candidate, CandidateList, FaceQuality, OutcomeEvent, OutcomeStatus, SubmissionMeta
from rfr.tools.results import SubmissionResult

META = SubmissionMeta(retailer_id="r", store_id="s", camera_id="c", captured_at=datetime(2026, 1, 1, tzinfo=UTC))
Q = FaceQuality(face_px=60, score=0.9, sharpness=300, eye_distance_px=20, pose_ok=True)


def _list(face: str, scores: dict[str, float]) -> CandidateList:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    cands = [Candidate(rank=i + 1, subject_id=s, score=v, watch_list="custody", gallery_face_id=f"{s}-0")
             for i, (s, v) in enumerate(ranked)]
    now = datetime.now(UTC)
    return CandidateList(event_id=face, face_id=face, submission_id="sub", meta=META, received_at=now,
                         searched_at=now, outcome="candidates" if cands else "no_candidate", candidates=cands,
                         threshold=0.6, top_k=5, watch_lists=["custody"], model_id="m", quality=Q,
                         **search_fields(now))


def _outcome(status: OutcomeStatus, face: str | None = None, **kw: object) -> OutcomeEvent:
    return OutcomeEvent.make("sub", "r", status, face_id=face, **kw)


def test_final_once_every_face_has_a_list_or_a_failed_outcome() -> None:
    res = SubmissionResult("sub")
    res.outcomes.append(_outcome(OutcomeStatus.FACES_FOUND, faces=2))
    res.outcomes.append(_outcome(OutcomeStatus.PASSED_FOR_REVIEW, "sub:f0"))
    assert not res.final  # the outcome is in, its candidate list not yet
    res.lists["sub:f0"] = _list("sub:f0", {"a": 0.7})
    assert not res.final  # face f1 has no outcome yet
    res.outcomes.append(_outcome(OutcomeStatus.FAILED, "sub:f1", detail="retry_exhausted: 5 tries"))
    assert res.final and res.final_status == "candidates" and res.failed_faces == {"sub:f1"}


def test_no_face_is_final_without_lists() -> None:
    res = SubmissionResult("sub")
    res.outcomes.append(_outcome(OutcomeStatus.NO_FACE))
    assert res.final and res.final_status == "no_face" and res.best_subject is None


def test_best_subject_is_the_highest_score_over_all_faces() -> None:
    res = SubmissionResult("sub")
    res.lists["sub:f0"] = _list("sub:f0", {"a": 0.65, "b": 0.62})
    res.lists["sub:f1"] = _list("sub:f1", {"c": 0.81})
    assert res.best_subject == "c"
    res.lists = {"sub:f0": _list("sub:f0", {})}
    assert res.best_subject is None and res.final_status == "no_candidate"
