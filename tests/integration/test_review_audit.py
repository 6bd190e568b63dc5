"""The review audit log on SQLite and on a real PostgreSQL: chained appends, signed head and checkpoints, and
verify() naming the entry after each kind of tampering done with raw SQL."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from support.review_data import Env, candidate_list, open_store

from rfr.core.db import make_engine, migrate, sqlite_url
from rfr.review.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditLog,
    AuditTampered,
    audit_checkpoints,
    audit_entries,
    audit_head,
    entry_hash,
)
from rfr.review.store import MIGRATIONS, VERSION_TABLE

SECRET = b"s" * 32
START = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


class StepClock:
    """A clock advancing 1.5 s on every reading (thread-safe)."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=1.5)
            return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate(eng, MIGRATIONS, VERSION_TABLE)
    yield eng
    eng.dispose()


def _log(engine: Engine, every: int = 5) -> AuditLog:
    return AuditLog(engine, SECRET, checkpoint_every=every, clock=StepClock())


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append_now(f"reviewer{i % 3}", "reviewer", AuditAction.CASE_VIEW, reason=f"CR-{i}", case_id=i,
                       details={"i": i, "note": "café ☕", "at": START})


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def _problems(log: AuditLog) -> list[str]:
    report = log.verify()
    assert not report.ok
    return report.problems


def test_appends_chain_and_verify(engine: Engine) -> None:
    log = _log(engine, every=4)
    _fill(log, 10)
    report = log.verify()
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints) == (10, 2)  # at 4 and 8
    entries = list(log.export())
    assert [e["seq"] for e in entries] == list(range(1, 11))
    assert entries[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in pairwise(entries))
    assert entries[0]["details"] == {"i": 0, "note": "café ☕", "at": "2024-05-01T12:00:00.123456Z"}
    assert log.checkpoint() == 3
    assert log.checkpoint() is None  # nothing new since
    assert log.verify().ok


def test_hash_is_canonical_json_with_microseconds(engine: Engine) -> None:
    """The same entry hashes alike on every backend: canonical JSON, UTC times with microseconds."""
    log = AuditLog(engine, SECRET, clock=lambda: START)
    log.append_now("alice", "reviewer", "decision", reason="CR-1", case_id=7, details={"b": 1, "a": [1.5, None]})
    [entry] = list(log.export())
    body = {"seq": 1, "at": "2024-05-01T12:00:00.123456Z", "actor": "alice", "role": "reviewer",
            "action": "decision", "case_id": 7, "reason": "CR-1", "details": {"a": [1.5, None], "b": 1},
            "prev_hash": GENESIS_HASH}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert entry["hash"] == hashlib.sha256(canonical.encode()).hexdigest() == entry_hash(body)
    assert entry["at"] == "2024-05-01T12:00:00.123456Z"


def test_export_bounds_and_offline_reverification(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 8)
    all_entries = list(log.export())
    since, until = all_entries[2]["at"], all_entries[5]["at"]
    window = list(log.export(datetime.fromisoformat(since), datetime.fromisoformat(until)))
    assert [e["seq"] for e in window] == [3, 4, 5]
    prev = GENESIS_HASH
    for line in (json.dumps(e) for e in all_entries):  # the module docstring's recipe, on JSON lines
        e = json.loads(line)
        body = {k: v for k, v in e.items() if k != "hash"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=True).encode()).hexdigest()
        assert e["prev_hash"] == prev and digest == e["hash"]
        prev = e["hash"]


def test_query_filters_newest_first(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 6)
    log.append_now("bob", "supervisor", AuditAction.RESOLUTION, reason="CR-9", case_id=3)
    assert [e["seq"] for e in log.query(actor="reviewer0")] == [4, 1]
    assert [e["seq"] for e in log.query(case_id=3)] == [7, 4]
    assert [e["action"] for e in log.query(action="resolution")] == ["resolution"]
    assert [e["seq"] for e in log.query(limit=2, offset=1)] == [6, 5]


def test_append_rolls_back_with_its_transaction(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 2)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        log.append(conn, "alice", "reviewer", AuditAction.DECISION, reason="CR-1")
        raise RuntimeError("the change failed")
    log.append_now("alice", "reviewer", AuditAction.DECISION, reason="CR-1")
    report = log.verify()
    assert report.ok and report.entries == 3


def test_refuses_unknown_action_and_empty_actor(engine: Engine) -> None:
    log = _log(engine)
    with pytest.raises(ValueError):
        log.append_now("alice", "reviewer", "dance")
    with pytest.raises(ValueError):
        log.append_now("", "reviewer", AuditAction.LOGIN)


def test_concurrent_appends_have_no_gaps(engine: Engine) -> None:
    log = AuditLog(engine, SECRET, checkpoint_every=7)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(15):
                log.append_now(f"user{k}", "reviewer", AuditAction.CASE_VIEW, reason=f"CR-{k}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = log.verify()
    assert report.ok, report.problems
    assert report.entries == 60 and report.checkpoints == 8


# --- tampering ------------------------------------------------------------------------------------------------
def test_edited_entry_is_named(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 12)
    _sql(engine, "UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 7")
    assert _problems(log) == ["entry 7: hash does not match its content (edited)"]


def test_edited_details_and_time_are_named(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 6)
    _sql(engine, "UPDATE audit_entries SET details = :d WHERE seq = 2", d='{"i":99}')
    _sql(engine, "UPDATE audit_entries SET at = :at WHERE seq = 4", at=START.replace(tzinfo=None))
    assert _problems(log) == ["entry 2: hash does not match its content (edited)",
                              "entry 4: hash does not match its content (edited)"]


def test_deleted_middle_entry_is_a_gap(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 12)
    _sql(engine, "DELETE FROM audit_entries WHERE seq IN (6, 7)")
    assert _problems(log) == ["entry 6: missing; the log jumps from entry 5 to entry 8 (deleted)"]


def test_deleted_tail_is_named(engine: Engine) -> None:
    """The last entries, after the latest checkpoint (at 10): the signed head still counts them."""
    log = _log(engine)
    _fill(log, 13)
    _sql(engine, "DELETE FROM audit_entries WHERE seq > 11")
    assert _problems(log) == ["entry 12: missing; the signed head counts 13 entries but the log ends at entry 11 "
                              "(deleted)"]


def test_deleted_tail_with_head_rolled_back_is_caught_by_checkpoints(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 13)
    _sql(engine, "DELETE FROM audit_entries WHERE seq > 8")
    _sql(engine, "UPDATE audit_head SET entry_count = 8, head_hash = (SELECT hash FROM audit_entries WHERE seq = 8)")
    problems = _problems(log)
    assert problems == ["audit head: bad signature (forged or edited)",
                        "entry 9: missing; checkpoint 2 (signed) counts 10 entries but the log ends at entry 8 "
                        "(deleted)"]


def test_everything_deleted_is_named(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 3)
    _sql(engine, "DELETE FROM audit_entries")
    assert _problems(log) == ["entry 1: missing; the signed head counts 3 entries but the log is empty (deleted)"]


def test_forged_checkpoint_and_head(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 11)
    _sql(engine, "UPDATE audit_checkpoints SET entry_count = 4 WHERE id = 1")
    _sql(engine, "UPDATE audit_head SET signature = :sig", sig="ab" * 32)
    assert _problems(log) == ["audit head: bad signature (forged or edited)",
                              "checkpoint 1: bad signature (forged or edited)"]


def test_deleted_checkpoint_is_named(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 16)
    _sql(engine, "DELETE FROM audit_checkpoints WHERE id = 2")
    assert _problems(log) == ["checkpoint 2: missing (deleted)"]


def test_relinked_chain_is_caught_by_the_signatures(engine: Engine) -> None:
    """Entry 4 edited and every later hash recomputed (the algorithm is public): the chain holds, the signed
    checkpoint and head do not."""
    log = _log(engine)
    _fill(log, 8)
    entries = list(log.export())
    entries[3]["reason"] = "rewritten"
    prev = entries[2]["hash"]
    for e in entries[3:]:
        e["prev_hash"] = prev
        e["hash"] = prev = entry_hash(e)
        _sql(engine, "UPDATE audit_entries SET reason = :r, prev_hash = :p, hash = :h WHERE seq = :s",
             r=e["reason"], p=e["prev_hash"], h=e["hash"], s=e["seq"])
    assert _problems(log) == ["entry 8: hash differs from the one the signed head holds (chain rewritten)",
                              "entry 5: hash differs from the one checkpoint 1 (signed) holds (chain rewritten)"]


def test_relinked_without_rehash_names_the_link(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 6)
    _sql(engine, "UPDATE audit_entries SET prev_hash = :h WHERE seq = 5", h="1" * 64)
    assert _problems(log) == ["entry 5: prev_hash does not match the hash of entry 4 (chain broken or re-linked)",
                              "entry 5: hash does not match its content (edited)"]


def test_entries_added_outside_the_log(engine: Engine) -> None:
    log = _log(engine)
    _fill(log, 3)
    _sql(engine, "INSERT INTO audit_entries (seq, at, actor, role, action, reason, details, prev_hash, hash) "
                 "SELECT 4, at, actor, role, action, reason, details, hash, hash FROM audit_entries WHERE seq = 3")
    problems = _problems(log)
    assert problems[0] == "entry 4: not covered by the signed head (added outside the log)"


def test_append_refuses_to_resign_a_forged_head(engine: Engine) -> None:
    """Appending on a forged head would sign it anew and hide the tampering: refused, nothing written."""
    log = _log(engine)
    _fill(log, 3)
    _sql(engine, "DELETE FROM audit_entries WHERE seq = 3")
    _sql(engine, "UPDATE audit_head SET entry_count = 2, head_hash = (SELECT hash FROM audit_entries WHERE seq = 2)")
    with pytest.raises(AuditTampered):
        log.append_now("alice", "reviewer", AuditAction.CASE_VIEW)
    assert _problems(log) == ["audit head: bad signature (forged or edited)"]
    assert AuditLog(engine, b"another secret!!", clock=StepClock()).verify().problems[0].startswith("audit head")


# --- a log wiped whole (or reset to its genesis), against the review store's own records --------------------------
def _review_env(database_url: str) -> Env:
    env = open_store(database_url, checkpoint_every=5)
    for i in range(6):
        env.store.record_search(candidate_list(f"sub_w{i}:f0"))
    env.store.record_search(candidate_list("sub_n:f0", candidates=()))
    assert env.audit.verify().ok
    return env


def test_a_wiped_log_is_named_against_the_review_records(database_url: str) -> None:
    env = _review_env(database_url)
    for table in ("audit_entries", "audit_checkpoints", "audit_head"):
        _sql(env.store.engine, f"DELETE FROM {table}")
    assert _problems(env.audit) == [
        "entry 1: missing; the log is empty but the review store holds 6 cases, 7 searches, each written with an "
        "audit entry (the log was wiped or reset)"]
    env.store.record_search(candidate_list("sub_after:f0"))  # the service carries on from a fresh entry 1
    assert _problems(env.audit) == [
        "entry 1: the review store holds 8 searches but the log only 1 'search' entries (entries deleted, the log "
        "restarted)",
        "entry 1: the review store holds 7 cases but the log only 1 'case_created' entries (entries deleted, the "
        "log restarted)"]
    env.store.engine.dispose()


def test_a_log_reset_to_its_genesis_is_named(database_url: str) -> None:
    env = _review_env(database_url)
    _sql(env.store.engine, "DELETE FROM audit_entries")
    _sql(env.store.engine, "DELETE FROM audit_checkpoints")
    _sql(env.store.engine, "UPDATE audit_head SET entry_count = 0, head_hash = :h, signature = ''", h=GENESIS_HASH)
    problems = _problems(env.audit)
    assert len(problems) == 1 and problems[0].startswith("entry 1: missing; the log is empty but the review store")
    env.store.engine.dispose()


def test_a_log_without_review_tables_verifies(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "audit-only.db"))
    for table in (audit_entries, audit_checkpoints, audit_head):
        table.create(engine)
    log = _log(engine)
    assert log.verify().ok
    _fill(log, 3)
    assert log.verify().ok
    engine.dispose()
