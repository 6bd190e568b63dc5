"""Every message a stage produces carries the ``rfr-event-id`` header, equal to the event's own ``event_id``.

Each real handler (ingest, detect, embed, match) runs inside the real stream loop, on good input and on input it
dead-letters, against a recording producer; so do a retry that runs out (``retry_exhausted``). Every record
produced (outputs, dead letters, ``failed`` / ``rejected`` outcomes) is checked, which is what consumers drop
duplicates on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from support.events import probe_fields
from support.faces import FakeEmbedder, GridDetector
from support.ingest import make_ingestor
from support.kafka import FakeMsg, FakeProducer, LogConsumer, Produced
from support.stills import jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.kafka import EVENT_ID_HEADER, DeliveryTracker
from rfr.core.metrics import StageMetrics
from rfr.core.reasons import Reason
from rfr.core.schemas import (
    Box,
    EmbeddingEvent,
    FaceEvent,
    FaceQuality,
    FrameEvent,
    Point,
    SubmissionMeta,
    template_bytes,
)
from rfr.core.settings import MatchSettings, Settings
from rfr.core.stream import Result, RetryableError, StreamConfig, StreamProcessor
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace
from rfr.gallery.memory import InMemoryGallery
from services.detect.handler import FrameHandler
from services.detect.metrics import DetectMetrics
from services.embed.handler import EmbedHandler
from services.embed.metrics import EmbedMetrics
from services.ingest.handler import SubmissionHandler, submission_headers
from services.match.handler import MatchHandler

TOPICS = Topics("t")
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
META = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=NOW)
QUALITY = FaceQuality(face_px=64, score=0.9, sharpness=300, eye_distance_px=26, pose_ok=True)


def run_stage(handler: Any, values: list[bytes], *, max_attempts: int = 5,
              headers: Sequence[tuple[str, bytes]] = ()) -> list[Produced]:
    """``values`` consumed by the stream loop running ``handler`` until the log is drained; what it produced."""
    consumer = LogConsumer([])
    consumer.log = [FakeMsg(value, offset, headers=headers) for offset, value in enumerate(values)]
    producer = FakeProducer()
    config = StreamConfig("test", ["in"], TOPICS.deadletter, batch_size=8, retry_backoff_s=0.0,
                          max_attempts=max_attempts, outcomes_topic=TOPICS.outcomes)
    loop = StreamProcessor(config, consumer, DeliveryTracker(producer), handler,  # type: ignore[arg-type]
                           StageMetrics.create("test", CollectorRegistry()))
    while loop.step():
        pass
    assert consumer.committed == len(values)  # everything was handled, none left behind
    return producer.produced


def assert_identified(produced: list[Produced], *topics: str) -> None:
    """Every record has the header, it is the body's ``event_id``, and each of ``topics`` got a record."""
    assert {p.topic for p in produced} >= set(topics), [p.topic for p in produced]
    for record in produced:
        event_id = record.headers.get(EVENT_ID_HEADER)
        assert event_id, f"{record.topic}: no {EVENT_ID_HEADER} header"
        assert json.loads(record.value)["event_id"] == event_id, record.topic


def test_ingest_frames_outcomes_and_dead_letters(tmp_path: Path) -> None:
    handler = SubmissionHandler(make_ingestor(tmp_path))
    produced = run_stage(handler, [jpeg(seed=1), b"\xff\xd8 not a still", jpeg(seed=2)],
                         headers=submission_headers("shop-1", "store-1", "cam-1", "2024-05-01T12:00:00Z"))
    assert_identified(produced, TOPICS.frames, TOPICS.outcomes, TOPICS.deadletter)
    unattributed = run_stage(handler, [jpeg(seed=3)])  # no rfr-* headers: a dead letter and nothing else
    assert_identified(unattributed, TOPICS.deadletter)


def _frame(submission: str, version: int = 1) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = bytes(buf)
    frame = FrameEvent(event_id=submission, submission_id=submission, meta=META, received_at=NOW,
                       content_type="image/jpeg", width=600, height=300, size_bytes=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), image=data)
    raw = json.loads(frame.to_bytes())
    return json.dumps(raw | {"schema_version": version}).encode()


def test_detect_faces_outcomes_dead_letters_and_failed_outcomes(tmp_path: Path) -> None:
    handler = FrameHandler(Settings(), TOPICS, GridDetector(2, 600), FileBlobStore(tmp_path),
                           DetectMetrics.create(CollectorRegistry()))
    produced = run_stage(handler, [_frame("sub_a"), b"{not json", _frame("sub_b", version=9)])
    assert_identified(produced, TOPICS.faces, TOPICS.outcomes, TOPICS.deadletter)
    assert sum(p.topic == TOPICS.faces for p in produced) == 2
    failed = [json.loads(p.value) for p in produced if p.topic == TOPICS.outcomes]
    assert {(o["submission_id"], o["status"]) for o in failed} >= {("sub_b", "failed")}  # beside its dead letter


def _face(index: int, crop: bytes) -> bytes:
    face_id = f"sub_f:f{index}"
    return FaceEvent(event_id=face_id, face_id=face_id, submission_id="sub_f", face_index=index, faces_in_frame=3,
                     meta=META, received_at=NOW, box=Box(x=0, y=0, width=64, height=64), keypoints=[Point(x=1, y=1)],
                     quality=QUALITY, crop_jpeg=crop).to_bytes()


def test_embed_embeddings_dead_letters_and_failed_outcomes() -> None:
    ok, buf = cv2.imencode(".jpg", np.full((160, 160, 3), 90, np.uint8))
    assert ok
    handler = EmbedHandler(FakeEmbedder("colour"), TOPICS, EmbedMetrics.create(CollectorRegistry()))
    produced = run_stage(handler, [_face(0, bytes(buf)), _face(1, b"\xff\xd8garbage"), _face(2, bytes(buf))])
    assert_identified(produced, TOPICS.embeddings, TOPICS.deadletter, TOPICS.outcomes)
    assert sum(p.topic == TOPICS.embeddings for p in produced) == 2


def _embedding(index: int, vector: np.ndarray, model_id: str = "facenet-fake") -> bytes:
    face_id = f"sub_m:f{index}"
    return EmbeddingEvent(event_id=face_id, face_id=face_id, submission_id="sub_m", meta=META, received_at=NOW,
                          quality=QUALITY, model_id=model_id, weights_sha256="ab" * 32,
                          template=template_bytes(vector), **probe_fields()).to_bytes()


def test_match_candidate_lists_outcomes_dead_letters_and_failed_outcomes() -> None:
    alice = np.eye(16, dtype=np.float32)[0]
    gallery = InMemoryGallery("facenet-fake")
    gallery.add([GalleryFace("a1", "alice", "custody", alice)])
    handler = MatchHandler(gallery, MatchSettings(), TOPICS)
    stranger = np.eye(16, dtype=np.float32)[1]
    produced = run_stage(handler, [_embedding(0, alice), _embedding(1, stranger), _embedding(2, alice, "other")])
    assert_identified(produced, TOPICS.matches, TOPICS.outcomes, TOPICS.deadletter)
    statuses = sorted(json.loads(p.value)["status"] for p in produced if p.topic == TOPICS.outcomes)
    assert statuses == ["failed", "no_candidate", "passed_for_review"]


class AlwaysFails:
    """A handler whose every try fails in a way that may pass (and whose dependencies are fine)."""

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        raise RetryableError("flaky")


def test_retry_exhausted_dead_letter_and_its_failed_outcome() -> None:
    produced = run_stage(AlwaysFails(), [_embedding(0, np.ones(16, np.float32))], max_attempts=2)
    assert_identified(produced, TOPICS.deadletter, TOPICS.outcomes)
    [letter] = [p for p in produced if p.topic == TOPICS.deadletter]
    assert letter.headers["rfr-reason"] == Reason.RETRY_EXHAUSTED
