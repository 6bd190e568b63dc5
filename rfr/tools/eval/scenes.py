"""Degraded CCTV-like scenes from labelled face photos (``rfr degrade`` and the degraded conditions of ``rfr eval``).

A photo is first *framed* like an LFW image (face width 0.41 of the side, face centre at (0.50, 0.55)) from
its detected face box, so :func:`rfr.tools.degrade.place_in_scene` puts that face at exactly ``face_px`` wide and
returns the right ground-truth box, whatever the photo's own framing. Every scene draws its randomness from
a generator seeded by (seed, level, the image's name), so it is reproducible and independent of the order or
the subset of images processed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rfr.core.geometry import Box
from rfr.core.imaging import ImageLimits, decode_image
from rfr.tools.degrade import LEVELS, LFW_FACE_CENTER, LFW_FACE_FRACTION, place_in_scene, synthetic_background

logger = logging.getLogger(__name__)

Image = np.ndarray
FaceLocator = Callable[[Image], Box | None]


def parse_scene(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"scene size must look like 640x480, got {text!r}") from exc
    if w < 32 or h < 32:
        raise ValueError(f"scene {w}x{h} is too small")
    return w, h


def parse_levels(text: str) -> list[str]:
    """'mild,hard' -> ['mild', 'hard'] (each a name in :data:`rfr.tools.degrade.LEVELS`)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in LEVELS]
    if unknown:
        raise ValueError(f"unknown degradation level(s) {', '.join(unknown)}; known: {', '.join(LEVELS)}")
    return names


def scene_rng(seed: int, level: str, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{level}\x00{key}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def offset_from_truth(box: Box, truth: Box) -> float:
    """Distance between the centres of a detection box and the true face box, in true face widths."""
    (cx, cy), (tx, ty) = box.centre, truth.centre
    return float(np.hypot(cx - tx, cy - ty)) / max(1.0, truth.width)


def frame_like_lfw(photo: Image, box: Box | None) -> Image:
    """A square crop of ``photo`` in which the face has the LFW framing (padded by edge replication)."""
    if box is None:
        return photo
    x, y, w, h = box
    side = max(2, round(w / LFW_FACE_FRACTION))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = round(cx - LFW_FACE_CENTER[0] * side), round(cy - LFW_FACE_CENTER[1] * side)
    height, width = photo.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else photo
    return np.ascontiguousarray(padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side])


def make_scene(photo: Image, face_box: Box | None, level: str, face_px: float, scene_size: tuple[int, int],
               rng: np.random.Generator, background: Image | None = None) -> tuple[Image, Box]:
    """The degraded scene (RGB) and the true face box in it (on ``background``, else on a fresh texture)."""
    return place_in_scene(frame_like_lfw(photo, face_box), face_px, scene_size, level, rng, background=background)


def background_pool(scene_size: tuple[int, int], count: int, seed: int) -> list[Image]:
    """``count`` seeded scene textures to paste faces on (drawing one per scene costs more than the rest)."""
    return [synthetic_background(scene_size, np.random.default_rng([seed, 0xB6, i])) for i in range(count)]


def encode_png(rgb: Image) -> bytes:
    """Lossless, fast PNG (the degradation's own JPEG step, if any, is already in the pixels)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(buf)


@dataclass(frozen=True)
class DegradeJob:
    level: str
    face_px: float
    scene_size: tuple[int, int]
    seed: int = 0


def _images(root: Path) -> Iterator[Path]:
    from rfr.core.image_files import walk

    yield from (f.path for f in walk(root) if f.is_image)


TRUTH_FIELDS = ("scene", "source", "level", "face_px", "box_x", "box_y", "box_w", "box_h", "seed", "framed")


def degrade_folder(src: Path, dst: Path, job: DegradeJob, locate: FaceLocator | None,
                   limits: ImageLimits | None = None) -> int:
    """Write one PNG scene per image of ``src`` (same sub-folders) and ``dst/truth.csv``; return the count."""
    if job.level not in LEVELS:
        raise ValueError(f"unknown level {job.level!r}; known: {', '.join(LEVELS)}")
    dst.mkdir(parents=True, exist_ok=True)
    written = 0
    with (dst / "truth.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(TRUTH_FIELDS)
        for path in _images(src):
            rel = path.relative_to(src)
            photo = decode_image(path.read_bytes(), limits or ImageLimits()).rgb
            box = locate(photo) if locate is not None else None
            rng = scene_rng(job.seed, job.level, rel.as_posix())
            scene, truth = make_scene(photo, box, job.level, job.face_px, job.scene_size, rng)
            target = (dst / rel).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(scene))
            out.writerow([target.relative_to(dst).as_posix(), rel.as_posix(), job.level, job.face_px,
                          f"{truth.x:.1f}", f"{truth.y:.1f}", f"{truth.width:.1f}", f"{truth.height:.1f}",
                          job.seed, int(box is not None)])
            written += 1
    logger.info("wrote %d %s scenes (%.0f px faces) to %s", written, job.level, job.face_px, dst)
    return written
