"""The model cache on disk: file records, hashing, atomic writes and ``manifest.json``.

Layout of ``model_dir`` (``settings.model_dir``, env ``RFR_MODEL_DIR``)::

    manifest.json                  name -> {"path": <relative to model_dir>, "sha256": ..., "source": ...}
    mediapipe/*.tflite             BlazeFace detectors
    facenet/*.pb, facenet/*.pt     FaceNet source graph and converted PyTorch state dicts
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ModelMissingError(RuntimeError):
    """A model file is not where it should be; the message says how to get it."""


class ModelIntegrityError(ModelMissingError):
    """A model file exists but its sha256 does not match the pin or the manifest."""


class ModelSourceUnavailableError(RuntimeError):
    """A model source (PyPI, the official URLs) could not be reached or did not deliver."""


@dataclass(frozen=True)
class ModelFile:
    """One file in the model cache. ``path`` is absolute; the manifest stores it relative to ``model_dir``."""

    name: str
    path: Path
    sha256: str
    source: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file handle whose content replaces ``dest`` only if the block exits cleanly.

    The temporary file lives next to ``dest`` (same filesystem) and is renamed over it with ``os.replace``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def copy_verified(src: Readable, dest: Path, expected_sha256: str | None, *, what: str) -> str:
    """Stream ``src`` into ``dest`` atomically and return its sha256.

    With ``expected_sha256`` set, a mismatch raises :class:`ModelIntegrityError` and leaves ``dest`` untouched.
    """
    digest = hashlib.sha256()
    with atomic_output(dest) as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise ModelIntegrityError(
                f"{what}: sha256 {actual} does not match the pinned {expected_sha256}; refusing to install it "
                f"as {dest}. The source may have been tampered with or corrupted in transit."
            )
    return actual


def read_manifest(model_dir: Path) -> dict[str, ModelFile]:
    """Load ``<model_dir>/manifest.json`` (empty when absent). A corrupt manifest raises ModelIntegrityError."""
    path = model_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{path} is unreadable ({exc}); run `rfr models fetch --force`") from exc
    if not isinstance(raw, dict):
        raise ModelIntegrityError(f"{path} is not a JSON object; run `rfr models fetch --force`")
    files: dict[str, ModelFile] = {}
    for name, entry in raw.items():
        try:
            files[name] = ModelFile(
                name=name,
                path=model_dir / str(entry["path"]),
                sha256=str(entry["sha256"]),
                source=str(entry["source"]),
            )
        except (KeyError, TypeError) as exc:
            raise ModelIntegrityError(f"{path}: bad entry {name!r}; run `rfr models fetch --force`") from exc
    return files


def write_manifest(model_dir: Path, files: dict[str, ModelFile]) -> None:
    """Write the manifest atomically; paths are stored relative to ``model_dir`` so the cache can move."""
    payload = {
        name: {"path": _relative(model_dir, mf.path), "sha256": mf.sha256, "source": mf.source}
        for name, mf in sorted(files.items())
    }
    with atomic_output(model_dir / MANIFEST_NAME) as out:
        out.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def verify_model_file(model_dir: Path, path: Path) -> ModelFile:
    """Check ``path`` against its manifest entry (for services, at model load); return the entry.

    Raises ModelIntegrityError when the file has no manifest entry or its sha256 differs.
    """
    resolved = path.resolve()
    for entry in read_manifest(model_dir).values():
        if entry.path.resolve() == resolved:
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise ModelIntegrityError(
                    f"{path}: sha256 {actual} differs from the manifest ({entry.sha256}); the file changed "
                    "after it was fetched. Run `rfr models fetch --force` to restore it."
                )
            return entry
    raise ModelIntegrityError(
        f"{path} is not recorded in {model_dir / MANIFEST_NAME}; run `rfr models fetch` to (re)build the cache"
    )


def _relative(model_dir: Path, path: Path) -> str:
    try:
        return path.relative_to(model_dir).as_posix()
    except ValueError:
        return str(path)


@contextlib.contextmanager
def cache_lock(model_dir: Path) -> Iterator[None]:
    """Exclusive advisory lock on the cache so concurrent fetches do not interleave manifest updates."""
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    with (model_dir / ".lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
