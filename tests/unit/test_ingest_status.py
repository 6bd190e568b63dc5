"""The status consumer: downstream outcome events update the store once; malformed ones are poison."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from support.kafka import FakeMsg
from support.metrics import sample

from rfr.core.schemas import OutcomeEvent, OutcomeStatus
from rfr.core.stream import PoisonMessage
from services.ingest.metrics import IngestMetrics
from services.ingest.status import StatusHandler
from services.ingest.store import SqliteSubmissionStore, SubmissionRecord


def test_outcomes_update_the_store_idempotently(tmp_path: Path, registry: CollectorRegistry) -> None:
    store = SqliteSubmissionStore(tmp_path / "i.db")
    store.claim(SubmissionRecord("sub_9", "r", "kafka", "kafka:t:0:0", datetime.now(UTC)))
    handler = StatusHandler(store, IngestMetrics.create(registry))
    found = OutcomeEvent.make("sub_9", "r", OutcomeStatus.FACES_FOUND, faces=3).to_bytes()
    received = OutcomeEvent.make("sub_9", "r", OutcomeStatus.RECEIVED).to_bytes()
    results = handler.handle_batch([FakeMsg(found), FakeMsg(found, 1), FakeMsg(received, 2),
                                    FakeMsg(b"{not json", 3)])
    assert results[:3] == [[], [], []]
    assert isinstance(results[3], PoisonMessage) and results[3].reason == "invalid_outcome_event"
    st = store.status("sub_9")
    assert st is not None and (st.status, st.progress.faces) == ("faces_found", 3)
    assert sample(registry, "rfr_ingest_status_updates_total", status="faces_found") == 1
