"""How far a submission got, and whether it is final: the one rule, from its outcome events alone.

A submission is **final** when it was rejected, failed as a whole (a frame-level ``failed``), showed no usable face,
or once detect said how many faces it passed on (``faces_found``) and every one of those faces has its own
final outcome: ``passed_for_review``, ``no_candidate``, or ``failed`` naming the face (every dead letter of the
embed and match stages comes with one, see :mod:`rfr.core.deadletters`). The result collector
(:mod:`rfr.tools.results`), the stack benchmark and ingest's status store all call :func:`summarize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from rfr.core.schemas import OutcomeStatus


class OutcomeFacts(Protocol):
    """What the rule reads of an outcome (an :class:`rfr.core.schemas.OutcomeEvent` or a stored row)."""

    @property
    def status(self) -> OutcomeStatus: ...

    @property
    def faces(self) -> int | None: ...

    @property
    def face_id(self) -> str | None: ...

    @property
    def dropped(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Progress:
    """A submission's progress. ``status`` is one of :class:`OutcomeStatus`' values.

    ``faces``: faces passed on by detect (None until detect reports); the ``faces_*`` counts are distinct faces;
    ``faces_dropped``: faces detected but not passed on, by reason (quality gate, ``over_max_faces``).
    """

    status: str
    final: bool
    faces: int | None = None
    faces_passed_for_review: int = 0
    faces_no_candidate: int = 0
    faces_failed: int = 0
    faces_dropped: dict[str, int] = field(default_factory=dict)


_WHOLE = (OutcomeStatus.REJECTED, OutcomeStatus.FAILED, OutcomeStatus.NO_FACE)  # final, in this precedence
_PER_FACE = (OutcomeStatus.PASSED_FOR_REVIEW, OutcomeStatus.NO_CANDIDATE, OutcomeStatus.FAILED)  # with a face_id


def summarize(outcomes: Iterable[OutcomeFacts]) -> Progress:
    """The progress that ``outcomes`` (in any order, duplicates allowed) add up to."""
    whole: set[OutcomeStatus] = set()
    per_face: dict[OutcomeStatus, set[str]] = {s: set() for s in _PER_FACE}
    faces: int | None = None
    dropped: dict[str, int] = {}
    for o in outcomes:
        if o.status == OutcomeStatus.FACES_FOUND:
            faces, dropped = o.faces, dict(o.dropped)
        elif o.status == OutcomeStatus.NO_FACE:
            dropped = dropped or dict(o.dropped)
            whole.add(o.status)
        elif o.status in _PER_FACE and o.face_id:
            per_face[o.status].add(o.face_id)
        elif o.status in _WHOLE:
            whole.add(o.status)
    passed = per_face[OutcomeStatus.PASSED_FOR_REVIEW]
    no_candidate = per_face[OutcomeStatus.NO_CANDIDATE] - passed
    failed = per_face[OutcomeStatus.FAILED] - passed - no_candidate
    counts = {"faces_passed_for_review": len(passed), "faces_no_candidate": len(no_candidate),
              "faces_failed": len(failed)}
    done = len(passed) + len(no_candidate) + len(failed)
    for status in _WHOLE:
        if status in whole:
            return Progress(status.value, True, 0 if status == OutcomeStatus.NO_FACE else faces,
                            faces_dropped=dropped, **counts)
    final = faces is not None and done >= faces
    if passed:
        status = OutcomeStatus.PASSED_FOR_REVIEW
    elif final:
        status = OutcomeStatus.FAILED if failed else OutcomeStatus.NO_CANDIDATE  # a face never searched: not 'nobody'
    elif faces is not None:
        status = OutcomeStatus.FACES_FOUND
    else:
        status = OutcomeStatus.RECEIVED
    return Progress(status.value, final, faces, faces_dropped=dropped, **counts)

