"""Claims and the queue's filters on SQLite and on a real PostgreSQL: a case is taken by one reviewer at a time,
a decision ends the claim, a claim runs out; the queue filters by store, quality, age, watch-list and "needs my
verification", and counts; migration 0002 fills the quality columns of probes recorded before it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from support.databases import at_revision
from support.review_data import ALICE, AUDREY, BOB, SAM, SECRET, SUE, T0, Env, candidate_list, labels

from rfr.core.db import make_engine
from rfr.core.schemas import FaceQuality
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.audit import AuditLog
from rfr.review.queue import QueueFilter
from rfr.review.store import MIGRATIONS, VERSION_TABLE, ReviewStore

LOW = FaceQuality(face_px=30.0, score=0.9, sharpness=80.0, eye_distance_px=10.0, pose_ok=True)
TURNED = FaceQuality(face_px=120.0, score=0.9, sharpness=500.0, eye_distance_px=40.0, pose_ok=False)
GOOD = FaceQuality(face_px=120.0, score=0.99, sharpness=500.0, eye_distance_px=40.0, pose_ok=True)


def _case(env: Env, face_id: str, quality: FaceQuality = GOOD, **kw: object) -> int:
    cl = candidate_list(face_id, **kw).model_copy(update={"quality": quality})  # type: ignore[arg-type]
    case_id = env.store.record_search(cl)
    assert case_id is not None
    return case_id


def test_a_case_is_taken_by_one_reviewer_at_a_time(env: Env) -> None:
    case_id = _case(env, "sub_a:f0")
    taken = env.store.claim(case_id, ALICE, 15)
    assert (taken.taken, taken.claimed_by) == (True, "alice")
    assert taken.claimed_until == env.clock() + timedelta(minutes=15)
    refused = env.store.claim(case_id, BOB, 15)
    assert (refused.taken, refused.claimed_by, refused.claimed_until) == (False, "alice", taken.claimed_until)
    env.clock.advance(minutes=5)
    assert env.store.claim(case_id, ALICE, 15).claimed_until == env.clock() + timedelta(minutes=15)  # renewed
    with pytest.raises(wf.CaseClaimed) as caught:
        env.store.decide(case_id, BOB, labels(2, lead=1), "crime-1")
    assert (caught.value.reason, caught.value.holder) == ("claimed", "alice")
    with pytest.raises(wf.CaseClaimed):
        env.store.escalate(case_id, BOB, "not sure at all", "crime-1")
    view = env.store.case(case_id, BOB, "crime-1")
    assert view.claimed_by == "alice" and view.state == "pending"
    assert [q.claimed_by for q in env.store.queue()] == ["alice"]
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")  # the holder decides: the claim ends
    assert env.store.case(case_id, SUE, "crime-1").claimed_by is None
    assert [q.claimed_by for q in env.store.queue()] == [None]


def test_a_claim_runs_out_and_can_be_given_back(env: Env) -> None:
    case_id = _case(env, "sub_a:f0")
    env.store.claim(case_id, ALICE, 10)
    assert env.store.release(case_id, BOB) is False
    assert env.store.release(case_id, ALICE) is True
    assert env.store.claim(case_id, BOB, 10).taken
    env.clock.advance(minutes=11)
    assert [q.claimed_by for q in env.store.queue()] == [None]  # only live claims are shown
    assert env.store.claim(case_id, ALICE, 10).taken
    assert env.store.release(case_id, BOB) is False


def test_one_person_holds_at_most_three_live_claims(env: Env) -> None:
    cases = [_case(env, f"sub_{i}:f0") for i in range(5)]
    assert [env.store.claim(c, ALICE, 15).taken for c in cases[:3]] == [True, True, True]
    fourth = env.store.claim(cases[3], ALICE, 15)
    assert (fourth.taken, fourth.claimed_by, fourth.limit_reached) == (False, None, True)
    assert env.store.claim(cases[0], ALICE, 15).taken  # renewing one she holds is not a fourth
    assert env.store.claim(cases[3], BOB, 15).taken  # the fourth stays free for others
    assert [q.claimed_by for q in env.store.queue()] == ["alice", "alice", "alice", "bob", None]
    env.store.decide(cases[0], ALICE, labels(2, lead=1), "crime-1")  # a decision ends one of her claims
    assert env.store.claim(cases[4], ALICE, 15).taken
    env.clock.advance(minutes=16)  # lapsed claims count no more
    assert all(env.store.claim(c, ALICE, 15).taken for c in cases[1:3])


def test_only_someone_with_a_step_to_take_takes_a_case(env: Env) -> None:
    case_id = _case(env, "sub_a:f0")
    with pytest.raises(wf.NotPermitted):
        env.store.claim(case_id, AUDREY, 10)
    with pytest.raises(wf.CaseNotFound):
        env.store.claim(999, ALICE, 10)
    env.store.claim(case_id, ALICE, 10)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    assert env.store.claim(case_id, ALICE, 10) == env.store.claim(case_id, ALICE, 10)
    assert not env.store.claim(case_id, ALICE, 10).taken  # her own decision awaits another person
    assert env.store.claim(case_id, BOB, 10).taken
    env.store.release(case_id, BOB)
    env.store.decide(case_id, BOB, labels(2), "crime-1")  # a disagreement: escalated
    assert not env.store.claim(case_id, BOB, 10).taken  # a reviewer has no step on an escalated case
    assert env.store.claim(case_id, SUE, 10).taken
    with pytest.raises(wf.CaseClaimed):
        env.store.resolve(case_id, SAM, labels(2), "crime-1")
    assert env.store.resolve(case_id, SUE, labels(2), "crime-1").state == "no_lead"
    assert not env.store.claim(case_id, SAM, 10).taken  # decided: nothing to take


def test_queue_filters_and_counts(env: Env) -> None:
    good = _case(env, "sub_a:f0")
    env.clock.advance(hours=2)
    low = _case(env, "sub_b:f0", LOW, watch_list="wanted", retailer_id="shop-2")
    env.clock.advance(hours=2)
    turned = _case(env, "sub_c:f0", TURNED)
    env.store.decide(turned, ALICE, labels(2), "crime-1")
    q = QueueFilter(min_face_px=48.0, min_sharpness=300.0)

    def ids(**kw: object) -> list[int]:
        return [item.case_id for item in env.store.queue_page(QueueFilter(**{**q.__dict__, **kw}))]

    assert ids() == [good, low, turned]
    assert ids(quality="low") == [low, turned] and ids(quality="ok") == [good]
    assert ids(watch_list="wanted") == [low] and ids(retailer_id="shop-1") == [good, turned]
    assert ids(store_id="store-1") == [good, low, turned] and ids(store_id="store-9") == []
    assert ids(older_than=env.clock() - timedelta(hours=1)) == [good, low]
    assert ids(state="awaiting_verification") == [turned]
    assert ids(verifiable_by="bob") == [turned] and ids(verifiable_by="alice") == []
    item = env.store.queue_page(q)[1]
    assert (item.store_id, item.face_px, item.sharpness, item.pose_ok) == ("store-1", 30.0, 80.0, True)
    counts = env.store.queue_counts(QueueFilter(**{**q.__dict__, "verifiable_by": "bob"}))
    assert counts == {"awaiting_verification": 1, "escalated": 0, "pending": 2, "verifiable": 1}
    assert env.store.queue_counts(QueueFilter(**{**q.__dict__, "quality": "low"}))["pending"] == 1
    assert env.store.queue_counts(q)["verifiable"] == 0
    assert [i.case_id for i in env.store.queue(watch_list="custody", limit=1, offset=1)] == [turned]


def test_migration_0002_fills_the_quality_of_earlier_probes(database_url: str) -> None:
    engine = make_engine(database_url)
    with at_revision(engine, MIGRATIONS, VERSION_TABLE, "0001") as conn:
        conn.execute(insert(t.probes).values(  # the columns of 0001 only
            face_id="sub_old:f0", submission_id="sub_old", retailer_id="shop-1", store_id="store-1",
            camera_id="cam-1", captured_at=T0, received_at=T0, channel="http", box="{}",
            quality=LOW.model_dump_json(), model_id="m", first_searched_at=T0, status="unmatched"))
    store = ReviewStore.open(engine, AuditLog(engine, SECRET))
    with store.engine.connect() as conn:
        row = conn.execute(select(t.probes.c.face_px, t.probes.c.sharpness, t.probes.c.pose_ok)).one()
    assert (row.face_px, row.sharpness, bool(row.pose_ok)) == (30.0, 80.0, True)
    engine.dispose()
