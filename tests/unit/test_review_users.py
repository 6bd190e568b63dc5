"""Users, roles, passwords (Argon2id), session tokens and API tokens of the review service, on a SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, column, insert, select, text
from sqlalchemy import table as sa_table
from support.databases import at_revision
from support.review_data import cheap_hasher

from rfr.core.db import make_engine, migrate, sqlite_url
from rfr.review.audit import AuditLog
from rfr.review.store import MIGRATIONS, VERSION_TABLE
from rfr.review.tables import UtcDateTime
from rfr.review.users import (
    DuplicateUser,
    NotPermitted,
    Principal,
    Role,
    UnknownUser,
    UserError,
    UserStore,
    api_tokens,
    check_session,
    issue_session,
    revoked_sessions,
    token_digest,
    users,
)

SECRET = b"k" * 32
ADMIN = Principal("cli:root", Role.ADMINISTRATOR)
PASSWORD = "correct horse battery"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(sqlite_url(tmp_path / "review.db"))
    migrate(eng, MIGRATIONS, VERSION_TABLE)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(engine: Engine, clock: Clock) -> AuditLog:
    return AuditLog(engine, SECRET, checkpoint_every=10, clock=clock)


@pytest.fixture
def store(engine: Engine, audit: AuditLog, clock: Clock) -> UserStore:
    return UserStore(engine, audit, session_ttl_s=3600, clock=clock, hasher=cheap_hasher())


def _actions(audit: AuditLog) -> list[tuple[str, str, dict[str, object]]]:
    return [(e["action"], e["actor"], e["details"]) for e in audit.export()]


def _everything(engine: Engine, audit: AuditLog) -> str:
    """The audit log and every user and token row as one text (to look for secrets in)."""
    with engine.connect() as conn:
        rows = [*conn.execute(select(users)).all(), *conn.execute(select(api_tokens)).all()]
    return json.dumps(list(audit.export())) + repr(rows)


def test_roles_and_principal() -> None:
    assert [str(r) for r in Role] == ["reviewer", "supervisor", "auditor", "administrator", "case_system"]
    p = Principal("alice", Role.REVIEWER)
    with pytest.raises(AttributeError):
        p.name = "bob"  # type: ignore[misc]


def test_login_is_audited_and_never_records_the_password(store: UserStore, engine: Engine, audit: AuditLog) -> None:
    assert store.create_user("alice", Role.REVIEWER, PASSWORD, ADMIN) == Principal("alice", Role.REVIEWER)
    assert store.authenticate("alice", PASSWORD) == Principal("alice", Role.REVIEWER)
    assert store.authenticate("alice", "wrong password") is None
    assert store.authenticate("mallory", PASSWORD) is None
    assert _actions(audit) == [
        ("user_created", "cli:root", {"user": "alice", "role": "reviewer"}),
        ("login", "alice", {"method": "password"}),
        ("login_failed", "unauthenticated", {"name": "alice", "why": "bad_password"}),
        ("login_failed", "unauthenticated", {"name": "mallory", "why": "unknown_user"}),
    ]
    assert PASSWORD not in _everything(engine, audit)
    assert audit.verify().ok


def test_inactive_user_is_refused(store: UserStore, audit: AuditLog) -> None:
    store.create_user("bob", Role.SUPERVISOR, PASSWORD, ADMIN)
    store.deactivate("bob", ADMIN, reason="left the unit")
    assert store.authenticate("bob", PASSWORD) is None
    assert _actions(audit)[-2:] == [("user_changed", "cli:root", {"user": "bob", "active": False}),
                                    ("login_failed", "unauthenticated", {"name": "bob", "why": "inactive"})]
    info = store.get_user("bob")
    assert info is not None and not info.active and info.role is Role.SUPERVISOR


def test_refusals(store: UserStore) -> None:
    store.create_user("carol", Role.AUDITOR, PASSWORD, ADMIN)
    with pytest.raises(DuplicateUser):
        store.create_user("carol", Role.AUDITOR, PASSWORD, ADMIN)
    with pytest.raises(UserError):
        store.create_user("no spaces", Role.AUDITOR, PASSWORD, ADMIN)
    with pytest.raises(UserError):
        store.create_user("dave", Role.AUDITOR, "short", ADMIN)
    with pytest.raises(ValueError):
        store.create_user("dave", "chief", PASSWORD, ADMIN)  # type: ignore[arg-type]
    with pytest.raises(NotPermitted):
        store.create_user("dave", Role.REVIEWER, PASSWORD, Principal("carol", Role.AUDITOR))
    with pytest.raises(NotPermitted):
        store.create_token("cs", Role.CASE_SYSTEM, Principal("carol", Role.SUPERVISOR))
    with pytest.raises(UnknownUser):
        store.set_role("nobody", Role.REVIEWER, ADMIN)
    assert [u.name for u in store.list_users()] == ["carol"]


def test_default_hasher_is_argon2id_and_old_hashes_are_upgraded(engine: Engine, audit: AuditLog,
                                                                 store: UserStore) -> None:
    store.create_user("erin", Role.REVIEWER, PASSWORD, ADMIN)
    upgraded = UserStore(engine, audit)  # argon2-cffi's defaults
    assert upgraded.authenticate("erin", PASSWORD) == Principal("erin", Role.REVIEWER)
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "erin")).scalar_one()
    assert stored.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(stored)
    assert upgraded.authenticate("erin", PASSWORD) is not None


def test_sessions_expire_and_end_with_the_user(store: UserStore, clock: Clock) -> None:
    alice = store.create_user("alice", Role.REVIEWER, PASSWORD, ADMIN)
    token = store.issue_session(alice)
    assert token.startswith("rfs1.")
    assert store.check_session(token) == alice
    assert store.check_bearer(token) == alice
    clock.now = T0 + timedelta(seconds=3601)
    assert store.check_session(token) is None  # expired
    clock.now = T0
    assert store.check_session(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None  # forged
    store.set_password("alice", "a new long password", alice)  # one's own password
    assert store.check_session(token) is None  # the password changed
    token = store.issue_session(alice)
    store.set_role("alice", Role.SUPERVISOR, ADMIN)
    assert store.check_session(token) is None  # the role changed
    token = store.issue_session(Principal("alice", Role.SUPERVISOR))
    assert store.check_session(token) == Principal("alice", Role.SUPERVISOR)
    store.deactivate("alice", ADMIN)
    assert store.check_session(token) is None


def test_stateless_session_tokens() -> None:
    p = Principal("zoe", Role.AUDITOR)
    token = issue_session(SECRET, p, T0 + timedelta(minutes=5), "tag")
    claims = check_session(SECRET, token, T0)
    assert claims is not None and (claims.name, claims.role, claims.password_tag) == ("zoe", Role.AUDITOR, "tag")
    assert check_session(b"x" * 32, token, T0) is None
    assert check_session(SECRET, token, T0 + timedelta(minutes=5)) is None
    assert check_session(SECRET, "rfs1.garbage.more", T0) is None
    assert check_session(SECRET, "not a token", T0) is None


def test_api_tokens(store: UserStore, engine: Engine, audit: AuditLog) -> None:
    token = store.create_token("case-system-1", Role.CASE_SYSTEM, ADMIN, reason="CAD link")
    assert token.startswith("rft1.") and len(token) > 40
    system = Principal("token:case-system-1", Role.CASE_SYSTEM)
    assert store.check_token(token) == system
    assert store.check_bearer(token) == system
    assert store.check_token(token + "x") is None
    assert token not in _everything(engine, audit)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT token_sha256 FROM api_tokens")).scalar_one() == token_digest(token)
    [info] = store.list_tokens()
    assert (info.name, info.role, info.revoked_at) == ("case-system-1", Role.CASE_SYSTEM, None)
    assert store.revoke_token(info.id, ADMIN, reason="rotated")
    assert not store.revoke_token(info.id, ADMIN)
    assert store.check_token(token) is None
    assert info.expires_at == T0 + timedelta(days=365)
    assert _actions(audit) == [
        ("token_created", "cli:root", {"token_id": info.id, "name": "case-system-1", "role": "case_system",
                                       "expires_at": (T0 + timedelta(days=365)).isoformat()}),
        ("token_revoked", "cli:root", {"token_id": info.id, "name": "case-system-1"}),
    ]


# --- regression: finding 3 (API tokens of any role, never expiring) ----------------------------------------------
@pytest.mark.parametrize("role", [r for r in Role if r is not Role.CASE_SYSTEM])
def test_api_tokens_are_for_case_systems_only(store: UserStore, audit: AuditLog, role: Role) -> None:
    with pytest.raises(UserError, match="case system"):
        store.create_token("alice", role, ADMIN)
    assert store.list_tokens() == [] and _actions(audit) == []


def test_api_tokens_expire(store: UserStore, clock: Clock) -> None:
    token = store.create_token("cad", Role.CASE_SYSTEM, ADMIN, expires_in_days=2)
    info = store.token_info(token)
    assert info is not None and info.expires_at == T0 + timedelta(days=2)
    clock.now = T0 + timedelta(days=2) - timedelta(seconds=1)
    assert store.check_bearer(token) == Principal("token:cad", Role.CASE_SYSTEM)
    clock.now = T0 + timedelta(days=2)
    assert store.check_bearer(token) is None
    for days in (0, -1, 3651):
        with pytest.raises(UserError, match="expires in"):
            store.create_token("cad", Role.CASE_SYSTEM, ADMIN, expires_in_days=days)


def test_a_token_of_another_role_made_before_is_refused(store: UserStore, engine: Engine) -> None:
    token = store.create_token("alice", Role.CASE_SYSTEM, ADMIN)
    with engine.begin() as conn:  # as a release before 0003 could make it
        conn.execute(text("UPDATE api_tokens SET role = 'reviewer'"))
    assert store.check_bearer(token) is None


def test_migration_0003_gives_earlier_tokens_a_year(tmp_path: Path) -> None:
    eng = make_engine(sqlite_url(tmp_path / "old.db"))
    with at_revision(eng, MIGRATIONS, VERSION_TABLE, "0002") as conn:
        old = sa_table("api_tokens", column("name"), column("role"), column("token_sha256"),
                       column("created_at", UtcDateTime()))
        conn.execute(insert(old).values(name="cad", role="case_system", token_sha256=token_digest("rft1.old"),
                                        created_at=T0))
    migrate(eng, MIGRATIONS, VERSION_TABLE)
    store = UserStore(eng, AuditLog(eng, SECRET), clock=lambda: T0 + timedelta(days=364))
    [info] = store.list_tokens()
    assert info.expires_at == T0 + timedelta(days=365)
    assert store.check_token("rft1.old") == Principal("token:cad", Role.CASE_SYSTEM)
    eng.dispose()


# --- regression: finding 4 (failed logins audited under an attacker-chosen actor) ---------------------------------
def test_failed_logins_are_audited_as_unauthenticated_with_the_name_cut(store: UserStore, audit: AuditLog) -> None:
    assert store.authenticate("rfr-review", "x") is None
    assert store.authenticate("n" * 500, "x", suppressed=3) is None
    store.login_throttled("alice", 4, suppressed=2)
    assert _actions(audit) == [
        ("login_failed", "unauthenticated", {"name": "rfr-review", "why": "unknown_user"}),
        ("login_failed", "unauthenticated", {"name": "n" * 128, "why": "unknown_user", "suppressed": 3}),
        ("login_failed", "unauthenticated", {"name": "alice", "why": "throttled", "retry_after_s": 4,
                                             "suppressed": 2}),
    ]
    assert audit.query(actor="rfr-review") == []


# --- regression: finding 11 (signing out did not end the session) -------------------------------------------------
def test_a_revoked_session_is_refused_until_it_expires(store: UserStore, engine: Engine, clock: Clock) -> None:
    alice = store.create_user("alice", Role.REVIEWER, PASSWORD, ADMIN)
    token, other = store.issue_session(alice), store.issue_session(alice)  # two devices, at the same time
    assert token != other
    assert store.revoke_session(token)
    assert not store.revoke_session(token)  # already
    assert not store.revoke_session("rfs1.forged.token") and not store.revoke_session("rft1.x")
    assert store.check_session(token) is None and store.check_bearer(token) is None
    assert store.check_session(other) == alice  # only the session signed out ends
    with engine.connect() as conn:
        rows = conn.execute(select(revoked_sessions)).all()
    assert [(r.name, r.expires_at, r.token_sha256) for r in rows] == [
        ("alice", T0 + timedelta(seconds=3600), token_digest(token))]
    assert token not in repr(rows)
    clock.now = T0 + timedelta(hours=2)  # both expired: the next sign-out drops the old row
    later = store.issue_session(alice)
    assert store.revoke_session(later)
    with engine.connect() as conn:
        assert conn.execute(select(revoked_sessions.c.token_sha256)).scalars().all() == [token_digest(later)]
