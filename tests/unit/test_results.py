from __future__ import annotations

from datetime import UTC, datetime

from rfr.results import SubmissionResult
from rfr.schemas import Candidate, CandidateList, FaceQuality, OutcomeEvent, OutcomeStatus, SubmissionMeta

META = SubmissionMeta(retailer_id="r", store_id="s", camera_id="c", captured_at=datetime(2026, 1, 1, tzinfo=UTC))
Q = FaceQuality(face_px=60, score=0.9, blur=300, eye_distance_px=20, pose_ok=True)


def _list(face: str, scores: dict[str, float]) -> CandidateList:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    cands = [Candidate(rank=i + 1, subject_id=s, score=v, gallery="custody", gallery_face_id=f"{s}-0")
             for i, (s, v) in enumerate(ranked)]
    now = datetime.now(UTC)
    return CandidateList(event_id=face, face_id=face, submission_id="sub", meta=META, received_at=now,
                         searched_at=now, outcome="candidates" if cands else "no_candidate", candidates=cands,
                         threshold=0.6, top_k=5, galleries=["custody"], model_id="m", quality=Q)


def test_final_once_every_face_has_a_list() -> None:
    res = SubmissionResult("sub")
    res.outcomes[OutcomeStatus.FACES_FOUND] = OutcomeEvent.make("sub", "r", OutcomeStatus.FACES_FOUND, faces=2)
    res.lists["sub:f0"] = _list("sub:f0", {"a": 0.7})
    assert not res.final
    res.dead_faces.add("sub:f1")
    assert res.final and res.final_status == "candidates"


def test_no_face_is_final_without_lists() -> None:
    res = SubmissionResult("sub")
    res.outcomes[OutcomeStatus.NO_FACE] = OutcomeEvent.make("sub", "r", OutcomeStatus.NO_FACE)
    assert res.final and res.final_status == "no_face" and res.best_subject is None


def test_best_subject_is_the_highest_score_over_all_faces() -> None:
    res = SubmissionResult("sub")
    res.lists["sub:f0"] = _list("sub:f0", {"a": 0.65, "b": 0.62})
    res.lists["sub:f1"] = _list("sub:f1", {"c": 0.81})
    assert res.best_subject == "c"
    res.lists = {"sub:f0": _list("sub:f0", {})}
    assert res.best_subject is None and res.final_status == "no_candidate"
