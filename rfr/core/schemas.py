"""Message schemas: frozen pydantic models, JSON on the wire, each with a ``schema_version``.

Every event carries a deterministic ``event_id`` (also sent as the ``rfr-event-id`` header) on which
consumers drop the duplicates that at-least-once delivery may produce.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1

Ident = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


M = TypeVar("M", bound=Message)


def decode(model: type[M], raw: bytes | str | None) -> M:
    """Parse a wire message; raises :class:`pydantic.ValidationError` on anything malformed."""
    if raw is None:
        raise ValueError(f"empty message where {model.__name__} was expected")
    return model.model_validate_json(raw)


class Channel(StrEnum):
    KAFKA = "kafka"
    HTTP = "http"
    CLI = "cli"


class SubmissionMeta(Message):
    retailer_id: Ident
    store_id: Ident
    camera_id: Ident
    captured_at: datetime
    case_ref: Ident | None = None
    channel: Channel = Channel.KAFKA

    @property
    def camera_key(self) -> str:
        return f"{self.retailer_id}/{self.store_id}/{self.camera_id}"


def submission_id(retailer_id: str, content: bytes) -> str:
    """Idempotency key: the same still from the same retailer always gets the same id."""
    digest = hashlib.sha256(retailer_id.encode() + b"\x00" + content).hexdigest()
    return f"sub_{digest[:32]}"


class FrameEvent(Message):
    """A validated still. The image travels inline, or as a claim-check ``image_ref`` when large: always the
    submitted bytes, never re-encoded. ``width`` and ``height`` are those of the decoded, oriented pixels, which
    :func:`rfr.core.imaging.decode_image` reproduces from those bytes (at ``1/decode_scale`` of the declared size);
    face boxes downstream are in these coordinates."""

    event_id: str
    submission_id: str
    meta: SubmissionMeta
    received_at: datetime
    content_type: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    size_bytes: int = Field(gt=0)
    sha256: str
    image: bytes | None = None
    image_ref: str | None = None
    decode_scale: Literal[1, 2, 4, 8] = Field(
        default=1, description="The still was decoded at 1/decode_scale of its declared size (a baseline JPEG over "
        "ingest.max_pixels, scaled by libjpeg to stay within it); width and height are the decoded size.")
    decode_warnings: tuple[str, ...] = Field(
        default=(), description="What was accepted although unusual, e.g. 'jpeg_missing_eoi' (complete scan data, "
        "no end-of-image marker) or 'tiff_pages: N pages, the first was decoded'.")


class Box(Message):
    x: float
    y: float
    width: float
    height: float


class Point(Message):
    x: float
    y: float


class FaceQuality(Message):
    face_px: float
    score: float
    blur: float
    eye_distance_px: float
    pose_ok: bool


class FaceEvent(Message):
    event_id: str
    face_id: str
    submission_id: str
    face_index: int = Field(ge=0)
    faces_in_frame: int = Field(ge=1)
    meta: SubmissionMeta
    received_at: datetime
    box: Box
    keypoints: list[Point]
    quality: FaceQuality
    crop_jpeg: bytes
    crop_size: int = 160


class EmbeddingEvent(Message):
    event_id: str
    face_id: str
    submission_id: str
    meta: SubmissionMeta
    received_at: datetime
    quality: FaceQuality
    model_id: str
    weights_sha256: str
    vector: list[float] = Field(min_length=16, max_length=4096)


class Candidate(Message):
    rank: int = Field(ge=1)
    subject_id: str
    score: float
    gallery: str
    gallery_face_id: str
    source_ref: str | None = None


class CandidateList(Message):
    """Candidates for human review. A list is never an identification."""

    event_id: str
    face_id: str
    submission_id: str
    meta: SubmissionMeta
    received_at: datetime
    searched_at: datetime
    outcome: Literal["candidates", "no_candidate"]
    candidates: list[Candidate]
    threshold: float
    top_k: int
    galleries: list[str]
    model_id: str
    quality: FaceQuality
    notice: str = "Possible candidates for trained human review; not an identification."


class OutcomeStatus(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    FACES_FOUND = "faces_found"
    NO_FACE = "no_face"
    PASSED_FOR_REVIEW = "passed_for_review"
    NO_CANDIDATE = "no_candidate"
    FAILED = "failed"


class OutcomeEvent(Message):
    """Progress of one submission, for its submitter. Never names a candidate."""

    event_id: str
    submission_id: str
    retailer_id: str
    status: OutcomeStatus
    detail: str = ""
    faces: int | None = None
    face_id: str | None = None
    dropped: dict[str, int] = Field(
        default_factory=dict,
        description="faces_found: faces detected but not passed on, by reason (the quality gate's reasons, and "
        "over_max_faces for the detect.max_faces resource guard).",
    )
    at: datetime = Field(default_factory=utcnow)

    @classmethod
    def make(cls, submission_id: str, retailer_id: str, status: OutcomeStatus, **kw: object) -> OutcomeEvent:
        suffix = f":{kw['face_id']}" if kw.get("face_id") else ""
        return cls(
            event_id=f"{submission_id}:{status.value}{suffix}",
            submission_id=submission_id,
            retailer_id=retailer_id,
            status=status,
            **kw,
        )


class DeadLetter(Message):
    """A message a service could not process, with the reason and the original bytes."""

    event_id: str
    service: str
    reason: str
    error_type: str
    source_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    payload: bytes | None = None
    at: datetime = Field(default_factory=utcnow)
