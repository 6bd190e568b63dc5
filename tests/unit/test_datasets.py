"""The demo gets its faces itself (issue 12, part 7): LFW downloaded once, sha256-verified, extracted safely.

A small tar.gz in LFW's layout (``lfw/Name/Name_0001.jpg``, tiny JPEGs made here) is served by an HTTP server on
127.0.0.1 that counts its requests; nothing else is contacted.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from rfr.core.image_files import identity_folders
from rfr.core.settings import DatasetsSettings, Settings
from rfr.tools import demo
from rfr.tools.datasets import DatasetIntegrityError, DatasetUnavailableError, fetch_lfw

PEOPLE = {"Ada_Example": 2, "Bo_Example": 1, "Cy_Example": 3}


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels)
    assert ok
    return bytes(buf)


def tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


LFW_MEMBERS = {f"lfw/{name}/{name}_{i:04d}.jpg": jpeg(hash((name, i)) % 1000)
               for name, count in PEOPLE.items() for i in range(1, count + 1)}
ARCHIVE = tar_gz(LFW_MEMBERS)
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


@dataclass
class Server:
    base: str
    routes: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Serves ``routes`` (path -> bytes, 404 otherwise) on 127.0.0.1, counting GETs per path; no proxy."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    state = Server("", {"/lfw.tgz": ARCHIVE})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            body = state.routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def no_local_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a user's fresh clone: no ../shared/faces/lfw, no RFR_DEMO_DATA."""
    monkeypatch.delenv("RFR_DEMO_DATA", raising=False)
    monkeypatch.setattr(demo, "find_lfw", lambda explicit: None)


def settings_for(tmp_path: Path, urls: list[str], sha256: str = SHA256) -> Settings:
    return Settings(model_dir=tmp_path / "models", datasets=DatasetsSettings(lfw_urls=urls, lfw_sha256=sha256))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/lfw.tgz"


@pytest.mark.usefixtures("no_local_faces")
def test_download_is_verified_extracted_cached_and_feeds_the_demo(tmp_path: Path, server: Server) -> None:
    settings = settings_for(tmp_path, [f"{server.base}/lfw.tgz"])
    root = demo.faces_source(settings, None, progress=False)

    assert root == tmp_path / "models" / "datasets" / "lfw"
    people = identity_folders(root)
    assert {name: len(photos) for name, photos in people.items()} == PEOPLE
    assert people["Cy_Example"][0].name == "Cy_Example_0001.jpg"
    photo = cv2.imread(str(people["Ada_Example"][1]))
    assert photo is not None and photo.shape == (24, 24, 3)
    enrolled, strangers = demo.pick_split(root, identities=2, strangers=1, seed=7)
    assert sorted(p[0].parent.name for p in enrolled) == ["Ada_Example", "Cy_Example"]
    assert [p.parent.name for p in strangers] == ["Bo_Example"]
    # the archive and every temporary file are gone: only the faces and the source record remain
    assert [p.relative_to(root).as_posix() for p in files_under(tmp_path / "models")] == sorted(
        [".rfr-source.json", *(m.removeprefix("lfw/") for m in LFW_MEMBERS)])

    assert demo.faces_source(settings, None, progress=False) == root  # second call: the cache, no download
    assert server.hits == Counter({"/lfw.tgz": 1})


def test_a_wrong_checksum_is_refused_and_leaves_no_file(tmp_path: Path, server: Server) -> None:
    cache = tmp_path / "datasets"
    with pytest.raises(DatasetIntegrityError, match=f"does not match the pinned {'0' * 64}: refused and deleted"):
        fetch_lfw(cache, [f"{server.base}/lfw.tgz"], "0" * 64, progress=False)
    assert files_under(cache) == []
    assert fetch_lfw(cache, [f"{server.base}/lfw.tgz"], SHA256, progress=False) == cache / "lfw"  # not poisoned
    assert server.hits["/lfw.tgz"] == 2


@pytest.mark.usefixtures("no_local_faces")
def test_the_demo_names_a_refused_archive(tmp_path: Path, server: Server) -> None:
    with pytest.raises(demo.NoFacesError, match="does not match the pinned"):
        demo.faces_source(settings_for(tmp_path, [f"{server.base}/lfw.tgz"], "f" * 64), None, progress=False)
    assert files_under(tmp_path) == []


def test_an_archive_escaping_its_folder_is_refused(tmp_path: Path, server: Server) -> None:
    evil = tar_gz({"lfw/Ada_Example/Ada_Example_0001.jpg": jpeg(1), "../../escaped.jpg": jpeg(2)})
    server.routes["/evil.tgz"] = evil
    cache = tmp_path / "a" / "b" / "datasets"
    with pytest.raises(DatasetIntegrityError, match="cannot extract"):
        fetch_lfw(cache, [f"{server.base}/evil.tgz"], hashlib.sha256(evil).hexdigest(), progress=False)
    assert files_under(tmp_path) == []


def test_the_next_mirror_is_tried_when_one_fails(tmp_path: Path, server: Server) -> None:
    urls = [closed_port_url(), f"{server.base}/missing.tgz", f"{server.base}/lfw.tgz"]
    root = fetch_lfw(tmp_path, urls, SHA256, progress=False)
    assert set(identity_folders(root)) == set(PEOPLE)
    assert server.hits == Counter({"/missing.tgz": 1, "/lfw.tgz": 1})


@pytest.mark.usefixtures("no_local_faces")
def test_offline_the_demo_says_what_it_tried_and_how_to_use_a_local_folder(
        tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    dead, missing = closed_port_url(), f"{server.base}/missing.tgz"
    with pytest.raises(DatasetUnavailableError) as raised:
        fetch_lfw(tmp_path / "datasets", [dead, missing], SHA256, progress=False)
    assert not isinstance(raised.value, DatasetIntegrityError)
    assert files_under(tmp_path) == []

    monkeypatch.setenv("RFR_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("RFR_DATASETS__LFW_URLS", f'["{dead}", "{missing}"]')
    result = CliRunner().invoke(demo.app, [])
    assert result.exit_code == 2
    trying, message = result.stderr.split("\n", 1)
    assert trying.startswith("no local faces: fetching LFW")
    assert message.startswith("no labelled faces found: put LFW-style data (a folder per identity) at "
                              "../shared/faces/lfw, or pass --data DIR / set RFR_DEMO_DATA")
    assert f"  - {dead}: " in message and "refused" in message.lower()
    assert f"  - {missing}: HTTP 404" in message
    assert "pass --data DIR or set RFR_DEMO_DATA=DIR" in message and "RFR_DATASETS__LFW_URLS" in message
    assert files_under(tmp_path / "models") == []


@pytest.mark.usefixtures("no_local_faces")
def test_no_download_when_it_is_off_or_a_named_folder_is_missing(tmp_path: Path, server: Server) -> None:
    off = Settings(model_dir=tmp_path, datasets=DatasetsSettings(lfw_urls=[f"{server.base}/lfw.tgz"], download=False))
    with pytest.raises(demo.NoFacesError, match="RFR_DATASETS__DOWNLOAD=false"):
        demo.faces_source(off, None, progress=False)
    with pytest.raises(demo.NoFacesError, match="nowhere \\(from --data or RFR_DEMO_DATA\\) is not a folder"):
        demo.faces_source(settings_for(tmp_path, [f"{server.base}/lfw.tgz"]), tmp_path / "nowhere", progress=False)
    assert server.hits == Counter()
