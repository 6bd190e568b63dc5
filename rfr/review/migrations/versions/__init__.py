"""Revisions of the review database, oldest first (Alembic skips this file)."""
