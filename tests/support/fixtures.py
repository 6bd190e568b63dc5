"""Fixtures shared across test folders; ``tests/conftest.py`` loads this module as a plugin, so a test names
them as parameters without importing anything."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rfr.gallery import extraction, milvus
from rfr.gallery.memory import InMemoryGallery
from support.faces import MODEL, FakeEmbedder, FakeExtractor


@pytest.fixture
def cli_gallery(monkeypatch: pytest.MonkeyPatch) -> InMemoryGallery:
    """`rfr enrol` and `rfr gallery` wired to the fake extractor and embedder and one in-memory gallery."""
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
