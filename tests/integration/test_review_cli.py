"""`rfr audit verify|export`, `rfr retention run`, `rfr review user-add|token-create` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from support.review_data import SECRET, candidate_list, open_store
from typer.testing import CliRunner, Result

from rfr.core.blobstore import FileBlobStore
from rfr.core.db import make_engine
from rfr.review.audit import AuditLog
from rfr.review.users import Principal, Role, UserStore
from rfr.tools.review_cli import app, parse_time

PASSWORD = "a long enough password"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Settings of the CLI: this test's database, a secret file, the state and blob dirs under tmp_path."""
    secret = tmp_path / "review-secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return {"RFR_REVIEW__DATABASE_URL": database_url, "RFR_REVIEW__SECRET_FILE": str(secret),
            "RFR_STACK__STATE_DIR": str(tmp_path / "state"), "RFR_BLOB_DIR": str(tmp_path / "blobs"),
            "RFR_REVIEW__CHECKPOINT_EVERY": "3"}


def rfr(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=input)


def _audit(env: dict[str, str]) -> AuditLog:
    return AuditLog(make_engine(env["RFR_REVIEW__DATABASE_URL"]), SECRET)


def _sql(env: dict[str, str], statement: str) -> None:
    engine = make_engine(env["RFR_REVIEW__DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_users_tokens_verify_and_tampering(env: dict[str, str]) -> None:
    result = rfr(env, "review", "user-add", "alice", "--role", "reviewer", "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    result = rfr(env, "review", "user-add", "sue", "--role", "supervisor", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert rfr(env, "review", "user-add", "alice", "--role", "auditor", "--password-stdin",
               input=PASSWORD + "\n").exit_code == 1  # exists
    assert rfr(env, "review", "user-add", "bob", "--role", "reviewer", "--password-stdin",
               input="short\n").exit_code == 1
    result = rfr(env, "review", "token-create", "case-system-1")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "expires" in result.stderr
    engine = make_engine(env["RFR_REVIEW__DATABASE_URL"])
    users = UserStore(engine, AuditLog(engine, SECRET))
    assert users.authenticate("alice", PASSWORD) == Principal("alice", Role.REVIEWER)
    assert users.authenticate("sue", PASSWORD) == Principal("sue", Role.SUPERVISOR)
    assert users.check_token(token) == Principal("token:case-system-1", Role.CASE_SYSTEM)
    entries = list(_audit(env).export())
    assert [e["action"] for e in entries] == ["user_created", "user_created", "token_created", "login", "login"]
    assert all(e["actor"].startswith("cli:") for e in entries[:3])
    assert PASSWORD not in json.dumps(entries) and token not in json.dumps(entries)

    result = rfr(env, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "audit log OK: 5 entries, 1 signed checkpoints" in result.stdout

    _sql(env, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
    result = rfr(env, "audit", "verify")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["entry 2: hash does not match its content (edited)"]

    _sql(env, "DELETE FROM audit_entries WHERE seq >= 6")  # 6 was the recorded verify; the head counts 7
    result = rfr(env, "audit", "verify")
    assert result.exit_code == 1
    assert "entry 6: missing; the signed head counts 7 entries but the log ends at entry 5 (deleted)" in result.stdout
    assert "entry 2: hash does not match its content (edited)" in result.stdout


def test_export_is_audited_and_bounded(env: dict[str, str], tmp_path: Path) -> None:
    for name in ("u1", "u2", "u3"):
        assert rfr(env, "review", "user-add", name, "--role", "reviewer", "--password-stdin",
                   input=PASSWORD + "\n").exit_code == 0
    entries = list(_audit(env).export())
    out = tmp_path / "export.jsonl"
    result = rfr(env, "audit", "export", "--since", entries[1]["at"], "--reason", "DPO request 2024-17",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [2, 3, 4]  # 4: the export itself, recorded first
    assert lines[-1]["action"] == "export" and lines[-1]["reason"] == "DPO request 2024-17"
    assert lines[-1]["actor"].startswith("cli:") and lines[-1]["details"]["out"] == str(out)
    assert lines[0] == entries[1]

    result = rfr(env, "audit", "export", "--until", entries[1]["at"], "--reason", "check")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1]
    assert rfr(env, "audit", "export", "--reason", " ").exit_code == 2
    assert rfr(env, "audit", "export", "--reason", "x", "--since", "yesterday").exit_code == 2
    assert rfr(env, "audit", "verify").exit_code == 0

    # The export is checked offline, from entry 2 on (no database, no secret needed).
    held = rfr({}, "audit", "verify", "--file", str(out))
    assert held.exit_code == 0 and "export OK: 3 entries" in held.stdout, held.output
    text = out.read_text().splitlines()
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([text[0], text[1].replace('"reviewer"', '"supervisor"'), text[2]]) + "\n")
    bad = rfr({}, "audit", "verify", "--file", str(edited))
    assert bad.exit_code == 1 and "entry 3: hash does not match its content (edited)" in bad.stdout, bad.output
    gap = tmp_path / "gap.jsonl"
    gap.write_text("\n".join([text[0], text[2]]) + "\n")
    bad = rfr({}, "audit", "verify", "--file", str(gap))
    assert bad.exit_code == 1 and "entry 3: missing" in bad.stdout, bad.output
    assert rfr({}, "audit", "verify", "--file", str(tmp_path / "absent.jsonl")).exit_code == 2


def test_retention_run_purges_and_reports(env: dict[str, str], tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    still = blobs.put(b"a still of an old probe")
    store = open_store(env["RFR_REVIEW__DATABASE_URL"])  # its clock: 2025-03-01, long before now
    store.store.record_search(candidate_list("sub-1:f0", [], still_ref=still))
    result = rfr(env, "retention", "run")
    assert result.exit_code == 0, result.output
    assert "1 probe(s) purged (no_candidate 1); deleted: still 1, crop 1, template 1; 0 case(s) expired" \
        in result.stdout
    assert not blobs.path(still).exists()
    actions = [(e["action"], e["actor"]) for e in _audit(env).export()]
    assert actions[-2][0] == "purge" and actions[-1][0] == "retention_run"
    assert actions[-1][1].startswith("cli:")
    assert rfr(env, "audit", "verify").exit_code == 0


def test_verify_without_database_or_secret(tmp_path: Path) -> None:
    env = {"RFR_REVIEW__DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
           "RFR_REVIEW__SECRET_FILE": str(tmp_path / "no-secret"), "RFR_STACK__STATE_DIR": str(tmp_path)}
    result = rfr(env, "audit", "verify")
    assert result.exit_code == 2
    assert "no review database" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_parse_time() -> None:
    assert parse_time("2024-05-01").isoformat() == "2024-05-01T00:00:00+00:00"
    assert parse_time("2024-05-01T10:00:00+02:00").utcoffset() is not None
    assert parse_time("2024-05-01T10:00:00Z").isoformat() == "2024-05-01T10:00:00+00:00"


def test_token_create_refuses_any_role_but_case_system(env: dict[str, str]) -> None:
    """Regression (finding 3): an API token is for a case system, never a person's role; it expires."""
    for role in ("reviewer", "supervisor", "auditor", "administrator"):
        result = rfr(env, "review", "token-create", "alice", "--role", role)
        assert result.exit_code == 1, result.output
        assert "case system" in result.stderr and "--role must be case_system" in result.stderr
        assert result.stdout == ""
    assert rfr(env, "review", "token-create", "cad", "--expires-in-days", "0").exit_code == 1
    result = rfr(env, "review", "token-create", "cad", "--expires-in-days", "30")
    assert result.exit_code == 0, result.output
    engine = make_engine(env["RFR_REVIEW__DATABASE_URL"])
    users = UserStore(engine, AuditLog(engine, SECRET))
    [info] = users.list_tokens()
    assert (info.name, info.role) == ("cad", Role.CASE_SYSTEM)
    assert info.expires_at - info.created_at == timedelta(days=30)
    assert users.check_token(result.stdout.strip()) == Principal("token:cad", Role.CASE_SYSTEM)
    engine.dispose()
