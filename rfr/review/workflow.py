"""The review rules, as pure functions: what a decision is, who may make it, where it takes a case.

A reviewer's decision is one :class:`Label` per candidate of the case, each with a note, and the outcome derived
from it (:func:`derive_outcome`): ``lead`` when exactly one candidate is a ``possible_match`` (that candidate is
the lead), ``no_lead`` when none is. Two or more possible matches are refused: one probe is one person.

With two-person verification on, a final outcome always rests on two different people who decided independently
(blind to each other's decision): a case goes ``pending`` -> first decision -> ``awaiting_verification`` -> a
*different* person decides blind -> the same outcome and lead subject make it final (``lead`` / ``no_lead``), a
different one ``escalated`` (a real disagreement) -> a supervisor who took no part resolves it, and that is final.
A reviewer or supervisor may escalate an open case with a note (not a case awaiting the verification of their own
decision). A supervisor's resolution of an escalated case counts as the step the case still lacks
(:func:`resolution_stage`): with no decision yet it is the FIRST decision (the case then awaits a blind verification
by someone else), with one decision it is the blind VERIFICATION of it, after a real disagreement it is final. The
person who escalated a case never resolves it. With two-person verification off the first decision is final.

Who sees which decision (:func:`visible_decisions`): auditors see every decision; once a case is final (or expired)
everyone does; a supervisor sees every decision of a case escalated after a real disagreement; otherwise a viewer
sees only their own decisions (a supervisor resolving an escalation without a disagreement also sees the escalation
notes), so every decision that counts towards the two people is made blind.
A supervisor closes a lead's case.

Refusals are exceptions with a machine ``reason`` (:class:`rfr.core.errors.ReasonedError`): :class:`CaseNotFound`
(HTTP 404), :class:`WrongState` (409; :class:`CaseClaimed`: another reviewer has taken the case, see
:mod:`rfr.review.claims`), :class:`NotPermitted` (403: the role, or one's own decision) and :class:`DecisionRefused`
(422: the decision itself is invalid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from rfr.core.errors import ReasonedError

MIN_NOTE = 3
"""Fewest characters (after trimming white space) of a label's or an escalation's note."""
MAX_NOTE = 4000


class CaseState(StrEnum):
    PENDING = "pending"
    AWAITING_VERIFICATION = "awaiting_verification"
    ESCALATED = "escalated"
    LEAD = "lead"
    NO_LEAD = "no_lead"
    EXPIRED = "expired"


OPEN_STATES = frozenset({CaseState.PENDING, CaseState.AWAITING_VERIFICATION, CaseState.ESCALATED})
"""States of a case still waiting for people (re-searched, expired by retention after pending_days)."""


class Label(StrEnum):
    POSSIBLE_MATCH = "possible_match"
    NOT_MATCH = "not_match"
    INCONCLUSIVE = "inconclusive"


class Outcome(StrEnum):
    LEAD = "lead"
    NO_LEAD = "no_lead"


class Stage(StrEnum):
    FIRST = "first"
    VERIFICATION = "verification"
    SUPERVISOR = "supervisor"
    ESCALATION = "escalation"


DECIDING_ROLES = frozenset({"reviewer", "supervisor"})
"""Roles that may decide and escalate (a supervisor also resolves and closes)."""
VIEWING_ROLES = frozenset({"reviewer", "supervisor", "auditor"})
"""Roles that may open a case."""
SEES_EVERY_DECISION = frozenset({"auditor"})
"""Roles that see every decision of a case in any state (they never decide)."""
INDEPENDENT_STAGES = frozenset({"first", "verification"})
"""Stages of a decision made blind to any other decision: the two people of the two-person rule."""
DONE_STATES = frozenset({"lead", "no_lead", "expired"})
"""States in which nothing more is decided: every decision is shown to every viewer."""


class Actor(Protocol):
    """Who acts: ``rfr.review.users.Principal`` (its ``role`` a ``Role`` StrEnum, equal to these strings)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


class ReviewError(ReasonedError):
    """Base of the review refusals: ``reason`` (machine) and ``detail`` (for people)."""


class CaseNotFound(ReviewError, LookupError):
    """No case has this id (HTTP 404)."""

    def __init__(self, case_id: int) -> None:
        super().__init__("case_not_found", f"no case {case_id}")
        self.case_id = case_id


class WrongState(ReviewError):
    """The case is not in a state that allows this step (HTTP 409)."""

    def __init__(self, case_id: int, state: str, step: str) -> None:
        super().__init__("wrong_state", f"case {case_id} is {state}: it cannot take {step}")
        self.case_id = case_id
        self.state = state


class CaseClaimed(WrongState):
    """Another reviewer has taken the case from the queue and their claim is still live (HTTP 409, ``claimed``)."""

    def __init__(self, case_id: int, holder: str, until: datetime) -> None:
        ReviewError.__init__(self, "claimed", f"case {case_id} is taken by {holder} until {until:%Y-%m-%d %H:%M} UTC: "
                             "one reviewer at a time works on a case")
        self.case_id = case_id
        self.state = "claimed"
        self.holder = holder
        self.until = until


class DecisionRefused(ReviewError, ValueError):
    """The decision or note is invalid (HTTP 422), e.g. ``two_possible_matches``, ``note_too_short``."""


class NotPermitted(DecisionRefused):
    """This person may not take this step (HTTP 403): ``role_not_allowed`` or ``own_decision``."""


@dataclass(frozen=True)
class CandidateLabel:
    """A reviewer's label of one candidate (by its rank on the case's list) and why."""

    rank: int
    label: Label
    note: str


@dataclass(frozen=True)
class Verdict:
    """A checked decision: the labels with their subjects, the outcome and the lead (rank, subject) if any."""

    labels: tuple[dict[str, object], ...]
    outcome: Outcome
    lead_rank: int | None
    lead_subject_id: str | None


@dataclass(frozen=True)
class PriorDecision:
    """A decision already recorded on a case (the store's decisions row)."""

    actor: str
    role: str
    stage: Stage
    outcome: Outcome | None
    lead_subject_id: str | None


def check_note(note: str, what: str = "note") -> str:
    """``note`` trimmed, or :class:`DecisionRefused` (``note_too_short`` / ``note_too_long``)."""
    text = note.strip()
    if len(text) < MIN_NOTE:
        raise DecisionRefused("note_too_short", f"{what} needs at least {MIN_NOTE} characters, got {text!r}")
    if len(text) > MAX_NOTE:
        raise DecisionRefused("note_too_long", f"{what} has {len(text)} characters, at most {MAX_NOTE}")
    return text


def derive_outcome(labels: Sequence[CandidateLabel], subjects: Mapping[int, str]) -> Verdict:
    """Check one label per candidate (``subjects``: rank -> subject id of the case's candidates) and derive the
    outcome. Raises :class:`DecisionRefused`: ``labels_incomplete`` (a candidate unlabelled, labelled twice, or an
    unknown rank), ``note_too_short``, ``two_possible_matches``."""
    ranks = [item.rank for item in labels]
    if sorted(ranks) != sorted(subjects) or len(set(ranks)) != len(ranks):
        raise DecisionRefused(
            "labels_incomplete", f"one label per candidate is needed: ranks {sorted(subjects)}, got {ranks}")
    rows: list[dict[str, object]] = []
    for item in sorted(labels, key=lambda i: i.rank):
        note = check_note(item.note, f"the note of candidate {item.rank}")
        rows.append({"rank": item.rank, "subject_id": subjects[item.rank], "label": Label(item.label).value,
                     "note": note})
    matches = [item.rank for item in labels if item.label == Label.POSSIBLE_MATCH]
    if len(matches) > 1:
        raise DecisionRefused("two_possible_matches", f"candidates {sorted(matches)} are all possible matches: "
                              "one probe is one person, at most one can be the lead")
    if not matches:
        return Verdict(tuple(rows), Outcome.NO_LEAD, None, None)
    return Verdict(tuple(rows), Outcome.LEAD, matches[0], subjects[matches[0]])


def require_role(actor: Actor, roles: frozenset[str], step: str) -> None:
    """:class:`NotPermitted` (``role_not_allowed``) unless ``actor``'s role is one of ``roles``."""
    if str(actor.role) not in roles:
        raise NotPermitted("role_not_allowed", f"{actor.name} ({actor.role}) may not {step}")


def took_part(actor: Actor, prior: Sequence[PriorDecision]) -> bool:
    """Whether ``actor`` already decided or escalated this case (then they neither verify nor resolve it)."""
    return any(p.actor == actor.name for p in prior)


def independent_decisions(prior: Sequence[PriorDecision]) -> list[PriorDecision]:
    """The decisions made blind to any other (first decisions and verifications), oldest first."""
    return [p for p in prior if p.stage in INDEPENDENT_STAGES]


def disagreed(prior: Sequence[PriorDecision]) -> bool:
    """Whether two different people have decided the case independently (in an escalated case: a disagreement)."""
    return len({p.actor for p in independent_decisions(prior)}) >= 2


def decision_stage(case_id: int, state: str, actor: Actor, prior: Sequence[PriorDecision]) -> Stage:
    """The stage of ``actor``'s decision on a case in ``state`` with ``prior`` decisions (via ``decide``: first or
    verification). Raises :class:`NotPermitted` (role, ``own_decision``) or :class:`WrongState`."""
    require_role(actor, DECIDING_ROLES, "decide a case")
    if state == CaseState.PENDING:
        return Stage.FIRST
    if state != CaseState.AWAITING_VERIFICATION:
        raise WrongState(case_id, state, "a decision" + (" (a supervisor resolves it)" if state == "escalated" else ""))
    if took_part(actor, prior):
        raise NotPermitted("own_decision", f"{actor.name} already took part in case {case_id} (its first decision or "
                           "its escalation): a different person verifies it")
    return Stage.VERIFICATION


def resolution_stage(case_id: int, state: str, actor: Actor, prior: Sequence[PriorDecision]) -> Stage:
    """The stage a supervisor's resolution of an escalated case counts as: ``first`` when nobody has decided the
    case yet (it then awaits a blind verification by someone else), ``verification`` when one person has (the
    supervisor does not see that decision: :func:`visible_decisions`), ``supervisor`` (final) after a real
    disagreement. Raises :class:`NotPermitted` (role; ``own_decision``: the supervisor decided or escalated this
    case) or :class:`WrongState` (not escalated)."""
    require_role(actor, frozenset({"supervisor"}), "resolve an escalated case")
    if state != CaseState.ESCALATED:
        raise WrongState(case_id, state, "a supervisor's resolution")
    if took_part(actor, prior):
        raise NotPermitted("own_decision", f"{actor.name} already decided or escalated case {case_id}: another "
                           "supervisor resolves it")
    decided = independent_decisions(prior)
    if not decided:
        return Stage.FIRST
    if not disagreed(prior):
        return Stage.VERIFICATION
    return Stage.SUPERVISOR


def next_state(stage: Stage, outcome: Outcome, lead_subject_id: str | None, two_person: bool,
               prior: Sequence[PriorDecision]) -> CaseState:
    """Where a decision at ``stage`` takes the case: awaiting verification, escalated (a disagreement), or final."""
    final = CaseState.LEAD if outcome == Outcome.LEAD else CaseState.NO_LEAD
    if stage == Stage.FIRST:
        return CaseState.AWAITING_VERIFICATION if two_person else final
    if stage == Stage.VERIFICATION:
        first = next(p for p in reversed(prior) if p.stage == Stage.FIRST)
        agrees = first.outcome == outcome and first.lead_subject_id == lead_subject_id
        return final if agrees else CaseState.ESCALATED
    return final


def check_escalation(case_id: int, state: str, actor: Actor, prior: Sequence[PriorDecision], note: str) -> str:
    """The trimmed note of an escalation of an open, undecided case by a reviewer or supervisor; never of a case
    awaiting the verification of one's own decision (:class:`NotPermitted` ``own_decision``)."""
    require_role(actor, DECIDING_ROLES, "escalate a case")
    if state not in (CaseState.PENDING, CaseState.AWAITING_VERIFICATION):
        raise WrongState(case_id, state, "an escalation")
    if took_part(actor, prior):
        raise NotPermitted("own_decision", f"{actor.name} made the first decision on case {case_id}: a different "
                           "person verifies it (or escalates it)")
    return check_note(note, "the escalation note")


def check_close(case_id: int, state: str, closed: bool, actor: Actor, note: str) -> str:
    """The trimmed note of closing a lead's case (supervisor; once)."""
    require_role(actor, frozenset({"supervisor"}), "close a case")
    if state != CaseState.LEAD or closed:
        raise WrongState(case_id, f"{state}{' (closed)' if closed else ''}", "closing")
    return check_note(note, "the closing note")


def visible_decisions(state: str, decisions: Sequence[PriorDecision], viewer: Actor) -> list[int]:
    """Indices of ``decisions`` that ``viewer`` may see. Auditors see every decision, and so does everyone once the
    case is final (or expired); a supervisor sees every decision of a case escalated after a real disagreement.
    Otherwise a viewer sees only their own (a supervisor on an escalated case also the escalation notes): a
    verifier, or a supervisor resolving an escalation that counts as a first decision or a verification, decides
    blind."""
    everything = list(range(len(decisions)))
    role = str(viewer.role)
    if role in SEES_EVERY_DECISION or state in DONE_STATES:
        return everything
    if role == "supervisor" and state == CaseState.ESCALATED:
        if disagreed(decisions):
            return everything
        return [i for i, d in enumerate(decisions) if d.actor == viewer.name or d.stage == Stage.ESCALATION]
    return [i for i, d in enumerate(decisions) if d.actor == viewer.name]


def two_person_confirmed(decisions: Sequence[PriorDecision], outcome: Outcome, lead_subject_id: str | None) -> bool:
    """Whether at least two different people reached this final outcome (and the same lead subject)."""
    agreeing = {d.actor for d in decisions
                if d.stage != Stage.ESCALATION and d.outcome == outcome and d.lead_subject_id == lead_subject_id}
    return len(agreeing) >= 2


def can_take(state: str, actor: Actor, prior: Sequence[PriorDecision]) -> bool:
    """Whether ``actor`` has a step to take on a case in ``state`` (a first decision, a verification of another's
    decision, a supervisor's resolution of a case they took no part in): who may take (claim) it from the queue."""
    role = str(actor.role)
    if role not in DECIDING_ROLES:
        return False
    if state == CaseState.PENDING:
        return True
    if state == CaseState.AWAITING_VERIFICATION:
        return not took_part(actor, prior)
    if state == CaseState.ESCALATED:
        return role == "supervisor" and not took_part(actor, prior)
    return False


def check_claim(case_id: int, claimed_by: str | None, claimed_until: datetime | None, actor: Actor,
                now: datetime) -> None:
    """:class:`CaseClaimed` when someone other than ``actor`` holds a claim on the case that is live at ``now``."""
    if claimed_by and claimed_by != actor.name and claimed_until is not None and claimed_until > now:
        raise CaseClaimed(case_id, claimed_by, claimed_until)
