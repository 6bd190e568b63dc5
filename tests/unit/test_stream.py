"""The at-least-once loop, against fakes of confluent-kafka's consumer and producer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.kafka import FakeConsumer, FakeMsg, FakeProducer

from rfr.core.kafka import DeliveryTracker, Output
from rfr.core.metrics import StageMetrics
from rfr.core.schemas import DeadLetter, decode
from rfr.core.stream import PoisonMessage, Result, RetryableError, StreamConfig, StreamProcessor


class Upper:
    calls = 0

    def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
        Upper.calls += 1
        out: list[Result] = []
        for m in messages:
            if m.value() == b"poison":
                out.append(PoisonMessage("bad_input", "cannot read"))
            elif m.value() == b"crash":
                raise ZeroDivisionError("model blew up")
            else:
                out.append([Output("out", m.value().upper())])
        return out


def _proc(consumer: FakeConsumer, producer: FakeProducer, handler: Any) -> StreamProcessor:
    cfg = StreamConfig("test", ["in"], "dlq", batch_size=8, retry_backoff_s=0.0)
    return StreamProcessor(cfg, consumer, DeliveryTracker(producer), handler,  # type: ignore[arg-type]
                           StageMetrics.create("test", CollectorRegistry()))


def test_outputs_then_commit_after_last_offset() -> None:
    consumer = FakeConsumer([[FakeMsg(b"a", 5), FakeMsg(b"b", 6), FakeMsg(b"c", 2, partition=1)]])
    producer = FakeProducer()
    assert _proc(consumer, producer, Upper()).step() == 3
    assert [v for _, v in producer.sent] == [b"A", b"B", b"C"]
    assert sorted(consumer.commits[0]) == [("in", 0, 7), ("in", 1, 3)]
    assert consumer.consumed_timeouts == [0.05]  # after the first message, wait only the batch timeout


def test_idle_stream_makes_no_batch() -> None:
    consumer = FakeConsumer([])
    assert _proc(consumer, FakeProducer(), Upper()).step() == 0
    assert consumer.commits == [] and consumer.consumed_timeouts == []


def test_poison_goes_to_dead_letter_and_partition_flows() -> None:
    consumer = FakeConsumer([[FakeMsg(b"a", 0), FakeMsg(b"poison", 1, headers=[("h", b"v")]), FakeMsg(b"b", 2)]])
    producer = FakeProducer()
    _proc(consumer, producer, Upper()).step()
    topics = [t for t, _ in producer.sent]
    assert topics == ["out", "dlq", "out"]
    letter = decode(DeadLetter, producer.sent[1][1])
    assert letter.payload == b"poison" and letter.reason.startswith("bad_input")
    assert letter.offset == 1 and letter.headers == {"h": "v"}
    assert consumer.commits == [[("in", 0, 3)]]


def test_crashing_message_is_isolated() -> None:
    consumer = FakeConsumer([[FakeMsg(b"a", 0), FakeMsg(b"crash", 1), FakeMsg(b"b", 2)]])
    producer = FakeProducer()
    _proc(consumer, producer, Upper()).step()
    assert [v for t, v in producer.sent if t == "out"] == [b"A", b"B"]
    letter = decode(DeadLetter, next(v for t, v in producer.sent if t == "dlq"))
    assert "ZeroDivisionError" in letter.reason
    assert consumer.commits == [[("in", 0, 3)]]


def test_failed_delivery_rewinds_and_does_not_commit() -> None:
    consumer = FakeConsumer([[FakeMsg(b"a", 4), FakeMsg(b"b", 5)]])
    _proc(consumer, FakeProducer(fail=True), Upper()).step()
    assert consumer.commits == []
    assert consumer.seeks == [("in", 0, 4)]


def test_retryable_error_rewinds_without_dead_letters() -> None:
    class Down:
        def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
            raise RetryableError("gallery unreachable")

    consumer = FakeConsumer([[FakeMsg(b"a", 9)]])
    producer = FakeProducer()
    _proc(consumer, producer, Down()).step()
    assert producer.sent == [] and consumer.commits == [] and consumer.seeks == [("in", 0, 9)]


def test_handler_must_answer_every_message() -> None:
    class Short:
        def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
            return []

    consumer = FakeConsumer([[FakeMsg(b"a", 0)]])
    with pytest.raises(RuntimeError, match="0 results for 1"):
        _proc(consumer, FakeProducer(), Short()).step()
    assert consumer.commits == []
