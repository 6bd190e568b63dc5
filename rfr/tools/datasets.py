"""Public face data for the demo: LFW fetched once from its public mirrors into a local cache, checksum-verified.

``fetch_lfw`` returns a folder per identity (``Name/Name_0001.jpg``, LFW's layout). The default archive
(``settings.datasets``) is the one scikit-learn's ``fetch_lfw_people`` downloads (``sklearn/datasets/_lfw.py``:
``lfw.tgz`` on figshare, then the original at UMass; sha256 ``055f7d9c...d536c0``, about 180 MB, 13,233 images
of 5,749 people). Each URL is tried in order; the archive goes to a temporary file that is renamed only once
its sha256 matches, is extracted with tarfile's ``data`` filter (no path outside the target, no links out, no
devices) into a temporary folder that is renamed into place, and is then deleted. A second call finds the
folder and its ``.rfr-source.json`` (the archive's sha256) and does not touch the network.

Layout of the cache (``settings.datasets.dir``, default ``<RFR_MODEL_DIR>/datasets``)::

    lfw/<Name>/<Name>_0001.jpg ...     the identities
    lfw/.rfr-source.json               {"url": ..., "sha256": ...} of the archive it came from
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm  # type: ignore[import-untyped]

from rfr.models._store import atomic_output

logger = logging.getLogger(__name__)

SOURCE_FILE = ".rfr-source.json"
_CHUNK = 1 << 20


class DatasetUnavailableError(RuntimeError):
    """No URL delivered the archive (offline, refused, wrong checksum); the message lists each try."""


class DatasetIntegrityError(DatasetUnavailableError):
    """An archive did not match its pinned sha256, or held something unsafe or no faces; nothing was kept."""


def fetch_lfw(cache_dir: Path, urls: Sequence[str], sha256: str, *, timeout_s: float = 30.0,
              progress: bool = True) -> Path:
    """The LFW folder (one sub-folder per identity) under ``cache_dir``, downloaded on first use.

    ``urls`` and ``sha256``: ``settings.datasets.lfw_urls`` / ``lfw_sha256`` (scikit-learn's pins by default).
    ``timeout_s`` bounds connecting and each read (seconds). Raises :class:`DatasetUnavailableError` when no URL
    delivered (the message names every URL and why), :class:`DatasetIntegrityError` when the only archives
    received were refused (sha256 mismatch, unsafe member, no faces); no partial file is left either way.
    """
    target = cache_dir / "lfw"
    if _cached_sha256(target) == sha256:
        logger.debug("LFW from the cache at %s", target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    refused = False
    for url in urls:
        try:
            return _fetch_from(url, sha256, target, timeout_s=timeout_s, progress=progress)
        except DatasetIntegrityError as exc:
            refused = True
            failures.append(f"{url}: {exc}")
        except DatasetUnavailableError as exc:
            failures.append(f"{url}: {exc}")
    error = DatasetIntegrityError if refused else DatasetUnavailableError
    raise error("could not get LFW; tried:\n" + "\n".join(f"  - {f}" for f in failures))


def _cached_sha256(target: Path) -> str | None:
    try:
        source = json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(source.get("sha256")) if isinstance(source, dict) else None


def _fetch_from(url: str, sha256: str, target: Path, *, timeout_s: float, progress: bool) -> Path:
    archive = target.parent / "lfw.tgz"
    download_verified(url, archive, sha256, timeout_s=timeout_s, progress=progress)
    try:
        extract_identities(archive, target)
        (target / SOURCE_FILE).write_text(json.dumps({"url": url, "sha256": sha256}) + "\n", encoding="utf-8")
    finally:
        archive.unlink(missing_ok=True)
    logger.info("LFW from %s extracted to %s", url, target)
    return target


def download_verified(url: str, dest: Path, sha256: str, *, timeout_s: float = 30.0, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` through a temporary file renamed only when its sha256 is ``sha256``.

    Raises :class:`DatasetUnavailableError` on a network or HTTP error, :class:`DatasetIntegrityError` on a
    checksum mismatch; ``dest`` is then untouched and the temporary file deleted.
    """
    if urllib.parse.urlsplit(url).scheme not in ("https", "http", "file"):
        raise DatasetUnavailableError(f"unsupported URL scheme: {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "rfr-datasets/1"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp, atomic_output(dest) as out, \
                tqdm(total=_length(resp.headers.get("Content-Length")), unit="B", unit_scale=True,
                     desc=dest.name, disable=not progress, file=sys.stderr) as bar:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            if digest.hexdigest() != sha256:
                raise DatasetIntegrityError(
                    f"sha256 {digest.hexdigest()} does not match the pinned {sha256}: refused and deleted")
    except urllib.error.HTTPError as exc:
        raise DatasetUnavailableError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DatasetUnavailableError(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DatasetUnavailableError(f"{type(exc).__name__}: {exc}") from exc


def _length(header: str | None) -> int | None:
    return int(header) if header is not None and header.isdigit() else None


def extract_identities(archive: Path, target: Path) -> None:
    """Extract the tar.gz ``archive`` so that ``target`` is its folder of identity folders, atomically.

    The folder of identities is the archive's single top-level folder (``lfw/`` in lfw.tgz), else its root.
    Raises :class:`DatasetIntegrityError` for an unsafe member (tarfile's ``data`` filter: an absolute path,
    ``..``, a link out, a device) or an archive with no ``.jpg`` in any sub-folder; ``target`` is then untouched.
    """
    if not hasattr(tarfile, "data_filter"):
        raise DatasetUnavailableError("extracting archives safely needs Python 3.11.4 or later")
    work = Path(tempfile.mkdtemp(prefix=".lfw-", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(work, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetIntegrityError(f"cannot extract {archive.name}: {exc}") from exc
        entries = list(work.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else work
        if not any(root.glob("*/*.jpg")):
            raise DatasetIntegrityError(f"{archive.name} holds no folder of .jpg faces")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
