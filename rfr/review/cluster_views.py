"""What the review store hands out of clusters (:mod:`rfr.review.clusters`): the list, one cluster with its
sightings and searches. Frozen dataclasses read from :data:`rfr.review.tables.clusters` and its companions; times
are aware UTC.

A sighting's probe is ``kept`` (the review store holds its crop), ``purged`` (retention purged it: the sighting has
left the cluster) or ``missing`` (the store never recorded that probe: its candidate list did not reach the review
service, or not yet). A sighting is ``new`` when it came with a revision after the cluster's last decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, case, func, select

from rfr.core.cluster_messages import CLUSTER_NOTICE
from rfr.review import tables as t


class ClusterStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"
    MERGED = "merged"
    PURGED = "purged"


RETIRED = frozenset({ClusterStatus.MERGED, ClusterStatus.PURGED})
"""Statuses in which a cluster takes no reviewer's step and is never searched."""


@dataclass(frozen=True)
class SightingView:
    face_id: str
    submission_id: str
    retailer_id: str
    store_id: str
    camera_id: str
    captured_at: datetime
    similarity: float
    added_revision: int
    left_reason: str | None
    """None: in the cluster; ``split`` (a reviewer took it out), ``purged`` (retention), ``dropped`` (a later
    revision no longer names it)."""
    probe: str
    """``kept``, ``purged`` or ``missing`` (module docstring)."""
    new: bool


@dataclass(frozen=True)
class ClusterSearchView:
    """A search of the cluster's fused template against the custody gallery: possible candidates for trained human
    review, never an identification."""

    id: int
    trigger: str
    re_search_of: str | None
    searched_at: datetime
    actor: str
    source: str
    revision: int
    threshold: float
    top_k: int
    watch_lists: list[str]
    model_id: str
    candidates: list[dict[str, Any]]


@dataclass(frozen=True)
class ClusterSummary:
    """One row of the clusters page: live sightings only (``stores``/``retailers`` distinct, sorted)."""

    cluster_id: str
    status: str
    revision: int
    sightings: int
    stores: list[str]
    retailers: list[str]
    first_seen: datetime | None
    last_seen: datetime | None
    event_at: datetime
    decided_revision: int | None
    new_sightings: int
    candidates_found: bool


@dataclass(frozen=True)
class ClusterView:
    """One cluster as reviewers see it; ``reopened_by``: a revision recorded after it was dismissed (it stays
    dismissed until a reviewer decides again); ``absorbed``: (cluster id, its status when merged, its decision)."""

    summary: ClusterSummary
    model_id: str
    rule: dict[str, Any]
    merged_into: str | None
    reported_at: datetime
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    purged_at: datetime | None
    sightings: list[SightingView]
    searches: list[ClusterSearchView]
    absorbed: list[tuple[str, str | None]]
    notice: str = CLUSTER_NOTICE

    @property
    def cluster_id(self) -> str:
        return self.summary.cluster_id

    @property
    def status(self) -> str:
        return self.summary.status

    @property
    def later_revision(self) -> bool:
        """A revision arrived after the last decision (its new sightings are marked ``new``)."""
        d = self.summary.decided_revision
        return d is not None and self.summary.revision > d


def read_summaries(conn: Connection, rows: Sequence[Any]) -> list[ClusterSummary]:
    """Summaries of ``rows`` (of :data:`t.clusters`), in their order."""
    ids = [r.cluster_id for r in rows]
    sightings: dict[str, list[Any]] = {}
    for s in conn.execute(select(t.cluster_sightings).where(t.cluster_sightings.c.cluster_id.in_(ids),
                                                           t.cluster_sightings.c.left_reason.is_(None))):
        sightings.setdefault(s.cluster_id, []).append(s)
    cs = t.cluster_searches
    found = set(conn.execute(select(cs.c.cluster_id).where(cs.c.cluster_id.in_(ids), cs.c.candidates != "[]")
                             .distinct()).scalars())
    return [_summary(r, sightings.get(r.cluster_id, []), r.cluster_id in found) for r in rows]


def _summary(row: Any, live: list[Any], candidates_found: bool) -> ClusterSummary:
    times = [s.captured_at for s in live]
    decided = row.decided_revision
    new = sum(1 for s in live if decided is not None and s.added_revision > decided)
    return ClusterSummary(
        cluster_id=row.cluster_id, status=row.status, revision=row.revision, sightings=len(live),
        stores=sorted({f"{s.retailer_id}/{s.store_id}" for s in live}), retailers=sorted({s.retailer_id for s in live}),
        first_seen=min(times, default=None), last_seen=max(times, default=None), event_at=row.event_at,
        decided_revision=decided, new_sightings=new,
        candidates_found=candidates_found)


def list_clusters(conn: Connection, status: str | None, limit: int, offset: int) -> list[ClusterSummary]:
    """Clusters pending first, then by their latest revision's time, newest first; ``status`` filters."""
    c = t.clusters
    query = select(c).order_by(case((c.c.status == ClusterStatus.PENDING, 0), else_=1), c.c.event_at.desc(),
                               c.c.cluster_id).limit(limit).offset(offset)
    if status is not None:
        query = query.where(c.c.status == status)
    return read_summaries(conn, list(conn.execute(query)))


def count_clusters(conn: Connection) -> dict[str, int]:
    """Clusters by status (every status present, 0 when none)."""
    counts = {s.value: 0 for s in ClusterStatus}
    for status, n in conn.execute(select(t.clusters.c.status, func.count()).group_by(t.clusters.c.status)):
        counts[status] = int(n)
    return counts


def read_cluster(conn: Connection, row: Any) -> ClusterView:
    """The whole view of the cluster ``row``."""
    [summary] = read_summaries(conn, [row])
    s, p = t.cluster_sightings, t.probes
    query = (select(s, p.c.purged_at, p.c.crop_jpeg.is_not(None).label("has_crop"), p.c.face_id.label("known"))
             .outerjoin(p, p.c.face_id == s.c.face_id).where(s.c.cluster_id == row.cluster_id)
             .order_by(s.c.left_reason.is_not(None), s.c.captured_at, s.c.face_id))
    decided = row.decided_revision
    sightings = [SightingView(
        face_id=r.face_id, submission_id=r.submission_id, retailer_id=r.retailer_id, store_id=r.store_id,
        camera_id=r.camera_id, captured_at=r.captured_at, similarity=r.similarity, added_revision=r.added_revision,
        left_reason=r.left_reason, probe=_probe_state(r),
        new=decided is not None and r.added_revision > decided and r.left_reason is None)
        for r in conn.execute(query)]
    absorbed = [(a.cluster_id, a.decision) for a in conn.execute(
        select(t.clusters.c.cluster_id, t.clusters.c.decision).where(t.clusters.c.merged_into == row.cluster_id)
        .order_by(t.clusters.c.cluster_id))]
    return ClusterView(
        summary=summary, model_id=row.model_id, rule=json.loads(row.rule), merged_into=row.merged_into,
        reported_at=row.reported_at, decision=row.decision, decided_by=row.decided_by, decided_at=row.decided_at,
        purged_at=row.purged_at, sightings=sightings, searches=read_searches(conn, row.cluster_id), absorbed=absorbed)


def _probe_state(row: Any) -> str:
    if row.known is None:
        return "missing"
    return "purged" if row.purged_at is not None or not row.has_crop else "kept"


def read_searches(conn: Connection, cluster_id: str) -> list[ClusterSearchView]:
    """The cluster's searches, newest first."""
    cs = t.cluster_searches
    return [ClusterSearchView(
        id=r.id, trigger=r.trigger, re_search_of=r.re_search_of, searched_at=r.searched_at, actor=r.actor,
        source=r.source, revision=r.revision, threshold=r.threshold, top_k=r.top_k,
        watch_lists=json.loads(r.watch_lists), model_id=r.model_id, candidates=json.loads(r.candidates))
        for r in conn.execute(select(cs).where(cs.c.cluster_id == cluster_id)
                              .order_by(cs.c.searched_at.desc(), cs.c.id.desc()))]
