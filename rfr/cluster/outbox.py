"""The cluster store's outbox: the events a retention pass makes, kept in the pass's own transaction.

A consumed candidate list that dies half-way is simply delivered again; a retention pass has no such record. So
the events of a pass (:mod:`rfr.cluster.retention`) are written into ``cluster_outbox`` in the transaction that
deletes the sightings (:func:`put`), and the cluster service publishes them in order (:func:`pending`) and deletes
each one the broker acknowledged (:func:`sent`). Nothing is lost when the process dies after the commit; a death
between the acknowledgement and the delete publishes an event again, with the same ``event_id`` (readers keep the
highest revision of a cluster). No Kafka here: services/cluster/ publishes.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select

from rfr.cluster.store import ClusterStore, outbox
from rfr.core.cluster_messages import ClusterEvent, ClusterPurged


@dataclass(frozen=True)
class OutboxEntry:
    """One event waiting: ``topic`` is the base name (:mod:`rfr.core.topics`; the publisher adds the deployment's
    namespace), ``key`` the cluster id, ``payload`` the message's JSON bytes."""

    seq: int
    topic: str
    key: str
    event_id: str
    payload: bytes


def put(conn: Connection, topic: str, event: ClusterEvent | ClusterPurged) -> None:
    """Add ``event`` for ``topic`` (a base name) in the caller's transaction."""
    conn.execute(insert(outbox).values(topic=topic, key=event.cluster_id, event_id=event.event_id,
                                       payload=event.to_bytes(), created_at=time.time()))


def pending(store: ClusterStore, limit: int = 100, keys: Collection[str] | None = None) -> list[OutboxEntry]:
    """The oldest ``limit`` events waiting (only those of the clusters ``keys``, when given), in the order they were
    made."""
    query = select(outbox).order_by(outbox.c.seq).limit(limit)
    if keys is not None:
        query = query.where(outbox.c.key.in_(sorted(keys)))
    with store.reading() as conn:
        rows = conn.execute(query)
        return [OutboxEntry(int(r.seq), str(r.topic), str(r.key), str(r.event_id), bytes(r.payload)) for r in rows]


def waiting(store: ClusterStore) -> int:
    """How many events wait."""
    with store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


def sent(store: ClusterStore, seqs: Sequence[int]) -> None:
    """Delete the events the broker acknowledged (idempotent)."""
    if seqs:
        with store.transaction() as conn:
            conn.execute(delete(outbox).where(outbox.c.seq.in_(list(seqs))))
