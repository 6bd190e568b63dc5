"""SQL databases of the stores (ingest's submission store, the review store): one URL chooses the backend.

* SQLite (the embedded default, ``sqlite:///<path>``): one file, started by nothing. :func:`make_engine` creates its
  folder, turns on WAL (readers do not wait for the writer), ``foreign_keys``, a 30 s busy timeout, and begins every
  transaction with ``BEGIN IMMEDIATE``, so writers (threads or processes) queue for the file lock instead of failing
  with "database is locked" half-way through a transaction. ``synchronous=NORMAL``: a killed process loses no
  committed transaction; a power cut may lose the last few.
* PostgreSQL (at scale, several replicas): ``postgresql+psycopg://user:password@host:5432/db`` (psycopg 3; a plain
  ``postgresql://`` URL is read as psycopg too). Connections are checked before use (``pool_pre_ping``).

Each store keeps its schema in an Alembic history of its own (``<store>/migrations``: ``env.py`` +
``versions/``) and its own version table, so several stores can share one PostgreSQL database; :func:`migrate`
brings a database to the newest revision, programmatically (no ``alembic.ini``). A store's ``env.py`` is::

    from rfr.core.db import run_migrations

    run_migrations()

Log URLs through :func:`redacted` only: they may carry a password.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

logger = logging.getLogger(__name__)

STORE_OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
"""Unreachable, locked past the busy timeout, connection lost, pool exhausted: the store, not the message (every
service with a store retries these without limit)."""


BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another writer's lock before failing (OperationalError)."""

CONNECTION_ATTR = "connection"
VERSION_TABLE_ATTR = "version_table"
"""Keys of ``alembic.config.Config.attributes`` set by :func:`migrate` and read by :func:`run_migrations`."""


def _parse(url: str) -> URL:
    """The URL with its backend normalised (``postgresql://`` -> psycopg 3); ValueError when it is not one."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        return parsed
    raise ValueError(f"unsupported database URL {redacted(url)!r}: use sqlite:///<path> or "
                     "postgresql+psycopg://user:password@host:port/database")


def sqlite_url(path: Path) -> str:
    """``sqlite:///<path>`` for a file (relative paths stay relative to the working directory)."""
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and error messages (never raises)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///<path>`` or ``postgresql+psycopg://...``), tuned as the module says.

    Nothing is connected yet, except that a SQLite file's folder is created. Raises ValueError for a URL that is
    not one of these (the message has the password hidden), OSError when the SQLite folder cannot be created.
    Connection failures surface later, as :class:`sqlalchemy.exc.OperationalError`, on first use.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
    _tune_sqlite(engine, wal=not in_memory)
    return engine


def _tune_sqlite(engine: Engine, wal: bool) -> None:
    """SQLAlchemy's recipe for pysqlite ("Enabling Non-Legacy SQLite Transactional Modes"): the driver's own BEGIN
    handling is switched off and every transaction begins with BEGIN IMMEDIATE (takes the write lock up front)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN/COMMIT of its own
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if wal:
                _wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _wal(cursor: Any) -> None:
    """Put the database in WAL mode (it stays so: later connections find it done). Switching needs the exclusive
    lock, and SQLite answers "database is locked" at once, without waiting the busy timeout, while another
    connection of a fresh file is switching too: retried here until the busy timeout has passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _lock_key(version_table: str) -> int:
    """A stable PostgreSQL advisory-lock key per store (its version table name)."""
    return zlib.crc32(f"rfr.migrate:{version_table}".encode())


def migrate(engine: Engine, script_location: Path, version_table: str) -> None:
    """Upgrade the database to the newest revision of the Alembic history at ``script_location``.

    Runs in one transaction, under a lock (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL: an advisory
    lock per ``version_table``), so replicas starting together migrate once and the others wait, then find it
    done. ``script_location``'s ``env.py`` must call :func:`run_migrations`. Raises
    :class:`alembic.util.CommandError` for a missing or broken history (or a database stamped with a revision this
    history does not know: a newer release wrote it), :class:`sqlalchemy.exc.OperationalError` when the
    database cannot be reached or is locked longer than the busy timeout.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(version_table)})
        config.attributes[CONNECTION_ATTR] = conn
        config.attributes[VERSION_TABLE_ATTR] = version_table
        alembic_logger = logging.getLogger("alembic")
        level = alembic_logger.level
        alembic_logger.setLevel(max(level, logging.WARNING))  # "Context impl SQLiteImpl", "Will assume ...": noise
        try:
            command.upgrade(config, "head")
        finally:
            alembic_logger.setLevel(level)
    logger.debug("%s: schema at head (%s)", engine.url.render_as_string(hide_password=True), version_table)


def run_migrations(target_metadata: MetaData | None = None) -> None:
    """The body of a store's ``env.py``: run the pending revisions on the connection :func:`migrate` passed in
    (through ``alembic.context``, the environment Alembic is running; ``target_metadata`` only matters to
    ``alembic revision --autogenerate``).

    SQLite gets Alembic's batch mode (ALTER TABLE by copying). Raises RuntimeError when Alembic was started some
    other way (the ``alembic`` command line): use :func:`migrate`.
    """
    attributes = context.config.attributes
    connection = attributes.get(CONNECTION_ATTR)
    version_table = attributes.get(VERSION_TABLE_ATTR)
    if not isinstance(connection, Connection) or not isinstance(version_table, str):
        raise RuntimeError("run this Alembic history through rfr.core.db.migrate(engine, script_location, "
                           "version_table)")
    context.configure(connection=connection, target_metadata=target_metadata, version_table=version_table,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
