"""`rfr submit`: folder walking, one request per file, ids printed, exit codes (HTTP app in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.ingest import submit_client
from support.stills import jpeg
from typer.testing import CliRunner

from rfr.core.schemas import submission_id
from rfr.tools import submit as cli

KEY = "rfr_cli-test-key-0123456789abcdef"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "stills"
    (root / "day2").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg(seed=1))
    (root / "day2" / "b.JPEG").write_bytes(jpeg(seed=2))
    (root / "day2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (root / "notes.txt").write_text("not an image, skipped when walking a folder")
    return root


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return submit_client(tmp_path, monkeypatch, "shop-c", KEY)


def test_collect_files_walks_folders_for_images(folder: Path) -> None:
    files = cli.collect_files([folder, folder / "notes.txt"])
    assert [f.name for f in files] == ["a.jpg", "b.JPEG", "broken.png", "notes.txt"]
    with pytest.raises(FileNotFoundError):
        cli.collect_files([folder / "absent"])


def test_submit_prints_ids_and_fails_on_a_rejected_file(folder: Path, app_client: TestClient) -> None:
    args = ["submit", str(folder), "--store", "s1", "--camera", "c1", "--api-key", KEY, "--no-progress"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == [submission_id("shop-c", (folder / "a.jpg").read_bytes()), "received"]
    assert lines[1].split()[1] == "received"
    assert "rejected (truncated)" in lines[2]
    again = CliRunner().invoke(cli.app, ["submit", str(folder / "a.jpg"), *args[2:]])
    assert again.exit_code == 0 and "duplicate" in again.stdout


def test_submit_stops_on_a_refused_key(folder: Path, app_client: TestClient) -> None:
    result = CliRunner().invoke(cli.app, ["submit", str(folder / "a.jpg"), "--store", "s", "--camera", "c",
                                          "--api-key", "rfr_wrong", "--no-progress"])
    assert result.exit_code == 2 and "refused" in result.stderr
    no_key = CliRunner().invoke(cli.app, ["submit", str(folder), "--store", "s", "--camera", "c"],
                                env={"RFR_API_KEY": ""})
    assert no_key.exit_code == 2
