"""The review store as a dependency: its name in metrics and 503 bodies, and a ping. Which database errors mean "the
store is down" (retry later) rather than "this request is wrong": :data:`rfr.core.db.STORE_OUTAGES`."""

from __future__ import annotations

from sqlalchemy import Engine, text

STORE = "review_store"
"""The dependency's name in ``rfr_review_dependency_retries_total`` and in HTTP 503 bodies."""


def ping(engine: Engine) -> None:
    """A cheap round trip to the database; raises one of :data:`rfr.core.db.STORE_OUTAGES` when it does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
