"""Folder commands account for every file, decided by content (issue 12, part 2): rfr.core.image_files and `rfr submit`
against the ingest HTTP app in-process (real decoding; the Kafka publisher is a fake)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.ingest import submit_client
from support.stills import gif, heic, jpeg, tiff
from typer.testing import CliRunner

from rfr.core.image_files import SkipReason, count_reasons, scan, walk
from rfr.core.schemas import submission_id
from rfr.tools import submit as cli

KEY = "rfr_walk-test-key-0123456789abcdef"


@pytest.fixture
def issue_folder(tmp_path: Path) -> Path:
    """The issue's folder: two JPEGs named x.jfif and y.jpe, a TIFF, a GIF and a HEIC named z.heic."""
    root = tmp_path / "issue"
    root.mkdir()
    files = {"x.jfif": jpeg(seed=1), "y.jpe": jpeg(seed=2), "still.tif": tiff(seed=3), "anim.gif": gif(),
             "z.heic": heic(seed=4)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Everything a real export folder holds besides stills: hidden files, text, empty files, links, sub-folders."""
    root = tmp_path / "odd"
    (root / "day2" / "cam1").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "notes.jpg").write_text("a text file named like a photo")
    (root / "empty.png").write_bytes(b"")
    (root / "day2" / "cam1" / "deep.bin").write_bytes(jpeg(seed=6))
    (root / "a.JPG").write_bytes(jpeg(seed=7))
    (root / "again.jpg").symlink_to(root / "a.JPG")
    (root / "gone.jpg").symlink_to(root / "absent.jpg")
    (root / "day2" / "loop").symlink_to(root)
    os.mkfifo(root / "pipe.jpg")
    return root


def test_walk_decides_by_content_not_by_name(issue_folder: Path) -> None:
    found = {f.rel: (f.format, f.reason) for f in walk(issue_folder)}
    assert found == {"anim.gif": (None, SkipReason.UNSUPPORTED_FORMAT), "still.tif": ("tiff", None),
                     "x.jfif": ("jpeg", None), "y.jpe": ("jpeg", None), "z.heic": ("heic", None)}
    [gif_entry] = [f for f in walk(issue_folder) if f.reason]
    assert gif_entry.detail.startswith("a GIF image")


def test_walk_reports_every_other_entry_with_its_reason(odd_folder: Path) -> None:
    found = walk(odd_folder)
    assert {f.rel: (f.reason.value if f.reason else f.format) for f in found} == {
        ".DS_Store": "hidden", ".git": "hidden", "Thumbs.db": "hidden", "a.JPG": "jpeg", "again.jpg": "jpeg",
        "day2/cam1/deep.bin": "jpeg", "day2/loop": "symlink_loop", "empty.png": "empty",
        "gone.jpg": "broken_symlink", "notes.jpg": "unsupported_format", "pipe.jpg": "not_a_regular_file",
    }
    assert count_reasons(found) == {"broken_symlink": 1, "empty": 1, "hidden": 3, "not_a_regular_file": 1,
                                    "symlink_loop": 1, "unsupported_format": 1}


def test_scan_names_a_file_reached_twice_once_and_refuses_a_missing_path(odd_folder: Path) -> None:
    found = scan([odd_folder / "a.JPG", odd_folder])
    by_rel = {f.rel: f for f in found}
    assert len(found) == 12 and found[0].format == "jpeg"
    assert by_rel["again.jpg"].reason is SkipReason.SAME_FILE
    assert [f.reason for f in found if f.rel == "a.JPG"] == [None, SkipReason.SAME_FILE]
    with pytest.raises(FileNotFoundError, match="absent"):
        scan([odd_folder / "absent"])


# --- rfr submit --------------------------------------------------------------------------------------------------
@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return submit_client(tmp_path, monkeypatch, "shop-w", KEY)


def submit(*paths: Path, extra: tuple[str, ...] = ()) -> Any:
    args = ["submit", *map(str, paths), "--store", "s1", "--camera", "c1", "--api-key", KEY, "--no-progress", *extra]
    return CliRunner().invoke(cli.app, args)


def lines_by_name(stdout: str) -> dict[str, list[str]]:
    """file name -> the words of its line (id, status, reason...)."""
    return {Path(line.split()[-1]).name: line.split()[:-1] for line in stdout.strip().splitlines()}


def test_submit_the_issue_folder_accounts_for_every_file(issue_folder: Path, app_client: TestClient) -> None:
    result = submit(issue_folder)
    assert result.exit_code == 1, result.output
    lines = lines_by_name(result.stdout)
    assert sorted(lines) == ["anim.gif", "still.tif", "x.jfif", "y.jpe", "z.heic"]
    for name in ("x.jfif", "y.jpe", "still.tif", "z.heic"):
        assert lines[name][:2] == [submission_id("shop-w", (issue_folder / name).read_bytes()), "received"], name
    assert lines["anim.gif"][:3] == ["-", "skipped", "(unsupported_format:"]
    assert "5 file(s): 4 received, 0 duplicate, 1 skipped (unsupported_format 1), 0 rejected, 0 failed" in (
        result.stderr)
    assert "--allow-partial" in result.stderr

    again = submit(issue_folder, extra=("--allow-partial",))
    assert again.exit_code == 0, again.output
    assert [w[1] for w in lines_by_name(again.stdout).values()].count("duplicate") == 4


def test_submit_every_kind_of_skip_is_a_line_and_a_count(odd_folder: Path, app_client: TestClient) -> None:
    result = submit(odd_folder, extra=("--allow-partial",))
    assert result.exit_code == 0, result.output
    statuses = {name: words[1] for name, words in lines_by_name(result.stdout).items()}
    assert statuses == {".DS_Store": "skipped", ".git": "skipped", "Thumbs.db": "skipped", "a.JPG": "received",
                        "again.jpg": "duplicate", "deep.bin": "received", "loop": "skipped", "empty.png": "skipped",
                        "gone.jpg": "skipped", "notes.jpg": "skipped", "pipe.jpg": "skipped"}
    assert ("11 file(s): 2 received, 1 duplicate, 8 skipped (broken_symlink 1, empty 1, hidden 3, "
            "not_a_regular_file 1, symlink_loop 1, unsupported_format 1), 0 rejected, 0 failed") in result.stderr


def test_submit_without_any_image_fails_even_when_partial_runs_are_allowed(tmp_path: Path,
                                                                          app_client: TestClient) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = submit(empty, extra=("--allow-partial",))
    assert nothing.exit_code == 1 and "0 file(s)" in nothing.stderr and "no file found" in nothing.stderr
    (empty / "only.gif").write_bytes(gif())
    only_gif = submit(empty, extra=("--allow-partial",))
    assert only_gif.exit_code == 1 and "no file was received" in only_gif.stderr


def test_submit_counts_a_rejection_by_the_service(tmp_path: Path, app_client: TestClient) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(jpeg(seed=9))
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)  # a PNG by its magic, cut short
    strict = submit(folder)
    assert strict.exit_code == 1
    assert lines_by_name(strict.stdout)["cut.png"][1:3] == ["rejected", "(truncated)"]
    assert "2 file(s): 1 received, 0 duplicate, 0 skipped, 1 rejected, 0 failed" in strict.stderr
    assert submit(folder, extra=("--allow-partial",)).exit_code == 0
