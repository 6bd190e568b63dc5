"""The Kafka submission handler against fake messages: frames, rejections, duplicates, redeliveries."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.ingest import make_ingestor
from support.kafka import FakeMsg
from support.metrics import sample
from support.stills import bad_cases, good_cases, heic, jpeg, tiff

from rfr.core.blobstore import FileBlobStore, blob_ref
from rfr.core.imaging import ImageLimits, decode_image
from rfr.core.schemas import FrameEvent, OutcomeEvent, OutcomeStatus, decode, submission_id
from rfr.core.stream import PoisonMessage
from services.ingest.handler import H_RETAILER, SubmissionHandler, submission_headers

HEADERS = submission_headers("shop-1", "store-7", "cam-3", "2024-05-01T13:45:07.250Z", "case-42")


def handler(tmp_path: Path, registry: CollectorRegistry | None = None, **kw: int) -> SubmissionHandler:
    return SubmissionHandler(make_ingestor(tmp_path, registry=registry, **kw))  # type: ignore[arg-type]


def test_good_still_becomes_a_frame_and_a_received_outcome(tmp_path: Path, registry: CollectorRegistry) -> None:
    h = handler(tmp_path, registry)
    data = jpeg(120, 80)
    [result] = h.handle_batch([FakeMsg(data, headers=HEADERS, offset=5)])
    assert isinstance(result, list) and [o.topic for o in result] == ["t.rfr.frames.v1", "t.rfr.outcomes.v1"]
    frame = decode(FrameEvent, result[0].value)
    sid = submission_id("shop-1", data)
    assert frame.event_id == frame.submission_id == sid == result[0].event_id
    assert result[0].key == "shop-1/store-7/cam-3" == frame.meta.camera_key
    assert (frame.width, frame.height, frame.content_type, frame.image) == (120, 80, "image/jpeg", data)
    assert frame.meta.case_ref == "case-42" and frame.meta.captured_at.year == 2024
    assert frame.image_ref == blob_ref(data)  # kept for review even when it travels inline
    outcome = decode(OutcomeEvent, result[1].value)
    assert (outcome.status, outcome.submission_id, result[1].key) == (OutcomeStatus.RECEIVED, sid, sid)
    assert sample(registry, "rfr_ingest_submissions_total", channel="kafka", outcome="accepted") == 1


def test_large_still_travels_as_a_blob_reference(tmp_path: Path) -> None:
    h = handler(tmp_path, inline_max_bytes=1000)
    data = jpeg(300, 200, quality=95)
    assert len(data) > 1000
    [result] = h.handle_batch([FakeMsg(data, headers=HEADERS)])
    assert isinstance(result, list)
    frame = decode(FrameEvent, result[0].value)
    assert frame.image is None and frame.image_ref is not None
    assert FileBlobStore(tmp_path / "blobs").get(frame.image_ref) == data


def test_duplicate_is_dropped_but_a_redelivery_is_reemitted(tmp_path: Path, registry: CollectorRegistry) -> None:
    h = handler(tmp_path, registry)
    data = jpeg(seed=4)
    first, second = h.handle_batch([FakeMsg(data, 1, headers=HEADERS), FakeMsg(data, 2, headers=HEADERS)])
    assert isinstance(first, list) and len(first) == 2 and second == []
    [again] = h.handle_batch([FakeMsg(data, headers=HEADERS, offset=1)])  # the loop re-read offset 1 after a crash
    assert isinstance(again, list) and decode(FrameEvent, again[0].value).submission_id == submission_id(
        "shop-1", data)
    assert sample(registry, "rfr_ingest_submissions_total", channel="kafka", outcome="duplicate") == 1
    other_retailer = submission_headers("shop-2", "s", "c", "2024-05-01T13:45:07Z")
    [theirs] = h.handle_batch([FakeMsg(data, headers=other_retailer, offset=3)])  # same bytes, another retailer
    assert isinstance(theirs, list) and len(theirs) == 2


@pytest.mark.parametrize("case", bad_cases(1 << 20), ids=lambda c: c.name)
def test_bad_still_is_poison_with_a_rejected_outcome(tmp_path: Path, registry: CollectorRegistry, case: object) -> None:
    h = handler(tmp_path, registry)
    data, reason = case.data, case.reason  # type: ignore[attr-defined]
    [result] = h.handle_batch([FakeMsg(data, headers=HEADERS)])
    assert isinstance(result, PoisonMessage) and result.reason == reason
    [out] = result.outputs
    outcome = decode(OutcomeEvent, out.value)
    assert outcome.status == OutcomeStatus.REJECTED and outcome.detail.startswith(reason)
    st = h.ingestor.store.status(submission_id("shop-1", data))
    assert st is not None and st.status == "rejected" and st.record.reason == reason
    assert st.record.captured_at is not None and st.record.captured_at.isoformat().startswith("2024-05-01T13:45:07")
    assert sample(registry, "rfr_ingest_rejections_total", reason=reason) == 1


@pytest.mark.parametrize(("drop", "named"), [(H_RETAILER, H_RETAILER), ("rfr-camera-id", "camera_id"),
                                             ("rfr-captured-at", "captured_at"), ("rfr-store-id", "store_id")])
def test_missing_metadata(tmp_path: Path, drop: str, named: str) -> None:
    headers = [(k, v) for k, v in HEADERS if k != drop]
    [result] = handler(tmp_path).handle_batch([FakeMsg(jpeg(), headers=headers)])
    assert isinstance(result, PoisonMessage) and result.reason == "missing_metadata" and named in result.detail
    assert (result.outputs == []) == (drop == H_RETAILER)  # no retailer: nobody to tell


@pytest.mark.parametrize("captured_at", ["yesterday", "2024-05-01T13:45:07", "2999-01-01T00:00:00Z"])
def test_invalid_capture_time(tmp_path: Path, captured_at: str) -> None:
    headers = submission_headers("shop-1", "s", "c", captured_at)
    [result] = handler(tmp_path).handle_batch([FakeMsg(jpeg(), headers=headers)])
    assert isinstance(result, PoisonMessage) and result.reason == "invalid_metadata"


def test_invalid_ids_and_empty_value(tmp_path: Path) -> None:
    h = handler(tmp_path)
    bad_ids = submission_headers("shop-1", "store 7/../x", "c", "2024-05-01T13:45:07Z")
    empty_value = FakeMsg(None, headers=HEADERS)
    [r1, r2] = h.handle_batch([FakeMsg(jpeg(), headers=bad_ids), empty_value])
    assert isinstance(r1, PoisonMessage) and r1.reason == "invalid_metadata" and "store_id" in r1.detail
    assert isinstance(r2, PoisonMessage) and r2.reason == "empty"


def test_every_good_format_is_accepted(tmp_path: Path) -> None:
    h = handler(tmp_path)
    results = h.handle_batch([FakeMsg(c.data, headers=HEADERS, offset=i) for i, c in enumerate(good_cases())])
    assert all(isinstance(r, list) and len(r) == 2 for r in results)


@pytest.mark.parametrize(("data", "content_type", "size"), [
    (tiff(), "image/tiff", (96, 64)), (heic(), "image/heic", (96, 64)), (heic(seed=4, orientation=6), "image/heic",
                                                                         (64, 96)),
], ids=["tiff", "heic", "heic_rotated"])
def test_tiff_and_heic_become_frames(tmp_path: Path, data: bytes, content_type: str, size: tuple[int, int]) -> None:
    [result] = handler(tmp_path).handle_batch([FakeMsg(data, headers=HEADERS)])
    assert isinstance(result, list) and len(result) == 2
    frame = decode(FrameEvent, result[0].value)
    assert (frame.content_type, (frame.width, frame.height), frame.image) == (content_type, size, data)
    assert frame.decode_scale == 1 and frame.decode_warnings == ()


def test_a_large_jpeg_frame_records_its_decode_scale(tmp_path: Path) -> None:
    limits = ImageLimits(max_bytes=1 << 20, max_pixels=30_000)
    h = SubmissionHandler(make_ingestor(tmp_path, limits))
    data = jpeg(400, 300, seed=3)
    [result] = h.handle_batch([FakeMsg(data, headers=HEADERS)])
    assert isinstance(result, list)
    frame = decode(FrameEvent, result[0].value)
    assert (frame.decode_scale, frame.width, frame.height, frame.image) == (2, 200, 150, data)  # not re-encoded
    again = decode_image(frame.image or b"", limits)  # what detect does with the frame: the same pixels' size
    assert (again.width, again.height, again.scale) == (frame.width, frame.height, frame.decode_scale)
    st = h.ingestor.store.status(frame.submission_id)
    assert st is not None and (st.record.width, st.record.height) == (200, 150)


def test_a_jpeg_missing_its_eoi_is_received_and_flagged(tmp_path: Path) -> None:
    data = jpeg(120, 80, seed=8)[:-2]
    [result] = handler(tmp_path).handle_batch([FakeMsg(data, headers=HEADERS)])
    assert isinstance(result, list) and len(result) == 2
    frame = decode(FrameEvent, result[0].value)
    assert frame.decode_warnings == ("jpeg_missing_eoi",) and frame.image == data and frame.width == 120


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_jpeg_cut_mid_scan_is_still_rejected(tmp_path: Path, fraction: float) -> None:
    data = jpeg(120, 80, seed=8)
    [result] = handler(tmp_path).handle_batch([FakeMsg(data[: int(len(data) * fraction)], headers=HEADERS)])
    assert isinstance(result, PoisonMessage) and result.reason == "truncated"


@pytest.mark.parametrize(("name", "second"), [
    ("rfr-store-id", "store-8"), ("rfr-camera-id", "cam-3"), ("rfr-captured-at", "2024-05-01T13:45:08Z"),
    ("rfr-case-ref", "case-43"), ("RFR-Store-Id", "store-8"),
])
def test_a_repeated_header_is_invalid_metadata(tmp_path: Path, registry: CollectorRegistry, name: str,
                                                second: str) -> None:
    h = handler(tmp_path, registry)
    data = jpeg(seed=31)
    [result] = h.handle_batch([FakeMsg(data, headers=[*HEADERS, (name, second.encode())])])
    assert isinstance(result, PoisonMessage) and result.reason == "invalid_metadata"
    assert f"{name.lower()} (2 times)" in result.detail
    [out] = result.outputs
    outcome = decode(OutcomeEvent, out.value)
    assert outcome.status == OutcomeStatus.REJECTED and name.lower() in outcome.detail
    st = h.ingestor.store.status(submission_id("shop-1", data))
    assert st is not None and (st.status, st.record.reason) == ("rejected", "invalid_metadata")
    assert sample(registry, "rfr_ingest_rejections_total", reason="invalid_metadata") == 1
    assert sample(registry, "rfr_ingest_submissions_total", channel="kafka", outcome="accepted") == 0


def test_a_repeated_retailer_header_is_dead_lettered_unattributed(tmp_path: Path, registry: CollectorRegistry) -> None:
    h = handler(tmp_path, registry)
    [result] = h.handle_batch([FakeMsg(jpeg(seed=32), headers=[*HEADERS, (H_RETAILER, b"shop-2")])])
    assert isinstance(result, PoisonMessage) and result.reason == "invalid_metadata"
    assert H_RETAILER in result.detail and result.outputs == []  # which retailer? nobody to tell
    assert sample(registry, "rfr_ingest_rejections_total", reason="invalid_metadata") == 1


def test_repeated_headers_outside_the_rfr_set_are_ignored(tmp_path: Path) -> None:
    extra = [("traceparent", b"00-a-b-01"), ("traceparent", b"00-c-d-01")]
    [result] = handler(tmp_path).handle_batch([FakeMsg(jpeg(seed=33), headers=[*HEADERS, *extra])])
    assert isinstance(result, list) and len(result) == 2


def test_a_still_that_fails_unexpectedly_gets_a_failed_outcome_named_like_its_submission(tmp_path: Path) -> None:
    """The stream loop asks ingest for the outcome of a still it dead-letters itself (retry_exhausted, a bug):
    ingest names it from the retailer header and the bytes, as it names every submission."""
    data = b"\xff\xd8\xff\xe0 still bytes"
    [out] = handler(tmp_path).failure_outputs(FakeMsg(data, headers=HEADERS), "retry_exhausted: 5 tries")
    outcome = decode(OutcomeEvent, out.value)
    assert out.topic == "t.rfr.outcomes.v1" and out.event_id == outcome.event_id
    assert (outcome.submission_id, outcome.retailer_id) == (submission_id("shop-1", data), "shop-1")
    assert outcome.status == OutcomeStatus.FAILED and outcome.detail == "retry_exhausted: 5 tries"
    nobody = [(k, v) for k, v in HEADERS if k != H_RETAILER]
    assert handler(tmp_path).failure_outputs(FakeMsg(data, headers=nobody), "x") == []  # nobody to tell
