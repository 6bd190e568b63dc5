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
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from rfr.errors import ReasonedError
from rfr.settings import IngestSettings

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
Pixels = npt.NDArray[Any]

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4/C8/CC are not frames.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_EXIF_ORIENTATION = 0x0112


class RejectReason(StrEnum):
    EMPTY = "empty"
    TOO_LARGE_BYTES = "too_large_bytes"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    ZERO_SIZE = "zero_size"


class ImageRejected(ReasonedError):
    """The bytes are not an acceptable still; ``reason`` is one of :class:`RejectReason`."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> ImageLimits:
        return cls(ingest.max_bytes, ingest.max_pixels, ingest.max_side)


@dataclass(frozen=True)
class ImageHeader:
    """What the header declares, read without decoding: the stored (un-oriented) size."""

    format: str
    width: int
    height: int
    has_alpha: bool = False
    scan_offset: int = 0  # JPEG: where the first scan starts (the EOI must come after it)


@dataclass(frozen=True)
class DecodedImage:
    rgb: RGB  # height x width x 3, uint8, C-contiguous
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def sniff_format(data: bytes) -> str | None:
    """The format named by the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_MAGIC:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 14:
        return "bmp"
    return None


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise ImageRejected(RejectReason.TRUNCATED, f"{what} header cut off at {len(data)} bytes")


def _jpeg_scan(data: bytes) -> tuple[int, int, int]:
    """Walk the JPEG segments: (width, height, offset of the first scan)."""
    i, size = 2, None
    while True:
        if i >= len(data):
            raise ImageRejected(RejectReason.TRUNCATED, "JPEG ends before its first scan")
        if data[i] != 0xFF:
            raise ImageRejected(RejectReason.CORRUPT, f"JPEG marker expected at byte {i}")
        while i < len(data) and data[i] == 0xFF:
            i += 1
        _need(data, i + 1, "JPEG")
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:
            raise ImageRejected(RejectReason.CORRUPT, "JPEG ends before its first scan")
        if marker == 0xDA:
            if size is None:
                raise ImageRejected(RejectReason.CORRUPT, "JPEG scan before any frame header")
            return size[0], size[1], i
        _need(data, i + 2, "JPEG")
        length = struct.unpack_from(">H", data, i)[0]
        if length < 2:
            raise ImageRejected(RejectReason.CORRUPT, f"JPEG segment length {length}")
        if marker in _SOF and size is None:
            _need(data, i + 7, "JPEG frame")
            height, width = struct.unpack_from(">HH", data, i + 3)
            size = (width, height)
        i += length


def _png_header(data: bytes) -> ImageHeader:
    _need(data, 33, "PNG")
    if data[12:16] != b"IHDR":
        raise ImageRejected(RejectReason.CORRUPT, "PNG does not start with IHDR")
    width, height = struct.unpack_from(">II", data, 16)
    colour_type = data[25]
    alpha = colour_type in (4, 6)
    pos = 33  # look for a transparency chunk before the image data
    while not alpha and pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        alpha = kind == b"tRNS"
        pos += 12 + length
    return ImageHeader("png", width, height, alpha)


def _webp_header(data: bytes) -> ImageHeader:
    _need(data, 16, "WebP")
    kind = data[12:16]
    if kind == b"VP8X":
        _need(data, 30, "WebP")
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("webp", w, h, bool(data[20] & 0x10))
    if kind == b"VP8L":
        _need(data, 25, "WebP")
        if data[20] != 0x2F:
            raise ImageRejected(RejectReason.CORRUPT, "WebP lossless signature missing")
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1))
    if kind == b"VP8 ":
        _need(data, 30, "WebP")
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageRejected(RejectReason.CORRUPT, "WebP lossy start code missing")
        w, h = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", w & 0x3FFF, h & 0x3FFF)
    raise ImageRejected(RejectReason.CORRUPT, f"unknown WebP chunk {kind!r}")


def _bmp_header(data: bytes) -> ImageHeader:
    _need(data, 26, "BMP")
    dib = struct.unpack_from("<I", data, 14)[0]
    if dib == 12:
        w, h = struct.unpack_from("<HH", data, 18)
    elif dib >= 40:
        w, h = struct.unpack_from("<ii", data, 18)
    else:
        raise ImageRejected(RejectReason.CORRUPT, f"BMP info header of {dib} bytes")
    if w < 0:
        raise ImageRejected(RejectReason.CORRUPT, f"BMP width {w}")
    return ImageHeader("bmp", w, abs(h))


def read_header(data: bytes) -> ImageHeader:
    """Format and declared size from the header alone; raises ImageRejected."""
    fmt = sniff_format(data)
    if fmt == "jpeg":
        w, h, scan = _jpeg_scan(data)
        return ImageHeader("jpeg", w, h, scan_offset=scan)
    if fmt == "png":
        return _png_header(data)
    if fmt == "webp":
        return _webp_header(data)
    if fmt == "bmp":
        return _bmp_header(data)
    head = data[:8].hex(" ")
    raise ImageRejected(RejectReason.UNSUPPORTED_FORMAT, f"not JPEG, PNG, WebP or BMP (starts {head})")


def _bmp_expected_size(data: bytes, header: ImageHeader) -> int:
    """The file size a BMP declares, or (uncompressed) the size its rows need."""
    declared: int = struct.unpack_from("<I", data, 2)[0]
    if struct.unpack_from("<I", data, 14)[0] < 40 or len(data) < 34:
        return declared
    bpp, compression = struct.unpack_from("<HI", data, 28)
    if compression != 0:
        return declared
    offset: int = struct.unpack_from("<I", data, 10)[0]
    stride = (int(bpp) * header.width + 31) // 32 * 4
    return max(declared, offset + stride * header.height)


def _check_complete(data: bytes, header: ImageHeader) -> None:
    """Raise ``truncated`` when the stream visibly stops early."""
    fmt = header.format
    if fmt == "jpeg":
        complete = data.rfind(b"\xff\xd9", header.scan_offset) >= 0  # from the end: EOI is last
    elif fmt == "png":
        complete = data.rfind(_PNG_END) >= 0
    elif fmt == "webp":
        complete = len(data) >= 8 + struct.unpack_from("<I", data, 4)[0]
    else:
        complete = len(data) >= _bmp_expected_size(data, header)
    if not complete:
        raise ImageRejected(RejectReason.TRUNCATED, f"{fmt} data ends early ({len(data)} bytes)")


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
    _check_complete(data, header)
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
