"""Claims of cases (one reviewer at a time) and the probe's quality as columns (the queue's quality filter).

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

``cases.claimed_by`` / ``cases.claimed_until``: who has taken the case from the queue, until when (a claim past
``claimed_until`` is free again). ``probes.face_px`` / ``sharpness`` / ``pose_ok``: copied from the probe's
``quality`` JSON (filled here for the probes already recorded), so the queue filters on them in SQL.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("claimed_by", sa.String(length=128), nullable=True,
                                     comment="the reviewer who took the case from the queue"))
    op.add_column("cases", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True,
                                     comment="the claim ends then (free again after)"))
    op.add_column("probes", sa.Column("face_px", sa.Float(), nullable=True, comment="quality.face_px"))
    op.add_column("probes", sa.Column("sharpness", sa.Float(), nullable=True, comment="quality.sharpness"))
    op.add_column("probes", sa.Column("pose_ok", sa.Boolean(), nullable=True, comment="quality.pose_ok"))
    _fill_quality()


def _fill_quality() -> None:
    probes = sa.table("probes", sa.column("face_id", sa.String()), sa.column("quality", sa.Text()),
                      sa.column("face_px", sa.Float()), sa.column("sharpness", sa.Float()),
                      sa.column("pose_ok", sa.Boolean()))
    conn = op.get_bind()
    rows = conn.execute(sa.select(probes.c.face_id, probes.c.quality)).all()
    for face_id, quality in rows:
        q = json.loads(quality)
        conn.execute(sa.update(probes).where(probes.c.face_id == face_id).values(
            face_px=float(q.get("face_px", 0.0)), sharpness=float(q.get("sharpness", q.get("blur", 0.0))),
            pose_ok=bool(q.get("pose_ok", True))))


def downgrade() -> None:
    with op.batch_alter_table("probes") as batch:
        batch.drop_column("pose_ok")
        batch.drop_column("sharpness")
        batch.drop_column("face_px")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
