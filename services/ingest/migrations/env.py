"""Alembic environment of the submission store: run only through :func:`rfr.core.db.migrate`."""

from rfr.core.db import run_migrations

run_migrations()
