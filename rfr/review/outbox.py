"""The decision outbox: final decisions waiting to be published on ``rfr.decisions.v1``, and the case systems' feed.

A final decision is put into ``outbox`` in the transaction that makes it (:mod:`rfr.review.store`); the service's
publisher sends :meth:`Outbox.pending_outbox` and marks what the broker acknowledged (:meth:`Outbox.mark_published`,
audited once per message), so no decision is lost or published twice without being in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, select, update

from rfr.core.review_messages import DecisionEvent
from rfr.core.schemas import decode
from rfr.review import tables as t
from rfr.review.views import OutboxItem

SYSTEM_ACTOR = "rfr-review"
SYSTEM_ROLE = "system"
DECISIONS_TOPIC = "decisions"


class AuditSink(Protocol):
    """What the store needs of :class:`rfr.review.audit.AuditLog`: an append on the caller's transaction."""

    def append(self, conn: Connection, actor: str, role: str, action: str, reason: str = "",
               case_id: int | None = None, details: dict[str, Any] | None = None) -> int: ...


class Outbox:
    """The outbox reads and marks (a mixin of :class:`rfr.review.store.ReviewStore`)."""

    engine: Engine
    audit: AuditSink
    clock: Callable[[], datetime]

    def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        """Unpublished outbox messages, oldest first."""
        ob = t.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(ob).where(ob.c.published_at.is_(None)).order_by(ob.c.id).limit(limit))
            return [OutboxItem(r.id, r.event_id, r.topic, r.key, r.payload, r.created_at) for r in rows]

    def decisions_since(self, after_id: int = 0, limit: int = 100) -> list[tuple[int, DecisionEvent]]:
        """Final decisions (published or not) with outbox id > ``after_id``, oldest first: the case systems' feed
        (``GET /v1/decisions``; page with the last id returned)."""
        ob = t.outbox
        query = select(ob.c.id, ob.c.payload).where(ob.c.topic == DECISIONS_TOPIC, ob.c.id > after_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(ob.c.id).limit(max(1, min(limit, 1000)))).all()
        return [(row.id, decode(DecisionEvent, row.payload)) for row in rows]

    def mark_published(self, ids: Sequence[int]) -> int:
        """Mark outbox messages delivered (audited: decision_published, once each); returns how many were new."""
        if not ids:
            return 0
        ob = t.outbox
        with self.engine.begin() as conn:
            rows = conn.execute(select(ob.c.id, ob.c.event_id, ob.c.topic)
                                .where(ob.c.id.in_(list(ids)), ob.c.published_at.is_(None)).with_for_update()).all()
            now = self.clock()
            for row in rows:
                conn.execute(update(ob).where(ob.c.id == row.id).values(published_at=now))
                case_id = int(row.event_id.split(":")[0].removeprefix("case-")) if row.event_id.startswith("case-") \
                    else None
                self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "decision_published", case_id=case_id,
                                  details={"event_id": row.event_id, "topic": row.topic})
            return len(rows)
