"""Hubness-corrected search (rfr/gallery/hubness.py) and match.score_norm=hubness in the match service."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_match_thresholds import DIM, MODEL, search

from rfr.core.settings import MatchSettings
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace, Vectors, normalise
from rfr.gallery.hubness import HubnessSearch
from rfr.gallery.memory import InMemoryGallery
from rfr.gallery.scoring import Cohort, ThresholdRule, ThresholdTable
from services.match.handler import MatchHandler


def unit(*weights: tuple[int, float]) -> np.ndarray:
    """A unit vector of ``DIM`` values with the given (axis, weight) pairs."""
    v = np.zeros(DIM, np.float32)
    for axis, w in weights:
        v[axis] = w
    out: np.ndarray = normalise(v)[0]
    return out


def cohort_near_axis_1(n: int = 12) -> np.ndarray:
    """CCTV-like strangers crowding around axis 1: a gallery photo leaning on axis 1 is a hub."""
    rng = np.random.default_rng(3)
    rows = np.zeros((n, DIM), np.float32)
    rows[:, 1] = 1.0
    rows[:, 3:] = rng.normal(0.0, 0.1, size=(n, DIM - 3))
    return normalise(rows)


class CountingGallery(InMemoryGallery):
    """Counts the face ids whose vectors were read."""

    def __init__(self) -> None:
        super().__init__(MODEL)
        self.vector_reads: list[str] = []

    def face_vectors(self, face_ids: Sequence[str]) -> dict[str, Vectors]:
        self.vector_reads += list(face_ids)
        return super().face_vectors(face_ids)


def hub_and_plain() -> CountingGallery:
    g = CountingGallery()
    g.add([GalleryFace("f-hub", "hub", "custody", unit((0, 1.0), (1, 1.0))),
           GalleryFace("f-plain", "plain", "custody", unit((0, 1.0), (2, 1.0))),
           GalleryFace("f-far", "far", "custody", unit((5, 1.0)))])
    return g


def expected_csls(probe: np.ndarray, photo: np.ndarray, cohort: np.ndarray, k: int) -> float:
    r_g = float(np.sort(cohort @ photo)[-k:].mean())
    return 2.0 * float(probe @ photo) - r_g


def test_the_hub_loses_the_top_place_it_holds_on_cosines() -> None:
    g, cohort = hub_and_plain(), cohort_near_axis_1()
    probe = unit((0, 1.0), (1, 0.2))  # a little closer to the hub by cosine
    [plain] = g.search(probe[None, :], 3, ["custody"], 0.1)
    assert [h.subject_id for h in plain] == ["hub", "plain"]
    [hits] = HubnessSearch(cohort, k=5, depth=10).search(g, probe[None, :], 3, ["custody"], np.array([0.1]))
    assert [h.subject_id for h in hits] == ["plain", "hub"]
    for h in hits:
        photo = g.face_vectors([h.face_id])[h.face_id]
        assert h.score == pytest.approx(expected_csls(probe, photo, cohort, 5), abs=1e-5)


def test_thresholds_are_per_probe_on_the_csls_scale_and_top_k_cuts_the_list() -> None:
    g, cohort = hub_and_plain(), cohort_near_axis_1()
    probe = unit((0, 1.0), (1, 0.2))
    plain_score = expected_csls(probe, unit((0, 1.0), (2, 1.0)), cohort, 5)
    hub = HubnessSearch(cohort, k=5, depth=10)
    both = np.stack([probe, probe])
    strict, loose = hub.search(g, both, 3, ["custody"], np.array([plain_score + 1e-4, plain_score - 1e-4]))
    assert strict == [] and [h.subject_id for h in loose] == ["plain"]
    [one] = hub.search(g, probe[None, :], 1, ["custody"], np.array([-3.0]))
    assert [h.subject_id for h in one] == ["plain"]


def test_each_gallery_photo_is_read_once_and_an_erased_one_is_left_out() -> None:
    g, cohort = hub_and_plain(), cohort_near_axis_1()
    hub = HubnessSearch(cohort, k=5, depth=10)
    probe = unit((0, 1.0))
    hub.search(g, probe[None, :], 3, ["custody"], np.array([-3.0]))
    hub.search(g, probe[None, :], 3, ["custody"], np.array([-3.0]))
    assert sorted(g.vector_reads) == ["f-far", "f-hub", "f-plain"]
    fresh = HubnessSearch(cohort, k=5, depth=10)
    assert fresh.hubness_of(g, ["f-hub", "gone"]).keys() == {"f-hub"}


def test_only_the_depth_best_subjects_by_cosine_are_re_ranked() -> None:
    g, cohort = hub_and_plain(), cohort_near_axis_1()
    probe = unit((0, 1.0), (1, 0.2))
    [hits] = HubnessSearch(cohort, k=5, depth=1).search(g, probe[None, :], 3, ["custody"], np.array([-3.0]))
    assert [h.subject_id for h in hits] == ["hub"]  # "plain" would win on CSLS but was not deep enough


def test_a_cohort_smaller_than_k_is_refused() -> None:
    with pytest.raises(ValueError, match="k=13"):
        HubnessSearch(cohort_near_axis_1(12), k=13, depth=5)
    cohort = Cohort(cohort_near_axis_1(12), tuple(f"c{i}" for i in range(12)), MODEL)
    with pytest.raises(ValueError, match="k=13"):
        ThresholdRule(0.9, cohort=cohort, hubness_k=13)


def write_cohort(tmp_path: Path) -> Path:
    rows = cohort_near_axis_1()
    return Cohort(rows, tuple(f"c{i}" for i in range(len(rows))), MODEL).save(tmp_path / "cohort.npz")


def handler(tmp_path: Path, gallery: InMemoryGallery, **settings: Any) -> MatchHandler:
    cfg = MatchSettings(**({"top_k": 3, "watch_lists": ["custody"], "score_norm": "hubness", "hubness_k": 5,
                            "cohort_file": write_cohort(tmp_path)} | settings))
    return MatchHandler(gallery, cfg, Topics("t"), None)


def test_the_match_service_lists_csls_scores_and_records_the_normalisation(tmp_path: Path) -> None:
    g = hub_and_plain()
    [cl] = search(handler(tmp_path, g, hubness_threshold=0.5), [unit((0, 1.0), (1, 0.2))])
    assert (cl.score_norm, cl.threshold, cl.threshold_policy) == ("hubness", 0.5, "fixed")
    assert [c.subject_id for c in cl.candidates] == ["plain", "hub"]
    assert all(c.score >= 0.5 for c in cl.candidates)
    [none] = search(handler(tmp_path, hub_and_plain(), hubness_threshold=2.5), [unit((0, 1.0))])
    assert none.outcome == "no_candidate" and none.score_norm == "hubness"


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cohort_file"):
        MatchHandler(hub_and_plain(), MatchSettings(score_norm="hubness"), Topics("t"), None)
    table = ThresholdTable.from_impostor(np.random.default_rng(1).normal(0.0, 0.2, 1000), MODEL).save(
        tmp_path / "table.json")  # calibrated on cosines
    with pytest.raises(ValueError, match="recalibrate with the same score_norm"):
        handler(tmp_path, hub_and_plain(), threshold_policy="gallery_size", threshold_table=table)
    with pytest.raises(ValueError, match="k=20"):
        handler(tmp_path, hub_and_plain(), hubness_k=20)  # the cohort has 12 faces


def test_a_candidate_below_the_threshold_on_cosines_but_above_it_on_csls_is_found() -> None:
    g, cohort = hub_and_plain(), cohort_near_axis_1()
    probe = unit((0, 1.0), (6, 1.6))
    plain = g.face_vectors(["f-plain"])["f-plain"]
    assert float(probe @ plain) < 0.6 <= expected_csls(probe, plain, cohort, 5)  # lost to a cosine floor of 0.6
    [hits] = HubnessSearch(cohort, k=5, depth=10).search(g, probe[None, :], 3, ["custody"], np.array([0.6]))
    assert [h.subject_id for h in hits] == ["plain"]


def test_a_table_of_another_k_or_cohort_is_refused(tmp_path: Path) -> None:
    impostor = np.random.default_rng(1).normal(0.0, 0.2, 1000)
    cohort_file = write_cohort(tmp_path)
    digest = hashlib.sha256(cohort_file.read_bytes()).hexdigest()
    for k, sha, why in ((3, digest, "hubness k=3, the service uses k=5"), (5, "00" * 32, "another cohort file")):
        table = ThresholdTable.from_impostor(impostor, MODEL, "hubness", cohort_sha256=sha, hubness_k=k).save(
            tmp_path / f"table-{k}.json")
        with pytest.raises(ValueError, match=why):
            handler(tmp_path, hub_and_plain(), threshold_policy="gallery_size", threshold_table=table)
    same = ThresholdTable.from_impostor(impostor, MODEL, "hubness", cohort_sha256=digest, hubness_k=5).save(
        tmp_path / "table.json")
    used = handler(tmp_path, hub_and_plain(), threshold_policy="gallery_size", threshold_table=same)
    assert used.thresholds.rule.table == ThresholdTable.load(same)


class ErasingGallery(CountingGallery):
    """Erases ``f-plain`` between the search and the read of its vector."""

    def face_vectors(self, face_ids: Sequence[str]) -> dict[str, Vectors]:
        self.delete_subject("plain")
        return super().face_vectors(face_ids)


def test_a_hit_erased_after_the_search_is_left_out_and_said(caplog: pytest.LogCaptureFixture) -> None:
    g = ErasingGallery()
    for face in hub_and_plain().face_vectors(["f-hub", "f-plain"]).items():
        g.add([GalleryFace(face[0], face[0][2:], "custody", face[1])])
    with caplog.at_level(logging.INFO, logger="rfr.gallery.hubness"):
        [hits] = HubnessSearch(cohort_near_axis_1(), k=5, depth=10).search(
            g, unit((0, 1.0))[None, :], 3, ["custody"], np.array([-3.0]))
    assert [h.subject_id for h in hits] == ["hub"]
    assert "1 hit(s) left out of hubness-corrected lists" in caplog.text
