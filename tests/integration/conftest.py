"""Fixtures of the integration tests: the review store's, and the detector model (a module may define its own of
the same name instead)."""

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


@pytest.fixture(scope="module")
def detector_model(model_dir: Path) -> Path:
    """The BlazeFace short-range model file; the test skips when it is not provisioned (``rfr models fetch``)."""
    from rfr.models import ModelMissingError, detector_model_path

    try:
        return detector_model_path(model_dir)
    except ModelMissingError as exc:
        pytest.skip(str(exc))

