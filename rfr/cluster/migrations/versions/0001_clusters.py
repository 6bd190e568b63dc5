"""The cluster store: clusters of unknown faces and their sightings.

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
        "clusters",
        sa.Column("cluster_id", sa.Text(), primary_key=True),  # cl_<24 hex of the founding face id's sha256>
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("total", sa.LargeBinary(), nullable=False),  # sum of the members' unit vectors, float32 LE
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Integer(), nullable=False),  # 1: an event was published for it
        sa.Column("merged_from", sa.Text(), nullable=False),  # JSON list: clusters absorbed at this revision
        sa.Column("created_at", sa.Float(), nullable=False),  # POSIX seconds (UTC)
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "cluster_sightings",
        sa.Column("face_id", sa.Text(), primary_key=True),
        sa.Column("cluster_id", sa.Text(), sa.ForeignKey("clusters.cluster_id"), nullable=False),
        sa.Column("submission_id", sa.Text(), nullable=False),
        sa.Column("retailer_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=False),
        sa.Column("camera_id", sa.Text(), nullable=False),
        sa.Column("captured_at", sa.Float(), nullable=False),
        sa.Column("searched_at", sa.Float(), nullable=False),  # retention counts from here
        sa.Column("still_ref", sa.Text()),
        sa.Column("box_x", sa.Float()),
        sa.Column("box_y", sa.Float()),
        sa.Column("box_width", sa.Float()),
        sa.Column("box_height", sa.Float()),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("template", sa.LargeBinary(), nullable=False),  # unit vector, float32 LE
    )
    op.create_index("cluster_sightings_cluster", "cluster_sightings", ["cluster_id"])
    op.create_index("cluster_sightings_searched", "cluster_sightings", ["searched_at"])
    op.create_index("cluster_sightings_model", "cluster_sightings", ["model_id", "face_id"])


def downgrade() -> None:
    op.drop_table("cluster_sightings")
    op.drop_table("clusters")
