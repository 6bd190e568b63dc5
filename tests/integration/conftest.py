"""Fixtures of the review store's integration tests (a module may define its own of the same name instead)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.review_data import Env, open_store

from rfr.core.blobstore import FileBlobStore


@pytest.fixture
def env(database_url: str) -> Env:
    """A migrated review store with its audit log and clock, on each backend (``database_url``)."""
    return open_store(database_url)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    """A blob store in the test's folder."""
    return FileBlobStore(tmp_path / "blobs")
