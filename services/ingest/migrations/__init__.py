"""The Alembic history of ingest's submission store (applied by :class:`services.ingest.store.SqlSubmissionStore`
through :func:`rfr.core.db.migrate`, version table ``alembic_version_ingest``). A package so that ``pip install .``
ships it."""
