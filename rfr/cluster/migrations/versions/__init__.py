"""Revisions of the cluster store, oldest first (Alembic skips this file)."""
