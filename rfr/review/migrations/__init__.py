"""The Alembic history of the review database (applied by :meth:`rfr.review.store.ReviewStore.open` through
:func:`rfr.core.db.migrate`, version table ``alembic_version_review``): the review tables of
:mod:`rfr.review.tables` and the audit and user tables of :mod:`rfr.review.audit` and :mod:`rfr.review.users`, all
on one ``metadata``. A package so that ``pip install .`` ships it."""
