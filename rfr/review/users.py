"""Reviewers, their roles, passwords, session tokens and the API tokens of case systems.

* Passwords: Argon2id (argon2-cffi :class:`~argon2.PasswordHasher`, library defaults), re-hashed at login when the
  defaults have moved on. At least :data:`MIN_PASSWORD_LENGTH` characters. Never logged, never audited.
* Session tokens (``rfs1.<payload>.<mac>``): stateless, HMAC-SHA256 over (user, role, expiry, a tag of the
  password hash) with a key derived from the service secret. Checked against the user row on every use, so a
  deactivated user, a changed role or a changed password ends the session; signing out
  (:meth:`UserStore.revoke_session`) records the token's sha256 in ``revoked_sessions`` until it would have
  expired, and a revoked token is refused.
* API tokens (``rft1.<random>``, 32 random bytes from :func:`secrets.token_urlsafe`): for case systems only
  (role ``case_system``: they read final decisions, never a case). Only their sha256 is stored; the plain token is
  returned once by :meth:`UserStore.create_token`. Each expires (``expires_in_days``, default
  :data:`TOKEN_DEFAULT_DAYS`); an expired or revoked one is refused. Their principal is named ``token:<name>`` so
  that the audit log never confuses a case system with a person (nor a token with the user of the same name).

Every login, failed login, user creation or change and token creation or revocation is one audit entry. A failed
login is recorded under the actor :data:`UNAUTHENTICATED` with the name tried in its details (cut to
:data:`ATTEMPTED_NAME_MAX` characters): whoever typed it is not known to be that user.
Administration (creating users and tokens, changing users) needs an administrator; one may change one's own
password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from rfr.review.audit import AuditAction, AuditLog, derive_key
from rfr.review.tables import ID, UtcDateTime, metadata

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
"""User and token names: letters, digits, ``. _ @ -``; 1-128 characters, starting with a letter or digit."""
SESSION_PREFIX = "rfs1."
TOKEN_PREFIX = "rft1."
TOKEN_PRINCIPAL_PREFIX = "token:"
TOKEN_DEFAULT_DAYS = 365
TOKEN_MAX_DAYS = 3650
UNAUTHENTICATED = "unauthenticated"
"""The audit actor of a failed login (the name tried goes in the entry's details)."""
ATTEMPTED_NAME_MAX = 128


class Role(StrEnum):
    REVIEWER = "reviewer"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMINISTRATOR = "administrator"
    CASE_SYSTEM = "case_system"  # API tokens of case systems: read final decisions only


TOKEN_ROLES = frozenset({Role.CASE_SYSTEM})
"""The only role an API token may have: people sign in (and are bound by the two-person rule) as themselves."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user's name (or ``token:<name>`` for an API token) and role."""

    name: str
    role: Role


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: Role
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime


class UserError(ValueError):
    """A user operation refused: a bad name or password, or a role that may not do it (subclasses below)."""


class DuplicateUser(UserError):
    pass


class UnknownUser(UserError):
    pass


class NotPermitted(UserError):
    pass


users = Table(
    "users",
    metadata,
    Column("name", String(ID), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(256), nullable=False, comment="Argon2id, PHC string"),
    Column("active", Boolean(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("name", String(ID), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True, comment="sha256 hex of the token"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=False, comment="refused from this time on (migration 0003)"),
)

revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True, comment="sha256 hex of a signed-out session token"),
    Column("name", String(ID), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, comment="the session's own expiry: the row goes after it"),
    Column("revoked_at", UtcDateTime(), nullable=False),
    Index(None, "expires_at"),
)


# --- session tokens (stateless) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionClaims:
    name: str
    role: Role
    expires_at: datetime
    password_tag: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def password_tag(password_hash: str) -> str:
    """A short digest of a password hash, carried in sessions so that changing the password ends them."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def issue_session(secret: bytes, principal: Principal, expires_at: datetime, tag: str = "") -> str:
    """A signed session token ``rfs1.<payload>.<mac>`` for ``principal`` valid until ``expires_at`` (aware)."""
    payload = json.dumps({"n": principal.name, "r": str(principal.role), "e": expires_at.timestamp(), "p": tag,
                          "j": secrets.token_urlsafe(12)},  # unique: signing out one session ends that one only
                         sort_keys=True, separators=(",", ":")).encode()
    body = SESSION_PREFIX + _b64(payload)
    mac = hmac.new(derive_key(secret, "session"), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def check_session(secret: bytes, token: str, now: datetime) -> SessionClaims | None:
    """The claims of a session token whose signature holds and which has not expired at ``now``; else None."""
    if not token.startswith(SESSION_PREFIX) or token.count(".") != 2:
        return None
    body, _, mac_text = token.rpartition(".")
    expected = hmac.new(derive_key(secret, "session"), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac_text)):
            return None
        claims = json.loads(_unb64(body.removeprefix(SESSION_PREFIX)))
        expires = datetime.fromtimestamp(float(claims["e"]), UTC)
        result = SessionClaims(str(claims["n"]), Role(claims["r"]), expires, str(claims["p"]))
    except (ValueError, KeyError, TypeError):
        return None
    return result if now < result.expires_at else None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"bad name {name[:64]!r}: 1-128 letters, digits, '.', '_', '@' or '-', starting with a "
                        "letter or digit")
    return name


def _check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UserError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return password


class UserStore:
    """Users and API tokens in the review database (tables migrated), every change audited in its transaction.

    ``secret`` keys the session tokens (default: the audit log's secret; a key is derived from it);
    ``session_ttl_s`` is how long a session lasts; ``clock`` returns aware UTC times.
    """

    def __init__(self, engine: Engine, audit: AuditLog, *, secret: bytes | None = None,
                 session_ttl_s: float = 28800.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 hasher: PasswordHasher | None = None) -> None:
        self._engine = engine
        self._audit = audit
        self._secret = secret if secret is not None else audit.secret
        self._ttl = timedelta(seconds=session_ttl_s)
        self._clock = clock
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _dummy_hash(self) -> str:
        """Verified against when the user is unknown, so that the answer takes as long as for a known one."""
        return self._hasher.hash(secrets.token_urlsafe(16))

    def _audit_as(self, conn: Connection, by: Principal, action: AuditAction, reason: str,
                  details: dict[str, Any]) -> None:
        self._audit.append(conn, by.name, by.role, action, reason=reason, details=details)

    @staticmethod
    def _require_admin(by: Principal, what: str) -> None:
        if by.role != Role.ADMINISTRATOR:
            raise NotPermitted(f"{what} needs an administrator, not {by.role}")

    # --- users ------------------------------------------------------------------------------------------------
    def create_user(self, name: str, role: Role, password: str, by: Principal, reason: str = "") -> Principal:
        """Create an active user; raises DuplicateUser, UserError (bad name or password), NotPermitted."""
        self._require_admin(by, "creating a user")
        role = Role(role)
        password_hash = self._hasher.hash(_check_password(password))
        try:
            with self._engine.begin() as conn:
                if conn.execute(select(users.c.name).where(users.c.name == _check_name(name))).first():
                    raise DuplicateUser(f"user {name!r} exists")
                conn.execute(insert(users).values(name=name, role=str(role), password_hash=password_hash,
                                                  active=True, created_at=self._clock()))
                self._audit_as(conn, by, AuditAction.USER_CREATED, reason, {"user": name, "role": str(role)})
        except IntegrityError as exc:
            raise DuplicateUser(f"user {name!r} exists") from exc
        logger.info("user %s created (%s) by %s", name, role, by.name)
        return Principal(name, role)

    def _change(self, name: str, values: dict[str, Any], by: Principal, reason: str, details: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            if conn.execute(update(users).where(users.c.name == name).values(**values)).rowcount != 1:
                raise UnknownUser(f"no user {name!r}")
            self._audit_as(conn, by, AuditAction.USER_CHANGED, reason, {"user": name, **details})
        logger.info("user %s changed by %s: %s", name, by.name, ", ".join(details))

    def set_password(self, name: str, password: str, by: Principal, reason: str = "") -> None:
        """Replace a user's password (an administrator, or the user themself); ends the user's sessions."""
        if by.name != name:
            self._require_admin(by, "setting another user's password")
        password_hash = self._hasher.hash(_check_password(password))
        self._change(name, {"password_hash": password_hash}, by, reason, {"password": "changed"})

    def set_role(self, name: str, role: Role, by: Principal, reason: str = "") -> None:
        self._require_admin(by, "changing a role")
        self._change(name, {"role": str(Role(role))}, by, reason, {"role": str(Role(role))})

    def set_active(self, name: str, active: bool, by: Principal, reason: str = "") -> None:
        """Activate or deactivate a user; an inactive user cannot log in and their sessions stop working."""
        self._require_admin(by, "activating or deactivating a user")
        self._change(name, {"active": active}, by, reason, {"active": active})

    def deactivate(self, name: str, by: Principal, reason: str = "") -> None:
        self.set_active(name, False, by, reason)

    def get_user(self, name: str) -> UserInfo | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return None if row is None else UserInfo(row.name, Role(row.role), bool(row.active), row.created_at)

    def list_users(self) -> list[UserInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [UserInfo(r.name, Role(r.role), bool(r.active), r.created_at) for r in rows]

    # --- logins and sessions ----------------------------------------------------------------------------------
    def authenticate(self, name: str, password: str, *, suppressed: int = 0) -> Principal | None:
        """The user's principal when ``name`` is an active user with this password, else None; audited as
        ``login`` (actor: the user) or ``login_failed`` (actor :data:`UNAUTHENTICATED`, the name tried and why:
        unknown_user, bad_password, inactive). ``suppressed``: refused tries of this name that the sign-in
        throttle did not record one by one, counted in this entry's details."""
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        ok = self._verify(row.password_hash if row is not None else self._dummy_hash, password)
        failure = "unknown_user" if row is None else "bad_password" if not ok else None
        if row is not None and ok and not row.active:
            failure = "inactive"
        extra = {"suppressed": suppressed} if suppressed > 0 else {}
        with self._engine.begin() as conn:
            if failure is not None or row is None:
                self._audit.append(conn, UNAUTHENTICATED, "", AuditAction.LOGIN_FAILED,
                                   details={"name": name[:ATTEMPTED_NAME_MAX], "why": failure, **extra})
                logger.info("login failed for %r: %s", name[:ATTEMPTED_NAME_MAX], failure)
                return None
            if self._hasher.check_needs_rehash(row.password_hash):
                conn.execute(update(users).where(users.c.name == name)
                             .values(password_hash=self._hasher.hash(password)))
            self._audit.append(conn, row.name, row.role, AuditAction.LOGIN,
                               details={"method": "password", **extra})
        return Principal(row.name, Role(row.role))

    def login_throttled(self, name: str, retry_after_s: int, suppressed: int = 0) -> None:
        """Record a sign-in refused by the throttle (``login_failed``, why ``throttled``, actor
        :data:`UNAUTHENTICATED`): the throttle calls this once per name and window, and counts the rest as
        ``suppressed`` in the next entry."""
        details: dict[str, Any] = {"name": name[:ATTEMPTED_NAME_MAX], "why": "throttled",
                                   "retry_after_s": retry_after_s}
        if suppressed > 0:
            details["suppressed"] = suppressed
        with self._engine.begin() as conn:
            self._audit.append(conn, UNAUTHENTICATED, "", AuditAction.LOGIN_FAILED, details=details)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def issue_session(self, principal: Principal) -> str:
        """A session token for a user who has just authenticated, valid ``session_ttl_s``; UnknownUser if gone."""
        with self._engine.connect() as conn:
            row = conn.execute(select(users.c.password_hash).where(users.c.name == principal.name)).first()
        if row is None:
            raise UnknownUser(f"no user {principal.name!r}")
        return issue_session(self._secret, principal, self._clock() + self._ttl, password_tag(row.password_hash))

    def check_session(self, token: str) -> Principal | None:
        """The principal of a valid, unexpired, not signed-out session token whose user is still active, with the
        same role and password; else None."""
        claims = check_session(self._secret, token, self._clock())
        if claims is None:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == claims.name)).first()
            revoked = conn.execute(select(revoked_sessions.c.token_sha256)
                                   .where(revoked_sessions.c.token_sha256 == token_digest(token))).first()
        if (row is None or revoked is not None or not row.active or row.role != claims.role
                or not hmac.compare_digest(password_tag(row.password_hash), claims.password_tag)):
            return None
        return Principal(claims.name, claims.role)

    def revoke_session(self, token: str) -> bool:
        """Sign out: a valid session token is refused from now on (its sha256 is kept until it would have expired;
        rows of sessions expired since are dropped). False when ``token`` is not a valid session or was already
        revoked."""
        now = self._clock()
        claims = check_session(self._secret, token, now)
        if claims is None:
            return False
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(revoked_sessions).where(revoked_sessions.c.expires_at <= now))
                conn.execute(insert(revoked_sessions).values(token_sha256=token_digest(token), name=claims.name,
                                                             expires_at=claims.expires_at, revoked_at=now))
        except IntegrityError:
            return False
        logger.info("session of %s ended (signed out)", claims.name)
        return True

    # --- API tokens -------------------------------------------------------------------------------------------
    def create_token(self, name: str, role: Role, by: Principal, reason: str = "",
                     expires_in_days: int = TOKEN_DEFAULT_DAYS) -> str:
        """A new API token for ``name`` (a case system; ``role`` must be ``case_system``) that expires in
        ``expires_in_days`` (1 to :data:`TOKEN_MAX_DAYS`); returns the plain token, shown only now (only its
        sha256 is stored). Raises UserError for a bad name, role or expiry; NotPermitted."""
        self._require_admin(by, "creating an API token")
        role = Role(role)
        if role not in TOKEN_ROLES:
            raise UserError(f"an API token is for a case system: its role must be {Role.CASE_SYSTEM}, not {role} "
                            "(people sign in as themselves, so that the two-person rule and the audit log hold)")
        if isinstance(expires_in_days, bool) or not 1 <= int(expires_in_days) <= TOKEN_MAX_DAYS:
            raise UserError(f"an API token expires in 1 to {TOKEN_MAX_DAYS} days, not {expires_in_days!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = now + timedelta(days=int(expires_in_days))
        with self._engine.begin() as conn:
            token_id = conn.execute(insert(api_tokens).values(
                name=_check_name(name), role=str(role), token_sha256=token_digest(token),
                created_at=now, expires_at=expires_at)).inserted_primary_key
            details = {"token_id": token_id[0] if token_id else None, "name": name, "role": str(role),
                       "expires_at": expires_at.isoformat()}
            self._audit_as(conn, by, AuditAction.TOKEN_CREATED, reason, details)
        logger.info("API token for %s (%s) created by %s, expires %s", name, role, by.name, expires_at)
        return token

    @staticmethod
    def _token_info(row: Any) -> TokenInfo:
        return TokenInfo(row.id, row.name, Role(row.role), row.created_at, row.revoked_at, row.expires_at)

    def list_tokens(self) -> list[TokenInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).all()
        return [self._token_info(r) for r in rows]

    def token_info(self, token: str) -> TokenInfo | None:
        """What is recorded of the API token ``token`` (revoked or expired ones too), or None."""
        with self._engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_sha256 == token_digest(token))).first()
        return None if row is None else self._token_info(row)

    def revoke_token(self, token_id: int, by: Principal, reason: str = "") -> bool:
        """Revoke a token by id; False when there is no such unrevoked token."""
        self._require_admin(by, "revoking an API token")
        with self._engine.begin() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
            if row is None or row.revoked_at is not None:
                return False
            conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=self._clock()))
            self._audit_as(conn, by, AuditAction.TOKEN_REVOKED, reason, {"token_id": token_id, "name": row.name})
        return True

    def check_token(self, token: str) -> Principal | None:
        """The principal (``token:<name>``, ``case_system``) of an unrevoked, unexpired API token, else None (a
        token of any other role, made before tokens were for case systems only, is refused too)."""
        digest = token_digest(token)
        with self._engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_sha256 == digest)).first()
        if (row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest)
                or row.role not in TOKEN_ROLES or self._clock() >= row.expires_at):
            return None
        return Principal(TOKEN_PRINCIPAL_PREFIX + row.name, Role(row.role))

    def check_bearer(self, token: str) -> Principal | None:
        """A session token or an API token (``Authorization: Bearer ...``): its principal, or None."""
        if token.startswith(SESSION_PREFIX):
            return self.check_session(token)
        return self.check_token(token)
