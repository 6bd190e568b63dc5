"""Alembic environment of the cluster store: run only through :func:`rfr.core.db.migrate`."""

from rfr.cluster.store import metadata
from rfr.core.db import run_migrations

run_migrations(target_metadata=metadata)
