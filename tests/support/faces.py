"""Fakes of the face models (detector, embedder) and of enrolment's face extractor, and fake gallery photos.

A fake photo is JPEG magic bytes followed by a script the fake extractor reads (``face:<n>``...): which files are
photos is decided by content, so every fake photo must look like a JPEG to a folder scan. With
``FakeEmbedder(by="grey_level")`` two photos of one level are "the same face" (cosine 1), of two levels strangers.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from rfr.face.detector import Detection
from rfr.gallery.extraction import Extraction, ExtractionRejected, FaceCrop

MODEL = "facenet-fake"
MAGIC = b"\xff\xd8\xff"  # what makes rfr.core.image_headers.sniff_format call the bytes a JPEG


def crop(level: int) -> np.ndarray:
    """An aligned 160 x 160 crop of one grey level."""
    return np.full((160, 160, 3), level, dtype=np.uint8)


class FakeEmbedder:
    """The ``Embedder`` protocol without a model; each forward pass's batch size is recorded in ``calls``.

    ``by="colour"``: each crop's mean R, G, B (+1) in the first three dimensions, normalised, so red, green and
    blue crops point along axes 0, 1, 2. ``by="grey_level"``: one-hot at the crop's mean grey level, so two crops
    of one level are the same face (cosine 1) and of two levels strangers (cosine 0). ``fail`` raises as a lost
    device would; ``nan_rows`` come back as NaN.
    """

    model_id = MODEL
    weights_sha256 = "ab" * 32
    dim = 512

    def __init__(self, by: Literal["colour", "grey_level"] = "grey_level", *, fail: bool = False,
                 nan_rows: Sequence[int] = ()) -> None:
        self.by = by
        self.fail = fail
        self.nan_rows = list(nan_rows)
        self.calls: list[int] = []

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        if self.fail:
            raise RuntimeError("device lost")
        out = np.zeros((len(crops), self.dim), dtype=np.float32)
        if self.by == "colour":
            out[:, :3] = crops.reshape(len(crops), -1, 3).mean(axis=1) + 1.0
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        else:
            levels = crops.reshape(len(crops), -1).mean(axis=1).astype(int)
            out[np.arange(len(crops)), levels % self.dim] = 1.0
        out[self.nan_rows] = np.nan
        return out


class FakeExtractor:
    """Image bytes are MAGIC + a script: "face:<n>", "two:<n>:<m>", "none", "blurry", "corrupt"; real image bytes
    are one face whose level (16..63) comes from their CRC. ``calls`` counts the images read."""

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
            return Extraction([], gated=["blurry"])
        if kind == "corrupt":
            raise ExtractionRejected("corrupt", "bad JPEG")
        return Extraction()

    def close(self) -> None:
        return None


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Files under ``root``: a str is a fake photo's script (written after MAGIC), bytes are written as they are."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(MAGIC + data.encode() if isinstance(data, str) else data)
    return root


class GridDetector:
    """``n`` frontal ``face`` px faces laid out on a grid of ``cell`` px cells across an image ``width`` wide
    (8 x 5 cells of 150 px fit a 1200 x 750 still)."""

    def __init__(self, n: int, width: int = 1200, cell: int = 150, face: int = 64) -> None:
        self.n, self.width, self.cell, self.face = n, width, cell, face

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        found = []
        per_row, cell, face = self.width // self.cell, self.cell, self.face
        for i in range(self.n):
            x, y = (i % per_row) * cell + 40, (i // per_row) * cell + 40
            eyes_y = y + 0.4 * face
            points = ((x + 0.3 * face, eyes_y), (x + 0.7 * face, eyes_y), (x + 0.5 * face, y + 0.6 * face),
                      (x + 0.5 * face, y + 0.8 * face), (x, eyes_y), (x + face, eyes_y))
            found.append(Detection((float(x), float(y), float(face), float(face)), 0.9, points))
        return found


def first_photos(lfw_dir: Path, count: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    """The first photo (RGB uint8) of ``count`` labelled identities drawn with ``seed``."""
    import cv2

    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())
    chosen = sorted(np.random.default_rng(seed).choice(len(people), size=count, replace=False))
    out = []
    for i in chosen:
        bgr = cv2.imread(str(sorted(people[i].glob("*.jpg"))[0]))
        assert bgr is not None
        out.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    return out
