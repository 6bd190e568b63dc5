"""Pages of cases: the queue, a case with its decisions, the people's steps, the supervisor's page.

``GET /cases/{id}`` first asks the reason (the case or crime reference, audited with every view), then shows the
case; a reviewer or supervisor who opens it takes it (:meth:`rfr.review.store.ReviewStore.claim`) when they have a
step to take. Every step is a form post (CSRF token, the reason carried along) answered with a redirect back to
the case (its view audited again), or with the error page naming the refusal: one's own decision to verify, a
case taken by another reviewer, an incomplete decision... Images of a case: :mod:`.pages_images`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rfr.review import workflow as wf
from rfr.review.queue import QueueFilter
from rfr.review.users import Principal, Role
from rfr.review.views import CaseView
from services.review.auth import CASE_VIEWERS, DECIDERS, QUEUE_READERS, SUPERVISORS
from services.review.bounds import MAX_LABELS, MAX_NOTE, MAX_REASON, CaseId
from services.review.context import ApiContext
from services.review.routes_cases import after_step
from services.review.web import case_model as cm
from services.review.web.pages_images import image_pages
from services.review.web.search_facts import score_scale
from services.review.web.security import CSRF, PageError, page_principal, render

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
NOTE_FIELDS = {"note": "The note on the decision", "escalation_note": "The note for the supervisor",
               "close_note": "The note on closing"}
DONE = {"decided": "Your decision is recorded.", "escalated": "The case went to a supervisor.",
        "resolved": "Your resolution is recorded (final after a disagreement; otherwise the case still needs a "
                    "second person).", "closed": "The case is closed."}


async def form_data(request: Request) -> dict[str, str]:
    """The posted form's text fields."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


Form = Annotated[dict[str, str], Depends(form_data)]
LabelledStep = Callable[[int, Principal, list[wf.CandidateLabel], str, str], CaseView]
""":meth:`~rfr.review.store.ReviewStore.decide` or :meth:`~rfr.review.store.ReviewStore.resolve`."""


def case_url(case_id: int, reason: str, **extra: str) -> str:
    """The case page's address with its reason (and ``done=...`` etc.)."""
    return f"/cases/{case_id}?" + urlencode({"reason": reason[:MAX_REASON], **extra})


def bounded(form: dict[str, str], back: str) -> dict[str, str]:
    """``form`` when its fields keep the API's bounds (reason at most 256 characters, each note 4000, at most 100
    candidates' labels); else the 422 error page saying which field is too long, with a link ``back``."""
    problems = []
    if len(form.get("reason", "")) > MAX_REASON:
        problems.append(f"The case or crime reference is at most {MAX_REASON} characters.")
    for key, value in form.items():
        if len(value) <= MAX_NOTE:
            continue
        if key in NOTE_FIELDS:
            problems.append(f"{NOTE_FIELDS[key]} is at most {MAX_NOTE} characters.")
        elif key.startswith("note-"):
            problems.append(f"The note on candidate {key[5:9]} is at most {MAX_NOTE} characters.")
    if len(_ranks(form)) > MAX_LABELS:
        problems.append(f"A decision labels at most {MAX_LABELS} candidates.")
    if problems:
        raise PageError(422, "Too long", " ".join(problems[:5]), back=back)
    return form


@contextmanager
def refusals(back: str) -> Iterator[None]:
    """Turn a refusal of the review rules into the error page, with a link back to the case."""
    try:
        yield
    except wf.ReviewError as exc:
        logger.info("page step refused: %s", exc)
        raise PageError(cm.refusal_status(exc), cm.refusal_title(exc.reason), exc.detail or str(exc),
                        back=back) from exc


def queue_filter(params: dict[str, str], viewer: Principal, ctx: ApiContext) -> tuple[QueueFilter, list[str]]:
    """The queue's filter from the query, and what was wrong with it (ignored parts)."""
    rs, errors = ctx.review_settings, []
    text = {k: params.get(k, "").strip()[:128] or None for k in ("watch_list", "retailer_id", "store_id")}
    state = params.get("state") or None
    if state is not None and state not in {s.value for s in wf.CaseState}:
        errors.append(f"unknown state {state[:32]!r}")
        state = None
    quality = params.get("quality") or None
    if quality not in (None, "ok", "low"):
        errors.append("quality is ok or low")
        quality = None
    older = None
    if params.get("older_than_h"):
        try:
            older = ctx.store.clock() - timedelta(hours=max(0.0, float(params["older_than_h"])))
        except (ValueError, OverflowError):
            errors.append("age is a number of hours")
    mine = viewer.name if params.get("mine") == "verify" else None
    return QueueFilter(state, text["watch_list"], text["retailer_id"], text["store_id"], older,
                       quality, rs.reliable_face_px, rs.reliable_sharpness, mine), errors  # type: ignore[arg-type]


def case_context(ctx: ApiContext, view: CaseView, viewer: Principal, reason: str) -> dict[str, Any]:
    """What ``case.html`` shows."""
    rs = ctx.review_settings
    flags = cm.quality_flags(view.probe.quality, rs)
    return {"title": f"Case {view.id}", "case": view, "reason": reason, "flags": flags,
            "low_quality": any(f.low for f in flags), "steps": cm.steps(view, viewer, ctx.store.clock()),
            "decisions": [cm.shown(d) for d in view.decisions], "labels": cm.LABELS, "box": cm.box_of(view),
            "show_scores": rs.show_scores, "score_scale": score_scale(view.search),
            "state_words": cm.STATE_WORDS.get(view.state, view.state),
            "outcome_words": cm.OUTCOME_WORDS.get(view.outcome or "", None),
            "image_query": urlencode({"reason": reason}),
            "photo_query": urlencode({"case_id": view.id, "reason": reason})}


def case_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.include_router(image_pages(ctx))

    def labelled_step(step: LabelledStep, case_id: int, principal: Principal, form: dict[str, str],
                      done: str) -> Response:
        """A decision or resolution posted with the case's labels, then back to the case saying ``done``."""
        reason = form.get("reason", "")
        bounded(form, case_url(case_id, reason))
        with refusals(case_url(case_id, reason)):
            labels = cm.labels_from_form(form, _ranks(form))
            view = step(case_id, principal, labels, reason, form.get("note", ""))
        after_step(ctx, view, principal)
        return RedirectResponse(case_url(case_id, reason, done=done), status_code=303)

    @router.get("/queue", response_class=HTMLResponse)
    def queue(request: Request, principal: Annotated[Principal, page_principal(QUEUE_READERS)],
              page: int = 1) -> Response:
        params = dict(request.query_params)
        where, errors = queue_filter(params, principal, ctx)
        page = max(1, min(page, 10_000))
        items = ctx.store.queue_page(where, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
        keep = {k: v for k, v in params.items() if k != "page" and v}
        return render(request, "queue.html", {
            "title": "Queue", "items": items[:PAGE_SIZE], "counts": ctx.store.queue_counts(
                replace(where, verifiable_by=principal.name if principal.role in DECIDERS else None)),
            "params": params, "errors": errors, "page": page, "more": len(items) > PAGE_SIZE,
            "prev_url": "/queue?" + urlencode({**keep, "page": page - 1}) if page > 1 else None,
            "next_url": "/queue?" + urlencode({**keep, "page": page + 1}), "states": cm.STATE_WORDS,
            "can_open": principal.role in CASE_VIEWERS, "show_scores": ctx.review_settings.show_scores,
            "rs": ctx.review_settings, "now": ctx.store.clock()})

    @router.get("/supervisor", response_class=HTMLResponse)
    def supervisor(request: Request, _: Annotated[Principal, page_principal(SUPERVISORS)]) -> Response:
        escalated = ctx.store.queue_page(QueueFilter(state=wf.CaseState.ESCALATED), 500)
        return render(request, "supervisor.html", {"title": "Supervisor", "items": escalated,
                                                   "now": ctx.store.clock()})

    @router.get("/cases/{case_id}", response_class=HTMLResponse)
    def case(request: Request, case_id: CaseId, principal: Annotated[Principal, page_principal(CASE_VIEWERS)],
             reason: str = "", ref: str = "", done: str = "") -> Response:
        if len(reason) > MAX_REASON:
            raise PageError(422, "Too long", f"The case or crime reference is at most {MAX_REASON} characters.",
                            back=f"/cases/{case_id}")
        why = reason.strip()
        if not why:
            return render(request, "case_reason.html", {"title": f"Case {case_id}: why", "case_id": case_id,
                                                        "ref": ref[:MAX_REASON]})
        if principal.role in (Role.REVIEWER, Role.SUPERVISOR):
            ctx.store.claim(case_id, principal, ctx.review_settings.claim_minutes)
        view = ctx.store.case(case_id, principal, why)
        return render(request, "case.html", {**case_context(ctx, view, principal, why), "done": DONE.get(done)})

    @router.post("/cases/{case_id}/decide", response_model=None)
    def decide(case_id: CaseId, principal: Annotated[Principal, page_principal(DECIDERS)],
               _: Annotated[None, CSRF], form: Form) -> Response:
        return labelled_step(ctx.store.decide, case_id, principal, form, "decided")

    @router.post("/cases/{case_id}/resolve", response_model=None)
    def resolve(case_id: CaseId, principal: Annotated[Principal, page_principal(SUPERVISORS)],
                _: Annotated[None, CSRF], form: Form) -> Response:
        return labelled_step(ctx.store.resolve, case_id, principal, form, "resolved")

    @router.post("/cases/{case_id}/escalate", response_model=None)
    def escalate(case_id: CaseId, principal: Annotated[Principal, page_principal(DECIDERS)],
                 _: Annotated[None, CSRF], form: Form) -> Response:
        reason = form.get("reason", "")
        bounded(form, case_url(case_id, reason))
        with refusals(case_url(case_id, reason)):
            view = ctx.store.escalate(case_id, principal, form.get("escalation_note", ""), reason)
        after_step(ctx, view, principal)
        return RedirectResponse(case_url(case_id, reason, done="escalated"), status_code=303)

    @router.post("/cases/{case_id}/close", response_model=None)
    def close(case_id: CaseId, principal: Annotated[Principal, page_principal(SUPERVISORS)],
              _: Annotated[None, CSRF], form: Form) -> Response:
        reason = form.get("reason", "")
        bounded(form, case_url(case_id, reason))
        with refusals(case_url(case_id, reason)):
            ctx.store.close(case_id, principal, form.get("close_note", ""), reason)
        return RedirectResponse(case_url(case_id, reason, done="closed"), status_code=303)

    @router.post("/cases/{case_id}/release", response_model=None)
    def release(case_id: CaseId, principal: Annotated[Principal, page_principal(DECIDERS)],
                _: Annotated[None, CSRF], form: Form) -> Response:
        with refusals("/queue"):
            ctx.store.release(case_id, principal)
        return RedirectResponse("/queue", status_code=303)

    return router


def _ranks(form: dict[str, str]) -> list[int]:
    """The candidate ranks a decision form carries (every candidate has a ``note-r`` field; ``r``: 1 to 3 ASCII
    digits, other fields are ignored)."""
    ranks = set()
    for key in form:
        prefix, _, rank = key.partition("-")
        if prefix in ("label", "note") and rank.isascii() and rank.isdigit() and len(rank) < 4:
            ranks.add(int(rank))
    return sorted(ranks)
