"""The at-least-once processing loop every stream stage runs.

consume a batch -> handle it -> produce outputs and dead letters -> wait for acks -> commit offsets.
Offsets are committed only after everything the batch produced is acknowledged, so a crash re-processes
and never drops. A message that cannot be processed goes to the dead-letter topic with the reason and its
original bytes, beside a ``failed`` outcome for its submission (:mod:`rfr.core.deadletters`); it never stops the
partition.

Failures that may pass are retried, and only a dependency outage is retried without limit:

* :class:`DependencyUnavailable` (a gallery, blob store or store that does not answer; Kafka not acknowledging):
  the batch is rewound and retried with exponential backoff for as long as it lasts, counted in
  ``rfr_<service>_dependency_retries_total{dependency}`` (alert ``RfrDependencyOutage``).
* any other :class:`RetryableError`, and a produce the broker refuses for the message itself: first the handler's
  dependencies are checked (:class:`ChecksDependencies`); when they are up, the failure is the messages'. Each
  message of the batch is charged one attempt, and the batch is then handled one message at a time, so only the
  failing message is charged again. After ``max_attempts`` it is dead-lettered with reason ``retry_exhausted``
  and the messages behind it flow.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol, runtime_checkable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from rfr.core.deadletters import dead_letter, event_ids, failed_outcome, reason_of
from rfr.core.errors import ReasonedError
from rfr.core.kafka import DeliveryFailed, DeliveryTracker, Output
from rfr.core.logs import ids
from rfr.core.metrics import StageMetrics
from rfr.core.reasons import Reason

logger = logging.getLogger(__name__)

MAX_TRACKED_ATTEMPTS = 10_000  # offsets remembered between tries; more means a rebalance left stale ones


class PoisonMessage(ReasonedError):
    """This message can never be processed: send it to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str = "", outputs: Sequence[Output] = ()) -> None:
        super().__init__(reason, detail)
        self.outputs = list(outputs)  # produced beside the dead letter (e.g. a "rejected" outcome event)


class RetryableError(Exception):
    """Handling failed in a way that may pass: retry later, within ``max_attempts`` unless a dependency is down."""


class DependencyUnavailable(RetryableError):
    """A dependency (``dependency``: "milvus", "blobstore", ...) does not answer: retry for as long as it lasts."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency


Result = list[Output] | Exception


class BatchHandler(Protocol):
    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        """One result per message, in order: the outputs to produce, or the exception that rejects it."""
        ...


@runtime_checkable
class ChecksDependencies(Protocol):
    def check_dependencies(self) -> None:
        """Raise :class:`DependencyUnavailable` when a dependency the handler needs is down; cheap."""
        ...


@runtime_checkable
class ReportsFailures(Protocol):
    def failure_outputs(self, msg: Message, detail: str) -> list[Output]:
        """What to produce beside the dead letter of ``msg`` (its ``failed`` outcome), for a handler whose input
        is not a pipeline event that :func:`rfr.core.deadletters.failed_outcome` can read (ingest's raw stills)."""
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
    max_attempts: int = 5
    outcomes_topic: str | None = None  # where the ``failed`` outcome of a dead-lettered event goes
    max_message_bytes: int | None = None  # the broker's limit: a larger dead letter goes without its payload


Key = tuple[str, int, int]


def _key(msg: Message) -> Key:
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


class _Retry(Exception):
    """Internal: rewind to ``msgs`` and try them again (attempts are already charged)."""

    def __init__(self, msgs: Sequence[Message], cause: Exception) -> None:
        super().__init__(str(cause))
        self.msgs = list(msgs)
        self.cause = cause


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
        self._attempts: dict[Key, int] = {}

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
            if any(_key(m) in self._attempts for m in msgs):
                self._one_by_one(msgs)
            else:
                self._whole_batch(msgs)
        except _Retry as retry:
            self._rewind(retry.msgs, retry.cause)
            return len(msgs)
        self.metrics.batch_size.observe(len(msgs))
        self.metrics.process_seconds.observe(time.perf_counter() - started)
        self.metrics.inflight.set(0)
        self._backoff = self.config.retry_backoff_s
        return len(msgs)

    def _whole_batch(self, msgs: list[Message]) -> None:
        """The fast path: one handler call and one flush for the whole batch."""
        try:
            self._deliver(self._outputs_for(msgs))
        except (RetryableError, DeliveryFailed) as exc:
            self._charge(msgs, exc)
            raise _Retry(msgs, exc) from exc
        self._commit(msgs)

    def _one_by_one(self, msgs: list[Message]) -> None:
        """After a failed try: each message alone, so that only a failing one is charged and dead-lettered."""
        done: list[Message] = []
        for i, msg in enumerate(msgs):
            try:
                self._deliver(self._outputs_for([msg]))
            except (RetryableError, DeliveryFailed) as exc:
                try:
                    if self._charge([msg], exc) < self.config.max_attempts:
                        raise _Retry(msgs[i:], exc) from exc
                    self._exhausted(msg, exc)
                except (_Retry, DeliveryFailed) as retry:
                    self._commit(done)
                    raise _Retry(msgs[i:], retry) from exc
            done.append(msg)
        self._commit(done)

    def _charge(self, msgs: Sequence[Message], exc: Exception) -> int:
        """Count one failed try of each of ``msgs``; return the highest count among them.

        A dependency outage charges nothing and returns 0: it is counted per dependency instead.
        """
        outage = self._outage(exc)
        if outage is not None:
            self.metrics.dependency_retries.labels(outage.dependency).inc()
            return 0
        self.metrics.errors.labels(type(exc).__name__).inc()
        if len(self._attempts) > MAX_TRACKED_ATTEMPTS:
            self._attempts.clear()
        counts = []
        for m in msgs:
            counts.append(self._attempts.get(_key(m), 0) + 1)
            self._attempts[_key(m)] = counts[-1]
        return max(counts)

    def _outage(self, exc: Exception) -> DependencyUnavailable | None:
        """The dependency outage behind ``exc``, if there is one; asks the handler when it can tell."""
        if isinstance(exc, DependencyUnavailable):
            return exc
        if isinstance(exc, DeliveryFailed) and not exc.permanent:
            return DependencyUnavailable("kafka", str(exc))
        if isinstance(self.handler, ChecksDependencies):
            try:
                self.handler.check_dependencies()
            except DependencyUnavailable as down:
                return down
        return None

    def _exhausted(self, msg: Message, exc: Exception) -> None:
        """Dead-letter ``msg`` after its last try (the outputs it may have made are dropped with it)."""
        error = PoisonMessage(Reason.RETRY_EXHAUSTED, f"{self.config.max_attempts} tries: {type(exc).__name__}: {exc}")
        logger.error("%s[%s]@%s failed %d times; dead-lettering it: %s",
                     msg.topic(), msg.partition(), msg.offset(), self.config.max_attempts, exc)
        self._deliver(self._rejected(msg, error))

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
            outputs.extend(self._rejected(msg, result) if isinstance(result, Exception) else result)
        return outputs

    def _rejected(self, msg: Message, exc: Exception) -> list[Output]:
        """The dead letter for ``msg``, and beside it the handler's outputs or the ``failed`` outcome."""
        letter = dead_letter(self.config.service, msg, exc, self.config.deadletter_topic,
                             self.config.max_message_bytes)
        self.metrics.deadletters.labels(letter.headers["rfr-reason"]).inc()
        event = event_ids(msg.value())  # read once: for the log line and the failed outcome
        logger.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc,
                       extra=ids(event[0], event[1], topic=msg.topic(), partition=msg.partition(), offset=msg.offset()))
        if isinstance(exc, PoisonMessage) and exc.outputs:
            return [letter, *exc.outputs]
        if self.config.outcomes_topic is None:
            return [letter]
        detail = reason_of(exc)[1]
        if isinstance(self.handler, ReportsFailures):
            return [letter, *self.handler.failure_outputs(msg, detail)]
        outcome = failed_outcome(event, detail, self.config.outcomes_topic)
        if outcome is None:
            logger.warning("%s[%s]@%s names no submission: no failed outcome can be sent for it",
                           msg.topic(), msg.partition(), msg.offset())
            return [letter]
        return [letter, outcome]

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
        if not msgs:
            return
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp = (m.topic() or "", m.partition() or 0)
            offsets[tp] = max(offsets.get(tp, -1), (m.offset() or 0) + 1)
            self._attempts.pop(_key(m), None)
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        self.metrics.last_commit.set_to_current_time()

    def _rewind(self, msgs: list[Message], exc: Exception) -> None:
        """Seek every partition among ``msgs`` back to its first message, then wait before retrying."""
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
