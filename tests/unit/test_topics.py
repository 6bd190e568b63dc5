from __future__ import annotations

from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from rfr.core import kafka
from rfr.core.settings import KafkaSettings
from rfr.core.topics import ALL_TOPICS, DEADLETTER, Topics, topic_specs


def test_names_are_versioned_and_namespaced() -> None:
    assert Topics().frames == "rfr.frames.v1"
    assert Topics("t42").matches == "t42.rfr.matches.v1"
    assert all(t.startswith("rfr.") and t.endswith(".v1") for t in ALL_TOPICS)
    with pytest.raises(KeyError):
        Topics().name("rfr.unknown.v1")


def test_specs_cover_every_topic_with_config() -> None:
    ks = KafkaSettings(partitions=6, replication_factor=3, retention_ms=1000)
    specs = {s.name: s for s in topic_specs(ks)}
    assert set(specs) == set(ALL_TOPICS)
    assert all(s.partitions == 6 and s.replication_factor == 3 for s in specs.values())
    assert specs["rfr.frames.v1"].config["retention.ms"] == "1000"
    assert specs[DEADLETTER].config["retention.ms"] == "4000"


class _Future:
    def __init__(self, exc: Exception | None) -> None:
        self.exc = exc

    def result(self) -> None:
        if self.exc:
            raise self.exc


class _FakeAdmin:
    """Stands in for confluent_kafka's AdminClient: a broker where some topics exist."""

    existing: ClassVar[set[str]] = set()
    created: ClassVar[list[str]] = []
    race: ClassVar[set[str]] = set()

    def __init__(self, conf: dict[str, Any]) -> None:
        pass

    def list_topics(self, timeout: float) -> Any:
        return type("MD", (), {"topics": {n: None for n in self.existing}})()

    def create_topics(self, new: list[Any], **kw: Any) -> dict[str, _Future]:
        out = {}
        for t in new:
            if t.topic in self.race:
                out[t.topic] = _Future(KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)))
            else:
                self.created.append(t.topic)
                out[t.topic] = _Future(None)
        return out


def test_ensure_topics_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "AdminClient", _FakeAdmin)
    ks = KafkaSettings()
    _FakeAdmin.existing = {"rfr.frames.v1"}
    _FakeAdmin.race = {"rfr.faces.v1"}  # created by someone else between list and create
    _FakeAdmin.created = []
    created = kafka.ensure_topics(ks, topic_specs(ks))
    assert "rfr.frames.v1" not in created and "rfr.faces.v1" not in created
    assert set(created) == set(ALL_TOPICS) - {"rfr.frames.v1", "rfr.faces.v1"}
    _FakeAdmin.existing = set(ALL_TOPICS)
    assert kafka.ensure_topics(ks, topic_specs(ks)) == []


def test_ensure_topics_surfaces_real_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    class Denied(_FakeAdmin):
        def create_topics(self, new: list[Any], **kw: Any) -> dict[str, _Future]:
            return {t.topic: _Future(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))) for t in new}

    monkeypatch.setattr(kafka, "AdminClient", Denied)
    Denied.existing = set()
    with pytest.raises(KafkaException):
        kafka.ensure_topics(KafkaSettings(), topic_specs(KafkaSettings()))
