"""The HTTP channel through FastAPI's TestClient, with a fake publisher and a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from support.ingest import make_ingestor
from support.kafka import FakePublisher
from support.metrics import sample
from support.stills import Case, bad_cases, good_cases, heic, jpeg, tiff

from rfr.core.schemas import FrameEvent, OutcomeEvent, OutcomeStatus, decode, submission_id
from services.ingest.app import HttpContext, create_app
from services.ingest.auth import ApiKeyRegistry, hash_key

KEY_A, KEY_B = "rfr_key-for-shop-a-0123456789", "rfr_key-for-shop-b-0123456789"
FORM = {"store_id": "store-1", "camera_id": "cam-2", "captured_at": "2024-05-01T10:00:00+01:00"}
MAX_BYTES = 1 << 20
EXPECTED_STATUS = {"too_large_bytes": 413, "too_many_pixels": 413, "unsupported_format": 415}


@pytest.fixture
def ctx(tmp_path: Path, registry: CollectorRegistry) -> HttpContext:
    from rfr.core.imaging import ImageLimits

    keys = ApiKeyRegistry(f"shop-a:{hash_key(KEY_A)},shop-b:{hash_key(KEY_B)}")
    ingestor = make_ingestor(tmp_path, ImageLimits(max_bytes=MAX_BYTES), inline_max_bytes=20_000, registry=registry)
    return HttpContext(ingestor, keys, FakePublisher(), max_files=10, max_request_bytes=4 * MAX_BYTES)


@pytest.fixture
def client(ctx: HttpContext) -> TestClient:
    return TestClient(create_app(ctx))


def post(client: TestClient, files: list[tuple[str, bytes, str]], key: str | None = KEY_A,
         form: dict[str, str] | None = None) -> Any:
    headers = {"X-API-Key": key} if key else {}
    parts = [("images", (name, data, ctype)) for name, data, ctype in files]
    return client.post("/v1/submissions", data=FORM if form is None else form, files=parts, headers=headers)


def sent(ctx: HttpContext) -> list[Any]:
    return ctx.publisher.sent  # type: ignore[attr-defined,no-any-return]


def test_keys_are_required(client: TestClient) -> None:
    for key in (None, "rfr_wrong"):
        resp = post(client, [("a.jpg", jpeg(), "image/jpeg")], key=key)
        assert resp.status_code == 401 and resp.json()["detail"]["reason"] == "unauthorized"
        assert client.get("/v1/submissions/sub_x", headers={"X-API-Key": key or ""}).status_code == 401


def test_upload_returns_ids_and_produces_frames(client: TestClient, ctx: HttpContext, registry: CollectorRegistry
                                                ) -> None:
    images = [jpeg(64, 48, seed=1), jpeg(64, 48, seed=2), jpeg(400, 300, seed=3, quality=98)]
    resp = post(client, [(f"{i}.jpg", d, "image/jpeg") for i, d in enumerate(images)])
    assert resp.status_code == 202, resp.text
    items = resp.json()["submissions"]
    assert [it["submission_id"] for it in items] == [submission_id("shop-a", d) for d in images]
    assert {it["status"] for it in items} == {"received"} and items[2]["width"] == 400
    frames = [decode(FrameEvent, o.value) for o in sent(ctx) if o.topic.endswith("frames.v1")]
    assert [f.submission_id for f in frames] == [it["submission_id"] for it in items]
    assert frames[0].meta.channel == "http" and frames[0].meta.retailer_id == "shop-a"
    assert frames[2].image is None and frames[2].image_ref  # over inline_max_bytes: claim check
    outcomes = [decode(OutcomeEvent, o.value) for o in sent(ctx) if o.topic.endswith("outcomes.v1")]
    assert {o.status for o in outcomes} == {OutcomeStatus.RECEIVED} and len(outcomes) == 3
    assert sample(registry, "rfr_ingest_submissions_total", channel="http", outcome="accepted") == 3


def test_status_is_private_to_the_retailer(client: TestClient, ctx: HttpContext) -> None:
    sid = post(client, [("a.jpg", jpeg(), "image/jpeg")]).json()["submissions"][0]["submission_id"]
    mine = client.get(f"/v1/submissions/{sid}", headers={"X-API-Key": KEY_A})
    assert mine.status_code == 200 and mine.json()["status"] == "received"
    assert mine.json()["captured_at"].startswith("2024-05-01T10:00:00")
    assert client.get(f"/v1/submissions/{sid}", headers={"X-API-Key": KEY_B}).status_code == 404
    assert client.get("/v1/submissions/sub_missing", headers={"X-API-Key": KEY_A}).status_code == 404
    ctx.ingestor.store.apply_outcome(OutcomeEvent.make(sid, "shop-a", OutcomeStatus.FACES_FOUND, faces=1))
    ctx.ingestor.store.apply_outcome(OutcomeEvent.make(sid, "shop-a", OutcomeStatus.PASSED_FOR_REVIEW,
                                                       face_id=f"{sid}:f0"))
    body = client.get(f"/v1/submissions/{sid}", headers={"X-API-Key": KEY_A}).json()
    assert (body["status"], body["faces"], body["faces_passed_for_review"]) == ("passed_for_review", 1, 1)
    assert not {"candidates", "subject_id", "retailer_id"} & set(body)


def test_duplicate_is_not_processed_twice(client: TestClient, ctx: HttpContext) -> None:
    data = jpeg(seed=11)
    first = post(client, [("a.jpg", data, "image/jpeg")]).json()["submissions"][0]
    n = len(sent(ctx))
    again = post(client, [("renamed.png", data, "image/png")]).json()["submissions"][0]
    assert again["submission_id"] == first["submission_id"] and again["status"] == "duplicate"
    assert len(sent(ctx)) == n
    twice = post(client, [("x.jpg", jpeg(seed=12), "image/jpeg")] * 2).json()["submissions"]
    assert [t["status"] for t in twice] == ["received", "duplicate"] and len(sent(ctx)) == n + 2


@pytest.mark.parametrize("case", bad_cases(MAX_BYTES), ids=lambda c: c.name)
def test_bad_input_gets_the_right_status(client: TestClient, ctx: HttpContext, registry: CollectorRegistry,
                                         case: Case) -> None:
    resp = post(client, [(case.filename, case.data, case.content_type)])
    assert resp.status_code == EXPECTED_STATUS.get(case.reason, 422), resp.text
    detail = resp.json()["detail"]
    assert detail["reason"] == case.reason and detail["submissions"][0]["status"] == "rejected"
    assert not [o for o in sent(ctx) if o.topic.endswith("frames.v1")]
    sid = detail["submissions"][0]["submission_id"]
    if case.reason != "too_large_bytes":
        st = client.get(f"/v1/submissions/{sid}", headers={"X-API-Key": KEY_A}).json()
        assert (st["status"], st["reason"]) == ("rejected", case.reason)
    assert sample(registry, "rfr_ingest_rejections_total", reason=case.reason) == 1


def test_one_bad_image_means_none_is_processed(client: TestClient, ctx: HttpContext) -> None:
    resp = post(client, [("good.jpg", jpeg(seed=21), "image/jpeg"), ("bad.jpg", b"<html>", "image/jpeg")])
    assert resp.status_code == 415
    assert [s["status"] for s in resp.json()["detail"]["submissions"]] == ["not_processed", "rejected"]
    assert not [o for o in sent(ctx) if o.topic.endswith("frames.v1")]
    retry = post(client, [("good.jpg", jpeg(seed=21), "image/jpeg")])
    assert retry.status_code == 202 and retry.json()["submissions"][0]["status"] == "received"


def test_every_good_format_and_any_declared_type(client: TestClient) -> None:
    cases = good_cases()
    for batch in (cases[:8], cases[8:]):  # at most max_files=10 per request
        resp = post(client, [(c.filename, c.data, c.content_type) for c in batch])
        assert resp.status_code == 202, resp.text
        assert [s["status"] for s in resp.json()["submissions"]] == ["received"] * len(batch)


@pytest.mark.parametrize(("form", "reason"), [
    ({k: v for k, v in FORM.items() if k != "camera_id"}, "missing_metadata"),
    (FORM | {"captured_at": "2024-05-01 10:00"}, "invalid_metadata"),
    (FORM | {"store_id": "store/1"}, "invalid_metadata"),
])
def test_metadata_is_checked(client: TestClient, form: dict[str, str], reason: str) -> None:
    resp = post(client, [("a.jpg", jpeg(), "image/jpeg")], form=form)
    assert resp.status_code == 422 and resp.json()["detail"]["reason"] == reason


def test_request_shape_limits(client: TestClient) -> None:
    no_images = client.post("/v1/submissions", data=FORM, files=[("note", ("n.txt", b"hi", "text/plain"))],
                            headers={"X-API-Key": KEY_A})
    assert no_images.status_code == 422 and no_images.json()["detail"]["message"] == "missing images"
    for body in ({"json": FORM}, {"data": FORM}):  # JSON, or a urlencoded form: not multipart
        resp = client.post("/v1/submissions", headers={"X-API-Key": KEY_A}, **body)
        assert resp.status_code == 415 and resp.json()["detail"]["reason"] == "unsupported_media_type"
    many = post(client, [(f"{i}.jpg", jpeg(8, 8, seed=i), "image/jpeg") for i in range(11)])
    assert many.status_code == 413 and many.json()["detail"]["reason"] == "too_many_files"
    huge = client.post("/v1/submissions", content=b"x" * (4 * MAX_BYTES + 1),
                       headers={"X-API-Key": KEY_A, "Content-Type": "multipart/form-data; boundary=b"})
    assert huge.status_code == 413


def test_broker_outage_is_503_and_nothing_is_recorded(client: TestClient, ctx: HttpContext) -> None:
    ctx.publisher.fail = True  # type: ignore[attr-defined]
    data = jpeg(seed=31)
    assert post(client, [("a.jpg", data, "image/jpeg")]).status_code == 503
    assert ctx.ingestor.store.get(submission_id("shop-a", data)) is None
    ctx.publisher.fail = False  # type: ignore[attr-defined]
    assert post(client, [("a.jpg", data, "image/jpeg")]).json()["submissions"][0]["status"] == "received"


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/submissions", "/v1/submissions/{submission_id}"} <= set(spec["paths"])
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_tiff_and_heic_uploads_are_received_with_their_content_type(client: TestClient, ctx: HttpContext) -> None:
    files = [("export.tif", tiff(), "image/tiff"), ("IMG_0001.HEIC", heic(), "image/heic"),
             ("no-name", heic(seed=4, orientation=6), "application/octet-stream")]
    resp = post(client, files)
    assert resp.status_code == 202, resp.text
    items = resp.json()["submissions"]
    assert [(it["status"], it["width"], it["height"]) for it in items] == [
        ("received", 96, 64), ("received", 96, 64), ("received", 64, 96)]
    frames = [decode(FrameEvent, o.value) for o in sent(ctx) if o.topic.endswith("frames.v1")]
    assert [f.content_type for f in frames] == ["image/tiff", "image/heic", "image/heic"]


def test_an_unsupported_upload_is_415_naming_its_bytes(client: TestClient) -> None:
    resp = post(client, [("z.heic", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/heic")])
    assert resp.status_code == 415
    detail = resp.json()["detail"]
    assert detail["reason"] == "unsupported_format" and "a GIF image" in detail["submissions"][0]["detail"]


def test_a_large_jpeg_upload_is_received_at_reduced_scale(tmp_path: Path) -> None:
    from rfr.core.imaging import ImageLimits

    ingestor = make_ingestor(tmp_path, ImageLimits(max_bytes=MAX_BYTES, max_pixels=30_000))
    ctx = HttpContext(ingestor, ApiKeyRegistry(f"shop-a:{hash_key(KEY_A)}"), FakePublisher(), max_files=10,
                      max_request_bytes=4 * MAX_BYTES)
    resp = post(TestClient(create_app(ctx)), [("big.jpg", jpeg(400, 300), "image/jpeg"),
                                              ("no-eoi.jpg", jpeg(120, 80)[:-2], "image/jpeg")])
    assert resp.status_code == 202, resp.text
    assert [(it["width"], it["height"]) for it in resp.json()["submissions"]] == [(200, 150), (120, 80)]
    frames = [decode(FrameEvent, o.value) for o in sent(ctx) if o.topic.endswith("frames.v1")]
    assert [(f.decode_scale, f.decode_warnings) for f in frames] == [(2, ()), (1, ("jpeg_missing_eoi",))]
    client = TestClient(create_app(ctx))
    statuses = [client.get(f"/v1/submissions/{it['submission_id']}", headers={"X-API-Key": KEY_A}).json()
                for it in resp.json()["submissions"]]
    assert [(s["decode_scale"], s["decode_warnings"]) for s in statuses] == [(2, []), (1, ["jpeg_missing_eoi"])]
