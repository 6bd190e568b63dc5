"""The detect stage: FrameEvent -> one FaceEvent per usable face, and an outcome for the submitter.

A FrameEvent of a schema version other than :data:`ACCEPTS` is dead-lettered (``unsupported_schema_version``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import Message
from pydantic import ValidationError

from rfr.core.blobstore import BlobCorrupt, BlobNotFound, BlobStore
from rfr.core.imaging import ImageLimits, ImageRejected, decode_image
from rfr.core.kafka import Output
from rfr.core.logs import ids
from rfr.core.reasons import Reason
from rfr.core.schemas import (
    FaceEvent,
    FrameEvent,
    IncidentStillReport,
    OutcomeEvent,
    OutcomeStatus,
    Point,
    UnsupportedSchemaVersion,
    decode,
)
from rfr.core.settings import Settings
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result, RetryableError
from rfr.core.topics import Topics
from rfr.face.crops import encode_crop
from rfr.face.detector import Detector, close_detector
from rfr.face.faces import FaceFindings, FoundFace, find_faces
from services.detect.metrics import DetectMetrics

logger = logging.getLogger(__name__)

ACCEPTS = frozenset({1})
"""FrameEvent schema versions this stage reads."""


class FrameHandler:
    """A :class:`rfr.core.stream.BatchHandler`; runs in the stream loop's thread (never on an event loop)."""

    def __init__(
        self, settings: Settings, topics: Topics, detector: Detector, blobs: BlobStore, metrics: DetectMetrics
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.detector = detector
        self.blobs = blobs
        self.metrics = metrics
        self.limits = ImageLimits.from_settings(settings.ingest)

    def close(self) -> None:
        """Free the detector's native graph (called by rfr.core.stage.run_stage at shutdown)."""
        close_detector(self.detector)

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        return [self.handle(m) for m in messages]

    def handle(self, msg: Message) -> Result:
        try:
            frame = decode(FrameEvent, msg.value(), accepts=ACCEPTS)
        except UnsupportedSchemaVersion as exc:
            return PoisonMessage(exc.reason, exc.detail)
        except (ValidationError, ValueError) as exc:
            return PoisonMessage(Reason.INVALID_MESSAGE, str(exc)[:500])
        try:
            image = decode_image(self._image_bytes(frame), self.limits)
        except ImageRejected as exc:  # the stream loop sends the dead letter and the ``failed`` outcome
            return PoisonMessage(exc.reason, exc.detail)
        except PoisonMessage as exc:
            return exc
        if (image.scale, image.width, image.height) != (frame.decode_scale, frame.width, frame.height):
            return PoisonMessage(  # ingest and detect must share RFR_INGEST__* limits, or boxes change meaning
                Reason.DECODE_MISMATCH, f"decoded at 1/{image.scale} to {image.width}x{image.height}, ingest recorded "
                f"1/{frame.decode_scale} and {frame.width}x{frame.height}: align RFR_INGEST__MAX_PIXELS")
        started = time.perf_counter()
        findings = find_faces(image.rgb, self.detector, self.settings.detect)
        self.metrics.seconds.observe(time.perf_counter() - started)
        return self._outputs(frame, findings)

    def _image_bytes(self, frame: FrameEvent) -> bytes:
        if frame.image is not None:
            return frame.image
        if frame.image_ref is None:
            raise PoisonMessage(Reason.NO_IMAGE, "frame carries neither image bytes nor an image_ref")
        try:
            return self.blobs.get(frame.image_ref)
        except (BlobNotFound, BlobCorrupt, ValueError) as exc:
            raise PoisonMessage(Reason.BLOB_UNAVAILABLE, f"{frame.image_ref}: {exc}") from exc
        except OSError as exc:  # retried; an outage only when check_dependencies finds the store down
            raise RetryableError(f"blob {frame.image_ref} unreadable: {exc}") from exc

    def check_dependencies(self) -> None:
        """:class:`DependencyUnavailable` ("blobstore") when the blob store cannot be used at all."""
        try:
            self.blobs.check()
        except OSError as exc:
            raise DependencyUnavailable("blobstore", f"blob store unusable: {exc}") from exc

    def _outcome(self, outcome: OutcomeEvent) -> Output:
        return Output(self.topics.outcomes, outcome.to_bytes(), key=outcome.submission_id, event_id=outcome.event_id)

    def _outputs(self, frame: FrameEvent, findings: FaceFindings) -> list[Output]:
        self.metrics.frames.inc()
        for rejected in findings.rejected:
            self.metrics.faces_rejected.labels(rejected.reason).inc()
        if frame.meta.investigative:  # the submitter asked for gated faces to be searched too (low_quality lists)
            findings = findings.with_gated()
        faces, dropped = self._within_guard(frame, findings)
        self.metrics.faces_found.inc(len(faces))
        self.metrics.faces_per_frame.observe(len(faces))
        if not faces:
            detail = "no face detected" if not findings.rejected else f"faces unusable: {findings.rejection_summary()}"
            return [self._outcome(OutcomeEvent.make(frame.submission_id, frame.meta.retailer_id,
                                                    OutcomeStatus.NO_FACE, detail=detail, faces=0, dropped=dropped)),
                    *self._incident_report(frame, [], detail)]
        out = [self._face_output(frame, i, len(faces), face) for i, face in enumerate(faces)]
        out += self._incident_report(frame, [f"{frame.submission_id}:f{i}" for i in range(len(faces))], "")
        summary = f"{len(faces)} face(s) passed on"
        if findings.rejected:
            summary += f"; unusable {findings.rejection_summary()}"
        if Reason.OVER_MAX_FACES in dropped:
            summary += (f"; {dropped[Reason.OVER_MAX_FACES]} usable face(s) not searched: over the detect.max_faces "
                        f"guard of {self.settings.detect.max_faces}")
        out.append(self._outcome(OutcomeEvent.make(frame.submission_id, frame.meta.retailer_id,
                                                   OutcomeStatus.FACES_FOUND, detail=summary, faces=len(faces),
                                                   dropped=dropped)))
        return out

    def _within_guard(self, frame: FrameEvent, findings: FaceFindings) -> tuple[list[FoundFace], dict[str, int]]:
        """The faces to search (largest first, at most ``detect.max_faces``) and every face not passed on, by
        reason: the quality gate's, and ``over_max_faces`` (counted, logged)."""
        limit = self.settings.detect.max_faces
        dropped = findings.rejection_counts()
        over = len(findings.accepted) - limit
        if over > 0:
            dropped[Reason.OVER_MAX_FACES] = over
            self.metrics.faces_dropped.labels(Reason.OVER_MAX_FACES).inc(over)
            logger.warning("submission %s: %d usable face(s) over detect.max_faces=%d not searched",
                           frame.submission_id, over, limit, extra=ids(frame.submission_id))
        return findings.accepted[:limit], dropped

    def _face_output(self, frame: FrameEvent, index: int, total: int, face: FoundFace) -> Output:
        face_id = f"{frame.submission_id}:f{index}"
        event = FaceEvent(
            event_id=face_id,
            face_id=face_id,
            submission_id=frame.submission_id,
            face_index=index,
            faces_in_frame=total,
            meta=frame.meta,
            received_at=frame.received_at,
            box=face.detection.box,
            keypoints=[Point(x=px, y=py) for px, py in face.detection.keypoints],
            quality=face.quality,
            crop_jpeg=encode_crop(face.crop),
            crop_size=int(face.crop.shape[0]),
            still_ref=frame.image_ref,
            gated_reason=face.gated_reason,
        )
        return Output(self.topics.faces, event.to_bytes(), key=frame.submission_id, event_id=face_id)

    def _incident_report(self, frame: FrameEvent, face_ids: list[str], detail: str) -> list[Output]:
        """A still of a multi-still incident tells match which faces to wait for (none: do not wait for it)."""
        if frame.meta.incident_key is None:
            return []
        report = IncidentStillReport(event_id=f"{frame.submission_id}:incident", submission_id=frame.submission_id,
                                     meta=frame.meta, received_at=frame.received_at, still_ref=frame.image_ref,
                                     face_ids=face_ids, detail=detail)
        return [Output(self.topics.incidents, report.to_bytes(), key=frame.meta.incident_key,
                       event_id=report.event_id)]
