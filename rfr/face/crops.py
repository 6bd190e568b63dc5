"""Aligned face crops on the wire: the JPEG that detect writes into ``FaceEvent.crop_jpeg`` and embed reads back.

Enrolment (:mod:`rfr.gallery.extraction`) sends a gallery photo's crop through the same encode and decode, so a
gallery template and a probe template of the same crop are computed from the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.errors import ReasonedError
from rfr.core.imaging import encode_jpeg
from rfr.core.reasons import Reason

CROP_JPEG_QUALITY = 95  # visually lossless for 160 x 160 crops; ~9 kB each (docs/benchmarks.md)

Crop = npt.NDArray[np.uint8]


class CropRejected(ReasonedError):
    """Bytes that are not an aligned crop: ``reason`` is ``bad_crop`` or ``bad_crop_shape``."""


def encode_crop(crop: Crop) -> bytes:
    """JPEG bytes (quality 95) of an aligned RGB uint8 crop (size, size, 3)."""
    return encode_jpeg(crop, CROP_JPEG_QUALITY)


def decode_crop(jpeg: bytes, size: int) -> Crop:
    """JPEG bytes of an aligned crop -> ``size`` x ``size`` x 3 uint8 RGB; :class:`CropRejected` otherwise."""
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR) if jpeg else None
    if image is None:
        raise CropRejected(Reason.BAD_CROP, f"crop_jpeg ({len(jpeg)} bytes) is not a decodable image")
    if image.shape != (size, size, 3):
        raise CropRejected(Reason.BAD_CROP_SHAPE, f"crop is {image.shape[1]}x{image.shape[0]}, expected {size}x{size}")
    rgb: Crop = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return rgb
