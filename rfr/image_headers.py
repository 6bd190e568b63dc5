"""Image headers read without a decoder: the format from the magic bytes, the declared size, and whether the
stream is complete. :mod:`rfr.imaging` runs these checks before any pixel is decoded (see its module doc).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from rfr.errors import ReasonedError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4/C8/CC are not frames.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


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
class ImageHeader:
    """What the header declares, read without decoding: the stored (un-oriented) size."""

    format: str
    width: int
    height: int
    has_alpha: bool = False
    scan_offset: int = 0  # JPEG: where the first scan starts (the EOI must come after it)


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


def check_complete(data: bytes, header: ImageHeader) -> None:
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
