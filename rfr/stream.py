"""The at-least-once processing loop every stream stage runs.

consume a batch -> handle it -> produce outputs and dead letters -> wait for acks -> commit offsets.
Offsets are committed only after everything the batch produced is acknowledged, so a crash re-processes
and never drops. A message that cannot be processed goes to the dead-letter topic with the reason and its
original bytes; it never stops the partition.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from rfr.errors import ReasonedError
from rfr.kafka import DeliveryFailed, DeliveryTracker, Output, header_dict
from rfr.metrics import StageMetrics
from rfr.schemas import DeadLetter

logger = logging.getLogger(__name__)


class PoisonMessage(ReasonedError):
    """This message can never be processed: send it to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str = "", outputs: Sequence[Output] = ()) -> None:
        super().__init__(reason, detail)
        self.outputs = list(outputs)  # produced beside the dead letter (e.g. a "rejected" outcome event)


class RetryableError(Exception):
    """A dependency is down (gallery, blob store): retry the whole batch later, send nothing to dead letters."""


Result = list[Output] | Exception


class BatchHandler(Protocol):
    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        """One result per message, in order: the outputs to produce, or the exception that rejects it."""
        ...


@dataclass
class StreamConfig:
    service: str
    topics: list[str]
    deadletter_topic: str
    batch_size: int = 32
    batch_timeout_s: float = 0.05
    retry_backoff_s: float = 1.0
    max_backoff_s: float = 30.0


def dead_letter(service: str, msg: Message, exc: Exception, topic: str) -> Output:
    """The dead-letter message for ``msg``: reason, error type, origin, headers and the original bytes."""
    if isinstance(exc, PoisonMessage):
        reason, text = exc.reason, str(exc)
    else:
        reason = f"unhandled:{type(exc).__name__}"
        text = "".join(traceback.format_exception_only(exc)).strip()
    source = msg.topic() or "?"
    letter = DeadLetter(
        event_id=f"{source}:{msg.partition()}:{msg.offset()}",
        service=service,
        reason=text[:2000],
        error_type=type(exc).__name__,
        source_topic=source,
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=_as_bytes(msg.key()),
        headers=header_dict(msg),
        payload=_as_bytes(msg.value()),
    )
    return Output(
        topic=topic, value=letter.to_bytes(), key=msg.key(), event_id=letter.event_id, headers={"rfr-reason": reason}
    )


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class StreamProcessor:
    """Runs a :class:`BatchHandler` over Kafka with at-least-once delivery and graceful shutdown."""

    def __init__(
        self,
        config: StreamConfig,
        consumer: Consumer,
        tracker: DeliveryTracker,
        handler: BatchHandler,
        metrics: StageMetrics,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.tracker = tracker
        self.handler = handler
        self.metrics = metrics
        self.stopping = threading.Event()
        self._backoff = config.retry_backoff_s

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("signal %s: finishing the batch in hand, then stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> None:
        self.consumer.subscribe(self.config.topics)
        logger.info("%s consuming %s", self.config.service, ", ".join(self.config.topics))
        try:
            while not self.stopping.is_set():
                self.step()
        finally:
            self.consumer.close()
            logger.info("%s stopped cleanly", self.config.service)

    def _poll(self) -> list[Message]:
        """A micro-batch: wait up to 1 s for a first message, then at most ``batch_timeout_s`` for the rest."""
        first = self.consumer.poll(1.0)
        if first is None:
            return []
        msgs = [first]
        if self.config.batch_size > 1:
            msgs += self.consumer.consume(self.config.batch_size - 1, self.config.batch_timeout_s)
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", err)
        return good

    def step(self) -> int:
        """Process one batch; return how many messages it held."""
        msgs = self._poll()
        if not msgs:
            return 0
        self.metrics.consumed.inc(len(msgs))
        self.metrics.inflight.set(len(msgs))
        started = time.perf_counter()
        try:
            outputs = self._outputs_for(msgs)
            self._deliver(outputs)
        except (RetryableError, DeliveryFailed) as exc:
            self._rewind(msgs, exc)
            return len(msgs)
        self._commit(msgs)
        self.metrics.batch_size.observe(len(msgs))
        self.metrics.process_seconds.observe(time.perf_counter() - started)
        self.metrics.inflight.set(0)
        self._backoff = self.config.retry_backoff_s
        return len(msgs)

    def _outputs_for(self, msgs: list[Message]) -> list[Output]:
        try:
            results = self.handler.handle_batch(msgs)
        except RetryableError:
            raise
        except Exception:
            logger.exception("batch of %d failed; isolating the bad message(s) one by one", len(msgs))
            self.metrics.errors.labels("isolate").inc()
            results = [self._handle_one(m) for m in msgs]
        if len(results) != len(msgs):
            raise RuntimeError(f"handler returned {len(results)} results for {len(msgs)} messages")
        outputs: list[Output] = []
        for msg, result in zip(msgs, results, strict=True):
            if isinstance(result, Exception):
                letter = dead_letter(self.config.service, msg, result, self.config.deadletter_topic)
                self.metrics.deadletters.labels(letter.headers["rfr-reason"]).inc()
                logger.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), result)
                outputs.append(letter)
                if isinstance(result, PoisonMessage):
                    outputs.extend(result.outputs)
            else:
                outputs.extend(result)
        return outputs

    def _handle_one(self, msg: Message) -> Result:
        try:
            return self.handler.handle_batch([msg])[0]
        except RetryableError:
            raise
        except Exception as exc:  # noqa: BLE001 - one message's failure is its own dead letter
            return exc

    def _deliver(self, outputs: list[Output]) -> None:
        self.tracker.produce(outputs)
        self.tracker.flush()
        for out in outputs:
            self.metrics.produced.labels(out.topic).inc()

    def _commit(self, msgs: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp = (m.topic() or "", m.partition() or 0)
            offsets[tp] = max(offsets.get(tp, -1), (m.offset() or 0) + 1)
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        self.metrics.last_commit.set_to_current_time()

    def _rewind(self, msgs: list[Message], exc: Exception) -> None:
        """Seek every partition in the batch back to its first message, then wait before retrying."""
        self.metrics.errors.labels(type(exc).__name__).inc()
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp = (m.topic() or "", m.partition() or 0)
            first[tp] = min(first.get(tp, m.offset() or 0), m.offset() or 0)
        for (t, p), o in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, o))
            except Exception:
                logger.exception("seek %s[%s] to %s failed; the group will redeliver after a rebalance", t, p, o)
        logger.warning("batch failed (%s); retrying in %.1fs", exc, self._backoff)
        self.stopping.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.config.max_backoff_s)
