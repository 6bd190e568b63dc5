"""Match's pending-incident store: the faces and reports of incidents not yet searched, and their lists' outbox.

The match stage writes each incident still's report and each incident face here, in a transaction committed
before the stream loop commits the Kafka offsets, so a crash loses nothing and a redelivery writes nothing twice
(one row per ``(incident, kind, id)``). When an incident is complete or timed out, :meth:`IncidentStore.close`
searches it (the caller's ``build``) and, in one transaction, marks it closed, writes the candidate list and
outcomes to ``incident_outbox`` and drops the stored crops and templates (only the ids stay, to tell a redelivered
face from a late one). :class:`services.match.incident_worker.IncidentWorker` publishes the outbox and marks
what the broker acknowledged; a crash in between publishes again with the same ``event_id``, which the review
service de-duplicates; published rows are deleted. A closed incident whose outputs are all published has the ids
of its stills and faces purged ``match.closed_incident_retention_s`` after its close; its closed row stays, so a face
arriving later is late (:meth:`IncidentStore.purge_closed`).
Schema: the Alembic history in ``services/match/migrations`` (version table ``alembic_version_match``); SQLite by
default, PostgreSQL for several match replicas (rows are locked with ``SELECT ... FOR UPDATE`` there, so two
replicas never close one incident twice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from rfr.core import db
from rfr.core.schemas import EmbeddingEvent, IncidentStillReport, SubmissionMeta, decode
from rfr.embedding.incidents import Incident

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_match"
REPORT = "report"
FACE = "face"
PURGE_BATCH = 500  # incidents purged in one transaction (SQLite allows 999 bound values in one statement)

metadata = MetaData()
incidents = Table(
    "incidents", metadata,
    Column("incident_key", Text, primary_key=True), Column("expected", Integer),
    Column("first_seen", Float, nullable=False), Column("ready", Integer, nullable=False),
    Column("closed_at", Float))
items = Table(
    "incident_items", metadata,
    Column("incident_key", Text, primary_key=True), Column("kind", Text, primary_key=True),
    Column("item_id", Text, primary_key=True), Column("payload", LargeBinary))
outbox = Table(
    "incident_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True), Column("topic", Text, nullable=False),
    Column("message_key", Text, nullable=False), Column("event_id", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False), Column("published", Integer, nullable=False),
    Column("incident_key", Text))  # NULL: a row written before migration 0002


class Recorded(StrEnum):
    PENDING = "pending"  # stored (or stored already): it waits for its incident
    LATE = "late"  # a face of an incident already searched, not among its faces: search it alone
    DONE = "done"  # already part of an incident that was searched: nothing to do


@dataclass(frozen=True)
class OutboxRow:
    """One message to publish: ``topic`` is ``matches`` or ``outcomes`` (mapped to names by the worker)."""

    topic: str
    key: str
    event_id: str
    payload: bytes
    id: int = 0


Build = Callable[[Incident], list[OutboxRow]]


class IncidentStore:
    """The pending-incident tables on one database (``engine``); see the module doc."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock
        db.migrate(engine, MIGRATIONS, VERSION_TABLE)

    @classmethod
    def open(cls, url: str) -> IncidentStore:
        return cls(db.make_engine(url))

    def close_engine(self) -> None:
        self.engine.dispose()

    def record_report(self, report: IncidentStillReport) -> Recorded:
        """Store one still's report (ValueError when its meta names no incident)."""
        return self._record(report.meta, REPORT, report.submission_id, report.to_bytes())

    def record_face(self, face: EmbeddingEvent) -> Recorded:
        """Store one incident face's template event (ValueError when its meta names no incident)."""
        return self._record(face.meta, FACE, face.face_id, face.to_bytes())

    def _record(self, meta: SubmissionMeta, kind: str, item_id: str, payload: bytes) -> Recorded:
        key = meta.incident_key
        if key is None:
            raise ValueError(f"{kind} {item_id} is not part of an incident")
        with self.engine.begin() as conn:
            row = conn.execute(select(incidents).where(incidents.c.incident_key == key).with_for_update()).first()
            if row is None:
                conn.execute(insert(incidents).values(incident_key=key, expected=meta.incident_stills,
                                                      first_seen=self.clock().timestamp(), ready=0))
            seen = conn.execute(select(items.c.item_id).where(
                items.c.incident_key == key, items.c.kind == kind, items.c.item_id == item_id)).first()
            if row is not None and row.closed_at is not None:
                return Recorded.DONE if seen is not None or kind == REPORT else Recorded.LATE
            if seen is None:
                conn.execute(insert(items).values(incident_key=key, kind=kind, item_id=item_id, payload=payload))
            if row is not None and row.expected is None and meta.incident_stills is not None:
                conn.execute(update(incidents).where(incidents.c.incident_key == key)
                             .values(expected=meta.incident_stills))
            if self._load(conn, key).is_complete():
                conn.execute(update(incidents).where(incidents.c.incident_key == key).values(ready=1))
        return Recorded.PENDING

    def _due(self, timeout_s: float) -> tuple[ColumnElement[bool], ...]:
        cutoff = self.clock().timestamp() - timeout_s
        return incidents.c.closed_at.is_(None), or_(incidents.c.ready == 1, incidents.c.first_seen <= cutoff)

    def due(self, timeout_s: float, limit: int = 100) -> list[str]:
        """Keys of open incidents that are complete or older than ``timeout_s``, oldest first."""
        due = self._due(timeout_s)
        query = select(incidents.c.incident_key).where(*due).order_by(incidents.c.first_seen).limit(limit)
        with self.engine.connect() as conn:
            return [str(k) for k in conn.execute(query).scalars()]

    def close(self, key: str, build: Build) -> bool:
        """Search one incident: in one transaction, ``build`` its outputs from what arrived, put them in the
        outbox, mark it closed and drop the stored payloads. False when it was closed already (another pass or
        replica). ``build``'s exceptions roll everything back (the incident stays open)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(incidents).where(incidents.c.incident_key == key).with_for_update()).first()
            if row is None or row.closed_at is not None:
                return False
            rows = build(self._load(conn, key))
            for out in rows:
                conn.execute(insert(outbox).values(topic=out.topic, message_key=out.key, event_id=out.event_id,
                                                   payload=out.payload, published=0, incident_key=key))
            conn.execute(update(incidents).where(incidents.c.incident_key == key)
                         .values(closed_at=self.clock().timestamp()))
            conn.execute(update(items).where(items.c.incident_key == key).values(payload=None))
        return True

    def purge_closed(self, older_than_s: float, limit: int = PURGE_BATCH) -> int:
        """Forget the ids of the reports and faces (submission and face ids) of incidents closed more than
        ``older_than_s`` seconds ago (by ``clock``) whose outbox rows are all published, in one transaction, at most
        ``limit`` incidents (call again while it returns ``limit``). Returns how many incidents were purged.

        An open incident is never purged, nor one with an outbox row still to publish; while a row written before
        migration 0002 (no incident named) waits, nothing is; rows another replica is purging are skipped
        (PostgreSQL ``SKIP LOCKED``). The incident's own row stays, closed (its key, the
        retailer's incident reference, with its expected count and times; no id of a still or a face): a face that
        arrives for it afterwards is late (:meth:`record_face` answers LATE; searched alone under its own event id,
        as any late face) and a report changes nothing. Without that row the key would open a new incident whose
        list would reuse the first list's event id, and the review service would drop it as a repeat: a retailer
        reusing an incident reference, or a dead-lettered face sent again, would be searched and never reviewed.
        Raises SQLAlchemyError."""
        cutoff = self.clock().timestamp() - older_than_s
        key = incidents.c.incident_key
        waiting = select(outbox.c.id).where(outbox.c.published == 0, or_(
            outbox.c.incident_key == key, outbox.c.incident_key.is_(None)))
        held = select(items.c.item_id).where(items.c.incident_key == key)
        query = (select(key).where(incidents.c.closed_at.is_not(None), incidents.c.closed_at < cutoff,
                                   ~waiting.exists(), held.exists())
                 .order_by(incidents.c.closed_at).limit(limit).with_for_update(skip_locked=True))
        with self.engine.begin() as conn:
            keys = [str(k) for k in conn.execute(query).scalars()]
            if keys:
                conn.execute(delete(items).where(items.c.incident_key.in_(keys)))
        return len(keys)

    def _load(self, conn: Connection, key: str) -> Incident:
        row = conn.execute(select(incidents).where(incidents.c.incident_key == key)).one()
        reports: dict[str, IncidentStillReport] = {}
        faces: dict[str, EmbeddingEvent] = {}
        for kind, item_id, payload in conn.execute(
                select(items.c.kind, items.c.item_id, items.c.payload).where(
                    and_(items.c.incident_key == key, items.c.payload.is_not(None)))):
            if kind == REPORT:
                reports[item_id] = decode(IncidentStillReport, payload)
            else:
                faces[item_id] = decode(EmbeddingEvent, payload, accepts={3, 4})
        return Incident(key=key, expected=row.expected, first_seen=datetime.fromtimestamp(row.first_seen, UTC),
                        reports=reports, faces=faces)

    def pending_outbox(self, limit: int = 100) -> list[OutboxRow]:
        query = (select(outbox).where(outbox.c.published == 0).order_by(outbox.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [OutboxRow(r.topic, r.message_key, r.event_id, bytes(r.payload), r.id)
                    for r in conn.execute(query)]

    def mark_published(self, ids: Sequence[int]) -> None:
        """Forget the rows the broker acknowledged (they hold probe crops: nothing is kept once published)."""
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(delete(outbox).where(outbox.c.id.in_(list(ids))))

    def overdue_count(self, timeout_s: float) -> int:
        """Incidents due (complete, or older than ``timeout_s``) whose candidate list is not on its topic yet: not
        searched, or searched with the list still in the outbox (one ``matches`` row per incident)."""
        unsearched = select(func.count()).select_from(incidents).where(*self._due(timeout_s))
        unpublished = select(func.count()).select_from(outbox).where(outbox.c.published == 0,
                                                                     outbox.c.topic == "matches")
        with self.engine.connect() as conn:
            return int(conn.execute(unsearched).scalar_one()) + int(conn.execute(unpublished).scalar_one())

    def open_count(self) -> int:
        """Incidents waiting (for the rfr_match_incidents_pending gauge)."""
        query = select(func.count()).select_from(incidents).where(incidents.c.closed_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

