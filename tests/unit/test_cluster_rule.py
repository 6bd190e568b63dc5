"""The cluster rule (rfr/cluster/rule.py) on small synthetic vectors whose similarities are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rfr.cluster.rule import Centroid, ClusterRule, Hubness, MemoryClusters, assign, pairwise_scores, unit

RULE = ClusterRule(link_threshold=0.7, merge_threshold=0.8, min_sightings=3, min_stores=2, neighbours=16)


def vec(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32)


def angled(degrees: float) -> np.ndarray:
    """A unit vector in the first plane of 4-d space at ``degrees`` from e1 (cosine to e1 = cos(degrees))."""
    r = math.radians(degrees)
    return vec(math.cos(r), math.sin(r), 0.0, 0.0)


def centroid(*members: np.ndarray) -> Centroid:
    return Centroid(np.sum([unit(m) for m in members], axis=0).astype(np.float32), len(members))


def test_unit_scales_to_length_one_and_refuses_zero_or_non_finite() -> None:
    assert unit([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    assert unit([3.0, 4.0]).dtype == np.float32
    for bad in ([0.0, 0.0], [math.nan, 1.0], [math.inf, 0.0]):
        with pytest.raises(ValueError, match="non-zero"):
            unit(bad)


def test_memory_clusters_refuse_a_zero_template() -> None:
    clusters = MemoryClusters(RULE)
    with pytest.raises(ValueError):
        clusters.add(np.zeros(4, np.float32))
    assert clusters.labels() == []


def test_fused_template_is_the_normalised_mean() -> None:
    c = centroid(vec(1, 0, 0, 0), vec(0, 1, 0, 0))
    assert c.template == pytest.approx([math.sqrt(0.5), math.sqrt(0.5), 0, 0], abs=1e-6)


def test_no_candidates_starts_a_new_cluster() -> None:
    decision = assign(unit(vec(1, 0, 0, 0)), {}, RULE)
    assert decision.cluster_id is None and decision.merge == ()


def test_joins_the_most_similar_cluster_at_or_above_link_threshold() -> None:
    face = angled(0)
    candidates = {"near": centroid(angled(30)), "far": centroid(angled(40))}  # cos 30 = 0.866, cos 40 = 0.766
    decision = assign(face, candidates, RULE)
    assert decision.cluster_id == "near"
    assert decision.similarity == pytest.approx(math.cos(math.radians(30)), abs=1e-6)


def test_below_link_threshold_starts_a_new_cluster_and_reports_the_best_similarity() -> None:
    decision = assign(angled(0), {"a": centroid(angled(50))}, RULE)  # cos 50 = 0.643 < 0.7
    assert decision.cluster_id is None
    assert decision.similarity == pytest.approx(math.cos(math.radians(50)), abs=1e-6)


def test_joining_merges_a_cluster_close_to_the_grown_template_only() -> None:
    # the face at 0 deg joins "a" (10 deg); the grown template is at 5 deg: "b" at -25 deg is cos 30 = 0.866 from
    # it (merged, >= 0.8), "c" at 45 deg is cos 40 = 0.766 (kept apart)
    candidates = {"a": centroid(angled(10)), "b": centroid(angled(-25)), "c": centroid(angled(45))}
    decision = assign(angled(0), candidates, RULE)
    assert decision.cluster_id == "a"
    assert decision.merge == ("b",)


def test_ties_go_to_the_lexically_first_cluster_whatever_the_mapping_order() -> None:
    same = centroid(angled(20))
    for candidates in ({"b": same, "a": same}, {"a": same, "b": same}):
        loose = ClusterRule(0.7, 1.0)  # no merge, so only the join decides
        assert assign(angled(0), candidates, loose).cluster_id == "a"


def test_average_linkage_keeps_a_face_out_of_a_loose_cluster_the_centroid_would_take() -> None:
    loose = {"a": centroid(angled(60), angled(-60))}  # fused template at 0 deg; mean member cosine to 0 deg: 0.5
    assert assign(angled(0), loose, RULE).cluster_id == "a"
    average = ClusterRule(0.7, 0.8, linkage="average")
    decision = assign(angled(0), loose, average)
    assert decision.cluster_id is None and decision.similarity == pytest.approx(0.5, abs=1e-6)
    tight = {"b": centroid(angled(20), angled(-20))}  # mean member cosine: cos 20 = 0.94
    assert assign(angled(0), tight, average).similarity == pytest.approx(math.cos(math.radians(20)), abs=1e-6)


def test_average_linkage_merges_on_the_mean_cosine_over_member_pairs() -> None:
    a, b = centroid(angled(0), angled(10)), centroid(angled(30))
    rule = ClusterRule(0.7, 0.8, linkage="average")
    expected = (math.cos(math.radians(30)) + math.cos(math.radians(20))) / 2
    assert rule.cluster_similarity(a, b) == pytest.approx(expected, abs=1e-6)
    assert rule.cluster_similarity(a, b) < ClusterRule(0.7, 0.8).cluster_similarity(a, b)


@pytest.mark.parametrize(("sightings", "stores", "expected"), [(3, 2, True), (5, 3, True), (2, 2, False),
                                                               (3, 1, False), (10, 1, False)])
def test_reportable_needs_both_sightings_and_stores(sightings: int, stores: int, expected: bool) -> None:
    assert RULE.reportable(sightings, stores) is expected


def test_memory_clusters_group_two_people_apart() -> None:
    clusters = MemoryClusters(RULE)
    faces = [angled(0), angled(80), angled(5), angled(85), angled(-5)]
    labels = [clusters.add(f) for f in faces]
    assert labels == ["c0", "c1", "c0", "c1", "c0"]
    assert clusters.labels() == labels
    assert clusters.centroids["c0"].count == 3 and clusters.centroids["c1"].count == 2
    assert clusters.merges == 0


def test_memory_clusters_merge_two_clusters_through_a_bridging_face() -> None:
    rule = ClusterRule(link_threshold=0.8, merge_threshold=0.8)
    clusters = MemoryClusters(rule)
    clusters.add(angled(0))   # c0
    clusters.add(angled(40))  # cos 40 = 0.766 < 0.8: c1
    assert clusters.labels() == ["c0", "c1"]
    clusters.add(angled(18))  # cos 18 = 0.95 to c0, cos 22 = 0.93 to c1: joins c0, grown template at 9 deg is
    assert clusters.labels() == ["c0", "c0", "c0"]  # cos 31 = 0.86 from c1: merged
    assert clusters.merges == 1 and set(clusters.centroids) == {"c0"}
    assert clusters.centroids["c0"].count == 3
    assert clusters.add(angled(90)) == "c2"  # a fresh id: c1 is never reused after the merge


def test_memory_clusters_only_see_the_clusters_of_the_nearest_neighbours() -> None:
    def run(neighbours: int) -> MemoryClusters:
        clusters = MemoryClusters(ClusterRule(link_threshold=0.7, merge_threshold=0.7, neighbours=neighbours))
        clusters.add(angled(0))   # c0
        clusters.add(angled(50))  # cos 50 = 0.64 < 0.7: c1
        clusters.add(angled(20))  # joins c0 (cos 20); the grown template at 10 deg is cos 40 = 0.77 from c1
        return clusters

    assert run(16).labels() == ["c0", "c0", "c0"]  # c1 was a candidate: merged
    one = run(1)  # only the nearest earlier face (the one at 0 deg) is looked up: c1 is never a candidate
    assert one.labels() == ["c0", "c1", "c0"] and one.merges == 0


def test_pairwise_scores_hand_computed() -> None:
    # truth pairs: (0,1) (0,2) (1,2) (3,4); found pairs: (0,1) (2,3) (2,4) (3,4); both: (0,1) (3,4)
    got = pairwise_scores(["a", "a", "a", "b", "b"], ["x", "x", "y", "y", "y"])
    assert got["pairwise_precision"] == pytest.approx(2 / 4)
    assert got["pairwise_recall"] == pytest.approx(2 / 4)
    # BCubed per item (precision, recall): (1, 2/3) (1, 2/3) (1/3, 1/3) (2/3, 1) (2/3, 1)
    assert got["bcubed_precision"] == pytest.approx(11 / 15)
    assert got["bcubed_recall"] == pytest.approx(11 / 15)
    assert got["bcubed_f"] == pytest.approx(11 / 15)


def test_pairwise_scores_one_big_cluster_and_all_singletons() -> None:
    lumped = pairwise_scores(["a", "a", "b", "b"], ["x", "x", "x", "x"])
    assert lumped["pairwise_precision"] == pytest.approx(2 / 6) and lumped["pairwise_recall"] == 1.0
    assert lumped["bcubed_precision"] == pytest.approx(0.5) and lumped["bcubed_recall"] == 1.0
    assert lumped["bcubed_f"] == pytest.approx(2 / 3)
    split = pairwise_scores(["a", "a", "b"], ["x", "y", "z"])
    assert split["pairwise_precision"] == 1.0 and split["pairwise_recall"] == 0.0
    assert split["bcubed_recall"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    strangers = pairwise_scores(["a", "b", "c"], ["x", "y", "z"])
    assert strangers["pairwise_precision"] == 1.0 and strangers["pairwise_recall"] == 1.0


def test_pairwise_scores_refuse_labels_of_different_items() -> None:
    with pytest.raises(ValueError):
        pairwise_scores(["a", "b"], ["x"])


def test_hubness_is_the_mean_of_the_k_highest_cohort_cosines() -> None:
    cohort = np.stack([angled(0), angled(60), vec(0, 0, 1, 0)])
    hub = Hubness(cohort, 2, "m")
    assert hub.of(angled(0)) == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)  # cos 0, cos 60; the orthogonal row unused
    assert hub.of(vec(0, 0, 0, 1)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="k=4"):
        Hubness(cohort, 4, "m")
    with pytest.raises(ValueError, match="k=0"):
        Hubness(cohort, 0, "m")


def test_hubness_correction_keeps_a_face_that_resembles_everyone_out() -> None:
    """Two faces at the same cosine (0.866) to their cluster: the one the cohort is close to (a hub) is kept out,
    the one unlike the cohort joins. Corrected similarity = s - (r_face + r_cluster) / 2 with k = 1."""
    cohort = np.stack([angled(0), vec(0, 0, 1, 0)])  # one cohort face at e1, one off the plane
    rule = ClusterRule(0.5, 0.6, hubness=Hubness(cohort, 1, "m"))
    hub_face, cluster = angled(0), centroid(angled(30))  # r_face = 1, r_cluster = cos 30
    expected = math.cos(math.radians(30)) - (1.0 + math.cos(math.radians(30))) / 2
    decision = assign(hub_face, {"a": cluster}, rule)
    assert decision.cluster_id is None and decision.similarity == pytest.approx(expected, abs=1e-6)
    assert assign(hub_face, {"a": cluster}, ClusterRule(0.5, 0.6)).cluster_id == "a"  # uncorrected, it joins
    plain_face, far_cluster = vec(0, 0, 0, 1), centroid(unit(vec(0, 0, 0.5, math.sqrt(0.75))))  # cos 30 apart
    r_cluster = 0.5  # its cosine to the off-plane cohort face
    joined = assign(plain_face, {"b": far_cluster}, rule)
    assert joined.cluster_id == "b"
    assert joined.similarity == pytest.approx(math.cos(math.radians(30)) - (0.0 + r_cluster) / 2, abs=1e-6)


def test_hubness_correction_applies_to_merges() -> None:
    cohort = np.stack([angled(0), vec(0, 0, 1, 0)])
    rule = ClusterRule(0.5, 0.6, hubness=Hubness(cohort, 1, "m"))
    a, b = centroid(angled(0)), centroid(angled(20))
    plain = math.cos(math.radians(20))
    assert ClusterRule(0.5, 0.6).cluster_similarity(a, b) == pytest.approx(plain, abs=1e-6)
    assert rule.cluster_similarity(a, b) == pytest.approx(plain - (1.0 + plain) / 2, abs=1e-6)


def test_assign_reads_merges_against_the_grown_templates_hubness() -> None:
    """The face joins "a"; the grown template (at 5 deg) is a hub (a cohort face sits on it), so "b" (plain cosine
    0.866 to it) is not merged under the correction although plain cosines would merge it."""
    cohort = np.stack([angled(5), vec(0, 0, 1, 0)])
    candidates = {"a": centroid(angled(10)), "b": centroid(angled(-25))}
    rule = ClusterRule(-0.1, -0.05, hubness=Hubness(cohort, 1, "m"))
    decision = assign(angled(0), candidates, rule)
    assert decision.cluster_id == "a" and decision.merge == ()
    # corrected merge similarity: cos 30 - (r_grown 1.0 + r_b cos 30) / 2 = -0.067 < -0.05
    grown = Centroid(candidates["a"].total + angled(0), 2)
    expected = math.cos(math.radians(30)) - (1.0 + math.cos(math.radians(30))) / 2
    assert rule.cluster_similarity(grown, candidates["b"]) == pytest.approx(expected, abs=1e-4)
    assert assign(angled(0), candidates, ClusterRule(-0.1, -0.05)).merge == ("b",)  # plain cosines merge it
    assert ClusterRule(0.5, 0.6, hubness=Hubness(cohort, 1, "m")) != ClusterRule(0.5, 0.6)
