"""rfr/gallery/scoring.py: cohort T-norm, fused templates, gallery-size thresholds and the match threshold rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rfr.core.settings import MatchSettings
from rfr.gallery.base import normalise
from rfr.gallery.scoring import (
    MIN_STD,
    Cohort,
    ThresholdRule,
    ThresholdTable,
    cohort_stats,
    csls,
    fmr_for_fpir,
    fuse_template,
    template_hubness,
    tnorm,
)


def unit(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return normalise(np.random.default_rng(seed).normal(size=(n, dim)))


def test_cohort_stats_are_mean_and_std_of_the_top_scores_with_exclusions() -> None:
    probes, cohort = unit(3, seed=1), unit(20, seed=2)
    scores = (probes @ cohort.T).astype(np.float64)
    mean, std = cohort_stats(probes, cohort)
    assert np.allclose(mean, scores.mean(axis=1)) and np.allclose(std, scores.std(axis=1, ddof=1))
    mean5, std5 = cohort_stats(probes, cohort, top=5)
    top5 = -np.sort(-scores, axis=1)[:, :5]
    assert np.allclose(mean5, top5.mean(axis=1)) and np.allclose(std5, top5.std(axis=1, ddof=1))
    exclude = np.zeros((3, 20), bool)
    exclude[0, np.argmax(scores[0])] = True  # probe 0's best cohort face is its own identity: left out
    mean_x, _ = cohort_stats(probes, cohort, top=5, exclude=exclude)
    assert mean_x[0] < mean5[0] and np.allclose(mean_x[1:], mean5[1:])
    with pytest.raises(ValueError, match="fewer than 2"):
        cohort_stats(probes[:1], cohort[:2], exclude=np.array([[True, False]]))


def test_tnorm_keeps_each_probes_order_and_floors_the_std() -> None:
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.2]])
    z = tnorm(scores, np.array([0.1, 0.2]), np.array([0.2, 0.05]))
    assert (np.argsort(z, axis=1) == np.argsort(scores, axis=1)).all()
    assert z[0, 0] == pytest.approx(4.0) and z[1, 1] == pytest.approx(2.0)
    same = np.tile(unit(1, seed=3), (4, 1))  # a degenerate cohort: one face four times
    _, std = cohort_stats(unit(1, seed=4), same)
    assert std[0] == MIN_STD


def test_fuse_template_is_the_renormalised_mean() -> None:
    photos = unit(3, seed=5)
    fused = fuse_template(photos)
    assert np.linalg.norm(fused) == pytest.approx(1.0, abs=1e-6)
    expected = photos.mean(axis=0) / np.linalg.norm(photos.mean(axis=0))
    assert np.allclose(fused, expected, atol=1e-6)
    with pytest.raises(ValueError):
        fuse_template(np.zeros((0, 4)))


@pytest.mark.parametrize(("fpir", "size"), [(0.01, 1), (0.01, 1000), (0.1, 50_000)])
def test_fmr_for_fpir_inverts_the_independent_comparisons_model(fpir: float, size: int) -> None:
    fmr = fmr_for_fpir(fpir, size)
    assert 1 - (1 - fmr) ** size == pytest.approx(fpir, rel=1e-9)
    assert fmr <= fpir
    with pytest.raises(ValueError):
        fmr_for_fpir(fpir, 0)


def test_threshold_table_matches_the_empirical_false_match_rate(tmp_path: Path) -> None:
    impostor = np.random.default_rng(6).normal(0.0, 0.1, size=200_000)
    table = ThresholdTable.from_impostor(impostor, "m")
    for fmr in (1e-2, 1e-3, 1e-4):
        t = table.threshold_at(fmr)
        assert np.mean(impostor >= t) == pytest.approx(fmr, rel=0.15)
    assert table.threshold_for(0.01, 100) > table.threshold_for(0.01, 10)  # a bigger gallery, a stricter threshold
    with pytest.raises(ValueError, match="resolves"):
        table.threshold_at(1e-8)
    assert ThresholdTable.load(table.save(tmp_path / "t.json")) == table


def test_cohort_file_round_trip_and_model_check(tmp_path: Path) -> None:
    cohort = Cohort(unit(4, seed=7), ("a", "b", "c", "d"), "m1", "ab" * 32, "faces/")
    path = cohort.save(tmp_path / "cohort.npz")
    back = Cohort.load(path, "m1")
    assert back.identities == cohort.identities and np.allclose(back.vectors, cohort.vectors)
    with pytest.raises(ValueError, match="rebuild"):
        Cohort.load(path, "m2")


def test_threshold_rule_from_settings(tmp_path: Path) -> None:
    fixed = ThresholdRule.from_settings(MatchSettings(threshold=0.55), "m")
    assert (fixed.policy, fixed.score_norm) == ("fixed", "none")
    assert fixed.per_probe(unit(2), 10_000).tolist() == [0.55, 0.55]

    table = ThresholdTable.from_impostor(np.random.default_rng(8).normal(0, 0.1, 100_000), "m")
    path = table.save(tmp_path / "t.json")
    by_size = ThresholdRule.from_settings(
        MatchSettings(threshold_policy="gallery_size", threshold_table=path, target_fpir=0.01), "m")
    assert by_size.base(50) == pytest.approx(table.threshold_at(fmr_for_fpir(0.01, 50)))
    assert by_size.base(10) < by_size.base(50)
    assert by_size.base(10**9) == table.threshold[-1]  # beyond the table: its strictest threshold
    with pytest.raises(ValueError, match="threshold_table"):
        ThresholdRule.from_settings(MatchSettings(threshold_policy="gallery_size"), "m")
    with pytest.raises(ValueError, match="recalibrate"):
        ThresholdRule.from_settings(MatchSettings(threshold_policy="gallery_size", threshold_table=path), "other")

    cohort_path = Cohort(unit(30, seed=9), tuple(f"c{i}" for i in range(30)), "m").save(tmp_path / "c.npz")
    normed = ThresholdRule.from_settings(
        MatchSettings(score_norm="cohort", cohort_file=cohort_path, cohort_threshold=3.0), "m")
    probes = unit(2, seed=10)
    mean, std = cohort_stats(probes, Cohort.load(cohort_path).vectors)
    assert np.allclose(normed.per_probe(probes, None), mean + 3.0 * std)
    with pytest.raises(ValueError, match="score_norm"):  # a table of cosines used with T-norm scores
        ThresholdRule.from_settings(MatchSettings(score_norm="cohort", cohort_file=cohort_path,
                                                  threshold_policy="gallery_size", threshold_table=path), "m")
    assert math.isfinite(normed.base(5))


def test_template_hubness_is_the_mean_top_k_cohort_score_with_exclusions() -> None:
    templates, cohort = unit(4, seed=5), unit(25, seed=6)
    scores = cohort @ templates.T  # 25 x 4
    plain = template_hubness(templates, cohort, 3)
    assert plain.shape == (4,)
    assert np.allclose(plain, np.sort(scores, axis=0)[-3:].mean(axis=0))
    exclude = np.zeros((2, 25), bool)
    exclude[1, np.argmax(scores[:, 0])] = True  # probe 1 leaves out template 0's best cohort face
    exclude[1, [7, 8]] = True
    per_probe = template_hubness(templates, cohort, 3, exclude)
    assert per_probe.shape == (2, 4) and np.allclose(per_probe[0], plain)
    for t in range(4):
        kept = scores[~exclude[1], t]
        assert per_probe[1, t] == pytest.approx(np.sort(kept)[-3:].mean())
    assert per_probe[1, 0] < plain[0]
    assert np.allclose(csls(scores[:2], plain), 2 * scores[:2] - plain)


def test_template_hubness_refuses_a_cohort_too_small_for_k() -> None:
    with pytest.raises(ValueError, match="k=5"):
        template_hubness(unit(2), unit(4, seed=1), 5)
    with pytest.raises(ValueError, match="left out"):
        left_out = np.zeros((2, 6), bool)
        left_out[1, :2] = True  # 4 cohort rows left for probe 1: too few for k=5
        template_hubness(unit(2), unit(6, seed=1), 5, left_out)
    with pytest.raises(ValueError, match="one column per cohort row"):
        template_hubness(unit(2), unit(6, seed=1), 2, np.zeros((2, 5), bool))
