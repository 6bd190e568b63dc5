"""Ingest's acceptance path on temporary storage, and `rfr submit` talking to the HTTP app in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits
from rfr.core.topics import Topics
from services.ingest.accept import Ingestor
from services.ingest.app import HttpContext, create_app
from services.ingest.auth import ApiKeyRegistry, hash_key
from services.ingest.metrics import IngestMetrics
from services.ingest.store import SqliteSubmissionStore
from support.kafka import FakePublisher


def make_ingestor(tmp: Path, limits: ImageLimits | None = None, inline_max_bytes: int = 700 * 1024,
                  namespace: str = "t", registry: CollectorRegistry | None = None) -> Ingestor:
    """An ingestor with its SQLite store and blobs under ``tmp``; its metrics in ``registry`` (else a new one)."""
    metrics = IngestMetrics.create(registry or CollectorRegistry())
    return Ingestor(Topics(namespace), SqliteSubmissionStore(tmp / "ingest.db"), FileBlobStore(tmp / "blobs"),
                    metrics, limits or ImageLimits(max_bytes=1 << 20), inline_max_bytes)


def submit_client(tmp: Path, monkeypatch: pytest.MonkeyPatch, retailer: str, key: str) -> TestClient:
    """The ingest HTTP app in-process (``retailer`` holding ``key``, a fake publisher), and every
    ``httpx.Client`` that `rfr submit` opens replaced by a client of that app."""
    ctx = HttpContext(make_ingestor(tmp / "svc"), ApiKeyRegistry(f"{retailer}:{hash_key(key)}"),
                      FakePublisher(), max_files=4, max_request_bytes=1 << 22)
    client = TestClient(create_app(ctx))

    def fake_client(**kw: Any) -> TestClient:
        client.headers.update(kw.get("headers", {}))
        return client

    monkeypatch.setattr(httpx, "Client", fake_client)
    return client
