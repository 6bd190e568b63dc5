"""`python -m services.embed` against the real broker with the real model: embeddings out, poison to dead letters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from rfr.core import kafka
from rfr.core.imaging import encode_jpeg
from rfr.core.schemas import Box, DeadLetter, EmbeddingEvent, FaceEvent, FaceQuality, Point, SubmissionMeta, decode
from rfr.core.settings import EmbedSettings, KafkaSettings
from rfr.core.topics import Topics
from rfr.embedding.embedder import CROP_SIZE, load_embedder
from rfr.face.crops import decode_crop
from rfr.tools import procs

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBMISSION = "sub_embedintegration"


def face_event(index: int, crop_jpeg: bytes) -> FaceEvent:
    now = datetime.now(UTC)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=now)
    return FaceEvent(
        event_id=f"{SUBMISSION}:f{index}", face_id=f"{SUBMISSION}:f{index}", submission_id=SUBMISSION,
        face_index=index, faces_in_frame=6, meta=meta, received_at=now,
        box=Box(x=0, y=0, width=80, height=80), keypoints=[Point(x=1, y=1)],
        quality=FaceQuality(face_px=80, score=0.9, blur=50, eye_distance_px=30, pose_ok=True), crop_jpeg=crop_jpeg,
    )


def crop_jpeg(seed: int, size: int = 160) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    return encode_jpeg(np.kron(small, np.ones((8, 8, 1), dtype=np.uint8)))


def service_env(ks: KafkaSettings, model_dir: Path, metrics_port: int) -> dict[str, str]:
    return dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=ks.bootstrap_servers,
                RFR_KAFKA__TOPIC_NAMESPACE=ks.topic_namespace, RFR_KAFKA__GROUP_NAMESPACE=ks.group_namespace,
                RFR_MODEL_DIR=str(model_dir), RFR_METRICS__EMBED_PORT=str(metrics_port), RFR_EMBED__DEVICE="cpu")


def collect(ks: KafkaSettings, topics: list[str], want: int, timeout_s: float) -> list[tuple[str, bytes, str]]:
    consumer = kafka.make_consumer(ks, "embed-test-reader")
    consumer.subscribe(topics)
    got: list[tuple[str, bytes, str]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            key = msg.key()
            got.append((msg.topic() or "", msg.value() or b"", key.decode() if isinstance(key, bytes) else ""))
    finally:
        consumer.close()
    return got


def test_service_embeds_and_dead_letters_poison(kafka_settings: KafkaSettings, model_dir: Path,
                                                tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    good = {i: face_event(i, crop_jpeg(i)) for i in (0, 2, 5)}
    inputs: list[bytes] = [
        good[0].to_bytes(),
        face_event(1, b"\xff\xd8\xff\xe0 not really a jpeg").to_bytes(),  # undecodable crop
        good[2].to_bytes(),
        face_event(3, crop_jpeg(3, size=112)).to_bytes(),  # wrong shape
        b'{"event_id": "truncated',  # invalid JSON
        good[5].to_bytes(),  # after the poison, on the same partition: it must still flow
    ]
    tracker = kafka.DeliveryTracker(kafka.make_producer(kafka_settings))
    tracker.produce(kafka.Output(topics.faces, raw, key=SUBMISSION) for raw in inputs)
    tracker.flush()

    port = procs.free_port()
    log = (tmp_path / "embed.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.embed"], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=service_env(kafka_settings, model_dir, port))
    try:
        got = collect(kafka_settings, [topics.embeddings, topics.deadletter], want=6, timeout_s=120)
        metrics_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        log.close()
    output = (tmp_path / "embed.log").read_text(errors="replace")
    assert rc == 0, output

    embeddings = [decode(EmbeddingEvent, raw) for topic, raw, _ in got if topic == topics.embeddings]
    letters = [decode(DeadLetter, raw) for topic, raw, _ in got if topic == topics.deadletter]
    assert sorted(e.face_id for e in embeddings) == sorted(e.face_id for e in good.values()), output
    assert all(key == SUBMISSION for topic, _, key in got if topic == topics.embeddings)
    assert sorted(d.offset for d in letters) == [1, 3, 4]
    assert {d.offset: d.payload for d in letters} == {1: inputs[1], 3: inputs[3], 4: inputs[4]}
    assert all(d.service == "embed" and d.source_topic == topics.faces for d in letters)

    reference = load_embedder(EmbedSettings(device="cpu"), model_dir)
    crops = np.stack([decode_crop(good[int(e.face_id.rsplit("f", 1)[1])].crop_jpeg, CROP_SIZE) for e in embeddings])
    expected = reference.embed(crops)
    for event, vector in zip(embeddings, expected, strict=True):
        assert event.model_id == "facenet-casia-webface" == reference.model_id
        assert event.weights_sha256 == reference.weights_sha256
        assert float(np.dot(event.vector, vector)) > 0.999  # same model, same preprocessing as in process
    assert "rfr_embed_faces_total 3.0" in metrics_text
    assert 'model_id="facenet-casia-webface"' in metrics_text and "rfr_embed_model_info" in metrics_text
    assert 'rfr_embed_deadletters_total{reason="bad_crop"} 1.0' in metrics_text


def test_service_refuses_to_start_without_weights(tmp_path: Path) -> None:
    env = dict(os.environ, RFR_MODEL_DIR=str(tmp_path / "empty-cache"), RFR_EMBED__DEVICE="cpu",
               RFR_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9")  # never reached: the model check comes first
    done = subprocess.run([sys.executable, "-m", "services.embed"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "rfr models fetch" in done.stderr and "casia-webface" in done.stderr
