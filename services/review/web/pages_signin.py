"""Sign-in and sign-out pages.

``GET /login`` shows the form (name, password, the pre-session CSRF token); ``POST /login`` checks the CSRF token,
then the throttle (429 with ``Retry-After`` after repeated failures of the name or from the address; the same
throttle as ``POST /v1/login``), then the password (:meth:`rfr.review.users.UserStore.authenticate`, audited as
login / login_failed), and on success sets the session cookie, drops the pre-session CSRF cookie and goes on to
``next`` (a path on this site) or the queue. ``POST /logout`` revokes the session (a copy of the cookie stops
working too) and drops the cookie.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.review.context import ApiContext
from services.review.web.security import (
    CSRF,
    clear_csrf_cookie,
    clear_session_cookie,
    render,
    safe_next,
    session_principal,
    set_session_cookie,
    web_state,
)
from services.review.web.throttle import attempt_login

logger = logging.getLogger(__name__)


def _login_page(request: Request, next_path: str, name: str = "", error: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    return render(request, "login.html", {"title": "Sign in", "next": next_path, "name": name, "error": error},
                  status, headers)


def signin_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_model=None)
    def home() -> Response:
        return RedirectResponse("/queue", status_code=303)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/queue") -> Response:
        if session_principal(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_page(request, safe_next(next))

    @router.post("/login", response_model=None)
    def login(request: Request, _: Annotated[None, CSRF], name: Annotated[str, Form(max_length=256)] = "",
              password: Annotated[str, Form(max_length=1024)] = "",
              next: Annotated[str, Form(max_length=2048)] = "/queue") -> Response:
        target = safe_next(next)
        address = request.client.host if request.client else "-"
        outcome = attempt_login(web_state(request).throttle, ctx.users, name, password, address)
        if outcome.wait_s > 0:
            wait = outcome.wait_s
            logger.info("sign-in of %r from %s refused for %ss: too many failures", name[:64], address, wait)
            return _login_page(request, target, name, f"Too many failed sign-ins: wait {wait} s, then try again.",
                               429, {"Retry-After": str(wait)})
        if outcome.principal is None:
            return _login_page(request, target, name, "Unknown user or wrong password (or the user is deactivated).",
                               401)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(request, response, ctx.users.issue_session(outcome.principal))
        clear_csrf_cookie(request, response)
        return response

    @router.post("/logout", response_model=None)
    def logout(request: Request, _: Annotated[None, CSRF]) -> Response:
        token = getattr(request.state, "session_token", None)  # set by the CSRF check (signed in: its token)
        if token:
            ctx.users.revoke_session(token)
        response = RedirectResponse("/login", status_code=303)
        clear_session_cookie(request, response)
        return response

    return router
