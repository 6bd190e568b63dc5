"""Clusters of unknown faces in the review store: recorded from ``rfr.clusters.v1``, reviewed, searched, purged.

A mixin of :class:`rfr.review.store.ReviewStore` (tables :data:`~rfr.review.tables.clusters`, ``cluster_sightings``,
``cluster_searches``; views :mod:`rfr.review.cluster_views`). A cluster is a lead for reviewers: never a gallery
entry, never a watch-list, never an identification. Every change is audited in the transaction that makes it.

* :meth:`Clusters.record_cluster`: one row per ``cluster_id`` at its highest revision (an older or redelivered
  revision changes nothing and is not audited again); its sightings by ``face_id`` (the probe the store already keeps
  from the ``no_candidate`` list: crop, still, box); ``merged_from`` clusters are retired (status ``merged``,
  ``merged_into``). Sightings a newer revision no longer names are ``dropped`` (a later revision may name them
  again), or ``purged`` when the cluster service's retention made it (``ClusterEvent.cause``). A sighting a
  reviewer split out, or whose probe retention purged, stays out of every later revision; then the fused template
  is the normalised mean of the live sightings' kept templates. Audited as ``cluster_reported``. A later revision
  never re-opens a dismissed cluster: it stays dismissed, its page says so; nor a merged one. An older revision
  still retires the ``merged_from`` clusters not retired yet (two workers may publish a cluster's revisions out of
  order), and an older retention revision still purges the sightings it took; a ``merged_from`` cluster the store
  has not seen yet is recorded merged (revision 0, no sightings), so that its own late event cannot bring it back
  as pending.
* reviewers' steps (``reviewer`` / ``supervisor``; audited with actor, role and reason): confirm (one person worth
  investigating: a lead to search), dismiss (not one person, or not worth it), split (the sightings ticked are NOT
  the same person: they leave the cluster, which is pending again, its decision cleared).
* reads, and the searches of a confirmed cluster's fused template against the custody gallery
  (:mod:`rfr.review.research`) kept and audited as ``cluster_re_search``: :mod:`rfr.review.cluster_reads`.
* retention (:mod:`rfr.review.retention`, :mod:`rfr.review.cluster_retention`) takes a purged probe's sightings out
  of every cluster in the purge's transaction; a cluster left without sightings is purged (template NULL, status
  ``purged``, the row kept), audited as ``cluster_purged``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from rfr.core.cluster_messages import ClusterEvent
from rfr.core.schemas import template_bytes, template_vector
from rfr.embedding.incidents import fuse_templates
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.cluster_reads import (
    ClusterNotFound,
    ClusterReads,
    ClusterWrongState,
    SearchableCluster,
    lock_cluster,
)
from rfr.review.cluster_views import RETIRED, ClusterStatus, ClusterView, read_cluster
from rfr.review.outbox import SYSTEM_ACTOR, SYSTEM_ROLE, AuditSink
from rfr.review.views import canonical

__all__ = ["ClusterNotFound", "ClusterRecorded", "ClusterWrongState", "Clusters", "SearchableCluster",
           "fused_template", "live_faces"]

logger = logging.getLogger(__name__)

KEPT_OUT = ("split", "purged")
"""Why a sighting stays out of a cluster whatever later revisions say."""


@dataclass(frozen=True)
class ClusterRecorded:
    """What :meth:`Clusters.record_cluster` did: ``new`` False for an older or redelivered revision (nothing
    changed); the cluster's ``status`` after; sightings ``added``; clusters ``merged`` into it."""

    new: bool
    status: str
    added: list[str]
    merged: list[str]


def _purged_late(conn: Connection, event: ClusterEvent, now: datetime) -> list[str]:
    """A retention revision arriving after a later one: the sightings held before it (added at a lower revision)
    that it no longer names and the later revision only ``dropped`` are ``purged``. Returns their face ids."""
    s = t.cluster_sightings
    named = [x.face_id for x in event.sightings]
    faces = sorted(conn.execute(select(s.c.face_id).where(
        s.c.cluster_id == event.cluster_id, s.c.left_reason == "dropped", s.c.added_revision < event.revision,
        s.c.face_id.not_in(named))).scalars().all())
    if faces:
        conn.execute(update(s).where(s.c.cluster_id == event.cluster_id, s.c.face_id.in_(faces))
                     .values(left_reason="purged", left_at=now))
    return faces


def _why(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise wf.DecisionRefused("reason_required", "give the reason for this step")
    return text


class Clusters(ClusterReads):
    """Clusters in the review store (a mixin of :class:`rfr.review.store.ReviewStore`)."""

    engine: Engine
    audit: AuditSink
    clock: Callable[[], datetime]

    # -- from rfr.clusters.v1 -----------------------------------------------------------------------------------

    def record_cluster(self, event: ClusterEvent) -> ClusterRecorded:
        """Record ``event`` (see the module docstring), audited as ``cluster_reported``. Idempotent: a revision
        at or below the one recorded returns ``new=False`` and changes nothing."""
        with self.engine.begin() as conn:
            row = lock_cluster(conn, event.cluster_id)
            now = self.clock()
            if row is not None and event.revision <= row.revision:
                return ClusterRecorded(False, row.status, [], self._late(conn, event, row, now))
            if row is None:
                conn.execute(insert(t.clusters).values(
                    cluster_id=event.cluster_id, revision=event.revision, model_id=event.model_id,
                    status=ClusterStatus.PENDING, rule=canonical(event.rule.model_dump(mode="json")),
                    reported_at=event.at, event_at=event.at, recorded_at=now))
            merged = self._retire(conn, event, now)
            added = self._sightings(conn, event, now)
            status = self._refresh(conn, event, row, now)
            self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "cluster_reported", details={
                "event_id": event.event_id, "cluster_id": event.cluster_id, "revision": event.revision,
                "previous_revision": None if row is None else row.revision, "model_id": event.model_id,
                "at": event.at.isoformat(), "sightings": [
                    [s.face_id, s.submission_id, s.retailer_id, s.store_id, s.camera_id, s.captured_at.isoformat()]
                    for s in event.sightings],
                "added": added, "merged_from": merged, "rule": event.rule.model_dump(mode="json"), "cause": event.cause,
                "status": status, "decision": None if row is None else row.decision})
            return ClusterRecorded(True, status, added, merged)

    def _late(self, conn: Connection, event: ClusterEvent, row: Any, now: datetime) -> list[str]:
        """An older or redelivered revision: its sightings change nothing, but the ``merged_from`` clusters it
        names that are not retired yet are (a merge overtaken by a later revision is not lost), and, when retention
        made it, the ``dropped`` sightings it no longer names that were there before it are ``purged`` (the later
        revision had only dropped them); audited once as ``cluster_reported`` with ``late``. Returns the ids
        retired now."""
        merged = self._retire(conn, event, now)
        purged = _purged_late(conn, event, now) if event.cause == "retention" else []
        logger.debug("cluster %s revision %d: %d already recorded; retired %s", event.cluster_id, event.revision,
                     row.revision, merged)
        if merged or purged:
            self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "cluster_reported", details={
                "event_id": event.event_id, "cluster_id": event.cluster_id, "revision": event.revision,
                "previous_revision": row.revision, "model_id": event.model_id, "at": event.at.isoformat(),
                "late": True, "merged_from": merged, "purged": purged, "cause": event.cause, "status": row.status,
                "decision": row.decision})
        return merged

    def _retire(self, conn: Connection, event: ClusterEvent, now: datetime) -> list[str]:
        """Mark ``event``'s ``merged_from`` clusters merged into its cluster (status ``merged``, ``merged_into``;
        their split-out faces stay out), unless merged already (idempotent). One the store does not know yet is
        recorded merged (revision 0, no sightings; its own ``cluster_reported`` entry) so that its own late event
        cannot bring it back as pending. Returns the ids retired now, sorted."""
        c = t.clusters
        gone = sorted({m for m in event.merged_from if m != event.cluster_id})
        if not gone:
            return []
        known = dict(conn.execute(select(c.c.cluster_id, c.c.status).where(c.c.cluster_id.in_(gone))
                                  .with_for_update()).tuples().all())
        retire = [m for m in gone if m in known and known[m] != ClusterStatus.MERGED]
        if retire:
            conn.execute(update(c).where(c.c.cluster_id.in_(retire))
                         .values(status=ClusterStatus.MERGED, merged_into=event.cluster_id))
        for m in (m for m in gone if m not in known):
            conn.execute(insert(c).values(
                cluster_id=m, revision=0, model_id=event.model_id, status=ClusterStatus.MERGED,
                merged_into=event.cluster_id, rule=canonical(event.rule.model_dump(mode="json")),
                reported_at=event.at, event_at=event.at, recorded_at=now))
            self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "cluster_reported", details={
                "event_id": event.event_id, "cluster_id": m, "revision": 0, "model_id": event.model_id,
                "at": event.at.isoformat(), "merged_into": event.cluster_id, "status": str(ClusterStatus.MERGED),
                "sightings": [], "unseen": True})
            retire.append(m)
        return sorted(retire)

    def _sightings(self, conn: Connection, event: ClusterEvent, now: datetime) -> list[str]:
        """Upsert the event's sightings; those no longer named are ``dropped``, or ``purged`` when retention made the
        revision (``event.cause``; they then stay out for good). Returns the face ids added."""
        s = t.cluster_sightings
        held = {r.face_id: r for r in conn.execute(select(s).where(s.c.cluster_id == event.cluster_id))}
        out = _kept_out(conn, event)
        added = []
        for sighting in event.sightings:
            values: dict[str, Any] = {"similarity": sighting.similarity}
            row = held.get(sighting.face_id)
            if row is None:
                added.append(sighting.face_id)
                why = out.get(sighting.face_id)
                conn.execute(insert(s).values(
                    cluster_id=event.cluster_id, face_id=sighting.face_id, submission_id=sighting.submission_id,
                    retailer_id=sighting.retailer_id, store_id=sighting.store_id, camera_id=sighting.camera_id,
                    captured_at=sighting.captured_at, added_revision=event.revision, left_reason=why,
                    left_at=now if why else None, **values))
                continue
            if row.left_reason == "dropped":
                values |= {"left_reason": None, "left_at": None}
            conn.execute(update(s).where(s.c.cluster_id == event.cluster_id, s.c.face_id == sighting.face_id)
                         .values(**values))
        named = {x.face_id for x in event.sightings}
        gone = [f for f, r in held.items() if f not in named and r.left_reason is None]
        if gone:
            conn.execute(update(s).where(s.c.cluster_id == event.cluster_id, s.c.face_id.in_(gone))
                         .values(left_reason="purged" if event.cause == "retention" else "dropped", left_at=now))
        return added

    def _refresh(self, conn: Connection, event: ClusterEvent, row: Any, now: datetime) -> str:
        """The cluster's revision, rule, template and status after the event's sightings were recorded."""
        s = t.cluster_sightings
        left = conn.execute(select(s.c.face_id).where(s.c.cluster_id == event.cluster_id,
                                                       s.c.left_reason.in_(KEPT_OUT))).scalars().all()
        live = live_faces(conn, event.cluster_id)
        status = _status_after(row, live)
        template: bytes | None = None
        if live:
            template = fused_template(conn, live) if left else None
            template = template or event.template
        values: dict[str, Any] = {"revision": event.revision, "event_at": event.at, "status": status,
                                  "rule": canonical(event.rule.model_dump(mode="json")), "template": template,
                                  "model_id": event.model_id}
        values["purged_at"] = (row.purged_at if row is not None and row.purged_at else now) if (
            status == ClusterStatus.PURGED) else None
        conn.execute(update(t.clusters).where(t.clusters.c.cluster_id == event.cluster_id).values(**values))
        return status

    # -- reviewers' steps ---------------------------------------------------------------------------------------

    def confirm_cluster(self, cluster_id: str, actor: wf.Actor, reason: str, note: str = "") -> ClusterView:
        """The sightings show one person worth investigating: a lead to search, never an identification. Audited
        as ``cluster_confirmed``. Raises ClusterNotFound, ClusterWrongState (merged, purged), NotPermitted,
        DecisionRefused (``reason_required``)."""
        return self._decide(cluster_id, actor, ClusterStatus.CONFIRMED, reason, note)

    def dismiss_cluster(self, cluster_id: str, actor: wf.Actor, reason: str, note: str = "") -> ClusterView:
        """Not one person, or not worth investigating; a later revision does not re-open it. Audited as
        ``cluster_dismissed``; raises as :meth:`confirm_cluster`."""
        return self._decide(cluster_id, actor, ClusterStatus.DISMISSED, reason, note)

    def _decide(self, cluster_id: str, actor: wf.Actor, status: ClusterStatus, reason: str, note: str) -> ClusterView:
        wf.require_role(actor, wf.DECIDING_ROLES, f"{'confirm' if status == 'confirmed' else 'dismiss'} a cluster")
        why = _why(reason)
        with self.engine.begin() as conn:
            row = _live(conn, cluster_id, str(status))
            now = self.clock()
            conn.execute(update(t.clusters).where(t.clusters.c.cluster_id == cluster_id).values(
                status=status, decision=status, decided_by=actor.name, decided_at=now, decided_revision=row.revision))
            self.audit.append(conn, actor.name, str(actor.role), f"cluster_{status}", reason=why, details={
                "cluster_id": cluster_id, "revision": row.revision, "from_status": row.status,
                "sightings": live_faces(conn, cluster_id), "note": note.strip()})
            return read_cluster(conn, lock_cluster(conn, cluster_id))

    def split_cluster(self, cluster_id: str, actor: wf.Actor, face_ids: Sequence[str], reason: str,
                      note: str = "") -> ClusterView:
        """The sightings ``face_ids`` are NOT the same person as the rest: they leave the cluster (for good: later
        revisions keep them out), the rest is pending again, its decision cleared (a later revision does not bring
        it back, a confirmed cluster is not searched until confirmed again; the audit keeps the earlier decision),
        and its fused template is made again from the kept templates of its sightings. Audited as
        ``cluster_split``. Raises as :meth:`confirm_cluster`, and DecisionRefused ``nothing_ticked`` /
        ``not_in_cluster`` / ``nothing_left``."""
        wf.require_role(actor, wf.DECIDING_ROLES, "split a cluster")
        why = _why(reason)
        ticked = sorted(set(face_ids))
        if not ticked:
            raise wf.DecisionRefused("nothing_ticked", "tick the sightings that are not the same person")
        with self.engine.begin() as conn:
            row = _live(conn, cluster_id, "a split")
            live = live_faces(conn, cluster_id)
            if set(ticked) - set(live):
                raise wf.DecisionRefused("not_in_cluster", "a ticked sighting is not in this cluster")
            rest = [f for f in live if f not in ticked]
            if not rest:
                raise wf.DecisionRefused("nothing_left", "every sighting ticked: dismiss the cluster instead")
            now = self.clock()
            s = t.cluster_sightings
            conn.execute(update(s).where(s.c.cluster_id == cluster_id, s.c.face_id.in_(ticked))
                         .values(left_reason="split", left_at=now))
            template = fused_template(conn, rest)
            values: dict[str, Any] = {"status": ClusterStatus.PENDING, "decision": None}
            if template is not None:
                values["template"] = template
            conn.execute(update(t.clusters).where(t.clusters.c.cluster_id == cluster_id).values(**values))
            self.audit.append(conn, actor.name, str(actor.role), "cluster_split", reason=why, details={
                "cluster_id": cluster_id, "revision": row.revision, "from_status": row.status, "split_out": ticked,
                "kept": rest, "decision_cleared": row.decision, "template_rebuilt": template is not None,
                "note": note.strip()})
            return read_cluster(conn, lock_cluster(conn, cluster_id))


def _live(conn: Connection, cluster_id: str, step: str) -> Any:
    """The cluster's row, locked, when it takes a reviewer's step (not merged nor purged)."""
    row = lock_cluster(conn, cluster_id)
    if row is None:
        raise ClusterNotFound(cluster_id)
    if row.status in RETIRED:
        raise ClusterWrongState(cluster_id, row.status, step)
    return row


def live_faces(conn: Connection, cluster_id: str) -> list[str]:
    s = t.cluster_sightings
    return list(conn.execute(select(s.c.face_id).where(s.c.cluster_id == cluster_id, s.c.left_reason.is_(None))
                             .order_by(s.c.face_id)).scalars())


def _kept_out(conn: Connection, event: ClusterEvent) -> dict[str, str]:
    """Faces of ``event`` that must stay out of it: split out of it or of a cluster it absorbed (``split``), or
    whose probe retention purged (``purged``)."""
    s, p = t.cluster_sightings, t.probes
    faces = [x.face_id for x in event.sightings]
    out = {f: "purged" for f in conn.execute(select(p.c.face_id).where(
        p.c.face_id.in_(faces), p.c.purged_at.is_not(None))).scalars()}
    for face in conn.execute(select(s.c.face_id).where(
            s.c.cluster_id.in_([event.cluster_id, *event.merged_from]), s.c.face_id.in_(faces),
            s.c.left_reason == "split")).scalars():
        out.setdefault(face, "split")
    return out


def _status_after(row: Any, live: list[str]) -> str:
    """A cluster's status after a new revision: merged stays merged (never re-opened); no live sighting: purged;
    else its last reviewer's decision (a dismissed cluster is not re-opened silently; a split cleared it), or
    pending."""
    if row is not None and row.status == ClusterStatus.MERGED:
        return str(ClusterStatus.MERGED)
    if not live:
        return str(ClusterStatus.PURGED)
    if row is not None and row.decision in (ClusterStatus.CONFIRMED, ClusterStatus.DISMISSED):
        return str(row.decision)
    return str(ClusterStatus.PENDING)


def fused_template(conn: Connection, faces: Sequence[str]) -> bytes | None:
    """The normalised mean of the unit templates the store keeps of ``faces`` (unpurged probes, the most common
    dimension); None when it keeps none."""
    p = t.probes
    rows = conn.execute(select(p.c.template).where(p.c.face_id.in_(list(faces)), p.c.purged_at.is_(None),
                                                   p.c.template.is_not(None))).scalars().all()
    vectors = [template_vector(bytes(r)) for r in rows]
    if not vectors:
        return None
    dims = [v.shape[0] for v in vectors]
    dim = max(set(dims), key=dims.count)
    return template_bytes(fuse_templates([v for v in vectors if v.shape[0] == dim]))
