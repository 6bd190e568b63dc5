"""The cluster service tells readers what retention did, on a real Tansu broker, milvus-lite and SQLite: a reported
cluster that loses a sighting is published again (cause ``retention``), one that loses them all gets a ClusterPurged.
Retention is set to seconds so that the faces age while the test watches."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from support.broker import Record, on, read_until
from support.unknowns import ClusterWorker, person, publish, sighting, unknown

from rfr.cluster import outbox
from rfr.core.cluster_messages import ClusterEvent, ClusterPurged
from rfr.core.schemas import decode, utcnow
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics

KEEP_S = 50.0


def test_retention_shrinks_then_ends_a_reported_cluster_and_readers_are_told(
        kafka_settings: KafkaSettings, milvus_uri: str, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    worker = ClusterWorker(kafka_settings, milvus_uri, tmp_path / "cluster", extra={
        "RFR_RETENTION__NO_CANDIDATE_DAYS": str(KEEP_S / 86_400), "RFR_RETENTION__INTERVAL_S": "1",
        "RFR_KAFKA__RETENTION_MS": "5000"})  # topics may not outlive the policy (the settings check)
    with worker.running():
        publish(kafka_settings, [unknown("warm-up", person(70), "s9", searched_at=utcnow())])
        deadline = time.monotonic() + 60
        while worker.metric("rfr_cluster_messages_consumed_total") < 1:
            assert time.monotonic() < deadline, "the worker consumed nothing"
            time.sleep(0.2)
        now, p = utcnow(), person(71)
        old = now - timedelta(seconds=KEEP_S - 25)  # ages out about 25 s from now, the other two about 50 s
        publish(kafka_settings, [unknown("f1", sighting(p, 1), "s1", searched_at=old),
                                 unknown("f2", sighting(p, 2), "s1", searched_at=now),
                                 unknown("f3", sighting(p, 3), "s2", searched_at=now)])

        def done(records: list[Record]) -> bool:
            return len(on(topics.cluster_purges, records)) >= 1

        records = read_until(kafka_settings, [topics.clusters, topics.cluster_purges], done, timeout_s=120)
        events = [decode(ClusterEvent, r.value) for r in on(topics.clusters, records)]
        (purge_record,) = on(topics.cluster_purges, records)
        purged = decode(ClusterPurged, purge_record.value)
        assert [(e.revision, e.cause, sorted(s.face_id for s in e.sightings)) for e in events] == [
            (3, "sightings", ["f1", "f2", "f3"]), (4, "retention", ["f2", "f3"])]
        cid = events[0].cluster_id
        assert {e.cluster_id for e in events} == {cid} and purged.cluster_id == cid
        assert (purged.revision, purged.sightings_purged, purged.event_id) == (5, 2, f"{cid}:5")
        assert purge_record.key == cid.encode() and purge_record.headers["rfr-event-id"] == purged.event_id
        assert on(topics.clusters, records)[1].headers["rfr-event-id"] == f"{cid}:4"
        assert worker.metric("rfr_cluster_retention_events_total") == 2
        assert worker.stop() == 0
    with worker.store() as store:
        assert store.counts() == (0, 0) and outbox.pending(store) == []  # the warm-up face aged out too
