"""Gallery changes for the review service (issue 14): enrolled photos kept in the blob store, the GalleryChange
events `rfr enrol` and `rfr gallery delete` announce (chunks of 200, deterministic ids, templates, erasure), and
what the commands say when the review service cannot be told.

Fakes (tests/support/faces.py): a fake photo ``face:<n>`` is one face embedded one-hot at n; the ``announcements``
fixture (tests/support/fixtures.py) records what would have been produced to ``rfr.gallery.v1``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.faces import MAGIC, MODEL, FakeEmbedder, FakeExtractor, write
from support.fixtures import Announcements
from support.kafka import FakeMsg
from support.review_data import POLICY, candidate_list, enrolment, open_store, unit
from support.stills import jpeg
from typer.testing import CliRunner

from rfr.core.blobstore import BlobNotFound, FileBlobStore, blob_ref
from rfr.core.db import sqlite_url
from rfr.core.kafka import BrokerUnavailable, DeliveryFailed
from rfr.core.review_messages import GALLERY_CHANGE_MAX_FACES, GalleryChange, GalleryFaceRecord
from rfr.core.schemas import decode, template_vector
from rfr.core.settings import Settings, gallery_blob_dir
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace, enrol_face_id
from rfr.gallery.changes import (
    change_event_id,
    enrolled_records,
    enrolment_changes,
    erasure_changes,
    gallery_changes,
)
from rfr.gallery.enrol import EnrolledFace, Enroller, items_from_folder
from rfr.gallery.memory import InMemoryGallery
from rfr.review.retention import run_retention
from rfr.tools import gallery_events
from rfr.tools.gallery_cli import app
from services.review.handler import ReviewHandler
from services.review.service import photo_store

runner = CliRunner()
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def records(n: int, dim: int = 16) -> list[GalleryFaceRecord]:
    vectors = np.eye(n, dim, dtype=np.float32) + 0.5
    return [GalleryFaceRecord(face_id=f"gf_{i:04d}", subject_id=f"s{i}", photo_ref=blob_ref(bytes([i % 256])),
                              source_ref=f"s{i}/1.jpg", template=vectors[i].astype("<f4").tobytes())
            for i in range(n)]


# --- the events ------------------------------------------------------------------------------------------------
def test_changes_are_chunked_at_200_faces_in_face_id_order_with_deterministic_ids() -> None:
    faces = records(450)
    changes = gallery_changes("enrolled", "custody", MODEL, faces[::-1], "cli:ann", "warrant W-1", AT)
    assert [len(c.faces) for c in changes] == [GALLERY_CHANGE_MAX_FACES, GALLERY_CHANGE_MAX_FACES, 50]
    assert [f.face_id for c in changes for f in c.faces] == [f.face_id for f in faces]  # sorted, whatever given
    assert {(c.action, c.watch_list, c.model_id, c.actor, c.reason, c.at) for c in changes} == {
        ("enrolled", "custody", MODEL, "cli:ann", "warrant W-1", AT)}
    assert changes[0].event_id == change_event_id("enrolled", "custody", MODEL, [f.face_id for f in faces[:200]])
    assert len({c.event_id for c in changes}) == 3
    again = gallery_changes("enrolled", "custody", MODEL, faces + faces[:3], "cli:bob", "", datetime.now(UTC))
    assert [c.event_id for c in again] == [c.event_id for c in changes]  # who, why, when and repeats: same events
    others = [gallery_changes("erased", "custody", MODEL, faces, "a", "", AT)[0].event_id,
              gallery_changes("enrolled", "wanted", MODEL, faces, "a", "", AT)[0].event_id,
              gallery_changes("enrolled", "custody", "other-model", faces, "a", "", AT)[0].event_id]
    assert len({changes[0].event_id, *others}) == 4
    for change in changes:  # each fits a Kafka message and reads back as it was written
        assert len(change.to_bytes()) < 1_000_000
        assert decode(GalleryChange, change.to_bytes()) == change
    assert gallery_changes("enrolled", "custody", MODEL, [], "a") == []


def test_an_erasure_carries_ids_only_and_an_enrolment_needs_templates() -> None:
    [erased] = gallery_changes("erased", "custody", MODEL, records(3), "cli:ann", "court order", AT)
    assert [(f.face_id, f.subject_id, f.template, f.photo_ref) for f in erased.faces] == [
        (f"gf_{i:04d}", f"s{i}", None, None) for i in range(3)]
    with pytest.raises(ValueError, match="template"):
        gallery_changes("enrolled", "custody", MODEL, [GalleryFaceRecord(face_id="f", subject_id="s")], "a")
    by_list = erasure_changes("alice", [("f2", "wanted"), ("f1", "custody"), ("f3", "custody")], MODEL, "a", at=AT)
    assert [(c.watch_list, [f.face_id for f in c.faces]) for c in by_list] == [
        ("custody", ["f1", "f3"]), ("wanted", ["f2"])]
    assert all(f.subject_id == "alice" and c.action == "erased" for c in by_list for f in c.faces)


def test_an_erasure_and_an_enrolment_again_are_new_events_but_announcing_existing_photos_again_is_not() -> None:
    later = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)
    faces = [("gf_1", "custody")]
    erased, erased_again = (erasure_changes("alice", faces, MODEL, "a", at=t)[0].event_id for t in (AT, later))
    assert erased != erased_again  # erased, enrolled again with the same photo, erased again: two erasures
    vector = np.ones(16, dtype=np.float32)
    fresh = EnrolledFace("gf_1", "alice", "custody", None, "alice/1.jpg", vector)
    existing = EnrolledFace("gf_1", "alice", "custody", None, "alice/1.jpg", vector, existing=True)
    first, second = (enrolment_changes([fresh], MODEL, "a", at=t)[0].event_id for t in (AT, later))
    assert first != second  # a fresh enrolment is a new fact each time
    repeats = {enrolment_changes([existing], MODEL, "a", at=t)[0].event_id for t in (AT, later)}
    assert len(repeats) == 1 and repeats.isdisjoint({first, second})  # --announce-existing: one event


# --- the enroller keeps the photos -------------------------------------------------------------------------------
def test_enrolled_photos_are_kept_in_the_blob_store_and_listed_with_their_templates(tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "alice/2.jpg": "face:2", "bob/1.jpg": "none"})
    blobs = FileBlobStore(tmp_path / "blobs")
    report = Enroller(FakeExtractor(), FakeEmbedder(), InMemoryGallery(MODEL), "custody", photos=blobs).run(
        items_from_folder(root))
    assert [(f.source_ref, f.subject_id, f.watch_list, f.existing) for f in report.faces] == [
        ("alice/1.jpg", "alice", "custody", False), ("alice/2.jpg", "alice", "custody", False)]
    for face, level in zip(report.faces, (1, 2), strict=True):
        data = (root / face.source_ref).read_bytes()
        assert face.photo_ref == blob_ref(data) and blobs.get(face.photo_ref) == data
        assert face.face_id == enrol_face_id("custody", "alice", face.photo_ref.removeprefix("sha256:"))
        assert face.vector.dtype == np.float32 and face.vector.shape == (512,) and int(np.argmax(face.vector)) == level
    assert not blobs.path(blob_ref(MAGIC + b"none")).exists()  # a rejected photo is not kept
    assert report.to_dict()["photos_kept"] == 2
    [change] = gallery_changes("enrolled", "custody", MODEL, enrolled_records(report.faces), "a")
    assert all(np.array_equal(template_vector(r.template or b""), f.vector)
               for r, f in zip(change.faces, report.faces, strict=True))
    bare = Enroller(FakeExtractor(), FakeEmbedder(), InMemoryGallery(MODEL), "custody").run(items_from_folder(root))
    assert [f.photo_ref for f in bare.faces] == [None, None]  # no blob store: nothing kept, still listed


class CountingGallery(InMemoryGallery):
    def __init__(self) -> None:
        super().__init__(MODEL)
        self.added: list[str] = []

    def add(self, faces: Sequence[GalleryFace]) -> int:
        self.added += [f.face_id for f in faces]
        return super().add(faces)


def test_embed_existing_lists_photos_already_enrolled_without_writing_them_again(tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "alice/2.jpg": "face:2"})
    gallery, embedder = CountingGallery(), FakeEmbedder()
    first = Enroller(FakeExtractor(), embedder, gallery, "custody").run(items_from_folder(root))
    write(root, {"bob/1.jpg": "face:3"})
    blobs = FileBlobStore(tmp_path / "blobs")
    again = Enroller(FakeExtractor(), embedder, gallery, "custody", photos=blobs, embed_existing=True).run(
        items_from_folder(root))
    assert (again.enrolled, again.skipped_existing) == (1, 2)
    assert gallery.added == [f.face_id for f in first.faces] + [again.faces[-1].face_id]  # nothing written twice
    assert [(f.subject_id, f.existing) for f in again.faces] == [("alice", True), ("alice", True), ("bob", False)]
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(first.faces, again.faces[:2], strict=True))
    assert all(f.photo_ref and blobs.get(f.photo_ref) for f in again.faces)  # kept now, though enrolled before
    assert embedder.calls[-1] == 3  # one embedding call for the batch, the existing photos included
    plain = Enroller(FakeExtractor(), embedder, gallery, "custody").run(items_from_folder(root))
    assert plain.faces == [] and plain.skipped_existing == 3


# --- the commands ------------------------------------------------------------------------------------------------
def test_enrol_keeps_and_announces_the_photos_it_enrolled(cli_gallery: InMemoryGallery, announcements: Announcements,
                                                          tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "alice/2.jpg": "face:2", "bob/1.jpg": "face:3"})
    result = runner.invoke(app, ["enrol", str(root), "--no-progress", "--reason", "custody record C-9"])
    assert result.exit_code == 0, result.output
    assert "announced 3 photo(s) to the review service (rfr.gallery.v1)" in result.stderr
    [change] = announcements.changes
    assert (change.action, change.watch_list, change.model_id, change.reason) == (
        "enrolled", "custody", MODEL, "custody record C-9")
    assert change.actor == gallery_events.cli_actor() and change.actor.startswith("cli:")
    assert {f.face_id for f in change.faces} == {f.face_id for f in cli_gallery._faces.values()}
    stills = FileBlobStore(announcements.blobs.root.parent)  # blob_dir: the stills' store
    assert announcements.blobs.root == stills.root / "gallery"
    for record in change.faces:
        data = (root / record.source_ref).read_bytes()
        assert record.photo_ref == blob_ref(data) and announcements.blobs.get(record.photo_ref) == data
        assert not stills.path(record.photo_ref).exists()  # kept in <blob_dir>/gallery, apart from the stills
        stored = cli_gallery._faces[record.face_id].vector
        assert np.array_equal(np.frombuffer(record.template or b"", "<f4"), stored)  # little-endian float32

    again = runner.invoke(app, ["enrol", str(root), "--no-progress"])
    assert again.exit_code == 0 and announcements.calls == 1  # nothing new: nothing announced
    assert "3 photo(s) already enrolled were not announced again (--announce-existing does)" in again.stderr


def test_a_failed_announcement_exits_1_and_announce_existing_repeats_it(
        cli_gallery: InMemoryGallery, announcements: Announcements, tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "bob/1.jpg": "face:2"})
    announcements.fail = BrokerUnavailable("Kafka at 127.0.0.1:19092 did not answer within 10s")
    failed = runner.invoke(app, ["enrol", str(root), "--no-progress"])
    assert failed.exit_code == 1 and cli_gallery.count() == 2  # enrolled, but not told
    assert "could not tell the review service (rfr.gallery.v1) about 2 photo(s): Kafka at" in failed.stderr
    assert ("enrolled, but the review service was not told: it will not show these photos or re-search unsolved "
            "probes against them; start the stack (`rfr up`) and run again with --announce-existing") in failed.stderr

    announcements.fail = None
    repeated = runner.invoke(app, ["enrol", str(root), "--no-progress", "--announce-existing"])
    assert repeated.exit_code == 0, repeated.output
    assert "announced 2 photo(s)" in repeated.stderr and "0 enrolled, 2 already enrolled" in repeated.stderr
    [change] = announcements.changes
    assert change.event_id == change_event_id("enrolled", "custody", MODEL, cli_gallery._faces)
    assert all(f.template and f.photo_ref for f in change.faces)


def test_no_announce_enrols_offline_and_says_so(cli_gallery: InMemoryGallery, announcements: Announcements,
                                               tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1"})
    offline = runner.invoke(app, ["enrol", str(root), "--no-progress", "--no-announce"])
    assert offline.exit_code == 0 and cli_gallery.count() == 1 and announcements.calls == 0
    assert "not announced (--no-announce)" in offline.stderr
    both = runner.invoke(app, ["enrol", str(root), "--no-progress", "--no-announce", "--announce-existing"])
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_more_than_200_photos_are_announced_in_several_changes(cli_gallery: InMemoryGallery,
                                                               announcements: Announcements, tmp_path: Path) -> None:
    root = write(tmp_path / "in", {f"s{i:03d}/1.jpg": f"face:{i + 1}" for i in range(201)})
    result = runner.invoke(app, ["enrol", str(root), "--no-progress", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    assert [len(c.faces) for c in announcements.changes] == [200, 1] and announcements.calls == 1
    assert len({c.event_id for c in announcements.changes}) == 2


def test_delete_announces_the_erasure_before_erasing(cli_gallery: InMemoryGallery, announcements: Announcements
                                                     ) -> None:
    vec = np.ones(8, np.float32)
    cli_gallery.add([GalleryFace("f1", "carol", "custody", vec), GalleryFace("f2", "carol", "wanted", vec),
                     GalleryFace("f3", "dave", "custody", vec)])
    announcements.fail = DeliveryFailed("rfr.gallery.v1: 1 message(s) still unacknowledged after 35s")
    refused = runner.invoke(app, ["gallery", "delete", "carol", "--yes"])
    assert refused.exit_code == 1 and cli_gallery.count() == 3  # not told: nothing erased
    assert "nothing was erased" in refused.stderr and "--no-announce" in refused.stderr

    announcements.fail = None
    done = runner.invoke(app, ["gallery", "delete", "carol", "--yes", "--reason", "subject acquitted"])
    assert done.exit_code == 0 and cli_gallery.count() == 1, done.output
    assert "announced the erasure of 2 photo(s) to the review service (rfr.gallery.v1)" in done.stderr
    told = [(c.action, c.watch_list, c.reason, [(f.face_id, f.subject_id, f.template, f.photo_ref) for f in c.faces])
            for c in announcements.changes]
    assert told == [("erased", "custody", "subject acquitted", [("f1", "carol", None, None)]),
                    ("erased", "wanted", "subject acquitted", [("f2", "carol", None, None)])]
    assert runner.invoke(app, ["gallery", "delete", "carol", "--yes"]).exit_code == 1  # no one left to erase
    assert announcements.calls == 2

    offline = runner.invoke(app, ["gallery", "delete", "dave", "--yes", "--no-announce"])
    assert offline.exit_code == 0 and cli_gallery.count() == 0 and announcements.calls == 2
    assert "not announced (--no-announce)" in offline.stderr


# --- photos and stills apart -------------------------------------------------------------------------------------
def test_photos_and_stills_with_the_same_bytes_are_kept_apart(tmp_path: Path) -> None:
    """An erased photo leaves the still of an open case with the same bytes alone, and a retention purge of a still
    leaves an enrolled photo with the same bytes alone: the photos have their own store (<blob_dir>/gallery)."""
    settings = Settings(blob_dir=tmp_path / "blobs")
    stills, photos = FileBlobStore(settings.blob_dir), photo_store(settings)
    assert isinstance(photos, FileBlobStore) and photos.root == gallery_blob_dir(settings) == stills.root / "gallery"
    env = open_store(sqlite_url(tmp_path / "review.db"))
    handler = ReviewHandler(env.store, Topics("t"), blobs=photos)

    def tell(change: GalleryChange) -> None:
        msg: Any = FakeMsg(change.to_bytes(), topic=Topics("t").gallery)
        [result] = handler.handle_batch([msg])
        assert result == []

    shared = jpeg(seed=9)
    ref = stills.put(shared)
    assert photos.put(shared) == ref
    case_id = env.store.record_search(candidate_list("p:0", still_ref=ref))  # the still of an open case
    assert case_id is not None
    tell(enrolment("e1", [("gf-x", "subj-x", unit((1, 1.0)))], photo_refs=[ref]))
    tell(enrolment("e2", [("gf-x", "subj-x", None)], action="erased"))
    with pytest.raises(BlobNotFound):
        photos.get(ref)  # the erased photo is gone ...
    assert env.store.probe_still_ref(case_id) == ref and stills.get(ref) == shared  # ... the case's still is not

    enrolled = jpeg(seed=11)
    other = stills.put(enrolled)
    assert photos.put(enrolled) == other
    env.store.record_search(candidate_list("nc:0", candidates=(), still_ref=other))  # a probe without candidates
    tell(enrolment("e3", [("gf-y", "subj-y", unit((2, 1.0)))], photo_refs=[other]))
    env.clock.advance(days=POLICY.no_candidate_days + 1)
    run_retention(env.store, stills, POLICY, env.clock())
    with pytest.raises(BlobNotFound):
        stills.get(other)  # the purged still is gone ...
    assert env.store.gallery_photo("gf-y") == other and photos.get(other) == enrolled  # ... the photo is not
    env.store.engine.dispose()
