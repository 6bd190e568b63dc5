"""Revisions of the submission store, oldest first (Alembic skips this file)."""
