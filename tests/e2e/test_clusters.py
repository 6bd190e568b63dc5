"""Repeat unknown offenders through the whole stack (`rfr up`): real broker, milvus-lite, BlazeFace, FaceNet, the
match service, the faust cluster service and the review service.

Four stills of one person in no gallery, sent by three stores of two retailers, with one-off strangers between
them, give exactly one cluster event naming those four stills; no stranger is in any cluster; the review service
records the cluster."""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from support.stack import rfr_cli

from rfr.core import kafka
from rfr.core.cluster_messages import ClusterEvent
from rfr.core.image_files import identity_folders
from rfr.core.imaging import encode_jpeg
from rfr.core.kafka import DeliveryTracker, Output, make_producer
from rfr.core.schemas import decode, submission_id
from rfr.core.settings import Settings, review_database_url
from rfr.core.topics import Topics
from rfr.gallery.extraction import PipelineExtractor, embed_crops, load_embedder
from rfr.tools.degrade import place_in_scene
from rfr.tools.results import ResultCollector
from services.ingest.handler import submission_headers

FACE_PX = 96
SCENE = (1280, 720)
RUN = uuid.uuid4().hex[:8]
STORES = [(f"e2e-cl-a{RUN}", "store-1"), (f"e2e-cl-a{RUN}", "store-2"), (f"e2e-cl-b{RUN}", "store-9"),
          (f"e2e-cl-a{RUN}", "store-1")]
"""Where the person's four stills come from: three stores of two retailers (the first store twice)."""
MARGIN = 0.05
"""Cosine margin around the link threshold in choosing the cast (:func:`_cast`)."""


def _still(photo: Path, rng: np.random.Generator) -> bytes:
    """The photo's centre (where LFW puts the person; a second person at the edge is greyed out) in a 720p scene."""
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    assert bgr is not None, photo
    rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    h, w = rgb.shape[:2]
    centre = np.full_like(rgb, int(rgb.mean()))
    y0, y1, x0, x1 = int(0.18 * h), int(0.95 * h), int(0.24 * w), int(0.76 * w)
    centre[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    scene, _ = place_in_scene(centre, FACE_PX, SCENE, "clean", rng)
    return encode_jpeg(scene, 92)


def _send(settings: Settings, items: list[tuple[str, str, bytes, datetime]]) -> list[str]:
    """Submit (retailer, store, still, captured_at) items one by one, in order; their submission ids."""
    topic = Topics.from_settings(settings.kafka).submissions
    tracker = DeliveryTracker(make_producer(settings.kafka))
    for retailer, store, data, at in items:
        headers = submission_headers(retailer, store, "cam-1", at.isoformat())
        tracker.produce([Output(topic, data, key=f"{retailer}/{store}/cam-1",
                                headers={k: v.decode() for k, v in headers})])
        tracker.flush()
    return [submission_id(retailer, data) for retailer, _, data, _ in items]


@dataclass(frozen=True)
class Cast:
    """The stills this test submits: four of the repeat person, four of strangers (JPEG bytes)."""

    person: list[bytes]
    strangers: list[bytes]


def _cast(settings: Settings, lfw_dir: Path) -> Cast:
    """A person whose four stills the rule can group, and strangers it cannot confuse with anyone.

    This test checks the plumbing (one event naming exactly the person's four stills, strangers in none), not how
    often the embedder links two photos of one person (benchmarks/bench_cluster.py measures that). So the stills are
    chosen with the pipeline's own detector and embedder, on the very bytes submitted: each still has exactly one
    usable face; the person's four are pairwise at least ``link_threshold`` + :data:`MARGIN` similar; each
    stranger is under ``link_threshold`` - :data:`MARGIN` against every other still. People other e2e tests
    enrol come first in the sorted list, so the person is drawn from further on."""
    extractor, embedder = PipelineExtractor(settings), load_embedder(settings)
    link = settings.cluster.link_threshold

    def vector(data: bytes) -> np.ndarray | None:
        faces = extractor.extract(data).faces
        return embed_crops(embedder, [faces[0].crop])[0] if len(faces) == 1 else None

    people = identity_folders(lfw_dir)
    try:
        person: list[tuple[bytes, np.ndarray]] = []
        for name in sorted(n for n, photos in people.items() if len(photos) >= 6)[20:]:
            rng = np.random.default_rng(len(name))
            made = [(data, vector(data)) for data in (_still(p, rng) for p in sorted(people[name])[:4])]
            found = [(d, v) for d, v in made if v is not None]
            if len(found) == 4:
                vectors = np.stack([v for _, v in found])
                if float(np.min(vectors @ vectors.T)) >= link + MARGIN:
                    person = found
                    break
        assert person, "no person with four groupable stills"
        strangers: list[tuple[bytes, np.ndarray]] = []
        for name in sorted(n for n, photos in people.items() if len(photos) == 1)[100:]:
            data = _still(people[name][0], np.random.default_rng(len(strangers)))
            v = vector(data)
            others = np.stack([u for _, u in person + strangers])
            if v is not None and float(np.max(others @ v)) < link - MARGIN:
                strangers.append((data, v))
            if len(strangers) == 4:
                break
    finally:
        extractor.close()
    return Cast([d for d, _ in person], [d for d, _ in strangers])


def _cluster_events(settings: Settings, sids: set[str], timeout_s: float) -> dict[str, ClusterEvent]:
    """The latest revision of every cluster event that names any of ``sids``, read from the clusters topic from
    its start, once one of them names four of ``sids`` (or the time is up, then a few seconds more)."""
    consumer = kafka.make_consumer(settings.kafka, f"e2e-clusters-{time.time_ns()}")
    consumer.subscribe([Topics.from_settings(settings.kafka).clusters])
    latest: dict[str, ClusterEvent] = {}
    deadline = time.monotonic() + timeout_s
    settle: float | None = None
    try:
        while time.monotonic() < (settle or deadline):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = decode(ClusterEvent, msg.value())
            if not sids & {s.submission_id for s in event.sightings}:
                continue
            if event.cluster_id not in latest or latest[event.cluster_id].revision < event.revision:
                latest[event.cluster_id] = event
            if settle is None and any(len(sids & {s.submission_id for s in e.sightings}) >= 4
                                      for e in latest.values()):
                settle = time.monotonic() + 5.0  # a later revision or a second cluster would be right behind
    finally:
        consumer.close()
    return latest


def test_four_stills_of_one_unknown_person_at_three_stores_give_one_cluster(live_stack: Settings,
                                                                           lfw_dir: Path) -> None:
    cast = _cast(live_stack, lfw_dir)
    start = datetime.now(UTC) - timedelta(days=3)
    mine = [(r, s, data, start + timedelta(hours=5 * i))
            for i, ((r, s), data) in enumerate(zip(STORES, cast.person, strict=True))]
    others = [(f"e2e-cl-a{RUN}", f"store-{5 + i}", data, start + timedelta(hours=2 + 5 * i))
              for i, data in enumerate(cast.strangers)]
    interleaved = [item for pair in zip(mine, others, strict=True) for item in pair]
    sids = _send(live_stack, interleaved)
    mine_sids, other_sids = set(sids[0::2]), set(sids[1::2])

    collector = ResultCollector(live_stack.kafka, f"e2e-clusters-results-{time.time_ns()}")
    complete = collector.wait_for(sids, 420)
    collector.close()
    assert complete, {s: collector.results.get(s) for s in sids}
    statuses = {s: collector.results[s].final_status for s in sids}
    others_status = {s: v for s, v in statuses.items() if v != "no_candidate"}
    assert not others_status, (others_status, sids)  # every face found, nobody here is in any gallery

    events = _cluster_events(live_stack, mine_sids | other_sids, 180)
    assert len(events) == 1, {c: [s.submission_id for s in e.sightings] for c, e in events.items()}
    [event] = events.values()
    named = {s.submission_id for s in event.sightings}
    assert named == mine_sids, (named, mine_sids)
    assert not named & other_sids
    assert len(event.stores) == 3 and len(event.retailers) == 2
    assert event.rule.min_sightings == 3 and event.rule.min_stores == 2
    assert event.vector.shape == (512,) and abs(float(np.linalg.norm(event.vector)) - 1.0) < 1e-3
    for sighting in event.sightings:
        assert sighting.similarity >= event.rule.link_threshold - 0.2  # close to the fused template

    # The review service keeps the cluster for reviewers, with its sightings.
    url = review_database_url(live_stack)
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
            rows = list(db.execute("SELECT cluster_id FROM clusters WHERE cluster_id = ?", (event.cluster_id,)))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows, "the review service never recorded the cluster"
    status = rfr_cli(live_stack, "status")
    assert "cluster" in status.stdout, status.stdout
