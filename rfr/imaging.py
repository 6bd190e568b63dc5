"""Decode and validate submitted stills: the one place where untrusted image bytes become pixels.

:func:`decode_image` takes the encoded bytes and returns RGB ``uint8`` pixels, or raises :class:`ImageRejected`
with a machine-readable ``reason``. The checks, in order, each before any pixel is decoded:

1. ``empty`` / ``too_large_bytes``: the byte count against :attr:`ImageLimits.max_bytes`.
2. ``unsupported_format``: the format is sniffed from the magic bytes (JPEG, PNG, WebP, BMP), never from a
   file name or a declared content type.
3. ``truncated`` / ``corrupt``: the header is parsed here (no decoder involved) for width and height.
4. ``zero_size`` / ``too_many_pixels``: width x height against ``max_pixels`` and each side against
   ``max_side``, so a decompression bomb (a 20000 x 20000 PNG of a few kilobytes) is refused unread.
5. ``truncated``: the end of the stream is checked (JPEG EOI after the scan, PNG IEND, the RIFF size of a
   WebP, the file size of a BMP), since decoders fill a cut-off JPEG with grey instead of failing.
6. ``corrupt``: OpenCV fails to decode, or decodes to another size than the header declared.

EXIF orientation is applied (OpenCV does it for opaque images; for images with alpha it is read here with
Pillow). Grey images become RGB; alpha is composited over white; 16-bit samples are reduced to 8 bits.
``width`` and ``height`` of the result are those of the oriented pixels.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from rfr.image_headers import ImageHeader, ImageRejected, RejectReason, check_complete, read_header, sniff_format
from rfr.settings import IngestSettings

__all__ = ["CONTENT_TYPES", "DecodedImage", "ImageHeader", "ImageLimits", "ImageRejected", "RejectReason",
           "check_limits", "decode_image", "probe_image", "read_header", "sniff_format"]

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
Pixels = npt.NDArray[Any]

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> ImageLimits:
        return cls(ingest.max_bytes, ingest.max_pixels, ingest.max_side)


@dataclass(frozen=True)
class DecodedImage:
    rgb: RGB  # height x width x 3, uint8, C-contiguous
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def check_limits(header: ImageHeader, limits: ImageLimits) -> None:
    if header.width <= 0 or header.height <= 0:
        raise ImageRejected(RejectReason.ZERO_SIZE, f"{header.width}x{header.height}")
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise ImageRejected(RejectReason.TOO_MANY_PIXELS,
                            f"{header.width}x{header.height} = {pixels} pixels > {limits.max_pixels}")
    if max(header.width, header.height) > limits.max_side:
        raise ImageRejected(RejectReason.TOO_MANY_PIXELS,
                            f"{header.width}x{header.height}: a side is longer than {limits.max_side}")


def probe_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Every check that needs no decoding (steps 1-5 of the module doc)."""
    if not data:
        raise ImageRejected(RejectReason.EMPTY, "no bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(RejectReason.TOO_LARGE_BYTES, f"{len(data)} bytes > {limits.max_bytes}")
    header = read_header(data)
    check_limits(header, limits)
    check_complete(data, header)
    return header


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Validate and decode ``data`` to RGB uint8; raises :class:`ImageRejected`."""
    header = probe_image(data, limits)
    buf = np.frombuffer(data, dtype=np.uint8)
    rgb: Pixels | None
    try:
        if header.has_alpha:
            raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            rgb = None if raw is None else _orient(_to_rgb(raw), _exif_orientation(data))
        else:
            rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
    except cv2.error as exc:
        raise ImageRejected(RejectReason.CORRUPT, f"{header.format} decoder failed: {exc}") from exc
    if rgb is None:
        raise ImageRejected(RejectReason.CORRUPT, f"{header.format} data could not be decoded")
    h, w = rgb.shape[:2]
    if sorted((w, h)) != sorted((header.width, header.height)):
        raise ImageRejected(RejectReason.CORRUPT, f"decoded {w}x{h}, header says {header.width}x{header.height}")
    out: RGB = np.ascontiguousarray(rgb, dtype=np.uint8)
    return DecodedImage(out, header.format, w, h)


def _to_rgb(img: Pixels) -> Pixels:
    """Any OpenCV ``IMREAD_UNCHANGED`` result -> RGB uint8 (alpha over white)."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageRejected(RejectReason.UNSUPPORTED_FORMAT, f"{img.dtype} samples")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    alpha = img[..., 3:4].astype(np.float32) / 255.0
    colour = img[..., 2::-1].astype(np.float32)  # BGR -> RGB
    blended: Pixels = (colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return blended


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8), read with Pillow without decoding pixels; 1 when absent or unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # orientation is best effort; the pixels were validated already
        logger.debug("no readable EXIF orientation", exc_info=True)
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


# EXIF orientation -> the transform that makes the image display upright.
_ORIENT: dict[int, Callable[[Pixels], Pixels]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _orient(rgb: Pixels, orientation: int) -> Pixels:
    transform = _ORIENT.get(orientation)
    return rgb if transform is None else transform(rgb)
