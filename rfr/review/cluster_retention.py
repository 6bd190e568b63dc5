"""Clusters follow the probe retention policy (:mod:`rfr.review.retention`): they are purged with their probes.

* :func:`leave_clusters`, in the transaction that purges a probe: its sightings leave every cluster (``purged``);
* :func:`purge_unheld`, once a pass: a sighting whose probe the review store never held (its candidate list never
  reached the review service) leaves its clusters ``no_candidate_days`` after it was captured, as its probe would
  have been purged;

after either, a cluster left without sightings is purged: its fused template set to NULL, status ``purged``, its
row kept as the record of what was reported and decided, audited as ``cluster_purged``; a cluster that keeps
sightings gets its fused template made again from the templates the store keeps of them (so nothing of a purged
face stays in it; where the store keeps none, the last reported template stays).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine, exists, or_, select, update

from rfr.review import tables as t
from rfr.review.cluster_views import ClusterStatus
from rfr.review.clusters import fused_template, live_faces
from rfr.review.outbox import SYSTEM_ROLE, AuditSink

logger = logging.getLogger(__name__)


def leave_clusters(conn: Connection, audit: AuditSink, face_id: str, now: datetime, actor: str,
                   rule: str) -> list[str]:
    """In the caller's transaction (retention's purge of probe ``face_id``): its sightings leave every cluster, then
    :func:`settle` those clusters. Returns the clusters it was in (sorted)."""
    s = t.cluster_sightings
    ids = sorted(set(conn.execute(select(s.c.cluster_id).where(s.c.face_id == face_id)).scalars()))
    if ids:
        in_it = or_(s.c.left_reason.is_(None), s.c.left_reason == "dropped")
        conn.execute(update(s).where(s.c.face_id == face_id, in_it).values(left_reason="purged", left_at=now))
        settle(conn, audit, ids, now, actor, rule)
    return ids


def purge_unheld(engine: Engine, audit: AuditSink, before: datetime, now: datetime, actor: str) -> list[str]:
    """Sightings captured before ``before`` whose probe the store never held leave their clusters (one
    transaction); returns their face ids."""
    s, p = t.cluster_sightings, t.probes
    with engine.begin() as conn:
        rows = conn.execute(select(s.c.cluster_id, s.c.face_id).where(
            s.c.left_reason.is_(None), s.c.captured_at < before,
            ~exists().where(p.c.face_id == s.c.face_id))).all()
        if not rows:
            return []
        faces = sorted({r.face_id for r in rows})
        conn.execute(update(s).where(s.c.face_id.in_(faces), s.c.left_reason.is_(None))
                     .values(left_reason="purged", left_at=now))
        settle(conn, audit, sorted({r.cluster_id for r in rows}), now, actor, "no_candidate")
    logger.info("retention: %d sighting(s) of probes the review store never held left their clusters", len(faces))
    return faces


def settle(conn: Connection, audit: AuditSink, cluster_ids: list[str], now: datetime, actor: str, rule: str) -> None:
    """After sightings left ``cluster_ids``: each cluster without a sighting is purged (audited), the others'
    templates are made again from their sightings' kept templates."""
    c = t.clusters
    for row in conn.execute(select(c).where(c.c.cluster_id.in_(cluster_ids)).with_for_update()).all():
        live = live_faces(conn, row.cluster_id)
        if live:
            template = fused_template(conn, live)
            if template is not None:
                conn.execute(update(c).where(c.c.cluster_id == row.cluster_id).values(template=template))
            continue
        if row.template is None:
            continue  # purged already
        status = row.status if row.status == ClusterStatus.MERGED else ClusterStatus.PURGED
        conn.execute(update(c).where(c.c.cluster_id == row.cluster_id)
                     .values(template=None, status=status, purged_at=now))
        audit.append(conn, actor, SYSTEM_ROLE, "cluster_purged", reason=f"retention:{rule}", details={
            "cluster_id": row.cluster_id, "revision": row.revision, "from_status": row.status, "rule": rule})
