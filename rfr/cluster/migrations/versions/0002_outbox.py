"""The cluster store's outbox (events a retention pass made, kept in its transaction until the broker has them), and
what made each cluster's latest revision (``clusters.cause``: ``sightings`` or ``retention``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("cause", sa.Text(), nullable=False, server_default="sightings"))
    op.create_table(
        "cluster_outbox",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),  # publication order
        sa.Column("topic", sa.Text(), nullable=False),  # base topic name (rfr.core.topics), before any namespace
        sa.Column("key", sa.Text(), nullable=False),  # the cluster id
        sa.Column("event_id", sa.Text(), nullable=False),  # <cluster_id>:<revision>
        sa.Column("payload", sa.LargeBinary(), nullable=False),  # the message's JSON
        sa.Column("created_at", sa.Float(), nullable=False),  # POSIX seconds (UTC)
        sqlite_autoincrement=True,  # SQLite would otherwise reuse the sequence number of a deleted newest row
    )


def downgrade() -> None:
    op.drop_table("cluster_outbox")
    with op.batch_alter_table("clusters", recreate="never") as batch:  # SQLite >= 3.35 drops it in place
        batch.drop_column("cause")
