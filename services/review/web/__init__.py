"""The review pages: server-rendered HTML for reviewers, supervisors, auditors and administrators.

Served by the review API's own app (:func:`install_web`, called by :func:`services.review.app.create_app`):
:mod:`~services.review.web.security` (cookie session, CSRF, sign-in throttle, headers, rendering),
:mod:`~services.review.web.pages_signin` (sign-in, sign-out), :mod:`~services.review.web.pages_cases` (queue, case,
decisions, supervisor; images: :mod:`~services.review.web.pages_images`), :mod:`~services.review.web.pages_clusters`
(clusters of unknown faces), :mod:`~services.review.web.pages_admin` (audit, gallery, retention, disclosure),
``templates/`` (Jinja2, autoescaped) and ``static/`` (one CSS and one JS file; no inline script or style).

A refusal of the review rules on a page (own decision, wrong state, a case taken by another reviewer...) is
answered with the error page, not the API's JSON: :func:`install_page_errors`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from rfr.core.db import STORE_OUTAGES
from rfr.core.errors import ReasonedError
from rfr.review import users as u
from rfr.review import workflow as wf
from services.review.context import ApiContext
from services.review.web.case_model import refusal_title
from services.review.web.pages_admin import admin_routes
from services.review.web.pages_cases import case_pages
from services.review.web.pages_clusters import cluster_pages
from services.review.web.pages_signin import signin_pages
from services.review.web.security import STATIC, error_page, install_security, is_page, new_state

Handler = Callable[[Request, Exception], Awaitable[Response]]
ApiHandler = Callable[[Request, Any], Any]

STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (wf.NotPermitted, 403), (wf.CaseNotFound, 404), (wf.WrongState, 409), (wf.DecisionRefused, 422),
    (u.NotPermitted, 403), (u.UnknownUser, 404), (u.UserError, 422))


def web_routes(ctx: ApiContext) -> APIRouter:
    """Every page route."""
    router = APIRouter(include_in_schema=False)
    router.include_router(signin_pages(ctx))
    router.include_router(case_pages(ctx))
    router.include_router(cluster_pages(ctx))
    router.include_router(admin_routes(ctx))
    return router


def install_page_errors(app: FastAPI) -> None:
    """Answer the review rules' refusals and store outages with the error page on pages, keeping the API's JSON
    answers (the handlers already installed) under ``/v1``."""
    for exc_type, status in STATUSES:
        app.add_exception_handler(exc_type, _either(app.exception_handlers.get(exc_type), status))
    for outage in STORE_OUTAGES:
        app.add_exception_handler(outage, _either(app.exception_handlers.get(outage), 503))
    app.add_exception_handler(RequestValidationError, _either(app.exception_handlers.get(RequestValidationError), 400))


def _either(api: ApiHandler | None, status: int) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if api is not None and not is_page(request):
            answer = api(request, exc)
            return await answer if inspect.isawaitable(answer) else answer  # type: ignore[no-any-return]
        if status == 503:
            return error_page(request, 503, "Review store unavailable", "The review store is not available; "
                              "try again in a moment.")
        if status == 400:
            return error_page(request, 400, "Not a valid request", "The address or the form is not valid.")
        reason = exc.reason if isinstance(exc, ReasonedError) else "refused"
        message = (exc.detail or str(exc)) if isinstance(exc, ReasonedError) else str(exc)
        return error_page(request, status, refusal_title(reason), message)

    return handle


def install_web(app: FastAPI, ctx: ApiContext) -> None:
    """Serve the pages on ``app`` (after its API error handlers are installed): security, routes, static files."""
    rs = ctx.review_settings
    install_security(app, new_state(ctx.users, ctx.audit.secret, ctx.session_ttl_s, rs.cookie_secure,
                                    ctx.login_throttle))
    install_page_errors(app)
    app.include_router(web_routes(ctx))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
