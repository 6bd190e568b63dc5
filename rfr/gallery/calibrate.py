"""Threshold calibration: the cosine-similarity threshold that gives a target false-match rate.

Scores come from labelled faces, embedded through the same path as the probes (:mod:`rfr.gallery.extraction`):

* a folder of labelled faces (``DIR/<identity>/*.jpg``, e.g. LFW): the identities are split in two disjoint
  sets by a seeded hash of the name; the threshold is chosen on the *calibration* identities and the rates are
  reported on the *evaluation* identities, never tuned on the data they are reported on. Genuine pairs: every
  pair of photos of one identity; impostor pairs: every pair of photos of two identities.
* a CSV of pairs (``path_a,path_b,same[,split]``; ``split`` is ``calibration`` or ``evaluation``; rows without
  it are calibration rows).

FMR(t) = share of impostor pairs scoring >= t; FNMR(t) = share of genuine pairs scoring < t. The threshold for a
target FMR is the lowest t with FMR(t) <= target on the calibration pairs.

The evaluation folder split also gets an open-set (watch-list) check: half of its identities with >= 2 photos
are enrolled with their first photo; their other photos are probes that should find them at rank 1 above the
threshold, and the photos of the other half (not enrolled) should find no candidate.

With a cohort (``score_norm=cohort``, :mod:`rfr.gallery.scoring`) the scores are T-norm scores: every ordered
pair (probe photo, other photo), normalised by the probe photo's scores against the cohort (cohort photos of
the probe's own identity left out), so the thresholds are in standard deviations. With a cohort and ``k``
(``score_norm=hubness``) they are CSLS scores ``2 s - r_g``, ``r_g`` the other (gallery-side) photo's mean cosine to
its ``k`` nearest cohort faces, cohort faces of its own identity left out. With a gallery size N, each
target FPIR becomes the per-comparison FMR ``1 - (1 - FPIR)^(1/N)`` and its threshold is stated
(``threshold_policy=gallery_size``); :func:`threshold_table` keeps the calibration half's impostor tail for the
match service to do the same at whatever size the gallery has grown to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rfr.gallery import openset
from rfr.gallery.scoring import Cohort, ThresholdTable, cohort_stats, fmr_for_fpir, hubness_left_out

Scores = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]
_BLOCK = 2048


def split_identities(identities: Sequence[str], eval_fraction: float = 0.5, seed: int = 0
                     ) -> tuple[list[str], list[str]]:
    """Disjoint (calibration, evaluation) identity lists; stable for a given seed whatever the input order."""
    ranked = sorted(set(identities), key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    cut = len(ranked) - round(len(ranked) * eval_fraction)
    return sorted(ranked[:cut]), sorted(ranked[cut:])


def pair_scores(vectors: npt.NDArray[np.float32], labels: Sequence[int] | Labels) -> tuple[Scores, Scores]:
    """(genuine, impostor) cosine scores of every unordered pair of rows (rows must be L2-normalised)."""
    lab = np.asarray(labels)
    genuine: list[npt.NDArray[np.float32]] = []
    impostor: list[npt.NDArray[np.float32]] = []
    n = len(lab)
    for start in range(0, n, _BLOCK):
        block = vectors[start:start + _BLOCK] @ vectors.T
        rows = np.arange(start, min(n, start + _BLOCK))[:, None]
        upper = np.arange(n)[None, :] > rows
        same = lab[rows] == lab[None, :]
        genuine.append(block[upper & same])
        impostor.append(block[upper & ~same])
    return (np.concatenate(genuine).astype(np.float64) if genuine else np.zeros(0),
            np.concatenate(impostor).astype(np.float64) if impostor else np.zeros(0))


def threshold_for_fmr(impostor: Scores, target_fmr: float) -> float:
    """Lowest threshold t with share(impostor >= t) <= target_fmr."""
    if len(impostor) == 0:
        raise ValueError("no impostor scores to calibrate on")
    desc = np.sort(impostor)[::-1]
    k = int(np.floor(target_fmr * len(desc)))
    if k >= len(desc):
        return -1.0
    return float(np.nextafter(desc[k], np.inf))


def rates(genuine: Scores, impostor: Scores, threshold: float) -> dict[str, float]:
    fmr = float(np.mean(impostor >= threshold)) if len(impostor) else float("nan")
    fnmr = float(np.mean(genuine < threshold)) if len(genuine) else float("nan")
    return {"threshold": round(threshold, 6), "fmr": fmr, "fnmr": fnmr, "tmr": 1.0 - fnmr}


def open_set(vectors: npt.NDArray[np.float32], labels: Labels, threshold: float, seed: int = 0) -> dict[str, Any]:
    """Watch-list check: enrol the first photo of half the multi-photo identities, probe with everything else.

    The rates are :mod:`rfr.gallery.openset`'s (rank-1 identification rate, TPIR and FPIR at ``threshold``).
    """
    ids = sorted({int(x) for x in labels})
    multi = [i for i in ids if np.sum(labels == i) >= 2]
    rng = np.random.default_rng(seed)
    enrolled = set(rng.permutation(multi)[: len(multi) // 2].tolist())
    gallery_rows = np.array(sorted(int(np.flatnonzero(labels == i)[0]) for i in enrolled), dtype=np.int64)
    if len(gallery_rows) == 0:
        return {}
    probe_rows = np.array([r for r in range(len(labels)) if r not in set(gallery_rows.tolist())], dtype=np.int64)
    scores = vectors[probe_rows] @ vectors[gallery_rows].T
    subjects = [str(labels[g]) for g in gallery_rows]
    searches = [openset.Search(str(labels[p]), int(labels[p]) in enrolled,
                               openset.aggregate_by_subject(zip(subjects, row.tolist(), strict=True)))
                for p, row in zip(probe_rows, scores, strict=True)]
    mated, nonmated = openset.split_mated(searches)
    point = openset.at_threshold(searches, threshold)
    return {
        "enrolled_identities": len(enrolled), "mated_probes": len(mated), "non_mated_probes": len(nonmated),
        "rank1_at_threshold": point.tpir if mated else None,
        "rank1_any_score": openset.rank_rate(mated, 1) if mated else None,
        "no_candidate_rate_non_mated": 1.0 - point.fpir if nonmated else None,
    }


@dataclass(frozen=True)
class LabelledVectors:
    """Embeddings of labelled photos: ``labels[i]`` indexes ``names``."""

    vectors: npt.NDArray[np.float32]
    labels: Labels
    names: list[str]
    paths: list[str]

    def subset(self, names: Sequence[str]) -> LabelledVectors:
        keep = {self.names.index(n) for n in names if n in self.names}
        rows = np.array([i for i, lab in enumerate(self.labels) if int(lab) in keep], dtype=np.int64)
        return LabelledVectors(self.vectors[rows], self.labels[rows], self.names, [self.paths[i] for i in rows])


def _ordered_pairs(data: LabelledVectors, block_scores: Callable[[npt.NDArray[np.int64]], Scores]
                   ) -> tuple[Scores, Scores]:
    """(genuine, impostor) scores of every ORDERED pair of distinct rows; ``block_scores(rows)``: the scores of
    those rows (the probe side) against every row (len(rows) x N), computed a block of rows at a time."""
    n = len(data.labels)
    genuine: list[Scores] = []
    impostor: list[Scores] = []
    for start in range(0, n, _BLOCK):
        rows = np.arange(start, min(n, start + _BLOCK))
        scores = block_scores(rows)
        other = np.arange(n)[None, :] != rows[:, None]
        same = data.labels[rows][:, None] == data.labels[None, :]
        genuine.append(scores[other & same])
        impostor.append(scores[other & ~same])
    return np.concatenate(genuine).astype(np.float64), np.concatenate(impostor).astype(np.float64)


def _names(data: LabelledVectors) -> list[str]:
    return [data.names[int(i)] for i in data.labels]


def normalised_pair_scores(data: LabelledVectors, cohort: Cohort, top: int = 0) -> tuple[Scores, Scores]:
    """(genuine, impostor) T-norm scores of every ORDERED pair of distinct rows (row = the probe side)."""
    exclude = np.asarray(_names(data))[:, None] == np.asarray(cohort.identities)[None, :]
    mean, std = cohort_stats(data.vectors, cohort.vectors, top, exclude)
    return _ordered_pairs(data, lambda rows: (data.vectors[rows] @ data.vectors.T - mean[rows, None])
                          / std[rows, None])


def hubness_pair_scores(data: LabelledVectors, cohort: Cohort, k: int) -> tuple[Scores, Scores]:
    """(genuine, impostor) CSLS scores ``2 s - r_g`` of every ORDERED pair of distinct rows (column = the gallery
    side, whose ``r_g`` leaves cohort faces of its own identity out: :func:`hubness_left_out`). ``ValueError`` when
    fewer than ``k`` cohort faces remain for a photo."""
    hub = hubness_left_out(data.vectors, _names(data), cohort.vectors, cohort.identities, k)  # (N,)
    return _ordered_pairs(data, lambda rows: 2.0 * (data.vectors[rows] @ data.vectors.T).astype(np.float64)
                          - hub[None, :])


@dataclass(frozen=True)
class ScoreSplit:
    """Genuine / impostor scores of the calibration and the evaluation identities."""

    calib: LabelledVectors
    evaluation: LabelledVectors
    cg: Scores
    ci: Scores
    eg: Scores
    ei: Scores
    score_norm: str = "none"
    hubness_k: int = 0


def split_scores(data: LabelledVectors, eval_fraction: float = 0.5, seed: int = 0, cohort: Cohort | None = None,
                 cohort_top: int = 0, hubness_k: int = 0) -> ScoreSplit:
    """Scores of the two identity halves: cosines, T-norm scores (``cohort``) or CSLS scores (``cohort`` and
    ``hubness_k`` > 0)."""
    present = sorted({data.names[int(i)] for i in data.labels})
    calib_names, eval_names = split_identities(present, eval_fraction, seed)
    calib, evaluation = data.subset(calib_names), data.subset(eval_names)
    if cohort is None:
        return ScoreSplit(calib, evaluation, *pair_scores(calib.vectors, calib.labels),
                          *pair_scores(evaluation.vectors, evaluation.labels))
    if hubness_k:
        return ScoreSplit(calib, evaluation, *hubness_pair_scores(calib, cohort, hubness_k),
                          *hubness_pair_scores(evaluation, cohort, hubness_k), score_norm="hubness",
                          hubness_k=hubness_k)
    return ScoreSplit(calib, evaluation, *normalised_pair_scores(calib, cohort, cohort_top),
                      *normalised_pair_scores(evaluation, cohort, cohort_top), score_norm="cohort")


def gallery_size_points(scores: ScoreSplit, target_fpirs: Sequence[float], gallery_size: int) -> dict[str, Any]:
    """The threshold for each target FPIR at ``gallery_size`` templates (threshold_policy=gallery_size), chosen
    on the calibration impostor scores; FMR / TMR at it on the evaluation half, and the FPIR they predict."""
    points = []
    for target in target_fpirs:
        fmr = fmr_for_fpir(target, gallery_size)
        point: dict[str, Any] = {"target_fpir": target, "per_comparison_fmr": fmr}
        if fmr * len(scores.ci) < 1.0:
            point["threshold"] = None
            point["note"] = f"{len(scores.ci)} calibration impostor scores cannot resolve FMR {fmr:.3g}"
        else:
            t = threshold_for_fmr(scores.ci, fmr)
            ev = rates(scores.eg, scores.ei, t)
            point |= {"threshold": round(t, 6), "evaluation": ev,
                      "predicted_fpir_evaluation": -float(np.expm1(gallery_size * np.log1p(-ev["fmr"])))}
        points.append(point)
    return {"gallery_size": gallery_size, "score_norm": scores.score_norm, "points": points}


def threshold_table(scores: ScoreSplit, model_id: str, cohort_sha256: str = "", source: str = "") -> ThresholdTable:
    """The calibration half's impostor tail as the match service's table (threshold_policy=gallery_size)."""
    return ThresholdTable.from_impostor(scores.ci, model_id, scores.score_norm, cohort_sha256=cohort_sha256,
                                        hubness_k=scores.hubness_k,
                                        source=source)


def calibrate_folder(data: LabelledVectors, target_fmrs: Sequence[float], eval_fraction: float = 0.5,
                     seed: int = 0, scores: ScoreSplit | None = None) -> dict[str, Any]:
    """Thresholds on the calibration identities, rates at those thresholds on the evaluation identities
    (``scores``: precomputed, e.g. T-norm scores of :func:`split_scores` with a cohort)."""
    s = scores or split_scores(data, eval_fraction, seed)
    points = []
    for target in target_fmrs:
        t = threshold_for_fmr(s.ci, target)
        point = {"target_fmr": target, "calibration": rates(s.cg, s.ci, t), "evaluation": rates(s.eg, s.ei, t)}
        if s.score_norm == "none":
            point["evaluation_open_set"] = open_set(s.evaluation.vectors, s.evaluation.labels, t, seed)
        points.append(point)
    return {
        "split": {"seed": seed, "eval_fraction": eval_fraction}, "score_norm": s.score_norm,
        "calibration": _describe(s.calib, s.cg, s.ci), "evaluation": _describe(s.evaluation, s.eg, s.ei),
        "operating_points": points,
    }


def calibrate_pairs(scores: Mapping[str, tuple[Scores, Scores]], target_fmrs: Sequence[float]) -> dict[str, Any]:
    """``scores``: split name ("calibration", optionally "evaluation") -> (genuine, impostor) scores."""
    cg, ci = scores["calibration"]
    points = []
    for target in target_fmrs:
        t = threshold_for_fmr(ci, target)
        point: dict[str, Any] = {"target_fmr": target, "calibration": rates(cg, ci, t)}
        if "evaluation" in scores:
            point["evaluation"] = rates(*scores["evaluation"], t)
        points.append(point)
    return {"pairs": {k: {"genuine": len(g), "impostor": len(i)} for k, (g, i) in scores.items()},
            "operating_points": points}


def _describe(data: LabelledVectors, genuine: Scores, impostor: Scores) -> dict[str, Any]:
    return {
        "identities": len({int(x) for x in data.labels}), "photos": len(data.labels),
        "genuine_pairs": len(genuine), "impostor_pairs": len(impostor),
        "genuine_score_median": float(np.median(genuine)) if len(genuine) else None,
        "impostor_score_median": float(np.median(impostor)) if len(impostor) else None,
        "impostor_score_p99_9": float(np.quantile(impostor, 0.999)) if len(impostor) else None,
    }
