"""The review store: searches, probes and cases, decisions, gallery photos, the decision outbox (SQLAlchemy Core).

One database (SQLite file or PostgreSQL, :func:`rfr.core.db.make_engine`) migrated by :meth:`ReviewStore.open`
(Alembic history ``rfr/review/migrations``, version table ``alembic_version_review``). Every change and the audit
entry recording it commit in ONE transaction (the audit log appends on the caller's connection), and a final
decision puts its :class:`~rfr.core.review_messages.DecisionEvent` into the outbox in that same transaction; the service
publishes the outbox (:mod:`rfr.review.outbox`), so no decision is lost or published twice
without being in the store. A case row is locked (``SELECT ... FOR UPDATE``; SQLite: every transaction holds the
write lock) while it changes, so two verifiers cannot both act on one awaiting case.

The rules are :mod:`rfr.review.workflow`'s; refusals are its exceptions (CaseNotFound, WrongState, CaseClaimed,
NotPermitted, DecisionRefused). Reads of cases: :mod:`rfr.review.cases`; the queue: :mod:`rfr.review.queue`; who
has taken a case: :mod:`rfr.review.claims`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from rfr.core.db import migrate
from rfr.core.schemas import CandidateList, utcnow
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.cases import CaseReader, decision_event
from rfr.review.claims import FREE, Claims
from rfr.review.clusters import Clusters
from rfr.review.gallery_changes import GALLERY_ROLE, GalleryChanges
from rfr.review.outbox import DECISIONS_TOPIC, SYSTEM_ACTOR, SYSTEM_ROLE, AuditSink, Outbox
from rfr.review.queue import QueueFilter, count_queue, read_queue
from rfr.review.views import (
    CaseView,
    QueueItem,
    QueueStats,
    canonical,
)

__all__ = ["DECISIONS_TOPIC", "GALLERY_ROLE", "MIGRATIONS", "SYSTEM_ACTOR", "SYSTEM_ROLE", "VERSION_TABLE", "AuditSink",
           "ReviewStore"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_review"

Clock = Callable[[], datetime]


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise wf.DecisionRefused("reason_required", "give the case or crime reference (the reason) for this step")
    return text


class ReviewStore(CaseReader, Claims, Outbox, GalleryChanges, Clusters):
    """Cases and decisions on ``engine``; every change audited on ``audit`` in the transaction that makes it.

    ``two_person``: settings.review.two_person (cases awaiting verification keep needing it when it is turned off)."""

    def __init__(self, engine: Engine, audit: AuditSink, clock: Clock = utcnow, two_person: bool = True) -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock
        self.two_person = two_person

    @classmethod
    def open(cls, engine: Engine, audit: AuditSink, clock: Clock = utcnow, two_person: bool = True) -> ReviewStore:
        """Migrate ``engine``'s database to the newest schema (all review, audit and user tables), then open it.
        Raises what :func:`rfr.core.db.migrate` raises (unreachable database, unknown newer revision)."""
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        return cls(engine, audit, clock, two_person)

    # -- searches (from the matches topic; gallery changes: rfr.review.gallery_changes) --------------------------

    def record_search(self, cl: CandidateList) -> int | None:
        """Record a candidate list: its probe (first time), the search (audited: start/end, watch-lists, threshold,
        model, probe, outcome, candidate count) and, with candidates, a new pending case (audited). Returns the new
        case's id; None for ``no_candidate``, an ``event_id`` already recorded (at-least-once redelivery), or a
        probe already purged by retention (a re-search list that arrives after the purge: the search is recorded and
        audited, with ``probe_purged``, but a case without its probe is not made)."""
        with self.engine.begin() as conn:
            if conn.execute(select(t.searches.c.event_id).where(t.searches.c.event_id == cl.event_id)).first():
                logger.debug("search %s already recorded", cl.event_id)
                return None
            purged = self._probe_purged(conn, cl.face_id)
            has_case = cl.outcome == "candidates" and bool(cl.candidates) and not purged
            if purged:  # e.g. a re-search list computed before retention purged its probe: nothing to compare
                logger.info("search %s: probe %s was purged by retention, no case made", cl.event_id, cl.face_id)
            self._upsert_probe(conn, cl, has_case)
            conn.execute(insert(t.searches).values(
                event_id=cl.event_id, face_id=cl.face_id, trigger=cl.trigger, re_search_of=cl.re_search_of,
                started_at=cl.search_started_at, searched_at=cl.searched_at, outcome=cl.outcome,
                threshold=cl.threshold, top_k=cl.top_k, watch_lists=canonical(cl.watch_lists), model_id=cl.model_id,
                candidate_count=len(cl.candidates), **_v4_columns(cl)))
            case_id = self._create_case(conn, cl) if has_case else None
            details = _search_details(cl)
            if purged:
                details["probe_purged"] = True
            self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "search", reason=cl.meta.case_ref or "",
                              case_id=case_id, details=details)
            if case_id is not None:
                self.audit.append(conn, SYSTEM_ACTOR, SYSTEM_ROLE, "case_created", reason=cl.meta.case_ref or "",
                                  case_id=case_id, details={"search_event_id": cl.event_id, "face_id": cl.face_id,
                                                            "candidates": len(cl.candidates), "trigger": cl.trigger})
            return case_id

    @staticmethod
    def _probe_purged(conn: Connection, face_id: str) -> bool:
        """Whether the probe is known and purged; its row is locked for this transaction (PostgreSQL: a purge of it
        waits for this transaction, and then finds its new case; or this one waits for the purge, then sees it)."""
        p = t.probes
        row = conn.execute(select(p.c.purged_at).where(p.c.face_id == face_id).with_for_update()).first()
        return row is not None and row.purged_at is not None

    def _upsert_probe(self, conn: Connection, cl: CandidateList, has_case: bool) -> None:
        known = conn.execute(select(t.probes.c.status).where(t.probes.c.face_id == cl.face_id)).first()
        if known is not None:
            if has_case and known.status != "case":
                conn.execute(update(t.probes).where(t.probes.c.face_id == cl.face_id).values(status="case"))
            return
        meta, probe = cl.meta, cl.probe
        conn.execute(insert(t.probes).values(
            face_id=cl.face_id, submission_id=cl.submission_id, retailer_id=meta.retailer_id, store_id=meta.store_id,
            camera_id=meta.camera_id, captured_at=meta.captured_at, received_at=cl.received_at,
            case_ref=meta.case_ref, channel=str(meta.channel), still_ref=probe.still_ref, crop_jpeg=probe.crop_jpeg,
            box=canonical(dict(zip(("x", "y", "width", "height"), probe.box, strict=True))),
            quality=cl.quality.model_dump_json(), face_px=cl.quality.face_px, sharpness=cl.quality.sharpness,
            pose_ok=cl.quality.pose_ok, template=probe.template, model_id=cl.model_id,
            first_searched_at=cl.searched_at, status="case" if has_case else "unmatched"))

    def _create_case(self, conn: Connection, cl: CandidateList) -> int:
        now = self.clock()
        case_id = conn.execute(insert(t.cases).values(
            search_event_id=cl.event_id, face_id=cl.face_id, state=wf.CaseState.PENDING, created_at=now,
            updated_at=now).returning(t.cases.c.id)).scalar_one()
        conn.execute(insert(t.candidates), [
            {"case_id": case_id, "rank": c.rank, "subject_id": c.subject_id, "score": c.score,
             "watch_list": c.watch_list, "gallery_face_id": c.gallery_face_id, "source_ref": c.source_ref}
            for c in cl.candidates])
        return int(case_id)

    # -- people's steps -----------------------------------------------------------------------------------------

    def case(self, case_id: int, viewer: wf.Actor, reason: str) -> CaseView:
        """The case as ``viewer`` may see it (blind rule); the view is audited (case_view, with ``reason``).
        Raises CaseNotFound, NotPermitted (role), DecisionRefused (``reason_required``)."""
        wf.require_role(viewer, wf.VIEWING_ROLES, "view a case")
        why = _reason(reason)
        with self.engine.begin() as conn:
            view = self.read_case(conn, case_id, viewer)
            self.audit.append(conn, viewer.name, str(viewer.role), "case_view", reason=why, case_id=case_id,
                              details={"state": view.state, "hidden_decisions": view.hidden_decisions})
            return view

    def decide(self, case_id: int, actor: wf.Actor, labels: Sequence[wf.CandidateLabel], reason: str,
               note: str = "") -> CaseView:
        """A first decision (pending case) or a blind verification (awaiting case), audited; a final one goes to the
        outbox. Raises CaseNotFound, WrongState, NotPermitted (role, own_decision), DecisionRefused."""
        why = _reason(reason)
        with self.engine.begin() as conn:
            case = self.lock_case(conn, case_id)
            prior = self.prior_decisions(conn, case_id)
            stage = wf.decision_stage(case_id, case.state, actor, prior)
            wf.check_claim(case_id, case.claimed_by, case.claimed_until, actor, self.clock())
            action = "decision" if stage == wf.Stage.FIRST else "verification"
            return self._apply(conn, case, stage, actor, labels, why, note, prior, action)

    def resolve(self, case_id: int, actor: wf.Actor, labels: Sequence[wf.CandidateLabel], reason: str,
                note: str = "") -> CaseView:
        """A supervisor's decision on an escalated case they took no part in, audited as a resolution. It counts as
        the step the case lacks (:func:`rfr.review.workflow.resolution_stage`): the first decision (the case then
        awaits a blind verification), the blind verification of the one decision, or, after a disagreement, the
        final decision. Raises CaseNotFound, WrongState, NotPermitted (role, own_decision), DecisionRefused."""
        why = _reason(reason)
        with self.engine.begin() as conn:
            case = self.lock_case(conn, case_id)
            prior = self.prior_decisions(conn, case_id)
            stage = wf.resolution_stage(case_id, case.state, actor, prior)
            wf.check_claim(case_id, case.claimed_by, case.claimed_until, actor, self.clock())
            return self._apply(conn, case, stage, actor, labels, why, note, prior, "resolution")

    def _apply(self, conn: Connection, case: Row[Any], stage: wf.Stage, actor: wf.Actor,
               labels: Sequence[wf.CandidateLabel], why: str, note: str, prior: Sequence[wf.PriorDecision],
               action: str) -> CaseView:
        subjects = {r.rank: r.subject_id for r in conn.execute(
            select(t.candidates.c.rank, t.candidates.c.subject_id).where(t.candidates.c.case_id == case.id))}
        verdict = wf.derive_outcome(labels, subjects)
        state = wf.next_state(stage, verdict.outcome, verdict.lead_subject_id, self.two_person, prior)
        now = self.clock()
        conn.execute(insert(t.decisions).values(
            case_id=case.id, actor=actor.name, role=str(actor.role), stage=stage, outcome=verdict.outcome,
            lead_rank=verdict.lead_rank, lead_subject_id=verdict.lead_subject_id,
            labels=canonical(list(verdict.labels)), note=note.strip(), decided_at=now))
        final = state in (wf.CaseState.LEAD, wf.CaseState.NO_LEAD)
        values: dict[str, Any] = {"state": state, "updated_at": now, **FREE}
        if final:
            values.update(outcome=verdict.outcome, lead_rank=verdict.lead_rank,
                          lead_subject_id=verdict.lead_subject_id, decided_at=now)
        conn.execute(update(t.cases).where(t.cases.c.id == case.id).values(**values))
        self.audit.append(conn, actor.name, str(actor.role), action, reason=why, case_id=case.id, details={
            "stage": stage.value, "outcome": verdict.outcome.value, "lead_rank": verdict.lead_rank,
            "lead_subject_id": verdict.lead_subject_id, "labels": list(verdict.labels), "note": note.strip(),
            "state": state.value, "disagreement": state == wf.CaseState.ESCALATED})
        if final:
            event = decision_event(conn, case.id)
            conn.execute(insert(t.outbox).values(
                event_id=event.event_id, topic=DECISIONS_TOPIC, key=f"case-{case.id}", payload=event.to_bytes(),
                created_at=now))
        return self.read_case(conn, case.id, actor)

    def escalate(self, case_id: int, actor: wf.Actor, note: str, reason: str) -> CaseView:
        """Send a pending or awaiting case to a supervisor, with a note (audited as escalation); never a case
        awaiting the verification of ``actor``'s own decision (NotPermitted ``own_decision``)."""
        why = _reason(reason)
        with self.engine.begin() as conn:
            case = self.lock_case(conn, case_id)
            text = wf.check_escalation(case_id, case.state, actor, self.prior_decisions(conn, case_id), note)
            now = self.clock()
            wf.check_claim(case_id, case.claimed_by, case.claimed_until, actor, now)
            conn.execute(insert(t.decisions).values(
                case_id=case_id, actor=actor.name, role=str(actor.role), stage=wf.Stage.ESCALATION, outcome=None,
                labels="[]", note=text, decided_at=now))
            conn.execute(update(t.cases).where(t.cases.c.id == case_id)
                         .values(state=wf.CaseState.ESCALATED, updated_at=now, **FREE))
            self.audit.append(conn, actor.name, str(actor.role), "escalation", reason=why, case_id=case_id,
                              details={"from_state": case.state, "note": text})
            return self.read_case(conn, case_id, actor)

    def close(self, case_id: int, actor: wf.Actor, note: str, reason: str) -> CaseView:
        """Close a lead's case (supervisor): from now retention's closed_lead_days runs (audited: case_closed)."""
        why = _reason(reason)
        with self.engine.begin() as conn:
            case = self.lock_case(conn, case_id)
            text = wf.check_close(case_id, case.state, case.closed_at is not None, actor, note)
            now = self.clock()
            conn.execute(update(t.cases).where(t.cases.c.id == case_id).values(closed_at=now, updated_at=now))
            self.audit.append(conn, actor.name, str(actor.role), "case_closed", reason=why, case_id=case_id,
                              details={"note": text})
            return self.read_case(conn, case_id, actor)

    # -- reads for the API and the service ----------------------------------------------------------------------

    def queue(self, state: str | None = None, watch_list: str | None = None, retailer_id: str | None = None,
              older_than: datetime | None = None, limit: int = 50, offset: int = 0) -> list[QueueItem]:
        """Cases oldest first: in ``state`` (None: every open state), with a candidate on ``watch_list``, from
        ``retailer_id``, created before ``older_than``; ``limit`` (1..500) from ``offset``."""
        return self.queue_page(QueueFilter(state, watch_list, retailer_id, older_than=older_than), limit, offset)

    def queue_page(self, where: QueueFilter, limit: int = 50, offset: int = 0) -> list[QueueItem]:
        """Cases matching ``where`` oldest first (:mod:`rfr.review.queue`); ``limit`` (1..500) from ``offset``."""
        with self.engine.connect() as conn:
            return read_queue(conn, where, max(1, min(limit, 500)), max(0, offset), self.clock())

    def queue_counts(self, where: QueueFilter) -> dict[str, int]:
        """Open cases matching ``where`` by state, and ``verifiable`` (see :func:`rfr.review.queue.count_queue`)."""
        with self.engine.connect() as conn:
            return count_queue(conn, where)

    def gallery_photo(self, gallery_face_id: str) -> str | None:
        """Blob ref of an enrolled photo; None when unknown, not kept, or erased."""
        gp = t.gallery_photos
        with self.engine.connect() as conn:
            return conn.execute(select(gp.c.photo_ref).where(
                gp.c.gallery_face_id == gallery_face_id, gp.c.erased_at.is_(None))).scalar_one_or_none()

    def probe_crop(self, case_id: int) -> bytes | None:
        """The case's probe crop (JPEG); None once purged. Raises CaseNotFound."""
        value = self._probe_field(case_id, t.probes.c.crop_jpeg)
        return None if value is None else bytes(value)

    def probe_still_ref(self, case_id: int) -> str | None:
        """Blob ref of the case's still; None when not kept or purged. Raises CaseNotFound."""
        value = self._probe_field(case_id, t.probes.c.still_ref, live_only=True)
        return None if value is None else str(value)

    def _probe_field(self, case_id: int, column: Any, live_only: bool = False) -> Any:
        query = select(column, t.probes.c.purged_at).join(t.cases, t.cases.c.face_id == t.probes.c.face_id)
        with self.engine.connect() as conn:
            row = conn.execute(query.where(t.cases.c.id == case_id)).first()
        if row is None:
            raise wf.CaseNotFound(case_id)
        return None if live_only and row.purged_at is not None else row[0]

    def queue_stats(self) -> QueueStats:
        """Cases by state, the oldest open case's creation time, and unpublished outbox messages (for metrics)."""
        with self.engine.connect() as conn:
            counts = {s.value: 0 for s in wf.CaseState}
            for state, n in conn.execute(select(t.cases.c.state, func.count()).group_by(t.cases.c.state)):
                counts[state] = int(n)
            oldest = conn.execute(select(func.min(t.cases.c.created_at))
                                  .where(t.cases.c.state.in_([s.value for s in wf.OPEN_STATES]))).scalar_one()
            pending = conn.execute(select(func.count()).select_from(t.outbox)
                                   .where(t.outbox.c.published_at.is_(None))).scalar_one()
        return QueueStats(counts, oldest, int(pending))

    def record_policy(self, policy: dict[str, Any], actor: str, role: str = SYSTEM_ROLE) -> bool:
        """Keep ``policy`` (threshold, top_k, watch-lists, retention, two_person...) as the one in force; when it
        differs from the last one recorded (or none was), audit a policy_change with old and new. Returns whether
        it changed."""
        new = canonical(policy)
        with self.engine.begin() as conn:
            old = conn.execute(select(t.policy_state.c.policy).where(t.policy_state.c.id == 1)
                               .with_for_update()).scalar_one_or_none()
            if old == new:
                return False
            now = self.clock()
            if old is None:
                conn.execute(insert(t.policy_state).values(id=1, policy=new, updated_at=now))
            else:
                conn.execute(update(t.policy_state).where(t.policy_state.c.id == 1).values(policy=new, updated_at=now))
            self.audit.append(conn, actor, role, "policy_change", details={
                "old": None if old is None else _loads(old), "new": policy})
            return True


def _loads(text: str) -> Any:
    return json.loads(text)


def _stills(cl: CandidateList) -> list[dict[str, Any]]:
    """The stills behind a list's probe, as stored and audited (a v3 list: its one still)."""
    return [s.model_dump(mode="json", exclude={"schema_version"}) for s in cl.probe_stills]


def _v4_columns(cl: CandidateList) -> dict[str, Any]:
    """The ``searches`` columns of what CandidateList v4 added (a v3 list: its defaults)."""
    return {"low_quality": cl.low_quality, "incident_id": cl.incident_id, "stills": canonical(_stills(cl)),
            "threshold_policy": cl.threshold_policy, "gallery_size": cl.gallery_size, "score_norm": cl.score_norm}


def _search_details(cl: CandidateList) -> dict[str, Any]:
    """The Art 12(3) / DPA s.62 fields of one search, for its audit entry."""
    return _v4_details(cl) | {
        "event_id": cl.event_id, "trigger": cl.trigger, "re_search_of": cl.re_search_of,
        "started_at": cl.search_started_at.isoformat(), "ended_at": cl.searched_at.isoformat(),
        "watch_lists": list(cl.watch_lists), "threshold": cl.threshold, "top_k": cl.top_k, "model_id": cl.model_id,
        "face_id": cl.face_id, "submission_id": cl.submission_id, "retailer_id": cl.meta.retailer_id,
        "store_id": cl.meta.store_id, "camera_id": cl.meta.camera_id, "still_ref": cl.probe.still_ref,
        "outcome": cl.outcome, "candidate_count": len(cl.candidates),
    }


def _v4_details(cl: CandidateList) -> dict[str, Any]:
    """Audit fields of a v4 list, only where they differ from a v3 list's (older entries keep their shape)."""
    details: dict[str, Any] = {}
    if cl.low_quality:
        details["low_quality"] = True
    if cl.incident_id is not None or len(cl.stills) > 1:
        details |= {"incident_id": cl.incident_id, "stills": _stills(cl), "stills_expected": cl.stills_expected}
    if cl.threshold_policy != "fixed" or cl.gallery_size is not None or cl.score_norm != "none":
        details |= {"threshold_policy": cl.threshold_policy, "gallery_size": cl.gallery_size,
                    "score_norm": cl.score_norm}
    return details
