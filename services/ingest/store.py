"""The submission store: which stills were seen (idempotency) and how far each got (status for its submitter).

Two tables: ``submissions`` (one row per submission id, written by ingest when it accepts or rejects a
still) and ``outcomes`` (the OutcomeEvents of detect and match, one row per ``event_id``, so a redelivered
event changes nothing). The status a submitter sees is derived from both by :func:`summarize`. Nothing here
ever holds a candidate identity: outcome events carry none.

:class:`SubmissionStore` is the interface; :class:`SqlSubmissionStore` implements it on SQLAlchemy Core, on a
SQLite file (the default, ``settings.ingest.db_path``: one ingest host) or on PostgreSQL
(``settings.ingest.database_url``), which several ingest replicas share: each claim is one atomic
``INSERT ... ON CONFLICT`` statement, so two replicas handed the same still agree on which one processes it, and
each replica's status consumer writes the outcomes of its share of the partitions into the same tables. The schema
is the Alembic history in ``services/ingest/migrations`` (version table ``alembic_version_ingest``), applied when
the store is opened; a SQLite file written before that history existed is adopted by its first revision.
Timestamps are ISO 8601 text with the offset they were given (the status API echoes a still's ``captured_at`` as
submitted), on both backends; the store never compares them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Column, Connection, Index, Integer, MetaData, Row, Table, Text, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql import Executable

from rfr.core import db, progress
from rfr.core.progress import Progress
from rfr.core.schemas import OutcomeEvent, OutcomeStatus

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_ingest"


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


metadata = MetaData()
"""The tables at the newest revision of ``services/ingest/migrations`` (which creates them; nothing here does)."""

submissions = Table(
    "submissions", metadata,
    Column("submission_id", Text, primary_key=True),
    Column("retailer_id", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("state", Text, nullable=False),
    *(Column(name, Text) for name in ("reason", "detail", "store_id", "camera_id", "captured_at", "case_ref")),
    *(Column(name, Integer) for name in ("width", "height", "size_bytes", "decode_scale")),
    Column("decode_warnings", Text),
)

outcomes = Table(
    "outcomes", metadata,
    Column("event_id", Text, primary_key=True),
    Column("submission_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("faces", Integer),
    Column("face_id", Text),
    Column("at", Text, nullable=False),
    Column("dropped", Text),  # JSON object {reason: count}, NULL when empty
    Index("outcomes_by_submission", "submission_id"),
)

_COLUMNS = [f.name for f in fields(SubmissionRecord)]
_ROWCOUNT = {"preserve_rowcount": True}  # rows an INSERT ... ON CONFLICT wrote (psycopg forgets it otherwise)
_DATES = ("received_at", "captured_at")


def _aware(text: str) -> datetime:
    """Parse a stored timestamp; one without an offset is taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_row(record: SubmissionRecord) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in _COLUMNS:
        value = getattr(record, name)
        row[name] = value.isoformat() if isinstance(value, datetime) else value
    return row


def _from_row(row: Row[Any]) -> SubmissionRecord:
    values = {name: getattr(row, name) for name in _COLUMNS}
    for name in _DATES:
        if values[name] is not None:
            values[name] = _aware(values[name])
    values["state"] = State(values["state"])
    return SubmissionRecord(**values)


# The store's statements, built once (building a statement costs more than running it); parameter ``sid``.
_GET = select(submissions).where(submissions.c.submission_id == bindparam("sid"))
_SOURCE = select(submissions.c.source).where(submissions.c.submission_id == bindparam("sid"))
_OUTCOMES_OF = select(outcomes.c.status, outcomes.c.faces, outcomes.c.face_id, outcomes.c.at,
                      outcomes.c.dropped).where(outcomes.c.submission_id == bindparam("sid"))


def _writes(dialect: str) -> tuple[Executable, Executable]:
    """(write a submission row unless it is accepted already, write an outcome row unless its event_id is there):
    each one atomic ``INSERT ... ON CONFLICT`` statement; their parameters are whole rows."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(submissions)
    upsert = upsert.on_conflict_do_update(
        index_elements=[submissions.c.submission_id],
        set_={c: upsert.excluded[c] for c in _COLUMNS if c != "submission_id"},
        where=submissions.c.state == State.REJECTED.value,
    )
    return upsert, insert(outcomes).on_conflict_do_nothing(index_elements=[outcomes.c.event_id])


class SqlSubmissionStore:
    """The store on the database at ``url`` (see :func:`rfr.core.db.make_engine`); thread-safe (a pool of
    connections), and safe to share between processes and replicas.

    Opening migrates the schema to the newest revision. Raises ValueError for a URL that is not a supported
    database, :class:`StoreUnavailable` when the database cannot be opened or migrated now. Every method raises
    :class:`StoreUnavailable` when the database cannot be read or written (the caller retries later).
    """

    def __init__(self, url: str) -> None:
        self.url = db.redacted(url)
        self._engine = db.make_engine(url)
        try:
            db.migrate(self._engine, MIGRATIONS, VERSION_TABLE)
        except (DBAPIError, PoolTimeout) as exc:
            self._engine.dispose()
            raise StoreUnavailable(f"submission store {self.url}: {exc}") from exc
        self._upsert, self._add_outcome = _writes(self._engine.dialect.name)
        logger.info("submission store: %s", self.url)

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """One transaction (on SQLite it holds the write lock: BEGIN IMMEDIATE)."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except (DBAPIError, PoolTimeout) as exc:
            raise StoreUnavailable(f"submission store {self.url}: {exc}") from exc

    def get(self, submission_id: str) -> SubmissionRecord | None:
        with self._begin() as conn:
            row = conn.execute(_GET, {"sid": submission_id}).first()
        return None if row is None else _from_row(row)

    def claim(self, record: SubmissionRecord) -> Claim:
        """Record an accepted still atomically; say whether to process it.

        NEW when the submission id is new (or was rejected before: the new copy replaces the rejection),
        REDELIVERY when it was accepted from the same ``source``, DUPLICATE when from another one. One statement
        decides, so concurrent claims of one id (threads, replicas) give exactly one NEW.
        """
        with self._begin() as conn:
            if conn.execute(self._upsert, _to_row(record), execution_options=_ROWCOUNT).rowcount == 1:
                return Claim.NEW
            source = conn.execute(_SOURCE, {"sid": record.submission_id}).scalar_one()
        return Claim.REDELIVERY if source == record.source else Claim.DUPLICATE

    def reject(self, record: SubmissionRecord) -> None:
        """Record a rejection, unless the same still was accepted before (that stays accepted)."""
        with self._begin() as conn:
            conn.execute(self._upsert, _to_row(record))

    def apply_outcome(self, outcome: OutcomeEvent) -> bool:
        """Record a downstream outcome; False when it was already there (or is not a downstream one)."""
        if outcome.status not in _DOWNSTREAM:
            return False
        row = {"event_id": outcome.event_id, "submission_id": outcome.submission_id, "status": outcome.status.value,
               "faces": outcome.faces, "face_id": outcome.face_id, "at": outcome.at.isoformat(),
               "dropped": json.dumps(outcome.dropped) if outcome.dropped else None}
        with self._begin() as conn:
            return conn.execute(self._add_outcome, row, execution_options=_ROWCOUNT).rowcount == 1

    def status(self, submission_id: str) -> SubmissionStatus | None:
        with self._begin() as conn:  # one snapshot of both tables
            found = conn.execute(_GET, {"sid": submission_id}).first()
            if found is None:
                return None
            rows = conn.execute(_OUTCOMES_OF, {"sid": submission_id}).all()
        found_outcomes = [OutcomeRow(OutcomeStatus(r.status), r.faces, r.face_id, _aware(r.at),
                                     json.loads(r.dropped) if r.dropped else {}) for r in rows]
        return summarize(_from_row(found), found_outcomes)

    def close(self) -> None:
        self._engine.dispose()


class SqliteSubmissionStore(SqlSubmissionStore):
    """:class:`SqlSubmissionStore` on the SQLite file at ``path`` (its folder is created)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(db.sqlite_url(path))
