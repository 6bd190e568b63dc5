"""The review queue: open cases oldest first, with filters and counts, and who has taken each case.

Read on the caller's connection (like :mod:`rfr.review.cases`). A queue row names no candidate and no decision,
so the queue is never a way round the blind rule; it names a reviewer who has taken a case (a live claim).
Quality: a probe is ``low`` when its face is narrower than ``min_face_px``, less sharp than ``min_sharpness`` or
its pose check failed (settings.review.reliable_face_px / reliable_sharpness), else ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Select, and_, exists, false, func, not_, or_, select

from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.claims import live_claim
from rfr.review.views import QueueItem

Quality = Literal["ok", "low"]
MAX_OFFSET = 2**53 - 1
"""Largest offset read (a larger one would overflow the database's integers; no queue is that long)."""


@dataclass(frozen=True)
class QueueFilter:
    """Which cases the queue shows. ``state`` None: every open state. ``older_than``: created before. ``quality``:
    ``ok`` / ``low`` against ``min_face_px`` (pixels) and ``min_sharpness``. ``verifiable_by``: only cases awaiting
    verification that this user did not decide (their "needs my verification")."""

    state: str | None = None
    watch_list: str | None = None
    retailer_id: str | None = None
    store_id: str | None = None
    older_than: datetime | None = None
    quality: Quality | None = None
    min_face_px: float = 0.0
    min_sharpness: float = 0.0
    verifiable_by: str | None = None


def _low_quality(f: QueueFilter) -> Any:
    p = t.probes
    return or_(func.coalesce(p.c.face_px, 0.0) < f.min_face_px, func.coalesce(p.c.sharpness, 0.0) < f.min_sharpness,
               p.c.pose_ok == false())


def _filtered(query: Select[Any], f: QueueFilter, with_state: bool) -> Select[Any]:
    cs, p, c, d = t.cases, t.probes, t.candidates, t.decisions
    states = [x.value for x in wf.OPEN_STATES] if f.state is None or not with_state else [f.state]
    query = query.where(cs.c.state.in_(states))
    if f.watch_list is not None:
        query = query.where(exists().where(and_(c.c.case_id == cs.c.id, c.c.watch_list == f.watch_list)))
    if f.retailer_id is not None:
        query = query.where(p.c.retailer_id == f.retailer_id)
    if f.store_id is not None:
        query = query.where(p.c.store_id == f.store_id)
    if f.older_than is not None:
        query = query.where(cs.c.created_at < f.older_than)
    if f.quality is not None:
        query = query.where(_low_quality(f) if f.quality == "low" else not_(_low_quality(f)))
    if f.verifiable_by is not None and with_state:
        query = query.where(cs.c.state == wf.CaseState.AWAITING_VERIFICATION, ~exists().where(
            and_(d.c.case_id == cs.c.id, d.c.actor == f.verifiable_by)))
    return query


def read_queue(conn: Connection, f: QueueFilter, limit: int, offset: int, now: datetime) -> list[QueueItem]:
    """Queue rows oldest first (``limit`` from ``offset``); ``now`` decides which claims are live."""
    cs, p, s, c = t.cases, t.probes, t.searches, t.candidates
    offset = max(0, min(offset, MAX_OFFSET))
    query = (select(cs.c.id, cs.c.state, cs.c.created_at, cs.c.updated_at, cs.c.face_id, p.c.retailer_id,
                    p.c.case_ref, s.c.trigger, p.c.store_id, cs.c.claimed_by, cs.c.claimed_until, p.c.face_px,
                    p.c.sharpness, p.c.pose_ok, s.c.score_norm)
             .join(p, p.c.face_id == cs.c.face_id).join(s, s.c.event_id == cs.c.search_event_id))
    rows = conn.execute(_filtered(query, f, True).order_by(cs.c.created_at, cs.c.id).limit(limit)
                        .offset(offset)).all()
    summary: dict[int, tuple[int, float, list[str]]] = {}
    if rows:
        ids = [r.id for r in rows]
        named: dict[int, set[str]] = {}
        for case_id, wl in conn.execute(select(c.c.case_id, c.c.watch_list).where(c.c.case_id.in_(ids)).distinct()):
            named.setdefault(case_id, set()).add(wl)
        agg = select(c.c.case_id, func.count(), func.max(c.c.score)).where(c.c.case_id.in_(ids)).group_by(c.c.case_id)
        for case_id, n, top in conn.execute(agg):
            summary[case_id] = (int(n), float(top), sorted(named.get(case_id, set())))
    items = []
    for r in rows:
        holder, until = live_claim(r, now)
        items.append(QueueItem(
            r.id, r.state, r.created_at, r.updated_at, r.face_id, r.retailer_id, r.case_ref, r.trigger,
            *summary.get(r.id, (0, 0.0, [])), store_id=r.store_id, claimed_by=holder,
            claimed_until=until, face_px=r.face_px, sharpness=r.sharpness,
            pose_ok=None if r.pose_ok is None else bool(r.pose_ok), score_norm=r.score_norm))
    return items


def count_queue(conn: Connection, f: QueueFilter) -> dict[str, int]:
    """Open cases matching ``f`` by state (every open state present; ``f.state`` and ``verifiable_by`` ignored),
    and ``verifiable`` (awaiting cases ``f.verifiable_by`` may verify; 0 without it)."""
    cs, p = t.cases, t.probes
    base = select(cs.c.state, func.count()).select_from(cs.join(p, p.c.face_id == cs.c.face_id))
    counts = {s.value: 0 for s in sorted(wf.OPEN_STATES)}
    for state, n in conn.execute(_filtered(base, f, False).group_by(cs.c.state)):
        counts[state] = int(n)
    verifiable = 0
    if f.verifiable_by is not None:
        mine = QueueFilter(**{**f.__dict__, "state": None})
        query = select(func.count()).select_from(cs.join(p, p.c.face_id == cs.c.face_id))
        verifiable = int(conn.execute(_filtered(query, mine, True)).scalar_one())
    counts["verifiable"] = verifiable
    return counts
