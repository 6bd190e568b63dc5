"""Gallery changes reach the review service's topic on a real broker: :func:`rfr.tools.gallery_events.announce`
and the `rfr enrol` / `rfr gallery delete` commands (fake extractor, embedder and gallery; real Kafka), read back
as GalleryChange events with their key and event id header; an unreachable broker is a clear, prompt error."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from support.broker import Record, on, read_until
from support.faces import MODEL, write
from support.fixtures import Announcements
from typer.testing import CliRunner

from rfr.core.kafka import EVENT_ID_HEADER, BrokerUnavailable
from rfr.core.review_messages import GalleryChange, GalleryFaceRecord
from rfr.core.schemas import decode, template_bytes
from rfr.core.settings import KafkaSettings, Settings
from rfr.core.topics import Topics
from rfr.gallery.changes import gallery_changes
from rfr.gallery.memory import InMemoryGallery
from rfr.tools import gallery_events, procs
from rfr.tools.gallery_cli import app

REAL_ANNOUNCE = gallery_events.announce  # before the cli_gallery fixture replaces it with a recorder


def changes_on(kafka: KafkaSettings, n: int, timeout_s: float = 60.0) -> list[tuple[Record, GalleryChange]]:
    topic = Topics.from_settings(kafka).gallery
    records = on(topic, read_until(kafka, [topic], lambda rs: len(on(topic, rs)) >= n, timeout_s))
    return [(r, decode(GalleryChange, r.value)) for r in records]


def test_announce_produces_every_change_keyed_by_watch_list(kafka_settings: KafkaSettings) -> None:
    faces = [GalleryFaceRecord(face_id=f"gf_{i:03d}", subject_id=f"s{i}", photo_ref=None, source_ref=f"s{i}/1.jpg",
                               template=template_bytes(np.full(16, i, np.float32))) for i in range(201)]
    changes = gallery_changes("enrolled", "custody", MODEL, faces, "cli:test", "integration")
    assert len(changes) == 2
    REAL_ANNOUNCE(Settings(kafka=kafka_settings), changes)
    got = changes_on(kafka_settings, 2)
    assert sorted((c for _, c in got), key=lambda c: c.event_id) == sorted(changes, key=lambda c: c.event_id)
    assert all(r.key == b"custody" and r.headers[EVENT_ID_HEADER] == c.event_id for r, c in got)


def test_an_unreachable_broker_fails_promptly_with_a_clear_error() -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{procs.free_port()}")
    [change] = gallery_changes("erased", "custody", MODEL, [GalleryFaceRecord(face_id="f", subject_id="s")], "a")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="rfr up"):
        REAL_ANNOUNCE(Settings(kafka=dead), [change], broker_wait_s=1.0)
    assert time.monotonic() - started < 15


def test_enrol_and_delete_tell_the_review_service_through_the_broker(
        cli_gallery: InMemoryGallery, announcements: Announcements, kafka_settings: KafkaSettings,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gallery_events, "announce", REAL_ANNOUNCE)
    monkeypatch.setenv("RFR_KAFKA__BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("RFR_KAFKA__TOPIC_NAMESPACE", kafka_settings.topic_namespace)
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "alice/2.jpg": "face:2"})
    runner = CliRunner()
    enrolled = runner.invoke(app, ["enrol", str(root), "--no-progress", "--reason", "booking B-7"])
    assert enrolled.exit_code == 0, enrolled.output
    enrolled_ids = sorted(cli_gallery._faces)
    assert f"announced 2 photo(s) to the review service ({kafka_settings.topic_namespace}.rfr.gallery.v1)" in (
        enrolled.stderr)
    erased = runner.invoke(app, ["gallery", "delete", "alice", "--yes", "--reason", "released"])
    assert erased.exit_code == 0, erased.output

    got = [c for _, c in changes_on(kafka_settings, 2)]  # one partition (key: the watch-list), in order
    assert [(c.action, c.reason, [f.face_id for f in c.faces]) for c in got] == [
        ("enrolled", "booking B-7", enrolled_ids), ("erased", "released", enrolled_ids)]
    for record in got[0].faces:
        assert record.photo_ref and announcements.blobs.get(record.photo_ref) == (root / record.source_ref).read_bytes()
    assert all(f.template is None for f in got[1].faces) and cli_gallery.count() == 0
