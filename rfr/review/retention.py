"""Retention: probes are purged when their policy says so; case and decision records and the audit log stay.

Rules (:class:`rfr.core.settings.RetentionSettings`, days as floats):

* ``no_candidate``: a probe that never got a case, ``no_candidate_days`` after its first search;
* ``no_lead``: a case decided ``no_lead``, ``no_lead_days`` after the final decision;
* ``pending``: a case still open (pending, awaiting verification, escalated) ``pending_days`` after it was created
  becomes ``expired``, and its probe is purged;
* ``closed_lead``: a lead is kept while its case is open; ``closed_lead_days`` after a supervisor closed it, purged.

A probe with several cases (re-searches) is purged once every one of its cases is due. Purging a probe deletes its
still from the blob store (unless another unpurged probe has the same still), sets its crop and template to NULL
and stamps ``purged_at`` / ``purge_reason``, with one ``purge`` audit entry, all in one transaction (the blob is
deleted before the commit: a failed commit leaves a row that the next pass purges again, never a still without
its row); the probe's due rule is read again under the lock in that transaction, so a case made of it meanwhile
(a re-search) keeps it, and the store makes no case of a probe once purged. A case expired under ``pending`` gets
its ``case_expired`` entry in the transaction that expires it. Each pass writes one ``retention_run`` entry. A pass
is idempotent. Probes never become gallery entries. Clusters go with their probes: a purged probe's sightings leave
every cluster in its purge's transaction (:mod:`rfr.review.cluster_retention`).

:func:`due_counts` says what a pass would do now; :func:`upcoming` which probes the coming passes will purge, and
when (the retention page).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update

from rfr.core.blobstore import BlobStore
from rfr.core.settings import RetentionSettings
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.claims import FREE
from rfr.review.cluster_retention import leave_clusters, purge_unheld
from rfr.review.store import SYSTEM_ROLE, ReviewStore

logger = logging.getLogger(__name__)

RETENTION_ACTOR = "retention"
PURGE_KINDS = ("still", "crop", "template")


@dataclass
class RetentionReport:
    """What one pass did: ``purged`` by kind (still, crop, template; a shared still counts once, when deleted),
    ``probes`` purged (face ids) with ``rules`` (face id -> rule), ``expired_cases`` (ids)."""

    at: datetime
    purged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PURGE_KINDS, 0))
    probes: list[str] = field(default_factory=list)
    rules: dict[str, str] = field(default_factory=dict)
    expired_cases: list[int] = field(default_factory=list)
    unheld_sightings: int = 0
    """Cluster sightings whose probe the store never held, taken out of their clusters (cluster_retention)."""


@dataclass(frozen=True)
class _Cutoffs:
    no_candidate: datetime
    no_lead: datetime
    pending: datetime
    closed_lead: datetime

    @classmethod
    def of(cls, policy: RetentionSettings, now: datetime) -> _Cutoffs:
        return cls(now - timedelta(days=policy.no_candidate_days), now - timedelta(days=policy.no_lead_days),
                   now - timedelta(days=policy.pending_days), now - timedelta(days=policy.closed_lead_days))


def _case_rule(row: Any, cut: _Cutoffs) -> str | None:
    """The rule under which this case no longer keeps its probe (None: it keeps it)."""
    if row.state == wf.CaseState.NO_LEAD and row.decided_at is not None and row.decided_at < cut.no_lead:
        return "no_lead"
    if row.state == wf.CaseState.EXPIRED:
        return "pending"
    if row.state == wf.CaseState.LEAD and row.closed_at is not None and row.closed_at < cut.closed_lead:
        return "closed_lead"
    return None


def _expiring(cut: _Cutoffs) -> Any:
    return and_(t.cases.c.state.in_([s.value for s in wf.OPEN_STATES]), t.cases.c.created_at < cut.pending)


def _due_probes(conn: Connection, cut: _Cutoffs) -> dict[str, str]:
    """Unpurged probes due now (face id -> rule), cases expiring in this pass counted as expired."""
    p, c = t.probes, t.cases
    due: dict[str, str] = {}
    unmatched = select(p.c.face_id).where(
        p.c.purged_at.is_(None), p.c.status == "unmatched", p.c.first_searched_at < cut.no_candidate,
        ~exists().where(c.c.face_id == p.c.face_id))
    for face_id in conn.execute(unmatched).scalars():
        due[face_id] = "no_candidate"
    maybe = select(c.c.face_id).join(p, p.c.face_id == c.c.face_id).where(p.c.purged_at.is_(None), or_(
        and_(c.c.state == wf.CaseState.NO_LEAD, c.c.decided_at < cut.no_lead), c.c.state == wf.CaseState.EXPIRED,
        _expiring(cut), and_(c.c.state == wf.CaseState.LEAD, c.c.closed_at < cut.closed_lead))).distinct()
    faces = list(conn.execute(maybe).scalars())
    for start in range(0, len(faces), 500):
        chunk = faces[start:start + 500]
        by_face: dict[str, list[Any]] = {}
        rows = conn.execute(select(c.c.face_id, c.c.state, c.c.decided_at, c.c.closed_at, c.c.created_at)
                            .where(c.c.face_id.in_(chunk)))
        for row in rows:
            by_face.setdefault(row.face_id, []).append(row)
        for face_id, cases in by_face.items():
            rule = _combined_rule(cases, cut)
            if rule is not None:
                due[face_id] = rule
    return due


def _combined_rule(cases: list[Any], cut: _Cutoffs) -> str | None:
    """The rule under which a probe with these cases is due (their rules joined by ``+``), None while one of its
    cases keeps it. Cases still open past pending_days count as expired (this pass expires them)."""
    found = {"pending" if row.state in wf.OPEN_STATES and row.created_at < cut.pending else _case_rule(row, cut)
             for row in cases}
    if None in found:
        return None
    return "+".join(sorted(r for r in found if r))


def due_counts(store: ReviewStore, policy: RetentionSettings, now: datetime) -> dict[str, int]:
    """What a pass at ``now`` would do, without doing it: probes due by rule (``no_candidate``, ``no_lead``,
    ``pending``, ``closed_lead``; a probe of several cases under its combined rule) and ``cases_to_expire``."""
    cut = _Cutoffs.of(policy, now)
    with store.engine.connect() as conn:
        counts: dict[str, int] = {}
        for rule in _due_probes(conn, cut).values():
            counts[rule] = counts.get(rule, 0) + 1
        expiring = conn.execute(select(t.cases.c.id).where(_expiring(cut))).scalars().all()
    counts["cases_to_expire"] = len(expiring)
    return counts


def run_retention(store: ReviewStore, blobs: BlobStore, policy: RetentionSettings, now: datetime,
                  actor: str = RETENTION_ACTOR) -> RetentionReport:
    """One retention pass at ``now`` (see the module docstring). Blob-store errors other than a missing blob
    propagate (the probe stays unpurged and the next pass retries it)."""
    cut = _Cutoffs.of(policy, now)
    report = RetentionReport(at=now)
    report.expired_cases = _expire(store, cut, actor)
    with store.engine.connect() as conn:
        due = _due_probes(conn, cut)
    report.unheld_sightings = len(purge_unheld(store.engine, store.audit, cut.no_candidate, now, actor))
    for face_id, rule in sorted(due.items()):
        deleted = _purge_probe(store, blobs, face_id, cut, now, actor)
        if deleted is None:
            continue
        report.probes.append(face_id)
        report.rules[face_id] = rule
        for kind in deleted:
            report.purged[kind] += 1
    with store.engine.begin() as conn:
        store.audit.append(conn, actor, SYSTEM_ROLE, "retention_run", details={
            "at": now.isoformat(), "policy": policy.model_dump(mode="json"), "purged": report.purged,
            "probes": len(report.probes), "expired_cases": report.expired_cases})
    logger.info("retention: %d probe(s) purged %s, %d case(s) expired", len(report.probes), report.purged,
                len(report.expired_cases))
    return report


def _expire(store: ReviewStore, cut: _Cutoffs, actor: str) -> list[int]:
    """Open cases older than pending_days become expired, each with its ``case_expired`` audit entry in the same
    transaction (and listed in the pass's retention_run entry)."""
    with store.engine.begin() as conn:
        rows = conn.execute(select(t.cases.c.id, t.cases.c.state, t.cases.c.created_at).where(_expiring(cut))
                            .order_by(t.cases.c.id).with_for_update()).all()
        if rows:
            now = store.clock()
            conn.execute(update(t.cases).where(t.cases.c.id.in_([r.id for r in rows]))
                         .values(state=wf.CaseState.EXPIRED, updated_at=now, **FREE))
            for row in rows:
                store.audit.append(conn, actor, SYSTEM_ROLE, "case_expired", reason="retention:pending",
                                   case_id=row.id, details={"from_state": row.state,
                                                            "created_at": row.created_at.isoformat(),
                                                            "rule": "pending"})
            logger.info("retention (%s): %d case(s) expired after pending_days", actor, len(rows))
    return [int(r.id) for r in rows]


def _rule_now(conn: Connection, face_id: str, cut: _Cutoffs) -> str | None:
    """The rule under which the probe is due now, read afresh (None: it is not due, e.g. a re-search made a new
    case of it since the pass listed it)."""
    p, c = t.probes, t.cases
    probe = conn.execute(select(p.c.status, p.c.first_searched_at).where(p.c.face_id == face_id)).first()
    if probe is None:
        return None
    rows = conn.execute(select(c.c.state, c.c.decided_at, c.c.closed_at, c.c.created_at)
                        .where(c.c.face_id == face_id)).all()
    if not rows:
        due = probe.status == "unmatched" and probe.first_searched_at < cut.no_candidate
        return "no_candidate" if due else None
    return _combined_rule(list(rows), cut)


def _purge_probe(store: ReviewStore, blobs: BlobStore, face_id: str, cut: _Cutoffs, now: datetime,
                 actor: str) -> list[str] | None:
    """Purge one probe in one transaction, once its row is locked and it is found still due (its rule read again
    in this transaction); the kinds deleted, or None when it was purged meanwhile or is no longer due."""
    p = t.probes
    with store.engine.begin() as conn:
        row = conn.execute(select(p.c.still_ref, p.c.crop_jpeg.is_not(None).label("has_crop"),
                                  p.c.template.is_not(None).label("has_template"))
                           .where(p.c.face_id == face_id, p.c.purged_at.is_(None)).with_for_update()).first()
        if row is None:
            return None
        rule = _rule_now(conn, face_id, cut)
        if rule is None:
            logger.info("retention: probe %s is no longer due (a new case meanwhile), kept", face_id)
            return None
        deleted = _delete_still(conn, blobs, face_id, row.still_ref)
        deleted += [kind for kind, held in (("crop", row.has_crop), ("template", row.has_template)) if held]
        conn.execute(update(p).where(p.c.face_id == face_id).values(
            crop_jpeg=None, template=None, purged_at=now, purge_reason=rule))
        cases = list(conn.execute(select(t.cases.c.id).where(t.cases.c.face_id == face_id)
                                  .order_by(t.cases.c.id)).scalars())
        clusters = leave_clusters(conn, store.audit, face_id, now, actor, rule)
        store.audit.append(conn, actor, SYSTEM_ROLE, "purge", reason=f"retention:{rule}",
                           case_id=cases[-1] if cases else None, details={
                               "face_id": face_id, "rule": rule, "deleted": deleted, "still_ref": row.still_ref,
                               "cases": cases} | ({"clusters": clusters} if clusters else {}))
    return deleted


def _delete_still(conn: Connection, blobs: BlobStore, face_id: str, still_ref: str | None) -> list[str]:
    """Delete the still unless another unpurged probe (another face of it) still needs it."""
    if still_ref is None:
        return []
    p = t.probes
    shared = conn.execute(select(p.c.face_id).where(
        p.c.still_ref == still_ref, p.c.face_id != face_id, p.c.purged_at.is_(None)).limit(1)).first()
    if shared is not None:
        return []
    blobs.delete(still_ref)
    return ["still"]



@dataclass(frozen=True)
class UpcomingPurge:
    """A probe that a future pass will purge: ``due_at`` (aware UTC; at or before now: the next pass), the ``rule``
    (combined with ``+`` for a probe of several cases) and its ``case_ids`` (empty for a probe without a case)."""

    face_id: str
    due_at: datetime
    rule: str
    case_ids: tuple[int, ...]


def _case_due(row: Any, days: dict[str, timedelta]) -> tuple[datetime, str] | None:
    """When this case stops keeping its probe, and under which rule (None: never, while a lead stays open)."""
    if row.state in wf.OPEN_STATES or row.state == wf.CaseState.EXPIRED:
        return row.created_at + days["pending"], "pending"
    if row.state == wf.CaseState.NO_LEAD and row.decided_at is not None:
        return row.decided_at + days["no_lead"], "no_lead"
    if row.state == wf.CaseState.LEAD and row.closed_at is not None:
        return row.closed_at + days["closed_lead"], "closed_lead"
    return None


def upcoming(store: ReviewStore, policy: RetentionSettings, now: datetime, limit: int = 50) -> list[UpcomingPurge]:
    """The next ``limit`` probes retention will purge, soonest first (those already due first: the next pass at or
    after ``now`` purges them), as the policy stands: a probe without a case ``no_candidate_days`` after its first
    search; a probe with cases once every case is due (open or expired cases after ``pending_days``, ``no_lead``
    after ``no_lead_days`` from the decision, a closed lead after ``closed_lead_days``; an open lead never). Probes
    already purged are left out. Each rule's soonest cases are read (at most ``limit`` of each), so the answer is
    exact without scanning the whole store."""
    limit = max(1, limit)
    days = {"no_candidate": timedelta(days=policy.no_candidate_days), "no_lead": timedelta(days=policy.no_lead_days),
            "pending": timedelta(days=policy.pending_days), "closed_lead": timedelta(days=policy.closed_lead_days)}
    p, c = t.probes, t.cases
    out: list[UpcomingPurge] = []
    horizons: list[datetime] = []
    with store.engine.connect() as conn:
        unmatched = conn.execute(select(p.c.face_id, p.c.first_searched_at).where(
            p.c.purged_at.is_(None), p.c.status == "unmatched", ~exists().where(c.c.face_id == p.c.face_id))
            .order_by(p.c.first_searched_at, p.c.face_id).limit(limit)).all()
        out += [UpcomingPurge(r.face_id, r.first_searched_at + days["no_candidate"], "no_candidate", ())
                for r in unmatched]
        if len(unmatched) == limit:
            horizons.append(unmatched[-1].first_searched_at + days["no_candidate"])
        faces: set[str] = set()
        for rule, states, base in (("pending", [*wf.OPEN_STATES, wf.CaseState.EXPIRED], c.c.created_at),
                                   ("no_lead", [wf.CaseState.NO_LEAD], c.c.decided_at),
                                   ("closed_lead", [wf.CaseState.LEAD], c.c.closed_at)):
            rows = conn.execute(select(c.c.face_id, base.label("base")).join(p, p.c.face_id == c.c.face_id).where(
                p.c.purged_at.is_(None), c.c.state.in_([s.value for s in states]), base.is_not(None))
                .order_by(base, c.c.id).limit(limit)).all()
            faces.update(r.face_id for r in rows)
            if len(rows) == limit:
                horizons.append(rows[-1].base + days[rule])
        out += _probes_due(conn, sorted(faces), days)
    if horizons:  # beyond the earliest cut-off a probe of an unread case could come first: leave that part out
        out = [u for u in out if u.due_at <= min(horizons)]
    return sorted(out, key=lambda u: (u.due_at, u.face_id))[:limit]


def _probes_due(conn: Connection, faces: list[str], days: dict[str, timedelta]) -> list[UpcomingPurge]:
    """When each of ``faces`` (probes with cases) is due: when the last of its cases is (never: left out)."""
    c = t.cases
    found: list[UpcomingPurge] = []
    for start in range(0, len(faces), 500):
        by_face: dict[str, list[Any]] = {}
        for row in conn.execute(select(c.c.id, c.c.face_id, c.c.state, c.c.created_at, c.c.decided_at,
                                       c.c.closed_at).where(c.c.face_id.in_(faces[start:start + 500]))):
            by_face.setdefault(row.face_id, []).append(row)
        for face_id, rows in by_face.items():
            dues = [_case_due(row, days) for row in rows]
            if any(d is None for d in dues):
                continue
            known = [d for d in dues if d is not None]
            found.append(UpcomingPurge(face_id, max(d[0] for d in known), "+".join(sorted({d[1] for d in known})),
                                       tuple(sorted(int(r.id) for r in rows))))
    return found
