"""Retention on SQLite and PostgreSQL: a purge removes the still's bytes from the blob store and the crop and
template from the review store, the audit log says so, and the case keeps its decision record."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from support.review_data import ALICE, BOB, POLICY, SUE, Env, candidate_list, labels

from rfr.core.blobstore import BlobNotFound, FileBlobStore
from rfr.review import retention
from rfr.review import tables as t
from rfr.review.retention import due_counts, run_retention


def _probe(env: Env, face_id: str) -> dict[str, object]:
    with env.store.engine.connect() as conn:
        return dict(conn.execute(select(t.probes).where(t.probes.c.face_id == face_id)).one()._mapping)


def _purge_entries(env: Env) -> list[dict[str, Any]]:
    return [e for e in env.audit.export() if e["action"] == "purge"]


def test_a_no_lead_case_loses_its_probe_bytes_but_keeps_its_decisions(env: Env, blobs: FileBlobStore) -> None:
    still = blobs.put(b"still of a no-lead probe")
    case_id = env.store.record_search(candidate_list("sub_nl:f0", still_ref=still))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(2), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")

    early = run_retention(env.store, blobs, POLICY, env.clock.advance(days=30))
    assert early.probes == [] and blobs.get(still) == b"still of a no-lead probe"

    report = run_retention(env.store, blobs, POLICY, env.clock.advance(days=2))
    assert report.probes == ["sub_nl:f0"] and report.rules == {"sub_nl:f0": "no_lead"}
    assert report.purged == {"still": 1, "crop": 1, "template": 1}
    with pytest.raises(BlobNotFound):
        blobs.get(still)
    row = _probe(env, "sub_nl:f0")
    assert row["crop_jpeg"] is None and row["template"] is None
    assert row["purged_at"] == env.clock.now and row["purge_reason"] == "no_lead"
    assert env.store.probe_crop(case_id) is None and env.store.probe_still_ref(case_id) is None

    view = env.store.case(case_id, SUE, "crime-1")
    assert view.state == "no_lead" and [d.actor for d in view.decisions] == ["alice", "bob"]
    assert len(view.candidates) == 2 and not view.probe.has_crop and not view.probe.has_still
    [entry] = _purge_entries(env)
    assert entry["case_id"] == case_id and entry["reason"] == "retention:no_lead"
    assert entry["details"] == {"face_id": "sub_nl:f0", "rule": "no_lead", "deleted": ["still", "crop", "template"],
                                "still_ref": still, "cases": [case_id]}
    assert [e["action"] for e in env.audit.export()].count("retention_run") == 2
    assert env.audit.verify().ok


def test_a_probe_without_candidates_is_purged_after_no_candidate_days(env: Env, blobs: FileBlobStore) -> None:
    still = blobs.put(b"still with no candidate")
    env.store.record_search(candidate_list("sub_nc:f0", [], still_ref=still))
    assert due_counts(env.store, POLICY, env.clock.advance(days=31, seconds=1)) == {"no_candidate": 1,
                                                                                    "cases_to_expire": 0}
    report = run_retention(env.store, blobs, POLICY, env.clock.now)
    assert report.rules == {"sub_nc:f0": "no_candidate"}
    assert not blobs.path(still).exists()
    assert _purge_entries(env)[0]["case_id"] is None
    again = run_retention(env.store, blobs, POLICY, env.clock.advance(days=1))
    assert again.probes == [] and again.purged == {"still": 0, "crop": 0, "template": 0}
    assert len(_purge_entries(env)) == 1


def test_an_undecided_case_expires_after_pending_days(env: Env, blobs: FileBlobStore) -> None:
    case_id = env.store.record_search(candidate_list("sub_p:f0"))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=89)).expired_cases == []
    assert due_counts(env.store, POLICY, env.clock.advance(days=2)) == {"pending": 1, "cases_to_expire": 1}
    report = run_retention(env.store, blobs, POLICY, env.clock.now)
    assert report.expired_cases == [case_id] and report.rules == {"sub_p:f0": "pending"}
    assert report.purged == {"still": 0, "crop": 1, "template": 1}
    view = env.store.case(case_id, SUE, "crime-1")
    assert view.state == "expired" and view.decisions[0].actor == "alice"
    run_details = [e for e in env.audit.export() if e["action"] == "retention_run"][-1]["details"]
    assert run_details["expired_cases"] == [case_id] and run_details["policy"]["pending_days"] == 90
    [expiry] = env.audit.query(action="case_expired")
    assert (expiry["case_id"], expiry["actor"], expiry["reason"]) == (case_id, "retention", "retention:pending")
    assert expiry["details"]["from_state"] == "awaiting_verification"


def test_a_case_expires_only_with_its_audit_entry(env: Env, blobs: FileBlobStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    case_id = env.store.record_search(candidate_list("sub_x:f0"))
    real = env.store.audit.append

    def crash_on_expiry(conn: Any, actor: str, role: str, action: str, *a: Any, **kw: Any) -> int:
        if action == "case_expired":
            raise RuntimeError("crash while recording the expiry")
        return real(conn, actor, role, action, *a, **kw)

    monkeypatch.setattr(env.store.audit, "append", crash_on_expiry)
    with pytest.raises(RuntimeError):
        run_retention(env.store, blobs, POLICY, env.clock.advance(days=POLICY.pending_days + 1))
    monkeypatch.undo()
    assert env.store.queue(state="pending")[0].case_id == case_id  # not expired without its entry
    assert run_retention(env.store, blobs, POLICY, env.clock.now).expired_cases == [case_id]
    assert [e["case_id"] for e in env.audit.query(action="case_expired")] == [case_id]
    assert env.audit.verify().ok


def test_a_late_re_search_list_makes_no_case_of_a_purged_probe(env: Env, blobs: FileBlobStore) -> None:
    still = blobs.put(b"still of an unmatched probe")
    env.store.record_search(candidate_list("sub_q:f0", [], still_ref=still))
    env.clock.advance(days=POLICY.no_candidate_days + 1)
    late = candidate_list("sub_q:f0", event_id="sub_q:f0:rs:g9", trigger="re_search", re_search_of="g9",
                          still_ref=still, at=env.clock.now)  # computed before the purge, recorded after it
    assert run_retention(env.store, blobs, POLICY, env.clock.now).probes == ["sub_q:f0"]
    assert env.store.record_search(late) is None
    assert env.store.queue() == []
    search = env.audit.query(action="search")[0]
    assert search["details"]["probe_purged"] is True and search["case_id"] is None


def test_a_probe_that_got_a_new_case_during_the_pass_is_kept(env: Env, blobs: FileBlobStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    still = blobs.put(b"still of a no-lead probe")
    case_id = env.store.record_search(candidate_list("sub_rs:f0", still_ref=still))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(2), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    env.clock.advance(days=POLICY.no_lead_days + 1)
    real = retention._purge_probe

    def re_search_meanwhile(*args: Any) -> Any:  # the stream thread records a re-search list of this probe now
        env.store.record_search(candidate_list("sub_rs:f0", event_id="sub_rs:f0:rs:g1", trigger="re_search",
                                               re_search_of="g1", still_ref=still, at=env.clock.now))
        return real(*args)

    monkeypatch.setattr(retention, "_purge_probe", re_search_meanwhile)
    report = run_retention(env.store, blobs, POLICY, env.clock.now)
    assert report.probes == [] and _purge_entries(env) == []
    [new] = env.store.queue()
    assert new.trigger == "re_search"
    assert env.store.probe_crop(new.case_id) is not None and blobs.get(still) == b"still of a no-lead probe"


def test_a_lead_is_kept_while_open_and_purged_after_closing(env: Env, blobs: FileBlobStore) -> None:
    still = blobs.put(b"still of a lead")
    case_id = env.store.record_search(candidate_list("sub_l:f0", still_ref=still))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(2, lead=1), "crime-1")
    env.store.decide(case_id, BOB, labels(2, lead=1), "crime-1")
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=800)).probes == []
    env.store.close(case_id, SUE, "charged", "crime-1")
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=364)).probes == []
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=2)).rules == {"sub_l:f0": "closed_lead"}
    assert not blobs.path(still).exists()
    assert env.store.case(case_id, SUE, "crime-1").lead_subject_id == "subj-1"


def test_a_still_shared_by_two_faces_goes_with_the_last_of_them(env: Env, blobs: FileBlobStore) -> None:
    still = blobs.put(b"one still, two faces")
    env.store.record_search(candidate_list("sub_two:f0", [], still_ref=still))
    case_id = env.store.record_search(candidate_list("sub_two:f1", still_ref=still))
    assert case_id is not None
    first = run_retention(env.store, blobs, POLICY, env.clock.advance(days=40))
    assert first.probes == ["sub_two:f0"] and first.purged["still"] == 0
    assert blobs.get(still) == b"one still, two faces"
    assert _purge_entries(env)[0]["details"]["deleted"] == ["crop", "template"]
    env.store.decide(case_id, ALICE, labels(2), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    second = run_retention(env.store, blobs, POLICY, env.clock.advance(days=32))
    assert second.probes == ["sub_two:f1"] and second.purged["still"] == 1
    assert not blobs.path(still).exists()


def test_a_probe_with_an_open_re_search_case_is_kept(env: Env, blobs: FileBlobStore) -> None:
    old = env.store.record_search(candidate_list("sub_rs:f0"))
    assert old is not None
    env.store.decide(old, ALICE, labels(2), "crime-1")
    env.store.decide(old, BOB, labels(2), "crime-1")
    env.clock.advance(days=20)
    again = candidate_list("sub_rs:f0", [("subj-9", 0.9)], at=env.clock.now, trigger="re_search",
                           re_search_of="gc-1", event_id="sub_rs:f0:rs:gc-1")
    newer = env.store.record_search(again)
    assert newer is not None
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=20)).probes == []
    env.store.decide(newer, ALICE, labels(1), "crime-1")
    env.store.decide(newer, BOB, labels(1), "crime-1")
    report = run_retention(env.store, blobs, POLICY, env.clock.advance(days=32))
    assert report.rules == {"sub_rs:f0": "no_lead"}
    assert _purge_entries(env)[0]["details"]["cases"] == [old, newer]
