"""What the case page shows, worked out from a :class:`~rfr.review.views.CaseView`: quality in plain words, the
steps open to the viewer, the decisions in people's words, and the labels read back from a posted form.

Form fields of a decision (one per candidate of rank ``r``): ``label-r`` (``possible_match`` / ``not_match`` /
``inconclusive``) and ``note-r``; ``note`` (the decision's own note) and ``reason`` (the case or crime reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rfr.core.settings import ReviewSettings
from rfr.review import workflow as wf
from rfr.review.users import Principal
from rfr.review.views import CaseView, DecisionView

LABELS: tuple[tuple[str, str, str], ...] = (
    (wf.Label.POSSIBLE_MATCH.value, "Possible match", "1"),
    (wf.Label.NOT_MATCH.value, "Not a match", "2"),
    (wf.Label.INCONCLUSIVE.value, "Inconclusive", "3"),
)
"""(value, words, keyboard shortcut) of the per-candidate choices."""
LABEL_WORDS = {value: words for value, words, _ in LABELS}
STAGE_WORDS = {"first": "First decision", "verification": "Verification (second reviewer)",
               "supervisor": "Supervisor's resolution", "escalation": "Escalation to a supervisor"}
STATE_WORDS = {"pending": "Waiting for a first decision", "awaiting_verification": "Waiting for a second reviewer",
               "escalated": "Escalated to a supervisor (the reviewers disagreed, or asked)", "lead": "Decided: lead",
               "no_lead": "Decided: no lead", "expired": "Expired (no decision in time)"}
OUTCOME_WORDS = {"lead": "Lead (one candidate is a possible match)", "no_lead": "No lead (no candidate matches)"}


@dataclass(frozen=True)
class QualityFlag:
    """One quality measure in plain words; ``low`` when it is below what a reliable comparison needs."""

    name: str
    value: str
    low: bool
    explain: str


def quality_flags(quality: Mapping[str, Any], rs: ReviewSettings) -> list[QualityFlag]:
    """The probe's face width, sharpness, pose and detector score, each with whether it is too low."""
    face_px = float(quality.get("face_px", 0.0))
    sharpness = float(quality.get("sharpness", quality.get("blur", 0.0)))
    pose_ok = bool(quality.get("pose_ok", True))
    score = float(quality.get("score", 0.0))
    return [
        QualityFlag("Face width", f"{face_px:.0f} pixels", face_px < rs.reliable_face_px,
                    f"a reliable comparison needs at least {rs.reliable_face_px:.0f} pixels"),
        QualityFlag("Sharpness", f"{sharpness:.0f}", sharpness < rs.reliable_sharpness,
                    f"below {rs.reliable_sharpness:.0f} the face is too blurred to compare reliably"),
        QualityFlag("Pose", "facing the camera" if pose_ok else "turned away or tilted", not pose_ok,
                    "a turned face is harder to compare"),
        QualityFlag("Detector score", f"{score:.2f}", False, "how sure the detector was that this is a face"),
    ]


@dataclass(frozen=True)
class Steps:
    """What the viewer may do on the case now; ``own_decision``: the viewer made the first decision, so another
    person verifies it; ``taken_by``: another reviewer's live claim (until ``taken_until``)."""

    decide: bool
    resolve: bool
    escalate: bool
    close: bool
    release: bool
    own_decision: bool
    taken_by: str | None
    taken_until: datetime | None


def _claim_of(view: CaseView, now: datetime) -> tuple[str | None, datetime | None]:
    if view.claimed_by is not None and view.claimed_until is not None and view.claimed_until > now:
        return view.claimed_by, view.claimed_until
    return None, None


def steps(view: CaseView, viewer: Principal, now: datetime) -> Steps:
    """The steps open to ``viewer`` (the store checks them again when they are taken)."""
    prior = [wf.PriorDecision(d.actor, d.role, wf.Stage(d.stage), None, d.lead_subject_id) for d in view.decisions]
    holder, until = _claim_of(view, now)
    other = holder if holder is not None and holder != viewer.name else None
    free = other is None
    role = str(viewer.role)
    can = wf.can_take(view.state, viewer, prior)
    own = view.state == wf.CaseState.AWAITING_VERIFICATION and any(d.actor == viewer.name for d in view.decisions)
    return Steps(
        decide=free and can and view.state in (wf.CaseState.PENDING, wf.CaseState.AWAITING_VERIFICATION),
        resolve=free and can and view.state == wf.CaseState.ESCALATED,
        escalate=free and role in wf.DECIDING_ROLES and not own
        and view.state in (wf.CaseState.PENDING, wf.CaseState.AWAITING_VERIFICATION),
        close=role == "supervisor" and view.state == wf.CaseState.LEAD and view.closed_at is None,
        release=holder == viewer.name, own_decision=own, taken_by=other, taken_until=until if other else None)


@dataclass(frozen=True)
class ShownDecision:
    """A decision as the page shows it."""

    stage: str
    actor: str
    role: str
    at: datetime
    outcome: str
    note: str
    labels: list[tuple[int, str, str, str]]  # (rank, subject, label words, note)


def shown(decision: DecisionView) -> ShownDecision:
    labels = [(int(x.get("rank", 0)), str(x.get("subject_id", "")), LABEL_WORDS.get(str(x.get("label")), "?"),
               str(x.get("note", ""))) for x in decision.labels]
    return ShownDecision(STAGE_WORDS.get(decision.stage, decision.stage), decision.actor, decision.role,
                         decision.decided_at, OUTCOME_WORDS.get(decision.outcome or "", "—"), decision.note, labels)


def labels_from_form(form: Mapping[str, Any], ranks: list[int]) -> list[wf.CandidateLabel]:
    """The per-candidate labels of a posted decision form. A candidate left without a choice is refused by the
    store (``labels_incomplete``); an unknown choice here (DecisionRefused ``bad_label``)."""
    out: list[wf.CandidateLabel] = []
    for rank in ranks:
        value = str(form.get(f"label-{rank}", "") or "")
        if not value:
            continue
        if value not in LABEL_WORDS:
            raise wf.DecisionRefused("bad_label", f"candidate {rank}: {value[:40]!r} is not a choice")
        out.append(wf.CandidateLabel(rank, wf.Label(value), str(form.get(f"note-{rank}", "") or "")))
    if len(out) != len(ranks):
        missing = [r for r in ranks if r not in {x.rank for x in out}]
        raise wf.DecisionRefused("labels_incomplete", "choose possible match, not a match or inconclusive for every "
                                 f"candidate: candidate(s) {', '.join(map(str, missing))} have none")
    return out


def box_of(view: CaseView) -> dict[str, float]:
    """The face box on the still, in still pixels (x, y, width, height)."""
    box = view.probe.box
    return {k: float(box.get(k, 0.0)) for k in ("x", "y", "width", "height")}


TITLES = {"own_decision": "Not yours to verify", "role_not_allowed": "Not allowed", "case_not_found": "No such case",
          "wrong_state": "Not possible in this state", "claimed": "Taken by another reviewer"}
"""Titles of the error page for the review rules' refusals (by ``reason``; else "Decision refused")."""


def refusal_status(exc: wf.ReviewError) -> int:
    """The HTTP status of a refusal: 403 not permitted, 404 no case, 409 wrong state or taken, 422 refused."""
    if isinstance(exc, wf.NotPermitted):
        return 403
    if isinstance(exc, wf.CaseNotFound):
        return 404
    if isinstance(exc, wf.WrongState):
        return 409
    return 422


def refusal_title(reason: str) -> str:
    return TITLES.get(reason, "Decision refused")
