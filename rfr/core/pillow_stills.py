"""TIFF and HEIC/HEIF stills, read through Pillow (HEIF through the ``pillow-heif`` opener, registered here).

:func:`pillow_header` opens the bytes lazily: Pillow parses the header and the image directories (TIFF IFDs, HEIF
``meta`` box) and reports the format and declared size without decoding a pixel, so :mod:`rfr.core.imaging` applies
the same byte, pixel and side limits before anything is decoded, as for the other formats. Pillow's own
decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) stays on as a second guard, and libheif keeps its security
limits. Neither format has a cheap reduced-scale decode, so a still over ``max_pixels`` is refused unread.

Completeness is checked structurally before decoding: a TIFF's first directory and its first image's strips or
tiles must lie inside the bytes; a HEIF file's top-level boxes must all be whole. :func:`decode_pillow` then
decodes the first image (a multi-page TIFF's first page, a HEIF file's primary image), applies its EXIF
orientation (pillow-heif applies HEIF's own ``irot``/``imir`` transforms and resets the EXIF tag, so nothing is
rotated twice) and returns RGB ``uint8``: 16-bit grey is reduced to 8 bits, alpha is composited over white.
"""

from __future__ import annotations

import io
import logging
import struct
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from rfr.core.image_headers import ImageHeader, ImageRejected
from rfr.core.reasons import Reason

__all__ = ["TIFF_PAGES", "decode_pillow", "over_white", "pillow_header"]

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
TIFF_PAGES = "tiff_pages"  # warning: a multi-page TIFF, of which the first page was decoded

_PILLOW_FORMAT = {"tiff": "TIFF", "heic": "HEIF", "heif": "HEIF"}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# TIFF 6.0 tags: StripOffsets, StripByteCounts, TileOffsets, TileByteCounts.
_STRIPS, _TILES = (273, 279), (324, 325)
_OPEN_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError, KeyError, TypeError)


@cache
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def _open(data: bytes, fmt: str) -> Image.Image:
    """Pillow's lazy open, restricted to the plugin of the sniffed format."""
    if fmt in ("heic", "heif"):
        _register_heif()
    try:
        return Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[fmt]])
    except Image.DecompressionBombError as exc:
        raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{fmt}: {exc}") from exc
    except _OPEN_ERRORS as exc:
        raise ImageRejected(Reason.CORRUPT, f"{fmt} header unreadable: {exc}") from exc


def _tiff_first_directory(data: bytes) -> int:
    """The offset of a TIFF's first image directory (IFD), from its 8-byte (BigTIFF: 16-byte) header."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if len(data) < (16 if big else 8):
        raise ImageRejected(Reason.TRUNCATED, f"TIFF header cut off at {len(data)} bytes")
    offset: int = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    if offset >= len(data):
        raise ImageRejected(Reason.TRUNCATED, f"TIFF directory at byte {offset}, past the {len(data)} bytes")
    return offset


def _tiff_data_end(im: Image.Image) -> int:
    """Where the first image's last strip or tile ends, from its directory (0 when it does not say)."""
    tags: Any = getattr(im, "tag_v2", {})
    for offsets_tag, counts_tag in (_STRIPS, _TILES):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is not None and counts is not None:
            offsets = offsets if isinstance(offsets, tuple) else (offsets,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            return max((int(o) + int(c) for o, c in zip(offsets, counts, strict=False)), default=0)
    return 0


def _heif_boxes_end(data: bytes) -> int:
    """Where the last top-level ISO-BMFF box ends as declared (ISO/IEC 14496-12, 4.2: size 1 means a 64-bit
    size follows, 0 means to the end of the file)."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return pos + 8
        size = int.from_bytes(data[pos: pos + 4], "big")
        if size == 1:
            if pos + 16 > len(data):
                return pos + 16
            size = int.from_bytes(data[pos + 8: pos + 16], "big")
        elif size == 0:
            return len(data)
        if size < 8:
            raise ImageRejected(Reason.CORRUPT, f"HEIF box of {size} bytes at byte {pos}")
        pos += size
    return pos


def _pages(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1))
    except _OPEN_ERRORS:
        logger.debug("TIFF page count unreadable", exc_info=True)
        return 1


def pillow_header(data: bytes, fmt: str) -> ImageHeader:
    """Declared size of a "tiff", "heic" or "heif" still from Pillow's lazy open (no pixel decoded); HEIF's size
    is that of the primary image after its transforms. Raises ImageRejected (corrupt, truncated)."""
    data_end = _heif_boxes_end(data) if fmt != "tiff" else 0
    if fmt == "tiff":
        _tiff_first_directory(data)
    warnings: tuple[str, ...] = ()
    with _open(data, fmt) as im:
        width, height = im.size
        alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
        if fmt == "tiff":
            data_end = _tiff_data_end(im)
            pages = _pages(im)
            if pages > 1:
                warnings = (f"{TIFF_PAGES}: {pages} pages, the first was decoded",)
    return ImageHeader(fmt, width, height, alpha, data_end=data_end, warnings=warnings)


def over_white(rgba: npt.NDArray[Any]) -> RGB:
    """H x W x 4 RGBA uint8 -> H x W x 3 RGB uint8, composited over white."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    colour = rgba[..., :3].astype(np.float32)
    blended: RGB = (colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return blended


def _to_rgb(im: Image.Image, fmt: str, alpha: bool) -> RGB:
    mode = im.mode
    if mode.startswith("I;16"):  # 16-bit grey: keep the high byte, as for 16-bit PNGs
        grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("I", "F"):
        raise ImageRejected(Reason.UNSUPPORTED_FORMAT, f"{fmt} with 32-bit samples (Pillow mode {mode})")
    try:
        return over_white(np.array(im.convert("RGBA"))) if alpha else np.array(im.convert("RGB"))
    except ValueError as exc:
        raise ImageRejected(Reason.UNSUPPORTED_FORMAT, f"{fmt} pixels in mode {mode}: {exc}") from exc


def decode_pillow(data: bytes, header: ImageHeader) -> RGB:
    """Decode the first image of a TIFF or HEIF still whose header passed the limits: oriented RGB uint8,
    height x width x 3. Raises ImageRejected: truncated or corrupt (the decoder failed), unsupported_format."""
    fmt = header.format
    with _open(data, fmt) as im:
        try:
            im.load()
            oriented = ImageOps.exif_transpose(im)
        except Image.DecompressionBombError as exc:
            raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{fmt}: {exc}") from exc
        except _OPEN_ERRORS as exc:
            text = str(exc)
            cut = any(word in text.lower() for word in ("truncated", "end of file", "premature"))
            reason = Reason.TRUNCATED if cut else Reason.CORRUPT
            raise ImageRejected(reason, f"{fmt} decoder failed: {text[:300]}") from exc
    with oriented:
        return _to_rgb(oriented, fmt, header.has_alpha)
