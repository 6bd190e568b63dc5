"""The submission store: which stills were seen (idempotency) and how far each got (status for its submitter).

Two tables: ``submissions`` (one row per submission id, written by ingest when it accepts or rejects a
still) and ``outcomes`` (the OutcomeEvents of detect and match, one row per ``event_id``, so a redelivered
event changes nothing). The status a submitter sees is derived from both by :func:`summarize`. Nothing here
ever holds a candidate identity: outcome events carry none.

:class:`SubmissionStore` is the interface; :class:`SqliteSubmissionStore` (``settings.ingest.db_path``) serves
one ingest process. Several ingest instances need one shared store behind the same interface (each instance's
status consumer sees only its share of the outcome partitions).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from rfr.core import progress
from rfr.core.progress import Progress
from rfr.core.schemas import OutcomeEvent, OutcomeStatus


class StoreUnavailable(RuntimeError):
    """The store cannot be read or written now (disk, lock, network): retry later, the input is not at fault."""


class State(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"


class Claim(StrEnum):
    NEW = "new"  # first time (or a retry of a rejected one): process it
    REDELIVERY = "redelivery"  # the same source message again (at-least-once): produce its outputs again
    DUPLICATE = "duplicate"  # already accepted from another message or request: drop it


@dataclass(frozen=True)
class SubmissionRecord:
    submission_id: str
    retailer_id: str
    channel: str
    source: str  # "kafka:<topic>:<partition>:<offset>", or "http:<request id>"
    received_at: datetime
    state: State = State.RECEIVED
    reason: str | None = None
    detail: str | None = None
    store_id: str | None = None
    camera_id: str | None = None
    captured_at: datetime | None = None
    case_ref: str | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    decode_scale: int | None = None  # the still was decoded at 1/decode_scale (rfr.core.imaging)
    decode_warnings: str | None = None  # what was accepted although unusual, comma-separated (jpeg_missing_eoi)


@dataclass(frozen=True)
class SubmissionStatus:
    record: SubmissionRecord
    progress: Progress
    updated_at: datetime

    @property
    def status(self) -> str:
        return self.progress.status


class SubmissionStore(Protocol):
    def get(self, submission_id: str) -> SubmissionRecord | None: ...

    def claim(self, record: SubmissionRecord) -> Claim:
        """Record an accepted still atomically; say whether to process it."""
        ...

    def reject(self, record: SubmissionRecord) -> None:
        """Record a rejection, unless the same still was accepted before (that stays accepted)."""
        ...

    def apply_outcome(self, outcome: OutcomeEvent) -> bool:
        """Record a downstream outcome; False when it was already there (or is not a downstream one)."""
        ...

    def status(self, submission_id: str) -> SubmissionStatus | None: ...

    def close(self) -> None: ...


_DOWNSTREAM = frozenset({OutcomeStatus.FACES_FOUND, OutcomeStatus.NO_FACE, OutcomeStatus.PASSED_FOR_REVIEW,
                         OutcomeStatus.NO_CANDIDATE, OutcomeStatus.FAILED})


@dataclass(frozen=True)
class OutcomeRow:
    status: OutcomeStatus
    faces: int | None
    face_id: str | None
    at: datetime
    dropped: dict[str, int] = field(default_factory=dict)


def summarize(record: SubmissionRecord, outcomes: list[OutcomeRow]) -> SubmissionStatus:
    """The submitter's view: :func:`rfr.core.progress.summarize` over the stored outcomes and ingest's own verdict."""
    rows = list(outcomes)
    if record.state == State.REJECTED:
        rows.append(OutcomeRow(OutcomeStatus.REJECTED, None, None, record.received_at))
    updated = max([record.received_at, *(o.at for o in outcomes)])
    return SubmissionStatus(record, progress.summarize(rows), updated)


_SCHEMA = """
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
_COLUMNS = [f.name for f in fields(SubmissionRecord)]
_DATES = ("received_at", "captured_at")


def _aware(text: str) -> datetime:
    """Parse a stored timestamp; one without an offset is taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_row(record: SubmissionRecord) -> list[Any]:
    row: list[Any] = []
    for name in _COLUMNS:
        value = getattr(record, name)
        row.append(value.isoformat() if isinstance(value, datetime) else value)
    return row


def _from_row(row: sqlite3.Row) -> SubmissionRecord:
    values = {name: row[name] for name in _COLUMNS}
    for name in _DATES:
        if values[name] is not None:
            values[name] = _aware(values[name])
    values["state"] = State(values["state"])
    return SubmissionRecord(**values)


class SqliteSubmissionStore:
    """One SQLite file (WAL), shared by the threads of one process behind a lock."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"submission store {self.path}: {exc}") from exc

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a store written by an earlier release up to date (columns added since, all nullable)."""
        added = {"outcomes": {"dropped": "TEXT"}, "submissions": {"decode_scale": "INTEGER", "decode_warnings": "TEXT"}}
        for table, wanted in added.items():
            columns = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in wanted.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def get(self, submission_id: str) -> SubmissionRecord | None:
        with self._locked() as db:
            row = db.execute("SELECT * FROM submissions WHERE submission_id = ?", (submission_id,)).fetchone()
        return None if row is None else _from_row(row)

    def claim(self, record: SubmissionRecord) -> Claim:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT state, source FROM submissions WHERE submission_id = ?",
                                 (record.submission_id,)).fetchone()
                if row is not None and row["state"] == State.RECEIVED:
                    db.execute("COMMIT")
                    return Claim.REDELIVERY if row["source"] == record.source else Claim.DUPLICATE
                db.execute(f"INSERT OR REPLACE INTO submissions ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                           _to_row(record))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Claim.NEW

    def reject(self, record: SubmissionRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "submission_id")
        with self._locked() as db:
            db.execute(
                f"INSERT INTO submissions ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT (submission_id) DO UPDATE SET {updates} WHERE submissions.state = ?",
                [*_to_row(record), State.REJECTED.value],
            )

    def apply_outcome(self, outcome: OutcomeEvent) -> bool:
        if outcome.status not in _DOWNSTREAM:
            return False
        with self._locked() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO outcomes (event_id, submission_id, status, faces, face_id, at, dropped) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (outcome.event_id, outcome.submission_id, outcome.status.value, outcome.faces, outcome.face_id,
                 outcome.at.isoformat(), json.dumps(outcome.dropped) if outcome.dropped else None),
            )
        return cur.rowcount == 1

    def status(self, submission_id: str) -> SubmissionStatus | None:
        record = self.get(submission_id)
        if record is None:
            return None
        with self._locked() as db:
            rows = db.execute("SELECT status, faces, face_id, at, dropped FROM outcomes WHERE submission_id = ?",
                              (submission_id,)).fetchall()
        outcomes = [OutcomeRow(OutcomeStatus(r["status"]), r["faces"], r["face_id"], _aware(r["at"]),
                               json.loads(r["dropped"]) if r["dropped"] else {}) for r in rows]
        return summarize(record, outcomes)

    def close(self) -> None:
        with self._lock:
            self._db.close()
