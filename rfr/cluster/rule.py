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

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ClusterRule:
    """Thresholds of the rule (cosine similarities in [-1, 1]; defaults: rfr.core.settings.ClusterSettings)."""

    link_threshold: float
    merge_threshold: float
    min_sightings: int = 3
    min_stores: int = 2
    neighbours: int = 16
    linkage: Literal["centroid", "average"] = "centroid"

    def similarity(self, template: Vector, cluster: Centroid) -> float:
        """How similar a unit ``template`` is to ``cluster`` under :attr:`linkage`."""
        if self.linkage == "average":
            return float(template @ cluster.total) / cluster.count
        return float(template @ cluster.template)

    def cluster_similarity(self, a: Centroid, b: Centroid) -> float:
        """How similar two clusters are under :attr:`linkage` (fused templates, or the mean over member pairs)."""
        if self.linkage == "average":
            return float(a.total @ b.total) / (a.count * b.count)
        return float(a.template @ b.template)

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
    sims = [rule.similarity(template, candidates[c]) for c in ids]
    best = int(np.argmax(sims))
    if sims[best] < rule.link_threshold:
        return Assignment(None, sims[best])
    joined = ids[best]
    grown = Centroid(candidates[joined].total + template, candidates[joined].count + 1)
    merge = tuple(c for c in ids
                  if c != joined and rule.cluster_similarity(grown, candidates[c]) >= rule.merge_threshold)
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
