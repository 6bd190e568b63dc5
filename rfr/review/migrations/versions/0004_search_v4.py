"""Searches keep what a CandidateList v4 adds: the low-quality mark, the incident and its stills, the threshold
policy, the gallery size and the score normalisation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Searches recorded before this revision came from v3 lists: ``low_quality`` false, the rest NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("low_quality", sa.Boolean(), nullable=False, server_default=sa.false(),
                                   comment="an investigative search of a probe the quality gate stopped "
                                           "(CandidateList v4)"))
        batch.add_column(sa.Column("incident_id", sa.String(length=128), nullable=True,
                                   comment="the incident whose stills were fused (v4)"))
        batch.add_column(sa.Column("stills", sa.Text(), nullable=True,
                                   comment="JSON list of the stills behind the probe (v4 ProbeStill)"))
        batch.add_column(sa.Column("threshold_policy", sa.String(length=32), nullable=True,
                                   comment="fixed | gallery_size (v4)"))
        batch.add_column(sa.Column("gallery_size", sa.Integer(), nullable=True,
                                   comment="faces in the gallery at search time (v4)"))
        batch.add_column(sa.Column("score_norm", sa.String(length=32), nullable=True,
                                   comment="none | cohort (v4)"))


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        for name in ("score_norm", "gallery_size", "threshold_policy", "stills", "incident_id", "low_quality"):
            batch.drop_column(name)
