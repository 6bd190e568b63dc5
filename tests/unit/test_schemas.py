from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rfr.core.schemas import (
    Box,
    CandidateList,
    DeadLetter,
    FaceQuality,
    FrameEvent,
    OutcomeEvent,
    OutcomeStatus,
    SubmissionMeta,
    decode,
    submission_id,
)

META = SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=datetime(2026, 1, 2, tzinfo=UTC))
QUALITY = FaceQuality(face_px=48.0, score=0.9, blur=120.0, eye_distance_px=20.0, pose_ok=True)


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
                       galleries=["custody"], model_id="m", quality=QUALITY)
    back = decode(CandidateList, cl.to_bytes())
    assert back == cl
    assert "not an identification" in back.notice


def test_unknown_fields_are_rejected() -> None:
    raw = json.loads(_frame().to_bytes())
    raw["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        decode(FrameEvent, json.dumps(raw).encode())


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_schema_versions_are_rejected(version: object) -> None:
    raw = json.loads(_frame().to_bytes())
    raw["schema_version"] = version
    with pytest.raises(ValidationError, match="schema_version"):
        decode(FrameEvent, json.dumps(raw).encode())


def test_missing_message_and_garbage_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty message"):
        decode(Box, None)
    with pytest.raises(ValidationError):
        decode(Box, b"\x00not json")


def test_messages_are_frozen() -> None:
    box = Box(x=1, y=2, width=3, height=4)
    with pytest.raises(ValidationError):
        box.x = 5  # type: ignore[misc]


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
