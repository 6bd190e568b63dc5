"""The cluster service's adapter (services/cluster/handler.py and the agent's retry loop in app.py), with the real
clusterer on SQLite and an in-memory index; no broker."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pymilvus import MilvusException
from pymilvus.client.types import LoadState
from pymilvus.exceptions import ConnectError, MilvusUnavailableException, ParamError
from sqlalchemy.exc import OperationalError
from support.unknowns import MODEL, T0, FakeIndex, person, sighting, unknown

from rfr.cluster.clusterer import Clusterer, CohortMismatchError
from rfr.cluster.index import FACE_ID_MAX, ClusterIndex, IndexMismatchError, IndexUnavailableError
from rfr.cluster.rule import ClusterRule
from rfr.cluster.store import ClusterStore
from rfr.core.cluster_messages import ClusterEvent
from rfr.core.db import sqlite_url
from rfr.core.kafka import Output
from rfr.core.metrics import StageMetrics
from rfr.core.schemas import DeadLetter, decode
from rfr.core.settings import MilvusSettings, Settings
from rfr.core.stream import DependencyUnavailable
from rfr.core.topics import Topics
from rfr.gallery.milvus import PROP_DIM, PROP_MODEL
from services.cluster.app import Runtime, process
from services.cluster.handler import ClusterHandler, RawMessage
from services.cluster.metrics import ClusterMetrics

TOPICS = Topics("t")
RULE = ClusterRule(link_threshold=0.7, merge_threshold=0.75)


@pytest.fixture
def handler(tmp_path: Path, registry: CollectorRegistry) -> ClusterHandler:
    clusterer = Clusterer(ClusterStore.open(sqlite_url(tmp_path / "c.db")), FakeIndex(), RULE)
    return ClusterHandler(clusterer, TOPICS, ClusterMetrics.create(registry), StageMetrics.create("cluster", registry))


def _raw(value: bytes, offset: int = 0) -> RawMessage:
    return RawMessage(TOPICS.matches, 1, offset, b"k", value, [("rfr-event-id", b"e")])


def _value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return float(registry.get_sample_value(name, labels or {}) or 0.0)


def test_three_unknowns_at_two_stores_give_one_event_keyed_by_cluster(handler: ClusterHandler,
                                                                      registry: CollectorRegistry) -> None:
    p = person(1)
    outs = [handler.handle(_raw(unknown(f"f{i}", sighting(p, i), f"s{i % 2}").to_bytes(), i)) for i in range(3)]
    assert outs[0] == outs[1] == []
    (out,) = outs[2]
    event = decode(ClusterEvent, out.value)
    assert out.topic == TOPICS.clusters and out.key == event.cluster_id and out.event_id == event.event_id
    assert _value(registry, "rfr_cluster_sightings_total") == 3
    assert _value(registry, "rfr_cluster_sightings_per_cluster_count") == 3
    assert handler.handle(_raw(unknown("f2", sighting(p, 2), "s0").to_bytes())) == [out]  # redelivery
    assert _value(registry, "rfr_cluster_sightings_total") == 3


def test_lists_with_candidates_re_searches_and_gated_probes_are_skipped(handler: ClusterHandler,
                                                                        registry: CollectorRegistry) -> None:
    base = unknown("f", person(2))
    for update, why in (({"trigger": "re_search"}, "re_search"), ({"low_quality": True}, "low_quality")):
        assert handler.handle(_raw(base.model_copy(update=update).to_bytes())) == []
        assert _value(registry, "rfr_cluster_lists_skipped_total", {"why": why}) == 1
    assert handler.clusterer.store.counts() == (0, 0)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", "invalid_message"),
    (json.dumps({"schema_version": 2}).encode(), "unsupported_schema_version"),
    (unknown("z", [0.0] * 64).to_bytes(), "invalid_message"),
])
def test_poison_is_dead_lettered_with_its_reason_and_bytes(handler: ClusterHandler, registry: CollectorRegistry,
                                                            payload: bytes, reason: str) -> None:
    (out,) = handler.handle(_raw(payload, offset=7))
    letter = decode(DeadLetter, out.value)
    assert out.topic == TOPICS.deadletter and out.headers["rfr-reason"] == reason
    assert letter.payload == payload and letter.offset == 7 and letter.service == "cluster"
    assert letter.headers == {"rfr-event-id": "e"}
    assert _value(registry, "rfr_cluster_deadletters_total", {"reason": reason}) == 1


@pytest.mark.parametrize(("exc", "dependency"), [
    (IndexUnavailableError("down"), "milvus"),
    (OperationalError("SELECT 1", {}, Exception("locked")), "cluster_store"),
])
def test_outages_are_dependency_errors(handler: ClusterHandler, monkeypatch: pytest.MonkeyPatch,
                                       exc: Exception, dependency: str) -> None:
    def fail(_cl: object) -> None:
        raise exc

    monkeypatch.setattr(handler.clusterer, "record", fail)
    with pytest.raises(DependencyUnavailable) as info:
        handler.handle(_raw(unknown("f", person(3)).to_bytes()))
    assert info.value.dependency == dependency


@pytest.mark.parametrize("error", [IndexMismatchError("collection holds model x"),
                                   CohortMismatchError("the cluster cohort was embedded by model x")])
def test_a_model_mismatch_is_poison(handler: ClusterHandler, monkeypatch: pytest.MonkeyPatch,
                                    error: Exception) -> None:
    def fail(_cl: object) -> None:
        raise error

    monkeypatch.setattr(handler.clusterer, "record", fail)
    (out,) = handler.handle(_raw(unknown("f", person(3)).to_bytes()))
    assert out.headers["rfr-reason"] == "model_mismatch"


def _runtime(handler: ClusterHandler) -> Runtime:
    settings = Settings(stream={"retry_backoff_s": 0.001, "max_backoff_s": 0.002, "max_attempts": 3})
    return Runtime(settings, handler.clusterer, handler, handler.metrics, handler.stage)


def test_the_agent_retries_an_outage_until_it_passes_then_sends(handler: ClusterHandler, registry: CollectorRegistry,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = handler.handle, []

    def flaky(msg: RawMessage) -> list[Output]:
        calls.append(msg.offset())
        if len(calls) < 3:
            raise DependencyUnavailable("milvus", "down")
        return real(msg)

    monkeypatch.setattr(handler, "handle", flaky)
    sent: list[list[Output]] = []

    async def send(outputs: list[Output]) -> None:
        sent.append(outputs)

    asyncio.run(process(_runtime(handler), _raw(unknown("f", person(4)).to_bytes()), send))
    assert len(calls) == 3 and sent == [[]] and handler.clusterer.store.counts() == (1, 1)
    assert _value(registry, "rfr_cluster_dependency_retries_total", {"dependency": "milvus"}) == 2


def test_the_agent_dead_letters_after_max_attempts_of_an_unexpected_failure(
        handler: ClusterHandler, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_msg: RawMessage) -> list[Output]:
        raise RuntimeError("bug")

    monkeypatch.setattr(handler, "handle", broken)
    sent: list[list[Output]] = []

    async def send(outputs: list[Output]) -> None:
        sent.append(outputs)

    asyncio.run(process(_runtime(handler), _raw(b"{}"), send))
    ((letter,),) = sent
    assert letter.topic == TOPICS.deadletter and letter.headers["rfr-reason"] == "retry_exhausted"
    assert _value(registry, "rfr_cluster_batch_errors_total", {"kind": "RuntimeError"}) == 3


def test_a_face_id_over_the_index_key_limit_is_dead_lettered_before_any_write(
        handler: ClusterHandler, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """Milvus keys faces by a VARCHAR(FACE_ID_MAX): a longer id would fail every upsert and block the partition."""
    payload = unknown("é" * (FACE_ID_MAX // 2 + 1), person(3)).to_bytes()  # 258 UTF-8 bytes, 129 characters
    (out,) = handler.handle(_raw(payload))
    assert out.topic == TOPICS.deadletter and out.headers["rfr-reason"] == "invalid_message"
    assert "key limit" in caplog.text
    assert handler.clusterer.store.counts() == (0, 0) and handler.clusterer.index.rows == {}  # type: ignore[attr-defined]
    assert handler.handle(_raw(unknown("f" * FACE_ID_MAX, person(3)).to_bytes())) == []  # at the limit: recorded
    assert handler.clusterer.store.counts() == (1, 1)


class _Milvus:
    """Just enough of MilvusClient for ClusterIndex: one loaded collection of MODEL; ``upsert`` raises ``fail``."""

    def __init__(self, fail: Exception) -> None:
        self.fail, self.closed = fail, 0

    def has_collection(self, _name: str) -> bool:
        return True

    def describe_collection(self, _name: str) -> dict[str, object]:
        return {"properties": {PROP_MODEL: MODEL, PROP_DIM: "64"}}

    def get_load_state(self, _name: str) -> dict[str, object]:
        return {"state": LoadState.Loaded}

    def search(self, *_args: object, **_kw: object) -> list[list[object]]:
        return [[]]

    def upsert(self, *_args: object) -> None:
        raise self.fail

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(("fail", "poison"), [
    (MilvusException(6, "VARCHAR field 'face_id' value length 300 exceeds max_length=256", 6), True),  # milvus-lite
    (MilvusException(1100, "invalid parameter", 5), True),  # Milvus 2.3+: ErrParameterInvalid
    (ParamError(message="bad data"), True),
    (MilvusException(1, "unexpected", 1), False),
    (MilvusException(6, "rate limited", 6, retriable=True), False),
    (ConnectError(message="no route"), False),
    (MilvusUnavailableException(message="server down"), False),
])
def test_milvus_refusing_the_data_is_poison_and_failing_is_an_outage(tmp_path: Path, registry: CollectorRegistry,
                                                                      fail: Exception, poison: bool) -> None:
    milvus = _Milvus(fail)
    index = ClusterIndex(MilvusSettings(uri=str(tmp_path / "m.db")), "t", client_factory=lambda: milvus)
    clusterer = Clusterer(ClusterStore.open(sqlite_url(tmp_path / "c.db")), index, RULE)
    handler = ClusterHandler(clusterer, TOPICS, ClusterMetrics.create(registry),
                             StageMetrics.create("cluster", registry))
    msg = _raw(unknown("f", person(3)).to_bytes())
    if poison:
        (out,) = handler.handle(msg)
        assert out.headers["rfr-reason"] == "invalid_message" and milvus.closed == 0  # the connection is fine
    else:
        with pytest.raises(DependencyUnavailable) as info:
            handler.handle(msg)
        assert info.value.dependency == "milvus" and milvus.closed == 1  # dropped: the next try reconnects
    assert clusterer.store.counts() == (0, 0)


def test_a_list_already_past_retention_is_skipped(tmp_path: Path, registry: CollectorRegistry) -> None:
    clusterer = Clusterer(ClusterStore.open(sqlite_url(tmp_path / "c.db")), FakeIndex(), RULE, clock=lambda: T0,
                          retention=timedelta(days=31))
    handler = ClusterHandler(clusterer, TOPICS, ClusterMetrics.create(registry),
                             StageMetrics.create("cluster", registry))
    assert handler.handle(_raw(unknown("f", person(3), searched_at=T0 - timedelta(days=32)).to_bytes())) == []
    assert _value(registry, "rfr_cluster_lists_skipped_total", {"why": "expired"}) == 1
    assert _value(registry, "rfr_cluster_sightings_total") == 0 and clusterer.store.counts() == (0, 0)
