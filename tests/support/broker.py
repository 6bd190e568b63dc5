"""Reading topics of a real broker from the beginning, for the integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError

from rfr.core.kafka import header_dict, make_consumer
from rfr.core.settings import KafkaSettings


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


def read_until(kafka: KafkaSettings, topics: list[str], done: Callable[[list[Record]], bool],
               timeout_s: float = 90.0) -> list[Record]:
    """Read ``topics`` from the beginning (a fresh group) until ``done(records)`` or the deadline."""
    consumer = make_consumer(kafka, f"reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(topics)
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(records):
            for msg in consumer.consume(64, 0.5):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    continue
                records.append(Record(msg.topic() or "", msg.key(), msg.value() or b"", header_dict(msg)))
    finally:
        consumer.close()
    return records


def on(topic: str, records: list[Record]) -> list[Record]:
    return [r for r in records if r.topic == topic]
