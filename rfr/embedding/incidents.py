"""Multi-still incidents: the stills of one incident fused into one probe template, searched once.

A retailer often has several frames of one incident. Each still is submitted with the incident's id and the
number of stills in it (:attr:`rfr.core.schemas.SubmissionMeta.incident_id` / ``incident_stills``); detect sends
one :class:`~rfr.core.schemas.IncidentStillReport` per still (the faces it passed on, none for a still without a
usable face) and embed one :class:`~rfr.core.schemas.EmbeddingEvent` per face. This module decides, without
Kafka or a database, when an incident is complete and what is searched:

* **complete** (:meth:`Incident.is_complete`): every announced still has reported and every face a report named
  has its template; an incident of unknown size is never complete and waits for the timeout
  (:meth:`Incident.is_due`, ``match.incident_timeout_s``), after which what arrived is searched.
* **the rule for faces** (:func:`plan_incident`): a still with exactly one usable face contributes it to the fused
  probe; a still with several usable faces is not fused (which face is the offender is a person's call): each of
  its faces is searched alone, as a single still is today; a still with none is named as ``no_usable_face``; a
  still whose face never arrived before the timeout is named as ``not_arrived``.
* **fusion** (:func:`fuse_templates`): the mean of the unit-normalised templates, renormalised to unit length
  (for cosine scoring a mean of unit vectors is the template closest on average to every still's: the standard
  multi-sample template fusion, e.g. NIST IJB-A/-C "template" protocols).

The incident's list has a deterministic ``event_id`` (:func:`incident_event_id`), so a redelivered still can never
make a second case for the same incident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from rfr.core.schemas import (
    EmbeddingEvent,
    IncidentStillReport,
    ProbeStill,
    StillStatus,
    template_bytes,
)

INCIDENT_EVENT_PREFIX = "inc_"


def incident_event_id(retailer_id: str, incident_id: str) -> str:
    """``inc_`` + 32 hex digits of sha256(retailer id, NUL, incident id): the event id and face id of an
    incident's fused candidate list, the same on every redelivery."""
    digest = hashlib.sha256(retailer_id.encode() + b"\x00" + incident_id.encode()).hexdigest()
    return f"{INCIDENT_EVENT_PREFIX}{digest[:32]}"


def fuse_templates(vectors: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float32]:
    """One unit-length float32 template of shape ``(d,)`` from ``n >= 1`` templates of shape ``(d,)``: each is
    scaled to unit length, the mean is taken and scaled to unit length again.

    Raises ValueError for no template, templates of different shapes, a zero or non-finite template, or templates
    that cancel out (a mean of length under 1e-6).
    """
    if not vectors:
        raise ValueError("no template to fuse")
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])  # ValueError when shapes differ
    if stack.ndim != 2:
        raise ValueError(f"templates must be vectors, got shape {stack.shape[1:]}")
    norms = np.linalg.norm(stack, axis=1, keepdims=True)
    if not np.all(np.isfinite(stack)) or np.any(norms == 0):
        raise ValueError("a zero or non-finite template cannot be fused")
    mean = (stack / norms).mean(axis=0)
    length = float(np.linalg.norm(mean))
    if length < 1e-6:
        raise ValueError("the templates cancel out: nothing to search")
    fused: npt.NDArray[np.float32] = (mean / length).astype(np.float32)
    return fused


@dataclass(frozen=True)
class Incident:
    """What has arrived of one incident: the stills' reports (by submission id) and the faces' templates (by face
    id). ``key`` is ``<retailer_id>/<incident_id>``; ``expected`` the announced number of stills (None: unknown);
    ``first_seen`` when the first of its messages reached the fusing stage (UTC)."""

    key: str
    expected: int | None
    first_seen: datetime
    reports: Mapping[str, IncidentStillReport] = field(default_factory=dict)
    faces: Mapping[str, EmbeddingEvent] = field(default_factory=dict)

    def is_complete(self) -> bool:
        """Every announced still reported, and every face the reports named has arrived."""
        if self.expected is None or len(self.reports) < self.expected:
            return False
        return all(f in self.faces for r in self.reports.values() for f in r.face_ids)

    def is_due(self, now: datetime, timeout_s: float) -> bool:
        """Complete, or ``timeout_s`` seconds have passed since ``first_seen``."""
        return self.is_complete() or (now - self.first_seen).total_seconds() >= timeout_s


@dataclass(frozen=True)
class IncidentPlan:
    """What to search for one incident (see the module doc for the rule)."""

    fused: list[EmbeddingEvent]  # the single face of each one-face still, in still order
    separate: list[EmbeddingEvent]  # the faces of stills with several faces: each searched alone
    stills: list[ProbeStill]  # every still that reported or sent a face, with what became of it

    @property
    def template(self) -> bytes | None:
        """The fused probe template (float32 bytes), None when no still contributed a face."""
        if not self.fused:
            return None
        return template_bytes(fuse_templates([e.vector for e in self.fused]))

    @property
    def representative(self) -> EmbeddingEvent | None:
        """The fused face shown as the probe (crop, box, still): the largest, then the first."""
        return max(self.fused, key=lambda e: e.quality.face_px, default=None)

    @property
    def low_quality(self) -> bool:
        """Any fused face was searched although the quality gate stopped it (an investigative search)."""
        return any(e.gated_reason is not None for e in self.fused)


def _still_order(incident: Incident) -> list[str]:
    """Submission ids of every still heard of, by arrival at ingest, then id."""
    received: dict[str, tuple[datetime, str]] = {}
    for sub, report in incident.reports.items():
        received[sub] = (report.received_at, sub)
    for face in incident.faces.values():
        received.setdefault(face.submission_id, (face.received_at, face.submission_id))
    return sorted(received, key=lambda sub: received[sub])


def plan_incident(incident: Incident) -> IncidentPlan:
    """The stills of ``incident`` sorted into fused, separately searched and named-only (module doc)."""
    fused: list[EmbeddingEvent] = []
    separate: list[EmbeddingEvent] = []
    stills: list[ProbeStill] = []
    for sub in _still_order(incident):
        report = incident.reports.get(sub)
        faces = sorted((f for f in incident.faces.values() if f.submission_id == sub), key=lambda f: f.face_id)
        named = list(report.face_ids) if report is not None else [f.face_id for f in faces]
        still_ref = report.still_ref if report is not None else faces[0].still_ref
        if len(named) > 1:
            separate += faces
            stills.append(ProbeStill(submission_id=sub, face_id=None, still_ref=still_ref,
                                     status=StillStatus.SEVERAL_FACES))
        elif named and faces:
            fused.append(faces[0])
            stills.append(ProbeStill(submission_id=sub, face_id=faces[0].face_id, still_ref=still_ref,
                                     box=faces[0].box, status=StillStatus.SEARCHED))
        else:
            status = StillStatus.NOT_ARRIVED if named else StillStatus.NO_USABLE_FACE
            stills.append(ProbeStill(submission_id=sub, face_id=named[0] if named else None, still_ref=still_ref,
                                     status=status))
    return IncidentPlan(fused=fused, separate=separate, stills=stills)
