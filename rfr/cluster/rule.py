"""The cluster rule: which earlier unknown person a new unknown face joins, when clusters merge, when one is reported.

Incremental centroid linkage over unit templates (cosine similarity):

* a new face looks up its nearest earlier unknown faces (:attr:`ClusterRule.neighbours`); the clusters they belong
  to are its candidates;
* it joins the candidate whose fused template (the normalised mean of its members' unit vectors) it is most similar
  to, if that similarity is at least ``link_threshold``; else it starts a cluster of its own;
* the cluster it joined then absorbs every other candidate whose fused template is at least ``merge_threshold``
  similar to its own new one (a face that bridges two clusters of one person);
* with ``linkage="average"`` (a lever the benchmark measures) "similarity" is instead the mean cosine of the face
  to the cluster's members (of two clusters: over all member pairs), ``total . v / count``: the centroid cosine
  times the cluster's tightness ``|total| / count``, so a loose (mixed) cluster attracts less; same state kept;
* with a :class:`Hubness` correction (``cluster.hubness_k`` > 0 and a cohort file) every similarity above is read
  as ``s - (r_a + r_b) / 2``, where ``r`` of a face or fused template is its mean top-k cosine to a fixed cohort
  of CCTV-like faces of people not sought (CSLS, Conneau et al. 2018, halved so that it stays on a cosine-like
  scale): a soft, average-looking face that resembles everyone (a hub) must be closer to join;
* a cluster is reported once it has ``min_sightings`` faces from ``min_stores`` distinct stores.

Comparing with fused templates rather than with single faces keeps one stray lookalike from chaining two people
together (single linkage), and a fused template of several stills is a better likeness than any one of them.
The thresholds are calibrated by benchmarks/bench_cluster.py on one split of the shared faces and reported on
another. Pure functions and an in-memory :class:`MemoryClusters` (for the benchmark and tests): the cluster
service keeps the same state durably (rfr/cluster/store.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from rfr.gallery.scoring import template_hubness

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Hubness:
    """The hubness of a unit vector: the mean of its ``k`` highest cosines to ``cohort`` (M x D float32 unit rows,
    faces of people not sought, made the way the stream's faces are: ``rfr cohort``), from model ``model_id``;
    ``sha256`` names the cohort file (provenance in cluster events). ValueError when ``k`` < 1, the cohort has
    fewer than ``k`` rows, or it is not a 2-D array."""

    cohort: Vector
    k: int
    model_id: str
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.cohort.ndim != 2 or self.k < 1 or len(self.cohort) < self.k:
            raise ValueError(f"hubness over k={self.k} needs a cohort of >= k rows, got shape {self.cohort.shape}")

    def of(self, vector: Vector) -> float:
        """Hubness of one unit ``vector`` (float32, ``(D,)``), a cosine in [-1, 1]."""
        return float(template_hubness(vector[None, :], self.cohort, self.k)[0])


@dataclass(frozen=True)
class ClusterRule:
    """Thresholds of the rule (cosine similarities in [-1, 1]; defaults: rfr.core.settings.ClusterSettings)."""

    link_threshold: float
    merge_threshold: float
    min_sightings: int = 3
    min_stores: int = 2
    neighbours: int = 16
    linkage: Literal["centroid", "average"] = "centroid"
    hubness: Hubness | None = None  # compared by identity: a corrected rule never equals a plain one

    def hub(self, vector: Vector) -> float:
        """The hubness of a unit ``vector`` under :attr:`hubness` (0.0 without a correction)."""
        return 0.0 if self.hubness is None else self.hubness.of(vector)

    def similarity(self, template: Vector, cluster: Centroid, template_hub: float | None = None,
                   cluster_hub: float | None = None) -> float:
        """How similar a unit ``template`` is to ``cluster`` under :attr:`linkage`, hubness-corrected when the rule
        has a correction (``template_hub``, ``cluster_hub``: their :meth:`hub` of the template and of the cluster's
        fused template, when already known)."""
        if self.linkage == "average":
            plain = float(template @ cluster.total) / cluster.count
        else:
            plain = float(template @ cluster.template)
        return self._corrected(plain, template, cluster.template, template_hub, cluster_hub)

    def cluster_similarity(self, a: Centroid, b: Centroid, a_hub: float | None = None,
                           b_hub: float | None = None) -> float:
        """How similar two clusters are under :attr:`linkage` (fused templates, or the mean over member pairs),
        hubness-corrected when the rule has a correction (``a_hub``, ``b_hub`` as in :meth:`similarity`)."""
        if self.linkage == "average":
            plain = float(a.total @ b.total) / (a.count * b.count)
        else:
            plain = float(a.template @ b.template)
        return self._corrected(plain, a.template, b.template, a_hub, b_hub)

    def _corrected(self, plain: float, a: Vector, b: Vector, a_hub: float | None, b_hub: float | None) -> float:
        if self.hubness is None:
            return plain
        ra = self.hub(a) if a_hub is None else a_hub
        rb = self.hub(b) if b_hub is None else b_hub
        return plain - (ra + rb) / 2

    def reportable(self, sightings: int, stores: int) -> bool:
        """Whether a cluster of ``sightings`` faces from ``stores`` distinct stores is reported."""
        return sightings >= self.min_sightings and stores >= self.min_stores


@dataclass(frozen=True)
class Centroid:
    """A cluster's running sum of member unit vectors (float32, shape ``(dim,)``) and member count."""

    total: Vector
    count: int

    @property
    def template(self) -> Vector:
        """The fused template: the normalised mean of the members' unit vectors."""
        return unit(self.total)


@dataclass(frozen=True)
class Assignment:
    """What a new face does: join ``cluster_id`` (None: start a new cluster) with ``similarity`` to its fused
    template, after which the clusters in ``merge`` are absorbed into it."""

    cluster_id: str | None
    similarity: float
    merge: tuple[str, ...] = ()


def unit(vector: npt.ArrayLike) -> Vector:
    """``vector`` scaled to length 1 (float32). Raises ValueError for a zero or non-finite vector."""
    arr = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(arr))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("a template must be a finite, non-zero vector")
    return arr / np.float32(norm)


def assign(template: Vector, candidates: Mapping[str, Centroid], rule: ClusterRule) -> Assignment:
    """The rule for one new unit ``template`` (float32, ``(dim,)``) given the ``candidates`` (the clusters of its
    nearest earlier faces, by id). Ties go to the lexically first cluster id, so a replay decides the same way."""
    if not candidates:
        return Assignment(None, 0.0)
    ids = sorted(candidates)
    own = rule.hub(template)
    hubs = [rule.hub(candidates[c].template) for c in ids]  # each one's hubness, once (0.0 without a correction)
    sims = [rule.similarity(template, candidates[c], own, h) for c, h in zip(ids, hubs, strict=True)]
    best = int(np.argmax(sims))
    if sims[best] < rule.link_threshold:
        return Assignment(None, sims[best])
    joined = ids[best]
    grown = Centroid(candidates[joined].total + template, candidates[joined].count + 1)
    grown_hub = rule.hub(grown.template)
    merge = tuple(c for c, h in zip(ids, hubs, strict=True) if c != joined
                  and rule.cluster_similarity(grown, candidates[c], grown_hub, h) >= rule.merge_threshold)
    return Assignment(joined, sims[best], merge)


@dataclass
class MemoryClusters:
    """The rule run over faces one at a time, all in memory (exact nearest neighbours): for the benchmark and tests.

    ``add`` returns the cluster id the face ended in. Cluster ids are ``c<n>`` in order of creation; a merged
    cluster keeps the id of the one the face joined.
    """

    rule: ClusterRule
    vectors: list[Vector] = field(default_factory=list)
    member_of: list[str] = field(default_factory=list)
    centroids: dict[str, Centroid] = field(default_factory=dict)
    members: dict[str, list[int]] = field(default_factory=dict)
    merges: int = 0
    _matrix: Vector = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)

    def add(self, template: npt.ArrayLike) -> str:
        vec = unit(template)
        candidates: dict[str, Centroid] = {}
        if self.vectors:
            sims = self._matrix[: len(self.vectors)] @ vec
            for i in np.argsort(-sims, kind="stable")[: self.rule.neighbours]:
                cid = self.member_of[int(i)]
                candidates[cid] = self.centroids[cid]
        decision = assign(vec, candidates, self.rule)
        cid = decision.cluster_id or f"c{len(self.centroids) + self.merges}"
        old = self.centroids.get(cid, Centroid(np.zeros_like(vec), 0))
        self.centroids[cid] = Centroid(old.total + vec, old.count + 1)
        self.members.setdefault(cid, []).append(len(self.vectors))
        self._keep(vec)
        self.member_of.append(cid)
        for other in decision.merge:
            self._absorb(cid, other)
        return cid

    def _keep(self, vec: Vector) -> None:
        """Append ``vec`` to :attr:`vectors` and to the matrix searched (grown by doubling, not re-stacked)."""
        n = len(self.vectors)
        if n == len(self._matrix) or self._matrix.shape[1] != len(vec):
            grown = np.zeros((max(64, 2 * n), len(vec)), np.float32)
            grown[:n] = np.stack(self.vectors) if n else grown[:0]
            self._matrix = grown
        self._matrix[n] = vec
        self.vectors.append(vec)

    def _absorb(self, into: str, other: str) -> None:
        gone = self.centroids.pop(other)
        kept = self.centroids[into]
        self.centroids[into] = Centroid(kept.total + gone.total, kept.count + gone.count)
        for i in self.members.pop(other):
            self.member_of[i] = into
            self.members[into].append(i)
        self.merges += 1

    def labels(self) -> list[str]:
        """The cluster of each face added, in order of adding."""
        return list(self.member_of)


def pairwise_scores(truth: Sequence[str], found: Sequence[str]) -> dict[str, float]:
    """Pairwise precision and recall and BCubed precision, recall and F of a clustering ``found`` against the true
    identities ``truth`` (one label per item; singletons of strangers count as their own clusters).

    Pairwise: over all pairs of items, precision = pairs together in both / pairs together in ``found``; recall =
    pairs together in both / pairs together in ``truth`` (1.0 when there are no such pairs). BCubed (Bagga and
    Baldwin 1998): per item, the share of its found cluster that is of its identity (precision) and of its identity
    that is in its found cluster (recall), averaged over items; F is their harmonic mean."""
    if len(truth) != len(found):
        raise ValueError("truth and found must label the same items")
    t = np.asarray(truth)
    f = np.asarray(found)
    same_t = t[:, None] == t[None, :]
    same_f = f[:, None] == f[None, :]
    off = ~np.eye(len(t), dtype=bool)
    both = int((same_t & same_f & off).sum())
    in_f = int((same_f & off).sum())
    in_t = int((same_t & off).sum())
    both_items = (same_t & same_f).sum(axis=1)
    b_precision = float(np.mean(both_items / same_f.sum(axis=1))) if len(t) else 1.0
    b_recall = float(np.mean(both_items / same_t.sum(axis=1))) if len(t) else 1.0
    b_f = 2 * b_precision * b_recall / (b_precision + b_recall) if b_precision + b_recall else 0.0
    return {"pairwise_precision": both / in_f if in_f else 1.0, "pairwise_recall": both / in_t if in_t else 1.0,
            "bcubed_precision": b_precision, "bcubed_recall": b_recall, "bcubed_f": b_f}
