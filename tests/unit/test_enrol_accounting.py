"""`rfr enrol` accounts for every file and row (issue 12, parts 2 and 6): formats by content, layout rules, manifest
rows by line number, exit codes, one photo under two subject ids, subject ids with surrounding spaces.

Fakes (tests/support/faces.py): a fake photo is JPEG magic + a script (``face:<n>``: one face of grey level n,
embedded one-hot, so two photos of one level are the same face); real image bytes are one face each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.faces import MODEL, FakeEmbedder, FakeExtractor, write
from support.stills import gif, heic, jpeg, tiff
from typer.testing import CliRunner

from rfr.gallery.base import check_subject_id
from rfr.gallery.enrol import Enroller, scan_folder, scan_manifest
from rfr.gallery.memory import InMemoryGallery
from rfr.tools.gallery_cli import app

runner = CliRunner()


@pytest.fixture
def issue_folder(tmp_path: Path) -> Path:
    """eve's only photos are .jfif/.tif/.heic; frank's JPEG sits one folder down; and the usual strays."""
    return write(tmp_path / "gallery", {
        "eve/a.jfif": jpeg(seed=1), "eve/b.tif": tiff(seed=2), "eve/c.heic": heic(seed=3), "eve/d.gif": gif(),
        "frank/2019/1.jpg": jpeg(seed=4), "grace/1.jpg": "face:5", "stray.jpg": jpeg(seed=6),
        "grace/.DS_Store": b"\x00\x00\x00\x01Bud1", "grace/Thumbs.db": b"\xd0\xcf\x11\xe0",
    })


def test_folder_scan_decides_by_content_and_reports_the_layout(issue_folder: Path) -> None:
    source = scan_folder(issue_folder)
    assert [(i.subject_id, i.source_ref) for i in source.items] == [
        ("eve", "eve/a.jfif"), ("eve", "eve/b.tif"), ("eve", "eve/c.heic"), ("grace", "grace/1.jpg")]
    assert [(p.source_ref, p.subject_id, p.reason) for p in source.skipped] == [
        ("eve/d.gif", "eve", "unsupported_format"), ("frank/2019/1.jpg", "frank", "nested_folder"),
        ("grace/.DS_Store", "grace", "hidden"), ("grace/Thumbs.db", "grace", "hidden"),
        ("stray.jpg", "", "not_in_subject_folder")]
    nested = next(p for p in source.skipped if p.reason == "nested_folder")
    assert "frank/2019/" in nested.detail and "move it into frank/" in nested.detail


def test_enrol_the_issue_folder_names_every_file_and_fails_unless_partial(cli_gallery: InMemoryGallery,
                                                                          issue_folder: Path) -> None:
    report = issue_folder.parent / "report.json"
    result = runner.invoke(app, ["enrol", str(issue_folder), "--no-progress", "--report", str(report)])
    assert result.exit_code == 1, result.output
    lines = {line.split()[2]: line.split()[:2] for line in result.stdout.splitlines() if line[:1].isalpha()}
    assert lines == {
        "eve/a.jfif": ["enrolled", "-"], "eve/b.tif": ["enrolled", "-"], "eve/c.heic": ["enrolled", "-"],
        "grace/1.jpg": ["enrolled", "-"], "eve/d.gif": ["skipped", "unsupported_format"],
        "frank/2019/1.jpg": ["skipped", "nested_folder"], "grace/.DS_Store": ["skipped", "hidden"],
        "grace/Thumbs.db": ["skipped", "hidden"], "stray.jpg": ["skipped", "not_in_subject_folder"]}
    assert ("enrol custody: 9 file(s): 4 enrolled, 0 already enrolled, 5 skipped (hidden 2, nested_folder 1, "
            "not_in_subject_folder 1, unsupported_format 1), 0 rejected, 0 warning(s)") in result.stderr
    summary = json.loads(report.read_text())
    assert (summary["files"], summary["enrolled"], summary["skipped"]) == (9, 4, 5)
    assert {s.subject_id: s.faces for s in cli_gallery.list_subjects()} == {"eve": 3, "grace": 1}

    again = runner.invoke(app, ["enrol", str(issue_folder), "--no-progress", "--allow-partial"])
    assert again.exit_code == 0, again.output
    assert "9 file(s): 0 enrolled, 4 already enrolled, 5 skipped" in again.stderr


def test_enrol_with_nothing_to_enrol_fails_even_when_partial_runs_are_allowed(cli_gallery: InMemoryGallery,
                                                                               tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["enrol", str(tmp_path / "empty"), "--no-progress", "--allow-partial"])
    assert empty.exit_code == 1 and "nothing to enrol" in empty.stderr
    only_gif = write(tmp_path / "g", {"ann/1.gif": gif()})
    result = runner.invoke(app, ["enrol", str(only_gif), "--no-progress", "--allow-partial"])
    assert result.exit_code == 1 and "no photo was enrolled" in result.stderr
    assert cli_gallery.count() == 0


def test_manifest_rows_are_rejected_by_line_number(tmp_path: Path) -> None:
    write(tmp_path, {"a.jpg": "face:1", "b.jpg": "face:2", "anim.gif": gif(), "c.jpg": "face:3"})
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,image_path,custody_ref\n"
                        "alice,a.jpg,C-1\n"
                        " bob,b.jpg,C-2\n"
                        "carol,c.jpg,C-3,surplus\n"
                        "dave,,C-4\n"
                        "erin,absent.jpg,C-5\n"
                        "frank,anim.gif,C-6\n"
                        "grace\n"
                        "heidi ,c.jpg,C-8\n")
    source = scan_manifest(manifest)
    assert [(p.line, p.reason) for p in source.rejected] == [
        (4, "malformed_row"), (5, "missing_image_path"), (6, "missing"), (7, "unsupported_format"),
        (8, "malformed_row")]
    assert [(i.line, i.subject_id) for i in source.items] == [(2, "alice"), (3, " bob"), (9, "heidi ")]
    report = Enroller(FakeExtractor(), FakeEmbedder(), InMemoryGallery(MODEL), "custody").run_source(source)
    assert (report.enrolled, report.files) == (1, 8)
    spaced = {p.line or 0: p for p in report.rejected if p.reason == "invalid_subject_id"}
    assert sorted(spaced) == [3, 9] and "leading or trailing white space" in spaced[3].detail


def test_manifest_lines_reach_the_cli_output(cli_gallery: InMemoryGallery, tmp_path: Path) -> None:
    write(tmp_path, {"a.jpg": "face:1"})
    (tmp_path / "m.csv").write_text("subject_id,image_path\nalice,a.jpg\nalice ,a.jpg\n")
    result = runner.invoke(app, ["enrol", str(tmp_path / "m.csv"), "--no-progress"])
    assert result.exit_code == 1
    assert any(line.startswith("rejected  invalid_subject_id    a.jpg (line 3)")
               for line in result.stdout.splitlines()), result.stdout


def test_subject_ids_are_never_stripped() -> None:
    for bad in (" alice", "alice ", "alice\n", "\talice"):
        with pytest.raises(ValueError, match="white space"):
            check_subject_id(bad)
    assert check_subject_id("alice") == "alice"


def test_same_bytes_under_two_subject_ids_in_one_run_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path, {"alice/1.jpg": "face:1", "bob/x.jpg": "face:1", "carol/1.jpg": "face:3"})
    gallery = InMemoryGallery(MODEL)
    report = Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody").run_source(scan_folder(root))
    assert [(p.source_ref, p.reason) for p in report.rejected] == [("alice/1.jpg", "shared_photo"),
                                                                   ("bob/x.jpg", "shared_photo")]
    assert "bob (bob/x.jpg)" in report.rejected[0].detail and "alice (alice/1.jpg)" in report.rejected[1].detail
    assert [s.subject_id for s in gallery.list_subjects()] == ["carol"]

    allowed = Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody", allow_shared_photo=True).run_source(
        scan_folder(root))
    assert (allowed.enrolled, len(allowed.rejected)) == (2, 0)
    assert [(w.source_ref, w.reason) for w in allowed.warnings] == [("alice/1.jpg", "shared_photo"),
                                                                    ("bob/x.jpg", "shared_photo")]


def test_a_photo_already_enrolled_for_another_subject_is_refused(tmp_path: Path) -> None:
    gallery = InMemoryGallery(MODEL)
    first = write(tmp_path / "run1", {"alice/1.jpg": "face:1"})
    Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody").run_source(scan_folder(first))
    # the same bytes, and a copy with other bytes but the same face (a re-save), under other ids in a later run
    second = write(tmp_path / "run2", {"bob/1.jpg": "face:1", "carol/copy.jpg": "face:01", "alice/2.jpg": "face:001"})
    report = Enroller(FakeExtractor(), FakeEmbedder(), gallery, "custody").run_source(scan_folder(second))
    assert [(p.source_ref, p.reason) for p in report.rejected] == [("bob/1.jpg", "shared_photo"),
                                                                   ("carol/copy.jpg", "shared_photo")]
    assert all("alice/1.jpg of subject alice" in p.detail for p in report.rejected)
    assert report.enrolled == 1  # alice's own re-saved copy is alice's photo
    assert {s.subject_id: s.faces for s in gallery.list_subjects()} == {"alice": 2}


def test_enrol_cli_refuses_a_shared_photo_unless_allowed(cli_gallery: InMemoryGallery, tmp_path: Path) -> None:
    root = write(tmp_path, {"alice/1.jpg": "face:1", "bob/1.jpg": "face:1"})
    refused = runner.invoke(app, ["enrol", str(root), "--no-progress"])
    assert refused.exit_code == 1 and refused.stdout.count("rejected  shared_photo") == 2
    assert cli_gallery.count() == 0
    allowed = runner.invoke(app, ["enrol", str(root), "--no-progress", "--allow-shared-photo"])
    assert allowed.exit_code == 0 and allowed.stdout.count("warning   shared_photo") == 2
    assert cli_gallery.count() == 2


@pytest.mark.parametrize("args", [["enrol", "SOURCE", "--watch-list", "bad-name", "--no-progress"],
                                  ["gallery", "count", "--watch-list", "bad-name"],
                                  ["gallery", "list", "--watch-list", "bad-name"],
                                  ["gallery", "delete", "someone", "--watch-list", "bad-name", "--yes"]])
def test_an_invalid_watch_list_name_is_a_usage_error_not_a_traceback(args: list[str], issue_folder: Path) -> None:
    result = runner.invoke(app, [str(issue_folder) if a == "SOURCE" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "watch-list name 'bad-name' must match" in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, no traceback
