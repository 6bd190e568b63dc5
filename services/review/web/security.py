"""Security of the review pages: the cookie session, CSRF tokens, the sign-in throttle, headers, rendering.

* Session: the token of :meth:`rfr.review.users.UserStore.issue_session` in cookie ``rfr_session`` (HttpOnly,
  SameSite=Strict, Path=/, Secure when ``review.cookie_secure``, Max-Age the session's lifetime). Only session
  tokens work on pages (:meth:`UserStore.check_session`): a case system's API token or a retailer's key never.
* Sign-out (``POST /logout``) revokes the session token itself (:meth:`UserStore.revoke_session`), not only the
  cookie: a copy of the cookie stops working too.
* CSRF: every form carries a hidden ``csrf`` field, HMAC-SHA256 (key derived from the service secret, purpose
  ``csrf``) of the session token; before sign-in, of a random pre-session cookie (double submit: ``rfr_csrf``, or
  ``__Host-rfr_csrf`` when ``review.cookie_secure``, so that a sibling host cannot plant it). The pre-session token
  is for the sign-in form only: once signed in, only the session's token is accepted. A POST without a valid one
  gets the 403 page "form expired or forged (CSRF)".
* Headers (:func:`security_headers`): CSP without inline script or style, ``Cache-Control: no-store``,
  ``nosniff``, ``Referrer-Policy: no-referrer`` on every page and image (not on ``/docs``, whose page needs a CDN).

For page modules: ``principal: Annotated[Principal, page_principal(ROLES)]`` (redirect to ``/login`` when not
signed in, 403 page for another role), ``_: Annotated[None, CSRF]`` on every POST, ``render(request, "x.html",
{...})`` for a page (``csrf_field(request)`` inside a form; templates get ``csrf`` ready-made; filters ``when``,
``age`` and ``still_status`` (:mod:`services.review.web.stills`)), and raise
:class:`PageError` for an error page. :func:`install_security` wires it into an app.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from rfr.review.audit_chain import derive_key
from rfr.review.users import Principal, Role
from services.review.web.stills import still_status_words
from services.review.web.throttle import LoginThrottle

logger = logging.getLogger(__name__)

SESSION_COOKIE = "rfr_session"
CSRF_COOKIE = "rfr_csrf"
SECURE_CSRF_COOKIE = "__Host-rfr_csrf"
"""The pre-session CSRF cookie's name when ``cookie_secure``: the ``__Host-`` prefix makes browsers refuse it unless
it is Secure, Path=/ and without Domain, so a same-site (sibling host) page cannot plant one."""
CSRF_FIELD = "csrf"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
UNGUARDED_PREFIXES = ("/docs", "/redoc", "/openapi.json")
"""FastAPI's interactive docs load a script from a CDN and run inline script: no CSP there (nothing secret)."""
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def when(value: datetime | None) -> str:
    """A time as pages show it: ``2025-03-01 12:00 UTC`` (empty for None)."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(value: datetime | None, now: datetime) -> str:
    """How long before ``now``: ``45 min``, ``3 h``, ``2 d``."""
    if value is None:
        return ""
    minutes = max(0, int((now - value).total_seconds() // 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h" if minutes < 2880 else f"{minutes // 1440} d"


ENV.filters["when"] = when
ENV.filters["age"] = age
ENV.filters["still_status"] = still_status_words

QUEUE_ROLES = frozenset({Role.REVIEWER, Role.SUPERVISOR, Role.AUDITOR, Role.ADMINISTRATOR})
NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("Queue", "/queue", QUEUE_ROLES),
    ("Supervisor", "/supervisor", frozenset({Role.SUPERVISOR})),
    ("Clusters", "/clusters", frozenset({Role.REVIEWER, Role.SUPERVISOR, Role.AUDITOR})),
    ("Audit", "/audit", frozenset({Role.AUDITOR, Role.ADMINISTRATOR})),
    ("Gallery", "/gallery", frozenset({Role.ADMINISTRATOR})),
    ("Retention", "/retention", frozenset({Role.AUDITOR, Role.ADMINISTRATOR, Role.SUPERVISOR})),
)
"""Navigation links by role (the same roles as the pages' guards); "Sign out" is a form in the layout."""


class SessionChecker(Protocol):
    """What the pages need of :class:`rfr.review.users.UserStore`."""

    def check_session(self, token: str) -> Principal | None: ...

    def revoke_session(self, token: str) -> bool: ...


@dataclass
class WebState:
    """One app's page security: sessions, the CSRF key, cookie flags and the sign-in throttle (the same object
    as the API's ``POST /v1/login``)."""

    users: SessionChecker
    csrf_key: bytes
    session_ttl_s: float
    cookie_secure: bool
    throttle: LoginThrottle

    @property
    def csrf_cookie(self) -> str:
        """The pre-session CSRF cookie's name."""
        return SECURE_CSRF_COOKIE if self.cookie_secure else CSRF_COOKIE


class PageError(Exception):
    """Answer with the error page: ``status``, a ``title`` and a ``message`` for people, a link ``back`` (a path)."""

    def __init__(self, status: int, title: str, message: str, headers: Mapping[str, str] | None = None,
                 back: str | None = None) -> None:
        super().__init__(f"{status} {title}: {message}")
        self.status = status
        self.title = title
        self.message = message
        self.headers = dict(headers or {})
        self.back = back


class PageRedirect(Exception):
    """Answer with a 303 to ``location`` (e.g. the sign-in page)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def web_state(request: Request) -> WebState:
    state = getattr(request.app.state, "rfr_web", None)
    if not isinstance(state, WebState):
        raise RuntimeError("the review pages are not installed on this app (install_security)")
    return state


# -- sessions ------------------------------------------------------------------------------------------------------

def session_principal(request: Request) -> Principal | None:
    """The principal of the request's session cookie (cached on the request), or None."""
    if hasattr(request.state, "principal"):
        found: Principal | None = request.state.principal
        return found
    token = request.cookies.get(SESSION_COOKIE, "")
    principal = web_state(request).users.check_session(token) if token else None
    request.state.principal = principal
    request.state.session_token = token if principal is not None else None
    return principal


def safe_next(target: str | None, default: str = "/queue") -> str:
    """``target`` when it is a path on this site (``/x``, not ``//host`` or a URL), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _login_location(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(here, safe="")


_GUARDS: dict[frozenset[Role], Any] = {}


def page_principal(roles: Iterable[Role]) -> Any:
    """``Depends`` admitting a signed-in user of ``roles``: ``Annotated[Principal, page_principal(ROLES)]``.
    Not signed in (no, bad or expired cookie) -> 303 to ``/login?next=<this page>``; another role -> 403 page."""
    allowed = frozenset(roles)
    if allowed not in _GUARDS:
        def check(request: Request) -> Principal:
            principal = session_principal(request)
            if principal is None:
                raise PageRedirect(_login_location(request))
            if principal.role not in allowed:
                raise PageError(403, "Not allowed", f"A {principal.role} may not open this page.")
            return principal

        _GUARDS[allowed] = Depends(check)
    return _GUARDS[allowed]


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    state = web_state(request)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(state.session_ttl_s), path="/", httponly=True,
                        samesite="strict", secure=state.cookie_secure)


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=web_state(request).cookie_secure)


def clear_csrf_cookie(request: Request, response: Response) -> None:
    """Drop the pre-session CSRF cookie (after sign-in it is no longer accepted)."""
    state = web_state(request)
    if request.cookies.get(state.csrf_cookie):
        response.delete_cookie(state.csrf_cookie, path="/", httponly=True, samesite="strict",
                               secure=state.cookie_secure)


# -- CSRF ---------------------------------------------------------------------------------------------------------

def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The CSRF token forms of this request's page carry: bound to the session, else to the pre-session cookie
    (minted here when absent; :func:`render` sets it)."""
    state = web_state(request)
    session_principal(request)
    token = request.state.session_token
    if token:
        return _mac(state.csrf_key, "session:" + token)
    pre = request.cookies.get(state.csrf_cookie) or getattr(request.state, "new_csrf_cookie", None)
    if not pre:
        pre = secrets.token_urlsafe(24)
        request.state.new_csrf_cookie = pre
    return _mac(state.csrf_key, "pre:" + pre)


def csrf_field(request: Request) -> Markup:
    """The hidden ``<input name="csrf">`` every form of a page carries."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token(request))


def _expected_token(request: Request) -> str | None:
    """The one token a form post must carry: the session's when signed in (never the pre-session one then), else
    the pre-session cookie's; None when there is neither."""
    state = web_state(request)
    session_principal(request)
    if request.state.session_token:
        return _mac(state.csrf_key, "session:" + request.state.session_token)
    pre = request.cookies.get(state.csrf_cookie)
    return _mac(state.csrf_key, "pre:" + pre) if pre else None


async def require_csrf(request: Request) -> None:
    """Refuse (403 page) a form post whose ``csrf`` field is missing or not this session's token."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = _expected_token(request)
    if isinstance(sent, str) and sent and expected is not None and hmac.compare_digest(sent, expected):
        return
    logger.info("form post to %s refused: missing or wrong CSRF token", request.url.path)
    raise PageError(403, "Form expired or forged (CSRF)",
                    "This form expired or was not sent by this site (CSRF). Go back, reload the page and try again.")


CSRF = Depends(require_csrf)
"""Use on every POST: ``_: Annotated[None, CSRF]``."""


# -- rendering ----------------------------------------------------------------------------------------------------

def nav_links(principal: Principal | None) -> list[tuple[str, str]]:
    """(label, href) of the navigation for ``principal``'s role."""
    if principal is None:
        return []
    return [(label, href) for label, href, roles in NAV if principal.role in roles]


def render(request: Request, template_name: str, context: Mapping[str, Any] | None = None,
           status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """The page ``template_name`` (autoescaped Jinja2, extending ``base.html``). Templates also get ``request``,
    ``principal`` (None when signed out), ``nav`` (label, href) and ``csrf`` (the hidden field, as markup)."""
    principal = session_principal(request)
    values: dict[str, Any] = {"request": request, "principal": principal, "nav": nav_links(principal),
                              "csrf": csrf_field(request), "path": request.url.path}
    values.update(context or {})
    body = ENV.get_template(template_name).render(values)
    response = HTMLResponse(body, status_code=status, headers=dict(headers or {}))
    new = getattr(request.state, "new_csrf_cookie", None)
    if new:
        state = web_state(request)
        response.set_cookie(state.csrf_cookie, new, path="/", httponly=True, samesite="strict",
                            secure=state.cookie_secure)
    return response


# -- middleware and handlers --------------------------------------------------------------------------------------

async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Set :data:`HEADERS` on every response but FastAPI's docs (static files keep their cache headers)."""
    response = await call_next(request)
    path = request.url.path
    if path.startswith(UNGUARDED_PREFIXES):
        return response
    for name, value in HEADERS.items():
        if name == "Cache-Control" and path.startswith("/static/"):
            continue
        response.headers[name] = value
    return response


def is_page(request: Request) -> bool:
    """Whether ``request`` is for a page (not the JSON API under ``/v1``)."""
    return not request.url.path.startswith("/v1/") and request.url.path != "/healthz"


def error_page(request: Request, status: int, title: str, message: str,
               headers: Mapping[str, str] | None = None, back: str | None = None) -> HTMLResponse:
    """The error page (``error.html``): a title, a message, a link back to ``back`` (else the queue)."""
    return render(request, "error.html", {"title": title, "message": message, "status": status,
                                          "back": safe_next(back, "")}, status, headers)


def install_security(app: FastAPI, state: WebState) -> None:
    """Put ``state`` on ``app``, add :func:`security_headers` and the page error handlers."""
    app.state.rfr_web = state
    app.middleware("http")(security_headers)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return error_page(request, exc.status, exc.title, exc.message, exc.headers, exc.back)

    async def redirect(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageRedirect)
        return RedirectResponse(exc.location, status_code=303)

    app.add_exception_handler(PageError, page_error)
    app.add_exception_handler(PageRedirect, redirect)


def new_state(users: SessionChecker, secret: bytes, session_ttl_s: float, cookie_secure: bool,
              throttle: LoginThrottle) -> WebState:
    """A :class:`WebState` with its CSRF key derived from the service ``secret``; ``throttle``: the app's sign-in
    throttle (:attr:`services.review.context.ApiContext.login_throttle`)."""
    return WebState(users, derive_key(secret, "csrf"), session_ttl_s, cookie_secure, throttle)
