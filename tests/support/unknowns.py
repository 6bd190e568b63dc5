"""Candidate lists of unknown faces for the cluster tests: people as seeded random directions, sightings as noisy
copies of them (cosine ~0.95 to their person at the default noise), strangers as fresh directions (~0 to all)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rfr.cluster.rule import Vector, unit
from rfr.cluster.store import ClusterStore
from rfr.core.db import sqlite_url
from rfr.core.kafka import Output, produce_and_wait
from rfr.core.schemas import CandidateList, FaceQuality, SubmissionMeta, template_bytes
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.tools import procs
from rfr.tools.status import scrape
from support.events import search_fields

DIM = 64
MODEL = "test-model"
QUALITY = FaceQuality(face_px=60, score=0.9, sharpness=300, eye_distance_px=20, pose_ok=True)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def person(seed: int) -> npt.NDArray[np.float32]:
    """A unit direction standing for one person."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sighting(base: npt.NDArray[np.float32], seed: int, noise: float = 0.3) -> npt.NDArray[np.float32]:
    """A noisy copy of ``base`` (seeded): cosine ~0.95 at noise 0.3 in 64 dimensions."""
    v = base + noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def unknown(face_id: str, vector: npt.ArrayLike, store: str = "s1", retailer: str = "r1", *,
            searched_at: datetime | None = None, model_id: str = MODEL, **fields: Any) -> CandidateList:
    """A ``no_candidate`` list of one face (``fields`` override any CandidateList field, e.g. outcome, trigger)."""
    at = searched_at or T0
    meta = SubmissionMeta(retailer_id=retailer, store_id=store, camera_id="cam1", captured_at=at - timedelta(hours=1))
    values: dict[str, Any] = {
        "event_id": face_id, "face_id": face_id, "submission_id": f"sub_{face_id}", "meta": meta, "received_at": at,
        "searched_at": at, "outcome": "no_candidate", "candidates": [], "threshold": 0.6, "top_k": 5,
        "watch_lists": ["custody"], "model_id": model_id, "quality": QUALITY,
        **search_fields(at, template_bytes(np.asarray(vector, dtype=np.float32)))}
    values.update(fields)
    return CandidateList(**values)


@dataclass
class FakeIndex:
    """Exact cosine search over what was upserted, per model; ``fail_upsert`` raises once from the next upsert."""

    rows: dict[str, dict[str, tuple[Vector, datetime]]] = field(default_factory=dict)
    fail_upsert: Exception | None = None
    searches: int = 0

    def upsert(self, model_id: str, rows: Sequence[tuple[str, Vector, datetime]]) -> None:
        if self.fail_upsert is not None:
            exc, self.fail_upsert = self.fail_upsert, None
            raise exc
        for face, vec, at in rows:
            self.rows.setdefault(model_id, {})[face] = (unit(vec), at)

    def search(self, model_id: str, vector: Vector, limit: int) -> list[tuple[str, float]]:
        self.searches += 1
        held = self.rows.get(model_id, {})
        scored = sorted(((float(v @ unit(vector)), f) for f, (v, _) in held.items()), reverse=True)
        return [(f, s) for s, f in scored[:limit]]

    def present(self, model_id: str, face_ids: Sequence[str]) -> set[str]:
        return set(face_ids) & set(self.rows.get(model_id, {}))

    def delete(self, model_id: str, face_ids: Sequence[str]) -> None:
        for f in face_ids:
            self.rows.get(model_id, {}).pop(f, None)

    def delete_before(self, model_id: str, before: datetime) -> None:
        held = self.rows.get(model_id, {})
        for f in [f for f, (_, at) in held.items() if at < before]:
            del held[f]


# --- the cluster service as a process (tests/integration/test_cluster_*.py) ---------------------------------------
@dataclass
class ClusterWorker:
    """``python -m services.cluster`` on a test broker, milvus-lite and a SQLite store in ``folder``."""

    kafka: KafkaSettings
    milvus_uri: str
    folder: Path
    metrics_port: int = field(default_factory=procs.free_port)
    web_port: int = field(default_factory=procs.free_port)
    prefix: str = field(default_factory=lambda: f"u{uuid.uuid4().hex[:10]}")
    extra: dict[str, str] = field(default_factory=dict)  # more settings (RFR_...) for this worker
    proc: subprocess.Popen[bytes] | None = None

    @property
    def database_url(self) -> str:
        return sqlite_url(self.folder / "cluster.db")

    @property
    def log(self) -> Path:
        return self.folder / "cluster.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RFR_")}
        return env | {
            "RFR_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "RFR_KAFKA__TOPIC_NAMESPACE": self.kafka.topic_namespace,
            "RFR_KAFKA__GROUP_NAMESPACE": self.kafka.group_namespace,
            "RFR_KAFKA__SESSION_TIMEOUT_MS": "6000", "RFR_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "RFR_MILVUS__URI": self.milvus_uri, "RFR_CLUSTER__COLLECTION_PREFIX": self.prefix,
            "RFR_CLUSTER__DATABASE_URL": self.database_url, "RFR_CLUSTER__WEB_PORT": str(self.web_port),
            "RFR_METRICS__CLUSTER_PORT": str(self.metrics_port), "RFR_STACK__STATE_DIR": str(self.folder),
            "RFR_STREAM__RETRY_BACKOFF_S": "0.2", "PYTHONUNBUFFERED": "1"} | self.extra

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the worker and wait until its metrics answer (it then joins the group within seconds)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cluster"], env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not procs.port_open("127.0.0.1", self.metrics_port):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the cluster service did not start"
            time.sleep(0.2)

    @contextmanager
    def running(self) -> Iterator[ClusterWorker]:
        """Started (:meth:`start`), and killed on the way out if it is still running (a failed test)."""
        self.start()
        try:
            yield self
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.kill()

    @contextmanager
    def store(self) -> Iterator[ClusterStore]:
        """Its cluster store, open for the block."""
        store = ClusterStore.open(self.database_url)
        try:
            yield store
        finally:
            store.close()

    def metric(self, name: str) -> float:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics").get(name, 0.0)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status (killed after ``timeout_s``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return int(self.proc.returncode)


def publish(kafka: KafkaSettings, lists: list[CandidateList | bytes]) -> None:
    """Produce candidate lists (or raw bytes) to the test's matches topic, keyed by face id, and wait for acks."""
    topic = Topics.from_settings(kafka).matches
    outputs = [Output(topic, cl, key=b"raw") if isinstance(cl, bytes)
               else Output(topic, cl.to_bytes(), key=cl.face_id, event_id=cl.event_id) for cl in lists]
    produce_and_wait(kafka, outputs, broker_wait_s=20, delivery_timeout_s=20)
