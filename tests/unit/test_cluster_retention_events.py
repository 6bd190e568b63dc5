"""Readers of reported clusters are told what retention did (rfr/cluster/retention.py, outbox.py; the service's
publisher in services/cluster/app.py): a shrunk cluster's new revision, an emptied cluster's ClusterPurged; on a real
SQLite store and an exact in-memory index, no broker."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError
from prometheus_client import CollectorRegistry
from sqlalchemy import insert, text
from sqlalchemy.exc import OperationalError
from support.databases import at_revision
from support.unknowns import MODEL, T0, FakeIndex, person, sighting, unknown

from rfr.cluster import outbox
from rfr.cluster.clusterer import Clusterer, new_cluster_id
from rfr.cluster.rule import ClusterRule, unit
from rfr.cluster.store import MIGRATIONS, VERSION_TABLE, ClusterStore, clusters
from rfr.core.cluster_messages import ClusterEvent, ClusterPurged
from rfr.core.db import make_engine, sqlite_url
from rfr.core.kafka import Output
from rfr.core.metrics import StageMetrics
from rfr.core.schemas import decode
from rfr.core.settings import Settings
from rfr.core.topics import CLUSTER_PURGES, CLUSTERS, Topics
from services.cluster.app import Runtime, process, publish_outbox
from services.cluster.handler import ClusterHandler, RawMessage
from services.cluster.metrics import ClusterMetrics

RULE = ClusterRule(link_threshold=0.7, merge_threshold=0.75, min_sightings=3, min_stores=2, neighbours=16)
OLD = T0 - timedelta(days=40)
CUTOFF = T0 - timedelta(days=31)


@pytest.fixture
def store(cluster_store: ClusterStore) -> ClusterStore:
    return cluster_store


@pytest.fixture
def clusterer(store: ClusterStore) -> Clusterer:
    return Clusterer(store, FakeIndex(), RULE, clock=lambda: T0)


def _record(clusterer: Clusterer, names: list[str], old: set[str], seed: int = 1) -> str:
    """One person seen as ``names`` at stores s0, s1, s2, ... (``old`` ones searched 40 days ago); their cluster."""
    p = person(seed)
    steps = [clusterer.record(unknown(n, sighting(p, i), f"s{i}", searched_at=OLD if n in old else T0))
             for i, n in enumerate(names)]
    assert len({s.cluster_id for s in steps}) == 1
    return steps[0].cluster_id


def test_a_reported_cluster_that_shrinks_is_published_again_as_retention_left_it(clusterer: Clusterer,
                                                                                  store: ClusterStore) -> None:
    cid = _record(clusterer, ["old0", "new1", "new2", "new3"], old={"old0"})
    report = clusterer.purge(CUTOFF)
    assert (report.sightings, report.clusters_shrunk, report.clusters_deleted, report.events) == (1, 1, 0, 1)
    (entry,) = outbox.pending(store)
    assert (entry.topic, entry.key, entry.event_id) == (CLUSTERS, cid, f"{cid}:5")
    event = decode(ClusterEvent, entry.payload)
    assert event.cause == "retention" and event.revision == 5 and event.merged_from == []
    assert [s.face_id for s in event.sightings] == ["new1", "new2", "new3"]
    p = person(1)
    assert np.allclose(event.vector, unit(sighting(p, 1) + sighting(p, 2) + sighting(p, 3)), atol=1e-5)
    again = clusterer.record(unknown("new2", sighting(p, 2), "s2"))  # a redelivered list repeats that event exactly
    assert not again.recorded and again.event == event
    grown = clusterer.record(unknown("new4", sighting(p, 4), "s4")).event
    assert grown is not None and grown.revision == 6 and grown.cause == "sightings"


def test_a_reported_cluster_that_retention_empties_gets_a_purge_event(clusterer: Clusterer,
                                                                      store: ClusterStore) -> None:
    cid = _record(clusterer, ["a", "b", "c"], old={"a", "b", "c"})
    report = clusterer.purge(CUTOFF)
    assert (report.sightings, report.clusters_deleted, report.events) == (3, 1, 1)
    (entry,) = outbox.pending(store)
    assert (entry.topic, entry.key, entry.event_id) == (CLUSTER_PURGES, cid, f"{cid}:4")
    purged = decode(ClusterPurged, entry.payload)
    assert (purged.revision, purged.sightings_purged, purged.reason, purged.model_id) == (4, 3, "retention", MODEL)
    assert purged.at == T0 and store.counts() == (0, 0)


def test_a_cluster_never_reported_is_never_spoken_of(clusterer: Clusterer, store: ClusterStore) -> None:
    _record(clusterer, ["a", "b"], old={"a"})  # two sightings: below the rule
    _record(clusterer, ["x"], old={"x"}, seed=2)
    report = clusterer.purge(CUTOFF)
    assert (report.sightings, report.clusters_shrunk, report.clusters_deleted, report.events) == (2, 1, 1, 0)
    assert outbox.pending(store) == []


def test_events_wait_in_the_store_until_sent_and_a_second_pass_adds_none(clusterer: Clusterer, store: ClusterStore,
                                                                         tmp_path: Path) -> None:
    _record(clusterer, ["old0", "new1", "new2"], old={"old0"})
    _record(clusterer, ["o1", "o2", "o3"], old={"o1", "o2", "o3"}, seed=2)
    clusterer.purge(CUTOFF)
    reopened = ClusterStore.open(sqlite_url(tmp_path / "cluster.db"))  # as after a crash: the outbox is durable
    try:
        waiting = outbox.pending(reopened)
        assert sorted(e.topic for e in waiting) == sorted([CLUSTERS, CLUSTER_PURGES])
        assert [e.seq for e in waiting] == sorted(e.seq for e in waiting)
        assert [e.event_id for e in outbox.pending(reopened, limit=1)] == [waiting[0].event_id]
        outbox.sent(reopened, [waiting[0].seq])
        assert outbox.pending(reopened) == waiting[1:]
    finally:
        reopened.close()
    assert clusterer.purge(CUTOFF).events == 0 and len(outbox.pending(store)) == 1


def test_a_store_of_release_0001_gains_the_outbox_and_its_clusters_the_cause(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "old.db"))
    with at_revision(engine, MIGRATIONS, VERSION_TABLE, "0001") as conn:
        conn.execute(text("INSERT INTO clusters (cluster_id, model_id, total, members, revision, reported, "
                          "merged_from, created_at, updated_at) VALUES ('c1', 'm', x'00', 1, 3, 1, '[]', 0, 0)"))
    store = ClusterStore(engine)
    try:
        with store.reading() as conn:
            assert conn.execute(text("SELECT cause FROM clusters")).scalar_one() == "sightings"
        assert outbox.pending(store) == []
        with store.transaction() as conn:
            conn.execute(insert(clusters).values(cluster_id="c2", model_id="m", total=b"\0", members=1, revision=1,
                                                 reported=0, merged_from="[]", created_at=0, updated_at=0))
            assert conn.execute(text("SELECT cause FROM clusters WHERE cluster_id = 'c2'")).scalar_one() == "sightings"
    finally:
        store.close()


def _runtime(clusterer: Clusterer, registry: CollectorRegistry) -> Runtime:
    handler = ClusterHandler(clusterer, Topics("t"), ClusterMetrics.create(registry),
                             StageMetrics.create("cluster", registry))
    return Runtime(Settings(), clusterer, handler, handler.metrics, handler.stage)


def test_the_service_publishes_the_outbox_in_order_and_keeps_what_the_broker_did_not_take(
        clusterer: Clusterer, store: ClusterStore, registry: CollectorRegistry) -> None:
    _record(clusterer, ["old0", "new1", "new2"], old={"old0"})
    _record(clusterer, ["o1", "o2", "o3"], old={"o1", "o2", "o3"}, seed=2)
    clusterer.purge(CUTOFF)
    waiting = outbox.pending(store)
    rt, sent = _runtime(clusterer, registry), list[Output]()

    async def broker_down(_outputs: list[Output]) -> None:
        raise KafkaTimeoutError()

    assert asyncio.run(publish_outbox(rt, broker_down)) == 0 and outbox.pending(store) == waiting

    async def faust_wrapped(_outputs: list[Output]) -> None:
        raise ProducerSendError("Error while sending: UnknownTopicOrPartitionError()")

    assert asyncio.run(publish_outbox(rt, faust_wrapped)) == 0 and outbox.pending(store) == waiting

    async def send(outputs: list[Output]) -> None:
        sent.extend(outputs)

    assert asyncio.run(publish_outbox(rt, send, batch=1)) == 2 and outbox.pending(store) == []
    assert [(o.topic, o.event_id, o.value) for o in sent] == [
        (f"t.{e.topic}", e.event_id, e.payload) for e in waiting]
    assert all(o.key == e.key for o, e in zip(sent, waiting, strict=True))
    assert registry.get_sample_value("rfr_cluster_retention_events_total") == 2
    assert asyncio.run(publish_outbox(rt, send)) == 0 and len(sent) == 2


def test_a_store_outage_stops_publishing_without_losing_the_events(clusterer: Clusterer, store: ClusterStore,
                                                                   registry: CollectorRegistry,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _record(clusterer, ["a", "b", "c"], old={"a", "b", "c"})
    clusterer.purge(CUTOFF)
    sent = list[Output]()

    async def send(outputs: list[Output]) -> None:
        sent.extend(outputs)

    def locked(*_args: object) -> None:
        raise OperationalError("DELETE", {}, Exception("database is locked"))

    monkeypatch.setattr(outbox, "sent", locked)
    assert asyncio.run(publish_outbox(_runtime(clusterer, registry), send)) == 0
    assert len(sent) == 1 and len(outbox.pending(store)) == 1  # published, not deleted: the next pass sends it again


def test_once_reported_a_cluster_retention_left_below_the_rule_is_published_as_it_grows(
        clusterer: Clusterer, store: ClusterStore) -> None:
    cid = _record(clusterer, ["a", "b", "c"], old={"a", "b"})
    clusterer.purge(CUTOFF)
    (shrunk,) = [decode(ClusterEvent, e.payload) for e in outbox.pending(store)]
    assert [s.face_id for s in shrunk.sightings] == ["c"]  # one sighting, one store: below the rule
    p = person(1)
    grown = clusterer.record(unknown("d", sighting(p, 3), "s3"))
    assert grown.event is not None and grown.event.revision == shrunk.revision + 1 and grown.cluster_id == cid
    assert clusterer.record(unknown("d", sighting(p, 3), "s3")).event == grown.event  # a redelivery repeats it


def test_a_merge_with_a_reported_cluster_below_the_rule_is_published(store: ClusterStore) -> None:
    """Readers hold the reported cluster: they must learn that another absorbed it (or it another)."""
    clusterer = Clusterer(store, FakeIndex(), ClusterRule(0.7, 0.75, min_sightings=4, min_stores=2), clock=lambda: T0)
    x, y = np.zeros(64, np.float32), np.zeros(64, np.float32)
    x[0], y[0], y[1] = 1.0, 0.6, 0.8  # two people at cosine 0.6: apart
    for i in range(4):
        reported = clusterer.record(unknown(f"a{i}", x, f"s{i}", searched_at=OLD if i < 3 else T0))
    assert reported.event is not None
    lone = clusterer.record(unknown("y1", y, "s5"))
    clusterer.purge(CUTOFF)  # the reported cluster keeps a3 alone
    bridge = clusterer.record(unknown("m", unit(x + y), "s5"))
    assert bridge.merged == 1 and bridge.size == 3  # three sightings: below the rule's four
    assert bridge.event is not None
    assert {bridge.cluster_id, *bridge.event.merged_from} == {reported.cluster_id, lone.cluster_id}


def test_each_pass_appends_after_what_is_waiting_and_no_number_is_used_twice(clusterer: Clusterer,
                                                                            store: ClusterStore) -> None:
    cid = _record(clusterer, ["a", "b", "c"], old={"a"})
    clusterer.purge(CUTOFF)
    (first,) = outbox.pending(store)
    outbox.sent(store, [first.seq])  # the newest row deleted: SQLite must not hand its number out again
    clusterer.purge(T0 + timedelta(days=1))  # b and c too: the cluster ends
    (second,) = outbox.pending(store)
    assert second.seq > first.seq and second.topic == CLUSTER_PURGES and second.event_id == f"{cid}:5"


def test_the_agent_publishes_what_waits_for_its_cluster_before_a_later_revision(
        clusterer: Clusterer, store: ClusterStore, registry: CollectorRegistry) -> None:
    """The broker failing the outbox's send (faust wraps it as ProducerSendError) is an outage: retried, the list is
    not dead-lettered. Another cluster's waiting event is left to the next retention pass."""
    _record(clusterer, ["old0", "new1", "new2", "new3"], old={"old0"})
    _record(clusterer, ["o1", "o2", "o3"], old={"o1", "o2", "o3"}, seed=2)
    clusterer.purge(CUTOFF)
    (waiting,) = outbox.pending(store, keys={new_cluster_id("old0")})
    rt = _runtime(clusterer, registry)
    raw = RawMessage(rt.handler.topics.matches, 0, 7, b"k", unknown("new4", sighting(person(1), 4), "s4").to_bytes())
    sent, fail = list[Output](), [True]

    async def send(outputs: list[Output]) -> None:
        if fail and any(o.event_id == waiting.event_id for o in outputs):
            fail.clear()
            raise ProducerSendError("Error while sending: KafkaTimeoutError()")
        sent.extend(outputs)

    settings = Settings(stream={"retry_backoff_s": 0.001, "max_backoff_s": 0.002})
    asyncio.run(process(Runtime(settings, clusterer, rt.handler, rt.metrics, rt.stage), raw, send))
    assert [o.event_id for o in sent] == [waiting.event_id, waiting.event_id.replace(":5", ":6")]
    assert decode(ClusterEvent, sent[1].value).cause == "sightings"
    assert [e.topic for e in outbox.pending(store)] == [CLUSTER_PURGES]  # the other cluster's end
    assert registry.get_sample_value("rfr_cluster_dependency_retries_total", {"dependency": "kafka"}) == 1
    assert not registry.get_sample_value("rfr_cluster_deadletters_total", {"reason": "retry_exhausted"})


def test_migration_0002_goes_down_to_0001_with_clusters_held(clusterer: Clusterer, store: ClusterStore) -> None:
    _record(clusterer, ["a", "b", "c"], old=set())
    with at_revision(store.engine, MIGRATIONS, VERSION_TABLE, "0001", down=True) as conn:
        columns = [r[1] for r in conn.execute(text("PRAGMA table_info(clusters)"))]
        assert "cause" not in columns and conn.execute(text("SELECT count(*) FROM cluster_sightings")).scalar() == 3
