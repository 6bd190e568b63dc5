"""Incident ids, still counts and the investigative flag on every channel (Kafka headers, HTTP, CLI), and detect's
side: the report of every incident still, and gated faces passed on (marked) only for an investigative search."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from support.faces import GridDetector
from support.ingest import make_ingestor
from support.kafka import FakeMsg, FakePublisher
from support.stills import jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits
from rfr.core.schemas import (
    Channel,
    FaceEvent,
    FrameEvent,
    IncidentStillReport,
    OutcomeEvent,
    OutcomeStatus,
    SubmissionMeta,
    decode,
)
from rfr.core.settings import DetectSettings, Settings
from rfr.core.stream import PoisonMessage
from rfr.core.topics import Topics
from rfr.tools import submit as submit_cli
from services.detect.handler import FrameHandler
from services.detect.metrics import DetectMetrics
from services.ingest.accept import RawMeta, Rejected, build_meta
from services.ingest.app import HttpContext, create_app
from services.ingest.auth import ApiKeyRegistry, hash_key
from services.ingest.handler import SubmissionHandler, submission_headers

TOPICS = Topics("t")
KEY = "rfr_key-for-shop-a-0123456789"
FORM = {"store_id": "store-1", "camera_id": "cam-2", "captured_at": "2024-05-01T10:00:00+01:00"}


def raw(**kw: str | None) -> RawMeta:
    base: dict[str, Any] = {"retailer_id": "r1", "store_id": "s1", "camera_id": "c1",
                            "captured_at": "2024-05-01T10:00:00Z"}
    return RawMeta(**(base | kw))


# --- the rule at ingest ------------------------------------------------------------------------------------------
def test_incident_is_the_explicit_id_or_the_case_ref_with_a_count() -> None:
    assert build_meta(raw(incident_id="inc-1"), Channel.KAFKA).incident_id == "inc-1"
    meta = build_meta(raw(case_ref="case-9", incident_stills="3"), Channel.KAFKA)
    assert (meta.incident_id, meta.incident_stills, meta.incident_key) == ("case-9", 3, "r1/case-9")
    plain = build_meta(raw(case_ref="case-9"), Channel.KAFKA)  # a case ref alone: each still on its own, as before
    assert plain.incident_id is None and plain.incident_key is None and not plain.investigative


@pytest.mark.parametrize(("fields", "reason"), [
    ({"incident_stills": "3"}, "missing_metadata"), ({"incident_id": "i", "incident_stills": "0"}, "invalid_metadata"),
    ({"incident_id": "i", "incident_stills": "65"}, "invalid_metadata"),
    ({"incident_id": "i", "incident_stills": "two"}, "invalid_metadata"),
    ({"incident_id": "bad id"}, "invalid_metadata"), ({"investigative": "maybe"}, "invalid_metadata")])
def test_bad_incident_fields_are_refused(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        build_meta(raw(**fields), Channel.HTTP)
    assert refused.value.reason == reason


@pytest.mark.parametrize(("text", "flag"), [("true", True), ("1", True), ("Yes", True), ("false", False),
                                            ("0", False), (None, False)])
def test_the_investigative_flag(text: str | None, flag: bool) -> None:
    assert build_meta(raw(investigative=text), Channel.CLI).investigative is flag


def test_v2_fields_need_a_v2_meta() -> None:
    with pytest.raises(ValueError, match="v2"):
        SubmissionMeta(schema_version=1, retailer_id="r", store_id="s", camera_id="c",
                       captured_at=datetime.now(UTC), investigative=True)
    with pytest.raises(ValueError, match="needs an incident_id"):
        SubmissionMeta(retailer_id="r", store_id="s", camera_id="c", captured_at=datetime.now(UTC),
                       incident_stills=2)


# --- channels ----------------------------------------------------------------------------------------------------
def test_kafka_headers_carry_the_incident_and_the_flag(tmp_path: Path) -> None:
    handler = SubmissionHandler(make_ingestor(tmp_path))  # type: ignore[arg-type]
    headers = submission_headers("shop-1", "store-7", "cam-3", "2024-05-01T13:45:07Z", incident_id="inc-7",
                                 incident_stills=3, investigative=True)
    [result] = handler.handle_batch([FakeMsg(jpeg(120, 80), headers=headers)])
    assert isinstance(result, list)
    frame = decode(FrameEvent, result[0].value)
    assert (frame.meta.incident_id, frame.meta.incident_stills, frame.meta.investigative) == ("inc-7", 3, True)
    bad = [*submission_headers("shop-1", "store-7", "cam-3", "2024-05-01T13:45:07Z"), ("rfr-incident-stills", b"3")]
    [refused] = handler.handle_batch([FakeMsg(jpeg(121, 80), headers=bad)])
    assert isinstance(refused, PoisonMessage) and refused.reason == "missing_metadata"


@pytest.fixture
def http(tmp_path: Path) -> tuple[TestClient, FakePublisher]:
    publisher = FakePublisher()
    ctx = HttpContext(make_ingestor(tmp_path, ImageLimits(max_bytes=1 << 20)),
                      ApiKeyRegistry(f"shop-a:{hash_key(KEY)}"), publisher, max_files=10, max_request_bytes=4 << 20)
    return TestClient(create_app(ctx)), publisher


def frames(publisher: FakePublisher) -> list[FrameEvent]:
    return [decode(FrameEvent, o.value) for o in publisher.sent if o.topic.endswith("rfr.frames.v1")]


def test_http_several_images_with_an_incident_id_are_one_incident(http: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = http
    parts = [("images", (f"{i}.jpg", jpeg(64, 48, seed=i), "image/jpeg")) for i in range(3)]
    resp = client.post("/v1/submissions", data=FORM | {"incident_id": "inc-1", "investigative": "true"},
                       files=parts, headers={"X-API-Key": KEY})
    assert resp.status_code == 202, resp.text
    metas = [f.meta for f in frames(publisher)]
    assert len(metas) == 3 and {(m.incident_id, m.incident_stills, m.investigative) for m in metas} == {
        ("inc-1", 3, True)}


def test_http_incident_over_several_requests(http: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = http
    resp = client.post("/v1/submissions", data=FORM | {"case_ref": "case-1", "incident_stills": "4"},
                       files=[("images", ("a.jpg", jpeg(64, 48, seed=9), "image/jpeg"))], headers={"X-API-Key": KEY})
    assert resp.status_code == 202
    [frame] = frames(publisher)
    assert (frame.meta.incident_id, frame.meta.incident_stills) == ("case-1", 4)


def test_cli_incident_names_every_image_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg(64, 48, seed=i))
    (tmp_path / "notes.txt").write_text("not an image")
    seen: list[dict[str, str]] = []

    def fake_post(_client: httpx.Client, path: Path, fields: dict[str, str]) -> submit_cli.FileResult:
        seen.append(fields)
        return submit_cli.FileResult(path, "sub_x", "received")

    monkeypatch.setattr(submit_cli, "post_file", fake_post)
    from typer.testing import CliRunner
    result = CliRunner().invoke(submit_cli.app, ["submit", str(tmp_path), "--store", "s", "--camera", "c",
                                                 "--incident", "inc-5", "--investigative", "--api-key", "k",
                                                 "--no-progress", "--allow-partial"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 3 and all(f["incident_id"] == "inc-5" and f["incident_stills"] == "3"
                                  and f["investigative"] == "true" for f in seen)


# --- detect ------------------------------------------------------------------------------------------------------
def detect(meta: SubmissionMeta, tmp_path: Path) -> list[Any]:
    data = bytes(cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (750, 1200, 3), dtype=np.uint8))[1])
    now = datetime.now(UTC)
    frame = FrameEvent(event_id="sub_a", submission_id="sub_a", meta=meta, received_at=now, content_type="image/jpeg",
                       width=1200, height=750, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       image=data, image_ref="sha256:" + "0" * 64)
    handler = FrameHandler(Settings(detect=DetectSettings(gate_min_face_px=100)), TOPICS, GridDetector(2),
                           FileBlobStore(tmp_path), DetectMetrics.create(CollectorRegistry()))
    [result] = handler.handle_batch([FakeMsg(frame.to_bytes(), topic=TOPICS.frames)])
    assert isinstance(result, list)
    return result


def meta_of(**kw: Any) -> SubmissionMeta:
    return SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=datetime.now(UTC), **kw)


def test_gated_faces_are_dropped_by_default_and_reported(tmp_path: Path) -> None:
    out = detect(meta_of(incident_id="inc-1", incident_stills=2), tmp_path)
    assert not [o for o in out if o.topic == TOPICS.faces]
    [outcome] = [decode(OutcomeEvent, o.value) for o in out if o.topic == TOPICS.outcomes]
    assert outcome.status == OutcomeStatus.NO_FACE and outcome.dropped == {"too_small": 2}
    [report] = [decode(IncidentStillReport, o.value) for o in out if o.topic == TOPICS.incidents]
    assert report.face_ids == [] and "too_small" in report.detail  # the incident need not wait for this still
    assert report.event_id == "sub_a:incident" and report.still_ref == "sha256:" + "0" * 64


def test_an_investigative_search_passes_gated_faces_on_marked(tmp_path: Path) -> None:
    out = detect(meta_of(investigative=True), tmp_path)
    faces = [decode(FaceEvent, o.value) for o in out if o.topic == TOPICS.faces]
    assert len(faces) == 2 and {f.gated_reason for f in faces} == {"too_small"}
    [outcome] = [decode(OutcomeEvent, o.value) for o in out if o.topic == TOPICS.outcomes]
    assert outcome.status == OutcomeStatus.FACES_FOUND and outcome.faces == 2 and outcome.dropped == {}
    assert not [o for o in out if o.topic == TOPICS.incidents]  # not part of an incident: no report


def test_an_incident_still_reports_the_faces_it_passed_on(tmp_path: Path) -> None:
    out = detect(meta_of(incident_id="inc-1", investigative=True), tmp_path)
    [report] = [decode(IncidentStillReport, o.value) for o in out if o.topic == TOPICS.incidents]
    assert report.face_ids == ["sub_a:f0", "sub_a:f1"]
    assert [o.key for o in out if o.topic == TOPICS.incidents] == ["r1/inc-1"]
