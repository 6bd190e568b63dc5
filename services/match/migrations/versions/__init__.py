"""Revisions of the pending-incident store, oldest first (Alembic skips this file)."""
