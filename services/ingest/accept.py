"""What every submission channel shares: metadata checks, decoding, the frame event, rejections.

A channel (Kafka handler, HTTP app) turns its input into ``(metadata, bytes)``, calls :meth:`Ingestor.accept`
and then :meth:`SubmissionStore.claim` once it knows the outputs will be produced (Kafka: the loop produces
them before committing; HTTP: after the broker acknowledged them). Rejections go through
:meth:`Ingestor.reject`, which records them and returns the ``rejected`` outcome event.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from rfr.core.blobstore import BlobStore
from rfr.core.errors import ReasonedError
from rfr.core.ids import is_ident
from rfr.core.imaging import DecodedImage, ImageLimits, ImageRejected, decode_image
from rfr.core.kafka import Output
from rfr.core.logs import ids
from rfr.core.reasons import Reason
from rfr.core.schemas import Channel, FrameEvent, OutcomeEvent, OutcomeStatus, SubmissionMeta, utcnow
from rfr.core.topics import Topics
from services.ingest.metrics import IngestMetrics
from services.ingest.store import State, SubmissionRecord, SubmissionStore

logger = logging.getLogger(__name__)

MAX_CLOCK_SKEW = timedelta(days=1)


def valid_ident(text: str) -> bool:
    return is_ident(text)


class Rejected(ReasonedError):
    """A submission that will not be processed: ``reason`` is a :class:`rfr.core.reasons.Reason`."""


@dataclass(frozen=True)
class RawMeta:
    """Submission metadata as it arrived (headers, form fields), before validation."""

    retailer_id: str | None
    store_id: str | None
    camera_id: str | None
    captured_at: str | None
    case_ref: str | None = None
    incident_id: str | None = None  # an explicit incident id (else case_ref, when incident_stills is given)
    incident_stills: str | None = None  # how many stills the incident has, as text (a header or form field)
    investigative: str | None = None  # "true"/"false" (also 1/0, yes/no): search gated faces too


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
MAX_INCIDENT_STILLS = 64
"""Most stills one incident may announce (SubmissionMeta.incident_stills' bound)."""


def parse_flag(name: str, text: str | None) -> bool:
    """A yes/no field: 1/true/yes/on or 0/false/no/off (any case; absent: False); Rejected otherwise."""
    word = (text or "").strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise Rejected(Reason.INVALID_METADATA, f"{name} {text[:32]!r} is not true or false" if text else name)


def incident_fields(raw: RawMeta) -> tuple[str | None, int | None, bool]:
    """``(incident_id, incident_stills, investigative)`` for :class:`SubmissionMeta`, or Rejected.

    The incident is the explicit ``incident_id``, else the ``case_ref`` when ``incident_stills`` is given (a
    case_ref alone keeps today's meaning: each still searched on its own). ``incident_stills``: 1 to 64."""
    stills: int | None = None
    if raw.incident_stills is not None and raw.incident_stills.strip():
        text = raw.incident_stills.strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_INCIDENT_STILLS:
            raise Rejected(Reason.INVALID_METADATA, f"incident_stills {text[:16]!r} is not a whole number from 1 "
                                                    f"to {MAX_INCIDENT_STILLS}")
        stills = int(text)
    incident = raw.incident_id or (raw.case_ref if stills is not None else None)
    if stills is not None and not incident:
        raise Rejected(Reason.MISSING_METADATA, "incident_stills needs an incident_id or a case_ref")
    return incident or None, stills, parse_flag("investigative", raw.investigative)


def _captured_at_or_none(text: str | None) -> datetime | None:
    """``captured_at`` for the record of a rejected still: the value when it is valid, else None."""
    try:
        return parse_captured_at(text) if text else None
    except Rejected:
        return None


def parse_captured_at(text: str) -> datetime:
    """ISO 8601 with a UTC offset (``2024-05-01T13:45:00Z``), not in the future."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise Rejected(Reason.INVALID_METADATA, f"captured_at {text[:64]!r} is not ISO 8601") from exc
    if value.tzinfo is None:
        raise Rejected(Reason.INVALID_METADATA, "captured_at needs a UTC offset (e.g. 'Z' or '+01:00')")
    if value > utcnow() + MAX_CLOCK_SKEW:
        raise Rejected(Reason.INVALID_METADATA, f"captured_at {text[:64]} is in the future")
    return value


def build_meta(raw: RawMeta, channel: Channel) -> SubmissionMeta:
    """Validated :class:`SubmissionMeta`, or Rejected (missing_metadata / invalid_metadata)."""
    required = {"retailer_id": raw.retailer_id, "store_id": raw.store_id, "camera_id": raw.camera_id,
                "captured_at": raw.captured_at}
    missing = [name for name, value in required.items() if not (value and value.strip())]
    if missing:
        raise Rejected(Reason.MISSING_METADATA, "missing " + ", ".join(missing))
    captured_at = parse_captured_at(raw.captured_at or "")
    incident_id, incident_stills, investigative = incident_fields(raw)
    try:
        # ids are taken as given: one with a space, even a trailing one, is invalid, never stripped (rfr.core.ids)
        return SubmissionMeta(retailer_id=raw.retailer_id or "", store_id=raw.store_id or "",
                              camera_id=raw.camera_id or "", captured_at=captured_at,
                              case_ref=raw.case_ref or None, channel=channel, incident_id=incident_id,
                              incident_stills=incident_stills, investigative=investigative)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise Rejected(Reason.INVALID_METADATA, f"invalid {fields} (letters, digits and _.:@- only, "
                                                    "at most 128)") from exc


def _clip(value: str | None, n: int = 128) -> str | None:
    return None if value is None else value[:n]


@dataclass(frozen=True)
class Accepted:
    submission_id: str
    decoded: DecodedImage
    frame: FrameEvent
    outputs: list[Output]  # the frame event and the "received" outcome
    record: SubmissionRecord


class Ingestor:
    """Turns validated submissions into frame events; one per process, shared by the channels."""

    def __init__(self, topics: Topics, store: SubmissionStore, blobs: BlobStore, metrics: IngestMetrics,
                 limits: ImageLimits, inline_max_bytes: int, decode_slots: int | None = None,
                 keep_stills: bool = True) -> None:
        self.topics = topics
        self.store = store
        self.blobs = blobs
        self.metrics = metrics
        self.limits = limits
        self.inline_max_bytes = inline_max_bytes
        self.keep_stills = keep_stills
        # Decoding is CPU- and memory-bound (up to max_pixels x 3 bytes each): no more at once than cores.
        self._slots = threading.BoundedSemaphore(decode_slots or os.cpu_count() or 2)

    def decode(self, data: bytes) -> DecodedImage:
        with self._slots:
            started = time.perf_counter()
            try:
                return decode_image(data, self.limits)
            except ImageRejected as exc:
                raise Rejected(exc.reason, exc.detail) from exc
            finally:
                self.metrics.decode_seconds.observe(time.perf_counter() - started)

    def accept(self, submission_id: str, meta: SubmissionMeta, data: bytes, source: str) -> Accepted:
        """Decode and build the outputs; raises Rejected (``OSError`` when the blob store cannot be written).

        The still goes to the blob store when it is large (the event carries only ``image_ref``) and, with
        ``keep_stills``, always: the review service shows it beside the candidates until retention purges it (a
        small still then travels inline and by reference)."""
        decoded = self.decode(data)
        now = utcnow()
        inline = len(data) <= self.inline_max_bytes
        ref = self.blobs.put(data) if self.keep_stills or not inline else None
        image = data if inline else None
        frame = FrameEvent(event_id=submission_id, submission_id=submission_id, meta=meta, received_at=now,
                           content_type=decoded.content_type, width=decoded.width, height=decoded.height,
                           size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), image=image,
                           image_ref=ref, decode_scale=decoded.scale, decode_warnings=decoded.warnings)
        if decoded.scale > 1 or decoded.warnings:
            logger.info("submission %s: %s decoded at 1/%d scale (%dx%d)%s", submission_id, decoded.format,
                        decoded.scale, decoded.width, decoded.height,
                        f"; accepted with {', '.join(decoded.warnings)}" if decoded.warnings else "",
                        extra=ids(submission_id))
        outcome = OutcomeEvent.make(submission_id, meta.retailer_id, OutcomeStatus.RECEIVED)
        outputs = [
            Output(self.topics.frames, frame.to_bytes(), key=meta.camera_key, event_id=frame.event_id),
            Output(self.topics.outcomes, outcome.to_bytes(), key=submission_id, event_id=outcome.event_id),
        ]
        record = SubmissionRecord(
            submission_id=submission_id, retailer_id=meta.retailer_id, channel=meta.channel.value, source=source,
            received_at=now, store_id=meta.store_id, camera_id=meta.camera_id, captured_at=meta.captured_at,
            case_ref=meta.case_ref, width=decoded.width, height=decoded.height, size_bytes=len(data),
            decode_scale=decoded.scale, decode_warnings=",".join(decoded.warnings) or None,
        )
        return Accepted(submission_id, decoded, frame, outputs, record)

    def reject(self, submission_id: str, raw: RawMeta, channel: Channel, source: str, exc: Rejected) -> list[Output]:
        """Record the rejection and count it; return the ``rejected`` outcome to produce."""
        self.metrics.rejections.labels(exc.reason).inc()
        self.metrics.submissions.labels(channel.value, "rejected").inc()
        retailer = raw.retailer_id or ""
        record = SubmissionRecord(
            submission_id=submission_id, retailer_id=retailer, channel=channel.value, source=source,
            received_at=utcnow(), state=State.REJECTED, reason=exc.reason, detail=exc.detail[:500],
            store_id=_clip(raw.store_id), camera_id=_clip(raw.camera_id), case_ref=_clip(raw.case_ref),
            captured_at=_captured_at_or_none(raw.captured_at),
        )
        self.store.reject(record)
        outcome = OutcomeEvent.make(submission_id, retailer, OutcomeStatus.REJECTED,
                                    detail=f"{exc.reason}: {exc.detail}"[:500])
        return [Output(self.topics.outcomes, outcome.to_bytes(), key=submission_id, event_id=outcome.event_id)]

    def count(self, channel: Channel, outcome: str) -> None:
        """``outcome``: accepted, rejected or duplicate."""
        self.metrics.submissions.labels(channel.value, outcome).inc()

    def received(self, channel: Channel, nbytes: int) -> None:
        self.metrics.received_bytes.labels(channel.value).inc(nbytes)
