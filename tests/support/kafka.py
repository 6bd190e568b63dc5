"""Fakes of confluent-kafka's message, consumer and producer, and of ingest's HTTP-channel publisher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from rfr.core.kafka import DeliveryFailed, Output


class FakeMsg:
    """The parts of ``confluent_kafka.Message`` the stream loop and the handlers read."""

    def __init__(self, value: bytes | None, offset: int = 0, *, headers: Sequence[tuple[str, bytes]] = (),
                 key: bytes | None = None, partition: int = 0, topic: str = "in",
                 timestamp_ms: int | None = None) -> None:
        self._value, self._offset, self._headers, self._key = value, offset, list(headers), key
        self._partition, self._topic = partition, topic
        self._timestamp = ((TIMESTAMP_CREATE_TIME, timestamp_ms) if timestamp_ms is not None
                           else (TIMESTAMP_NOT_AVAILABLE, 0))

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return self._topic

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> None:
        return None


class FakeConsumer:
    """Hands out scripted batches: ``poll`` the first message of the next batch, ``consume`` the rest of it."""

    def __init__(self, batches: list[list[FakeMsg]]) -> None:
        self.batches = batches
        self.commits: list[list[tuple[str, int, int]]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.consumed_timeouts: list[float] = []

    def poll(self, timeout: float) -> FakeMsg | None:
        if not self.batches:
            return None
        return self.batches[0].pop(0)

    def consume(self, n: int, timeout: float) -> list[FakeMsg]:
        self.consumed_timeouts.append(timeout)
        return self.batches.pop(0)[:n] if self.batches else []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(o.topic, o.partition, o.offset) for o in offsets])

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class LogConsumer:
    """One partition's log of ``values``; ``seek`` moves the read position back, as a real consumer does, so a
    rewound batch is delivered again. ``batch`` caps what one poll + consume hands out."""

    def __init__(self, values: list[bytes], batch: int = 8) -> None:
        self.log = [FakeMsg(v, i) for i, v in enumerate(values)]
        self.pos = 0
        self.batch = batch
        self.commits: list[int] = []
        self.seeks: list[int] = []

    def poll(self, timeout: float) -> FakeMsg | None:
        if self.pos >= len(self.log):
            return None
        self.pos += 1
        return self.log[self.pos - 1]

    def consume(self, n: int, timeout: float) -> list[FakeMsg]:
        out = self.log[self.pos : self.pos + min(n, self.batch - 1)]
        self.pos += len(out)
        return out

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.extend(o.offset for o in offsets)

    def seek(self, tp: Any) -> None:
        self.seeks.append(tp.offset)
        self.pos = tp.offset

    @property
    def committed(self) -> int:
        return max(self.commits, default=0)


@dataclass(frozen=True)
class Produced:
    topic: str
    value: bytes
    key: str | bytes | None
    headers: dict[str, str | bytes] = field(default_factory=dict)


class FakeProducer:
    """Records what is produced; ``flush`` acknowledges it, or fails every message when ``fail`` is set."""

    def __init__(self, fail: bool = False) -> None:
        self.produced: list[Produced] = []
        self.fail = fail
        self._pending: list[tuple[Any, Produced]] = []

    @property
    def sent(self) -> list[tuple[str, bytes]]:
        """(topic, value) of every message produced, in order."""
        return [(p.topic, p.value) for p in self.produced]

    def produce(self, topic: str, value: bytes, key: Any = None, headers: Any = None, on_delivery: Any = None
                ) -> None:
        record = Produced(topic, value, key, dict(headers or []))
        self.produced.append(record)
        self._pending.append((on_delivery, record))

    def flush(self, timeout: float) -> int:
        for on_delivery, record in self._pending:
            if on_delivery is not None:
                msg = FakeMsg(record.value, topic=record.topic)
                on_delivery("broker down" if self.fail else None, msg)
        self._pending = []
        return 0

    def poll(self, timeout: float) -> int:
        return 0


class FakePublisher:
    """Records what ingest's HTTP channel sends; ``fail`` makes every waited send fail as a broker outage would."""

    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.fail = False

    def send(self, outputs: Sequence[Output], *, wait: bool = True) -> None:
        if self.fail and wait:
            raise DeliveryFailed("broker down")
        self.sent.extend(outputs)

    def close(self, timeout_s: float = 10.0) -> None:
        return None
