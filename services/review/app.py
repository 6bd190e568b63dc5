"""The review API (FastAPI; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``).

Authentication: ``POST /v1/login`` (name + password) returns a session token (throttled with the sign-in page:
429 ``throttled`` with ``Retry-After`` after repeated failures of the name or from the address); ``POST /v1/logout``
ends it. Every other endpoint but
``/healthz`` needs ``Authorization: Bearer <session token or case-system API token>`` and checks the caller's
role (:mod:`services.review.auth`): 401 for no or an unknown token (a retailer's ingest key included), 403 for a
role that may not. Errors are ``{"detail": {"reason": ..., "message": ...}}``: 403 ``own_decision`` /
``role_not_allowed``, 404 ``case_not_found``, 409 ``wrong_state``, 422 for a refused decision (``labels_incomplete``,
``note_too_short``, ``two_possible_matches``, ``reason_required``) or request, 503 ``unavailable`` (the store).

Routes: :mod:`services.review.routes_cases` (queue, cases, images, decisions), :mod:`services.review.routes_clusters`
(clusters of unknown faces: confirm, dismiss, split, search) and
:mod:`services.review.routes_admin` (audit, retention, users, tokens, final decisions for case systems). The same
app serves the reviewers' web pages (:mod:`services.review.web`: sign-in with a cookie session, queue, cases,
audit...), outside ``/v1`` and the OpenAPI schema.
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from rfr import __version__
from rfr.core.db import STORE_OUTAGES
from rfr.core.errors import ReasonedError
from rfr.review import users as u
from rfr.review import workflow as wf
from rfr.review.users import Principal
from services.review.api_models import ErrorResponse, LoginIn, LoginOut, PrincipalOut
from services.review.auth import BEARER, EVERYONE, Guards, api_error, unauthorized
from services.review.context import ApiContext
from services.review.routes_admin import admin_routes
from services.review.routes_cases import case_routes
from services.review.routes_clusters import cluster_routes
from services.review.web import install_web
from services.review.web.throttle import attempt_login

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (401, "No token, or not a valid session or review API token (retailer keys never are)"),
        (403, "This role may not do this, or it is one's own decision"), (404, "No such case or image"),
        (409, "The case is not in a state that takes this step"), (422, "Invalid request or refused decision"),
        (503, "The review store is not available; retry"))
}


def _body(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"reason": reason, "message": message}}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    statuses: list[tuple[type[ReasonedError], int]] = [
        (wf.NotPermitted, 403), (wf.CaseNotFound, 404), (wf.WrongState, 409), (wf.DecisionRefused, 422)]
    for exc_type, status in statuses:
        app.add_exception_handler(exc_type, _reasoned(status))
    for user_exc, status, reason in ((u.NotPermitted, 403, "role_not_allowed"), (u.DuplicateUser, 409, "exists"),
                                     (u.UnknownUser, 404, "unknown_user"), (u.UserError, 422, "invalid_user")):
        app.add_exception_handler(user_exc, _user_error(status, reason))

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        errs = exc.errors() if isinstance(exc, RequestValidationError) else []
        text = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs)
        return _body(422, "invalid_request", text[:1000] or "invalid request")

    async def store_down(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("review store unavailable: %s", exc)
        return _body(503, "unavailable", "the review store is not available; retry later")

    app.add_exception_handler(RequestValidationError, invalid)
    for outage in STORE_OUTAGES:
        app.add_exception_handler(outage, store_down)


def _reasoned(status: int) -> Callable[[Request, Exception], Any]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ReasonedError)
        return _body(status, exc.reason, exc.detail or str(exc))

    return handle


def _user_error(status: int, reason: str) -> Callable[[Request, Exception], Any]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return _body(status, reason, str(exc))

    return handle


def create_app(ctx: ApiContext) -> FastAPI:
    """The review API on ``ctx``."""
    app = FastAPI(title="RFR review", version=__version__, responses=ERRORS,
                  summary="Review candidate lists as cases: two-person decisions, audit log, retention.",
                  description="A candidate list is never an identification: it is a set of possible candidates "
                  "for trained reviewers. Every step is recorded in a hash-chained audit log with who, when "
                  "and why.")
    guards = Guards(ctx.users)
    _install_error_handlers(app)

    @app.post("/v1/login", response_model=LoginOut, tags=["auth"], responses={
        429: {"model": ErrorResponse, "description": "Too many failed logins of this name or from this address: "
              "retry after Retry-After seconds (the sign-in page shares the count)"}})
    def login(body: LoginIn, request: Request) -> LoginOut:
        """Log in with a name and password; returns a session token (audited: login / login_failed)."""
        address = request.client.host if request.client else "-"
        outcome = attempt_login(ctx.login_throttle, ctx.users, body.name, body.password, address)
        if outcome.wait_s > 0:
            logger.info("API login of %r from %s refused for %ss: too many failures", body.name[:64], address,
                        outcome.wait_s)
            raise api_error(429, "throttled", f"too many failed logins: retry in {outcome.wait_s} s",
                            {"Retry-After": str(outcome.wait_s)})
        if outcome.principal is None:
            raise unauthorized("unknown user, wrong password, or user deactivated")
        token = ctx.users.issue_session(outcome.principal)
        return LoginOut(token=token, name=outcome.principal.name, role=outcome.principal.role,
                        expires_in_s=ctx.session_ttl_s)

    @app.post("/v1/logout", status_code=204, response_class=Response, tags=["auth"])
    def logout(_: Annotated[Principal, guards(EVERYONE)],
               credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None) -> Response:
        """End this session: its token is refused from now on (an API token is revoked by an administrator)."""
        if credentials is None or not ctx.users.revoke_session(credentials.credentials):
            raise api_error(422, "not_a_session", "only a session token from POST /v1/login can be logged out")
        return Response(status_code=204)

    @app.get("/v1/me", response_model=PrincipalOut, tags=["auth"])
    def me(principal: Annotated[Principal, guards(EVERYONE)]) -> PrincipalOut:
        """Who the token belongs to, and their role."""
        return PrincipalOut(name=principal.name, role=principal.role)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(case_routes(ctx, guards))
    app.include_router(cluster_routes(ctx, guards))
    app.include_router(admin_routes(ctx, guards))
    install_web(app, ctx)
    return app
