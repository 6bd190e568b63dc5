"""API tokens expire; signed-out sessions are refused.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

``api_tokens.expires_at``: a token is refused from then on. Tokens made before this revision get their creation
time plus 365 days (the default of ``expires_in_days``). API tokens are for case systems only from this release:
a token of any other role made before is refused by :meth:`rfr.review.users.UserStore.check_token` (it stays
listed; revoke it). ``revoked_sessions``: the sha256 of each session token signed out, until the session would
have expired.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from rfr.review.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EXISTING_TOKEN_DAYS = 365


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True,
                                          comment="refused from this time on (migration 0003)"))
    _fill_expiry()
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False,
                           existing_comment="refused from this time on (migration 0003)")
    op.create_table(
        "revoked_sessions",
        sa.Column("token_sha256", sa.String(length=64), nullable=False,
                  comment="sha256 hex of a signed-out session token"),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False,
                  comment="the session's own expiry: the row goes after it"),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_revoked_sessions")),
    )
    op.create_index(op.f("ix_revoked_sessions_expires_at"), "revoked_sessions", ["expires_at"], unique=False)


def _fill_expiry() -> None:
    tokens = sa.table("api_tokens", sa.column("id", sa.Integer()), sa.column("created_at", UtcDateTime()),
                      sa.column("expires_at", UtcDateTime()))
    conn = op.get_bind()
    for token_id, created_at in conn.execute(sa.select(tokens.c.id, tokens.c.created_at)).all():
        conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(
            expires_at=created_at + timedelta(days=EXISTING_TOKEN_DAYS)))


def downgrade() -> None:
    op.drop_index(op.f("ix_revoked_sessions_expires_at"), table_name="revoked_sessions")
    op.drop_table("revoked_sessions")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
