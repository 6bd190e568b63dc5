"""Match's pending-incident store: incidents, the reports and faces that arrived, and the lists' outbox.

Revision ID: 0001
Revises: -
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident_key", sa.Text(), primary_key=True),  # <retailer_id>/<incident_id>
        sa.Column("expected", sa.Integer()),  # announced stills, NULL: unknown
        sa.Column("first_seen", sa.Float(), nullable=False),  # POSIX seconds (UTC)
        sa.Column("ready", sa.Integer(), nullable=False),  # 1: complete, search it now
        sa.Column("closed_at", sa.Float()),  # NULL: still open
    )
    op.create_index("incidents_open", "incidents", ["closed_at", "ready", "first_seen"])
    op.create_table(
        "incident_items",
        sa.Column("incident_key", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), primary_key=True),  # report (by submission id) or face (by face id)
        sa.Column("item_id", sa.Text(), primary_key=True),
        sa.Column("payload", sa.LargeBinary()),  # the message's JSON; NULL once the incident was searched
    )
    op.create_table(
        "incident_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text(), nullable=False),  # matches or outcomes
        sa.Column("message_key", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("published", sa.Integer(), nullable=False),
    )
    op.create_index("incident_outbox_pending", "incident_outbox", ["published", "id"])


def downgrade() -> None:
    op.drop_table("incident_outbox")
    op.drop_table("incident_items")
    op.drop_table("incidents")
