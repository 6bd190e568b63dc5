"""Fakes and builders shared by the ingest unit tests (import as ``from data.ingest_fakes import ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits
from rfr.core.kafka import DeliveryFailed, Output
from rfr.core.topics import Topics
from services.ingest.accept import Ingestor
from services.ingest.metrics import IngestMetrics
from services.ingest.store import SqliteSubmissionStore


class FakeMsg:
    """The parts of confluent_kafka.Message the handlers read."""

    def __init__(self, value: bytes | None, headers: list[tuple[str, bytes]], offset: int = 0,
                 partition: int = 0, topic: str = "t.rfr.submissions.v1") -> None:
        self._value, self._headers, self._offset, self._partition, self._topic = (
            value, headers, offset, partition, topic)

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return self._topic

    def error(self) -> None:
        return None


class FakePublisher:
    """Records what the HTTP channel sends; ``fail`` makes every waited send fail as a broker outage would."""

    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.fail = False

    def send(self, outputs: Sequence[Output], *, wait: bool = True) -> None:
        if self.fail and wait:
            raise DeliveryFailed("broker down")
        self.sent.extend(outputs)

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def make_ingestor(tmp: Path, limits: ImageLimits | None = None, inline_max_bytes: int = 700 * 1024,
                  namespace: str = "t") -> Ingestor:
    metrics = IngestMetrics.create(CollectorRegistry())
    return Ingestor(Topics(namespace), SqliteSubmissionStore(tmp / "ingest.db"), FileBlobStore(tmp / "blobs"),
                    metrics, limits or ImageLimits(max_bytes=1 << 20), inline_max_bytes)


def sample(metric: object, **labels: str) -> float:
    """The current value of a counter child (0 when never incremented)."""
    from prometheus_client import Counter

    assert isinstance(metric, Counter)
    return float(metric.labels(**labels)._value.get()) if labels else float(metric._value.get())
