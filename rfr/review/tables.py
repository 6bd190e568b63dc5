"""The review store's tables (SQLAlchemy Core) on one :data:`metadata`, shared with the audit and user tables.

:mod:`rfr.review.audit` and :mod:`rfr.review.users` define their tables on this same :data:`metadata`, so one
Alembic history (``rfr/review/migrations``, version table ``alembic_version_review``) creates them all. Constraint
names follow :data:`NAMING_CONVENTION`, the same on SQLite and PostgreSQL, so migrations can name them.

Times are timezone-aware UTC (:class:`UtcDateTime`): written as UTC, read back as UTC on both backends (SQLite
keeps no zone). JSON columns are canonical JSON text (``sort_keys``, compact), read with :func:`json.loads`.
Binary columns of a probe (``crop_jpeg``, ``template``) become NULL when it is purged; its row stays. A probe's
quality is kept whole (``quality`` JSON) and, for the queue's filter, as ``face_px`` / ``sharpness`` / ``pose_ok``
(migration 0002). A case taken from the queue names its reviewer (``claimed_by``) until ``claimed_until``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every table of the review database: these, and the audit and user tables of rfr.review.audit / .users."""

ID = 128  # rfr.core.ids.IDENT_MAX: retailer, store, camera, case, face, submission and subject ids
EVENT_ID = 512  # event ids compose several ids ("<face_id>:rs:<gallery event id>")
NAME = 256  # model ids, watch-lists, blob refs, source refs are bounded by their own rules; this is generous


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend: a naive value is refused on write (its zone is unknown),
    an aware one is converted to UTC; values read back are aware UTC (SQLite returns them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the review store keeps timezone-aware UTC times")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


probes = Table(
    "probes",
    metadata,
    Column("face_id", String(NAME), primary_key=True),
    Column("submission_id", String(ID), nullable=False),
    Column("retailer_id", String(ID), nullable=False),
    Column("store_id", String(ID), nullable=False),
    Column("camera_id", String(ID), nullable=False),
    Column("captured_at", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("case_ref", String(ID), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("still_ref", String(NAME), nullable=True, comment="blob ref of the submitted still, or NULL"),
    Column("crop_jpeg", LargeBinary(), nullable=True, comment="aligned face crop (JPEG); NULL once purged"),
    Column("box", Text(), nullable=False, comment="JSON {x, y, width, height}, still pixels"),
    Column("quality", Text(), nullable=False, comment="JSON FaceQuality"),
    Column("template", LargeBinary(), nullable=True, comment="float32 LE embedding; NULL once purged"),
    Column("model_id", String(NAME), nullable=False),
    Column("first_searched_at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False, comment="unmatched (no case yet) | case"),
    Column("purged_at", UtcDateTime(), nullable=True),
    Column("purge_reason", String(64), nullable=True),
    Column("face_px", Float(), nullable=True, comment="quality.face_px"),
    Column("sharpness", Float(), nullable=True, comment="quality.sharpness"),
    Column("pose_ok", Boolean(), nullable=True, comment="quality.pose_ok"),
    Index(None, "status", "first_searched_at"),
    Index(None, "still_ref"),
)

searches = Table(
    "searches",
    metadata,
    Column("event_id", String(EVENT_ID), primary_key=True),
    Column("face_id", ForeignKey("probes.face_id"), nullable=False),
    Column("trigger", String(16), nullable=False, comment="submission | re_search"),
    Column("re_search_of", String(EVENT_ID), nullable=True, comment="gallery change event id of a re-search"),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("searched_at", UtcDateTime(), nullable=False),
    Column("outcome", String(16), nullable=False, comment="candidates | no_candidate"),
    Column("threshold", Float(), nullable=False),
    Column("top_k", Integer(), nullable=False),
    Column("watch_lists", Text(), nullable=False, comment="JSON list of the watch-lists searched"),
    Column("model_id", String(NAME), nullable=False),
    Column("candidate_count", Integer(), nullable=False),
    Column("low_quality", Boolean(), nullable=False, server_default=false(),
           comment="an investigative search of a probe the quality gate stopped (CandidateList v4)"),
    Column("incident_id", String(ID), nullable=True, comment="the incident whose stills were fused (v4)"),
    Column("stills", Text(), nullable=True, comment="JSON list of the stills behind the probe (v4 ProbeStill)"),
    Column("threshold_policy", String(32), nullable=True, comment="fixed | gallery_size (v4)"),
    Column("gallery_size", Integer(), nullable=True, comment="faces in the gallery at search time (v4)"),
    Column("score_norm", String(32), nullable=True, comment="none | cohort (v4)"),
    Index(None, "face_id"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("search_event_id", ForeignKey("searches.event_id"), nullable=False),
    Column("face_id", ForeignKey("probes.face_id"), nullable=False),
    Column("state", String(32), nullable=False,
           comment="pending | awaiting_verification | escalated | lead | no_lead | expired"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("decided_at", UtcDateTime(), nullable=True, comment="time of the final decision (lead / no_lead)"),
    Column("closed_at", UtcDateTime(), nullable=True, comment="a lead's case closed by a supervisor"),
    Column("outcome", String(16), nullable=True, comment="lead | no_lead once final"),
    Column("lead_rank", Integer(), nullable=True),
    Column("lead_subject_id", String(ID), nullable=True),
    Column("claimed_by", String(ID), nullable=True, comment="the reviewer who took the case from the queue"),
    Column("claimed_until", UtcDateTime(), nullable=True, comment="the claim ends then (free again after)"),
    UniqueConstraint("search_event_id"),
    Index(None, "state", "created_at"),
    Index(None, "face_id"),
)

candidates = Table(
    "candidates",
    metadata,
    Column("case_id", ForeignKey("cases.id"), nullable=False),
    Column("rank", Integer(), nullable=False),
    Column("subject_id", String(ID), nullable=False),
    Column("score", Float(), nullable=False),
    Column("watch_list", String(NAME), nullable=False),
    Column("gallery_face_id", String(NAME), nullable=False),
    Column("source_ref", Text(), nullable=True),
    PrimaryKeyConstraint("case_id", "rank"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("case_id", ForeignKey("cases.id"), nullable=False),
    Column("actor", String(ID), nullable=False),
    Column("role", String(32), nullable=False),
    Column("stage", String(16), nullable=False, comment="first | verification | supervisor | escalation"),
    Column("outcome", String(16), nullable=True, comment="lead | no_lead; NULL for an escalation"),
    Column("lead_rank", Integer(), nullable=True),
    Column("lead_subject_id", String(ID), nullable=True),
    Column("labels", Text(), nullable=False, comment="JSON list of {rank, subject_id, label, note}"),
    Column("note", Text(), nullable=False),
    Column("decided_at", UtcDateTime(), nullable=False),
    Index(None, "case_id"),
)

gallery_photos = Table(
    "gallery_photos",
    metadata,
    Column("gallery_face_id", String(NAME), primary_key=True),
    Column("subject_id", String(ID), nullable=False),
    Column("watch_list", String(NAME), nullable=False),
    Column("model_id", String(NAME), nullable=False),
    Column("photo_ref", String(NAME), nullable=True, comment="blob ref of the enrolled photo"),
    Column("source_ref", Text(), nullable=False),
    Column("enrolled_at", UtcDateTime(), nullable=False),
    Column("erased_at", UtcDateTime(), nullable=True),
    Index(None, "subject_id"),
)

gallery_changes = Table(
    "gallery_changes",
    metadata,
    Column("event_id", String(EVENT_ID), primary_key=True),
    Column("action", String(16), nullable=False, comment="enrolled | erased"),
    Column("watch_list", String(NAME), nullable=False),
    Column("model_id", String(NAME), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(NAME), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("face_count", Integer(), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("event_id", String(EVENT_ID), nullable=False),
    Column("topic", String(64), nullable=False, comment="logical topic name (rfr.core.topics), e.g. decisions"),
    Column("key", String(EVENT_ID), nullable=False),
    Column("payload", LargeBinary(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
    UniqueConstraint("event_id"),
    Index(None, "published_at", "id"),
)

clusters = Table(
    "clusters",
    metadata,
    Column("cluster_id", String(NAME), primary_key=True),
    Column("revision", Integer(), nullable=False, comment="the highest revision recorded (ClusterEvent.revision)"),
    Column("model_id", String(NAME), nullable=False),
    Column("status", String(16), nullable=False, comment="pending | confirmed | dismissed | merged | purged"),
    Column("merged_into", String(NAME), nullable=True, comment="the cluster that absorbed this one (status merged)"),
    Column("template", LargeBinary(), nullable=True, comment="fused template, float32 LE; NULL once purged"),
    Column("rule", Text(), nullable=False, comment="JSON ClusterRuleInfo of the latest revision"),
    Column("reported_at", UtcDateTime(), nullable=False, comment="ClusterEvent.at of the first revision recorded"),
    Column("event_at", UtcDateTime(), nullable=False, comment="ClusterEvent.at of the latest revision"),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("decision", String(16), nullable=True, comment="confirmed | dismissed: the last reviewer's decision"),
    Column("decided_by", String(ID), nullable=True),
    Column("decided_at", UtcDateTime(), nullable=True),
    Column("decided_revision", Integer(), nullable=True, comment="the revision the decision was taken on"),
    Column("purged_at", UtcDateTime(), nullable=True, comment="its last sighting left with its probe (retention)"),
    Index(None, "status", "event_at"),
)
"""Clusters of unknown faces reported on rfr.clusters.v1 (:mod:`rfr.review.clusters`): leads for reviewers, never
gallery entries or watch-lists."""

cluster_sightings = Table(
    "cluster_sightings",
    metadata,
    Column("cluster_id", ForeignKey("clusters.cluster_id"), nullable=False),
    Column("face_id", String(NAME), nullable=False, comment="the probe (probes.face_id, when the store has it)"),
    Column("submission_id", String(ID), nullable=False),
    Column("retailer_id", String(ID), nullable=False),
    Column("store_id", String(ID), nullable=False),
    Column("camera_id", String(ID), nullable=False),
    Column("captured_at", UtcDateTime(), nullable=False),
    Column("similarity", Float(), nullable=False, comment="to the fused template of the latest revision"),
    Column("added_revision", Integer(), nullable=False, comment="the first revision that named this sighting"),
    Column("left_reason", String(16), nullable=True, comment="NULL: in the cluster; split | purged | dropped"),
    Column("left_at", UtcDateTime(), nullable=True),
    PrimaryKeyConstraint("cluster_id", "face_id"),
    Index(None, "face_id"),
)

cluster_searches = Table(
    "cluster_searches",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("cluster_id", ForeignKey("clusters.cluster_id"), nullable=False),
    Column("trigger", String(16), nullable=False, comment="gallery_change | on_demand"),
    Column("re_search_of", String(EVENT_ID), nullable=True, comment="the gallery change's event id (gallery_change)"),
    Column("searched_at", UtcDateTime(), nullable=False),
    Column("actor", String(NAME), nullable=False),
    Column("source", String(32), nullable=False, comment="new_photos (the change's) | milvus (the whole gallery)"),
    Column("revision", Integer(), nullable=False, comment="the cluster revision whose template was searched"),
    Column("threshold", Float(), nullable=False),
    Column("top_k", Integer(), nullable=False),
    Column("watch_lists", Text(), nullable=False, comment="JSON list"),
    Column("model_id", String(NAME), nullable=False),
    Column("candidates", Text(), nullable=False, comment="JSON list of {rank, subject_id, watch_list, score, "
           "gallery_face_id}"),
    UniqueConstraint("cluster_id", "re_search_of"),
    Index(None, "cluster_id", "searched_at"),
)

policy_state = Table(
    "policy_state",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("policy", Text(), nullable=False, comment="canonical JSON of the policy in force"),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
