"""Clusters of unknown faces seen at several stores (rfr.clusters.v1): the clusters, their sightings, and the
searches of confirmed clusters' fused templates against the custody gallery (:mod:`rfr.review.clusters`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10

New tables only: nothing recorded before this revision changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NAME = 256
ID = 128
EVENT_ID = 512


def upgrade() -> None:
    _clusters()
    _sightings()
    _searches()


def _clusters() -> None:
    op.create_table(
        "clusters",
        sa.Column("cluster_id", sa.String(length=NAME), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False,
                  comment="the highest revision recorded (ClusterEvent.revision)"),
        sa.Column("model_id", sa.String(length=NAME), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False,
                  comment="pending | confirmed | dismissed | merged | purged"),
        sa.Column("merged_into", sa.String(length=NAME), nullable=True,
                  comment="the cluster that absorbed this one (status merged)"),
        sa.Column("template", sa.LargeBinary(), nullable=True,
                  comment="fused template, float32 LE; NULL once purged"),
        sa.Column("rule", sa.Text(), nullable=False, comment="JSON ClusterRuleInfo of the latest revision"),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False,
                  comment="ClusterEvent.at of the first revision recorded"),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False,
                  comment="ClusterEvent.at of the latest revision"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True,
                  comment="confirmed | dismissed: the last reviewer's decision"),
        sa.Column("decided_by", sa.String(length=ID), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_revision", sa.Integer(), nullable=True,
                  comment="the revision the decision was taken on"),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True,
                  comment="its last sighting left with its probe (retention)"),
        sa.PrimaryKeyConstraint("cluster_id", name=op.f("pk_clusters")),
    )
    op.create_index(op.f("ix_clusters_status_event_at"), "clusters", ["status", "event_at"], unique=False)


def _sightings() -> None:
    op.create_table(
        "cluster_sightings",
        sa.Column("cluster_id", sa.String(length=NAME), nullable=False),
        sa.Column("face_id", sa.String(length=NAME), nullable=False,
                  comment="the probe (probes.face_id, when the store has it)"),
        sa.Column("submission_id", sa.String(length=ID), nullable=False),
        sa.Column("retailer_id", sa.String(length=ID), nullable=False),
        sa.Column("store_id", sa.String(length=ID), nullable=False),
        sa.Column("camera_id", sa.String(length=ID), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False, comment="to the fused template of the latest revision"),
        sa.Column("added_revision", sa.Integer(), nullable=False,
                  comment="the first revision that named this sighting"),
        sa.Column("left_reason", sa.String(length=16), nullable=True,
                  comment="NULL: in the cluster; split | purged | dropped"),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.cluster_id"],
                                name=op.f("fk_cluster_sightings_cluster_id_clusters")),
        sa.PrimaryKeyConstraint("cluster_id", "face_id", name=op.f("pk_cluster_sightings")),
    )
    op.create_index(op.f("ix_cluster_sightings_face_id"), "cluster_sightings", ["face_id"], unique=False)


def _searches() -> None:
    op.create_table(
        "cluster_searches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster_id", sa.String(length=NAME), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False, comment="gallery_change | on_demand"),
        sa.Column("re_search_of", sa.String(length=EVENT_ID), nullable=True,
                  comment="the gallery change's event id (gallery_change)"),
        sa.Column("searched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=NAME), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False,
                  comment="new_photos (the change's) | milvus (the whole gallery)"),
        sa.Column("revision", sa.Integer(), nullable=False,
                  comment="the cluster revision whose template was searched"),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("watch_lists", sa.Text(), nullable=False, comment="JSON list"),
        sa.Column("model_id", sa.String(length=NAME), nullable=False),
        sa.Column("candidates", sa.Text(), nullable=False,
                  comment="JSON list of {rank, subject_id, watch_list, score, gallery_face_id}"),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.cluster_id"],
                                name=op.f("fk_cluster_searches_cluster_id_clusters")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_searches")),
        sa.UniqueConstraint("cluster_id", "re_search_of", name=op.f("uq_cluster_searches_cluster_id_re_search_of")),
    )
    op.create_index(op.f("ix_cluster_searches_cluster_id_searched_at"), "cluster_searches",
                    ["cluster_id", "searched_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cluster_searches_cluster_id_searched_at"), table_name="cluster_searches")
    op.drop_table("cluster_searches")
    op.drop_index(op.f("ix_cluster_sightings_face_id"), table_name="cluster_sightings")
    op.drop_table("cluster_sightings")
    op.drop_index(op.f("ix_clusters_status_event_at"), table_name="clusters")
    op.drop_table("clusters")
