"""Synchronous production for request/response channels: produce, then wait for this call's acks only.

The stream loop's DeliveryTracker serves one thread; HTTP requests run on many threads, each needing to
know whether *its* messages were acknowledged before it answers. The librdkafka producer is thread-safe;
each call counts its own delivery reports (served by whichever thread polls).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from rfr.core.kafka import DeliveryFailed, Output, produce_output

logger = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, outputs: Sequence[Output], *, wait: bool = True) -> None: ...

    def close(self, timeout_s: float = 10.0) -> None: ...


class _Pending:
    def __init__(self, n: int, wait: bool) -> None:
        self.left = n
        self.errors: list[str] = []
        self.wait = wait
        self.lock = threading.Lock()

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self.lock:
            self.left -= 1
            if err is not None:
                self.errors.append(f"{msg.topic()}: {err}")
        if err is not None and not self.wait:
            logger.warning("message to %s not delivered: %s", msg.topic(), err)


class Publisher:
    def __init__(self, producer: Producer, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    def send(self, outputs: Sequence[Output], *, wait: bool = True) -> None:
        """Produce ``outputs``; with ``wait``, return only when all are acknowledged (else DeliveryFailed)."""
        pending = _Pending(len(outputs), wait)
        for out in outputs:
            produce_output(self.producer, out, pending.on_delivery)
        self.producer.poll(0)
        if not wait:
            return
        deadline = time.monotonic() + self.timeout_s
        while pending.left > 0 and time.monotonic() < deadline:
            self.producer.poll(0.05)
        if pending.left > 0:
            raise DeliveryFailed(f"{pending.left} message(s) unacknowledged after {self.timeout_s:.0f}s")
        if pending.errors:
            raise DeliveryFailed("; ".join(pending.errors[:5]))

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending (up to ``timeout_s``), then release the producer."""
        left = self.producer.flush(timeout_s)
        if left:
            logger.warning("%d message(s) not delivered at shutdown", left)
            self.producer.purge()
        self.producer.close()
