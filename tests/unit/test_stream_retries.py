"""Bounded retries in the stream loop: a failure that repeats on the same offsets is isolated and dead-lettered
as ``retry_exhausted``; a dependency outage is retried without limit; every dead letter of a pipeline event comes
with a ``failed`` outcome naming its submission and face. A fake consumer that re-delivers after a seek."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry
from support.kafka import FakeMsg, FakeProducer, LogConsumer

from rfr.core.kafka import DeliveryTracker, Output
from rfr.core.metrics import StageMetrics
from rfr.core.schemas import DeadLetter, OutcomeEvent, OutcomeStatus, decode
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result, RetryableError, StreamConfig, StreamProcessor

MAX_ATTEMPTS = 3


def _event(sub: str, face: str | None = None) -> bytes:
    body: dict[str, Any] = {"submission_id": sub, "meta": {"retailer_id": "r1"}}
    if face:
        body["face_id"] = face
    return json.dumps(body).encode()


class Flaky:
    """Fails every batch holding a message whose value contains ``bad`` with ``error``; echoes the rest."""

    def __init__(self, error: Exception | None, deps_up: bool = True) -> None:
        self.error = error
        self.deps_up = deps_up
        self.calls: list[int] = []
        self.checks = 0
        self.bad_tries = 0

    def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
        self.calls.append(len(messages))
        self.bad_tries += sum(b"bad" in m.value() for m in messages)
        if self.error is not None and any(b"bad" in m.value() for m in messages):
            raise self.error
        return [[Output("out", m.value())] for m in messages]

    def check_dependencies(self) -> None:
        self.checks += 1
        if not self.deps_up:
            raise DependencyUnavailable("gallery", "connection refused")


def _proc(consumer: LogConsumer, handler: Any, producer: FakeProducer | None = None,
          registry: CollectorRegistry | None = None) -> StreamProcessor:
    cfg = StreamConfig("test", ["in"], "dlq", batch_size=8, retry_backoff_s=0.0, max_attempts=MAX_ATTEMPTS,
                       outcomes_topic="outcomes")
    return StreamProcessor(cfg, consumer, DeliveryTracker(producer or FakeProducer()), handler,  # type: ignore[arg-type]
                           StageMetrics.create("test", registry or CollectorRegistry()))


def _drain(proc: StreamProcessor, steps: int = 50) -> int:
    """Step until the log is consumed and committed (or ``steps`` run out); return the steps taken."""
    for n in range(1, steps + 1):
        proc.step()
        consumer = proc.consumer
        assert isinstance(consumer, LogConsumer)
        if consumer.committed == len(consumer.log):
            return n
    return steps


def test_a_message_that_always_fails_is_dead_lettered_as_retry_exhausted_and_the_partition_flows() -> None:
    values = [_event("sub_a", "sub_a:f0"), _event("sub_bad", "sub_bad:f0"), _event("sub_c", "sub_c:f1")]
    consumer, producer, registry = LogConsumer(values), FakeProducer(), CollectorRegistry()
    handler = Flaky(RetryableError("model failed on this crop"))
    _drain(_proc(consumer, handler, producer, registry))

    assert consumer.committed == 3  # everything committed: the partition is not stalled
    sent = {t: [v for tt, v in producer.sent if tt == t] for t in ("out", "dlq", "outcomes")}
    assert sent["out"].count(values[0]) >= 1 and sent["out"].count(values[2]) >= 1
    assert values[1] not in sent["out"]
    [raw_letter] = sent["dlq"]
    letter = decode(DeadLetter, raw_letter)
    assert letter.offset == 1 and letter.payload == values[1]
    assert letter.reason.startswith("retry_exhausted") and f"{MAX_ATTEMPTS} tries" in letter.reason
    [raw_outcome] = sent["outcomes"]
    outcome = decode(OutcomeEvent, raw_outcome)
    assert outcome.status == OutcomeStatus.FAILED
    assert (outcome.submission_id, outcome.face_id, outcome.retailer_id) == ("sub_bad", "sub_bad:f0", "r1")
    assert "retry_exhausted" in outcome.detail
    # one whole-batch try, then the bad message alone until its attempts are spent
    assert handler.calls.count(1) >= MAX_ATTEMPTS - 1
    assert handler.bad_tries == MAX_ATTEMPTS  # bounded: tried exactly max_attempts times, never again
    assert registry.get_sample_value("rfr_test_deadletters_total", {"reason": "retry_exhausted"}) == 1.0


def test_a_dependency_outage_is_retried_without_limit_and_never_dead_lettered() -> None:
    consumer, producer, registry = LogConsumer([_event("s1"), _event("bad")]), FakeProducer(), CollectorRegistry()
    handler = Flaky(DependencyUnavailable("gallery", "milvus down"))
    proc = _proc(consumer, handler, producer, registry)
    for _ in range(5 * MAX_ATTEMPTS):
        proc.step()
    assert [t for t, _ in producer.sent if t in ("dlq", "outcomes")] == []
    assert consumer.committed == 0 and len(consumer.seeks) == 5 * MAX_ATTEMPTS
    assert registry.get_sample_value("rfr_test_dependency_retries_total", {"dependency": "gallery"}) == 5 * MAX_ATTEMPTS

    handler.error = None  # the outage ends: the batch goes through
    proc.step()
    assert consumer.committed == 2


def test_a_retryable_error_while_the_handler_reports_its_dependency_down_is_an_outage() -> None:
    consumer, producer, registry = LogConsumer([_event("bad")]), FakeProducer(), CollectorRegistry()
    handler = Flaky(RetryableError("search timed out"), deps_up=False)
    proc = _proc(consumer, handler, producer, registry)
    for _ in range(4 * MAX_ATTEMPTS):
        proc.step()
    assert handler.checks == 4 * MAX_ATTEMPTS
    assert [t for t, _ in producer.sent] == [] and consumer.committed == 0
    assert registry.get_sample_value("rfr_test_dependency_retries_total", {"dependency": "gallery"}) == 4 * MAX_ATTEMPTS


def test_a_transient_delivery_failure_is_a_kafka_outage() -> None:
    consumer, registry = LogConsumer([_event("s1")]), CollectorRegistry()
    proc = _proc(consumer, Flaky(RetryableError("unused")), FakeProducer(fail=True), registry)
    for _ in range(2 * MAX_ATTEMPTS):
        proc.step()
    assert consumer.committed == 0
    assert registry.get_sample_value("rfr_test_dependency_retries_total", {"dependency": "kafka"}) == 2 * MAX_ATTEMPTS


def test_poison_and_unhandled_dead_letters_come_with_a_failed_outcome_naming_the_face() -> None:
    class Mixed:
        def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
            out: list[Result] = []
            for m in messages:
                if not m.value().startswith(b"{"):
                    out.append(PoisonMessage("invalid_message", "not JSON"))
                elif b"poison" in m.value():
                    out.append(PoisonMessage("bad_crop", "crop_jpeg is not a decodable image"))
                elif b"crash" in m.value():
                    raise ZeroDivisionError("model blew up")
                else:
                    out.append([])
            return out

    values = [_event("sub_poison", "sub_poison:f2"), _event("sub_crash", "sub_crash:f0"), b"not json", _event("ok")]
    consumer, producer = LogConsumer(values), FakeProducer()
    _drain(_proc(consumer, Mixed(), producer))
    outcomes = [decode(OutcomeEvent, v) for t, v in producer.sent if t == "outcomes"]
    assert [(o.submission_id, o.face_id, o.status) for o in outcomes] == [
        ("sub_poison", "sub_poison:f2", OutcomeStatus.FAILED), ("sub_crash", "sub_crash:f0", OutcomeStatus.FAILED)]
    assert outcomes[0].detail == "bad_crop: crop_jpeg is not a decodable image"
    assert "ZeroDivisionError" in outcomes[1].detail
    assert len([t for t, _ in producer.sent if t == "dlq"]) == 3  # the non-JSON one too, without an outcome
    assert consumer.committed == 4


class Refusing(FakeProducer):
    """The client refuses any message holding ``huge`` outright, as librdkafka does with one over its limit."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def produce(self, topic: str, value: bytes, key: Any = None, headers: Any = None, on_delivery: Any = None
                ) -> None:
        if b"huge" in value and topic == "out":
            raise KafkaException(KafkaError(self.code))
        super().produce(topic, value, key, headers, on_delivery)


def test_an_output_the_broker_refuses_for_its_size_is_charged_and_dead_lettered() -> None:
    consumer = LogConsumer([_event("s1"), _event("huge"), _event("s3")])
    producer, registry = Refusing(KafkaError.MSG_SIZE_TOO_LARGE), CollectorRegistry()
    _drain(_proc(consumer, Flaky(None), producer, registry))
    assert consumer.committed == 3
    [letter] = [decode(DeadLetter, v) for t, v in producer.sent if t == "dlq"]
    assert letter.offset == 1 and letter.reason.startswith("retry_exhausted")
    assert [v for t, v in producer.sent if t == "out"].count(_event("s3")) >= 1


def test_any_other_refusal_by_the_client_is_a_kafka_outage() -> None:
    consumer, registry = LogConsumer([_event("huge")]), CollectorRegistry()
    proc = _proc(consumer, Flaky(None), Refusing(KafkaError._TRANSPORT), registry)
    for _ in range(3 * MAX_ATTEMPTS):
        proc.step()
    assert consumer.committed == 0  # never dead-lettered: retried for as long as it lasts
    assert registry.get_sample_value("rfr_test_dependency_retries_total", {"dependency": "kafka"}) == 3 * MAX_ATTEMPTS


def test_a_dead_letter_over_the_message_limit_goes_without_its_payload() -> None:
    payload = json.dumps({"submission_id": "sub_big", "meta": {"retailer_id": "r1"}, "pad": "x" * 3000}).encode()
    consumer, producer = LogConsumer([payload, _event("s2")]), FakeProducer()

    class Poison:
        def handle_batch(self, messages: Sequence[Any]) -> list[Result]:
            return [PoisonMessage("corrupt", "bad bytes") if b"pad" in m.value() else [] for m in messages]

    cfg = StreamConfig("test", ["in"], "dlq", batch_size=8, retry_backoff_s=0.0, outcomes_topic="outcomes",
                       max_message_bytes=2000)
    proc = StreamProcessor(cfg, consumer, DeliveryTracker(producer), Poison(),  # type: ignore[arg-type]
                           StageMetrics.create("test", CollectorRegistry()))
    _drain(proc)
    [raw] = [v for t, v in producer.sent if t == "dlq"]
    letter = decode(DeadLetter, raw)
    assert len(raw) <= 2000 and letter.payload is None
    assert f"payload of {len(payload)} bytes" in letter.reason and hashlib.sha256(payload).hexdigest() in letter.reason
    assert consumer.committed == 2  # the partition flows
    [outcome] = [decode(OutcomeEvent, v) for t, v in producer.sent if t == "outcomes"]
    assert outcome.submission_id == "sub_big" and outcome.status == OutcomeStatus.FAILED


class TwoPartitions:
    """Two partitions' logs handed out interleaved (p0, p1, p0, ...); a seek moves one partition back."""

    def __init__(self, logs: dict[int, list[bytes]]) -> None:
        self.logs = {p: [FakeMsg(v, i, partition=p) for i, v in enumerate(vs)] for p, vs in logs.items()}
        self.pos = dict.fromkeys(logs, 0)
        self.committed: dict[int, int] = dict.fromkeys(logs, 0)

    def _next(self) -> FakeMsg | None:
        for p in sorted(self.pos, key=lambda q: self.pos[q]):
            if self.pos[p] < len(self.logs[p]):
                self.pos[p] += 1
                return self.logs[p][self.pos[p] - 1]
        return None

    def poll(self, timeout: float) -> FakeMsg | None:
        return self._next()

    def consume(self, n: int, timeout: float) -> list[FakeMsg]:
        out = []
        while len(out) < min(n, 5) and (m := self._next()) is not None:
            out.append(m)
        return out

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        for o in offsets:
            assert o.offset >= self.committed[o.partition], "a commit never moves back"
            self.committed[o.partition] = o.offset

    def seek(self, tp: Any) -> None:
        self.pos[tp.partition] = tp.offset


def test_retrying_one_partition_keeps_the_other_flowing_and_every_offset_is_committed_once_done() -> None:
    logs = {0: [_event("a0"), _event("bad"), _event("a2"), _event("a3")], 1: [_event(f"b{i}") for i in range(4)]}
    consumer, producer = TwoPartitions(logs), FakeProducer()
    proc = _proc(consumer, Flaky(RetryableError("fails on this one")), producer)  # type: ignore[arg-type]
    for _ in range(40):
        proc.step()
        if consumer.committed == {0: 4, 1: 4}:
            break
    assert consumer.committed == {0: 4, 1: 4}
    out = [v for t, v in producer.sent if t == "out"]
    assert {v for v in out} == {_event(s) for s in ("a0", "a2", "a3", "b0", "b1", "b2", "b3")}
    assert out.index(_event("a3")) > out.index(_event("a2"))  # partition order kept
    [letter] = [decode(DeadLetter, v) for t, v in producer.sent if t == "dlq"]
    assert (letter.partition, letter.offset) == (0, 1)
