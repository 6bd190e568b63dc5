"""`python -m services.detect` against the real broker with the real MediaPipe model: frames in, face events out,
an explicit no-face outcome for an empty scene, a dead letter (and a `failed` outcome) for a corrupt frame and for a
frame of a schema version detect does not read, and the ``rfr-event-id`` header on every record produced."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from rfr.core import kafka
from rfr.core.kafka import DeliveryTracker, Output
from rfr.core.schemas import DeadLetter, FaceEvent, FrameEvent, OutcomeEvent, OutcomeStatus, SubmissionMeta, decode
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.tools import procs
from rfr.tools.degrade import place_in_scene, synthetic_background


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def _frame(sub: str, data: bytes, width: int, height: int) -> FrameEvent:
    now = datetime.now(UTC)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=now)
    return FrameEvent(event_id=sub, submission_id=sub, meta=meta, received_at=now, content_type="image/jpeg",
                      width=width, height=height, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      image=data)


def test_frames_to_faces_and_no_face(kafka_settings: KafkaSettings, model_dir: Path, lfw_dir: Path,
                                     tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    rng = np.random.default_rng(3)
    photo = sorted((lfw_dir / "George_W_Bush").glob("*.jpg"))[0]
    face_rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    scene, _ = place_in_scene(face_rgb, 96, (1280, 720), "clean", rng)
    empty = synthetic_background((1280, 720), rng)
    frames = {
        "sub_face": _frame("sub_face", _jpeg(scene), 1280, 720),
        "sub_empty": _frame("sub_empty", _jpeg(empty), 1280, 720),
        "sub_corrupt": _frame("sub_corrupt", b"\xff\xd8\xff\xe0 truncated", 1280, 720),
    }
    tracker = DeliveryTracker(kafka.make_producer(kafka_settings))
    tracker.produce(Output(topics.frames, f.to_bytes(), key="r1/s1/c1", event_id=s) for s, f in frames.items())
    tracker.produce([Output(topics.frames, b"not json at all", key="r1/s1/c1")])
    future = json.loads(frames["sub_face"].to_bytes()) | {"schema_version": 2, "submission_id": "sub_future"}
    tracker.produce([Output(topics.frames, json.dumps(future).encode(), key="r1/s1/c1")])
    tracker.flush()

    env = dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
               RFR_KAFKA__TOPIC_NAMESPACE=kafka_settings.topic_namespace,
               RFR_KAFKA__GROUP_NAMESPACE=kafka_settings.group_namespace, RFR_MODEL_DIR=str(model_dir),
               RFR_METRICS__DETECT_PORT=str(procs.free_port()), RFR_BLOB_DIR=str(tmp_path / "blobs"))
    info, proc = procs.spawn("detect", [sys.executable, "-m", "services.detect"], tmp_path, env)
    try:
        got = _read(kafka_settings, [topics.faces, topics.outcomes, topics.deadletter], want=8, timeout_s=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, Path(info.log).read_text()[-2000:]

    faces = [decode(FaceEvent, v) for t, v, _ in got if t == topics.faces]
    outcomes = {decode(OutcomeEvent, v).submission_id: decode(OutcomeEvent, v)
                for t, v, _ in got if t == topics.outcomes}
    letters = [decode(DeadLetter, v) for t, v, _ in got if t == topics.deadletter]
    assert [f.submission_id for f in faces] == ["sub_face"]
    face = faces[0]
    assert face.face_id == "sub_face:f0" and face.quality.face_px > 60 and len(face.keypoints) == 6
    assert face.schema_version == 4 and face.still_ref is None and face.quality.sharpness > 0
    crop = cv2.imdecode(np.frombuffer(face.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and crop.shape == (160, 160, 3)
    assert outcomes["sub_face"].status == OutcomeStatus.FACES_FOUND and outcomes["sub_face"].faces == 1
    assert outcomes["sub_empty"].status == OutcomeStatus.NO_FACE
    assert outcomes["sub_corrupt"].status == OutcomeStatus.FAILED
    assert outcomes["sub_future"].status == OutcomeStatus.FAILED
    assert sorted(dl.reason.split(":")[0] for dl in letters) == ["invalid_message", "truncated",
                                                                 "unsupported_schema_version"]
    assert any(dl.payload == b"not json at all" for dl in letters)
    for topic, value, headers in got:  # consumers drop duplicates on this header: every record has it
        assert headers.get(kafka.EVENT_ID_HEADER) == json.loads(value)["event_id"], topic


def _read(ks: KafkaSettings, topics: list[str], want: int, timeout_s: float
          ) -> list[tuple[str, bytes, dict[str, str]]]:
    """(topic, value, headers) of the records on ``topics``, until ``want`` of them or ``timeout_s``."""
    consumer = kafka.make_consumer(ks, "detect-test-reader")
    consumer.subscribe(topics)
    got: list[tuple[str, bytes, dict[str, str]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append((msg.topic() or "", msg.value() or b"", kafka.header_dict(msg)))
    finally:
        consumer.close()
    return got
