"""`python -m services.embed` against the real broker with the real model: embeddings out, poison (and a FaceEvent of
an old schema version) to dead letters, the ``rfr-event-id`` header on every record produced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from rfr.core import kafka
from rfr.core.imaging import encode_jpeg
from rfr.core.schemas import (
    Box,
    DeadLetter,
    EmbeddingEvent,
    FaceEvent,
    FaceQuality,
    OutcomeEvent,
    Point,
    SubmissionMeta,
    decode,
)
from rfr.core.settings import EmbedSettings, KafkaSettings
from rfr.core.topics import Topics
from rfr.embedding.embedder import CROP_SIZE, load_embedder
from rfr.face.crops import decode_crop
from rfr.tools import procs

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBMISSION = "sub_embedintegration"


def face_event(index: int, crop_jpeg: bytes) -> FaceEvent:
    now = datetime.now(UTC)
    meta = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=now)
    return FaceEvent(
        event_id=f"{SUBMISSION}:f{index}", face_id=f"{SUBMISSION}:f{index}", submission_id=SUBMISSION,
        face_index=index, faces_in_frame=6, meta=meta, received_at=now,
        box=Box(x=0, y=0, width=80, height=80), keypoints=[Point(x=1, y=1)],
        quality=FaceQuality(face_px=80, score=0.9, sharpness=50, eye_distance_px=30, pose_ok=True),
        crop_jpeg=crop_jpeg,
    )


def crop_jpeg(seed: int, size: int = 160) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    return encode_jpeg(np.kron(small, np.ones((8, 8, 1), dtype=np.uint8)))


def service_env(ks: KafkaSettings, model_dir: Path, metrics_port: int) -> dict[str, str]:
    return dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=ks.bootstrap_servers,
                RFR_KAFKA__TOPIC_NAMESPACE=ks.topic_namespace, RFR_KAFKA__GROUP_NAMESPACE=ks.group_namespace,
                RFR_MODEL_DIR=str(model_dir), RFR_METRICS__EMBED_PORT=str(metrics_port), RFR_EMBED__DEVICE="cpu")


Record = tuple[str, bytes, str, dict[str, str]]  # topic, value, key, headers


def collect(ks: KafkaSettings, topics: list[str], want: int, timeout_s: float) -> list[Record]:
    consumer = kafka.make_consumer(ks, "embed-test-reader")
    consumer.subscribe(topics)
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            key = msg.key()
            got.append((msg.topic() or "", msg.value() or b"", key.decode() if isinstance(key, bytes) else "",
                        kafka.header_dict(msg)))
    finally:
        consumer.close()
    return got


def version_1(event: FaceEvent) -> bytes:
    """``event`` as the v1 schema wrote it: FaceQuality's ``sharpness`` was called ``blur``."""
    raw = json.loads(event.to_bytes())
    quality = {k: v for k, v in raw["quality"].items() if k != "sharpness"}
    return json.dumps(raw | {"schema_version": 1, "quality": quality | {"schema_version": 1, "blur": 50.0}}).encode()


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
        version_1(face_event(6, crop_jpeg(6))),  # an old schema version: refused, not guessed at
    ]
    tracker = kafka.DeliveryTracker(kafka.make_producer(kafka_settings))
    tracker.produce(kafka.Output(topics.faces, raw, key=SUBMISSION) for raw in inputs)
    tracker.flush()

    port = procs.free_port()
    log = (tmp_path / "embed.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.embed"], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=service_env(kafka_settings, model_dir, port))
    try:
        got = collect(kafka_settings, [topics.embeddings, topics.deadletter, topics.outcomes], want=10, timeout_s=120)
        metrics_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        log.close()
    output = (tmp_path / "embed.log").read_text(errors="replace")
    assert rc == 0, output

    embeddings = [decode(EmbeddingEvent, raw) for topic, raw, _, _ in got if topic == topics.embeddings]
    letters = [decode(DeadLetter, raw) for topic, raw, _, _ in got if topic == topics.deadletter]
    failed = [decode(OutcomeEvent, raw) for topic, raw, _, _ in got if topic == topics.outcomes]
    assert sorted(e.face_id for e in embeddings) == sorted(e.face_id for e in good.values()), output
    assert all(key == SUBMISSION for topic, _, key, _ in got if topic == topics.embeddings)
    assert sorted(d.offset for d in letters) == [1, 3, 4, 6]
    assert {d.offset: d.payload for d in letters} == {1: inputs[1], 3: inputs[3], 4: inputs[4], 6: inputs[6]}
    assert all(d.service == "embed" and d.source_topic == topics.faces for d in letters)
    old = next(d for d in letters if d.offset == 6)
    assert old.reason == "unsupported_schema_version: got 1, accepts 3, 4 (FaceEvent)"
    assert sorted(o.face_id or "" for o in failed) == [f"{SUBMISSION}:f{i}" for i in (1, 3, 6)]  # JSON ones
    for topic, raw, _, headers in got:  # consumers drop duplicates on this header: every record has it
        assert headers.get(kafka.EVENT_ID_HEADER) == json.loads(raw)["event_id"], topic

    reference = load_embedder(EmbedSettings(device="cpu"), model_dir)
    crops = np.stack([decode_crop(good[int(e.face_id.rsplit("f", 1)[1])].crop_jpeg, CROP_SIZE) for e in embeddings])
    expected = reference.embed(crops)
    for event, vector in zip(embeddings, expected, strict=True):
        assert event.model_id == "facenet-casia-webface" == reference.model_id
        assert event.weights_sha256 == reference.weights_sha256
        assert event.vector.dtype == np.float32 and event.vector.shape == (512,)
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
