"""Helpers of the review service's end-to-end tests against the live stack (tests/e2e/conftest.py ``live_stack``):
users made with `rfr review user-add`, LFW people enrolled with `rfr enrol`, CCTV-like stills submitted over Kafka
under a retailer of the test's own (so its cases can be told apart in a queue shared with other modules), the cases
they become, and the decision events a case system reads from rfr.decisions.v1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from rfr.core import kafka
from rfr.core.review_messages import DecisionEvent
from rfr.core.schemas import decode, submission_id
from rfr.core.settings import Settings
from rfr.core.topics import Topics
from rfr.tools import stack
from rfr.tools.demo import cctv_still
from rfr.tools.results import ResultCollector, SubmissionResult
from support.stack import rfr_cli

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Still:
    """A CCTV-like still of ``truth`` submitted by ``retailer`` (its submission id follows from both)."""

    truth: str
    jpeg: bytes
    retailer: str

    @property
    def submission_id(self) -> str:
        return submission_id(self.retailer, self.jpeg)


def review_base(settings: Settings) -> str:
    return f"http://{settings.review.http_host}:{settings.review.http_port}"


def add_users(settings: Settings, users: dict[str, str], password: str = PASSWORD) -> None:
    """Create ``users`` (name -> role) with `rfr review user-add --password-stdin`, as an administrator would."""
    env = dict(os.environ) | stack.settings_env(settings)
    for name, role in users.items():
        made = subprocess.run([sys.executable, "-m", "rfr", "review", "user-add", name, "--role", role,
                               "--password-stdin"], input=password + "\n", env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert made.returncode == 0, made.stderr


def people(lfw_dir: Path, start: int, n: int) -> list[list[Path]]:
    """``n`` LFW people with at least three photos, from index ``start`` of them sorted by name (tests take
    ranges of their own, so their gallery subjects and cases do not collide)."""
    folders = sorted(p for p in lfw_dir.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3)
    return [sorted(p.glob("*.jpg")) for p in folders[start:start + n]]


def enrol(settings: Settings, root: Path, persons: list[list[Path]], reason: str) -> None:
    """Enrol each person's first photo (subject id = their folder name) with `rfr enrol`."""
    for photos in persons:
        (root / photos[0].parent.name).mkdir(parents=True)
        (root / photos[0].parent.name / photos[0].name).symlink_to(photos[0])
    done = rfr_cli(settings, "enrol", str(root), "--no-progress", "--allow-partial", "--reason", reason)
    assert done.returncode == 0, done.stderr


def still(photo: Path, seed: int, retailer: str, face_px: int = 96) -> Still:
    return Still(photo.parent.name, cctv_still(photo, face_px, "clean", np.random.default_rng(seed)), retailer)


def submit(settings: Settings, stills: list[Still], store: str = "store-001", camera: str = "cam-01",
           timeout_s: float = 420) -> dict[str, SubmissionResult]:
    """Submit ``stills`` over Kafka (one after another, so their cases are made in this order) and wait for every
    final outcome; the results by submission id."""
    from rfr.core.kafka import DeliveryTracker, Output, make_producer
    from services.ingest.handler import submission_headers

    collector = ResultCollector(settings.kafka, f"e2e-review-ui-{time.time_ns()}")
    topic = Topics.from_settings(settings.kafka).submissions
    tracker = DeliveryTracker(make_producer(settings.kafka))
    for s in stills:
        headers = dict((k, v.decode()) for k, v in submission_headers(
            s.retailer, store, camera, datetime.now(UTC).isoformat()))
        tracker.produce([Output(topic, s.jpeg, key=f"{s.retailer}/{store}/{camera}", headers=headers)])
        tracker.flush()
    try:
        assert collector.wait_for([s.submission_id for s in stills], timeout_s), "no final outcome for every still"
    finally:
        collector.close()
    return dict(collector.results)


def api_client(settings: Settings, name: str, password: str = PASSWORD) -> httpx.Client:
    """An API client signed in as ``name`` (Bearer session token)."""
    base = review_base(settings)
    login = httpx.post(f"{base}/v1/login", json={"name": name, "password": password}, timeout=30)
    assert login.status_code == 200, login.text
    return httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {login.json()['token']}"})


def case_of(client: httpx.Client, sub: str, trigger: str = "submission", timeout_s: float = 120) -> int:
    """The case made from the submission's candidate list (waits for the review service to consume it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = client.get("/v1/queue", params={"limit": 500})
        assert queue.status_code == 200, queue.text
        body = queue.json()
        for item in body["items"] if isinstance(body, dict) else body:
            if item["face_id"].startswith(sub + ":") and item["trigger"] == trigger:
                return int(item["case_id"])
        time.sleep(0.5)
    raise AssertionError(f"no {trigger} case for {sub} after {timeout_s}s")


def decision_events(settings: Settings, want: set[int], timeout_s: float = 60) -> dict[int, list[DecisionEvent]]:
    """Decision events of the cases ``want``, read as a case system would, from the start of the topic (a little
    longer than needed, so that a duplicate would show)."""
    consumer = kafka.make_consumer(settings.kafka, f"e2e-decisions-{uuid.uuid4().hex}")
    consumer.subscribe([Topics.from_settings(settings.kafka).decisions])
    got: dict[int, list[DecisionEvent]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want <= set(got):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                event = decode(DecisionEvent, msg.value())
                got.setdefault(event.case_id, []).append(event)
        time.sleep(2)
        while (msg := consumer.poll(0.5)) is not None:
            if not msg.error():
                event = decode(DecisionEvent, msg.value())
                got.setdefault(event.case_id, []).append(event)
    finally:
        consumer.close()
    return {k: v for k, v in got.items() if k in want}
