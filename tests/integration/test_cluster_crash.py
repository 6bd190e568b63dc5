"""SIGKILL the cluster service mid-stream: after a restart every unknown face is recorded exactly once, and each
person's last cluster event names all of that person's sightings (real Tansu broker, milvus-lite, SQLite)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from support.broker import Record, on, read_until
from support.unknowns import ClusterWorker, person, publish, sighting, unknown

from rfr.core.cluster_messages import ClusterEvent
from rfr.core.schemas import CandidateList, decode
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics

PEOPLE, EACH = 3, 8  # 24 unknown faces, each person at four stores


def _lists() -> list[CandidateList]:
    lists = [unknown(f"p{p}-{i}", sighting(person(10 + p), 100 * p + i), f"s{i % 4}", retailer=f"r{p % 2}")
             for i in range(EACH) for p in range(PEOPLE)]
    return lists


def _recorded(worker: ClusterWorker) -> int:
    with worker.store() as store:
        return store.counts()[1]


def test_sigkill_mid_stream_loses_no_sighting_and_counts_none_twice(kafka_settings: KafkaSettings, milvus_uri: str,
                                                                    tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    worker = ClusterWorker(kafka_settings, milvus_uri, tmp_path / "cluster")
    lists = _lists()
    with worker.running():
        def feed() -> None:  # a stream, not a burst: the kill lands with lists still arriving
            for i in range(0, len(lists), 2):
                publish(kafka_settings, list(lists[i:i + 2]))
                time.sleep(0.15)

        feeder = threading.Thread(target=feed)
        feeder.start()
        deadline = time.monotonic() + 90
        while worker.metric("rfr_cluster_sightings_total") < 6:
            assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
            time.sleep(0.05)
        worker.kill()
        killed_at = _recorded(worker)
        feeder.join(60)
        assert 0 < killed_at < len(lists), killed_at  # mid-stream
        worker.start()
        deadline = time.monotonic() + 120  # the dead member's session (6 s) must expire before the group rebalances
        while _recorded(worker) < len(lists):
            assert time.monotonic() < deadline, f"{_recorded(worker)} of {len(lists)} recorded after the restart"
            time.sleep(0.5)
        assert worker.stop() == 0

    with worker.store() as store, store.reading() as conn:
        clusters = store.clusters(conn, store.cluster_ids(conn))
        members = {cid: [m.face_id for m in store.members(conn, cid)] for cid in clusters}
    assert sorted(f for fs in members.values() for f in fs) == sorted(cl.face_id for cl in lists)
    assert sorted(sorted(fs) for fs in members.values()) == sorted(
        sorted(cl.face_id for cl in lists if cl.face_id.startswith(f"p{p}-")) for p in range(PEOPLE))
    for cid, cluster in clusters.items():  # no face was added to a cluster twice
        assert cluster.centroid.count == len(members[cid]) == EACH and cluster.revision == EACH

    def done(records: list[Record]) -> bool:
        events = [decode(ClusterEvent, r.value) for r in on(topics.clusters, records)]
        return {e.cluster_id for e in events if e.revision == EACH} == set(clusters)

    records = read_until(kafka_settings, [topics.clusters], done, timeout_s=60)
    last: dict[str, ClusterEvent] = {}
    for r in on(topics.clusters, records):
        event = decode(ClusterEvent, r.value)
        if event.revision >= last.get(event.cluster_id, event).revision:
            last[event.cluster_id] = event
    assert set(last) == set(clusters)
    for cid, event in last.items():
        assert event.revision == EACH and sorted(s.face_id for s in event.sightings) == sorted(members[cid])
