"""The one rule for "this submission is final" (rfr.core.progress.summarize)."""

from __future__ import annotations

import pytest

from rfr.core.progress import summarize
from rfr.core.schemas import OutcomeEvent, OutcomeStatus

S = OutcomeStatus


def _o(status: OutcomeStatus, face: str | None = None, **kw: object) -> OutcomeEvent:
    return OutcomeEvent.make("sub", "r", status, face_id=face, **kw)


@pytest.mark.parametrize(("outcomes", "status", "final"), [
    ([], "received", False),
    ([_o(S.RECEIVED)], "received", False),
    ([_o(S.RECEIVED), _o(S.REJECTED)], "rejected", True),
    ([_o(S.FAILED, detail="corrupt: bad JPEG")], "failed", True),  # frame-level: no face id
    ([_o(S.NO_FACE, faces=0)], "no_face", True),
    ([_o(S.FACES_FOUND, faces=2)], "faces_found", False),
    ([_o(S.FACES_FOUND, faces=2), _o(S.NO_CANDIDATE, "f0")], "faces_found", False),
    ([_o(S.FACES_FOUND, faces=2), _o(S.NO_CANDIDATE, "f0"), _o(S.NO_CANDIDATE, "f1")], "no_candidate", True),
    ([_o(S.FACES_FOUND, faces=2), _o(S.PASSED_FOR_REVIEW, "f1")], "passed_for_review", False),
    ([_o(S.FACES_FOUND, faces=2), _o(S.PASSED_FOR_REVIEW, "f1"), _o(S.FAILED, "f0")], "passed_for_review", True),
    ([_o(S.FACES_FOUND, faces=2), _o(S.FAILED, "f0"), _o(S.FAILED, "f1")], "failed", True),
    # a face that was never searched must not read as "searched, nobody matched"
    ([_o(S.FACES_FOUND, faces=2), _o(S.FAILED, "f0"), _o(S.NO_CANDIDATE, "f1")], "failed", True),
    # per-face outcomes before detect's count (another partition's order): never final without the count
    ([_o(S.NO_CANDIDATE, "f0")], "received", False),
])
def test_status_and_finality(outcomes: list[OutcomeEvent], status: str, final: bool) -> None:
    progress = summarize(outcomes)
    assert (progress.status, progress.final) == (status, final)


def test_redelivered_and_contradictory_face_outcomes_count_each_face_once() -> None:
    outcomes = [_o(S.FACES_FOUND, faces=3), _o(S.PASSED_FOR_REVIEW, "f0"), _o(S.PASSED_FOR_REVIEW, "f0"),
                _o(S.FAILED, "f0"), _o(S.NO_CANDIDATE, "f1")]
    progress = summarize(outcomes)
    assert not progress.final  # f2 has no outcome; f0 twice (and a stale failure) still counts once
    assert (progress.faces_passed_for_review, progress.faces_no_candidate, progress.faces_failed) == (1, 1, 0)
    assert summarize([*outcomes, _o(S.FAILED, "f2")]).final


def test_dropped_faces_are_reported_from_detects_outcome() -> None:
    found = _o(S.FACES_FOUND, faces=32, dropped={"over_max_faces": 9, "too_small": 2})
    progress = summarize([found])
    assert progress.faces == 32 and progress.faces_dropped == {"over_max_faces": 9, "too_small": 2}
    assert summarize([_o(S.NO_FACE, faces=0, dropped={"blurry": 1})]).faces_dropped == {"blurry": 1}
