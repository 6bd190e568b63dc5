"""Detect's handler with a fake detector: every usable face of a crowded still is searched, and a face the
``max_faces`` resource guard holds back is reported (outcome, metric, log), never dropped silently."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.faces import GridDetector
from support.kafka import FakeMsg

from rfr.core.blobstore import FileBlobStore
from rfr.core.reasons import Reason
from rfr.core.schemas import FaceEvent, FrameEvent, OutcomeEvent, OutcomeStatus, SubmissionMeta, decode
from rfr.core.settings import DetectSettings, Settings
from rfr.core.topics import Topics
from services.detect.handler import FrameHandler
from services.detect.metrics import DetectMetrics

WIDTH, HEIGHT, CELL, FACE = 1200, 750, 150, 64
TOPICS = Topics("t")


def _frame_msg(declared_width: int = WIDTH) -> FakeMsg:
    noise = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)  # sharp everywhere
    ok, buf = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = bytes(buf)
    now = datetime.now(UTC)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=now)
    frame = FrameEvent(event_id="sub_crowd", submission_id="sub_crowd", meta=meta, received_at=now,
                       content_type="image/jpeg", width=declared_width, height=HEIGHT, size_bytes=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), image=data)
    return FakeMsg(frame.to_bytes(), 0, topic=TOPICS.frames)


def _run(n_faces: int, detect: DetectSettings, tmp_path: Path) -> tuple[list[FaceEvent], OutcomeEvent,
                                                                         CollectorRegistry]:
    registry = CollectorRegistry()
    detector = GridDetector(n_faces, WIDTH, CELL, FACE)
    handler = FrameHandler(Settings(detect=detect), TOPICS, detector, FileBlobStore(tmp_path),
                           DetectMetrics.create(registry))
    [result] = handler.handle_batch([_frame_msg()])
    assert isinstance(result, list)
    faces = [decode(FaceEvent, o.value) for o in result if o.topic == TOPICS.faces]
    [outcome] = [decode(OutcomeEvent, o.value) for o in result if o.topic == TOPICS.outcomes]
    return faces, outcome, registry


def test_forty_people_in_one_still_are_all_searched_by_default(tmp_path: Path) -> None:
    faces, outcome, registry = _run(40, DetectSettings(), tmp_path)
    assert len(faces) == 40 and {f.faces_in_frame for f in faces} == {40}
    assert (outcome.status, outcome.faces, outcome.dropped) == (OutcomeStatus.FACES_FOUND, 40, {})
    assert registry.get_sample_value("rfr_detect_faces_dropped_total", {"reason": Reason.OVER_MAX_FACES}) is None


def test_faces_over_the_guard_are_reported_in_the_outcome_metric_and_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="services.detect.handler"):
        faces, outcome, registry = _run(40, DetectSettings(max_faces=32), tmp_path)
    assert len(faces) == 32
    assert outcome.faces == 32 and outcome.dropped == {Reason.OVER_MAX_FACES: 8}
    assert "8 usable face(s) not searched" in outcome.detail and "max_faces guard of 32" in outcome.detail
    assert registry.get_sample_value("rfr_detect_faces_dropped_total", {"reason": Reason.OVER_MAX_FACES}) == 8.0
    assert any("sub_crowd: 8 usable face(s) over detect.max_faces=32" in r.getMessage() for r in caplog.records)


def test_quality_gate_rejections_are_counted_by_reason_in_the_outcome(tmp_path: Path) -> None:
    faces, outcome, _ = _run(3, DetectSettings(gate_min_face_px=FACE + 1), tmp_path)  # every face too small
    assert faces == []
    assert (outcome.status, outcome.faces, outcome.dropped) == (OutcomeStatus.NO_FACE, 0, {"too_small": 3})


def test_a_frame_of_an_unaccepted_schema_version_is_refused(tmp_path: Path) -> None:
    from rfr.core.stream import PoisonMessage

    handler = FrameHandler(Settings(), TOPICS, GridDetector(1), FileBlobStore(tmp_path), DetectMetrics.create(
        CollectorRegistry()))
    raw = json.loads(_frame_msg().value() or b"")
    [result] = handler.handle_batch([FakeMsg(json.dumps(raw | {"schema_version": 2}).encode(), 0)])
    assert isinstance(result, PoisonMessage) and result.reason == "unsupported_schema_version"
    assert result.detail == "got 2, accepts 1 (FrameEvent)"


def test_faces_carry_sharpness_in_a_version_4_face_event(tmp_path: Path) -> None:
    faces, _, _ = _run(1, DetectSettings(), tmp_path)
    assert faces[0].schema_version == 4 and faces[0].quality.schema_version == 2
    assert faces[0].quality.sharpness >= DetectSettings().gate_min_sharpness  # passed the gate


def test_a_frame_decoded_otherwise_than_ingest_recorded_is_refused(tmp_path: Path) -> None:
    from rfr.core.stream import PoisonMessage

    handler = FrameHandler(Settings(), TOPICS, GridDetector(1), FileBlobStore(tmp_path), DetectMetrics.create(
        CollectorRegistry()))
    [result] = handler.handle_batch([_frame_msg(declared_width=WIDTH // 2)])  # as if ingest had decoded at 1/2
    assert isinstance(result, PoisonMessage) and result.reason == "decode_mismatch"
    assert "RFR_INGEST__MAX_PIXELS" in result.detail
