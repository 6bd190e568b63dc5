"""The review store on SQLite and on a real PostgreSQL: migrations, cases from candidate lists, two-person blind
verification, refusals, the outbox, gallery photos, policy changes, all audited in the same transaction."""

from __future__ import annotations

import json
import threading
from datetime import UTC, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from support.review_data import (
    ALICE,
    AUDREY,
    BOB,
    SAM,
    SECRET,
    SUE,
    T0,
    Env,
    candidate_list,
    enrolment,
    labels,
    open_store,
    unit,
)

from rfr.core.db import make_engine
from rfr.core.review_messages import DecisionEvent
from rfr.core.schemas import decode
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.audit import AuditLog
from rfr.review.store import VERSION_TABLE, ReviewStore
from rfr.review.tables import metadata
from rfr.review.users import Principal

ALL_TABLES = {"probes", "searches", "cases", "candidates", "decisions", "gallery_photos", "gallery_changes",
              "outbox", "policy_state", "audit_entries", "audit_checkpoints", "audit_head", "users", "api_tokens",
              "revoked_sessions", "clusters", "cluster_sightings", "cluster_searches"}


def _new_case(env: Env, face_id: str = "sub_a:f0", **kw: object) -> int:
    case_id = env.store.record_search(candidate_list(face_id, **kw))  # type: ignore[arg-type]
    assert case_id is not None
    return case_id


def _events(env: Env) -> list[DecisionEvent]:
    return [decode(DecisionEvent, item.payload) for item in env.store.pending_outbox()]


# --- schema -------------------------------------------------------------------------------------------------
def test_migrate_creates_every_table_and_matches_the_metadata(database_url: str) -> None:
    engine = make_engine(database_url)
    audit = AuditLog(engine, SECRET)
    ReviewStore.open(engine, audit)
    ReviewStore.open(engine, audit)  # a second start finds it done
    names = set(inspect(engine).get_table_names())
    assert ALL_TABLES | {VERSION_TABLE} <= names
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar_one() == "0005"
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert {table.name for table in metadata.sorted_tables} == ALL_TABLES


def test_times_come_back_as_aware_utc(env: Env) -> None:
    case_id = _new_case(env)
    view = env.store.case(case_id, SUE, "crime-1")
    assert view.created_at == T0 and view.created_at.tzinfo is not None
    assert view.created_at.utcoffset() == timedelta(0)
    assert view.probe.captured_at == T0 - timedelta(minutes=5)
    assert view.search.started_at == T0 - timedelta(milliseconds=40)


# --- searches -----------------------------------------------------------------------------------------------
def test_a_candidate_list_becomes_one_case_however_often_it_arrives(env: Env) -> None:
    cl = candidate_list("sub_a:f0", still_ref="sha256:" + "ab" * 32)
    case_id = env.store.record_search(cl)
    assert case_id is not None
    assert env.store.record_search(cl) is None
    assert env.store.queue_stats().counts["pending"] == 1
    assert env.actions() == ["search", "case_created"]
    search = next(env.audit.export())
    assert search["case_id"] == case_id and search["reason"] == "crime-1"
    details = search["details"]
    assert details["started_at"] == (T0 - timedelta(milliseconds=40)).isoformat()
    assert details["ended_at"] == T0.isoformat()
    assert (details["watch_lists"], details["threshold"], details["model_id"]) == (["custody"], 0.6, "facenet-test")
    assert (details["face_id"], details["outcome"], details["candidate_count"]) == ("sub_a:f0", "candidates", 2)
    view = env.store.case(case_id, ALICE, "crime-1")
    assert [(c.rank, c.subject_id, c.score) for c in view.candidates] == [(1, "subj-1", 0.82), (2, "subj-2", 0.71)]
    assert view.probe.case_ref == "crime-1" and view.probe.has_crop and view.probe.has_still
    assert view.probe.quality["face_px"] == 120.0
    assert view.probe.box == {"x": 10.0, "y": 20.0, "width": 80.0, "height": 80.0}
    assert env.store.probe_crop(case_id) == cl.probe.crop_jpeg
    assert env.store.probe_still_ref(case_id) == cl.probe.still_ref


def test_no_candidate_is_recorded_for_the_audit_only(env: Env) -> None:
    assert env.store.record_search(candidate_list("sub_b:f0", [])) is None
    assert sum(env.store.queue_stats().counts.values()) == 0
    entry = next(env.audit.export())
    assert (entry["action"], entry["case_id"], entry["details"]["outcome"]) == ("search", None, "no_candidate")
    with env.store.engine.connect() as conn:
        assert conn.execute(select(t.probes.c.status)).scalar_one() == "unmatched"


# --- two-person verification ----------------------------------------------------------------------------------
def test_a_lead_stands_when_a_second_reviewer_agrees_blind(env: Env) -> None:
    case_id = _new_case(env)
    after_first = env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    assert after_first.state == "awaiting_verification" and after_first.outcome is None
    assert [d.actor for d in after_first.decisions] == ["alice"]
    assert _events(env) == []

    blind = env.store.case(case_id, BOB, "crime-1")
    assert blind.decisions == [] and blind.hidden_decisions == 1
    supervisor = env.store.case(case_id, SUE, "crime-1")  # a supervisor may verify too: blind as well
    assert supervisor.decisions == [] and supervisor.hidden_decisions == 1
    assert env.store.case(case_id, AUDREY, "audit 2025-03").decisions[0].actor == "alice"

    final = env.store.decide(case_id, BOB, labels(2, lead=1), "crime-1", note="agree")
    assert (final.state, final.outcome, final.lead_rank, final.lead_subject_id) == ("lead", "lead", 1, "subj-1")
    [event] = _events(env)
    assert event.event_id == f"case-{case_id}:final" and event.outcome == "lead" and event.two_person
    assert event.lead is not None and (event.lead.subject_id, event.lead.rank) == ("subj-1", 1)
    assert [(d.reviewer, d.stage, d.outcome, d.lead_subject_id) for d in event.decisions] == [
        ("alice", "first", "lead", "subj-1"), ("bob", "verification", "lead", "subj-1")]
    assert (event.case_ref, event.retailer_id, event.face_id, event.model_id) == (
        "crime-1", "shop-1", "sub_a:f0", "facenet-test")
    assert "never an identification" in event.notice and "confirmed by two trained reviewers" in event.notice
    assert env.actions() == ["search", "case_created", "decision", "case_view", "case_view", "case_view",
                             "verification"]
    assert env.audit.verify().ok


def test_a_reviewer_cannot_verify_their_own_decision(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    entries = len(env.actions())
    with pytest.raises(wf.NotPermitted) as caught:
        env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    assert caught.value.reason == "own_decision"
    assert env.store.case(case_id, SUE, "crime-1").state == "awaiting_verification"
    assert len(env.actions()) == entries + 1  # only the supervisor's view: the refusal changed nothing


def test_a_disagreement_goes_to_a_supervisor_whose_decision_is_final(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    escalated = env.store.decide(case_id, BOB, labels(2, lead=2), "crime-1")
    assert escalated.state == "escalated" and escalated.outcome is None
    assert _events(env) == []
    with pytest.raises(wf.WrongState):
        env.store.decide(case_id, SUE, labels(2), "crime-1")
    with pytest.raises(wf.NotPermitted) as caught:
        env.store.resolve(case_id, ALICE, labels(2), "crime-1")
    assert caught.value.reason == "role_not_allowed"
    final = env.store.resolve(case_id, SUE, labels(2, inconclusive=[1]), "crime-1", note="not safe to say")
    assert (final.state, final.outcome, final.lead_subject_id) == ("no_lead", "no_lead", None)
    [event] = _events(env)
    assert event.outcome == "no_lead" and event.lead is None and not event.two_person
    assert [d.stage for d in event.decisions] == ["first", "verification", "supervisor"]
    verification = next(e for e in env.audit.export() if e["action"] == "verification")
    assert verification["details"]["disagreement"] is True
    assert env.actions()[-1] == "resolution"


def test_no_lead_when_both_reviewers_see_no_match(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    final = env.store.decide(case_id, ALICE, labels(2, inconclusive=[2]), "crime-1")
    assert final.state == "no_lead" and final.decided_at == T0
    [event] = _events(env)
    assert (event.outcome, event.lead, event.two_person) == ("no_lead", None, True)
    assert event.notice.startswith("No lead:") and "never an identification" in event.notice


def test_a_supervisor_who_decided_cannot_resolve_the_disagreement(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, SUE, labels(2, lead=1), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    with pytest.raises(wf.NotPermitted) as caught:
        env.store.resolve(case_id, SUE, labels(2, lead=1), "crime-1")
    assert caught.value.reason == "own_decision"
    assert env.store.resolve(case_id, SAM, labels(2, lead=1), "crime-1").state == "lead"
    assert _events(env)[0].two_person  # sue and sam reached it


def test_invalid_decisions_and_roles_are_refused_and_change_nothing(env: Env) -> None:
    case_id = _new_case(env)
    refusals = [
        (ALICE, labels(2, lead=1)[:1], "labels_incomplete", wf.DecisionRefused),
        (ALICE, [*labels(1, lead=1), *[wf.CandidateLabel(2, wf.Label.POSSIBLE_MATCH, "also him")]],
         "two_possible_matches", wf.DecisionRefused),
        (ALICE, [wf.CandidateLabel(1, wf.Label.NOT_MATCH, ""), *labels(2)[1:]], "note_too_short", wf.DecisionRefused),
        (AUDREY, labels(2), "role_not_allowed", wf.NotPermitted),
    ]
    for who, items, reason, kind in refusals:
        with pytest.raises(kind) as caught:
            env.store.decide(case_id, who, items, "crime-1")
        assert caught.value.reason == reason
    with pytest.raises(wf.DecisionRefused) as caught:
        env.store.decide(case_id, ALICE, labels(2), "  ")
    assert caught.value.reason == "reason_required"
    with pytest.raises(wf.CaseNotFound):
        env.store.decide(case_id + 100, ALICE, labels(2), "crime-1")
    with pytest.raises(wf.CaseNotFound):
        env.store.case(case_id + 100, ALICE, "crime-1")
    assert env.actions() == ["search", "case_created"]
    with env.store.engine.connect() as conn:
        assert conn.execute(select(t.decisions)).all() == []


def test_with_two_person_off_the_first_decision_is_final(database_url: str) -> None:
    env = open_store(database_url, two_person=False)
    case_id = _new_case(env)
    assert env.store.decide(case_id, ALICE, labels(2, lead=2), "crime-1").state == "lead"
    [event] = _events(env)
    assert (event.outcome, event.two_person, event.lead and event.lead.subject_id) == ("lead", False, "subj-2")


def test_escalated_without_a_decision_the_resolution_is_a_first_decision_then_closed(env: Env) -> None:
    case_id = _new_case(env)
    view = env.store.escalate(case_id, ALICE, "face half hidden, need a second look", "crime-1")
    assert view.state == "escalated" and view.decisions[0].stage == "escalation"
    first = env.store.resolve(case_id, SUE, labels(2, lead=1), "crime-1")  # nobody decided yet: the first decision
    assert (first.state, first.outcome, [d.stage for d in first.decisions], first.hidden_decisions) == (
        "awaiting_verification", None, ["first"], 1)
    assert _events(env) == []
    for who in (ALICE, SUE):  # the one who escalated and the one who decided do not verify
        with pytest.raises(wf.NotPermitted) as caught:
            env.store.decide(case_id, who, labels(2, lead=1), "crime-1")
        assert caught.value.reason == "own_decision"
    blind = env.store.case(case_id, BOB, "crime-1")
    assert blind.decisions == [] and blind.hidden_decisions == 2
    lead = env.store.decide(case_id, BOB, labels(2, lead=1), "crime-1")
    assert lead.state == "lead"
    [event] = _events(env)
    assert event.two_person and [(d.reviewer, d.stage) for d in event.decisions] == [
        ("sue", "first"), ("bob", "verification")]
    with pytest.raises(wf.NotPermitted):
        env.store.close(case_id, ALICE, "done", "crime-1")
    env.clock.advance(days=3)
    closed = env.store.close(case_id, SUE, "charged at court", "crime-1")
    assert closed.closed_at == T0 + timedelta(days=3) and closed.state == "lead"
    with pytest.raises(wf.WrongState):
        env.store.close(case_id, SUE, "again", "crime-1")
    assert env.actions()[-5:] == ["escalation", "resolution", "case_view", "verification", "case_closed"]
    resolution = env.audit.query(action="resolution")[0]
    assert (resolution["details"]["stage"], resolution["details"]["state"]) == ("first", "awaiting_verification")


def test_a_supervisor_who_escalated_never_resolves_it_alone(env: Env) -> None:
    case_id = _new_case(env)
    env.store.escalate(case_id, SUE, "I will take this one myself", "crime-1")
    with pytest.raises(wf.NotPermitted) as caught:
        env.store.resolve(case_id, SUE, labels(2, lead=1), "crime-1")
    assert caught.value.reason == "own_decision"
    assert env.store.resolve(case_id, SAM, labels(2, lead=1), "crime-1").state == "awaiting_verification"
    with pytest.raises(wf.NotPermitted):  # nor verifies the decision of the supervisor she escalated to
        env.store.decide(case_id, SUE, labels(2, lead=1), "crime-1")
    assert _events(env) == []
    assert env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1").state == "lead"
    [event] = _events(env)
    assert event.two_person and {d.reviewer for d in event.decisions} == {"sam", "alice"}


def test_two_person_off_a_resolution_of_an_undecided_escalation_is_final(database_url: str) -> None:
    env = open_store(database_url, two_person=False)
    case_id = _new_case(env)
    env.store.escalate(case_id, SAM, "poor image, ask another supervisor", "crime-1")
    with pytest.raises(wf.NotPermitted):
        env.store.resolve(case_id, SAM, labels(2), "crime-1")
    assert env.store.resolve(case_id, SUE, labels(2), "crime-1").state == "no_lead"
    env.store.engine.dispose()


def test_a_verifier_who_escalates_leaves_a_blind_verification_to_the_supervisor(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    escalated = env.store.escalate(case_id, BOB, "not sure about the ear", "crime-1")
    assert escalated.state == "escalated"
    assert [d.actor for d in escalated.decisions] == ["bob"] and escalated.hidden_decisions == 1  # still blind
    assert env.store.case(case_id, BOB, "crime-1").hidden_decisions == 1
    supervisor = env.store.case(case_id, SUE, "crime-1")  # the escalation note, not the first decision
    assert [(d.actor, d.stage) for d in supervisor.decisions] == [("bob", "escalation")]
    assert supervisor.hidden_decisions == 1
    with pytest.raises(wf.NotPermitted):  # the one who escalated never resolves (here: bob as a supervisor)
        env.store.resolve(case_id, Principal("bob", SUE.role), labels(2, lead=1), "crime-1")
    final = env.store.resolve(case_id, SUE, labels(2, lead=1), "crime-1")  # agrees, blind: alice and sue
    assert final.state == "lead" and {d.actor for d in final.decisions} == {"alice", "bob", "sue"}
    [event] = _events(env)
    assert event.two_person and [(d.reviewer, d.stage) for d in event.decisions] == [
        ("alice", "first"), ("sue", "verification")]
    assert env.store.case(case_id, BOB, "crime-1").hidden_decisions == 0  # final: everyone sees every decision


def test_a_supervisor_who_verifies_an_escalation_and_disagrees_leaves_it_to_another(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    env.store.escalate(case_id, BOB, "not sure about the ear", "crime-1")
    disagreed = env.store.resolve(case_id, SUE, labels(2), "crime-1")
    assert disagreed.state == "escalated" and [d.actor for d in disagreed.decisions] == ["alice", "bob", "sue"]
    assert _events(env) == []
    with pytest.raises(wf.NotPermitted):
        env.store.resolve(case_id, SUE, labels(2), "crime-1")
    assert env.store.case(case_id, SAM, "crime-1").hidden_decisions == 0  # a real disagreement: all shown
    assert env.store.case(case_id, ALICE, "crime-1").hidden_decisions == 2  # a reviewer: her own only
    assert env.store.resolve(case_id, SAM, labels(2, lead=1), "crime-1").state == "lead"
    [event] = _events(env)
    assert [d.stage for d in event.decisions] == ["first", "verification", "supervisor"] and event.two_person


def test_the_first_reviewer_cannot_escalate_her_own_awaiting_decision(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    entries = len(env.actions())
    with pytest.raises(wf.NotPermitted) as caught:
        env.store.escalate(case_id, ALICE, "skip the second reviewer", "crime-1")
    assert caught.value.reason == "own_decision"
    assert env.store.case(case_id, AUDREY, "check").state == "awaiting_verification"
    assert len(env.actions()) == entries + 1


def test_a_purged_probe_makes_no_case_of_a_late_re_search(env: Env) -> None:
    env.store.record_search(candidate_list("sub_r:f0", []))
    with env.store.engine.begin() as conn:
        conn.execute(t.probes.update().values(crop_jpeg=None, template=None, purged_at=T0, purge_reason="x"))
    late = candidate_list("sub_r:f0", event_id="sub_r:f0:rs:g9", trigger="re_search", re_search_of="g9")
    assert env.store.record_search(late) is None
    assert env.store.queue_stats().counts["pending"] == 0
    search = env.audit.query(action="search")[0]
    assert search["details"]["probe_purged"] is True and search["details"]["event_id"] == "sub_r:f0:rs:g9"
    assert search["case_id"] is None and "case_created" not in env.actions()
    with env.store.engine.connect() as conn:
        assert conn.execute(select(t.probes.c.status)).scalar_one() == "unmatched"
        assert len(conn.execute(select(t.searches)).all()) == 2


def test_two_verifiers_at_once_make_one_decision(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def verify(who: Principal) -> None:
        barrier.wait()
        try:
            outcomes[who.name] = env.store.decide(case_id, who, labels(2, lead=1), "crime-1").state
        except wf.WrongState as exc:
            outcomes[who.name] = exc.reason

    threads = [threading.Thread(target=verify, args=(who,)) for who in (BOB, SAM)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["lead", "wrong_state"]
    assert len(_events(env)) == 1
    assert env.actions().count("verification") == 1


# --- queue, outbox, stats -------------------------------------------------------------------------------------
def test_queue_filters_pages_and_counts(env: Env) -> None:
    first = _new_case(env, "sub_q1:f0", retailer_id="shop-1")
    env.clock.advance(hours=1)
    second = _new_case(env, "sub_q2:f0", retailer_id="shop-2", watch_list="wanted")
    env.clock.advance(hours=1)
    third = _new_case(env, "sub_q3:f0", retailer_id="shop-2")
    env.store.decide(third, ALICE, labels(2, lead=1), "crime-1")
    assert [q.case_id for q in env.store.queue()] == [first, second, third]
    assert [q.case_id for q in env.store.queue(state="awaiting_verification")] == [third]
    assert [q.case_id for q in env.store.queue(retailer_id="shop-2")] == [second, third]
    assert [q.case_id for q in env.store.queue(watch_list="wanted")] == [second]
    assert [q.case_id for q in env.store.queue(older_than=T0 + timedelta(minutes=30))] == [first]
    assert [q.case_id for q in env.store.queue(limit=1, offset=1)] == [second]
    item = env.store.queue(limit=1)[0]
    assert (item.candidate_count, item.top_score, item.watch_lists, item.trigger) == (2, 0.82, ["custody"],
                                                                                       "submission")
    stats = env.store.queue_stats()
    assert stats.counts["pending"] == 2 and stats.counts["awaiting_verification"] == 1
    assert stats.counts["lead"] == 0 and stats.oldest_open_created_at == T0 and stats.outbox_pending == 0


def test_published_decisions_leave_the_outbox_once(env: Env) -> None:
    case_id = _new_case(env)
    env.store.decide(case_id, ALICE, labels(2), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    [item] = env.store.pending_outbox()
    assert (item.topic, item.key, item.event_id) == ("decisions", f"case-{case_id}", f"case-{case_id}:final")
    assert env.store.queue_stats().outbox_pending == 1
    assert env.store.mark_published([item.id]) == 1
    assert env.store.mark_published([item.id]) == 0
    assert env.store.pending_outbox() == []
    [(feed_id, event)] = env.store.decisions_since()
    assert feed_id == item.id and event.case_id == case_id and event.outcome == "no_lead"
    assert env.store.decisions_since(after_id=feed_id) == []
    published = [e for e in env.audit.export() if e["action"] == "decision_published"]
    assert len(published) == 1 and published[0]["case_id"] == case_id


# --- gallery photos and policy --------------------------------------------------------------------------------
def test_enrolled_photos_are_viewable_until_erased(env: Env) -> None:
    photo = "sha256:" + "cd" * 32
    change = enrolment("gc-1", [("gf-subj-1", "subj-1", unit((1, 1.0))), ("gf-subj-2", "subj-2", None)],
                       photo_refs=[photo, photo])
    result = env.store.record_gallery_change(change)
    assert (result.new, result.photos) == (True, 2)
    assert not env.store.record_gallery_change(change).new
    assert env.store.gallery_photo("gf-subj-1") == photo
    case_id = _new_case(env)
    assert [c.photo_ref for c in env.store.case(case_id, ALICE, "crime-1").candidates] == [photo, photo]

    erased = env.store.record_gallery_change(enrolment("gc-2", [("gf-subj-1", "subj-1", None)], action="erased"))
    assert erased.photos == 1 and erased.orphaned_photo_refs == []  # gf-subj-2 still uses the same photo
    assert env.store.gallery_photo("gf-subj-1") is None
    last = env.store.record_gallery_change(enrolment("gc-3", [("gf-subj-2", "subj-2", None)], action="erased"))
    assert last.orphaned_photo_refs == [photo]
    gallery = [e for e in env.audit.export() if e["action"].startswith("gallery_")]
    assert [e["action"] for e in gallery] == ["gallery_enrolment", "gallery_erasure", "gallery_erasure"]
    assert (gallery[0]["actor"], gallery[0]["reason"]) == ("cli:officer", "custody batch 7")


def test_policy_changes_are_audited_with_old_and_new(env: Env) -> None:
    policy = {"threshold": 0.6, "top_k": 5, "watch_lists": ["custody"], "two_person": True}
    assert env.store.record_policy(policy, "rfr-review")
    assert not env.store.record_policy(dict(policy), "rfr-review")
    assert env.store.record_policy({**policy, "threshold": 0.55}, "cli:admin", "administrator")
    changes = [e for e in env.audit.export() if e["action"] == "policy_change"]
    assert [c["details"]["old"] for c in changes] == [None, policy]
    assert changes[1]["details"]["new"]["threshold"] == 0.55 and changes[1]["actor"] == "cli:admin"
    with env.store.engine.connect() as conn:
        assert json.loads(conn.execute(select(t.policy_state.c.policy)).scalar_one())["threshold"] == 0.55


def test_the_store_refuses_naive_times(env: Env) -> None:
    env.clock.now = T0.replace(tzinfo=None)
    with pytest.raises(Exception, match="naive datetime"):
        env.store.record_search(candidate_list("sub_n:f0"))
    env.clock.now = T0.astimezone(UTC)
