"""The submission store's tables, or the adoption of a SQLite file written before this history existed.

Revision ID: 0001
Revises: -
Create Date: 2025-01-01

Releases before this history created the same two tables with raw ``CREATE TABLE IF NOT EXISTS`` (no version
table), adding ``outcomes.dropped`` and ``submissions.decode_scale`` / ``decode_warnings`` later with ``ALTER
TABLE``. A database that has the tables already keeps them and its rows: the columns it lacks (all nullable) and the
index are added, and Alembic stamps it at this revision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _columns() -> dict[str, list[sa.Column[Any]]]:
    text = ("reason", "detail", "store_id", "camera_id", "captured_at", "case_ref")
    integer = ("width", "height", "size_bytes", "decode_scale")
    return {
        "submissions": [
            sa.Column("submission_id", sa.Text(), primary_key=True),
            sa.Column("retailer_id", sa.Text(), nullable=False),
            sa.Column("channel", sa.Text(), nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("received_at", sa.Text(), nullable=False),  # ISO 8601 with its offset, as given
            sa.Column("state", sa.Text(), nullable=False),
            *(sa.Column(name, sa.Text()) for name in text),
            *(sa.Column(name, sa.Integer()) for name in integer),
            sa.Column("decode_warnings", sa.Text()),
        ],
        "outcomes": [
            sa.Column("event_id", sa.Text(), primary_key=True),
            sa.Column("submission_id", sa.Text(), nullable=False),
            sa.Column("status", sa.Text(), nullable=False),
            sa.Column("faces", sa.Integer()),
            sa.Column("face_id", sa.Text()),
            sa.Column("at", sa.Text(), nullable=False),
            sa.Column("dropped", sa.Text()),  # JSON {reason: count}
        ],
    }


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _columns().items():
        if not inspector.has_table(table):
            op.create_table(table, *columns)
            continue
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:  # only nullable ones were ever added
                op.add_column(table, column)
    if "outcomes_by_submission" not in {ix["name"] for ix in inspector.get_indexes("outcomes")}:
        op.create_index("outcomes_by_submission", "outcomes", ["submission_id"])


def downgrade() -> None:
    op.drop_index("outcomes_by_submission", table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_table("submissions")
