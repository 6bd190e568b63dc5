"""Fixtures shared across test folders; ``tests/conftest.py`` loads this module as a plugin, so a test names
them as parameters without importing anything."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rfr.cluster.store import ClusterStore
from rfr.core.blobstore import FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.review_messages import GalleryChange
from rfr.core.settings import Settings, gallery_blob_dir
from rfr.gallery import extraction, milvus
from rfr.gallery.memory import InMemoryGallery
from rfr.tools import gallery_events
from support.faces import MODEL, FakeEmbedder, FakeExtractor


@dataclass
class Announcements:
    """Stands in for :func:`rfr.tools.gallery_events.announce`: records what `rfr enrol` and `rfr gallery delete`
    would have told the review service (``changes``, in order), or raises ``fail`` (e.g. ``BrokerUnavailable``)
    without recording. ``blobs``: the blob store (``<blob_dir>/gallery``) the commands keep the photos in."""

    blobs: FileBlobStore
    changes: list[GalleryChange] = field(default_factory=list)
    calls: int = 0
    fail: Exception | None = None

    def __call__(self, _settings: Any, changes: Sequence[GalleryChange], **_kw: Any) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        self.changes.extend(changes)


@pytest.fixture
def announcements(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Announcements:
    """The announcer of the gallery commands replaced by a recorder, and their blob store (``RFR_BLOB_DIR``) in a
    temporary folder of its own (outside the test's ``tmp_path``, which a test may enrol from)."""
    blob_dir = tmp_path_factory.mktemp("blobs")
    monkeypatch.setenv("RFR_BLOB_DIR", str(blob_dir))
    recorder = Announcements(FileBlobStore(gallery_blob_dir(Settings(blob_dir=blob_dir))))
    monkeypatch.setattr(gallery_events, "announce", recorder)
    return recorder


@pytest.fixture
def cli_gallery(monkeypatch: pytest.MonkeyPatch, announcements: Announcements) -> InMemoryGallery:
    """`rfr enrol` and `rfr gallery` wired to the fake extractor and embedder and one in-memory gallery; what they
    announce goes to the ``announcements`` recorder (name that fixture too to read it)."""
    g = InMemoryGallery(MODEL)

    def fake_open(_settings: Any, model_id: str | None = None, weights_sha256: str = "") -> InMemoryGallery:
        return g

    monkeypatch.setattr(milvus, "open_gallery", fake_open)
    monkeypatch.setattr(extraction, "PipelineExtractor", lambda _s: FakeExtractor())
    monkeypatch.setattr(extraction, "load_embedder", lambda _s: FakeEmbedder())
    return g


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of its own for one test's metrics, read back through its public API (``get_sample_value``,
    or :func:`support.metrics.sample`)."""
    return CollectorRegistry()


@pytest.fixture
def cluster_store(tmp_path: Path) -> Iterator[ClusterStore]:
    """A cluster store (rfr/cluster/store.py) on a new SQLite file, ``tmp_path / "cluster.db"``, closed after."""
    store = ClusterStore.open(sqlite_url(tmp_path / "cluster.db"))
    yield store
    store.close()
