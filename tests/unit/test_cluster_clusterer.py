"""The cluster service's domain step (rfr/cluster/clusterer.py) on a real SQLite store and an exact in-memory index."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import Connection
from support.unknowns import MODEL, T0, FakeIndex, person, sighting, unknown

from rfr.cluster.clusterer import Clusterer, CohortMismatchError, Step, new_cluster_id, rule_of, wanted
from rfr.cluster.rule import ClusterRule, unit
from rfr.cluster.store import ClusterStore, Sighting, centroid_of
from rfr.core.settings import ClusterSettings
from rfr.gallery.scoring import Cohort

RULE = ClusterRule(link_threshold=0.7, merge_threshold=0.75, min_sightings=3, min_stores=2, neighbours=16)


@pytest.fixture
def store(cluster_store: ClusterStore) -> ClusterStore:
    return cluster_store


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex()


@pytest.fixture
def clusterer(store: ClusterStore, index: FakeIndex) -> Clusterer:
    return Clusterer(store, index, RULE, clock=lambda: T0)


def test_three_sightings_at_two_stores_make_one_event_naming_them(clusterer: Clusterer) -> None:
    p = person(1)
    first = clusterer.record(unknown("f1", sighting(p, 1), "s1"))
    second = clusterer.record(unknown("f2", sighting(p, 2), "s1"))
    assert first.event is None and second.event is None and second.cluster_id == first.cluster_id
    assert first.cluster_id == new_cluster_id("f1")
    third = clusterer.record(unknown("f3", sighting(p, 3), "s2"))
    event = third.event
    assert event is not None and third.size == 3
    assert event.event_id == f"{first.cluster_id}:3" and event.revision == 3 and event.model_id == MODEL
    assert sorted(s.face_id for s in event.sightings) == ["f1", "f2", "f3"]
    assert event.stores == {"r1/s1", "r1/s2"}
    fused = unit(sighting(p, 1) + sighting(p, 2) + sighting(p, 3))
    assert np.allclose(event.vector, fused, atol=1e-5)
    assert all(s.similarity > 0.9 for s in event.sightings)
    assert event.rule.min_sightings == 3 and event.rule.link_threshold == RULE.link_threshold
    assert event.rule.linkage == RULE.linkage == "centroid"


def test_three_sightings_at_one_store_are_not_reported(clusterer: Clusterer) -> None:
    p = person(2)
    steps = [clusterer.record(unknown(f"f{i}", sighting(p, i), "s1")) for i in range(4)]
    assert all(s.event is None for s in steps) and steps[-1].size == 4


def test_strangers_stay_apart(clusterer: Clusterer) -> None:
    steps = [clusterer.record(unknown(f"x{i}", person(100 + i), f"s{i}")) for i in range(6)]
    assert len({s.cluster_id for s in steps}) == 6 and all(s.event is None for s in steps)


def test_a_redelivered_list_changes_nothing_and_repeats_the_event(clusterer: Clusterer, store: ClusterStore,
                                                                   index: FakeIndex) -> None:
    p = person(3)
    lists = [unknown(f"f{i}", sighting(p, i), f"s{i % 2}") for i in range(3)]
    events = [clusterer.record(cl).event for cl in lists]
    assert events[2] is not None
    counts, searches = store.counts(), index.searches
    again = clusterer.record(lists[2])
    assert not again.recorded and again.event == events[2]
    assert store.counts() == counts == (1, 3) and index.searches == searches  # no lookup, no write
    early = clusterer.record(lists[0])  # the cluster moved on: its current state, which names the face
    assert early.event == events[2]


def test_a_growing_cluster_is_reported_again_with_a_higher_revision(clusterer: Clusterer) -> None:
    p = person(4)
    for i in range(3):
        clusterer.record(unknown(f"f{i}", sighting(p, i), f"s{i % 2}"))
    step = clusterer.record(unknown("f3", sighting(p, 3), "s9", retailer="r2"))
    assert step.event is not None and step.event.revision == 4 and len(step.event.sightings) == 4
    assert step.event.retailers == {"r1", "r2"}


def test_a_bridging_face_merges_two_clusters(store: ClusterStore, index: FakeIndex) -> None:
    """Two faces 0.75 alike (below the 0.8 link threshold: two clusters); a face between them (0.935 to each)
    joins one, and the grown fused template (0.857 to the other) passes the 0.85 merge threshold."""
    rule = ClusterRule(link_threshold=0.8, merge_threshold=0.85, min_sightings=3, min_stores=2)
    clusterer = Clusterer(store, index, rule, clock=lambda: T0)
    a = np.zeros(64, np.float32)
    a[0] = 1.0
    b = unit(np.array([0.75, np.sqrt(1 - 0.75**2)] + [0.0] * 62, np.float32))
    ca = clusterer.record(unknown("a", a, "s1")).cluster_id
    cb = clusterer.record(unknown("b", b, "s2")).cluster_id
    assert ca != cb
    mid = unit(a + b)  # 0.935 to each
    step = clusterer.record(unknown("m", mid, "s3"))
    assert step.merged == 1 and step.size == 3 and step.event is not None
    absorbed = cb if step.cluster_id == ca else ca
    assert step.event.merged_from == [absorbed] and len(step.event.sightings) == 3
    with store.reading() as conn:
        assert store.cluster_ids(conn) == [step.cluster_id]
        assert {m.face_id for m in store.members(conn, step.cluster_id)} == {"a", "b", "m"}


def test_an_index_failure_records_nothing_and_the_retry_records_once(clusterer: Clusterer, store: ClusterStore,
                                                                     index: FakeIndex) -> None:
    index.fail_upsert = ConnectionError("milvus down")
    cl = unknown("f1", person(5), "s1")
    with pytest.raises(ConnectionError):
        clusterer.record(cl)
    assert store.counts() == (0, 0)
    assert clusterer.record(cl).recorded and store.counts() == (1, 1)


def test_an_index_row_without_a_sighting_is_ignored_and_reused(clusterer: Clusterer, store: ClusterStore,
                                                               index: FakeIndex) -> None:
    """A crash between the index upsert and the SQL commit leaves an orphan row: no cluster is built on it."""
    p = person(6)
    index.upsert(MODEL, [("ghost", sighting(p, 0), T0)])
    step = clusterer.record(unknown("f1", sighting(p, 1), "s1"))
    assert step.size == 1 and store.counts() == (1, 1)
    assert clusterer.record(unknown("ghost", sighting(p, 0), "s2")).size == 2  # the redelivery reuses its row


def test_models_never_mix(clusterer: Clusterer) -> None:
    p = person(7)
    one = clusterer.record(unknown("f1", sighting(p, 1), "s1"))
    other = clusterer.record(unknown("f2", sighting(p, 2), "s2", model_id="other-model"))
    assert one.cluster_id != other.cluster_id and other.size == 1


def test_a_zero_template_is_refused(clusterer: Clusterer) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        clusterer.record(unknown("z", np.zeros(64, np.float32)))


def test_retention_purges_old_sightings_from_store_and_index(store: ClusterStore, index: FakeIndex) -> None:
    now = [T0]
    clusterer = Clusterer(store, index, RULE, clock=lambda: now[0])
    p = person(8)
    old = [unknown(f"old{i}", sighting(p, i), f"s{i}", searched_at=T0 - timedelta(days=40)) for i in range(2)]
    new = [unknown(f"new{i}", sighting(p, 10 + i), f"s{i}") for i in range(2)]
    for cl in old + new:
        cid = clusterer.record(cl).cluster_id
    stranger = clusterer.record(unknown("lone", person(9), "s5", searched_at=T0 - timedelta(days=40)))
    index.upsert(MODEL, [("orphan", person(10), T0 - timedelta(days=40))])
    report = clusterer.purge(T0 - timedelta(days=31))
    assert (report.sightings, report.clusters_deleted, report.clusters_shrunk) == (3, 1, 1)
    assert set(index.rows[MODEL]) == {"new0", "new1"}  # the orphan row too
    with store.reading() as conn:
        assert store.cluster_ids(conn) == [cid] and stranger.cluster_id != cid
        assert [m.face_id for m in store.members(conn, cid)] == ["new0", "new1"]
        (cluster,) = store.clusters(conn, [cid]).values()
    assert cluster.centroid.count == 2 and cluster.revision == 5
    assert np.allclose(cluster.centroid.template, unit(sighting(p, 10) + sighting(p, 11)), atol=1e-5)
    assert clusterer.purge(T0 - timedelta(days=31)) == type(report)()  # idempotent


def test_repair_re_adds_what_the_index_lost(clusterer: Clusterer, index: FakeIndex) -> None:
    for i in range(3):
        clusterer.record(unknown(f"f{i}", person(20 + i), "s1"))
    index.delete(MODEL, ["f0", "f2"])
    assert clusterer.repair_index(batch=2) == 2 and set(index.rows[MODEL]) == {"f0", "f1", "f2"}
    assert clusterer.repair_index() == 0


def test_the_filter_keeps_first_searches_without_candidates() -> None:
    base = unknown("f", person(1))
    assert wanted(base)
    assert not wanted(base.model_copy(update={"outcome": "candidates"}))
    assert not wanted(base.model_copy(update={"trigger": "re_search"}))
    gated = base.model_copy(update={"low_quality": True})
    assert not wanted(gated) and wanted(gated, include_low_quality=True)


def test_rule_of_settings() -> None:
    rule = rule_of(ClusterSettings(link_threshold=0.6, merge_threshold=0.65, min_sightings=4, min_stores=3,
                                   neighbours=8))
    assert rule == ClusterRule(0.6, 0.65, 4, 3, 8)
    assert rule_of(ClusterSettings(linkage="average")).linkage == "average"


def test_retention_rebuilds_the_cluster_a_merge_moved_an_expired_face_into(store: ClusterStore, index: FakeIndex,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent merges the expired face's cluster into another between the pass reading the batch and deleting
    it: the cluster the face is in by then is the one rebuilt (its sum and count lose the face)."""
    rule = ClusterRule(link_threshold=0.8, merge_threshold=0.84, min_sightings=3, min_stores=2)
    clusterer = Clusterer(store, index, rule, clock=lambda: T0)
    a = np.zeros(64, np.float32)
    a[0] = 1.0
    b = unit(np.array([0.75, np.sqrt(1 - 0.75**2)] + [0.0] * 62, np.float32))
    clusterer.record(unknown("a", a, "s1", searched_at=T0 - timedelta(days=40)))
    cb = clusterer.record(unknown("b", b, "s2")).cluster_id
    read, merges = store.expired, list[Step]()

    def expired_then_merged(conn: Connection, before: datetime, limit: int) -> list[Sighting]:
        due = read(conn, before, limit)
        conn.rollback()  # SQLite begins every transaction IMMEDIATE: let the agent write
        if due and not merges:  # the bridge joins b's cluster (0.94 vs 0.93) and absorbs a's (0.85)
            merges.append(clusterer.record(unknown("m", unit(a + 1.1 * b), "s3")))
        return due

    monkeypatch.setattr(store, "expired", expired_then_merged)
    report = clusterer.purge(T0 - timedelta(days=31))
    assert merges[0].cluster_id == cb and merges[0].merged == 1
    assert (report.sightings, report.clusters_deleted, report.clusters_shrunk) == (1, 0, 1)
    with store.reading() as conn:
        assert store.cluster_ids(conn) == [cb]
        left = store.members(conn, cb)
        (cluster,) = store.clusters(conn, [cb]).values()
    assert [m.face_id for m in left] == ["b", "m"] and cluster.revision == 3
    assert cluster.centroid.count == 2
    assert np.allclose(cluster.centroid.total, centroid_of(left).total, atol=1e-6)


def test_a_list_past_retention_is_not_recorded(store: ClusterStore, index: FakeIndex) -> None:
    """A replay of lists older than the retention policy must not bring back the faces it purged."""
    clusterer = Clusterer(store, index, RULE, clock=lambda: T0, retention=timedelta(days=31))
    step = clusterer.record(unknown("old", person(4), searched_at=T0 - timedelta(days=32)))
    assert step.skipped == "expired" and not step.recorded and step.event is None
    assert store.counts() == (0, 0) and index.rows == {}
    kept = clusterer.record(unknown("recent", person(4), searched_at=T0 - timedelta(days=30)))
    assert kept.recorded and kept.skipped is None and store.counts() == (1, 1)


def _cohort_file(tmp_path: Path, model_id: str = MODEL) -> Path:
    vectors = np.stack([person(900 + i) for i in range(12)])
    return Cohort(vectors, tuple(f"c{i}" for i in range(12)), model_id).save(tmp_path / "cohort.npz")


def test_rule_of_settings_reads_the_hubness_cohort(tmp_path: Path) -> None:
    path = _cohort_file(tmp_path)
    rule = rule_of(ClusterSettings(link_threshold=0.2, merge_threshold=0.25, hubness_k=5, cohort_file=path))
    assert rule.hubness is not None and rule.hubness.k == 5 and rule.hubness.model_id == MODEL
    assert len(rule.hubness.cohort) == 12
    assert rule.hubness.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rule_of(ClusterSettings()).hubness is None
    with pytest.raises(ValueError, match="k=13"):
        rule_of(ClusterSettings(hubness_k=13, cohort_file=path))


@pytest.mark.parametrize("fields", [{"hubness_k": 10}, {"cohort_file": "cohort.npz"}])
def test_hubness_k_and_cohort_file_go_together(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="go together"):
        ClusterSettings(**fields)  # type: ignore[arg-type]


def test_a_hubness_corrected_rule_names_its_cohort_and_refuses_another_models_face(
        store: ClusterStore, index: FakeIndex, tmp_path: Path) -> None:
    rule = rule_of(ClusterSettings(link_threshold=0.3, merge_threshold=0.35, hubness_k=5,
                                   cohort_file=_cohort_file(tmp_path)))
    clusterer = Clusterer(store, index, rule, clock=lambda: T0)
    p = person(7)
    steps = [clusterer.record(unknown(f"f{i}", sighting(p, i), f"s{i % 2}")) for i in range(3)]
    event = steps[-1].event
    assert event is not None and len(event.sightings) == 3
    assert event.rule.hubness_k == 5 and event.rule.cohort_sha256 == rule.hubness.sha256  # type: ignore[union-attr]
    with pytest.raises(CohortMismatchError, match="other-model"):
        clusterer.record(unknown("g1", sighting(p, 9), "s1", model_id="other-model"))
    assert store.counts() == (1, 3) and index.searches == 3  # nothing looked up or recorded


def test_a_cohort_file_that_is_not_one_or_of_another_model_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a cohort")
    with pytest.raises(ValueError, match=r"cluster\.cohort_file .*bad\.npz"):
        rule_of(ClusterSettings(hubness_k=5, cohort_file=bad))
    with pytest.raises(ValueError, match="not 'facenet-other'"):
        rule_of(ClusterSettings(hubness_k=5, cohort_file=_cohort_file(tmp_path)), "facenet-other")


def test_a_face_of_another_dimension_than_the_cohort_is_refused_before_any_write(
        store: ClusterStore, index: FakeIndex, tmp_path: Path) -> None:
    path = Cohort(np.stack([unit(np.arange(1.0, 9.0) + i) for i in range(6)]), tuple("abcdef"), MODEL).save(
        tmp_path / "small.npz")
    clusterer = Clusterer(store, index, rule_of(ClusterSettings(hubness_k=3, cohort_file=path)), clock=lambda: T0)
    with pytest.raises(CohortMismatchError, match="8\\)"):
        clusterer.record(unknown("f1", person(1), "s1"))
    assert store.counts() == (0, 0) and index.searches == 0
