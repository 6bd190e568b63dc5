"""Enrolment with a fake face extractor and embedder (tests/support/faces.py): sources, rejections, several
faces, resumability, and the typer commands (enrol, gallery list|count|delete) wired to those fakes and the
in-memory gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.faces import MODEL, FakeEmbedder, FakeExtractor, crop, write
from typer.testing import CliRunner

from rfr.gallery.base import GalleryFace
from rfr.gallery.enrol import Enroller, items_from, items_from_folder, items_from_manifest, scan_folder
from rfr.gallery.extraction import Extraction, ExtractionRejected, FaceCrop, choose_face
from rfr.gallery.memory import InMemoryGallery
from rfr.tools.gallery_cli import app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write(tmp_path / "mugshots", {
        "alice/1.jpg": "face:1", "alice/2.jpg": "face:2", "bob/1.jpg": "two:3:4", "bob/notes.txt": b"x",
        "carol/1.jpg": "none", "carol/2.jpg": "blurry", "dave/1.jpg": "corrupt", "bad id!/1.jpg": "face:5",
    })


def test_folder_source_lists_images_per_subject(folder: Path) -> None:
    items = items_from_folder(folder)
    assert [(i.subject_id, i.source_ref) for i in items][:3] == [
        ("alice", "alice/1.jpg"), ("alice", "alice/2.jpg"), ("bad id!", "bad id!/1.jpg")]
    assert all(i.path.suffix == ".jpg" for i in items) and len(items) == 7
    source = scan_folder(folder)
    assert source.items == items
    assert [(p.source_ref, p.subject_id, p.reason) for p in source.skipped] == [
        ("bob/notes.txt", "bob", "unsupported_format")]


def test_manifest_source_keeps_metadata_and_resolves_relative_paths(tmp_path: Path) -> None:
    write(tmp_path, {"imgs/a.jpg": "face:1"})
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,image_path,custody_ref,notes\nalice,imgs/a.jpg,C-12,\n")
    [item] = items_from(manifest)
    assert item.subject_id == "alice" and item.path == tmp_path / "imgs/a.jpg"
    assert item.metadata == {"custody_ref": "C-12"} and item.source_ref == "imgs/a.jpg"
    (tmp_path / "bad.csv").write_text("name,file\nx,y\n")
    with pytest.raises(ValueError, match="subject_id"):
        items_from_manifest(tmp_path / "bad.csv")


def test_enrol_reports_rejections_keeps_largest_face_and_batches(folder: Path) -> None:
    gallery, embedder = InMemoryGallery(MODEL), FakeEmbedder()
    ticks: list[int] = []
    report = Enroller(FakeExtractor(), embedder, gallery, "custody", batch_size=2).run(
        items_from_folder(folder), progress=ticks.append)
    assert ticks == [2, 2, 2, 1] and report.images == 7
    assert report.enrolled == 3 and gallery.count() == 3
    assert report.reasons() == {"corrupt": 1, "invalid_subject_id": 1, "low_quality": 1, "no_face": 1}
    assert [w.source_ref for w in report.warnings] == ["bob/1.jpg"]
    assert embedder.calls == [2, 1]  # one embedding call per chunk with faces
    [bob] = [f for f in gallery._faces.values() if f.subject_id == "bob"]
    assert int(np.argmax(bob.vector)) == 4  # the larger face (level 4), not level 3
    assert {s.subject_id: s.faces for s in gallery.list_subjects()} == {"alice": 2, "bob": 1}
    summary = report.to_dict()
    assert summary["rejected"] == 4 and summary["subjects_enrolled"] == 2


def test_reject_policy_refuses_photos_with_several_faces(folder: Path) -> None:
    gallery = InMemoryGallery(MODEL)
    report = Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody", multi_face="reject").run(
        items_from_folder(folder))
    assert report.reasons()["multiple_faces"] == 1
    assert "bob" not in {s.subject_id for s in gallery.list_subjects()}


def test_enrolment_is_resumable(folder: Path) -> None:
    gallery, extractor = InMemoryGallery(MODEL), FakeExtractor()
    items = items_from_folder(folder)
    Enroller(extractor, FakeEmbedder(), gallery, "custody").run(items[:2])
    first_calls = extractor.calls
    report = Enroller(extractor, FakeEmbedder(), gallery, "custody").run(items)
    assert report.skipped_existing == 2 and report.enrolled == 1
    assert extractor.calls - first_calls == 4  # neither the two enrolled photos nor the bad subject id decoded
    assert gallery.count() == 3


def test_same_photo_twice_in_one_run_is_enrolled_once(tmp_path: Path) -> None:
    root = write(tmp_path, {"alice/1.jpg": "face:1", "alice/copy.jpg": "face:1"})
    gallery = InMemoryGallery(MODEL)
    report = Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody").run(items_from_folder(root))
    assert (report.enrolled, report.skipped_existing, gallery.count()) == (1, 1, 1)


def test_embedder_and_gallery_models_must_agree() -> None:
    with pytest.raises(ValueError, match="model"):
        Enroller(FakeExtractor(), FakeEmbedder(), InMemoryGallery("other-model"), "custody")


def test_choose_face() -> None:
    one = Extraction([FaceCrop(crop(1), 10.0)])
    assert choose_face(one, "reject").warning is None
    with pytest.raises(ExtractionRejected) as err:
        choose_face(Extraction([], gated=["blurry", "blurry", "too_small"]), "largest")
    assert (err.value.reason, err.value.detail) == ("low_quality", "blurry, too_small")


# --- the CLI ---------------------------------------------------------------------------------------------------
runner = CliRunner()


def test_enrol_then_list_count_delete(cli_gallery: InMemoryGallery, tmp_path: Path) -> None:
    root = write(tmp_path / "in", {"alice/1.jpg": "face:1", "alice/2.jpg": "face:2", "bob/1.jpg": "none"})
    report = tmp_path / "report.json"
    args = ["enrol", str(root), "--watch-list", "custody", "--no-progress", "--report", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # bob's photo was rejected: not a complete run
    assert "rejected  no_face" in result.output
    assert json.loads(report.read_text())["enrolled"] == 2
    assert json.loads(report.read_text())["watch_list"] == "custody"
    again = runner.invoke(app, [*args, "--allow-partial"])
    assert again.exit_code == 0, again.output
    assert json.loads(report.read_text())["skipped_existing"] == 2

    listed = runner.invoke(app, ["gallery", "list", "--json"])
    assert [json.loads(line) for line in listed.output.splitlines()] == [
        {"watch_list": "custody", "subject_id": "alice", "faces": 2}]
    assert runner.invoke(app, ["gallery", "count"]).output.strip() == "2"
    assert runner.invoke(app, ["gallery", "count", "--watch-list", "custody"]).output.strip() == "2"
    assert runner.invoke(app, ["gallery", "count", "-w", "wanted"]).output.strip() == "0"
    elsewhere = runner.invoke(app, ["gallery", "delete", "alice", "--watch-list", "wanted", "--yes"])
    assert elsewhere.exit_code == 1 and "from watch-list(s) wanted" in elsewhere.output and cli_gallery.count() == 2

    erased = runner.invoke(app, ["gallery", "delete", "alice", "--yes"])
    assert erased.exit_code == 0 and "erased 2 photo(s)" in erased.output
    assert cli_gallery.count() == 0
    assert runner.invoke(app, ["gallery", "delete", "alice", "--yes"]).exit_code == 1


def test_delete_asks_for_confirmation(cli_gallery: InMemoryGallery) -> None:
    cli_gallery.add([GalleryFace("f", "carol", "custody", np.ones(8, np.float32))])
    result = runner.invoke(app, ["gallery", "delete", "carol"], input="n\n")
    assert result.exit_code != 0 and cli_gallery.count() == 1


def test_enrol_refuses_a_bad_policy(cli_gallery: InMemoryGallery, tmp_path: Path) -> None:
    result = runner.invoke(app, ["enrol", str(tmp_path), "--multi-face", "first"])
    assert result.exit_code == 2 and cli_gallery.count() == 0
