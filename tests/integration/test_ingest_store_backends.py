"""The submission store on both backends (a SQLite file, a real PostgreSQL server): the store contract, replicas
claiming the same stills at once, migrations run by replicas starting together, and a SQLite file written before
the store had migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import inspect, text

from rfr.core import db
from rfr.core.schemas import OutcomeEvent, OutcomeStatus
from rfr.tools import procs
from services.ingest.store import (
    MIGRATIONS,
    VERSION_TABLE,
    Claim,
    SqliteSubmissionStore,
    SqlSubmissionStore,
    State,
    StoreUnavailable,
    SubmissionRecord,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def rec(sid: str = "sub_1", source: str = "kafka:t:0:1", **kw: object) -> SubmissionRecord:
    fields: dict[str, object] = {"store_id": "s1", "camera_id": "c1", "captured_at": T0 - timedelta(hours=1)} | kw
    return SubmissionRecord(submission_id=sid, retailer_id="r1", channel="kafka", source=source, received_at=T0,
                            **fields)  # type: ignore[arg-type]


def outcome(status: OutcomeStatus, sid: str = "sub_1", **kw: object) -> OutcomeEvent:
    return OutcomeEvent.make(sid, "r1", status, at=T0 + timedelta(minutes=1), **kw)


@pytest.fixture
def store(database_url: str) -> Iterator[SqlSubmissionStore]:
    s = SqlSubmissionStore(database_url)
    yield s
    s.close()


def test_claims_are_idempotent_and_keep_every_field(store: SqlSubmissionStore) -> None:
    offset = timezone(timedelta(hours=2))
    first = rec(captured_at=datetime(2024, 5, 1, 13, 45, 7, tzinfo=offset), width=640, height=480,
                size_bytes=1234, decode_scale=2, decode_warnings="jpeg_missing_eoi", case_ref="case-1")
    assert store.claim(first) == Claim.NEW
    assert store.claim(first) == Claim.REDELIVERY  # the same message again
    assert store.claim(rec(source="http:abc:0")) == Claim.DUPLICATE  # the same still from elsewhere
    assert store.get("sub_1") == first  # every field, the capture time with the offset it was given
    got = store.get("sub_1")
    assert got is not None and got.captured_at is not None and got.captured_at.utcoffset() == timedelta(hours=2)
    assert store.get("sub_unknown") is None


def test_a_rejection_is_replaced_by_a_good_copy_never_the_reverse(store: SqlSubmissionStore) -> None:
    store.reject(rec(state=State.REJECTED, reason="missing_metadata", detail="missing camera_id"))
    st = store.status("sub_1")
    assert st is not None and st.status == "rejected" and st.progress.final and st.record.reason == "missing_metadata"
    assert store.claim(rec(source="kafka:t:0:9")) == Claim.NEW  # fixed metadata: processed
    store.reject(rec(source="kafka:t:0:10", state=State.REJECTED, reason="corrupt"))  # does not undo it
    st = store.status("sub_1")
    assert st is not None and st.status == "received" and st.record.reason is None
    assert st.record.source == "kafka:t:0:9"


def test_outcomes_are_idempotent_and_summarised(store: SqlSubmissionStore) -> None:
    store.claim(rec())
    assert not store.apply_outcome(outcome(OutcomeStatus.RECEIVED))  # ingest's own: skipped
    found = outcome(OutcomeStatus.FACES_FOUND, faces=2, dropped={"over_max_faces": 9})
    assert store.apply_outcome(found)
    assert not store.apply_outcome(found)  # redelivered
    assert store.apply_outcome(outcome(OutcomeStatus.NO_CANDIDATE, face_id="sub_1:f0"))
    st = store.status("sub_1")
    assert st is not None and (st.status, st.progress.final) == ("faces_found", False)
    assert st.progress.faces_no_candidate == 1
    assert store.apply_outcome(outcome(OutcomeStatus.FAILED, face_id="sub_1:f1", detail="retry_exhausted"))
    st = store.status("sub_1")
    assert st is not None and st.progress.final and (st.progress.faces_failed, st.progress.faces_dropped) == (
        1, {"over_max_faces": 9})
    assert st.updated_at == T0 + timedelta(minutes=1)


def test_the_store_survives_reopening(database_url: str) -> None:
    first = SqlSubmissionStore(database_url)
    first.claim(rec())
    first.apply_outcome(outcome(OutcomeStatus.NO_FACE, faces=0))
    first.close()
    again = SqlSubmissionStore(database_url)
    assert again.claim(rec(source="http:x:0")) == Claim.DUPLICATE
    st = again.status("sub_1")
    assert st is not None and (st.status, st.progress.final) == ("no_face", True)
    again.close()


def _together(n: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0..n-1)`` in n threads released at the same moment; their results in order."""
    barrier = threading.Barrier(n)
    results: list[T | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def test_replicas_claiming_the_same_stills_at_once_process_each_once(database_url: str) -> None:
    """Two stores (two ingest replicas) on one database, four threads each: every still is NEW exactly once."""
    replicas = [SqlSubmissionStore(database_url) for _ in range(2)]
    ids = [f"sub_{i}" for i in range(15)]
    replicas[0].reject(rec("sub_0", state=State.REJECTED, reason="corrupt"))  # a rejected one is claimable again

    def claim_all(worker: int) -> list[tuple[str, Claim]]:
        store = replicas[worker % 2]
        return [(sid, store.claim(rec(sid, source=f"http:w{worker}:0"))) for sid in ids]

    claims = [c for per_worker in _together(8, claim_all) for c in per_worker]
    assert Counter(sid for sid, claim in claims if claim == Claim.NEW) == Counter(ids)
    assert all(claim in (Claim.NEW, Claim.DUPLICATE) for _, claim in claims)

    event = outcome(OutcomeStatus.FACES_FOUND, sid="sub_3", faces=1)
    applied = _together(8, lambda worker: replicas[worker % 2].apply_outcome(event))
    assert applied.count(True) == 1
    for r in replicas:
        r.close()


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    engines = [db.make_engine(database_url) for _ in range(4)]
    _together(4, lambda i: db.migrate(engines[i], MIGRATIONS, VERSION_TABLE))
    with engines[0].connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0001"]
    assert {"submissions", "outcomes", VERSION_TABLE} <= set(inspect(engines[0]).get_table_names())
    for e in engines:
        e.dispose()


def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailable, match=r"postgresql\+psycopg://rfr:\*\*\*@127.0.0.1"):
        SqlSubmissionStore(f"postgresql+psycopg://rfr:pw@127.0.0.1:{procs.free_port()}/rfr?connect_timeout=2")


# The schema and the writes of the store before it had migrations (raw sqlite3, its last release).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    submission_id TEXT PRIMARY KEY, retailer_id TEXT NOT NULL, channel TEXT NOT NULL, source TEXT NOT NULL,
    received_at TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, detail TEXT, store_id TEXT, camera_id TEXT,
    captured_at TEXT, case_ref TEXT, width INTEGER, height INTEGER, size_bytes INTEGER, decode_scale INTEGER,
    decode_warnings TEXT
);
CREATE TABLE IF NOT EXISTS outcomes (
    event_id TEXT PRIMARY KEY, submission_id TEXT NOT NULL, status TEXT NOT NULL, faces INTEGER,
    face_id TEXT, at TEXT NOT NULL, dropped TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_by_submission ON outcomes (submission_id);
"""


def test_a_sqlite_file_written_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ingest.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(OLD_SCHEMA)
    old.execute("INSERT INTO submissions (submission_id, retailer_id, channel, source, received_at, state, "
                "captured_at, width) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("sub_old", "r1", "http", "http:req:0", T0.isoformat(), "received", "2024-05-01T13:45:07+02:00", 64))
    old.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?)",
                ("sub_old:found", "sub_old", "faces_found", 1, None, T0.isoformat(), '{"too_small": 1}'))
    old.close()

    store = SqliteSubmissionStore(path)
    st = store.status("sub_old")
    assert st is not None and (st.status, st.progress.faces, st.progress.faces_dropped) == (
        "faces_found", 1, {"too_small": 1})
    assert st.record.captured_at == datetime(2024, 5, 1, 11, 45, 7, tzinfo=UTC) and st.record.width == 64
    assert store.claim(rec("sub_old", source="kafka:t:0:5")) == Claim.DUPLICATE
    assert store.claim(rec("sub_new")) == Claim.NEW
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0001",)]
        assert conn.execute("SELECT count(*) FROM submissions").fetchone() == (2,)
    SqliteSubmissionStore(path).close()  # opening it again changes nothing
