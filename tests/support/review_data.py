"""Test data of the review domain: candidate lists with synthetic unit-vector templates, people, a settable clock,
and a review store on a database URL with a real audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from argon2 import PasswordHasher

from rfr.core.db import make_engine
from rfr.core.geometry import Box
from rfr.core.review_messages import GalleryChange, GalleryFaceRecord
from rfr.core.schemas import Candidate, CandidateList, FaceQuality, Probe, SubmissionMeta, template_bytes
from rfr.core.settings import RetentionSettings
from rfr.review.audit import AuditLog
from rfr.review.store import ReviewStore
from rfr.review.users import Principal, Role
from rfr.review.workflow import CandidateLabel, Label

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DIM = 16
MODEL = "facenet-test"
SECRET = b"r" * 32
CROP = b"\xff\xd8\xff\xe0probe-crop\xff\xd9"
QUALITY = FaceQuality(face_px=120.0, score=0.99, sharpness=150.0, eye_distance_px=40.0, pose_ok=True)

ALICE = Principal("alice", Role.REVIEWER)
BOB = Principal("bob", Role.REVIEWER)
SUE = Principal("sue", Role.SUPERVISOR)
SAM = Principal("sam", Role.SUPERVISOR)
AUDREY = Principal("audrey", Role.AUDITOR)
ADMIN = Principal("root", Role.ADMINISTRATOR)

POLICY = RetentionSettings(no_candidate_days=31, no_lead_days=31, pending_days=90, closed_lead_days=365)
"""The retention policy of the review tests: a probe without candidate or lead kept 31 days, a pending case 90, a
closed lead's probe a year."""


class Clock:
    """A clock the test moves: ``clock()`` is the time, ``clock.advance(days=3)`` moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def unit(*weights: tuple[int, float]) -> np.ndarray:
    """A unit vector of :data:`DIM` values from (axis, weight) pairs, e.g. ``unit((3, 1.0))`` is e3."""
    vec = np.zeros(DIM, dtype=np.float32)
    for axis, weight in weights:
        vec[axis] = weight
    return vec / np.linalg.norm(vec)


@dataclass
class Env:
    """A migrated review store with its audit log and clock."""

    store: ReviewStore
    audit: AuditLog
    clock: Clock

    def actions(self) -> list[str]:
        return [e["action"] for e in self.audit.export(None, None)]


def open_store(url: str, two_person: bool = True, checkpoint_every: int = 1000) -> Env:
    clock = Clock()
    engine = make_engine(url)
    store = ReviewStore.open(engine, AuditLog(engine, SECRET, checkpoint_every, clock=clock), clock, two_person)
    assert isinstance(store.audit, AuditLog)
    return Env(store, store.audit, clock)


def cheap_hasher() -> PasswordHasher:
    """argon2 at its cheapest: the tests create and sign in many users."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def candidate_list(face_id: str, candidates: Sequence[tuple[str, float]] = (("subj-1", 0.82), ("subj-2", 0.71)), *,
                   at: datetime = T0, template: np.ndarray | None = None, still_ref: str | None = None,
                   watch_list: str = "custody", retailer_id: str = "shop-1", case_ref: str | None = "crime-1",
                   trigger: str = "submission", re_search_of: str | None = None,
                   event_id: str | None = None) -> CandidateList:
    """A candidate list of probe ``face_id`` (outcome from ``candidates``: (subject, score) best first)."""
    found = [Candidate(rank=i, subject_id=s, score=score, watch_list=watch_list, gallery_face_id=f"gf-{s}",
                       source_ref=f"custody/{s}.jpg") for i, (s, score) in enumerate(candidates, 1)]
    return CandidateList(
        event_id=event_id or face_id, face_id=face_id, submission_id=face_id.split(":", maxsplit=1)[0],
        meta=SubmissionMeta(retailer_id=retailer_id, store_id="store-1", camera_id="cam-1",
                            captured_at=at - timedelta(minutes=5), case_ref=case_ref),
        received_at=at - timedelta(seconds=30), searched_at=at, outcome="candidates" if found else "no_candidate",
        candidates=found, threshold=0.6, top_k=5, watch_lists=[watch_list], model_id=MODEL, quality=QUALITY,
        search_started_at=at - timedelta(milliseconds=40),
        probe=Probe(still_ref=still_ref, box=Box(10.0, 20.0, 80.0, 80.0), crop_jpeg=CROP,
                    template=template_bytes(template if template is not None else unit((0, 1.0)))),
        trigger=trigger, re_search_of=re_search_of)


def enrolment(event_id: str, faces: Sequence[tuple[str, str, np.ndarray | None]], *, watch_list: str = "custody",
              action: str = "enrolled", model_id: str = MODEL, at: datetime = T0,
              photo_refs: Sequence[str | None] | None = None) -> GalleryChange:
    """A gallery change of ``faces``: (gallery face id, subject id, template or None)."""
    refs = list(photo_refs) if photo_refs is not None else [None] * len(faces)
    return GalleryChange(
        event_id=event_id, action=action, watch_list=watch_list, model_id=model_id, at=at,
        actor="cli:officer", reason="custody batch 7",
        faces=[GalleryFaceRecord(face_id=f, subject_id=s, photo_ref=ref, source_ref=f"custody/{f}.jpg",
                                 template=None if v is None else template_bytes(v))
               for (f, s, v), ref in zip(faces, refs, strict=True)])


def labels(count: int, lead: int | None = None, inconclusive: Sequence[int] = ()) -> list[CandidateLabel]:
    """One label per rank 1..count: ``lead`` a possible match, ``inconclusive`` ranks so, the rest not matches."""
    out = []
    for rank in range(1, count + 1):
        label = Label.POSSIBLE_MATCH if rank == lead else (
            Label.INCONCLUSIVE if rank in inconclusive else Label.NOT_MATCH)
        out.append(CandidateLabel(rank, label, f"compared ears and jaw line of candidate {rank}"))
    return out
