"""Fakes shared by the enrolment unit tests (import as ``from data.enrol_fakes import ...``).

A fake photo is JPEG magic bytes followed by a script the fake extractor reads (``face:<n>``...): which files are
photos is decided by content, so every fake photo must look like a JPEG to the folder scan. The fake embedder
makes a one-hot vector from the crop's grey level, so two photos of one level are "the same face" (cosine 1).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rfr.gallery import extraction as pipeline
from rfr.gallery import milvus as milvus_gallery
from rfr.gallery.extraction import Extraction, ExtractionRejected, FaceCrop
from rfr.gallery.memory import InMemoryGallery

MODEL = "facenet-fake"
MAGIC = b"\xff\xd8\xff"  # what makes rfr.core.image_headers.sniff_format call the bytes a JPEG


def crop(level: int) -> np.ndarray:
    return np.full((160, 160, 3), level, dtype=np.uint8)


class FakeExtractor:
    """Image bytes are MAGIC + a script: "face:<n>", "two:<n>:<m>", "none", "blurry", "corrupt"; real image bytes
    are one face whose level (16..63) comes from their CRC."""

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, data: bytes) -> Extraction:
        self.calls += 1
        try:
            kind, *args = data.removeprefix(MAGIC).decode().split(":")
        except UnicodeDecodeError:
            kind, args = "face", [str(16 + zlib.crc32(data) % 48)]
        if kind == "face":
            return Extraction([FaceCrop(crop(int(args[0])), 100.0)])
        if kind == "two":
            return Extraction([FaceCrop(crop(int(args[0])), 50.0), FaceCrop(crop(int(args[1])), 900.0)])
        if kind == "blurry":
            return Extraction([], gated=["blur"])
        if kind == "corrupt":
            raise ExtractionRejected("corrupt", "bad JPEG")
        return Extraction()

    def close(self) -> None:
        return None


class FakeEmbedder:
    model_id = MODEL
    weights_sha256 = "cd" * 32
    dim = 64

    def __init__(self) -> None:
        self.batches: list[int] = []

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(len(crops))
        out = np.zeros((len(crops), self.dim), dtype=np.float32)
        levels = crops.reshape(len(crops), -1).mean(axis=1).astype(int)
        out[np.arange(len(crops)), levels % self.dim] = 1.0
        return out


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Files under ``root``: a str is a fake photo's script (written after MAGIC), bytes are written as they are."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(MAGIC + data.encode() if isinstance(data, str) else data)
    return root


@pytest.fixture
def cli_gallery(monkeypatch: pytest.MonkeyPatch) -> InMemoryGallery:
    """`rfr enrol` and `rfr gallery` wired to the fakes and one in-memory gallery."""
    g = InMemoryGallery(MODEL)

    def fake_open(_settings: Any, model_id: str | None = None, weights_sha256: str = "") -> InMemoryGallery:
        return g

    monkeypatch.setattr(milvus_gallery, "open_gallery", fake_open)
    monkeypatch.setattr(pipeline, "PipelineExtractor", lambda _s: FakeExtractor())
    monkeypatch.setattr(pipeline, "load_embedder", lambda _s: FakeEmbedder())
    return g
