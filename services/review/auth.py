"""Who may call the review API: bearer tokens (a login session or a case system's API token) and role checks.

Every endpoint but ``POST /v1/login`` and ``GET /healthz`` depends on :func:`require` with the roles it admits.
A request with no ``Authorization: Bearer`` header, or with a token that is not a valid session or an unrevoked
review API token, gets 401: a retailer's ingest key (``X-API-Key``, or the same key sent as a bearer token) is
never accepted here, so retailers never see a candidate. A valid principal whose role is not admitted gets 403.
"""


from collections.abc import Callable, Iterable
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rfr.review.users import Principal, Role

UNAUTHORIZED = "unauthorized"
ROLE_NOT_ALLOWED = "role_not_allowed"

CASE_VIEWERS = frozenset({Role.REVIEWER, Role.SUPERVISOR, Role.AUDITOR})
"""Open a case, its probe, still and candidates' photos (the store checks this too)."""
QUEUE_READERS = CASE_VIEWERS | {Role.ADMINISTRATOR}
"""The queue: case ids, states, ages, counts and top scores; never a candidate's identity."""
DECIDERS = frozenset({Role.REVIEWER, Role.SUPERVISOR})
SUPERVISORS = frozenset({Role.SUPERVISOR})
AUDIT_READERS = frozenset({Role.AUDITOR, Role.ADMINISTRATOR})
"""Not supervisors: they verify and resolve cases blind, and the log holds every decision of a case in progress."""
AUDIT_EXPORTERS = frozenset({Role.AUDITOR})
RETENTION_READERS = frozenset({Role.AUDITOR, Role.ADMINISTRATOR, Role.SUPERVISOR})
ADMINISTRATORS = frozenset({Role.ADMINISTRATOR})
DECISION_READERS = frozenset({Role.CASE_SYSTEM, Role.SUPERVISOR, Role.AUDITOR})
"""Final decisions (``GET /v1/decisions``): the only thing a case system's token can read."""
EVERYONE = frozenset(Role)

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A session token from POST /v1/login, or a case system's API token.")


class BearerChecker(Protocol):
    """What authentication needs of :class:`rfr.review.users.UserStore`."""

    def check_bearer(self, token: str) -> Principal | None: ...


def api_error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """An error answered as ``{"detail": {"reason": ..., "message": ...}}``."""
    return HTTPException(status, detail={"reason": reason, "message": message}, headers=headers)


def unauthorized(message: str) -> HTTPException:
    return api_error(401, UNAUTHORIZED, message, {"WWW-Authenticate": "Bearer"})


def authenticator(users: BearerChecker) -> Callable[..., Principal]:
    """The dependency that turns the request's bearer token into a :class:`Principal`, or answers 401."""

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise unauthorized("send Authorization: Bearer <session token from POST /v1/login, or API token>")
        found = users.check_bearer(credentials.credentials)
        if found is None:
            raise unauthorized("unknown, expired or revoked token")
        return found

    return principal


def require(authenticate: Callable[..., Principal], roles: Iterable[Role]) -> Callable[..., Principal]:
    """A dependency admitting only ``roles`` (403 ``role_not_allowed`` for any other valid principal)."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(str(r) for r in allowed))

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in allowed:
            raise api_error(403, ROLE_NOT_ALLOWED, f"a {principal.role} may not do this (needs: {names})")
        return principal

    return check


class Guards:
    """The role dependencies of one app, built on its :func:`authenticator`."""

    def __init__(self, users: BearerChecker) -> None:
        self.authenticate = authenticator(users)
        self._cache: dict[frozenset[Role], Callable[..., Principal]] = {}

    def __call__(self, roles: Iterable[Role]) -> Any:
        """``Depends`` admitting ``roles``: use as ``Annotated[Principal, guards(DECIDERS)]``."""
        key = frozenset(roles)
        if key not in self._cache:
            self._cache[key] = require(self.authenticate, key)
        return Depends(self._cache[key])
