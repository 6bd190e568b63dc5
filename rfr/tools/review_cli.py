"""``rfr audit verify|export``, ``rfr retention run`` and ``rfr review user-add|token-create``.

Each command opens the review database itself (``review.database_url``, default the SQLite file
``<stack.state_dir>/review.db``) with the review secret (``review.secret_file``), so it runs where the service's
database and secret are reachable, with or without the service running. What a command changes is audited under
the actor ``cli:<operating-system user>`` with the role ``administrator``.

* ``rfr audit verify``: checks the hash chain, the signed head and checkpoints (:mod:`rfr.review.audit`). Exit 0
  when the log holds; 1 with each problem on stdout, naming the entry (``entry 17: hash does not match its content
  (edited)``); 2 when the database or the secret cannot be read. The check itself is recorded (``audit_verify``).
* ``rfr audit verify --file EXPORT``: the same for an export, offline (chain and hashes; no signatures, which need
  the secret).
* ``rfr audit export [--since T] [--until T] [--out FILE] --reason TEXT``: JSON lines (the export format of
  :mod:`rfr.review.audit`, re-verifiable offline) of the entries with ``since <= at < until`` (ISO-8601; a time
  without a zone is UTC; a date is its midnight UTC). The export is audited (action ``export``) before it is
  written.
* ``rfr retention run``: one retention pass (:func:`rfr.review.retention.run_retention`), printing what it purged.
* ``rfr review user-add NAME --role ROLE``: a user; the password is prompted for (twice), or read as the first
  line of stdin with ``--password-stdin``.
* ``rfr review token-create NAME [--expires-in-days 365]``: an API token for a case system, printed once (its
  expiry on stderr). API tokens are for case systems only: ``--role`` other than ``case_system`` is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from rfr.core.db import make_engine, redacted
from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, load_settings, review_database_url, review_secret, review_secret_path
from rfr.review.audit import AuditAction, AuditLog
from rfr.review.audit_chain import verify_export
from rfr.review.users import TOKEN_DEFAULT_DAYS, TOKEN_MAX_DAYS, TOKEN_ROLES, Principal, Role, UserError, UserStore
from rfr.tools.gallery_events import cli_actor

app = typer.Typer(add_completion=False, help="The review service's audit log, retention and users.")
audit_app = typer.Typer(no_args_is_help=True, help="The review audit log: verify it, export it.")
retention_app = typer.Typer(no_args_is_help=True, help="Retention of probe stills, crops and templates.")
review_app = typer.Typer(no_args_is_help=True, help="Review service users and API tokens.")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")
app.add_typer(review_app, name="review")

EXIT_PROBLEMS = 1
EXIT_UNAVAILABLE = 2


def _settings() -> Settings:
    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    return settings


def _fail(message: str, code: int = EXIT_UNAVAILABLE) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def cli_principal() -> Principal:
    """``cli:<operating-system user>`` as an administrator: whoever holds the database and the secret."""
    return Principal(cli_actor(), Role.ADMINISTRATOR)


@contextmanager
def _audit_log(settings: Settings, *, migrate: bool) -> Iterator[tuple[Engine, AuditLog]]:
    """The review database's engine and audit log; exit 2 when it or the secret cannot be had. ``migrate``: bring
    the schema to the newest revision first (creating the database); else it must exist."""
    url = review_database_url(settings)
    parsed = make_url(url)
    if not migrate and parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise _fail(f"no review database at {parsed.database} (review.database_url)")
    try:
        secret = review_secret(settings, create=migrate)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the review secret {review_secret_path(settings)}: {exc}") from exc
    engine = make_engine(url)
    try:
        audit = AuditLog(engine, secret, settings.review.checkpoint_every)
        if migrate:
            from rfr.review.store import ReviewStore

            ReviewStore.open(engine, audit, two_person=settings.review.two_person)
        yield engine, audit
    except SQLAlchemyError as exc:
        raise _fail(f"review database {redacted(url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (or date: its midnight) as an aware datetime; no zone given: UTC."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _time_option(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise _fail(f"{name}: not an ISO-8601 time: {text!r}") from exc


# --- audit --------------------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Option("--file", help="Check an export (JSON lines of `rfr audit export`) "
                                                        "instead of the database: chain and hashes, offline.")] = None,
) -> None:
    """Check the audit log: hash chain, no gaps, signed head and checkpoints. Exit 0 when it holds, 1 with each
    problem named, 2 when the database or secret (or the --file) cannot be read."""
    if file is not None:
        _verify_file(file)
        return
    with _audit_log(_settings(), migrate=False) as (_, audit):
        report = audit.verify()
        who = cli_principal()
        try:
            audit.append_now(who.name, who.role, AuditAction.AUDIT_VERIFY, reason="rfr audit verify",
                             details={"ok": report.ok, "entries": report.entries, "problems": len(report.problems)})
        except (SQLAlchemyError, RuntimeError) as exc:
            typer.echo(f"note: this check was not recorded in the log: {exc}", err=True)
    for problem in report.problems:
        typer.echo(problem)
    if not report.ok:
        typer.echo(f"audit log FAILED: {len(report.problems)} problem(s); {report.entries} entries, "
                   f"{report.checkpoints} checkpoints", err=True)
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(f"audit log OK: {report.entries} entries, {report.checkpoints} signed checkpoints")


def _verify_file(file: Path) -> None:
    try:
        with file.open(encoding="utf-8") as fh:
            report = verify_export(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {file}: {exc}") from exc
    for problem in report.problems:
        typer.echo(problem)
    if not report.ok:
        typer.echo(f"export FAILED: {len(report.problems)} problem(s) in {report.entries} entries", err=True)
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(f"export OK: {report.entries} entries chained and unedited (signatures need the database and "
               "secret: `rfr audit verify`)")


@audit_app.command("export")
def audit_export(
    reason: Annotated[str, typer.Option(help="Why (the request, case or crime reference); recorded in the log.")],
    since: Annotated[str | None, typer.Option(help="First time included (ISO-8601; no zone: UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="First time excluded (ISO-8601; no zone: UTC).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON lines here (default: stdout).")] = None,
) -> None:
    """Export audit entries as JSON lines (re-verifiable offline: see rfr/review/audit.py); audited."""
    if not reason.strip():
        raise _fail("--reason must say why the log is exported")
    start, end = _time_option(since, "--since"), _time_option(until, "--until")
    with _audit_log(_settings(), migrate=False) as (_, audit):
        who = cli_principal()
        audit.append_now(who.name, who.role, AuditAction.EXPORT, reason=reason.strip(), details={
            "since": start, "until": end, "out": str(out) if out else "-", "via": "rfr audit export"})
        count = _write_lines(audit, start, end, out)
    typer.echo(f"exported {count} entries" + (f" to {out}" if out else ""), err=True)


def _write_lines(audit: AuditLog, since: datetime | None, until: datetime | None, out: Path | None) -> int:
    """Write the entries to ``out`` (through ``<out>.partial``, renamed when complete) or stdout; their count."""
    if out is None:
        count = _dump(audit, since, until, sys.stdout)
        sys.stdout.flush()
        return count
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as fh:
        count = _dump(audit, since, until, fh)
    partial.replace(out)
    return count


def _dump(audit: AuditLog, since: datetime | None, until: datetime | None, fh: TextIO) -> int:
    count = 0
    for entry in audit.export(since, until):
        fh.write(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
        count += 1
    return count


# --- retention ----------------------------------------------------------------------------------------------
@retention_app.command("run")
def retention_run() -> None:
    """One retention pass now: purge the probes the retention.* policy says are due (audited)."""
    from rfr.core.blobstore import FileBlobStore
    from rfr.review.retention import run_retention
    from rfr.review.store import ReviewStore

    settings = _settings()
    with _audit_log(settings, migrate=True) as (engine, audit):
        store = ReviewStore(engine, audit, two_person=settings.review.two_person)
        report = run_retention(store, FileBlobStore(settings.blob_dir), settings.retention, datetime.now(UTC),
                               actor=cli_principal().name)
    purged = ", ".join(f"{kind} {n}" for kind, n in report.purged.items())
    rules: dict[str, int] = {}
    for rule in report.rules.values():
        rules[rule] = rules.get(rule, 0) + 1
    typer.echo(f"retention: {len(report.probes)} probe(s) purged"
               + (f" ({', '.join(f'{r} {n}' for r, n in sorted(rules.items()))})" if rules else "")
               + f"; deleted: {purged}; {len(report.expired_cases)} case(s) expired")


# --- users and tokens ---------------------------------------------------------------------------------------
def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@review_app.command("user-add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[Role, typer.Option(help="The user's role.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password as the first line "
                                                                          "of stdin instead of prompting.")] = False,
) -> None:
    """Create a review service user (audited). Exit 1 when refused (exists, bad name, short password)."""
    settings = _settings()
    password = _password(password_stdin)
    with _audit_log(settings, migrate=True) as (engine, audit):
        users = UserStore(engine, audit, session_ttl_s=settings.review.session_ttl_s)
        try:
            users.create_user(name, role, password, cli_principal(), reason="rfr review user-add")
        except UserError as exc:
            raise _fail(f"refused: {exc}", EXIT_PROBLEMS) from exc
    typer.echo(f"user {name} created ({role})")


@review_app.command("token-create")
def token_create(
    name: Annotated[str, typer.Argument(help="Name of the case system the token is for.")],
    role: Annotated[Role, typer.Option(help="The token's role: case_system, the only one an API token may have "
                                           "(people sign in as themselves).")] = Role.CASE_SYSTEM,
    expires_in_days: Annotated[int, typer.Option(help=f"Days until the token is refused (1-{TOKEN_MAX_DAYS}).")
                               ] = TOKEN_DEFAULT_DAYS,
) -> None:
    """Create an API token for a case system (audited) and print it; it is shown only this once (only its sha256
    is kept). Exit 1 when refused (a role other than case_system, a bad name or expiry)."""
    if role not in TOKEN_ROLES:
        raise _fail(f"refused: an API token is for a case system: --role must be {Role.CASE_SYSTEM}, not {role} "
                    "(people sign in as themselves: rfr review user-add)", EXIT_PROBLEMS)
    settings = _settings()
    with _audit_log(settings, migrate=True) as (engine, audit):
        users = UserStore(engine, audit, session_ttl_s=settings.review.session_ttl_s)
        try:
            token = users.create_token(name, role, cli_principal(), reason="rfr review token-create",
                                       expires_in_days=expires_in_days)
        except UserError as exc:
            raise _fail(f"refused: {exc}", EXIT_PROBLEMS) from exc
        info = users.token_info(token)
    typer.echo(token)
    expiry = f", expires {info.expires_at.isoformat()}" if info is not None else ""
    typer.echo(f"API token for {name} ({role}{expiry}): store it now, it cannot be shown again", err=True)
