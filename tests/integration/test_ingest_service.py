"""`python -m services.ingest` as `rfr up` starts it: Kafka and HTTP channels, status consumer, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
from support.broker import on, read_until
from support.stills import jpeg

from rfr.core.kafka import make_producer
from rfr.core.schemas import FrameEvent, OutcomeEvent, OutcomeStatus, decode, submission_id
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.tools import procs
from services.ingest.auth import hash_key
from services.ingest.handler import submission_headers

KEY = "rfr_service-test-key-0123456789abcdef"


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_service_runs_every_channel_and_stops_cleanly(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    http_port, metrics_port = procs.free_port(), procs.free_port()
    env = dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
               RFR_KAFKA__TOPIC_NAMESPACE=kafka_settings.topic_namespace,
               RFR_KAFKA__GROUP_NAMESPACE=kafka_settings.group_namespace,
               RFR_INGEST__HTTP_PORT=str(http_port), RFR_METRICS__INGEST_PORT=str(metrics_port),
               RFR_INGEST__API_KEYS=f"shop-s:{hash_key(KEY)}", RFR_STACK__STATE_DIR=str(tmp_path / "state"),
               RFR_BLOB_DIR=str(tmp_path / "blobs"))
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=log, stderr=subprocess.STDOUT)
    topics = Topics.from_settings(kafka_settings)
    try:
        wait_for(lambda: procs.port_open("127.0.0.1", http_port), 60, "the HTTP port")
        base = f"http://127.0.0.1:{http_port}"
        via_http = jpeg(64, 64, seed=70)
        resp = httpx.post(f"{base}/v1/submissions", headers={"X-API-Key": KEY}, data={
            "store_id": "st", "camera_id": "cam", "captured_at": "2024-05-01T00:00:00Z"},
            files={"images": ("a.jpg", via_http, "image/jpeg")})
        assert resp.status_code == 202, resp.text
        sid_http = resp.json()["submissions"][0]["submission_id"]
        via_kafka = jpeg(64, 64, seed=71)
        producer = make_producer(kafka_settings)
        producer.produce(topics.submissions, via_kafka, b"shop-s/st/cam",
                         headers=submission_headers("shop-s", "st", "cam", "2024-05-01T00:00:01Z"))
        # Detect's verdict on the HTTP still arrives on the outcomes topic; the status consumer records it.
        producer.produce(topics.outcomes, OutcomeEvent.make(sid_http, "shop-s", OutcomeStatus.NO_FACE,
                                                            faces=0).to_bytes(), sid_http.encode())
        assert producer.flush(30) == 0
        producer.close()
        frames = read_until(kafka_settings, [topics.frames], lambda rs: len(rs) >= 2)
        assert sorted(decode(FrameEvent, r.value).submission_id for r in on(topics.frames, frames)) == sorted(
            [sid_http, submission_id("shop-s", via_kafka)])

        def status() -> str:
            got = httpx.get(f"{base}/v1/submissions/{sid_http}", headers={"X-API-Key": KEY})
            return str(got.json().get("status"))

        wait_for(lambda: status() == "no_face", 60, "the status consumer")
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'rfr_ingest_submissions_total{channel="http",outcome="accepted"} 1.0' in page
        assert 'rfr_ingest_submissions_total{channel="kafka",outcome="accepted"} 1.0' in page
        assert "rfr_ingest_decode_seconds_count 2.0" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "ingest.log").read_text()[-3000:]
    assert (tmp_path / "state" / "ingest.db").exists()
