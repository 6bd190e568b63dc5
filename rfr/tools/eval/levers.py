"""Scoring one set of embeddings under each scoring lever (the ablation's arithmetic; no model, no detector).

    scored = score(probes, gallery, SCORE_VARIANTS[1], cohorts, top_k=10)   # one Search per probe
    row = metrics(scored.searches, probes.halves, target=0.01)

Exact search (every probe against every gallery template, NumPy), with the gallery's subject-level rule:
``max`` = one vector per photo, a subject scores its best photo (the product today); ``mean`` = a subject's
photos fused into one template (:func:`rfr.gallery.scoring.fuse_template`). Score normalisation is
:func:`rfr.gallery.scoring.cohort_stats` / :func:`~rfr.gallery.scoring.tnorm` (T-norm, per probe) or
:func:`~rfr.gallery.scoring.template_hubness` / :func:`~rfr.gallery.scoring.csls` (per template), each probe's own
identity left out of the cohort.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rfr.gallery import openset as m
from rfr.gallery.scoring import cohort_stats, csls, fuse_template, template_hubness, tnorm
from rfr.tools.eval.splits import CALIBRATION, EVALUATION

Vectors = npt.NDArray[np.float32]
TemplateMode = Literal["max", "mean"]


@dataclass(frozen=True)
class ScoreVariant:
    """How scores are read: ``norm`` 'none', 'cohort' (T-norm over the ``top`` best cohort scores, 0 = all) or
    'hubness' (CSLS, each template's hubness the mean of its ``top`` best scores against the CCTV-like cohort)."""

    name: str
    norm: str = "none"
    top: int = 0


SCORE_VARIANTS = (ScoreVariant("none"), ScoreVariant("cohort (all)", "cohort", 0),
                  ScoreVariant("cohort (top 50)", "cohort", 50))
HUBNESS_VARIANTS = tuple(ScoreVariant(f"hubness (k {k})", "hubness", k) for k in (5, 10, 20))
"""CSLS with k = 5, 10, 20: the ablation reports the one that did best on the calibration half."""


@dataclass(frozen=True)
class Cohorts:
    """Non-gallery faces of one embedder, labelled by identity so a probe's own identity can be left out:
    ``tnorm`` (original photos: T-norm) and ``hub`` (CCTV-like probes of strangers: hubness)."""

    tnorm: Vectors | None = None
    tnorm_ids: tuple[str, ...] = ()
    hub: Vectors | None = None
    hub_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GalleryVectors:
    """Gallery templates grouped by subject: ``rows[i]`` (K_i x D) are the photos of ``subjects[i]``."""

    subjects: tuple[str, ...]
    rows: tuple[Vectors, ...]

    def matrix(self, mode: TemplateMode) -> tuple[Vectors, npt.NDArray[np.int64]]:
        """(templates, subject index of each template): one per photo (max) or one fused per subject (mean)."""
        if mode == "mean":
            return np.stack([fuse_template(r) for r in self.rows]), np.arange(len(self.rows))
        owners = np.concatenate([np.full(len(r), i) for i, r in enumerate(self.rows)]).astype(np.int64)
        return np.concatenate(self.rows).astype(np.float32), owners

    @property
    def templates(self) -> int:
        return sum(len(r) for r in self.rows)


@dataclass(frozen=True)
class ProbeSet:
    """One condition's probes: a vector per probe (zeros when no face was found), who they are, which half,
    and whether the deployed pipeline searches them (False: not found or gated)."""

    vectors: Vectors
    subjects: tuple[str, ...]
    mated: tuple[bool, ...]
    halves: tuple[str, ...]
    searched: tuple[bool, ...]
    identities: tuple[str, ...]
    sample_ids: tuple[str, ...]


def subject_scores(probes: Vectors, gallery: GalleryVectors, mode: TemplateMode = "max") -> npt.NDArray[np.float64]:
    """N x S scores of each probe against each subject (best photo, or the fused template)."""
    templates, owners = gallery.matrix(mode)
    return _by_subject((probes @ templates.T).astype(np.float64), owners, len(gallery.rows))


def _by_subject(raw: npt.NDArray[np.float64], owners: npt.NDArray[np.int64], subjects: int
                ) -> npt.NDArray[np.float64]:
    """N x T template scores -> N x S, each subject its best template (``owners``: the subject of each template)."""
    if len(owners) == subjects:  # one template a subject (a fused gallery, or one photo each): already by subject
        return raw
    out = np.full((len(raw), subjects), -np.inf)
    np.maximum.at(out.T, owners, raw.T)
    return out


def _left_out(probes: ProbeSet, cohort_ids: Sequence[str]) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = np.asarray(probes.identities)[:, None] == np.asarray(cohort_ids)[None, :]
    return out


def template_scores(probes: ProbeSet, templates: Vectors, variant: ScoreVariant, cohorts: Cohorts
                    ) -> npt.NDArray[np.float64]:
    """N x T scores of the probes against the templates: cosines, or CSLS when the variant reads hubness (each
    template's hubness computed without the probe's own identity in the cohort)."""
    raw = (probes.vectors @ templates.T).astype(np.float64)
    if variant.norm != "hubness":
        return raw
    if cohorts.hub is None:
        raise ValueError("hubness without a CCTV-like cohort")
    return csls(raw, template_hubness(templates, cohorts.hub, variant.top, _left_out(probes, cohorts.hub_ids)))


def normalised(probes: ProbeSet, scores: npt.NDArray[np.float64], variant: ScoreVariant, cohorts: Cohorts
               ) -> npt.NDArray[np.float64]:
    """The scores T-normed when the variant says so; the probe's own identity is left out of the cohort."""
    if variant.norm != "cohort":
        return scores
    if cohorts.tnorm is None:
        raise ValueError("cohort normalisation without a cohort")
    mean, std = cohort_stats(probes.vectors, cohorts.tnorm, variant.top, _left_out(probes, cohorts.tnorm_ids))
    return tnorm(scores, mean, std)


def searches(probes: ProbeSet, scores: npt.NDArray[np.float64], subjects: Sequence[str], top_k: int
             ) -> list[m.Search]:
    """One :class:`~rfr.gallery.openset.Search` per probe (empty candidates when not searched)."""
    k = min(top_k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = []
    for i, row in enumerate(best):
        cands = tuple((subjects[j], float(scores[i, j])) for j in row) if probes.searched[i] else ()
        out.append(m.Search(probes.subjects[i], probes.mated[i], cands))
    return out


def metrics(found: Sequence[m.Search], halves: Sequence[str], target: float) -> dict[str, Any]:
    """rank-1 (all mated), TPIR at ``target`` FPIR calibrated on the calibration half and measured on the
    evaluation half, and the in-sample TPIR at that FPIR over both halves."""
    cal = [s for s, h in zip(found, halves, strict=True) if h == CALIBRATION]
    ev = [s for s, h in zip(found, halves, strict=True) if h == EVALUATION]
    c = m.calibrate(cal, ev, target)
    both = m.at_fpir(found, target)
    return {"rank1": m.rank_rate(found, 1), "tpir": c.evaluation.tpir, "fpir": c.evaluation.fpir,
            "threshold": c.threshold, "cal_tpir": c.calibration.tpir, "in_sample_tpir": both.tpir,
            "n_mated_eval": c.evaluation.n_mated, "n_nonmated_eval": c.evaluation.n_nonmated}


@dataclass
class Scored:
    """The searches of one probe set under one variant, and the seconds the normalisation took."""

    searches: list[m.Search]
    norm_seconds: float


def score(probes: ProbeSet, gallery: GalleryVectors, variant: ScoreVariant, cohorts: Cohorts, top_k: int,
          mode: TemplateMode = "max") -> Scored:
    """The searches under ``variant``; ``norm_seconds`` times only T-norm, the per-search cost a deployment pays.
    Hubness is not timed: a deployment computes each template's ``r_g`` once, at enrolment (here it is recomputed
    per probe, only to leave the probe's own identity out)."""
    templates, owners = gallery.matrix(mode)
    raw = _by_subject(template_scores(probes, templates, variant, cohorts), owners, len(gallery.rows))
    started = time.perf_counter()
    read = normalised(probes, raw, variant, cohorts)
    seconds = time.perf_counter() - started
    return Scored(searches(probes, read, gallery.subjects, top_k), seconds)


def impostor_comparisons(probes: ProbeSet, gallery: GalleryVectors, variant: ScoreVariant, cohorts: Cohorts
                         ) -> npt.NDArray[np.float64]:
    """The per-comparison FMR sample: every score of a searched calibration-half probe against a gallery
    template of another subject (strangers: every template; mated probes: all but their mate's)."""
    keep = [i for i in range(len(probes.subjects)) if probes.halves[i] == CALIBRATION and probes.searched[i]]
    subset = subset_probes(probes, keep)
    templates, owners = gallery.matrix("max")
    raw = normalised(subset, template_scores(subset, templates, variant, cohorts), variant, cohorts)
    owner_ids = np.asarray(gallery.subjects)[owners]
    impostor = np.asarray(subset.subjects)[:, None] != owner_ids[None, :]
    out: npt.NDArray[np.float64] = raw[impostor]
    return out


def subset_probes(probes: ProbeSet, keep: Sequence[int]) -> ProbeSet:
    idx = list(keep)

    def pick(values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(values[i] for i in idx)

    return ProbeSet(probes.vectors[idx], pick(probes.subjects), pick(probes.mated), pick(probes.halves),
                    pick(probes.searched), pick(probes.identities), pick(probes.sample_ids))


def subset_gallery(gallery: GalleryVectors, keep: Sequence[int]) -> GalleryVectors:
    return GalleryVectors(tuple(gallery.subjects[i] for i in keep), tuple(gallery.rows[i] for i in keep))


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
