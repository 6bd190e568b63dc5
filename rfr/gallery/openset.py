"""Open-set identification metrics on plain score lists (the ISO/IEC 19795-1 / NIST FRVT 1:N conventions).

A *search* is one probe compared with the gallery: its true subject, whether that subject is enrolled
(*mated*) and its candidate list, one entry per gallery subject (the best score of that subject's
templates), best first. A probe whose face was not found was not searched: its candidate list is empty,
so a mated one is a miss at every rank and threshold and a non-mated one raises no false alarm.

* rank-k identification rate: mated searches whose mate is among the first k candidates.
* TPIR(T, R): mated searches whose mate is at rank <= R with score >= T; FNIR = 1 - TPIR.
* FPIR(T): non-mated searches whose best candidate scores >= T.
* the threshold for a target FPIR: the smallest multiple of ``step`` above the (m+1)-th highest non-mated
  top score, m = floor(target x n), so FPIR on those searches is <= target. With fewer than 1/target
  non-mated searches that bound is not resolvable (flagged ``resolvable=False``).

Higher scores mean more similar (cosine similarity in RFR). Nothing here reads files or models.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from rfr.gallery.base import best_per_subject

NO_SCORE = -math.inf
"""The score of a search with no candidate (or of a mate that is not in the list)."""

Candidates = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Search:
    """One probe search. ``candidates``: (subject, score) per subject, best first; empty when not searched."""

    true_subject: str
    mated: bool
    candidates: Candidates


def aggregate_by_subject(hits: Iterable[tuple[str, float]], limit: int | None = None) -> Candidates:
    """Template hits -> one candidate per subject with its best score, best first (ties by subject id)."""
    ranked = [(subject, float(score)) for subject, score in best_per_subject(hits, itemgetter(0), itemgetter(1))]
    return tuple(ranked if limit is None else ranked[:limit])


def mate_rank(search: Search) -> int | None:
    """1-based rank of the true subject in the candidate list, or None when absent."""
    for rank, (subject, _) in enumerate(search.candidates, start=1):
        if subject == search.true_subject:
            return rank
    return None


def top_score(search: Search) -> float:
    return search.candidates[0][1] if search.candidates else NO_SCORE


def mate_score(search: Search, max_rank: int = 1) -> float:
    """The mate's score when it is at rank <= ``max_rank``, else :data:`NO_SCORE`."""
    rank = mate_rank(search)
    return search.candidates[rank - 1][1] if rank is not None and rank <= max_rank else NO_SCORE


def split_mated(searches: Iterable[Search]) -> tuple[list[Search], list[Search]]:
    mated: list[Search] = []
    nonmated: list[Search] = []
    for s in searches:
        (mated if s.mated else nonmated).append(s)
    return mated, nonmated


def cmc(searches: Sequence[Search], max_rank: int) -> list[float]:
    """Cumulative match characteristic: rank-1 .. rank-``max_rank`` identification rates over mated searches."""
    mated, _ = split_mated(searches)
    if not mated:
        return [math.nan] * max_rank
    counts = np.zeros(max_rank + 1, np.int64)
    for s in mated:
        rank = mate_rank(s)
        if rank is not None and rank <= max_rank:
            counts[rank] += 1
    return [float(v) for v in np.cumsum(counts)[1:] / len(mated)]


def rank_rate(searches: Sequence[Search], k: int) -> float:
    """Rank-k identification rate over the mated searches (NaN when there are none)."""
    return cmc(searches, k)[k - 1]


def _share_passing(values: Sequence[float], threshold: float) -> float:
    """Share of ``values`` >= ``threshold``; :data:`NO_SCORE` (nothing searched or found) never passes."""
    if not values:
        return math.nan
    arr = np.asarray(values, np.float64)
    return float(np.count_nonzero(np.isfinite(arr) & (arr >= threshold)) / len(arr))


def fpir_at(nonmated_top: Sequence[float], threshold: float) -> float:
    return _share_passing(nonmated_top, threshold)


def tpir_at(mated_scores: Sequence[float], threshold: float) -> float:
    return _share_passing(mated_scores, threshold)


def threshold_for_fpir(nonmated_top: Sequence[float], target: float, step: float = 1e-4) -> float:
    """The smallest multiple of ``step`` at which FPIR on ``nonmated_top`` is <= ``target``."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target}")
    if not nonmated_top:
        raise ValueError("no non-mated searches to calibrate on")
    ranked = sorted(nonmated_top, reverse=True)
    allowed = math.floor(target * len(ranked) + 1e-9)
    bound = ranked[allowed]  # the highest score that must fall below the threshold
    if not math.isfinite(bound):
        return -math.inf  # so few non-mated searches returned candidates that any threshold meets the target
    threshold = (math.floor(bound / step) + 1) * step
    while threshold <= bound:  # floating-point rounding
        threshold += step
    return round(threshold, 12)


@dataclass(frozen=True)
class OperatingPoint:
    """TPIR/FPIR at one threshold; ``resolvable`` is False when n_nonmated < 1 / target_fpir."""

    target_fpir: float | None
    threshold: float
    fpir: float
    tpir: float
    n_mated: int
    n_nonmated: int
    resolvable: bool = True

    @property
    def fnir(self) -> float:
        return 1.0 - self.tpir


def scores(searches: Sequence[Search], max_rank: int = 1) -> tuple[list[float], list[float]]:
    """(mate scores of mated searches at rank <= max_rank, top scores of non-mated searches)."""
    mated, nonmated = split_mated(searches)
    return [mate_score(s, max_rank) for s in mated], [top_score(s) for s in nonmated]


def at_threshold(searches: Sequence[Search], threshold: float, max_rank: int = 1,
                 target_fpir: float | None = None) -> OperatingPoint:
    mated, nonmated = scores(searches, max_rank)
    resolvable = target_fpir is None or len(nonmated) * target_fpir >= 1.0 - 1e-9
    return OperatingPoint(target_fpir, threshold, fpir_at(nonmated, threshold), tpir_at(mated, threshold),
                          len(mated), len(nonmated), resolvable)


def at_fpir(searches: Sequence[Search], target: float, max_rank: int = 1) -> OperatingPoint:
    """The operating point whose threshold gives FPIR <= ``target`` on these same searches (in-sample)."""
    _, nonmated = scores(searches, max_rank)
    return at_threshold(searches, threshold_for_fpir(nonmated, target), max_rank, target)


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen on a calibration split, measured on a disjoint evaluation split."""

    target_fpir: float
    threshold: float
    calibration: OperatingPoint
    evaluation: OperatingPoint


def calibrate(calibration: Sequence[Search], evaluation: Sequence[Search], target: float,
              max_rank: int = 1) -> Calibration:
    cal = at_fpir(calibration, target, max_rank)
    ev = at_threshold(evaluation, cal.threshold, max_rank, target)
    return Calibration(target, cal.threshold, cal, ev)


@dataclass(frozen=True)
class DetCurve:
    """FNIR and FPIR at every distinct score used as a threshold, thresholds ascending."""

    thresholds: npt.NDArray[np.float64]
    fpir: npt.NDArray[np.float64]
    fnir: npt.NDArray[np.float64]


def det_curve(searches: Sequence[Search], max_rank: int = 1) -> DetCurve:
    mated_l, nonmated_l = scores(searches, max_rank)
    mated, nonmated = np.sort(np.asarray(mated_l, np.float64)), np.sort(np.asarray(nonmated_l, np.float64))
    every = np.concatenate([mated, nonmated])
    thresholds = np.unique(every[np.isfinite(every)])
    # count of scores >= t = n - (count of scores < t)
    fpir = (len(nonmated) - np.searchsorted(nonmated, thresholds, side="left")) / max(1, len(nonmated))
    tpir = (len(mated) - np.searchsorted(mated, thresholds, side="left")) / max(1, len(mated))
    return DetCurve(thresholds, fpir.astype(np.float64), (1.0 - tpir).astype(np.float64))


@dataclass(frozen=True)
class Bin:
    """Searches whose quality value lies in [lo, hi): how many, and how many were hits."""

    lo: float
    hi: float
    n: int
    hits: int

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else math.nan


def rate_by_bins(values: Sequence[float], hits: Sequence[bool], edges: Sequence[float]) -> list[Bin]:
    """Hit rate per bin [edges[i], edges[i+1]); values outside every bin are left out."""
    if len(values) != len(hits):
        raise ValueError("values and hits differ in length")
    v, h = np.asarray(values, np.float64), np.asarray(hits, bool)
    out = []
    for lo, hi in itertools.pairwise(edges):
        inside = (v >= lo) & (v < hi)
        out.append(Bin(float(lo), float(hi), int(inside.sum()), int((inside & h).sum())))
    return out


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % by default); (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
