"""The embed handler's batch logic with a fake embedder: ordering, keys, poison isolation, metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import cv2
import numpy as np
import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from support.faces import FakeEmbedder
from support.kafka import FakeMsg

from rfr.core.geometry import Box
from rfr.core.schemas import EmbeddingEvent, FaceEvent, FaceQuality, Point, SubmissionMeta, decode
from rfr.core.stream import PoisonMessage, RetryableError
from rfr.core.topics import Topics
from rfr.embedding.embedder import CROP_SIZE
from rfr.face.crops import decode_crop
from services.embed.handler import EmbedHandler
from services.embed.metrics import EmbedMetrics

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = RECEIVED.timestamp() + 10.0


def jpeg_of(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf)


def face_event(index: int, crop_jpeg: bytes, submission: str = "sub_abc") -> FaceEvent:
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=RECEIVED)
    return FaceEvent(
        event_id=f"{submission}:f{index}", face_id=f"{submission}:f{index}", submission_id=submission,
        face_index=index, faces_in_frame=4, meta=meta, received_at=RECEIVED,
        box=Box(x=1, y=2, width=60, height=60), keypoints=[Point(x=3, y=4)],
        quality=FaceQuality(face_px=60, score=0.9, sharpness=40, eye_distance_px=20, pose_ok=True),
        crop_jpeg=crop_jpeg,
    )


def solid(colour: tuple[int, int, int], size: int = 160) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def make_handler(embedder: FakeEmbedder) -> tuple[EmbedHandler, CollectorRegistry]:
    registry = CollectorRegistry()
    return EmbedHandler(embedder, Topics("ns"), EmbedMetrics.create(registry), clock=lambda: NOW), registry


def run(handler: EmbedHandler, msgs: list[FakeMsg]) -> list[Any]:
    return handler.handle_batch(cast(Sequence[Message], msgs))


def test_decode_crop_returns_rgb() -> None:
    rgb = decode_crop(jpeg_of(solid((200, 30, 30))), CROP_SIZE)
    assert rgb.shape == (160, 160, 3) and rgb.dtype == np.uint8
    red, _green, blue = rgb.reshape(-1, 3).mean(axis=0)
    assert red > 180 and blue < 50  # channel order is RGB, not OpenCV's BGR


def test_good_batch_is_one_forward_pass_with_keys_ids_and_model() -> None:
    embedder = FakeEmbedder("colour")
    handler, registry = make_handler(embedder)
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    msgs = [FakeMsg(face_event(i, jpeg_of(solid(c))).to_bytes(), i) for i, c in enumerate(colours)]
    results = run(handler, msgs)
    assert embedder.calls == [3]
    for i, result in enumerate(results):
        assert isinstance(result, list) and len(result) == 1
        out = result[0]
        assert out.topic == "ns.rfr.embeddings.v1"
        assert out.key == "sub_abc" and out.event_id == f"sub_abc:f{i}"
        event = decode(EmbeddingEvent, out.value)
        assert event.face_id == f"sub_abc:f{i}" and event.event_id == event.face_id
        assert event.model_id == "facenet-fake" and event.weights_sha256 == "ab" * 32
        vec = np.asarray(event.vector)
        assert vec.shape == (512,) and abs(np.linalg.norm(vec) - 1) < 1e-5
        assert int(np.argmax(vec[:3])) == i  # each face got its own vector, in order
    assert registry.get_sample_value("rfr_embed_faces_total") == 3
    assert registry.get_sample_value("rfr_embed_batch_faces_count") == 1
    assert registry.get_sample_value("rfr_embed_batch_faces_sum") == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_face_event"),
        (None, "invalid_face_event"),
        (face_event(1, b"\xff\xd8garbage").to_bytes(), "bad_crop"),
        (face_event(1, b"").to_bytes(), "bad_crop"),
        (face_event(1, jpeg_of(solid((9, 9, 9), size=100))).to_bytes(), "bad_crop_shape"),
    ],
)
def test_poison_is_rejected_alone(payload: bytes | None, reason: str) -> None:
    embedder = FakeEmbedder("colour")
    handler, _ = make_handler(embedder)
    good = face_event(0, jpeg_of(solid((120, 60, 30)))).to_bytes()
    results = run(handler, [FakeMsg(good, 0), FakeMsg(payload, 1), FakeMsg(good, 2)])
    assert isinstance(results[1], PoisonMessage) and results[1].reason == reason
    assert isinstance(results[0], list) and isinstance(results[2], list)
    assert embedder.calls == [2]


def test_a_version_1_face_event_is_refused_as_unsupported() -> None:
    embedder = FakeEmbedder("colour")
    handler, _ = make_handler(embedder)
    raw = json.loads(face_event(0, jpeg_of(solid((120, 60, 30)))).to_bytes())
    raw["schema_version"] = 1
    raw["quality"] = {k: v for k, v in raw["quality"].items() if k != "sharpness"} | {
        "schema_version": 1, "blur": 40.0}  # v1 called sharpness "blur"
    [result] = run(handler, [FakeMsg(json.dumps(raw).encode(), 0)])
    assert isinstance(result, PoisonMessage) and result.reason == "unsupported_schema_version"
    assert result.detail == "got 1, accepts 3, 4 (FaceEvent)"
    assert embedder.calls == []


def test_the_embedding_travels_as_float32_bytes() -> None:
    handler, _ = make_handler(FakeEmbedder("colour"))
    [[out]] = run(handler, [FakeMsg(face_event(0, jpeg_of(solid((250, 0, 0)))).to_bytes(), 0)])
    raw = json.loads(out.value)
    assert raw["schema_version"] == 4 and "vector" not in raw and raw["quality"]["sharpness"] == 40.0
    event = decode(EmbeddingEvent, out.value)
    assert len(event.template) == 4 * 512 and event.vector.dtype == np.float32


def test_all_poison_skips_the_model() -> None:
    embedder = FakeEmbedder("colour")
    handler, registry = make_handler(embedder)
    results = run(handler, [FakeMsg(b"[]", 0), FakeMsg(b"x", 1)])
    assert all(isinstance(r, PoisonMessage) for r in results)
    assert embedder.calls == []
    assert registry.get_sample_value("rfr_embed_faces_total") == 0


def test_model_failure_retries_the_batch_instead_of_dead_lettering() -> None:
    handler, _ = make_handler(FakeEmbedder("colour", fail=True))
    with pytest.raises(RetryableError, match="device lost"):
        run(handler, [FakeMsg(face_event(0, jpeg_of(solid((1, 2, 3)))).to_bytes(), 0)])


def test_non_finite_vector_is_poison_for_that_face_only() -> None:
    handler, registry = make_handler(FakeEmbedder("colour", nan_rows=[1]))
    msgs = [FakeMsg(face_event(i, jpeg_of(solid((50 * i, 0, 0)))).to_bytes(), i) for i in range(3)]
    results = run(handler, msgs)
    assert isinstance(results[1], PoisonMessage) and results[1].reason == "non_finite_embedding"
    assert isinstance(results[0], list) and isinstance(results[2], list)
    assert registry.get_sample_value("rfr_embed_faces_total") == 2


def test_queue_wait_uses_kafka_timestamp_else_received_at() -> None:
    handler, registry = make_handler(FakeEmbedder("colour"))
    crop = face_event(0, jpeg_of(solid((1, 2, 3)))).to_bytes()
    run(handler, [FakeMsg(crop, 0, timestamp_ms=int((NOW - 2.0) * 1000)), FakeMsg(crop, 1)])
    assert registry.get_sample_value("rfr_embed_queue_wait_seconds_count") == 2
    total = registry.get_sample_value("rfr_embed_queue_wait_seconds_sum")
    assert total is not None and total == pytest.approx(2.0 + 10.0, abs=1e-3)
