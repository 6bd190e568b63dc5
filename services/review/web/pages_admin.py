"""Oversight pages: the audit log (search, one entry, export, chain verification), retention, and (from their own
modules) the gallery and the disclosure pack.

Who sees what (the same roles as the JSON API where it has the route):

* ``GET /audit``, ``GET /audit/{seq}``, ``POST /audit/verify``: auditors, supervisors and administrators (reading
  and checking change nothing; the verification is recorded as ``audit_verify``);
* ``GET /audit/export``: auditors only; the export is audited (``export``, with the reason given) BEFORE the first
  line is streamed;
* ``GET /retention``: auditors, supervisors and administrators;
* the gallery (:mod:`~services.review.web.pages_gallery`): administrators;
* the disclosure pack (:mod:`~services.review.web.pages_disclosure`): supervisors and auditors.

:func:`admin_routes` is included by :func:`services.review.web.web_routes`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from rfr.core.settings import RetentionSettings
from rfr.review import audit_search
from rfr.review.audit import AuditAction, canonical_json
from rfr.review.audit_search import AuditFilter
from rfr.review.retention import due_counts, upcoming
from rfr.review.users import Principal
from services.review.auth import AUDIT_EXPORTERS, AUDIT_READERS, RETENTION_READERS
from services.review.bounds import MAX_INT, MAX_REASON
from services.review.context import ApiContext
from services.review.web.gallery_erase import GalleryEraser
from services.review.web.pages_disclosure import disclosure_pages
from services.review.web.pages_gallery import gallery_pages
from services.review.web.paging import FilterError, Pager, input_time, parse_id, parse_offset, parse_time, show_time
from services.review.web.security import CSRF, PageError, page_principal, render

logger = logging.getLogger(__name__)

PAGE = 50
"""Audit entries (and purges) per page."""
UPCOMING = 50
MIN_REASON = 3
ACTIONS = [a.value for a in AuditAction]
FILTERS = ("actor", "action", "case_id", "since", "until", "reason")


def admin_routes(ctx: ApiContext, eraser: GalleryEraser | None = None) -> APIRouter:
    """The audit, retention, gallery and disclosure pages on ``ctx``; ``eraser`` erases subjects from the gallery
    (default: through ``ctx.settings``)."""
    router = APIRouter(include_in_schema=False)
    _audit_pages(router, ctx)
    _retention_page(router, ctx)
    router.include_router(gallery_pages(ctx, eraser or GalleryEraser(ctx.settings, ctx.store.engine)))
    router.include_router(disclosure_pages(ctx))
    return router


def audit_filter(params: dict[str, str]) -> AuditFilter:
    """The filter of the audit page's form (empty fields ignored). Raises :class:`FilterError`."""
    action = params.get("action", "").strip()
    if action and action not in ACTIONS:
        raise FilterError(f"action: {action!r} is not an audit action")
    return AuditFilter(actor=params.get("actor", "").strip() or None, action=AuditAction(action) if action else None,
                       case_id=parse_id("case id", params.get("case_id", "")),
                       since=parse_time("from", params.get("since", "")),
                       until=parse_time("until", params.get("until", "")),
                       reason_contains=params.get("reason", "").strip() or None)


def _offset(request: Request) -> int:
    """The page's ``offset`` (0 when absent). Raises :class:`FilterError`."""
    return parse_offset(request.query_params.get("offset", ""))


def _audit_pages(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.store.engine

    @router.get("/audit", response_class=HTMLResponse)
    def audit_list(request: Request, principal: Annotated[Principal, page_principal(AUDIT_READERS)]) -> HTMLResponse:
        """Search the audit log: who, what, when, case id, reason (case or crime reference) contains; newest first."""
        params = {k: request.query_params.get(k, "") for k in FILTERS}
        try:
            where, offset = audit_filter(params), _offset(request)
        except FilterError as exc:
            return render(request, "audit_list.html", _list_context(params, None, str(exc), principal), 400)
        found = audit_search.search(engine, where, PAGE, offset)
        pager = Pager("/audit", params, found.total, found.limit, found.offset)
        return render(request, "audit_list.html", _list_context(params, pager, None, principal) | {
            "entries": found.entries})

    @router.get("/audit/export", response_model=None)
    def audit_export(request: Request, principal: Annotated[Principal, page_principal(AUDIT_EXPORTERS)],
                     since: str = "", until: str = "", reason: str = "") -> HTMLResponse | StreamingResponse:
        """The log from ``since`` to ``until`` as JSON lines (each entry re-verifiable offline), audited first."""
        form = {"since": since, "until": until, "reason": reason}
        try:
            start, end = parse_time("from", since), parse_time("until", until)
        except FilterError as exc:
            return render(request, "audit_export.html", {"form": form, "error": str(exc)}, 400)
        if not reason.strip():
            return render(request, "audit_export.html", {"form": form, "error": None})
        if not MIN_REASON <= len(reason.strip()) <= MAX_REASON:
            return render(request, "audit_export.html", {"form": form | {"reason": reason[:MAX_REASON]}, "error":
                          f"Give the reason for this export ({MIN_REASON} to {MAX_REASON} characters)."}, 422)
        seq = ctx.audit.append_now(principal.name, principal.role, AuditAction.EXPORT, reason=reason.strip(),
                                   details={"what": "audit_log", "since": start, "until": end, "via": "pages"})
        logger.info("audit log exported by %s (audit entry %s)", principal.name, seq)

        def lines() -> Iterator[bytes]:
            for entry in ctx.audit.export(start, end):
                yield canonical_json(entry).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
            "Content-Disposition": 'attachment; filename="rfr-audit.jsonl"'})

    @router.get("/audit/{seq:int}", response_class=HTMLResponse)
    def audit_entry(request: Request, seq: int,
                    _: Annotated[Principal, page_principal(AUDIT_READERS)]) -> HTMLResponse:
        """One entry with every field, its hash and the previous entry's."""
        found = audit_search.entry(engine, seq) if seq <= MAX_INT else None
        if found is None:
            raise PageError(404, "No such audit entry", f"The audit log has no entry {seq}.")
        return render(request, "audit_entry.html", {
            "title": f"Audit entry {seq}", "entry": found, "details": _pretty(found["details"]),
            "show_time": show_time})

    @router.post("/audit/verify", response_class=HTMLResponse)
    def audit_verify(request: Request, principal: Annotated[Principal, page_principal(AUDIT_READERS)],
                     _: Annotated[None, CSRF]) -> HTMLResponse:
        """Check the whole chain (:meth:`AuditLog.verify`) and show the result; recorded as ``audit_verify``."""
        report = ctx.audit.verify()
        seq = ctx.audit.append_now(principal.name, principal.role, AuditAction.AUDIT_VERIFY, details={
            "ok": report.ok, "entries": report.entries, "checkpoints": report.checkpoints,
            "problems": len(report.problems), "first_problems": report.problems[:20], "via": "pages"})
        return render(request, "audit_verify.html", {"title": "Audit chain verification", "report": report,
                                                     "seq": seq})


def _list_context(params: dict[str, str], pager: Pager | None, error: str | None,
                  principal: Principal) -> dict[str, Any]:
    return {"title": "Audit log", "params": params, "pager": pager, "error": error, "entries": [],
            "actions": ACTIONS, "show_time": show_time, "can_export": principal.role in AUDIT_EXPORTERS}


def _pretty(details: Any) -> str:
    return json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False)


def _retention_page(router: APIRouter, ctx: ApiContext) -> None:
    @router.get("/retention", response_class=HTMLResponse)
    def retention(request: Request, _: Annotated[Principal, page_principal(RETENTION_READERS)]) -> HTMLResponse:
        """The policy in force, what is due now, what will be purged when, and what was purged (paged)."""
        status = ctx.retention()
        policy = ctx.settings.retention if ctx.settings is not None else (
            RetentionSettings.model_validate(status.policy) if status.policy else RetentionSettings())
        now = ctx.store.clock()
        try:
            offset = _offset(request)
        except FilterError as exc:
            raise PageError(400, "Not a valid request", str(exc)) from exc
        purged = audit_search.search(ctx.store.engine, AuditFilter(action=AuditAction.PURGE), PAGE, offset)
        return render(request, "retention.html", {
            "title": "Retention", "policy": policy, "status": status, "now": now,
            "due": due_counts(ctx.store, policy, now), "upcoming": upcoming(ctx.store, policy, now, UPCOMING),
            "purged": purged.entries, "pager": Pager("/retention", {}, purged.total, purged.limit, purged.offset),
            "show_time": show_time, "input_time": input_time})
