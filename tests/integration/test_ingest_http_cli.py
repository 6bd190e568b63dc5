"""The HTTP and CLI channels on the real broker: frame events out, retailers kept apart, duplicates dropped."""

from __future__ import annotations

import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry
from support.broker import on, read_until
from support.stills import heic, jpeg, pattern, tiff
from typer.testing import CliRunner

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits
from rfr.core.kafka import make_producer
from rfr.core.schemas import FrameEvent, OutcomeEvent, OutcomeStatus, decode, submission_id
from rfr.core.settings import IngestSettings, KafkaSettings, Settings
from rfr.core.topics import Topics
from rfr.tools import procs
from rfr.tools import submit as cli
from services.ingest.accept import Ingestor
from services.ingest.app import HttpContext, create_app
from services.ingest.auth import ApiKeyRegistry, hash_key
from services.ingest.metrics import IngestMetrics
from services.ingest.publish import Publisher
from services.ingest.service import start_http
from services.ingest.store import SqliteSubmissionStore

KEY_A, KEY_B = "rfr_integration-key-a-0123456789", "rfr_integration-key-b-0123456789"
FORM = {"store_id": "st-1", "camera_id": "cam-1", "captured_at": "2024-05-01T13:45:07Z"}


def context(kafka: KafkaSettings, tmp: Path) -> HttpContext:
    ingestor = Ingestor(Topics.from_settings(kafka), SqliteSubmissionStore(tmp / "ingest.db"),
                        FileBlobStore(tmp / "blobs"), IngestMetrics.create(CollectorRegistry()),
                        ImageLimits(max_bytes=1 << 20), 50_000)
    keys = ApiKeyRegistry(f"shop-a:{hash_key(KEY_A)},shop-b:{hash_key(KEY_B)}")
    return HttpContext(ingestor, keys, Publisher(make_producer(kafka)), max_files=8, max_request_bytes=1 << 23)


def test_http_channel_produces_frames(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    ctx = context(kafka_settings, tmp_path)
    client = TestClient(create_app(ctx))
    images = [jpeg(80, 60, seed=1), jpeg(600, 400, seed=2, quality=98)]
    parts = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(images)]
    resp = client.post("/v1/submissions", data=FORM, files=parts, headers={"X-API-Key": KEY_A})
    assert resp.status_code == 202, resp.text
    ids = [s["submission_id"] for s in resp.json()["submissions"]]
    assert ids == [submission_id("shop-a", d) for d in images]
    dup = client.post("/v1/submissions", data=FORM, files=parts[:1], headers={"X-API-Key": KEY_A})
    assert dup.json()["submissions"][0]["status"] == "duplicate"
    bad = client.post("/v1/submissions", data=FORM, files=[("images", ("x.jpg", b"<html>", "image/jpeg"))],
                      headers={"X-API-Key": KEY_A})
    assert bad.status_code == 415

    assert client.get(f"/v1/submissions/{ids[0]}", headers={"X-API-Key": KEY_A}).json()["status"] == "received"
    assert client.get(f"/v1/submissions/{ids[0]}", headers={"X-API-Key": KEY_B}).status_code == 404
    assert client.get(f"/v1/submissions/{ids[0]}").status_code == 401
    assert client.get(f"/v1/submissions/{ids[0]}", headers={"X-API-Key": "rfr_bad"}).status_code == 401
    ctx.publisher.close()

    records = read_until(kafka_settings, [topics.frames, topics.outcomes],
                         lambda rs: len(on(topics.frames, rs)) >= 2 and len(on(topics.outcomes, rs)) >= 3)
    frames = [decode(FrameEvent, r.value) for r in on(topics.frames, records)]
    assert sorted(f.submission_id for f in frames) == sorted(ids) and len(frames) == 2  # the duplicate: none
    assert {f.meta.channel for f in frames} == {"http"} and {r.key for r in on(topics.frames, records)} == {
        b"shop-a/st-1/cam-1"}
    assert any(f.image_ref for f in frames) and any(f.image for f in frames)
    statuses = sorted(decode(OutcomeEvent, r.value).status for r in on(topics.outcomes, records))
    assert statuses == sorted([OutcomeStatus.RECEIVED, OutcomeStatus.RECEIVED, OutcomeStatus.REJECTED])


def test_cli_channel_through_a_real_server(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka_settings)
    port = procs.free_port()
    settings = Settings(kafka=kafka_settings, ingest=IngestSettings(http_port=port))
    ctx = context(kafka_settings, tmp_path)
    server = start_http(settings, ctx)
    folder = tmp_path / "stills"
    folder.mkdir()
    stills = {f"{i}.jpg": jpeg(64, 64, seed=40 + i) for i in range(3)}
    for name, data in stills.items():
        (folder / name).write_bytes(data)
    try:
        args = ["submit", str(folder), "--store", "st-2", "--camera", "cam-2", "--case-ref", "case-7",
                "--api-key", KEY_B, "--url", f"http://127.0.0.1:{port}"]
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        printed = [line.split()[0] for line in result.stdout.strip().splitlines()]
        assert printed == [submission_id("shop-b", stills[n]) for n in sorted(stills)]
        again = CliRunner().invoke(cli.app, args)
        assert again.exit_code == 0 and again.stdout.count("duplicate") == 3
    finally:
        server.close()
        ctx.publisher.close()
    records = read_until(kafka_settings, [topics.frames], lambda rs: len(rs) >= 3)
    frames = [decode(FrameEvent, r.value) for r in records]
    assert sorted(f.submission_id for f in frames) == sorted(printed) and len(frames) == 3
    assert {(f.meta.retailer_id, f.meta.case_ref) for f in frames} == {("shop-b", "case-7")}


def test_cli_accounts_for_every_file_of_a_folder_through_a_real_server(kafka_settings: KafkaSettings,
                                                                       tmp_path: Path) -> None:
    """Issue 12: x.jfif and y.jpe (JPEGs), a TIFF, a GIF and z.heic were "0 of 0 file(s) received", exit 0."""
    topics = Topics.from_settings(kafka_settings)
    port = procs.free_port()
    ctx = context(kafka_settings, tmp_path)
    server = start_http(Settings(kafka=kafka_settings, ingest=IngestSettings(http_port=port)), ctx)
    folder = tmp_path / "export"
    folder.mkdir()
    gif = io.BytesIO()
    Image.fromarray(pattern(40, 30, seed=9)).save(gif, format="GIF")
    files = {"x.jfif": jpeg(64, 64, seed=50), "y.jpe": jpeg(64, 64, seed=51), "still.tif": tiff(seed=52),
             "anim.gif": gif.getvalue(), "z.heic": heic(seed=53)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    args = ["submit", str(folder), "--store", "st-3", "--camera", "cam-3", "--api-key", KEY_A,
            "--url", f"http://127.0.0.1:{port}", "--no-progress"]
    try:
        strict = CliRunner().invoke(cli.app, args)
        partial = CliRunner().invoke(cli.app, [*args, "--allow-partial"])
    finally:
        server.close()
        ctx.publisher.close()
    assert strict.exit_code == 1, strict.output
    by_name = {Path(line.split()[-1]).name: line.split() for line in strict.stdout.strip().splitlines()}
    images = ["still.tif", "x.jfif", "y.jpe", "z.heic"]
    assert {n: w[:2] for n, w in by_name.items() if n in images} == {
        n: [submission_id("shop-a", files[n]), "received"] for n in images}
    assert by_name["anim.gif"][:3] == ["-", "skipped", "(unsupported_format:"]
    assert "5 file(s): 4 received, 0 duplicate, 1 skipped (unsupported_format 1), 0 rejected, 0 failed" in (
        strict.stderr)
    assert partial.exit_code == 0 and partial.stdout.count(" duplicate ") == 4, partial.output
    records = read_until(kafka_settings, [topics.frames], lambda rs: len(rs) >= 4)
    frames = [decode(FrameEvent, r.value) for r in records]
    assert sorted(f.submission_id for f in frames) == sorted(submission_id("shop-a", files[n]) for n in images)
