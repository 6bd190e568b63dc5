"""rfr.core.blobstore: content addressing, idempotent puts, safe references, integrity on read."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfr.core.blobstore import BlobCorrupt, BlobNotFound, FileBlobStore, blob_ref


def test_put_get_delete_roundtrip(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    ref = store.put(b"still bytes")
    assert ref == blob_ref(b"still bytes") and ref.startswith("sha256:")
    assert store.put(b"still bytes") == ref  # idempotent
    assert store.get(ref) == b"still bytes"
    assert not list(store.path(ref).parent.glob(".tmp-*"))
    store.delete(ref)
    store.delete(ref)  # deleting twice is fine
    with pytest.raises(BlobNotFound):
        store.get(ref)


@pytest.mark.parametrize("ref", ["../../etc/passwd", "sha256:../../x", "sha256:" + "A" * 64, "md5:" + "0" * 32])
def test_malformed_references_never_touch_the_filesystem(tmp_path: Path, ref: str) -> None:
    with pytest.raises(ValueError):
        FileBlobStore(tmp_path).get(ref)


def test_tampered_blob_is_detected(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref = store.put(b"original")
    store.path(ref).write_bytes(b"changed")
    with pytest.raises(BlobCorrupt):
        store.get(ref)
