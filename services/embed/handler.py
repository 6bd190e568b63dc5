"""The embed stage's batch handler: FaceEvents in, one forward pass per batch, EmbeddingEvents out.

Each message is parsed and its crop decoded on its own; a bad one (invalid JSON, a FaceEvent schema version
other than :data:`ACCEPTS`, undecodable JPEG, wrong shape) becomes a :class:`PoisonMessage` for the dead-letter
topic and the rest of the batch goes on. The good crops are embedded together in one forward pass. A failure of
the model is raised as :class:`RetryableError`: the loop first asks :meth:`EmbedHandler.check_dependencies`,
which embeds a plain grey canary crop. When the canary fails too, the model runtime itself is down (an outage,
retried without limit); when it passes, the batch is tried again one face at a time, and a face that keeps
failing is dead-lettered as ``retry_exhausted``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from pydantic import ValidationError

from rfr.core.kafka import Output
from rfr.core.reasons import Reason
from rfr.core.schemas import EmbeddingEvent, FaceEvent, UnsupportedSchemaVersion, decode, template_bytes
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result, RetryableError
from rfr.core.topics import Topics
from rfr.embedding.embedder import CROP_SIZE, Embedder
from rfr.face.crops import Crop, CropRejected, decode_crop
from services.embed.metrics import EmbedMetrics

logger = logging.getLogger(__name__)

CANARY_GREY = 128  # a flat mid-grey crop: any working model embeds it to a finite vector
ACCEPTS = frozenset({3, 4})
"""FaceEvent schema versions this stage reads (v3: the still's blob reference for review; v4: ``gated_reason``)."""


def parse_face(msg: Message) -> tuple[FaceEvent, Crop]:
    """The FaceEvent in ``msg`` and its decoded crop, or PoisonMessage."""
    try:
        event = decode(FaceEvent, msg.value(), accepts=ACCEPTS)
    except UnsupportedSchemaVersion as exc:
        raise PoisonMessage(exc.reason, exc.detail) from exc
    except (ValidationError, ValueError) as exc:
        raise PoisonMessage(Reason.INVALID_FACE_EVENT, str(exc)[:500]) from exc
    if event.crop_size != CROP_SIZE:
        raise PoisonMessage(Reason.BAD_CROP_SHAPE, f"crop_size {event.crop_size}, the model takes {CROP_SIZE}")
    try:
        return event, decode_crop(event.crop_jpeg, CROP_SIZE)
    except CropRejected as exc:
        raise PoisonMessage(exc.reason, exc.detail) from exc


def message_time(msg: Message, event: FaceEvent) -> float:
    """When ``msg`` was written to the topic (Kafka timestamp), else when its submission was received."""
    kind, millis = msg.timestamp()
    if kind != TIMESTAMP_NOT_AVAILABLE and millis > 0:
        return float(millis) / 1000.0
    return event.received_at.timestamp()


@dataclass
class _Parsed:
    index: int
    event: FaceEvent
    crop: Crop
    enqueued_at: float


class EmbedHandler:
    """:class:`rfr.core.stream.BatchHandler` for the FACES topic."""

    def __init__(self, embedder: Embedder, topics: Topics, metrics: EmbedMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.embedder = embedder
        self.topics = topics
        self.metrics = metrics
        self.clock = clock

    def close(self) -> None:
        """Free the model at shutdown (called by :func:`rfr.core.stage.run_stage`)."""
        close = getattr(self.embedder, "close", None)
        if callable(close):
            close()

    def check_dependencies(self) -> None:
        """Embed one grey canary crop; :class:`DependencyUnavailable` ("model") when even that fails."""
        canary = np.full((1, CROP_SIZE, CROP_SIZE, 3), CANARY_GREY, dtype=np.uint8)
        try:
            vectors = np.asarray(self.embedder.embed(canary), dtype=np.float32)
        except Exception as exc:  # any failure of the runtime on a known-good input is an outage
            raise DependencyUnavailable("model", f"the canary crop failed: {type(exc).__name__}: {exc}") from exc
        if vectors.shape != (1, self.embedder.dim) or not np.isfinite(vectors).all():
            raise DependencyUnavailable("model", f"the canary crop embedded to {vectors.shape}, non-finite or wrong")

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result] = [RuntimeError("not processed")] * len(messages)
        started = time.perf_counter()
        parsed: list[_Parsed] = []
        for i, msg in enumerate(messages):
            try:
                event, crop = parse_face(msg)
            except PoisonMessage as exc:
                results[i] = exc
                continue
            parsed.append(_Parsed(i, event, crop, message_time(msg, event)))
        self.metrics.decode_seconds.observe(time.perf_counter() - started)
        if parsed:
            vectors = self._embed(parsed)
            for item, vector in zip(parsed, vectors, strict=True):
                results[item.index] = self._result(item.event, vector)
        return results

    def _embed(self, parsed: list[_Parsed]) -> npt.NDArray[np.float32]:
        now = self.clock()
        for item in parsed:
            self.metrics.queue_wait_seconds.observe(max(0.0, now - item.enqueued_at))
        crops = np.stack([item.crop for item in parsed])
        started = time.perf_counter()
        try:
            vectors = np.asarray(self.embedder.embed(crops), dtype=np.float32)
        except Exception as exc:
            logger.exception("embedding a batch of %d faces failed", len(parsed))
            raise RetryableError(f"embedding failed: {type(exc).__name__}: {exc}") from exc
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        if vectors.shape != (len(parsed), self.embedder.dim):
            raise RetryableError(f"embedder returned {vectors.shape} for {len(parsed)} faces")
        self.metrics.batch_faces.observe(len(parsed))
        return vectors

    def _result(self, event: FaceEvent, vector: npt.NDArray[np.float32]) -> Result:
        if not np.isfinite(vector).all():
            return PoisonMessage(Reason.NON_FINITE_EMBEDDING, f"face {event.face_id} embedded to NaN/inf")
        out = EmbeddingEvent(
            event_id=event.face_id,
            face_id=event.face_id,
            submission_id=event.submission_id,
            meta=event.meta,
            received_at=event.received_at,
            quality=event.quality,
            model_id=self.embedder.model_id,
            weights_sha256=self.embedder.weights_sha256,
            template=template_bytes(vector),
            still_ref=event.still_ref,
            box=event.box,
            crop_jpeg=event.crop_jpeg,
            gated_reason=event.gated_reason,
        )
        self.metrics.faces.inc()
        return [Output(self.topics.embeddings, out.to_bytes(), key=event.submission_id, event_id=event.face_id)]
