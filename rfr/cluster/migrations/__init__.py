"""The Alembic history of the cluster store (rfr/cluster/store.py; applied by :class:`rfr.cluster.store.ClusterStore`
through :func:`rfr.core.db.migrate`, version table ``alembic_version_cluster``). A package so that ``pip install .``
ships it."""
