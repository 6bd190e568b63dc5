"""Multi-still incidents and investigative searches through the whole stack (`rfr up`): real broker, milvus-lite,
BlazeFace and FaceNet, the match service's pending-incident store and worker.

Three stills of one LFW identity submitted under one incident give exactly one candidate list, naming the three
stills; stills the quality gate stops, submitted with the investigative flag, are searched anyway and their lists
are marked low-quality (never dropped)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.stack import rfr_cli

from rfr.core.image_files import identity_folders
from rfr.core.imaging import encode_jpeg
from rfr.core.kafka import DeliveryTracker, Output, make_producer
from rfr.core.schemas import CandidateList, StillStatus, submission_id
from rfr.core.settings import DetectSettings, Settings, incident_database_url, review_database_url
from rfr.core.topics import Topics
from rfr.face.quality import gate
from rfr.tools import procs, stack
from rfr.tools.degrade import place_in_scene
from rfr.tools.results import ResultCollector
from services.ingest.handler import submission_headers

RETAILER, STORE, CAMERA = "e2e-incidents", "store-1", "cam-1"
FACE_PX = 80
SCENE = (1280, 720)


def _rgb(photo: Path) -> np.ndarray:
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    assert bgr is not None, photo
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _one_face(rgb: np.ndarray) -> np.ndarray:
    """The photo with everything but its centre (where LFW puts the person: rfr.tools.degrade.LFW_FACE_CENTER)
    greyed out: LFW photos often show a second person at the edge, and a still with two usable faces is,
    by the incident rule, searched face by face instead of fused."""
    h, w = rgb.shape[:2]
    out = np.full_like(rgb, int(rgb.mean()))
    y0, y1, x0, x1 = int(0.18 * h), int(0.95 * h), int(0.24 * w), int(0.76 * w)
    out[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    return out


def _still(photo: Path, face_px: int, rng: np.random.Generator, blur_sigma: float = 0.0) -> bytes:
    scene, _ = place_in_scene(_one_face(_rgb(photo)), face_px, SCENE, "clean", rng)
    if blur_sigma:
        scene = cv2.GaussianBlur(scene, (0, 0), blur_sigma)
    return encode_jpeg(scene, 90)


def _send(settings: Settings, stills: list[bytes], **headers: object) -> list[str]:
    topic = Topics.from_settings(settings.kafka).submissions
    now = datetime.now(UTC).isoformat()
    pairs = submission_headers(RETAILER, STORE, CAMERA, now, **headers)  # type: ignore[arg-type]
    tracker = DeliveryTracker(make_producer(settings.kafka))
    tracker.produce(Output(topic, data, key=f"{RETAILER}/{STORE}/{CAMERA}",
                           headers={k: v.decode() for k, v in pairs}) for data in stills)
    tracker.flush()
    return [submission_id(RETAILER, data) for data in stills]


def _collect(settings: Settings, sids: list[str], name: str) -> dict[str, CandidateList]:
    """Every candidate list of ``sids``, by event id, once each of them is final."""
    collector = ResultCollector(settings.kafka, f"e2e-{name}-{time.time_ns()}")
    complete = collector.wait_for(sids, 420)
    collector.close()
    assert complete, {s: collector.results.get(s) for s in sids}
    return {cl.event_id: cl for s in sids for cl in collector.results[s].lists.values()}


def _sqlite_rows(url: str, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
        return list(db.execute(query))


def _review_records(settings: Settings, event_id: str, timeout_s: float = 120) -> tuple[int, int]:
    """(searches, cases) the review service recorded for one list, once it has caught up."""
    deadline = time.monotonic() + timeout_s
    while True:
        url = review_database_url(settings)
        found = (len(_sqlite_rows(url, f"SELECT 1 FROM searches WHERE event_id = '{event_id}'")),
                 len(_sqlite_rows(url, f"SELECT 1 FROM cases WHERE search_event_id = '{event_id}'")))
        if found[0] or time.monotonic() > deadline:
            time.sleep(2.0)  # a duplicate would be recorded right behind the first
            return (len(_sqlite_rows(url, f"SELECT 1 FROM searches WHERE event_id = '{event_id}'")),
                    len(_sqlite_rows(url, f"SELECT 1 FROM cases WHERE search_event_id = '{event_id}'")))
        time.sleep(0.5)


def _enrol(settings: Settings, photo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gallery" / photo.parent.name
    folder.mkdir(parents=True)
    (folder / photo.name).write_bytes(photo.read_bytes())
    enrolled = rfr_cli(settings, "enrol", str(tmp_path / "gallery"), "--watch-list", "custody", "--no-progress")
    assert enrolled.returncode == 0, enrolled.stderr
    assert json.loads(enrolled.stdout[enrolled.stdout.index("{"):])["enrolled"] == 1


def _identity(lfw_dir: Path) -> list[Path]:
    """A person with at least four photos (one enrolled, three stills), the same one every run."""
    people = identity_folders(lfw_dir)
    name = sorted(n for n, photos in people.items() if len(photos) >= 4)[7]
    return sorted(people[name])[:4]


def test_three_stills_of_one_incident_give_one_list_naming_them(live_stack: Settings, lfw_dir: Path,
                                                                 tmp_path: Path) -> None:
    photos = _identity(lfw_dir)
    subject = photos[0].parent.name
    _enrol(live_stack, photos[0], tmp_path)

    rng = np.random.default_rng(17)
    incident = f"inc-{uuid.uuid4().hex[:12]}"
    sids = _send(live_stack, [_still(p, FACE_PX, rng) for p in photos[1:]], incident_id=incident,
                 incident_stills=3)
    lists = _collect(live_stack, sids, "incident")

    assert len(lists) == 1, sorted(lists)  # one search for the incident, none per still
    [cl] = lists.values()
    assert cl.incident_id == incident and cl.stills_expected == 3 and cl.schema_version == 4
    assert sorted(s.submission_id for s in cl.stills) == sorted(sids)
    assert [s.status for s in cl.stills] == [StillStatus.SEARCHED] * 3, cl.stills
    assert cl.event_id.startswith("inc_") and cl.probe.still_ref in {s.still_ref for s in cl.stills}
    print(f"incident list: {[(c.subject_id, c.score) for c in cl.candidates]}")
    assert subject in {c.subject_id for c in cl.candidates}  # the fused probe finds the enrolled person
    assert _review_records(live_stack, cl.event_id) == (1, 1)  # one search, one case for the incident


def test_an_incident_survives_a_match_crash_half_way(live_stack: Settings, lfw_dir: Path) -> None:
    photos = _identity(lfw_dir)
    rng = np.random.default_rng(29)
    stills = [_still(p, FACE_PX, rng) for p in photos[1:]]
    incident = f"inc-{uuid.uuid4().hex[:12]}"
    first = _send(live_stack, stills[:2], incident_id=incident, incident_stills=3)
    key = f"{RETAILER}/{incident}"
    deadline = time.monotonic() + 120
    while len(_sqlite_rows(incident_database_url(live_stack),
                           f"SELECT 1 FROM incident_items WHERE incident_key = '{key}'")) < 4:  # 2 reports, 2 faces
        assert time.monotonic() < deadline, "match never recorded the first two stills"
        time.sleep(0.5)
    [info] = [i for i in procs.StateFile(stack.plan(live_stack).state_dir).load() if i.name == "match"]
    os.kill(info.pid, signal.SIGKILL)
    os.waitpid(info.pid, 0)
    last = _send(live_stack, stills[2:], incident_id=incident, incident_stills=3)  # arrives while match is dead
    stack.restart_service(live_stack, "match")
    lists = _collect(live_stack, first + last, "incident-crash")
    assert len(lists) == 1, sorted(lists)
    [cl] = lists.values()
    assert sorted(s.submission_id for s in cl.stills) == sorted(first + last)
    assert _review_records(live_stack, cl.event_id)[0] == 1


def test_gated_stills_searched_on_request_are_marked_low_quality(live_stack: Settings, lfw_dir: Path) -> None:
    photos = _identity(lfw_dir)
    rng = np.random.default_rng(23)
    # Faces the default gate stops (too small, too blurred) but BlazeFace may still find: which ones it finds is
    # the detector's business; every list must carry the mark its face's quality calls for.
    stills = [_still(photos[1], px, rng, sigma) for px, sigma in ((26, 0.0), (29, 0.0), (64, 3.0), (64, 4.5),
                                                                  (80, 6.0))]
    sids = _send(live_stack, stills, investigative=True)
    lists = _collect(live_stack, sids, "investigative")
    gate_settings = DetectSettings()
    marks = {cl.event_id: (cl.low_quality, gate(cl.quality, gate_settings)) for cl in lists.values()}
    assert all(low == (reason is not None) for low, reason in marks.values()), marks
    print(f"investigative: {len(stills)} stills, {len(lists)} lists, low_quality marks {marks}")
    if not any(low for low, _ in marks.values()):
        pytest.fail(f"no gated face was detected in any of the {len(stills)} stills; make them gentler: {marks}")
