"""Alembic environment of the pending-incident store: run only through :func:`rfr.core.db.migrate`."""

from rfr.core.db import run_migrations

run_migrations()
