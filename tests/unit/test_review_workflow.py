"""The review rules as pure functions: decisions, who may take which step, where a case goes, the blind rule."""

from __future__ import annotations

import pytest

from rfr.review import workflow as wf
from rfr.review.users import Principal, Role
from rfr.review.workflow import CandidateLabel, CaseState, Label, Outcome, PriorDecision, Stage

ALICE = Principal("alice", Role.REVIEWER)
BOB = Principal("bob", Role.REVIEWER)
SUE = Principal("sue", Role.SUPERVISOR)
SAM = Principal("sam", Role.SUPERVISOR)
AUDREY = Principal("audrey", Role.AUDITOR)
ADMIN = Principal("root", Role.ADMINISTRATOR)
SUBJECTS = {1: "subj-a", 2: "subj-b", 3: "subj-c"}
NOTE = "same scar above the left eye"


def _labels(*kinds: Label) -> list[CandidateLabel]:
    return [CandidateLabel(rank, kind, NOTE) for rank, kind in enumerate(kinds, 1)]


def _first(actor: str = "alice", outcome: Outcome = Outcome.LEAD, subject: str | None = "subj-a") -> PriorDecision:
    return PriorDecision(actor, "reviewer", Stage.FIRST, outcome, subject)


def test_exactly_one_possible_match_is_the_lead() -> None:
    verdict = wf.derive_outcome(_labels(Label.NOT_MATCH, Label.POSSIBLE_MATCH, Label.INCONCLUSIVE), SUBJECTS)
    assert (verdict.outcome, verdict.lead_rank, verdict.lead_subject_id) == (Outcome.LEAD, 2, "subj-b")
    assert [row["label"] for row in verdict.labels] == ["not_match", "possible_match", "inconclusive"]
    assert [row["subject_id"] for row in verdict.labels] == ["subj-a", "subj-b", "subj-c"]


def test_no_possible_match_is_no_lead_even_with_inconclusive_ones() -> None:
    verdict = wf.derive_outcome(_labels(Label.INCONCLUSIVE, Label.NOT_MATCH, Label.INCONCLUSIVE), SUBJECTS)
    assert (verdict.outcome, verdict.lead_rank, verdict.lead_subject_id) == (Outcome.NO_LEAD, None, None)


def test_two_possible_matches_are_refused_one_probe_is_one_person() -> None:
    with pytest.raises(wf.DecisionRefused) as caught:
        wf.derive_outcome(_labels(Label.POSSIBLE_MATCH, Label.NOT_MATCH, Label.POSSIBLE_MATCH), SUBJECTS)
    assert caught.value.reason == "two_possible_matches"
    assert "[1, 3]" in caught.value.detail
    assert not isinstance(caught.value, wf.NotPermitted)


@pytest.mark.parametrize("note", ["", "  ", "ok", " a  "])
def test_every_label_needs_a_note(note: str) -> None:
    items = [CandidateLabel(1, Label.NOT_MATCH, NOTE), CandidateLabel(2, Label.NOT_MATCH, note),
             CandidateLabel(3, Label.NOT_MATCH, NOTE)]
    with pytest.raises(wf.DecisionRefused) as caught:
        wf.derive_outcome(items, SUBJECTS)
    assert caught.value.reason == "note_too_short"
    assert "candidate 2" in str(caught.value)


@pytest.mark.parametrize("ranks", [[1, 2], [1, 2, 3, 4], [1, 2, 2], [1, 1, 2, 3]])
def test_one_label_for_each_candidate_exactly(ranks: list[int]) -> None:
    items = [CandidateLabel(r, Label.NOT_MATCH, NOTE) for r in ranks]
    with pytest.raises(wf.DecisionRefused) as caught:
        wf.derive_outcome(items, SUBJECTS)
    assert caught.value.reason == "labels_incomplete"


def test_notes_are_trimmed_and_bounded() -> None:
    verdict = wf.derive_outcome([CandidateLabel(1, Label.NOT_MATCH, "  nose differs \n")], {1: "s"})
    assert verdict.labels[0]["note"] == "nose differs"
    with pytest.raises(wf.DecisionRefused) as caught:
        wf.check_note("x" * (wf.MAX_NOTE + 1))
    assert caught.value.reason == "note_too_long"


def test_a_pending_case_takes_a_first_decision_from_a_reviewer_or_supervisor() -> None:
    assert wf.decision_stage(1, CaseState.PENDING, ALICE, []) == Stage.FIRST
    assert wf.decision_stage(1, CaseState.PENDING, SUE, []) == Stage.FIRST


@pytest.mark.parametrize("who", [AUDREY, ADMIN, Principal("token:cms", Role.CASE_SYSTEM)])
def test_only_reviewers_and_supervisors_decide(who: Principal) -> None:
    with pytest.raises(wf.NotPermitted) as caught:
        wf.decision_stage(1, CaseState.PENDING, who, [])
    assert caught.value.reason == "role_not_allowed"


def test_a_reviewer_never_verifies_their_own_decision() -> None:
    with pytest.raises(wf.NotPermitted) as caught:
        wf.decision_stage(7, CaseState.AWAITING_VERIFICATION, ALICE, [_first("alice")])
    assert caught.value.reason == "own_decision"
    assert "case 7" in str(caught.value)
    assert wf.decision_stage(7, CaseState.AWAITING_VERIFICATION, BOB, [_first("alice")]) == Stage.VERIFICATION


def test_a_supervisor_who_decided_first_cannot_verify_it_either() -> None:
    first = PriorDecision("sue", "supervisor", Stage.FIRST, Outcome.NO_LEAD, None)
    with pytest.raises(wf.NotPermitted):
        wf.decision_stage(3, CaseState.AWAITING_VERIFICATION, SUE, [first])


@pytest.mark.parametrize("state", [CaseState.ESCALATED, CaseState.LEAD, CaseState.NO_LEAD, CaseState.EXPIRED])
def test_decide_on_a_case_in_another_state_is_a_conflict(state: CaseState) -> None:
    with pytest.raises(wf.WrongState) as caught:
        wf.decision_stage(4, state, BOB, [_first()])
    assert caught.value.reason == "wrong_state"
    assert caught.value.state == state


def test_two_person_first_decision_awaits_verification_off_it_is_final() -> None:
    assert wf.next_state(Stage.FIRST, Outcome.LEAD, "subj-a", True, []) == CaseState.AWAITING_VERIFICATION
    assert wf.next_state(Stage.FIRST, Outcome.LEAD, "subj-a", False, []) == CaseState.LEAD
    assert wf.next_state(Stage.FIRST, Outcome.NO_LEAD, None, False, []) == CaseState.NO_LEAD


def test_verification_agreeing_is_final_disagreeing_escalates() -> None:
    lead = [_first(outcome=Outcome.LEAD, subject="subj-a")]
    assert wf.next_state(Stage.VERIFICATION, Outcome.LEAD, "subj-a", True, lead) == CaseState.LEAD
    assert wf.next_state(Stage.VERIFICATION, Outcome.LEAD, "subj-b", True, lead) == CaseState.ESCALATED
    assert wf.next_state(Stage.VERIFICATION, Outcome.NO_LEAD, None, True, lead) == CaseState.ESCALATED
    no_lead = [_first(outcome=Outcome.NO_LEAD, subject=None)]
    assert wf.next_state(Stage.VERIFICATION, Outcome.NO_LEAD, None, True, no_lead) == CaseState.NO_LEAD


def test_a_supervisors_resolution_is_final_whatever_it_is() -> None:
    assert wf.next_state(Stage.SUPERVISOR, Outcome.NO_LEAD, None, True, []) == CaseState.NO_LEAD
    assert wf.next_state(Stage.SUPERVISOR, Outcome.LEAD, "subj-c", True, []) == CaseState.LEAD


def test_only_a_supervisor_not_involved_resolves_an_escalated_case() -> None:
    prior = [_first("alice"), PriorDecision("bob", "reviewer", Stage.VERIFICATION, Outcome.NO_LEAD, None)]
    assert wf.resolution_stage(5, CaseState.ESCALATED, SUE, prior) == Stage.SUPERVISOR
    with pytest.raises(wf.NotPermitted) as caught:
        wf.resolution_stage(5, CaseState.ESCALATED, BOB, prior)
    assert caught.value.reason == "role_not_allowed"
    with pytest.raises(wf.NotPermitted) as caught:
        wf.resolution_stage(5, CaseState.ESCALATED, SUE, [PriorDecision("sue", "supervisor", Stage.FIRST,
                                                                        Outcome.LEAD, "subj-a"), *prior[1:]])
    assert caught.value.reason == "own_decision"
    with pytest.raises(wf.WrongState):
        wf.resolution_stage(5, CaseState.AWAITING_VERIFICATION, SUE, prior[:1])


def _escalation(actor: str = "alice", role: str = "reviewer") -> PriorDecision:
    return PriorDecision(actor, role, Stage.ESCALATION, None, None)


def test_the_supervisor_who_escalated_never_resolves() -> None:
    with pytest.raises(wf.NotPermitted) as caught:
        wf.resolution_stage(6, CaseState.ESCALATED, SUE, [_escalation("sue", "supervisor")])
    assert caught.value.reason == "own_decision"
    assert not wf.can_take(CaseState.ESCALATED, SUE, [_escalation("sue", "supervisor")])
    assert wf.can_take(CaseState.ESCALATED, SAM, [_escalation("sue", "supervisor")])


def test_a_resolution_counts_as_the_step_the_case_lacks() -> None:
    # nobody decided: the supervisor's resolution is the first decision, and awaits a blind verification
    assert wf.resolution_stage(6, CaseState.ESCALATED, SUE, [_escalation()]) == Stage.FIRST
    assert wf.next_state(Stage.FIRST, Outcome.LEAD, "subj-a", True, [_escalation()]) == \
        CaseState.AWAITING_VERIFICATION
    # one decision (its verifier escalated instead): the supervisor's resolution is its blind verification
    one = [_first("alice"), _escalation("bob")]
    assert wf.resolution_stage(6, CaseState.ESCALATED, SUE, one) == Stage.VERIFICATION
    assert wf.next_state(Stage.VERIFICATION, Outcome.LEAD, "subj-a", True, one) == CaseState.LEAD
    assert wf.next_state(Stage.VERIFICATION, Outcome.NO_LEAD, None, True, one) == CaseState.ESCALATED
    # a real disagreement (two people decided): final
    two = [*one, PriorDecision("sam", "supervisor", Stage.VERIFICATION, Outcome.NO_LEAD, None)]
    assert wf.resolution_stage(6, CaseState.ESCALATED, Principal("sal", Role.SUPERVISOR), two) == Stage.SUPERVISOR


def test_escalation_of_an_undecided_case_needs_a_note() -> None:
    assert wf.check_escalation(1, CaseState.PENDING, ALICE, [], "  poor image, ask a supervisor ") == \
        "poor image, ask a supervisor"
    assert wf.check_escalation(1, CaseState.AWAITING_VERIFICATION, BOB, [_first("alice")], "unsure") == "unsure"
    with pytest.raises(wf.DecisionRefused):
        wf.check_escalation(1, CaseState.PENDING, ALICE, [], "")
    with pytest.raises(wf.WrongState):
        wf.check_escalation(1, CaseState.ESCALATED, ALICE, [], "again please")
    with pytest.raises(wf.NotPermitted):
        wf.check_escalation(1, CaseState.PENDING, AUDREY, [], "auditors do not escalate")


def test_the_first_reviewer_never_escalates_her_own_awaiting_decision() -> None:
    with pytest.raises(wf.NotPermitted) as caught:
        wf.check_escalation(1, CaseState.AWAITING_VERIFICATION, ALICE, [_first("alice")], "skip the verifier")
    assert caught.value.reason == "own_decision"


def test_a_supervisor_closes_a_lead_once() -> None:
    assert wf.check_close(2, CaseState.LEAD, False, SUE, "charged") == "charged"
    with pytest.raises(wf.NotPermitted):
        wf.check_close(2, CaseState.LEAD, False, ALICE, "charged")
    with pytest.raises(wf.WrongState):
        wf.check_close(2, CaseState.LEAD, True, SUE, "charged")
    with pytest.raises(wf.WrongState):
        wf.check_close(2, CaseState.NO_LEAD, False, SUE, "charged")


def test_the_verifier_decides_blind_and_so_does_a_supervisor() -> None:
    prior = [_first("alice")]
    assert wf.visible_decisions(CaseState.AWAITING_VERIFICATION, prior, BOB) == []
    assert wf.visible_decisions(CaseState.AWAITING_VERIFICATION, prior, ALICE) == [0]
    assert wf.visible_decisions(CaseState.AWAITING_VERIFICATION, prior, SUE) == []
    assert wf.visible_decisions(CaseState.AWAITING_VERIFICATION, prior, AUDREY) == [0]
    assert wf.visible_decisions(CaseState.AWAITING_VERIFICATION, prior, ADMIN) == []


def test_a_reviewer_sees_only_her_own_decisions_until_the_case_is_final() -> None:
    escalated = [_first("alice"), _escalation("bob")]  # the verifier escalated instead of deciding
    assert wf.visible_decisions(CaseState.ESCALATED, escalated, BOB) == [1]
    assert wf.visible_decisions(CaseState.ESCALATED, escalated, ALICE) == [0]
    disagreed = [_first("alice"), PriorDecision("bob", "reviewer", Stage.VERIFICATION, Outcome.NO_LEAD, None)]
    assert wf.visible_decisions(CaseState.ESCALATED, disagreed, BOB) == [1]
    for state in (CaseState.LEAD, CaseState.NO_LEAD, CaseState.EXPIRED):
        assert wf.visible_decisions(state, disagreed, BOB) == [0, 1]


def test_a_supervisor_sees_every_decision_only_after_a_disagreement_or_once_final() -> None:
    escalated = [_first("alice"), _escalation("bob")]  # one decision: the supervisor verifies it blind
    assert wf.visible_decisions(CaseState.ESCALATED, escalated, SUE) == [1]
    assert wf.visible_decisions(CaseState.ESCALATED, escalated, AUDREY) == [0, 1]
    disagreed = [_first("alice"), PriorDecision("bob", "reviewer", Stage.VERIFICATION, Outcome.NO_LEAD, None)]
    assert wf.visible_decisions(CaseState.ESCALATED, disagreed, SUE) == [0, 1]
    assert wf.visible_decisions(CaseState.LEAD, escalated, SUE) == [0, 1]


def test_two_person_means_two_different_people_reached_the_outcome() -> None:
    verified = [_first("alice"), PriorDecision("bob", "reviewer", Stage.VERIFICATION, Outcome.LEAD, "subj-a")]
    assert wf.two_person_confirmed(verified, Outcome.LEAD, "subj-a")
    disagreed = [_first("alice"), PriorDecision("bob", "reviewer", Stage.VERIFICATION, Outcome.NO_LEAD, None),
                 PriorDecision("sue", "supervisor", Stage.SUPERVISOR, Outcome.NO_LEAD, None)]
    assert wf.two_person_confirmed(disagreed, Outcome.NO_LEAD, None)
    alone = [PriorDecision("alice", "reviewer", Stage.ESCALATION, None, None),
             PriorDecision("sue", "supervisor", Stage.SUPERVISOR, Outcome.LEAD, "subj-a")]
    assert not wf.two_person_confirmed(alone, Outcome.LEAD, "subj-a")
    assert not wf.two_person_confirmed([_first("alice")], Outcome.LEAD, "subj-a")
