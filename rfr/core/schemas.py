"""Message schemas: frozen pydantic models, JSON on the wire, each with a ``schema_version``.

Bytes fields travel as URL-safe base64 (RFC 4648 section 5); either base64 alphabet is read.

Every event carries a deterministic ``event_id`` (also sent as the ``rfr-event-id`` header) on which
consumers drop the duplicates that at-least-once delivery may produce.

Versions. Each message class declares the version of its own shape as the default (and only value) of its
``schema_version`` field; a nested message carries its own. A change that an old consumer could not read (a field
renamed, removed or re-typed) gets a new version. Consumers say which versions they read: :func:`decode` takes the
accepted versions (default: the class's own) and refuses any other with :class:`UnsupportedSchemaVersion`
(reason ``unsupported_schema_version``, e.g. ``got 1, accepts 2``), which the stages dead-letter.

Version 2 (FaceQuality, FaceEvent, EmbeddingEvent, Candidate, CandidateList): ``blur`` became ``sharpness``,
the embedding travels as float32 bytes (``template``), ``gallery(ies)`` became ``watch_list(s)``. Version 3
(FaceEvent, EmbeddingEvent, CandidateList): the probe travels with its still's blob reference, its box and crop to
the review service, which keeps cases and re-searches unsolved probes. Version 4 (CandidateList; SubmissionMeta v2,
ProbeStill v1): multi-still incidents (the stills a fused probe came from), investigative searches of gated probes
(``low_quality``) and the threshold policy, gallery size and score normalisation of the search; readers take v3
and v4 lists, and v1 and v2 SubmissionMeta. Every other class is at version 1. Each
class's docstring says what its version changed; docs/design.md (wire format) has the table and which stage reads
which version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from rfr.core.errors import ReasonedError
from rfr.core.geometry import Box
from rfr.core.ids import IDENT_PATTERN
from rfr.core.reasons import Reason

Ident = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]  # the one identifier rule (rfr.core.ids)

TEMPLATE_DTYPE = np.dtype("<f4")
"""Wire dtype of an embedding template: little-endian IEEE-754 float32, 4 bytes per value."""
TEMPLATE_MIN_DIM = 16
TEMPLATE_MAX_DIM = 4096
"""Template dimension range accepted on the wire (FaceNet's is 512; the range only rejects nonsense)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every wire message. Each subclass declares ``schema_version: Literal[N] = N``: its version."""

    # allow_inf_nan=False: JSON has no Infinity or NaN; a score or threshold of either is a malformed message.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64",
                              allow_inf_nan=False)

    schema_version: int = 1

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        if type(value) is not int:  # JSON true or 1.0 would otherwise pass as version 1
            raise ValueError(f"schema_version must be an integer, got {value!r}")
        return value

    @classmethod
    def version(cls) -> int:
        """The schema version this class writes and reads (its ``schema_version`` default)."""
        default = cls.model_fields["schema_version"].default
        if not isinstance(default, int):
            raise TypeError(f"{cls.__name__}.schema_version needs an int default")
        return default

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


M = TypeVar("M", bound=Message)


class UnsupportedSchemaVersion(ReasonedError, ValueError):
    """A message whose ``schema_version`` the consumer does not accept: reason ``unsupported_schema_version``,
    detail ``got <version>, accepts <versions> (<class>)``. A ``ValueError``, so callers that treat every
    malformed message alike need no change; the stages dead-letter it under its own reason."""

    def __init__(self, model: type[Message], got: object, accepts: Collection[int]) -> None:
        versions = ", ".join(str(v) for v in sorted(accepts)) or "none"
        super().__init__(Reason.UNSUPPORTED_SCHEMA_VERSION, f"got {got!r}, accepts {versions} ({model.__name__})")
        self.got = got
        self.accepts = frozenset(accepts)


class _Versioned(BaseModel):
    """Only the ``schema_version`` of a JSON message, whatever else it holds."""

    model_config = ConfigDict(extra="ignore")
    schema_version: Any = None


def _version_of(raw: bytes | str) -> tuple[bool, object]:
    """(whether ``raw`` is a JSON object naming a ``schema_version``, that version)."""
    try:
        peek = _Versioned.model_validate_json(raw)
    except ValidationError:
        return False, None
    return "schema_version" in peek.model_fields_set, peek.schema_version


def decode(model: type[M], raw: bytes | str | None, accepts: Collection[int] | None = None) -> M:
    """Parse a wire message of class ``model``.

    ``accepts`` are the schema versions the consumer reads (default: ``model.version()``; a class parses only its
    own version). Raises :class:`UnsupportedSchemaVersion` when the message names another version,
    ``ValueError`` for a missing message and :class:`pydantic.ValidationError` for anything else malformed.
    A message without ``schema_version`` is read as ``model``'s version.
    """
    if raw is None:
        raise ValueError(f"empty message where {model.__name__} was expected")
    wanted = frozenset(accepts) if accepts is not None else frozenset({model.version()})
    try:
        message = model.model_validate_json(raw)
    except ValidationError:
        named, got = _version_of(raw)
        if named and (type(got) is not int or got not in wanted):
            raise UnsupportedSchemaVersion(model, got, wanted) from None
        raise
    if message.schema_version not in wanted:
        raise UnsupportedSchemaVersion(model, message.schema_version, wanted)
    return message


class Channel(StrEnum):
    KAFKA = "kafka"
    HTTP = "http"
    CLI = "cli"


class SubmissionMeta(Message):
    """Who sent a still, from where, and how it is to be searched (schema v2: adds ``incident_id``,
    ``incident_stills`` and ``investigative``; a v1 object, without them, is still read)."""

    schema_version: Literal[1, 2] = 2
    retailer_id: Ident
    store_id: Ident
    camera_id: Ident
    captured_at: datetime
    case_ref: Ident | None = None
    channel: Channel = Channel.KAFKA
    incident_id: Ident | None = Field(
        default=None, description="The incident this still is one frame of: its usable face is fused with the "
        "other stills' into one probe template, searched once (rfr.face.incidents). Set by ingest from an explicit "
        "incident id, or from case_ref when the submission says how many stills the incident has.")
    incident_stills: int | None = Field(
        default=None, ge=1, le=64, description="How many stills the incident has (None: unknown; the incident is "
        "searched when match.incident_timeout_s has passed since its first still arrived).")
    investigative: bool = Field(
        default=False, description="Search this still's faces even when the quality gate stops them; their "
        "candidate lists are marked low_quality (an investigative search asked for by a submitter or reviewer).")

    @model_validator(mode="after")
    def _v1_has_no_v2_fields(self) -> SubmissionMeta:
        if self.schema_version == 1 and (self.incident_id or self.incident_stills or self.investigative):
            raise ValueError("incident_id, incident_stills and investigative need SubmissionMeta v2")
        if self.incident_stills is not None and self.incident_id is None:
            raise ValueError("incident_stills needs an incident_id")
        return self

    @property
    def incident_key(self) -> str | None:
        """``<retailer_id>/<incident_id>``: incident ids are the retailer's own; None outside an incident."""
        return f"{self.retailer_id}/{self.incident_id}" if self.incident_id else None

    @property
    def camera_key(self) -> str:
        return f"{self.retailer_id}/{self.store_id}/{self.camera_id}"


def submission_id(retailer_id: str, content: bytes) -> str:
    """Idempotency key: the same still from the same retailer always gets the same id."""
    digest = hashlib.sha256(retailer_id.encode() + b"\x00" + content).hexdigest()
    return f"sub_{digest[:32]}"


class FrameEvent(Message):
    """A validated still (schema v1). The image travels inline, or as a claim-check ``image_ref`` when large: always
    the submitted bytes, never re-encoded. ``width`` and ``height`` are those of the decoded, oriented pixels, which
    :func:`rfr.core.imaging.decode_image` reproduces from those bytes (at ``1/decode_scale`` of the declared size);
    face boxes downstream are in these coordinates."""

    schema_version: Literal[1] = 1
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


class Point(Message):
    schema_version: Literal[1] = 1
    x: float
    y: float


class FaceQuality(Message):
    """Quality of one detected face (schema v2; v1 called ``sharpness`` ``blur``), see :mod:`rfr.face.quality`."""

    schema_version: Literal[2] = 2
    face_px: float = Field(description="Detector box width in the original still, pixels.")
    score: float = Field(description="Detector confidence in [0, 1].")
    sharpness: float = Field(
        description="Variance of the Laplacian of the grey aligned crop seen at 32x32 (higher is sharper).")
    eye_distance_px: float = Field(description="Distance between the eye keypoints in the original still, pixels.")
    pose_ok: bool = Field(description="Whether the landmarks pass the pose sanity check.")


GATED_REASON_DESCRIPTION = ("Investigative search (SubmissionMeta.investigative): the quality gate's reason this "
                            "face would have been stopped for; None for a face that passed the gate.")


def _v3_has_no_gated_reason(message: FaceEvent | EmbeddingEvent) -> None:
    if message.schema_version == 3 and message.gated_reason is not None:
        raise ValueError(f"{type(message).__name__} v3 cannot carry gated_reason")


class FaceEvent(Message):
    """One face of a still to search (schema v4: adds ``gated_reason``, a face searched although the quality gate
    stopped it; v3 is still read. v3: adds ``still_ref``; v2: its FaceQuality is v2)."""

    schema_version: Literal[3, 4] = 4
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
    still_ref: str | None = Field(
        default=None, description="Blob-store reference (sha256:<hex>) of the submitted still, kept for review "
        "until retention purges it; None when the still was not kept.")
    gated_reason: str | None = Field(default=None, description=GATED_REASON_DESCRIPTION)

    @field_validator("box", mode="before")
    @classmethod
    def _box_is_exact(cls, value: object) -> object:
        return _exact_box(value)

    @model_validator(mode="after")
    def _versioned_fields(self) -> FaceEvent:
        _v3_has_no_gated_reason(self)
        return self


def _exact_box(value: object) -> object:
    """The box as strictly as every other field: exactly x, y, width, height; finite; no negative size."""
    if isinstance(value, dict) and set(value) != _BOX_FIELDS:
        raise ValueError(f"box has fields {sorted(value)}, expected {sorted(_BOX_FIELDS)}")
    if isinstance(value, dict):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            raise ValueError(f"box values must be numbers, got {value}")
        value = Box(**{k: float(v) for k, v in value.items()})
    box = value
    if isinstance(box, Box) and not (all(math.isfinite(v) for v in box) and box.width >= 0 <= box.height):
        raise ValueError(f"box {tuple(box)} is not finite with a non-negative size")
    return box


_BOX_FIELDS = frozenset({"x", "y", "width", "height"})


def template_bytes(vector: npt.ArrayLike) -> bytes:
    """The wire form of a 1-D embedding: little-endian float32 bytes, 4 per value (``ValueError`` unless 1-D)."""
    arr = np.asarray(vector, dtype=TEMPLATE_DTYPE)
    if arr.ndim != 1:
        raise ValueError(f"a template is one vector, got shape {arr.shape}")
    return arr.tobytes()


def check_template(value: bytes) -> bytes:
    if len(value) % TEMPLATE_DTYPE.itemsize:
        raise ValueError(f"template of {len(value)} bytes is not a whole number of float32 values")
    return value


def template_vector(template: bytes) -> npt.NDArray[np.float32]:
    """Wire template bytes as a read-only float32 array of shape ``(len // 4,)`` (native byte order)."""
    return np.frombuffer(template, dtype=TEMPLATE_DTYPE).astype(np.float32, copy=False)


Template = Annotated[bytes, Field(
    min_length=TEMPLATE_MIN_DIM * TEMPLATE_DTYPE.itemsize, max_length=TEMPLATE_MAX_DIM * TEMPLATE_DTYPE.itemsize,
    description="Embedding as little-endian float32 bytes (base64 in JSON); dimension = len / 4.")]


class EmbeddingEvent(Message):
    """The template (embedding) of one probe face (schema v4: adds ``gated_reason`` from the FaceEvent; v3 is still
    read. v3: adds the probe's ``still_ref``, ``box`` and ``crop_jpeg`` for the review service; v2: the template
    as float32 bytes).

    ``template`` is the vector as little-endian float32 bytes (:data:`TEMPLATE_DTYPE`; URL-safe base64 in JSON), of
    ``TEMPLATE_MIN_DIM``..``TEMPLATE_MAX_DIM`` values; :attr:`vector` gives it as a numpy array. v1 carried a
    JSON list of floats in ``vector`` (11 kB for 512 values, against 2.7 kB of base64 now).
    """

    schema_version: Literal[3, 4] = 4
    event_id: str
    face_id: str
    submission_id: str
    meta: SubmissionMeta
    received_at: datetime
    quality: FaceQuality
    model_id: str
    weights_sha256: str
    template: Template
    still_ref: str | None = Field(default=None, description="Blob-store reference of the submitted still.")
    box: Box = Field(description="The face box in the still's pixels.")
    crop_jpeg: bytes = Field(description="The aligned face crop (JPEG) that was embedded.")
    gated_reason: str | None = Field(default=None, description=GATED_REASON_DESCRIPTION)

    _whole_floats = field_validator("template")(check_template)
    _exact = field_validator("box", mode="before")(_exact_box)

    @model_validator(mode="after")
    def _versioned_fields(self) -> EmbeddingEvent:
        _v3_has_no_gated_reason(self)
        return self

    @property
    def dim(self) -> int:
        """Number of values in the template."""
        return len(self.template) // TEMPLATE_DTYPE.itemsize

    @property
    def vector(self) -> npt.NDArray[np.float32]:
        """The template as a read-only float32 array of shape ``(dim,)`` (native byte order)."""
        return template_vector(self.template)


class IncidentStillReport(Message):
    """What detect made of one still of an incident (schema v1), for the stage that fuses the incident (match):
    every still of an incident reports, one without a usable face too, so an incident never waits for a still
    that will not come. ``event_id`` is ``<submission_id>:incident``."""

    schema_version: Literal[1] = 1
    event_id: str
    submission_id: str
    meta: SubmissionMeta
    received_at: datetime
    still_ref: str | None = Field(default=None, description="Blob-store reference of the still; None: not kept.")
    face_ids: list[str] = Field(description="The faces of this still passed on to embed (empty: no usable face).")
    detail: str = Field(default="", description="Why no face was passed on, when none was.")

    @model_validator(mode="after")
    def _in_an_incident(self) -> IncidentStillReport:
        if self.meta.incident_id is None:
            raise ValueError("an IncidentStillReport needs meta.incident_id")
        return self


class Candidate(Message):
    """One candidate subject of a candidate list (schema v2; v1 called ``watch_list`` ``gallery``)."""

    schema_version: Literal[2] = 2
    rank: int = Field(ge=1)
    subject_id: str
    score: float = Field(description="Cosine similarity in [-1, 1] of the subject's best-scoring enrolled photo; "
                         "on a list whose score_norm is hubness (an opt-in match setting), that photo's CSLS score "
                         "2 x cosine - r_g instead (about -3 to 3; docs/calibration.md).")
    watch_list: str = Field(description="The watch-list (gallery partition) the subject is enrolled on.")
    gallery_face_id: str
    source_ref: str | None = None


class Probe(Message):
    """The probe face a candidate list was searched with, as the review service keeps it (schema v1)."""

    schema_version: Literal[1] = 1
    still_ref: str | None = Field(description="Blob-store reference (sha256:<hex>) of the still; None: not kept.")
    box: Box = Field(description="The face box in the still's pixels.")
    crop_jpeg: bytes = Field(description="The aligned face crop (JPEG) that was searched.")
    template: Template

    _whole_floats = field_validator("template")(check_template)
    _exact = field_validator("box", mode="before")(_exact_box)

    @property
    def vector(self) -> npt.NDArray[np.float32]:
        """The template as a float32 array of shape ``(dim,)``."""
        return template_vector(self.template)


class StillStatus(StrEnum):
    """What became of one still of a search (:class:`ProbeStill`)."""

    SEARCHED = "searched"  # its face is (part of) the probe that was searched
    NO_USABLE_FACE = "no_usable_face"  # no face, or none that passed the quality gate: nothing of it was searched
    SEVERAL_FACES = "several_faces"  # several usable faces: each was searched alone (its own list), none fused
    NOT_ARRIVED = "not_arrived"  # its face was announced but had not arrived when the incident timed out


class ProbeStill(Message):
    """One still behind a candidate list (schema v1): for a single-still search the still searched; for an
    incident, every still that reported, with what became of it."""

    schema_version: Literal[1] = 1
    submission_id: str
    face_id: str | None = Field(description="The face of this still in the probe; None when none was used.")
    still_ref: str | None = Field(default=None, description="Blob-store reference of the still; None: not kept.")
    box: Box | None = Field(default=None, description="The face box in the still's pixels; None: no face used.")
    status: StillStatus = StillStatus.SEARCHED

    @field_validator("box", mode="before")
    @classmethod
    def _box_is_exact(cls, value: object) -> object:
        return value if value is None else _exact_box(value)


CANDIDATE_LIST_V4_DEFAULTS: dict[str, object] = {
    "incident_id": None, "stills": [], "stills_expected": None, "low_quality": False, "threshold_policy": "fixed",
    "gallery_size": None, "score_norm": "none"}
"""The v4 fields of a CandidateList and the values a v3 list implies."""


class CandidateList(Message):
    """Candidates for human review (schema v4: adds ``incident_id`` and the ``stills`` a (fused) probe came from,
    ``low_quality`` for an investigative search of a gated probe, and the ``threshold_policy``, ``gallery_size``
    and ``score_norm`` the search used; v3 lists are still read, with the defaults of
    :data:`CANDIDATE_LIST_V4_DEFAULTS`. v3: adds ``search_started_at``, the ``probe``, and ``trigger`` /
    ``re_search_of`` for re-searches of unsolved probes; v2: ``galleries`` became ``watch_lists``). A list is never
    an identification."""

    schema_version: Literal[3, 4] = 4
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
    watch_lists: list[str] = Field(description="The watch-lists searched.")
    model_id: str
    quality: FaceQuality
    notice: str = "Possible candidates for trained human review; not an identification."
    search_started_at: datetime = Field(description="When the gallery search started (searched_at: ended).")
    probe: Probe
    trigger: Literal["submission", "re_search"] = Field(
        default="submission", description="submission: the still's own search; re_search: a later search of an "
        "unsolved probe against newly enrolled subjects.")
    re_search_of: str | None = Field(default=None, description="re_search: the GalleryChange event_id behind it.")
    incident_id: str | None = Field(
        default=None, description="The incident (SubmissionMeta.incident_id) whose stills were fused into the probe.")
    stills: list[ProbeStill] = Field(
        default_factory=list, description="The stills behind the probe: one entry for a single-still search; for an "
        "incident every still that reported, each with its status (searched = fused into the probe). Empty on v3.")
    stills_expected: int | None = Field(
        default=None, ge=1, description="Incident: the stills the submitter announced (None: unknown).")
    low_quality: bool = Field(
        default=False, description="An investigative search of a probe the quality gate stopped: the candidates "
        "deserve extra caution.")
    threshold_policy: str = Field(
        default="fixed", description="How the threshold was set: fixed, or gallery_size (for a target FPIR at the "
        "gallery's size; see docs/calibration.md).")
    gallery_size: int | None = Field(default=None, ge=0, description="Faces in the gallery at search time.")
    score_norm: str = Field(default="none", description="Score normalisation, and so the scale of `threshold` and "
                            "of each candidate's `score`: none or cohort (cosines), or hubness (CSLS scores, "
                            "2 x cosine - r_g; a consumer that reads scores must read this field).")

    @model_validator(mode="after")
    def _v3_has_no_v4_fields(self) -> CandidateList:
        if self.schema_version == 3:
            extra = [k for k, v in CANDIDATE_LIST_V4_DEFAULTS.items() if getattr(self, k) != v]
            if extra:
                raise ValueError(f"CandidateList v3 cannot carry the v4 field(s) {', '.join(extra)}")
        return self

    @property
    def probe_stills(self) -> list[ProbeStill]:
        """The stills behind the probe; for a v3 list, the one still it names."""
        if self.stills:
            return self.stills
        return [ProbeStill(submission_id=self.submission_id, face_id=self.face_id, still_ref=self.probe.still_ref,
                           box=self.probe.box)]


class OutcomeStatus(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    FACES_FOUND = "faces_found"
    NO_FACE = "no_face"
    PASSED_FOR_REVIEW = "passed_for_review"
    NO_CANDIDATE = "no_candidate"
    FAILED = "failed"


class OutcomeEvent(Message):
    """Progress of one submission, for its submitter (schema v1). Never names a candidate."""

    schema_version: Literal[1] = 1
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
    """A message a service could not process, with the reason and the original bytes (schema v1)."""

    schema_version: Literal[1] = 1
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
