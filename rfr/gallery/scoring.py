"""Open-set scoring levers: cohort score normalisation, fused subject templates, thresholds that follow the gallery.

* **Cohort normalisation (T-norm)**: a probe's cosine scores are restated as how far they stand above that
  probe's scores against a fixed *cohort* of faces that are not in the gallery:
  ``z = (s - mean_c) / std_c`` over the probe's ``top`` highest cohort scores (all of them when ``top`` is 0).
  Per probe this is an increasing map, so the order of a candidate list never changes (rank-k rates are
  untouched); what changes is which lists pass one threshold: a probe that resembles everyone (soft, dark,
  small) no longer passes it as easily as one that resembles no one. Thresholds on normalised scores are in
  standard deviations, not cosines, and must be calibrated with the same cohort (``rfr calibrate --cohort``).
* **Hubness correction (CSLS)**: some gallery templates sit close to many faces ("hubs": an average-looking,
  soft or badly lit photo) and collect strangers' top scores; soft CCTV probes drift toward exactly those. Each
  template's *hubness* ``r_g`` is the mean of its ``k`` highest cosines against a cohort of non-gallery faces (of
  the kind probes are: CCTV-like), and a comparison reads ``2 s - r_g`` (cross-domain similarity local scaling,
  Conneau et al. 2018, "Word translation without parallel data", ICLR). CSLS also subtracts a probe-side term;
  it is left out: it never changes a list's order, only shifts each probe's scores against the threshold, and
  measured it added nothing to the gallery side's gain (benchmarks/eval_score_norms.py, docs/eval/README.md).
  Unlike T-norm, CSLS reorders a candidate list, so it moves rank-1 too; thresholds are on CSLS scores and must
  be calibrated with the same cohort. :mod:`rfr.gallery.hubness` searches a gallery this way
  (``match.score_norm=hubness``).
* **Fused subject template**: several photos of one subject averaged into one unit vector
  (:func:`fuse_template`), against the product's default of one vector per photo scored by the subject's best.
* **Gallery-size threshold**: at a fixed per-comparison threshold the chance that a stranger gets a candidate
  grows with the number of templates compared: FPIR(N) = 1 - (1 - FMR)^N for N independent comparisons. For a
  target FPIR at gallery size N the per-comparison false-match rate is ``1 - (1 - FPIR)^(1/N)``
  (:func:`fmr_for_fpir`); a :class:`ThresholdTable` (measured impostor scores, written by ``rfr calibrate``)
  turns that rate into a threshold.

Nothing here reads the gallery or a model; vectors are float32 rows of unit length (cosine = dot product).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from rfr.embedding.incidents import fuse_templates
from rfr.gallery.base import normalise

if TYPE_CHECKING:
    from rfr.core.settings import MatchSettings

ScoreNorm = Literal["none", "cohort", "hubness"]
Vectors = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
MIN_STD = 1e-3
"""Floor of a probe's cohort standard deviation (cosine units), so a degenerate cohort cannot divide by ~0."""
COHORT_FORMAT = "rfr-cohort-v1"
logger = logging.getLogger(__name__)
TABLE_FORMAT = "rfr-threshold-table-v1"


@dataclass(frozen=True)
class Cohort:
    """Fixed non-gallery faces for T-norm: ``vectors`` (M x D float32 unit rows), one label per row
    (``identities``, so an evaluation can leave a probe's own identity out), and the model they came from."""

    vectors: Vectors
    identities: tuple[str, ...]
    model_id: str
    weights_sha256: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.identities) or len(self.vectors) < 2:
            raise ValueError(f"a cohort needs >= 2 vectors with one identity each, got {self.vectors.shape} "
                             f"and {len(self.identities)} identities")

    def save(self, path: Path) -> Path:
        """Write ``path`` (NumPy ``.npz``, no pickled objects); returns it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": COHORT_FORMAT, "model_id": self.model_id, "weights_sha256": self.weights_sha256,
                "source": self.source, "identities": list(self.identities)}
        with path.open("wb") as fh:
            np.savez(fh, vectors=self.vectors.astype(np.float32), meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load_hashed(cls, path: Path, model_id: str | None = None) -> tuple[Cohort, str]:
        """:meth:`load` of the file's bytes, read once, and their SHA-256 (hex): the hash names exactly the cohort
        loaded. Raises what :meth:`load` and reading the file raise."""
        data = path.read_bytes()
        return cls.load(io.BytesIO(data), model_id), hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path | BinaryIO, model_id: str | None = None) -> Cohort:
        """Read a cohort file (a path, or its bytes as a binary file); ``ValueError`` when it is not one, or was made
        by another model than ``model_id``."""
        name = f"cohort {path}" if isinstance(path, Path) else "the cohort"
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            vectors = normalise(data["vectors"])
        if meta.get("format") != COHORT_FORMAT:
            raise ValueError(f"{name} is not an RFR cohort file ({meta.get('format')!r})")
        if model_id is not None and meta["model_id"] != model_id:
            raise ValueError(f"{name} was embedded by {meta['model_id']!r}, not {model_id!r}: rebuild it")
        return cls(vectors, tuple(meta["identities"]), meta["model_id"], meta["weights_sha256"], meta["source"])


def cohort_stats(probes: Vectors, cohort: Vectors, top: int = 0,
                 exclude: npt.NDArray[np.bool_] | None = None) -> tuple[Floats, Floats]:
    """(mean, std) per probe of its ``top`` highest cohort scores (all when 0), each shape (N,), float64.

    ``exclude`` (N x M booleans): cohort rows left out for that probe (an evaluation's leave-one-identity-out).
    The std is floored at :data:`MIN_STD`. ``ValueError`` when fewer than 2 cohort scores remain for a probe.
    """
    scores = (np.asarray(probes, np.float32) @ np.asarray(cohort, np.float32).T).astype(np.float64)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    kept = scores.shape[1] - (exclude.sum(axis=1) if exclude is not None else np.zeros(len(scores), int))
    k = int(min(top, scores.shape[1])) if top > 0 else scores.shape[1]
    if len(scores) and int(np.min(np.minimum(kept, k))) < 2:
        raise ValueError("fewer than 2 cohort scores for a probe")
    ranked = -np.sort(-scores, axis=1)[:, :k]  # best first; excluded rows (-inf) last
    finite = np.isfinite(ranked)
    n = finite.sum(axis=1)
    vals = np.where(finite, ranked, 0.0)
    mean = vals.sum(axis=1) / n
    var = np.where(finite, (vals - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(1, n - 1)
    return mean, np.maximum(np.sqrt(var), MIN_STD)


def template_hubness(templates: Vectors, cohort: Vectors, k: int,
                     exclude: npt.NDArray[np.bool_] | None = None) -> Floats:
    """Hubness of each gallery template: the mean of its ``k`` highest cosines against the cohort (float64).

    ``templates`` (T x D) and ``cohort`` (M x D) float32 unit rows. Without ``exclude``: shape (T,). With
    ``exclude`` (N x M booleans, the cohort rows left out for each of N probes: an evaluation's leave-one-
    identity-out): shape (N x T), row i computed without probe i's excluded rows. ``ValueError`` when ``k`` < 1 or
    fewer than ``k`` cohort rows remain.
    """
    t = np.asarray(templates, np.float32)
    scores = (np.asarray(cohort, np.float32) @ t.T).astype(np.float64)  # M x T
    if exclude is not None and (exclude.ndim != 2 or exclude.shape[1] != len(scores)):
        raise ValueError(f"exclude must be N x {len(scores)} (one column per cohort row), got {exclude.shape}")
    most_left_out = 0 if exclude is None or not exclude.size else int(exclude.sum(axis=1).max())
    if k < 1 or len(scores) - most_left_out < k:
        raise ValueError(f"hubness over k={k} needs at least k cohort rows left, the cohort has {len(scores)} "
                         f"and up to {most_left_out} are left out")
    if exclude is None:  # the k highest per template, in any order (no full sort)
        plain: Floats = np.partition(scores, len(scores) - k, axis=0)[len(scores) - k:].mean(axis=0)
        return plain
    deep = min(len(scores), k + most_left_out)
    order = np.argsort(-scores, axis=0, kind="stable")[:deep]  # deep x T cohort rows, best first
    best = np.take_along_axis(scores, order, axis=0)
    out = np.empty((len(exclude), t.shape[0]), np.float64)
    for i, left_out in enumerate(exclude):
        kept = ~left_out[order]
        kept &= np.cumsum(kept, axis=0) <= k  # the first k rows not left out, per template
        out[i] = (best * kept).sum(axis=0) / k
    return out


def hubness_left_out(vectors: Vectors, identities: Sequence[str], cohort: Vectors, cohort_identities: Sequence[str],
                     k: int) -> Floats:
    """Each row's hubness with its own identity left out of the cohort: the mean of its ``k`` highest cosines
    against the cohort rows (M x D float32 unit rows, labelled ``cohort_identities``) of other identities than its
    own (``identities``, one per row of ``vectors``, N x D). Shape (N,), float64. ``ValueError`` when ``k`` < 1 or
    fewer than ``k`` cohort rows of other identities remain for a row."""
    scores = (np.asarray(vectors, np.float32) @ np.asarray(cohort, np.float32).T).astype(np.float64)  # N x M
    scores[np.asarray(identities)[:, None] == np.asarray(cohort_identities)[None, :]] = -np.inf
    if k < 1 or int(np.isfinite(scores).sum(axis=1).min(initial=scores.shape[1])) < k:
        raise ValueError(f"hubness over k={k} needs at least k cohort faces of other identities for every row")
    out: Floats = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k:].mean(axis=1)
    return out


def csls(scores: npt.ArrayLike, hubness: npt.ArrayLike) -> Floats:
    """CSLS scores ``2 s - r_g``: ``scores`` (N x T or T,) cosines against T templates, ``hubness`` their
    :func:`template_hubness` (T,) or (N x T)."""
    out: Floats = 2.0 * np.asarray(scores, np.float64) - np.asarray(hubness, np.float64)
    return out


def tnorm(scores: npt.ArrayLike, mean: float | Floats, std: float | Floats) -> Floats:
    """``(scores - mean) / std``; ``scores`` (N x K or K,) against ``mean``/``std`` per probe (N,) or scalars."""
    arr = np.asarray(scores, np.float64)
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if arr.ndim == 2:
        m, s = m.reshape(-1, 1), s.reshape(-1, 1)
    out: Floats = (arr - m) / s
    return out


def fuse_template(vectors: npt.ArrayLike) -> Vectors:
    """One subject template (D,) float32 from several photo vectors (K x D): the mean of their unit vectors,
    renormalised (:func:`rfr.embedding.incidents.fuse_templates`, as multi-still probes are fused)."""
    arr = np.asarray(vectors, np.float32)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError(f"need K x D vectors, got shape {arr.shape}")
    return fuse_templates(list(arr))


def fmr_for_fpir(target_fpir: float, gallery_size: int) -> float:
    """Per-comparison false-match rate that gives ``target_fpir`` over ``gallery_size`` independent comparisons."""
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
    if gallery_size < 1:
        raise ValueError(f"gallery size must be >= 1, got {gallery_size}")
    return -math.expm1(math.log1p(-target_fpir) / gallery_size)


@dataclass(frozen=True)
class ThresholdTable:
    """Thresholds at a grid of per-comparison false-match rates, from measured impostor scores.

    ``fmr`` descending, ``threshold`` ascending, same length; ``score_norm`` says which scores they are on
    (``cohort``: T-norm scores, ``hubness``: CSLS scores with ``hubness_k``; with the cohort file named by
    ``cohort_sha256``, which a service using another cohort file or k refuses).
    """

    fmr: tuple[float, ...]
    threshold: tuple[float, ...]
    model_id: str
    score_norm: str = "none"
    impostor_scores: int = 0
    cohort_sha256: str = ""
    source: str = ""
    hubness_k: int = 0

    @classmethod
    def from_impostor(cls, impostor: npt.ArrayLike, model_id: str, score_norm: str = "none", min_count: int = 10,
                      **extra: Any) -> ThresholdTable:
        """The table of one impostor score sample, rates from 1e-1 down to the smallest it resolves (the rate at
        which ``min_count`` scores lie above the threshold)."""
        scores = np.sort(np.asarray(impostor, np.float64))[::-1]
        if len(scores) < 100:
            raise ValueError(f"{len(scores)} impostor scores: at least 100 are needed")
        lowest = min_count / len(scores)
        grid = [f for f in np.logspace(-1, -9, 81) if f >= lowest]
        thresholds = [float(np.nextafter(scores[math.floor(f * len(scores))], np.inf)) for f in grid]
        return cls(tuple(float(f) for f in grid), tuple(thresholds), model_id, score_norm, len(scores), **extra)

    def threshold_at(self, fmr: float) -> float:
        """Threshold for a per-comparison FMR, interpolated in log(FMR); ``ValueError`` below the table's reach."""
        if fmr < self.fmr[-1] * (1 - 1e-9):
            raise ValueError(f"FMR {fmr:.3g} is below what the table resolves ({self.fmr[-1]:.3g}): calibrate "
                             "on more impostor comparisons")
        x = np.log(np.asarray(self.fmr[::-1]))
        return float(np.interp(math.log(min(fmr, self.fmr[0])), x, np.asarray(self.threshold[::-1])))

    def threshold_for(self, target_fpir: float, gallery_size: int) -> float:
        return self.threshold_at(fmr_for_fpir(target_fpir, gallery_size))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": TABLE_FORMAT, **asdict(self)}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ThresholdTable:
        data = json.loads(path.read_text())
        if data.pop("format", None) != TABLE_FORMAT:
            raise ValueError(f"{path} is not an RFR threshold table")
        data["fmr"], data["threshold"] = tuple(data["fmr"]), tuple(data["threshold"])
        return cls(**data)


def normalise_hits(scores: Sequence[float], mean: float, std: float) -> list[float]:
    """One probe's candidate scores restated on the T-norm scale."""
    return [float(v) for v in tnorm(np.asarray(scores, np.float64), mean, std)]


@dataclass(frozen=True)
class ThresholdRule:
    """How the match service sets each search's review threshold (``MatchSettings``: ``threshold`` or
    ``cohort_threshold`` or ``hubness_threshold``, ``threshold_policy``, ``target_fpir``, ``threshold_table``,
    ``score_norm``, ``cohort_file``, ``cohort_top``, ``hubness_k``).

    ``base(n)``: the threshold on the policy's scale for a gallery of ``n`` templates (``fixed``: ``threshold``;
    ``gallery_size``: the table's threshold for ``target_fpir`` at ``n``). ``per_probe``: each probe's threshold
    on the scale its candidates are scored on: a cosine (``base`` itself, or with a T-norm cohort ``mean + base x
    std`` of that probe's cohort scores, T-norm read backwards so candidate scores stay cosines and their order is
    untouched), or with ``hubness_k`` > 0 ``base`` on the CSLS scale (:mod:`rfr.gallery.hubness` re-scores).
    """

    threshold: float
    policy: str = "fixed"
    target_fpir: float = 0.01
    table: ThresholdTable | None = None
    cohort: Cohort | None = None
    cohort_top: int = 0
    hubness_k: int = 0
    cohort_sha256: str = ""

    def __post_init__(self) -> None:
        if self.hubness_k and (self.cohort is None or len(self.cohort.vectors) < self.hubness_k):
            size = 0 if self.cohort is None else len(self.cohort.vectors)
            raise ValueError(f"hubness over k={self.hubness_k} needs a cohort of at least k faces, got {size}")
        if self.policy == "gallery_size" and self.table is None:
            raise ValueError("threshold_policy gallery_size needs a threshold table (rfr calibrate --table-out)")
        if self.table is not None and self.table.score_norm != self.score_norm:
            raise ValueError(f"the threshold table is on {self.table.score_norm!r} scores, the service normalises "
                             f"{self.score_norm!r}: recalibrate with the same score_norm")
        if self.table is not None and self.table.hubness_k != self.hubness_k:
            raise ValueError(f"the threshold table was calibrated with hubness k={self.table.hubness_k}, the service "
                             f"uses k={self.hubness_k}: recalibrate with the same k")
        if self.table is not None and self.table.cohort_sha256 and self.cohort_sha256 \
                and self.table.cohort_sha256 != self.cohort_sha256:
            raise ValueError("the threshold table was calibrated with another cohort file than the service's: "
                             "recalibrate with the same cohort")

    @property
    def score_norm(self) -> str:
        if self.cohort is None:
            return "none"
        return "hubness" if self.hubness_k else "cohort"

    @classmethod
    def from_settings(cls, settings: MatchSettings, model_id: str) -> ThresholdRule:
        """Load the cohort and table the settings name; ``ValueError`` when missing or of another model."""
        cohort = table = None
        digest = ""
        if settings.score_norm != "none":
            if settings.cohort_file is None:
                raise ValueError(f"match.score_norm={settings.score_norm} needs match.cohort_file (rfr calibrate "
                                 "--cohort-from DIR --cohort FILE, or rfr cohort for CCTV-like faces)")
            cohort, digest = Cohort.load_hashed(settings.cohort_file, model_id)
        if settings.threshold_policy == "gallery_size":
            if settings.threshold_table is None:
                raise ValueError("match.threshold_policy=gallery_size needs match.threshold_table")
            table = ThresholdTable.load(settings.threshold_table)
            if table.model_id != model_id:
                raise ValueError(f"threshold table of {table.model_id!r}, gallery model {model_id!r}: recalibrate")
        threshold = {"none": settings.threshold, "cohort": settings.cohort_threshold,
                     "hubness": settings.hubness_threshold}[settings.score_norm]
        hubness_k = settings.hubness_k if settings.score_norm == "hubness" else 0
        return cls(threshold, settings.threshold_policy, settings.target_fpir, table, cohort, settings.cohort_top,
                   hubness_k, digest)

    def base(self, gallery_size: int | None) -> float:
        if self.policy == "fixed" or self.table is None:
            return self.threshold
        fmr = fmr_for_fpir(self.target_fpir, max(1, gallery_size or 1))
        if fmr < self.table.fmr[-1]:
            logger.warning("gallery of %s templates needs FMR %.3g, below what the threshold table resolves (%.3g): "
                           "using its strictest threshold; recalibrate on more impostor comparisons",
                           gallery_size, fmr, self.table.fmr[-1])
            return self.table.threshold[-1]
        return self.table.threshold_at(fmr)

    def per_probe(self, vectors: Vectors, gallery_size: int | None) -> Floats:
        """Thresholds, shape (N,), of N probe vectors (N x D, unit rows): cosines, or CSLS scores (hubness)."""
        base = self.base(gallery_size)
        if self.cohort is None or self.hubness_k:
            return np.full(len(vectors), base, np.float64)
        mean, std = cohort_stats(vectors, self.cohort.vectors, self.cohort_top)
        out: Floats = mean + base * std
        return out
