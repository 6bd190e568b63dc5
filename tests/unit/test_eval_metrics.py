"""Open-set identification metrics on hand-made candidate lists with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rfr.gallery import openset as m
from rfr.gallery.openset import Search


def mated(subject: str, *cands: tuple[str, float]) -> Search:
    return Search(subject, True, tuple(cands))


def nonmated(*cands: tuple[str, float]) -> Search:
    return Search("stranger", False, tuple(cands))


# Five mated searches: mate at rank 1 (0.9), rank 1 (0.6), rank 2 (0.7), not in list, not searched.
MATED = [
    mated("a", ("a", 0.9), ("b", 0.3)),
    mated("b", ("b", 0.6), ("c", 0.5)),
    mated("c", ("d", 0.8), ("c", 0.7)),
    mated("d", ("a", 0.4), ("b", 0.35)),
    mated("e"),
]
# Ten non-mated searches with best scores 0.85, 0.65, 0.55, 0.45, 0.4, 0.3, 0.2, 0.1, 0.05 and one not searched.
NONMATED = [nonmated(("a", s), ("b", s - 0.01)) for s in (0.85, 0.65, 0.55, 0.45, 0.4, 0.3, 0.2, 0.1, 0.05)]
NONMATED.append(nonmated())
ALL = MATED + NONMATED


def test_aggregate_keeps_the_best_score_per_subject_best_first() -> None:
    hits = [("x", 0.5), ("y", 0.7), ("x", 0.8), ("z", 0.7), ("y", 0.1)]
    assert m.aggregate_by_subject(hits) == (("x", 0.8), ("y", 0.7), ("z", 0.7))
    assert m.aggregate_by_subject(hits, limit=2) == (("x", 0.8), ("y", 0.7))


def test_mate_rank_and_scores() -> None:
    assert [m.mate_rank(s) for s in MATED] == [1, 1, 2, None, None]
    assert m.mate_score(MATED[2], max_rank=1) == m.NO_SCORE
    assert m.mate_score(MATED[2], max_rank=2) == 0.7
    assert m.top_score(MATED[4]) == m.NO_SCORE


def test_rank_k_rates_count_unsearched_mated_probes_as_misses() -> None:
    assert m.cmc(ALL, 3) == pytest.approx([0.4, 0.6, 0.6])
    assert m.rank_rate(ALL, 1) == pytest.approx(0.4)
    assert m.rank_rate(ALL, 2) == pytest.approx(0.6)
    assert math.isnan(m.rank_rate(NONMATED, 1))


def test_fpir_and_tpir_at_a_threshold() -> None:
    point = m.at_threshold(ALL, 0.5)
    # non-mated tops >= 0.5: 0.85, 0.65, 0.55 -> 3 of 10; mated at rank 1 with score >= 0.5: a (0.9), b (0.6) -> 2/5.
    assert point.fpir == pytest.approx(0.3)
    assert point.tpir == pytest.approx(0.4)
    assert point.fnir == pytest.approx(0.6)
    assert (point.n_mated, point.n_nonmated) == (5, 10)
    high = m.at_threshold(ALL, 0.7)
    assert high.fpir == pytest.approx(0.1) and high.tpir == pytest.approx(0.2)


def test_threshold_for_fpir_is_just_above_the_first_excluded_nonmated_score() -> None:
    tops = [m.top_score(s) for s in NONMATED]
    # 10 searches, FPIR 0.1 allows one false alarm (0.85): the threshold must exceed the 2nd highest, 0.65.
    assert m.threshold_for_fpir(tops, 0.1) == pytest.approx(0.6501)
    assert m.fpir_at(tops, m.threshold_for_fpir(tops, 0.1)) == pytest.approx(0.1)
    # FPIR 0.2 allows two (0.85, 0.65): just above 0.55.
    assert m.threshold_for_fpir(tops, 0.2) == pytest.approx(0.5501)
    # FPIR 0.01 on 10 searches allows none: just above the highest.
    assert m.threshold_for_fpir(tops, 0.01) == pytest.approx(0.8501)
    with pytest.raises(ValueError):
        m.threshold_for_fpir(tops, 0.0)
    with pytest.raises(ValueError):
        m.threshold_for_fpir([], 0.1)


def test_searches_without_candidates_never_pass_any_threshold() -> None:
    unsearched = [mated("a"), mated("b"), nonmated(), nonmated(), nonmated(("a", 0.2))]
    tops = [m.top_score(s) for s in unsearched if not s.mated]
    assert m.threshold_for_fpir(tops, 0.5) == -math.inf  # one false alarm allowed; only one search has a score
    point = m.at_threshold(unsearched, -math.inf)
    assert point.fpir == pytest.approx(1 / 3) and point.tpir == 0.0


def test_threshold_with_ties_never_exceeds_the_target() -> None:
    tops = [0.5, 0.5, 0.5, 0.2]
    t = m.threshold_for_fpir(tops, 0.25)  # one false alarm allowed but three tie: all three must go
    assert t > 0.5
    assert m.fpir_at(tops, t) == 0.0


def test_tpir_at_fpir_in_sample_and_resolvability() -> None:
    p = m.at_fpir(ALL, 0.1)
    assert p.threshold == pytest.approx(0.6501)
    assert p.fpir == pytest.approx(0.1)
    assert p.tpir == pytest.approx(0.2)  # only "a" (0.9) is at rank 1 above 0.6501
    assert p.resolvable
    assert not m.at_fpir(ALL, 0.01).resolvable  # 10 non-mated searches cannot resolve 1 %


def test_calibration_measures_on_the_other_split() -> None:
    calibration = [*MATED, *NONMATED]
    evaluation = [mated("a", ("a", 0.7)), mated("b", ("b", 0.6)), nonmated(("a", 0.66)), nonmated(("a", 0.1))]
    cal = m.calibrate(calibration, evaluation, 0.1)
    assert cal.threshold == pytest.approx(0.6501)
    assert cal.calibration.fpir == pytest.approx(0.1)
    assert cal.evaluation.fpir == pytest.approx(0.5)  # 0.66 >= 0.6501
    assert cal.evaluation.tpir == pytest.approx(0.5)  # 0.7 passes, 0.6 does not


def test_det_curve_points() -> None:
    searches = [mated("a", ("a", 0.9)), mated("b", ("b", 0.5)), mated("c", ("x", 0.8), ("c", 0.7)),
                nonmated(("a", 0.6)), nonmated(("a", 0.3))]
    det = m.det_curve(searches)
    # thresholds: every distinct finite score (mate scores at rank 1: 0.9, 0.5; non-mated tops: 0.6, 0.3)
    assert det.thresholds.tolist() == [0.3, 0.5, 0.6, 0.9]
    assert det.fpir.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])
    # FNIR = 1 - (mates at rank 1 scoring >= t) / 3; the rank-2 mate is always a miss.
    assert det.fnir.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert np.all(np.diff(det.fpir) <= 0) and np.all(np.diff(det.fnir) >= 0)


def test_rate_by_bins() -> None:
    bins = m.rate_by_bins([10, 30, 35, 50, 70, 200], [False, True, False, True, True, True], [0, 32, 64, math.inf])
    assert [(b.n, b.hits) for b in bins] == [(2, 1), (2, 1), (2, 2)]
    assert bins[2].rate == 1.0
    assert math.isnan(m.rate_by_bins([], [], [0, 1])[0].rate)


def test_wilson_interval() -> None:
    lo, hi = m.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in m.wilson(0, 0))
