"""Which database errors mean "the review store is down" (retry later) rather than "this request is wrong"."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

STORE = "review_store"
"""The dependency's name in ``rfr_review_dependency_retries_total`` and in HTTP 503 bodies."""

STORE_OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
"""Unreachable, locked past the busy timeout, connection lost, pool exhausted: the store, not the message."""


def ping(engine: Engine) -> None:
    """A cheap round trip to the database; raises one of :data:`STORE_OUTAGES` when it does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
