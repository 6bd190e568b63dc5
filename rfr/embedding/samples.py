"""Aligned-crop stand-ins for tests, benchmarks and evaluation while no detector output is at hand.

LFW images (150x150 here) are centred on the face, so a centre square resized to 160x160 approximates the
aligned crop the detect service produces. Real pipeline crops come from the FACES topic.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.image_files import identity_folders
from rfr.embedding.embedder import CROP_SIZE

LFW_CENTRE_FRACTION = 0.55  # of the side (~82 of 150 px): best same/different separation on LFW (AUC 0.999)


def centre_crop(path: Path, fraction: float = LFW_CENTRE_FRACTION, size: int = CROP_SIZE) -> npt.NDArray[np.uint8]:
    """The centre square (``fraction`` of the shorter side) of the image at ``path``, as ``size`` x ``size`` RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    h, w = bgr.shape[:2]
    side = max(1, round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    square = bgr[top : top + side, left : left + side]
    resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)
    return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def lfw_people(lfw_dir: Path, min_images: int = 2, limit: int | None = None) -> list[list[Path]]:
    """Image paths per person (sorted, deterministic) for people with at least ``min_images`` images."""
    people: list[list[Path]] = []
    for images in identity_folders(lfw_dir).values():
        if len(images) >= min_images:
            people.append(images)
            if limit is not None and len(people) >= limit:
                break
    return people


