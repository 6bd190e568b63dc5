"""Each outbox row names its incident, so a closed incident is purged only once its outputs are published.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

``incident_outbox.incident_key``: the incident whose search wrote the row (:meth:`IncidentStore.close`). Rows
written before this revision cannot be traced back to their incident (their message key is a hash of it or a
submission id) and stay NULL; while any of them waits to be published,
:meth:`~services.match.incidents.IncidentStore.purge_closed` purges nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident_outbox", sa.Column("incident_key", sa.Text()))  # NULL: written before 0002
    op.create_index("incident_outbox_incident", "incident_outbox", ["incident_key"])


def downgrade() -> None:
    op.drop_index("incident_outbox_incident", table_name="incident_outbox")
    with op.batch_alter_table("incident_outbox") as batch:
        batch.drop_column("incident_key")
