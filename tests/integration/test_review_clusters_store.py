"""Clusters of unknown faces in the review store on each backend (SQLite and a real PostgreSQL): recorded with
their audit entries in one transaction, merged, split, confirmed, searched when the gallery gains subjects, and
purged with their probes by retention; the audit log verifies and counts the clusters among its records."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from support.cluster_data import STRANGER, cluster_event, offender_cluster, sighting, unknown_probe
from support.review_data import ALICE, BOB, Env, enrolment, unit

from rfr.core.blobstore import FileBlobStore
from rfr.core.settings import MatchSettings, RetentionSettings
from rfr.review import tables as t
from rfr.review.audit_chain import AUDITED_RECORDS
from rfr.review.research import re_search_clusters
from rfr.review.retention import run_retention

MATCH = MatchSettings(threshold=0.6, top_k=5, watch_lists=["custody"])


def test_a_cluster_lives_through_merge_split_confirm_search_and_purge(env: Env, tmp_path: Path) -> None:
    a, b = offender_cluster(env, "cl-a"), offender_cluster(env, "cl-b", faces=2)
    unknown_probe(env, "sub_x:f0", STRANGER)
    assert env.store.record_cluster(a).new and env.store.record_cluster(b).new
    merged = cluster_event("cl-a", 2, [*a.sightings, *b.sightings, sighting("sub_x:f0", "store-9")],
                           merged_from=["cl-b"])
    assert env.store.record_cluster(merged).merged == ["cl-b"]
    assert not env.store.record_cluster(merged).new
    env.store.split_cluster("cl-a", BOB, ["sub_x:f0"], "not the same person")
    env.store.confirm_cluster("cl-a", ALICE, "same person at five stores")
    change = enrolment("gc-1", [("gf-1", "offender", unit((3, 1.0)))])
    assert re_search_clusters(env.store, change, MATCH) == 1
    assert re_search_clusters(env.store, change, MATCH) == 0
    view = env.store.cluster("cl-a", ALICE)
    assert view.status == "confirmed" and view.summary.sightings == 5
    assert view.searches[0].candidates[0]["subject_id"] == "offender"

    report = run_retention(env.store, FileBlobStore(tmp_path / "blobs"), RetentionSettings(no_candidate_days=31),
                           env.clock.advance(days=32))
    assert len(report.probes) == 6
    purged = env.store.cluster("cl-a", ALICE)
    assert purged.status == "purged" and all(s.left_reason is not None for s in purged.sightings)
    with env.store.engine.connect() as conn:
        templates = conn.execute(select(t.clusters.c.cluster_id, t.clusters.c.template)).all()
    assert {cid: tpl for cid, tpl in templates} == {"cl-a": None, "cl-b": None}
    actions = env.actions()
    assert actions.count("cluster_reported") == 3 and actions.count("cluster_purged") == 2
    assert env.audit.verify().ok


def test_a_wiped_log_is_named_against_the_clusters_recorded(env: Env) -> None:
    assert AUDITED_RECORDS["clusters"] == "cluster_reported"
    env.store.record_cluster(offender_cluster(env))
    assert env.audit.verify().ok
    with env.store.engine.begin() as conn:
        for table in ("audit_entries", "audit_checkpoints", "audit_head"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    assert env.audit.verify().problems == [
        "entry 1: missing; the log is empty but the review store holds 1 clusters, 3 searches, each written with an "
        "audit entry (the log was wiped or reset)"]
    env.store.record_cluster(cluster_event("cl-2", 1, [sighting("sub_cl-1_0:f0", "store-0")]))  # carries on
    assert "entry 1: the review store holds 2 clusters but the log only 1 'cluster_reported' entries (entries " \
        "deleted, the log restarted)" in env.audit.verify().problems
    env.store.engine.dispose()
