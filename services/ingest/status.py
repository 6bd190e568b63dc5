"""The status consumer: OutcomeEvents from detect and match update the submission store.

It runs in the ingest process as a second consumer group (``rfr-ingest-status``) on the outcomes topic.
Updates are idempotent (one row per ``event_id``); ingest's own ``received``/``rejected`` events are
skipped (the store already has them). Outcome events never name a candidate, so neither does the store.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message
from pydantic import ValidationError

from rfr.core.reasons import Reason
from rfr.core.schemas import OutcomeEvent, UnsupportedSchemaVersion, decode
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result
from services.ingest.metrics import IngestMetrics
from services.ingest.store import StoreUnavailable, SubmissionStore

STATUS_SERVICE = "ingest_status"
STATUS_GROUP = "rfr-ingest-status"
ACCEPTS = frozenset({1})  # OutcomeEvent schema versions this consumer reads


class StatusHandler:
    """BatchHandler for the outcomes topic: no outputs, only store updates."""

    def __init__(self, store: SubmissionStore, metrics: IngestMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        try:
            return [self.handle(m) for m in messages]
        except StoreUnavailable as exc:
            raise DependencyUnavailable("submission_store", str(exc)) from exc

    def handle(self, msg: Message) -> Result:
        try:
            event = decode(OutcomeEvent, msg.value(), accepts=ACCEPTS)
        except UnsupportedSchemaVersion as exc:
            return PoisonMessage(exc.reason, exc.detail)
        except (ValidationError, ValueError) as exc:
            return PoisonMessage(Reason.INVALID_OUTCOME_EVENT, str(exc)[:500])
        if self.store.apply_outcome(event):
            self.metrics.status_updates.labels(event.status.value).inc()
        return []
