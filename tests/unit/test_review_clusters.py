"""Clusters of unknown faces in the review store (a real SQLite store and audit log, synthetic unit templates):
recorded from ClusterEvents (latest revision wins, redelivery changes nothing, merges retire), reviewed (confirm,
dismiss, split: each audited with actor, role and reason), purged with their probes by retention, and searched
against the custody gallery when it gains subjects (confirmed clusters only) and on demand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cluster_data import OFFENDER, RULE, STRANGER, cluster_event, offender_cluster, sighting, unknown_probe
from support.review_data import ALICE, AUDREY, BOB, MODEL, T0, Env, enrolment, open_store, unit

from rfr.core.blobstore import FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.schemas import template_vector
from rfr.core.settings import MatchSettings, RetentionSettings
from rfr.gallery.base import GalleryFace
from rfr.gallery.memory import InMemoryGallery
from rfr.review import workflow as wf
from rfr.review.clusters import ClusterNotFound, ClusterWrongState
from rfr.review.research import re_search_clusters, search_cluster
from rfr.review.retention import run_retention
from rfr.review.store import SYSTEM_ACTOR

MATCH = MatchSettings(threshold=0.6, top_k=5, watch_lists=["custody", "wanted"])
POLICY = RetentionSettings(no_candidate_days=31)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return open_store(sqlite_url(tmp_path / "review.db"))


def _entries(env: Env, action: str) -> list[dict[str, Any]]:
    return [e for e in env.audit.export(None, None) if e["action"] == action]


def _live(env: Env, cluster_id: str) -> list[str]:
    return [s.face_id for s in env.store.cluster(cluster_id, ALICE).sightings if s.left_reason is None]


# --- recording --------------------------------------------------------------------------------------------------
def test_latest_revision_wins_and_a_redelivered_or_older_one_changes_nothing(env: Env) -> None:
    first = offender_cluster(env)
    done = env.store.record_cluster(first)
    assert done.new and done.status == "pending" and len(done.added) == 3
    assert env.store.record_cluster(first).new is False  # redelivered
    unknown_probe(env, "sub_new:f0")
    grown = cluster_event("cl-1", 2, [*first.sightings, sighting("sub_new:f0", "store-9", retailer="shop-2")],
                          minutes=30)
    assert env.store.record_cluster(grown).added == ["sub_new:f0"]
    assert env.store.record_cluster(first).new is False  # an older revision arriving late
    view = env.store.cluster("cl-1", ALICE)
    assert view.summary.revision == 2 and view.summary.sightings == 4
    assert view.summary.stores == ["shop-1/store-0", "shop-1/store-1", "shop-1/store-2", "shop-2/store-9"]
    assert view.summary.retailers == ["shop-1", "shop-2"] and view.status == "pending"
    assert {s.probe for s in view.sightings} == {"kept"}
    reported = _entries(env, "cluster_reported")
    assert [e["details"]["revision"] for e in reported] == [1, 2]
    assert reported[1]["details"]["added"] == ["sub_new:f0"]
    assert reported[1]["actor"] == SYSTEM_ACTOR


def test_a_sighting_whose_probe_the_store_lacks_is_shown_as_missing(env: Env) -> None:
    event = offender_cluster(env)
    env.store.record_cluster(cluster_event("cl-1", 1, [*event.sightings, sighting("sub_elsewhere:f0", "store-7")]))
    probes = {s.face_id: s.probe for s in env.store.cluster("cl-1", ALICE).sightings}
    assert probes["sub_elsewhere:f0"] == "missing" and list(probes.values()).count("kept") == 3


def test_a_merge_retires_the_absorbed_cluster(env: Env) -> None:
    a, b = offender_cluster(env, "cl-a"), offender_cluster(env, "cl-b")
    env.store.record_cluster(a)
    env.store.record_cluster(b)
    env.store.confirm_cluster("cl-b", ALICE, "same face, three stores")
    merged = env.store.record_cluster(cluster_event("cl-a", 2, [*a.sightings, *b.sightings], merged_from=["cl-b"]))
    assert merged.merged == ["cl-b"] and merged.status == "pending"
    gone = env.store.cluster("cl-b", ALICE)
    assert gone.status == "merged" and gone.merged_into == "cl-a"
    assert env.store.cluster("cl-a", ALICE).absorbed == [("cl-b", "confirmed")]
    with pytest.raises(ClusterWrongState):
        env.store.confirm_cluster("cl-b", ALICE, "late")
    assert _entries(env, "cluster_reported")[-1]["details"]["merged_from"] == ["cl-b"]
    assert env.store.clusters()[0].cluster_id == "cl-a"  # pending first


def test_a_merge_overtaken_by_a_later_revision_still_retires_the_absorbed_cluster(env: Env) -> None:
    a, b = offender_cluster(env, "cl-a"), offender_cluster(env, "cl-b")
    env.store.record_cluster(a)
    env.store.record_cluster(b)
    unknown_probe(env, "sub_y:f0")
    both = [*a.sightings, *b.sightings]
    env.store.record_cluster(cluster_event("cl-a", 3, [*both, sighting("sub_y:f0", "store-7")]))  # overtook 2
    late = cluster_event("cl-a", 2, both, merged_from=["cl-b"])
    done = env.store.record_cluster(late)
    assert not done.new and done.merged == ["cl-b"]
    gone = env.store.cluster("cl-b", ALICE)
    assert gone.status == "merged" and gone.merged_into == "cl-a"
    view = env.store.cluster("cl-a", ALICE)
    assert view.summary.revision == 3 and view.summary.sightings == 7  # the late sightings changed nothing
    assert env.store.record_cluster(late).merged == []  # redelivered: retired once, audited once
    [entry] = [e for e in _entries(env, "cluster_reported") if e["details"].get("late")]
    assert entry["details"]["merged_from"] == ["cl-b"] and entry["details"]["revision"] == 2
    assert env.audit.verify().ok


def test_a_merge_before_the_absorbed_clusters_own_event_keeps_it_merged(env: Env) -> None:
    a, b = offender_cluster(env, "cl-a"), offender_cluster(env, "cl-b")
    env.store.record_cluster(a)
    merged = env.store.record_cluster(cluster_event("cl-a", 2, [*a.sightings, *b.sightings],
                                                    merged_from=["cl-b", "cl-c"]))
    assert merged.merged == ["cl-b", "cl-c"]
    assert env.audit.verify().ok  # each cluster row has its cluster_reported entry
    late = env.store.record_cluster(b)  # cl-b's own first event, from a lagging partition
    assert late.status == "merged"
    gone = env.store.cluster("cl-b", ALICE)
    assert gone.status == "merged" and gone.merged_into == "cl-a"
    env.store.record_cluster(cluster_event("cl-b", 2, b.sightings))
    assert env.store.cluster("cl-b", ALICE).status == "merged"  # a later one does not re-open it either
    assert env.store.cluster_counts()["pending"] == 1
    assert [c.cluster_id for c in env.store.clusters(status="pending")] == ["cl-a"]
    with pytest.raises(ClusterWrongState):
        env.store.confirm_cluster("cl-c", ALICE, "never seen")
    assert env.audit.verify().ok


# --- reviewers --------------------------------------------------------------------------------------------------
def test_split_takes_the_ticked_sightings_out_for_good_and_is_audited(env: Env) -> None:
    event = offender_cluster(env, faces=3)
    unknown_probe(env, "sub_other:f0", STRANGER)
    env.store.record_cluster(cluster_event("cl-1", 1, [*event.sightings, sighting("sub_other:f0", "store-5")],
                                           template=unit((3, 1.0), (9, 0.5))))
    before = template_vector(_template(env, "cl-1"))
    view = env.store.split_cluster("cl-1", BOB, ["sub_other:f0"], "different jaw and hairline")
    assert view.status == "pending" and "sub_other:f0" not in _live(env, "cl-1")
    after = template_vector(_template(env, "cl-1"))
    assert float(after @ OFFENDER) > float(before @ OFFENDER) > 0  # made again without the stranger
    [entry] = _entries(env, "cluster_split")
    assert (entry["actor"], entry["role"], entry["reason"]) == ("bob", "reviewer", "different jaw and hairline")
    assert entry["details"]["split_out"] == ["sub_other:f0"]
    env.store.record_cluster(cluster_event("cl-1", 2, [*event.sightings, sighting("sub_other:f0", "store-5")]))
    assert "sub_other:f0" not in _live(env, "cl-1")  # the service does not know: the split holds
    with pytest.raises(wf.DecisionRefused) as refused:
        env.store.split_cluster("cl-1", BOB, _live(env, "cl-1"), "all of them")
    assert refused.value.reason == "nothing_left"
    with pytest.raises(wf.DecisionRefused):
        env.store.split_cluster("cl-1", BOB, ["sub_other:f0"], "again")  # not in it any more


@pytest.mark.parametrize("decided", ["confirmed", "dismissed"])
def test_a_split_clears_the_decision_so_a_later_revision_does_not_restore_it(env: Env, decided: str) -> None:
    event = offender_cluster(env, faces=3)
    unknown_probe(env, "sub_other:f0", STRANGER)
    sights = [*event.sightings, sighting("sub_other:f0", "store-5")]
    env.store.record_cluster(cluster_event("cl-1", 1, sights))
    decide = env.store.confirm_cluster if decided == "confirmed" else env.store.dismiss_cluster
    decide("cl-1", ALICE, "one person")
    view = env.store.split_cluster("cl-1", BOB, ["sub_other:f0"], "a stranger")
    assert view.status == "pending" and view.decision is None
    assert _entries(env, "cluster_split")[0]["details"]["decision_cleared"] == decided
    unknown_probe(env, "sub_new:f0")
    env.store.record_cluster(cluster_event("cl-1", 2, [*sights, sighting("sub_new:f0", "store-8")]))
    assert env.store.cluster("cl-1", ALICE).status == "pending"
    assert env.store.searchable_clusters(MODEL) == []  # no search until confirmed again
    with pytest.raises(ClusterWrongState):
        env.store.searchable_clusters(None, "cl-1")
    env.store.confirm_cluster("cl-1", ALICE, "one person, without the stranger")
    assert [c.cluster_id for c in env.store.searchable_clusters(MODEL)] == ["cl-1"]


def test_confirm_and_dismiss_are_audited_and_need_a_reviewer_and_a_reason(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env))
    with pytest.raises(wf.NotPermitted):
        env.store.confirm_cluster("cl-1", AUDREY, "looks alike")
    with pytest.raises(wf.DecisionRefused) as refused:
        env.store.confirm_cluster("cl-1", ALICE, "  ")
    assert refused.value.reason == "reason_required"
    with pytest.raises(ClusterNotFound):
        env.store.dismiss_cluster("cl-none", ALICE, "x")
    assert env.store.confirm_cluster("cl-1", ALICE, "same scar, three stores").status == "confirmed"
    [entry] = _entries(env, "cluster_confirmed")
    assert (entry["actor"], entry["role"], entry["reason"]) == ("alice", "reviewer", "same scar, three stores")
    assert env.store.dismiss_cluster("cl-1", BOB, "two different people").status == "dismissed"
    assert _entries(env, "cluster_dismissed")[0]["details"]["from_status"] == "confirmed"
    assert env.store.cluster_counts()["dismissed"] == 1


def test_a_later_revision_does_not_reopen_a_dismissed_cluster(env: Env) -> None:
    event = offender_cluster(env)
    env.store.record_cluster(event)
    env.store.dismiss_cluster("cl-1", ALICE, "not worth it")
    unknown_probe(env, "sub_new:f0")
    env.store.record_cluster(cluster_event("cl-1", 2, [*event.sightings, sighting("sub_new:f0", "store-8")]))
    view = env.store.cluster("cl-1", ALICE)
    assert view.status == "dismissed" and view.later_revision
    assert [s.face_id for s in view.sightings if s.new] == ["sub_new:f0"]


def test_a_confirmed_cluster_that_grows_shows_its_new_sightings_as_new(env: Env) -> None:
    event = offender_cluster(env)
    env.store.record_cluster(event)
    env.store.confirm_cluster("cl-1", ALICE, "one person")
    assert not [s for s in env.store.cluster("cl-1", ALICE).sightings if s.new]
    unknown_probe(env, "sub_new:f0")
    env.store.record_cluster(cluster_event("cl-1", 2, [*event.sightings, sighting("sub_new:f0", "store-8")]))
    view = env.store.cluster("cl-1", ALICE)
    assert view.status == "confirmed" and view.summary.new_sightings == 1
    assert [s.face_id for s in view.sightings if s.new] == ["sub_new:f0"]


def test_views_are_audited_and_crops_only_of_the_clusters_sightings(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env))
    unknown_probe(env, "sub_not_in:f0")
    env.store.cluster("cl-1", AUDREY)
    assert env.store.cluster_crop("cl-1", "sub_cl-1_0:f0", AUDREY).startswith(b"\xff\xd8")
    with pytest.raises(ClusterNotFound):
        env.store.cluster_crop("cl-1", "sub_not_in:f0", AUDREY)
    views = _entries(env, "cluster_view")
    assert [e["actor"] for e in views] == ["audrey", "audrey"]
    assert views[1]["details"] == {"cluster_id": "cl-1", "part": "crop", "face_id": "sub_cl-1_0:f0"}


# --- retention --------------------------------------------------------------------------------------------------
def test_retention_takes_purged_probes_out_of_clusters_and_purges_an_empty_cluster(env: Env, tmp_path: Path) -> None:
    late = T0 + timedelta(days=20)
    for i, at in enumerate((T0, T0, late)):
        unknown_probe(env, f"sub_{i}:f0", unit((3, 1.0), (5 + i, 0.3)), at=at)
    env.store.record_cluster(cluster_event("cl-1", 1, [sighting(f"sub_{i}:f0", f"store-{i}") for i in range(3)]))
    env.store.confirm_cluster("cl-1", ALICE, "one person")
    blobs = FileBlobStore(tmp_path / "blobs")
    report = run_retention(env.store, blobs, POLICY, env.clock.advance(days=32))
    assert sorted(report.probes) == ["sub_0:f0", "sub_1:f0"]
    view = env.store.cluster("cl-1", ALICE)
    assert view.status == "confirmed" and _live(env, "cl-1") == ["sub_2:f0"]
    assert {s.face_id: s.probe for s in view.sightings}["sub_0:f0"] == "purged"
    assert np.allclose(template_vector(_template(env, "cl-1")), unit((3, 1.0), (7, 0.3)), atol=1e-6)
    assert [e["details"].get("clusters") for e in _entries(env, "purge")] == [["cl-1"], ["cl-1"]]
    run_retention(env.store, blobs, POLICY, env.clock.advance(days=20))
    view = env.store.cluster("cl-1", ALICE)
    assert view.status == "purged" and view.purged_at == env.clock.now and _raw_template(env, "cl-1") is None
    [entry] = _entries(env, "cluster_purged")
    assert entry["reason"] == "retention:no_candidate" and entry["details"]["from_status"] == "confirmed"
    assert env.store.searchable_clusters(MODEL) == []


def test_a_revision_retention_made_upstream_keeps_its_missing_sightings_out_for_good(env: Env) -> None:
    """The cluster service's retention shrank the cluster before the review service's own pass: the sightings the
    revision no longer names are purged here too (a later revision naming one does not bring it back)."""
    first = offender_cluster(env, faces=4)
    env.store.record_cluster(first)
    kept = first.sightings[1:]
    shrunk = cluster_event("cl-1", 2, kept, minutes=5).model_copy(update={"cause": "retention"})
    assert env.store.record_cluster(shrunk).new
    left = {s.face_id: s.left_reason for s in env.store.cluster("cl-1", ALICE).sightings}
    assert left == {first.sightings[0].face_id: "purged"} | {s.face_id: None for s in kept}
    assert _entries(env, "cluster_reported")[-1]["details"]["cause"] == "retention"
    env.store.record_cluster(cluster_event("cl-1", 3, first.sightings, minutes=9))
    assert _live(env, "cl-1") == [s.face_id for s in kept]
    dropped = cluster_event("cl-1", 4, kept[1:], minutes=10)  # cause "sightings": dropped, may come back
    env.store.record_cluster(dropped)
    assert {s.face_id: s.left_reason for s in env.store.cluster("cl-1", ALICE).sightings}[kept[0].face_id] == "dropped"


def test_a_retention_revision_overtaken_by_a_later_one_still_purges_what_it_took(env: Env) -> None:
    first = offender_cluster(env, faces=3)
    env.store.record_cluster(first)
    gone, kept = first.sightings[0], list(first.sightings[1:])
    unknown_probe(env, "sub_new:f0")
    later = cluster_event("cl-1", 3, [*kept, sighting("sub_new:f0", "store-9")], minutes=9)
    env.store.record_cluster(later)  # revision 3 first: the face retention took at 2 is only dropped
    shrunk = cluster_event("cl-1", 2, kept, minutes=5).model_copy(update={"cause": "retention"})
    assert env.store.record_cluster(shrunk).new is False
    left = {s.face_id: s.left_reason for s in env.store.cluster("cl-1", ALICE).sightings}
    assert left == {gone.face_id: "purged", "sub_new:f0": None} | {s.face_id: None for s in kept}
    assert _entries(env, "cluster_reported")[-1]["details"]["purged"] == [gone.face_id]


def test_sightings_of_probes_never_held_follow_the_policy_too(env: Env, tmp_path: Path) -> None:
    env.store.record_cluster(cluster_event("cl-x", 1, [sighting("sub_far:f0", "store-1"),
                                                       sighting("sub_away:f0", "store-2")]))
    blobs = FileBlobStore(tmp_path / "blobs")
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=30)).unheld_sightings == 0
    assert run_retention(env.store, blobs, POLICY, env.clock.advance(days=2)).unheld_sightings == 2
    assert env.store.cluster("cl-x", ALICE).status == "purged"


def test_a_probe_purged_before_its_cluster_arrives_stays_out(env: Env, tmp_path: Path) -> None:
    event = offender_cluster(env)
    run_retention(env.store, FileBlobStore(tmp_path / "blobs"), POLICY, env.clock.advance(days=32))
    assert env.store.record_cluster(event).status == "purged"
    assert _raw_template(env, "cl-1") is None


# --- searches of the custody gallery ----------------------------------------------------------------------------
def test_a_confirmed_cluster_is_searched_when_the_gallery_gains_subjects_and_a_dismissed_one_is_not(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env, "cl-yes"))
    env.store.record_cluster(offender_cluster(env, "cl-no"))
    env.store.record_cluster(offender_cluster(env, "cl-wait"))
    env.store.confirm_cluster("cl-yes", ALICE, "one person")
    env.store.dismiss_cluster("cl-no", ALICE, "not one person")
    change = enrolment("gc-7", [("gf-1", "offender", unit((3, 1.0), (6, 0.1))), ("gf-2", "nobody", STRANGER)])
    assert re_search_clusters(env.store, change, MATCH) == 1
    assert re_search_clusters(env.store, change, MATCH) == 0  # redelivered: kept once
    [found] = env.store.cluster("cl-yes", ALICE).searches
    assert (found.trigger, found.re_search_of, found.source) == ("gallery_change", "gc-7", "new_photos")
    assert [(c["subject_id"], c["gallery_face_id"]) for c in found.candidates] == [("offender", "gf-1")]
    assert found.candidates[0]["score"] > 0.9
    assert env.store.cluster("cl-no", ALICE).searches == [] and env.store.cluster("cl-wait", ALICE).searches == []
    assert {s.cluster_id: s.candidates_found for s in env.store.clusters()} == {
        "cl-yes": True, "cl-no": False, "cl-wait": False}
    [entry] = _entries(env, "cluster_re_search")
    assert entry["details"]["candidates"] == [["offender", "custody", found.candidates[0]["score"]]]
    other = enrolment("gc-8", [("gf-3", "offender", OFFENDER)], model_id="other-model")
    assert re_search_clusters(env.store, other, MATCH) == 0
    assert re_search_clusters(env.store, enrolment("gc-9", [("gf-4", "x", OFFENDER)], watch_list="civil"), MATCH) == 0


def test_a_search_without_candidate_is_kept_too(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env))
    env.store.confirm_cluster("cl-1", ALICE, "one person")
    assert re_search_clusters(env.store, enrolment("gc-1", [("gf-9", "nobody", STRANGER)]), MATCH) == 1
    [found] = env.store.cluster("cl-1", ALICE).searches
    assert found.candidates == []
    assert not env.store.clusters()[0].candidates_found


def test_an_on_demand_search_covers_the_whole_gallery_of_the_same_model(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env))
    gallery = InMemoryGallery(MODEL)
    gallery.add([GalleryFace("gf-old", "offender", "wanted", unit((3, 1.0), (8, 0.2)), "wanted/o.jpg"),
                 GalleryFace("gf-s", "stranger", "custody", STRANGER)])
    with pytest.raises(ClusterWrongState):
        search_cluster(env.store, "cl-1", ALICE, "CR-1", gallery, MATCH)  # pending: confirm first
    env.store.confirm_cluster("cl-1", ALICE, "one person")
    with pytest.raises(wf.NotPermitted):
        search_cluster(env.store, "cl-1", AUDREY, "CR-1", gallery, MATCH)
    with pytest.raises(wf.DecisionRefused) as refused:
        search_cluster(env.store, "cl-1", ALICE, "CR-1", InMemoryGallery("other-model"), MATCH)
    assert refused.value.reason == "model_mismatch"
    found = search_cluster(env.store, "cl-1", ALICE, "CR-1", gallery, MATCH)
    assert [(c["subject_id"], c["watch_list"]) for c in found] == [("offender", "wanted")]
    [kept] = env.store.cluster("cl-1", ALICE).searches
    assert (kept.trigger, kept.actor, kept.source, kept.watch_lists) == ("on_demand", "alice", "milvus",
                                                                         ["custody", "wanted"])
    [entry] = _entries(env, "cluster_re_search")
    assert (entry["actor"], entry["reason"]) == ("alice", "CR-1")


def _template(env: Env, cluster_id: str) -> bytes:
    raw = _raw_template(env, cluster_id)
    assert raw is not None
    return raw


def _raw_template(env: Env, cluster_id: str) -> bytes | None:
    from sqlalchemy import select

    from rfr.review import tables as t

    with env.store.engine.connect() as conn:
        value = conn.execute(select(t.clusters.c.template).where(t.clusters.c.cluster_id == cluster_id)).scalar_one()
    return None if value is None else bytes(value)


def test_the_rule_is_kept_as_reported(env: Env) -> None:
    env.store.record_cluster(offender_cluster(env))
    assert env.store.cluster("cl-1", ALICE).rule == RULE.model_dump(mode="json")
