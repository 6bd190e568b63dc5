"""The Kafka submission channel on the real broker: good and bad stills interleaved in one run."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from support.broker import on, read_until
from support.stills import bad_cases, good_cases, jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits
from rfr.core.kafka import DeliveryTracker, make_consumer, make_producer
from rfr.core.metrics import StageMetrics
from rfr.core.schemas import DeadLetter, FrameEvent, OutcomeEvent, OutcomeStatus, decode, submission_id
from rfr.core.settings import KafkaSettings
from rfr.core.stream import StreamConfig, StreamProcessor
from rfr.core.topics import Topics
from services.ingest.accept import Ingestor
from services.ingest.handler import SubmissionHandler, submission_headers
from services.ingest.metrics import IngestMetrics
from services.ingest.service import GROUP, SERVICE
from services.ingest.store import SqliteSubmissionStore

MAX_BYTES = 1 << 20
WHEN = "2024-05-01T13:45:07Z"


def run_ingest(kafka: KafkaSettings, tmp: Path, expected: int, registry: CollectorRegistry,
               timeout_s: float = 90.0) -> Ingestor:
    """Run the Kafka channel as `python -m services.ingest` does, until ``expected`` messages were handled; its
    metrics go to ``registry``."""
    topics = Topics.from_settings(kafka)
    ingestor = Ingestor(topics, SqliteSubmissionStore(tmp / "ingest.db"), FileBlobStore(tmp / "blobs"),
                        IngestMetrics.create(registry), ImageLimits(max_bytes=MAX_BYTES), 50_000)
    processor = StreamProcessor(
        StreamConfig(SERVICE, [topics.submissions], topics.deadletter, batch_size=8, batch_timeout_s=0.05),
        make_consumer(kafka, GROUP), DeliveryTracker(make_producer(kafka)), SubmissionHandler(ingestor),
        StageMetrics.create(SERVICE, CollectorRegistry()))
    processor.consumer.subscribe([topics.submissions])
    handled, deadline = 0, time.monotonic() + timeout_s
    try:
        while handled < expected and time.monotonic() < deadline:
            handled += processor.step()
    finally:
        processor.consumer.close()
        processor.tracker.producer.close()
    assert handled == expected
    return ingestor


def test_good_frames_and_bad_dead_letters_in_one_run(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    producer = make_producer(kafka_settings)
    goods = [c.data for c in good_cases()] + [jpeg(500, 400, seed=s, quality=97) for s in (1, 2)]  # 2 blobs
    bads = bad_cases(MAX_BYTES)
    sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
    for i in range(max(len(goods), len(bads))):  # interleaved: good, bad, good, bad ...
        if i < len(goods):
            sent.append(("good", goods[i], submission_headers("shop-1", "st-1", f"cam-{i % 2}", WHEN)))
        if i < len(bads):
            sent.append((bads[i].reason, bads[i].data, submission_headers("shop-1", "st-1", "cam-9", WHEN)))
    sent.append(("good-duplicate", goods[0], submission_headers("shop-1", "st-1", "cam-0", WHEN)))
    sent.append(("missing_metadata", goods[1], [h for h in submission_headers("shop-1", "s", "c", WHEN)
                                                 if h[0] != "rfr-retailer-id"]))
    for _, data, headers in sent:
        producer.produce(topics.submissions, data, b"shop-1/st-1", headers=headers)
    assert producer.flush(30) == 0
    producer.close()

    registry = CollectorRegistry()
    run_ingest(kafka_settings, tmp_path, len(sent), registry)

    n_bad = len(bads) + 1
    records = read_until(kafka_settings, [topics.frames, topics.deadletter, topics.outcomes],
                         lambda rs: len(on(topics.frames, rs)) >= len(goods)
                         and len(on(topics.deadletter, rs)) >= n_bad
                         and len(on(topics.outcomes, rs)) >= len(goods) + len(bads))
    frames = [decode(FrameEvent, r.value) for r in on(topics.frames, records)]
    assert sorted(f.submission_id for f in frames) == sorted(submission_id("shop-1", g) for g in goods)
    blobs = FileBlobStore(tmp_path / "blobs")
    for f in frames:
        assert (f.image or blobs.get(f.image_ref or "")) in goods
    for cam in ("cam-0", "cam-1"):  # one camera's frames keep their order
        order = [f.submission_id for f in frames if f.meta.camera_id == cam]
        want = [submission_id("shop-1", d) for _, d, h in sent[:-2] if dict(h).get("rfr-camera-id") == cam.encode()]
        assert order == want

    letters = [(r.headers["rfr-reason"], decode(DeadLetter, r.value)) for r in on(topics.deadletter, records)]
    expected = {(reason, len(data)) for reason, data, _ in sent if reason not in ("good", "good-duplicate")}
    assert {(reason, len(letter.payload or b"")) for reason, letter in letters} == expected
    for _, letter in letters:
        assert letter.service == "ingest" and letter.headers.get("rfr-store-id") in ("st-1", "s")

    outcomes = [decode(OutcomeEvent, r.value) for r in on(topics.outcomes, records)]
    assert sum(o.status == OutcomeStatus.RECEIVED for o in outcomes) == len(goods)
    assert sum(o.status == OutcomeStatus.REJECTED for o in outcomes) == len(bads)
    assert registry.get_sample_value("rfr_ingest_submissions_total", {"channel": "kafka", "outcome": "duplicate"}) == 1
