"""Reading cases on a connection: the case as a viewer may see it and the final decision event (the queue:
:mod:`rfr.review.queue`).

The SQL half of :class:`rfr.review.store.ReviewStore` that changes nothing; every function takes the caller's
:class:`~sqlalchemy.Connection`, so a read shares the transaction of the change it follows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select

from rfr.core.review_messages import DecisionEvent, ReviewerDecision, decision_notice
from rfr.core.schemas import Candidate
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.views import (
    CaseView,
    candidate_view,
    decision_view,
    probe_view,
    search_view,
)

_PUBLISHED_STAGES = (wf.Stage.FIRST, wf.Stage.VERIFICATION, wf.Stage.SUPERVISOR)


class CaseReader:
    """Reads of cases, on a connection passed in."""

    @staticmethod
    def lock_case(conn: Connection, case_id: int) -> Row[Any]:
        """The case row, locked for this transaction (PostgreSQL FOR UPDATE); CaseNotFound when absent."""
        row = conn.execute(select(t.cases).where(t.cases.c.id == case_id).with_for_update()).first()
        if row is None:
            raise wf.CaseNotFound(case_id)
        return row

    @staticmethod
    def prior_decisions(conn: Connection, case_id: int) -> list[wf.PriorDecision]:
        """The case's decisions (and escalations), oldest first, as the workflow rules read them."""
        d = t.decisions
        rows = conn.execute(select(d).where(d.c.case_id == case_id).order_by(d.c.id))
        return [wf.PriorDecision(r.actor, r.role, wf.Stage(r.stage),
                                 None if r.outcome is None else wf.Outcome(r.outcome), r.lead_subject_id)
                for r in rows]

    @staticmethod
    def read_case(conn: Connection, case_id: int, viewer: wf.Actor) -> CaseView:
        """The case as ``viewer`` may see it (the blind rule of :func:`rfr.review.workflow.visible_decisions`)."""
        case = conn.execute(select(t.cases).where(t.cases.c.id == case_id)).first()
        if case is None:
            raise wf.CaseNotFound(case_id)
        probe = conn.execute(select(t.probes).where(t.probes.c.face_id == case.face_id)).one()
        search = conn.execute(select(t.searches).where(t.searches.c.event_id == case.search_event_id)).one()
        c, gp = t.candidates, t.gallery_photos
        cands = conn.execute(select(c, gp.c.photo_ref, gp.c.erased_at)
                             .outerjoin(gp, gp.c.gallery_face_id == c.c.gallery_face_id)
                             .where(c.c.case_id == case_id).order_by(c.c.rank)).all()
        rows = conn.execute(select(t.decisions).where(t.decisions.c.case_id == case_id)
                            .order_by(t.decisions.c.id)).all()
        prior = [wf.PriorDecision(r.actor, r.role, wf.Stage(r.stage), None, r.lead_subject_id) for r in rows]
        visible = wf.visible_decisions(case.state, prior, viewer)
        return CaseView(
            id=case.id, state=case.state, created_at=case.created_at, updated_at=case.updated_at,
            decided_at=case.decided_at, closed_at=case.closed_at, outcome=case.outcome, lead_rank=case.lead_rank,
            lead_subject_id=case.lead_subject_id, probe=probe_view(probe), search=search_view(search),
            candidates=[candidate_view(r) for r in cands], decisions=[decision_view(rows[i]) for i in visible],
            hidden_decisions=len(rows) - len(visible), claimed_by=case.claimed_by, claimed_until=case.claimed_until)


def decision_event(conn: Connection, case_id: int) -> DecisionEvent:
    """The final decision of a case (its row already updated to lead / no_lead), for ``rfr.decisions.v1``.

    ``two_person``: at least two different people reached this outcome (first and verifier agreeing, or a
    supervisor siding with one of them)."""
    case = conn.execute(select(t.cases).where(t.cases.c.id == case_id)).one()
    probe = conn.execute(select(t.probes).where(t.probes.c.face_id == case.face_id)).one()
    search = conn.execute(select(t.searches).where(t.searches.c.event_id == case.search_event_id)).one()
    rows = conn.execute(select(t.decisions).where(t.decisions.c.case_id == case_id, t.decisions.c.stage.in_(
        [s.value for s in _PUBLISHED_STAGES])).order_by(t.decisions.c.id)).all()
    lead = None
    if case.lead_rank is not None:
        c = conn.execute(select(t.candidates).where(t.candidates.c.case_id == case_id,
                                                    t.candidates.c.rank == case.lead_rank)).one()
        lead = Candidate(rank=c.rank, subject_id=c.subject_id, score=c.score, watch_list=c.watch_list,
                         gallery_face_id=c.gallery_face_id, source_ref=c.source_ref)
    outcome = wf.Outcome(case.outcome)
    prior = [wf.PriorDecision(r.actor, r.role, wf.Stage(r.stage), wf.Outcome(r.outcome), r.lead_subject_id)
             for r in rows]
    two_person = wf.two_person_confirmed(prior, outcome, case.lead_subject_id)
    return DecisionEvent(
        event_id=f"case-{case_id}:final", case_id=case_id, case_ref=probe.case_ref, face_id=probe.face_id,
        submission_id=probe.submission_id, retailer_id=probe.retailer_id, outcome=outcome.value, lead=lead,
        decisions=[ReviewerDecision(reviewer=r.actor, role=r.role, stage=r.stage, outcome=r.outcome,
                                    lead_subject_id=r.lead_subject_id, decided_at=r.decided_at) for r in rows],
        two_person=two_person, decided_at=case.decided_at, searched_at=search.searched_at,
        threshold=search.threshold, model_id=search.model_id, score_norm=search.score_norm or "none",
        notice=decision_notice(outcome.value, two_person))
