"""What the review store hands out: cases as people see them, queue rows, outbox items, statistics.

Frozen dataclasses, read from the tables of :mod:`rfr.review.tables` (``row_*`` helpers). Times are aware UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row


def canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys, compact, UTF-8 kept) of the JSON columns and audit details."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class CandidateView:
    """One candidate of a case; ``photo_ref`` is the enrolled photo's blob ref (None: not kept, or erased)."""

    rank: int
    subject_id: str
    score: float
    watch_list: str
    gallery_face_id: str
    source_ref: str | None
    photo_ref: str | None


@dataclass(frozen=True)
class DecisionView:
    """One recorded decision (or escalation: ``stage`` escalation, ``outcome`` None, no labels)."""

    id: int
    actor: str
    role: str
    stage: str
    outcome: str | None
    lead_rank: int | None
    lead_subject_id: str | None
    labels: list[dict[str, Any]]
    note: str
    decided_at: datetime


@dataclass(frozen=True)
class SearchView:
    """The search a case was made from (Art 12(3): start/end, watch-lists, threshold, model)."""

    event_id: str
    trigger: str
    re_search_of: str | None
    started_at: datetime
    searched_at: datetime
    threshold: float
    top_k: int
    watch_lists: list[str]
    model_id: str
    low_quality: bool = False
    """An investigative search of a probe the quality gate stopped: the page warns about it."""
    incident_id: str | None = None
    stills: list[dict[str, Any]] = field(default_factory=list)
    """The stills behind the probe (CandidateList v4 ProbeStill as JSON: submission_id, face_id, still_ref, box,
    status); empty for a search recorded before v4."""
    threshold_policy: str | None = None
    gallery_size: int | None = None
    score_norm: str | None = None


@dataclass(frozen=True)
class ProbeView:
    """The probe face: capture metadata and what is still kept of it (nothing once purged)."""

    face_id: str
    submission_id: str
    retailer_id: str
    store_id: str
    camera_id: str
    captured_at: datetime
    received_at: datetime
    case_ref: str | None
    channel: str
    box: dict[str, float]
    quality: dict[str, Any]
    has_still: bool
    has_crop: bool
    purged_at: datetime | None
    purge_reason: str | None


@dataclass(frozen=True)
class CaseView:
    """A case as ``viewer`` may see it (:func:`rfr.review.workflow.visible_decisions`: until the case is final a
    reviewer sees only their own decisions, a supervisor every decision only once the reviewers disagreed, an
    auditor every one); ``hidden_decisions`` counts what was left out."""

    id: int
    state: str
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    lead_rank: int | None
    lead_subject_id: str | None
    probe: ProbeView
    search: SearchView
    candidates: list[CandidateView]
    decisions: list[DecisionView]
    hidden_decisions: int
    claimed_by: str | None = None
    """Who has taken the case from the queue (None: nobody, or their claim ended at ``claimed_until``)."""
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class QueueItem:
    """One row of the review queue (no decision content: the queue is never a way round the blind rule)."""

    case_id: int
    state: str
    created_at: datetime
    updated_at: datetime
    face_id: str
    retailer_id: str
    case_ref: str | None
    trigger: str
    candidate_count: int
    top_score: float
    watch_lists: list[str]
    store_id: str = ""
    claimed_by: str | None = None
    """Who has taken the case (a live claim only)."""
    claimed_until: datetime | None = None
    face_px: float | None = None
    sharpness: float | None = None
    pose_ok: bool | None = None
    score_norm: str | None = None
    """The scale of ``top_score``: none or cohort (a cosine), hubness (a CSLS score); None before CandidateList v4."""


@dataclass(frozen=True)
class ClaimResult:
    """What :meth:`rfr.review.store.ReviewStore.claim` did: ``taken`` (taken or renewed by the caller), else who
    holds the case (``claimed_by``, None when nobody does but the caller has no step to take on it, or
    ``limit_reached``: the caller already holds the most cases one person may, see :mod:`rfr.review.claims`)."""

    taken: bool
    claimed_by: str | None
    claimed_until: datetime | None
    limit_reached: bool = False


@dataclass(frozen=True)
class QueueStats:
    """Cases by state (every state present, 0 when none), the creation time of the oldest open case (None when
    none is open), and decision events not yet published."""

    counts: dict[str, int]
    oldest_open_created_at: datetime | None
    outbox_pending: int


@dataclass(frozen=True)
class OutboxItem:
    """A message waiting to be published: ``topic`` is the logical name (``decisions``: Topics.decisions)."""

    id: int
    event_id: str
    topic: str
    key: str
    payload: bytes
    created_at: datetime


@dataclass(frozen=True)
class GalleryChangeResult:
    """What :meth:`ReviewStore.record_gallery_change` did. ``new``: False for a change already recorded (nothing
    was written again). ``orphaned_photo_refs``: photos of erased faces that no enrolled face uses any more; the
    caller deletes them from the blob store (an erasure leaves no photo behind)."""

    new: bool
    photos: int
    orphaned_photo_refs: list[str]


def candidate_view(row: Row[Any]) -> CandidateView:
    m = row._mapping
    return CandidateView(m["rank"], m["subject_id"], float(m["score"]), m["watch_list"], m["gallery_face_id"],
                         m["source_ref"], m["photo_ref"] if m["erased_at"] is None else None)


def decision_view(row: Row[Any]) -> DecisionView:
    m = row._mapping
    return DecisionView(m["id"], m["actor"], m["role"], m["stage"], m["outcome"], m["lead_rank"],
                        m["lead_subject_id"], json.loads(m["labels"]), m["note"], m["decided_at"])


def search_view(row: Row[Any]) -> SearchView:
    m = row._mapping
    return SearchView(m["event_id"], m["trigger"], m["re_search_of"], m["started_at"], m["searched_at"],
                      float(m["threshold"]), m["top_k"], json.loads(m["watch_lists"]), m["model_id"],
                      bool(m["low_quality"]), m["incident_id"], json.loads(m["stills"]) if m["stills"] else [],
                      m["threshold_policy"], m["gallery_size"], m["score_norm"])


def probe_view(row: Row[Any]) -> ProbeView:
    m = row._mapping
    return ProbeView(m["face_id"], m["submission_id"], m["retailer_id"], m["store_id"], m["camera_id"],
                     m["captured_at"], m["received_at"], m["case_ref"], m["channel"], json.loads(m["box"]),
                     json.loads(m["quality"]), m["still_ref"] is not None and m["purged_at"] is None,
                     m["crop_jpeg"] is not None, m["purged_at"], m["purge_reason"])
