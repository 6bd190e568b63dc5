"""Kafka helpers on confluent-kafka: client configs, topic creation, delivery-checked production."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rfr.core.settings import KafkaSettings
from rfr.core.topics import TopicSpec, topic_specs

logger = logging.getLogger(__name__)

EVENT_ID_HEADER = "rfr-event-id"
ConfigValue = str | int | float | bool


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached within the allowed time."""


class DeliveryFailed(RuntimeError):
    """At least one produced message was not acknowledged by the broker.

    ``permanent``: the broker refused a message for what it is (too large, invalid), so producing it again can
    never succeed; otherwise the broker was unreachable or slow, and a retry may.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# Delivery errors about the message itself: a retry produces the same refusal.
PERMANENT_DELIVERY_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError._INVALID_ARG,
})


def client_config(kafka: KafkaSettings) -> dict[str, ConfigValue]:
    conf: dict[str, ConfigValue] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        conf["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        conf["sasl.password"] = kafka.sasl_password.get_secret_value()
    return conf


def make_producer(kafka: KafkaSettings, **overrides: ConfigValue) -> Producer:
    conf = client_config(kafka) | {
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": kafka.message_max_bytes,
        "message.timeout.ms": 60_000,
        "retry.backoff.ms": 200,
    }
    return Producer(conf | overrides)


def group_id(kafka: KafkaSettings, name: str) -> str:
    return f"{kafka.group_namespace}.{name}" if kafka.group_namespace else name


def make_consumer(kafka: KafkaSettings, group: str, **overrides: ConfigValue) -> _Consumer:
    """A consumer that never commits on its own: the caller commits after its outputs are acknowledged."""
    conf = client_config(kafka) | {
        "group.id": group_id(kafka, group),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": kafka.assignment_strategy,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "fetch.max.bytes": max(kafka.message_max_bytes * 2, 52_428_800),
        "max.partition.fetch.bytes": kafka.message_max_bytes,
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
    }
    return _Consumer(conf | overrides)


def wait_for_broker(kafka: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers a metadata request, retrying with backoff; log each failure clearly."""
    admin = AdminClient(client_config(kafka))
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    while True:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"Kafka at {kafka.bootstrap_servers} did not answer within {timeout_s:.0f}s ({exc}); "
                    "is the broker running? (`rfr up` starts a local one; "
                    "RFR_KAFKA__BOOTSTRAP_SERVERS points elsewhere)"
                ) from exc
            logger.warning("Kafka at %s not reachable yet (%s); retrying in %.1fs", kafka.bootstrap_servers, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def ensure_topics(kafka: KafkaSettings, specs: Sequence[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics (idempotent); return the names created now."""
    admin = AdminClient(client_config(kafka))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
        for s in missing
    ]
    created: list[str] = []
    for name, future in admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    return created


def prepare_broker(kafka: KafkaSettings, timeout_s: float = 120.0) -> list[str]:
    """Wait for the broker (:class:`BrokerUnavailable` after ``timeout_s``), then create every missing pipeline
    topic; return the names created now."""
    wait_for_broker(kafka, timeout_s)
    return ensure_topics(kafka, topic_specs(kafka))


@dataclass(frozen=True)
class Output:
    """One message to produce."""

    topic: str
    value: bytes
    key: str | bytes | None = None
    event_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def produce_output(producer: Producer, out: Output, on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
    """Queue one output (event id as a header), waiting for room when the local queue is full."""
    headers = dict(out.headers)
    if out.event_id:
        headers[EVENT_ID_HEADER] = out.event_id
    while True:
        try:
            producer.produce(out.topic, out.value, out.key, headers=list(headers.items()), on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)


@dataclass
class DeliveryTracker:
    """Produces messages and waits until each is acknowledged, raising if any was not."""

    producer: Producer
    errors: list[str] = field(default_factory=list)
    permanent: bool = False

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")
            code = err.code() if isinstance(err, KafkaError) else None
            self.permanent = self.permanent or code in PERMANENT_DELIVERY_ERRORS

    def produce(self, outputs: Iterable[Output]) -> int:
        """Queue every output; a message the client refuses for what it is (too large, say) is a permanent
        failure, any other refusal (unknown topic, a fatal client state) a transient one."""
        n = 0
        for out in outputs:
            try:
                produce_output(self.producer, out, self._on_delivery)
            except KafkaException as exc:
                self.producer.flush(10.0)  # settle what was queued before it; the batch is retried as a whole
                self.errors, self.permanent = [], False
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                permanent = error is not None and error.code() in PERMANENT_DELIVERY_ERRORS
                raise DeliveryFailed(f"{out.topic}: {exc}", permanent=permanent) from exc
            n += 1
        return n

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every acknowledgement; :class:`DeliveryFailed` names the first failures."""
        remaining = self.producer.flush(timeout_s)
        errors, self.errors = self.errors, []
        permanent, self.permanent = self.permanent, False
        if remaining:
            errors.append(f"{remaining} message(s) still unacknowledged after {timeout_s:.0f}s")
        if errors:
            raise DeliveryFailed("; ".join(errors[:5]), permanent=permanent and not remaining)


def produce_and_wait(kafka: KafkaSettings, outputs: Sequence[Output], *, broker_wait_s: float,
                     delivery_timeout_s: float) -> None:
    """Produce ``outputs`` from a producer of their own and wait for every acknowledgement (``acks=all``): for a
    command or a page that announces something once, not a stage. The broker is waited for first
    (:class:`BrokerUnavailable` after ``broker_wait_s``) and the pipeline topics the outputs go to are created when
    missing (:class:`DeliveryFailed` when they cannot be); an output not acknowledged within ``delivery_timeout_s``
    is :class:`DeliveryFailed`."""
    wait_for_broker(kafka, broker_wait_s)
    topics = sorted({out.topic for out in outputs})
    try:
        ensure_topics(kafka, [s for s in topic_specs(kafka) if s.name in topics], timeout_s=broker_wait_s)
    except KafkaException as exc:
        raise DeliveryFailed(f"{', '.join(topics)}: the topic is missing and could not be created: {exc}") from exc
    tracker = DeliveryTracker(make_producer(kafka, **{"message.timeout.ms": int(delivery_timeout_s * 1000)}))
    tracker.produce(outputs)
    tracker.flush(delivery_timeout_s + 5.0)


def _header_pairs(msg: Message) -> Iterator[tuple[str, str | None]]:
    """Every header of ``msg`` in order, values as text (UTF-8, undecodable bytes replaced) or None."""
    raw = msg.headers() or []
    for k, v in raw.items() if isinstance(raw, dict) else raw:
        yield k, v.decode("utf-8", errors="replace") if isinstance(v, bytes) else None if v is None else str(v)


def header_dict(msg: Message) -> dict[str, str]:
    """Headers with a value as {name: value}; a repeated name keeps its last value."""
    return {k: v for k, v in _header_pairs(msg) if v is not None}


def header_dict_with_repeats(msg: Message, prefix: str) -> tuple[dict[str, str], dict[str, int]]:
    """:func:`header_dict`, but keeping each header's first value, and the headers whose name starts with
    ``prefix`` (case-insensitively) that occur more than once, as {lower-cased name: count}: for a consumer to
    refuse metadata that names one field twice (:func:`header_dict` silently keeps the last value)."""
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    for k, v in _header_pairs(msg):
        if k.lower().startswith(prefix.lower()):
            counts[k.lower()] = counts.get(k.lower(), 0) + 1
        if v is not None:
            out.setdefault(k, v)
    return out, {k: n for k, n in counts.items() if n > 1}
