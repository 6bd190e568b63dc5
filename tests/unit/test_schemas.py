from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError
from support.events import probe_fields, search_fields

from rfr.core.cluster_messages import ClusterEvent, ClusterPurged, ClusterRuleInfo, ClusterSighting
from rfr.core.geometry import Box
from rfr.core.review_messages import DecisionEvent, GalleryChange, GalleryFaceRecord, ReviewerDecision
from rfr.core.schemas import (
    Candidate,
    CandidateList,
    DeadLetter,
    EmbeddingEvent,
    FaceEvent,
    FaceQuality,
    FrameEvent,
    IncidentStillReport,
    Message,
    OutcomeEvent,
    OutcomeStatus,
    Point,
    Probe,
    ProbeStill,
    SubmissionMeta,
    UnsupportedSchemaVersion,
    decode,
    submission_id,
    template_bytes,
)

META = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=datetime(2026, 1, 2, tzinfo=UTC))
QUALITY = FaceQuality(face_px=48.0, score=0.9, sharpness=120.0, eye_distance_px=20.0, pose_ok=True)


def _frame(**kw: object) -> FrameEvent:
    base: dict[str, object] = dict(event_id="sub_1", submission_id="sub_1", meta=META, received_at=datetime.now(UTC),
                                   content_type="image/jpeg", width=4, height=3, size_bytes=5, sha256="ab",
                                   image=b"\xff\xd8\x00\x01\xff")
    base.update(kw)
    return FrameEvent(**base)  # type: ignore[arg-type]


def test_frame_round_trip_keeps_bytes() -> None:
    frame = _frame()
    back = decode(FrameEvent, frame.to_bytes())
    assert back == frame
    assert back.image == b"\xff\xd8\x00\x01\xff"


def test_candidate_list_round_trip() -> None:
    cl = CandidateList(event_id="f", face_id="f", submission_id="s", meta=META, received_at=datetime.now(UTC),
                       searched_at=datetime.now(UTC), outcome="no_candidate", candidates=[], threshold=0.5, top_k=5,
                       watch_lists=["custody"], model_id="m", quality=QUALITY,
                       **search_fields(datetime.now(UTC)))
    back = decode(CandidateList, cl.to_bytes())
    assert back == cl
    assert "not an identification" in back.notice


def test_unknown_fields_are_rejected() -> None:
    raw = json.loads(_frame().to_bytes())
    raw["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        decode(FrameEvent, json.dumps(raw).encode())


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_other_schema_versions_are_refused_with_their_own_reason(version: object) -> None:
    raw = json.loads(_frame().to_bytes())
    raw["schema_version"] = version
    with pytest.raises(UnsupportedSchemaVersion) as refused:
        decode(FrameEvent, json.dumps(raw).encode())
    assert refused.value.reason == "unsupported_schema_version"
    assert str(refused.value) == f"unsupported_schema_version: got {version!r}, accepts 1 (FrameEvent)"
    assert isinstance(refused.value, ValueError)  # callers treating every malformed message alike still catch it


def test_each_class_declares_its_version() -> None:
    v4: set[type[Message]] = {CandidateList, FaceEvent, EmbeddingEvent}
    v3: set[type[Message]] = set()
    v2: set[type[Message]] = {FaceQuality, Candidate, SubmissionMeta}
    v1: set[type[Message]] = {FrameEvent, Point, OutcomeEvent, DeadLetter, Probe, GalleryFaceRecord,
                              GalleryChange, ReviewerDecision, DecisionEvent, ProbeStill, IncidentStillReport,
                              ClusterEvent, ClusterSighting, ClusterRuleInfo, ClusterPurged}
    assert {cls.version() for cls in v4} == {4}
    assert {cls.version() for cls in v2} == {2} and {cls.version() for cls in v1} == {1}
    # a new message class must be placed in one of them
    assert set(Message.__subclasses__()) == v1 | v2 | v3 | v4
    for cls in v1 | v2 | v3 | v4:
        assert "schema_version" in cls.__annotations__, f"{cls.__name__} must declare its own schema_version"


def test_a_consumer_refuses_a_version_it_does_not_accept_even_when_the_class_parses_it() -> None:
    raw = _frame().to_bytes()
    with pytest.raises(UnsupportedSchemaVersion, match=r"got 1, accepts 2, 3 \(FrameEvent\)"):
        decode(FrameEvent, raw, accepts={2, 3})
    assert decode(FrameEvent, raw, accepts={1}).schema_version == 1


def test_a_malformed_message_of_an_accepted_version_stays_a_validation_error() -> None:
    raw = json.loads(_frame().to_bytes())
    raw["width"] = -1
    with pytest.raises(ValidationError, match="width"):
        decode(FrameEvent, json.dumps(raw).encode())
    del raw["schema_version"]  # no version: read as the class's own
    raw["width"] = 4
    assert decode(FrameEvent, json.dumps(raw).encode()).schema_version == 1


def _embedding(template: bytes) -> EmbeddingEvent:
    return EmbeddingEvent(event_id="f", face_id="f", submission_id="s", meta=META, received_at=datetime.now(UTC),
                          quality=QUALITY, model_id="m", weights_sha256="ab", template=template, **probe_fields())


def test_embedding_template_is_little_endian_float32_bytes() -> None:
    vector = np.linspace(-1, 1, 512, dtype=np.float32)
    event = _embedding(template_bytes(vector))
    assert event.template == vector.astype("<f4").tobytes() and event.dim == 512
    back = decode(EmbeddingEvent, event.to_bytes())
    assert back.vector.dtype == np.float32 and back.vector.shape == (512,)
    assert np.array_equal(back.vector, vector)  # exact: no decimal round trip
    assert b'"vector"' not in event.to_bytes() and b'"sharpness":120.0' in event.to_bytes()


@pytest.mark.parametrize(("values", "why"), [
    (np.zeros(15, np.float32).tobytes(), "at least 64 bytes"),  # 15 values: under the 16..4096 range
    (np.zeros(4097, np.float32).tobytes(), "at most 16384 bytes"),
    (np.zeros(16, np.float32).tobytes() + b"\x00\x00", "whole number of float32 values"),
])
def test_embedding_template_length_is_checked(values: bytes, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        _embedding(values)
    assert _embedding(np.zeros(16, np.float32).tobytes()).dim == 16
    assert _embedding(np.zeros(4096, np.float32).tobytes()).dim == 4096


def test_template_bytes_wants_one_vector() -> None:
    with pytest.raises(ValueError, match="one vector"):
        template_bytes(np.zeros((2, 16), np.float32))


def test_missing_message_and_garbage_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty message"):
        decode(Point, None)
    with pytest.raises(ValidationError):
        decode(Point, b"\x00not json")


def test_messages_and_boxes_are_frozen() -> None:
    point = Point(x=1, y=2)
    with pytest.raises(ValidationError):
        point.x = 5  # type: ignore[misc]
    box = Box(x=1, y=2, width=3, height=4)
    with pytest.raises(AttributeError):
        box.x = 5  # type: ignore[misc]
    assert tuple(box) == (1, 2, 3, 4) and box[2] == 3 and box.area == 12


def test_a_face_box_travels_as_a_plain_object() -> None:
    face = FaceEvent(event_id="s:f0", face_id="s:f0", submission_id="s", face_index=0, faces_in_frame=1, meta=META,
                     received_at=datetime.now(UTC), box=Box(10.5, 20, 64, 64), keypoints=[Point(x=1, y=2)],
                     quality=QUALITY, crop_jpeg=b"\xff\xd8")
    event = json.loads(face.to_bytes())
    assert event["box"] == {"x": 10.5, "y": 20.0, "width": 64.0, "height": 64.0}
    assert set(event["box"]) == {"x", "y", "width", "height"}
    assert decode(FaceEvent, json.dumps(event).encode(), accepts={3, 4}).box == Box(10.5, 20, 64, 64)
    for bad in ({"x": 1, "y": 2, "width": 3}, {"x": 1, "y": 2, "width": 3, "height": 4, "schema_version": 1},
                {"x": 1, "y": 2, "width": -3, "height": 4}, {"x": "1", "y": 2, "width": 3, "height": 4}):
        with pytest.raises(ValidationError, match="box"):
            decode(FaceEvent, json.dumps(event | {"box": bad}).encode(), accepts={3, 4})
    with pytest.raises(ValidationError, match="finite"):
        decode(FaceEvent, json.dumps(event | {"box": {"x": 1, "y": 2, "width": 3, "height": 4}})
               .replace("4}", "NaN}").encode(), accepts={3, 4})


def test_ids_reject_injection() -> None:
    with pytest.raises(ValidationError):
        SubmissionMeta(retailer_id="r1/../x", store_id="s", camera_id="c", captured_at=datetime.now(UTC))


def test_submission_id_is_deterministic_per_retailer() -> None:
    assert submission_id("r1", b"img") == submission_id("r1", b"img")
    assert submission_id("r1", b"img") != submission_id("r2", b"img")
    assert submission_id("r1", b"img") != submission_id("r1", b"img2")
    assert submission_id("r1", b"img").startswith("sub_")


def test_outcome_event_ids_are_deterministic() -> None:
    a = OutcomeEvent.make("sub_1", "r1", OutcomeStatus.NO_CANDIDATE, face_id="sub_1:f0")
    b = OutcomeEvent.make("sub_1", "r1", OutcomeStatus.NO_CANDIDATE, face_id="sub_1:f0")
    assert a.event_id == b.event_id == "sub_1:no_candidate:sub_1:f0"
    assert OutcomeEvent.make("sub_1", "r1", OutcomeStatus.RECEIVED).event_id == "sub_1:received"


def test_dead_letter_carries_payload() -> None:
    dl = DeadLetter(event_id="t:0:1", service="ingest", reason="corrupt", error_type="PoisonMessage",
                    source_topic="t", partition=0, offset=1, payload=b"\x00\x01")
    assert decode(DeadLetter, dl.to_bytes()).payload == b"\x00\x01"


@pytest.mark.parametrize("bad", ["Infinity", "-Infinity", "NaN"])
def test_a_non_finite_number_is_a_malformed_message(bad: str) -> None:
    cl = CandidateList(event_id="f", face_id="f", submission_id="s", meta=META, received_at=datetime.now(UTC),
                       searched_at=datetime.now(UTC), outcome="no_candidate", candidates=[], threshold=0.5, top_k=5,
                       watch_lists=["custody"], model_id="m", quality=QUALITY, **search_fields(datetime.now(UTC)))
    raw = cl.to_bytes().replace(b'"threshold":0.5', b'"threshold":' + bad.encode())
    assert bad.encode() in raw
    with pytest.raises(ValidationError, match="finite"):
        decode(CandidateList, raw)
