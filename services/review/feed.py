"""Final decisions for case systems that poll the API rather than read ``rfr.decisions.v1``.

Read from the review store's outbox, where every final decision's event is written in the transaction that
decides the case (published or not yet): the same bytes as on the topic. The cursor is the outbox row id.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from rfr.core.review_messages import DecisionEvent
from rfr.core.schemas import decode
from rfr.review import tables as t
from rfr.review.store import DECISIONS_TOPIC
from services.review.bounds import MAX_INT

logger = logging.getLogger(__name__)


def final_decisions(engine: Engine, after: int, limit: int) -> list[tuple[int, DecisionEvent]]:
    """Final decisions with an outbox id above ``after``, oldest first, at most ``limit``, as (id, event); none
    above :data:`~services.review.bounds.MAX_INT` (a larger cursor would overflow the database's integers)."""
    if after >= MAX_INT:
        return []
    ob = t.outbox
    query = (select(ob.c.id, ob.c.payload).where(ob.c.topic == DECISIONS_TOPIC, ob.c.id > after)
             .order_by(ob.c.id).limit(limit))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [(int(row.id), decode(DecisionEvent, bytes(row.payload))) for row in rows]
