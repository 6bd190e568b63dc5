"""Why Pillow refused a PNG or BMP header, read by hand: :mod:`rfr.core.image_headers` reads these headers with
Pillow's reader classes, and calls :func:`refusal` only when one of them refuses the bytes.

Pillow does not say why it refuses a file: a zero-sized image and a header cut short are both "not identified by
this driver". :func:`refusal` reads the declared width and height and the file's end so that the reason stays
``zero_size``, ``truncated`` or ``corrupt``, as when these headers were read by hand.
"""

from __future__ import annotations

import struct

from rfr.core.image_headers import _PNG_END, ImageRejected
from rfr.core.reasons import Reason

__all__ = ["refusal"]


def _declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height as the header declares them (PNG: IHDR; BMP: the info header, read unsigned as Pillow
    does), None when the bytes stop before them."""
    if fmt == "png":
        return struct.unpack_from(">II", data, 16) if len(data) >= 33 else None  # IHDR with its checksum
    if len(data) < 26:
        return None
    if struct.unpack_from("<I", data, 14)[0] == 12:  # BITMAPCOREHEADER: 16-bit sides
        return struct.unpack_from("<HH", data, 18)
    return struct.unpack_from("<II", data, 18)


def _ends_early(data: bytes, fmt: str) -> bool:
    """The file stops before its end: a PNG without its IEND chunk, a BMP shorter than its declared file size."""
    if fmt == "png":
        return data.rfind(_PNG_END) < 0
    declared: int = struct.unpack_from("<I", data, 2)[0]
    return len(data) < declared


def refusal(data: bytes, fmt: str, exc: Exception) -> ImageRejected:
    """Why Pillow's reader refused the header of a "png" or "bmp" still: ``zero_size`` (as declared),
    ``truncated`` (the header or the file is cut off), else ``corrupt`` with Pillow's words."""
    size = _declared_size(data, fmt)
    if size is None:
        return ImageRejected(Reason.TRUNCATED, f"{fmt.upper()} header cut off at {len(data)} bytes")
    if fmt == "png" and data[12:16] != b"IHDR":
        return ImageRejected(Reason.CORRUPT, "PNG does not start with IHDR")
    width, height = size
    if width == 0 or height == 0:
        return ImageRejected(Reason.ZERO_SIZE, f"{width}x{height}")
    if _ends_early(data, fmt):
        return ImageRejected(Reason.TRUNCATED, f"{fmt} data ends early ({len(data)} bytes)")
    return ImageRejected(Reason.CORRUPT, f"{fmt} header refused by Pillow: {str(exc)[:200]}")
