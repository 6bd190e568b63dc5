"""The decision outbox publisher: final decisions from the review store to ``rfr.decisions.v1``.

A final decision and its :class:`~rfr.core.review_messages.DecisionEvent` are written to the store's outbox in the
transaction that decides the case. This publisher, run every ``review.publish_interval_s`` (and woken by the API
right after a final decision), produces each pending event with its case as the key, waits for the broker's
acknowledgement, and only then marks it published. A crash between the two publishes it again: at-least-once;
consumers de-duplicate on ``event_id`` (``case-<id>:final``, one per case). Nothing is ever dropped: a failure
leaves the events pending for the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from rfr.core.kafka import DeliveryFailed, DeliveryTracker, Output
from rfr.core.logs import OutageLog
from rfr.core.topics import Topics
from rfr.review.views import OutboxItem

logger = logging.getLogger(__name__)

BATCH = 100
FLUSH_TIMEOUT_S = 30.0


class Outbox(Protocol):
    """What the publisher needs of :class:`rfr.review.store.ReviewStore`."""

    def pending_outbox(self, limit: int = 100) -> list[OutboxItem]: ...

    def mark_published(self, ids: Sequence[int]) -> int: ...


class OutboxPublisher:
    """Publishes the outbox of ``store`` through ``tracker`` (a producer of its own: not the stream loop's)."""

    def __init__(self, store: Outbox, tracker: DeliveryTracker, topics: Topics, batch: int = BATCH,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        self.store = store
        self.tracker = tracker
        self.topics = {"decisions": topics.decisions}
        self.batch = batch
        self.flush_timeout_s = flush_timeout_s
        self.published = 0
        self._outage = OutageLog(logger, "decision events not published yet (retrying every pass): %s",
                                 "decision events are being published again")

    def publish_pending(self) -> int:
        """Publish every pending event, ``batch`` at a time, oldest first; return how many were marked published.

        Raises :class:`~rfr.core.kafka.DeliveryFailed` (the broker did not acknowledge), SQLAlchemy errors (the
        store), ValueError (an outbox row names an unknown topic); what was not acknowledged stays pending."""
        total = 0
        while True:
            items = self.store.pending_outbox(self.batch)
            if not items:
                return total
            self.tracker.produce(self._output(item) for item in items)
            self.tracker.flush(self.flush_timeout_s)
            total += self.store.mark_published([item.id for item in items])
            self.published += len(items)
            logger.info("published %d decision event(s): %s", len(items), ", ".join(i.event_id for i in items[:5]))
            if len(items) < self.batch:
                return total

    def _output(self, item: OutboxItem) -> Output:
        topic = self.topics.get(item.topic)
        if topic is None:
            raise ValueError(f"outbox event {item.event_id} names an unknown topic {item.topic!r}")
        return Output(topic, item.payload, key=item.key, event_id=item.event_id)

    def tick(self) -> None:
        """One pass for the schedule: failures are logged (once per outage) and retried on the next pass."""
        try:
            self.publish_pending()
        except (DeliveryFailed, SQLAlchemyError, ValueError) as exc:
            self._outage.failed(exc)
            return
        self._outage.recovered()
