"""A content-addressed blob store for the claim-check pattern: big stills travel by reference, not inline.

Ingest puts a still that is larger than ``settings.ingest.inline_max_bytes`` here and sends its reference
in ``FrameEvent.image_ref``; detect reads it back with :meth:`BlobStore.get`.

References are ``sha256:<64 hex digits>`` of the content, so the same bytes always get the same reference,
``put`` is idempotent and a reader can verify what it got. :class:`FileBlobStore` keeps each blob at
``<blob_dir>/<2 hex>/<2 hex>/<64 hex>``, written to a temporary file and renamed, so a reader never sees a
partial blob. Any store with the same three methods (an object store, a shared volume) can replace it.
Nothing is deleted automatically: a retention job calls :meth:`BlobStore.delete`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

REF_PREFIX = "sha256:"
_REF = re.compile(r"^sha256:([0-9a-f]{64})$")


class BlobNotFound(KeyError):
    """No blob has this reference (never stored, or deleted)."""


class BlobCorrupt(RuntimeError):
    """The stored bytes do not hash to their reference."""


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data``; return its reference (the same for the same bytes)."""
        ...

    def get(self, ref: str) -> bytes:
        """The bytes stored under ``ref``; raises BlobNotFound, BlobCorrupt or ValueError (malformed ref)."""
        ...

    def delete(self, ref: str) -> None:
        """Remove the blob; deleting an absent blob is not an error."""
        ...

    def check(self) -> None:
        """Raise ``OSError`` when the store cannot be written or read now (the stages' dependency check)."""
        ...


def blob_ref(data: bytes) -> str:
    return REF_PREFIX + hashlib.sha256(data).hexdigest()


def _digest(ref: str) -> str:
    match = _REF.match(ref)
    if match is None:
        raise ValueError(f"not a blob reference: {ref[:80]!r}")
    return match.group(1)


class FileBlobStore:
    """Blobs as files under ``root`` (``settings.blob_dir``)."""

    def __init__(self, root: Path, *, verify: bool = True) -> None:
        self.root = root
        self.verify = verify

    def path(self, ref: str) -> Path:
        digest = _digest(ref)
        return self.root / digest[:2] / digest[2:4] / digest

    def check(self) -> None:
        """Write and remove a probe file under ``root``: ``OSError`` when it is missing, read-only or full."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".check-"):
            pass

    def put(self, data: bytes) -> str:
        ref = blob_ref(data)
        target = self.path(ref)
        if target.exists():
            return ref
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("stored blob %s (%d bytes)", ref, len(data))
        return ref

    def get(self, ref: str) -> bytes:
        try:
            data = self.path(ref).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(ref) from exc
        if self.verify and blob_ref(data) != ref:
            raise BlobCorrupt(f"blob {ref} does not match its content")
        return data

    def delete(self, ref: str) -> None:
        self.path(ref).unlink(missing_ok=True)
