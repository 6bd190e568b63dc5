"""The cluster service (services/cluster/, faust-streaming) on a real Tansu broker, milvus-lite and SQLite; and the
cluster store on both database backends."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from support.broker import Record, on, read_until
from support.stack import free_stack_settings
from support.unknowns import MODEL, T0, ClusterWorker, person, publish, sighting, unknown

from rfr.cluster import outbox
from rfr.cluster.clusterer import Clusterer
from rfr.cluster.index import ClusterIndex
from rfr.cluster.rule import ClusterRule, unit
from rfr.cluster.store import ClusterStore
from rfr.core.cluster_messages import ClusterEvent, ClusterPurged
from rfr.core.schemas import DeadLetter, decode
from rfr.core.settings import EmbedSettings, KafkaSettings, MilvusSettings
from rfr.core.topics import CLUSTER_PURGES, Topics
from rfr.gallery.scoring import Cohort
from rfr.models import facenet_model_id
from rfr.tools import procs, stack, status


def _wait(what: str, check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_unknowns_at_two_stores_make_one_event_others_are_ignored_poison_is_dead_lettered(
        kafka_settings: KafkaSettings, milvus_uri: str, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    worker = ClusterWorker(kafka_settings, milvus_uri, tmp_path / "cluster")
    with worker.running():
        p = person(1)
        seen = [unknown("f1", sighting(p, 1), "s1"), unknown("f2", sighting(p, 2), "s1"),
                unknown("f3", sighting(p, 3), "s2")]
        ignored = [unknown("g1", sighting(p, 4), "s3", trigger="re_search", re_search_of="gc-1"),
                   unknown("g2", sighting(p, 5), "s3", low_quality=True),
                   unknown("x1", person(50), "s1"), unknown("x2", person(51), "s2")]
        poison = [b"not json at all", json.dumps({"schema_version": 99, "face_id": "f9"}).encode()]
        publish(kafka_settings, [*ignored[:2], poison[0], seen[0], seen[1], poison[1], ignored[2], seen[2],
                                 ignored[3]])

        def done(records: list[Record]) -> bool:
            return len(on(topics.clusters, records)) >= 1 and len(on(topics.deadletter, records)) >= 2

        records = read_until(kafka_settings, [topics.clusters, topics.deadletter], done, timeout_s=90)
        _wait("every list handled", lambda: worker.metric("rfr_cluster_messages_consumed_total") >= 9)
        time.sleep(1.0)  # a second event, if any were wrongly made, would be produced by now
        records = read_until(kafka_settings, [topics.clusters, topics.deadletter], done, timeout_s=30)
        (record,) = on(topics.clusters, records)
        event = decode(ClusterEvent, record.value)
        assert sorted(s.face_id for s in event.sightings) == ["f1", "f2", "f3"]
        assert event.stores == {"r1/s1", "r1/s2"} and event.revision == 3 and event.model_id == MODEL
        assert record.key == event.cluster_id.encode() and record.headers["rfr-event-id"] == event.event_id
        fused = unit(sighting(p, 1) + sighting(p, 2) + sighting(p, 3))
        assert float(event.vector @ fused) > 0.9999
        letters = [decode(DeadLetter, r.value) for r in on(topics.deadletter, records)]
        assert sorted(r.headers["rfr-reason"] for r in on(topics.deadletter, records)) == [
            "invalid_message", "unsupported_schema_version"]
        assert {letter.payload for letter in letters} == set(poison)
        assert all(letter.service == "cluster" and letter.source_topic == topics.matches for letter in letters)
        assert worker.metric("rfr_cluster_sightings_total") == 5  # f1-f3 and the two strangers
        assert worker.metric("rfr_cluster_lists_skipped_total") == 2
        assert worker.metric("rfr_cluster_reported_total") == 1
        assert worker.stop() == 0
    with worker.store() as store:
        assert store.counts() == (3, 5)  # one cluster of three, two strangers alone


def test_the_service_runs_the_hubness_corrected_rule_and_dead_letters_another_models_face(
        kafka_settings: KafkaSettings, milvus_uri: str, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    served = facenet_model_id(EmbedSettings().model)  # the service checks its cohort against embed.model
    cohort = Cohort(np.stack([person(900 + i) for i in range(12)]), tuple(f"c{i}" for i in range(12)),
                    served).save(tmp_path / "cohort.npz")
    worker = ClusterWorker(kafka_settings, milvus_uri, tmp_path / "cluster", extra={
        "RFR_CLUSTER__HUBNESS_K": "5", "RFR_CLUSTER__COHORT_FILE": str(cohort),
        "RFR_CLUSTER__LINK_THRESHOLD": "0.3", "RFR_CLUSTER__MERGE_THRESHOLD": "0.35"})
    with worker.running():
        p = person(2)
        publish(kafka_settings, [unknown("h1", sighting(p, 1), "s1", model_id=served),
                                 unknown("h2", sighting(p, 2), "s1", model_id=served),
                                 unknown("o1", sighting(p, 3), "s2", model_id="other-model"),
                                 unknown("h3", sighting(p, 4), "s2", model_id=served)])

        def done(records: list[Record]) -> bool:
            return len(on(topics.clusters, records)) >= 1 and len(on(topics.deadletter, records)) >= 1

        records = read_until(kafka_settings, [topics.clusters, topics.deadletter], done, timeout_s=90)
        (record,) = on(topics.clusters, records)
        event = decode(ClusterEvent, record.value)
        assert sorted(s.face_id for s in event.sightings) == ["h1", "h2", "h3"]
        assert event.rule.hubness_k == 5 and event.rule.link_threshold == 0.3
        assert event.rule.cohort_sha256 == hashlib.sha256(cohort.read_bytes()).hexdigest()
        (letter,) = on(topics.deadletter, records)
        assert letter.headers["rfr-reason"] == "model_mismatch"
        assert decode(DeadLetter, letter.value).payload == unknown(
            "o1", sighting(p, 3), "s2", model_id="other-model").to_bytes()
        assert worker.stop() == 0


def test_the_service_refuses_a_bad_cohort_file_before_it_starts_anything(tmp_path: Path) -> None:
    bad = tmp_path / "cohort.npz"
    bad.write_bytes(b"not a cohort")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFR_")} | {
        "RFR_CLUSTER__HUBNESS_K": "5", "RFR_CLUSTER__COHORT_FILE": str(bad), "RFR_STACK__STATE_DIR": str(tmp_path),
        "RFR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{procs.free_port()}"}  # nothing listens: never reached
    done = subprocess.run([sys.executable, "-m", "services.cluster"], env=env, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cluster.cohort_file {bad}".encode() in done.stdout + done.stderr
    assert not (tmp_path / "cluster.db").exists()


@pytest.fixture
def index(milvus_uri: str) -> ClusterIndex:
    import uuid

    idx = ClusterIndex(MilvusSettings(uri=milvus_uri), f"u{uuid.uuid4().hex[:10]}")
    yield idx
    idx.drop(MODEL)
    idx.close()


def test_the_milvus_index_searches_deletes_and_expires(index: ClusterIndex) -> None:
    p = person(2)
    rows = [(f"f{i}", sighting(p, i), T0 + timedelta(hours=i)) for i in range(3)]
    index.upsert(MODEL, [*rows, ("x", person(3), T0)])
    index.upsert(MODEL, rows[:1])  # idempotent
    hits = index.search(MODEL, sighting(p, 9), 3)
    assert sorted(f for f, _ in hits) == ["f0", "f1", "f2"] and all(s > 0.85 for _, s in hits)
    assert index.present(MODEL, ["f0", "x", "nope"]) == {"f0", "x"}
    index.delete(MODEL, ["f0"])
    index.delete_before(MODEL, T0 + timedelta(minutes=30))  # x, searched at T0
    assert index.present(MODEL, ["f0", "f1", "f2", "x"]) == {"f1", "f2"}
    assert index.search("never-seen-model", p, 3) == []
    assert index.collection(MODEL).startswith(index.prefix + "__")


def test_the_store_on_each_backend_with_the_real_index(database_url: str, index: ClusterIndex) -> None:
    store = ClusterStore.open(database_url)
    try:
        clusterer = Clusterer(store, index, ClusterRule(0.7, 0.75), clock=lambda: T0)
        p = person(4)
        steps = [clusterer.record(unknown(f"f{i}", sighting(p, i), f"s{i % 2}")) for i in range(4)]
        assert steps[2].event is not None and steps[3].event is not None
        assert [s.face_id for s in steps[3].event.sightings] == ["f0", "f1", "f2", "f3"]
        assert not clusterer.record(unknown("f1", sighting(p, 1), "s1")).recorded
        assert store.counts() == (1, 4)
        assert clusterer.purge(T0 + timedelta(days=1)).sightings == 4
        assert store.counts() == (0, 0) and index.present(MODEL, ["f0", "f1", "f2", "f3"]) == set()
        (waiting,) = outbox.pending(store)  # the reported cluster's end, for its readers
        assert waiting.topic == CLUSTER_PURGES and decode(ClusterPurged, waiting.payload).sightings_purged == 4
        outbox.sent(store, [waiting.seq])
        assert outbox.pending(store) == []
        assert np.isfinite(steps[3].event.vector).all()
    finally:
        store.close()


def test_rfr_up_starts_the_cluster_service_status_shows_it_down_stops_it(tmp_path: Path) -> None:
    """`rfr up`'s own start path (stack.up, only this service beside the broker and milvus-lite), then `rfr status`
    and `rfr down`: it comes up healthy, answers its metrics, and exits on SIGTERM without being killed."""
    settings = free_stack_settings(tmp_path / "state", tmp_path / "models")
    started = stack.up(settings, services=("cluster",), ready_timeout_s=120)
    try:
        assert [i.name for i in started] == ["broker", "milvus", "cluster"]
        _wait("the default store, SQLite under the state dir", (tmp_path / "state" / "cluster.db").exists)
        _wait("the stage metrics", lambda: _cluster_status(started).consumed is not None)
        cluster = _cluster_status(started)
        assert cluster.alive and cluster.healthy and cluster.consumed == 0
        assert cluster.port == settings.metrics.cluster_port
    finally:
        infos = procs.StateFile(tmp_path / "state").load()
        killed = procs.stop(next(i for i in infos if i.name == "cluster"))
        stopped = stack.down(settings)
    assert not killed, "the cluster service ignored SIGTERM"
    assert set(stopped) == {"broker", "milvus"}


def _cluster_status(infos: list[procs.ProcInfo]) -> status.ServiceStatus:
    (found,) = [s for s in status.collect(infos, window_s=0.2) if s.name == "cluster"]
    return found
