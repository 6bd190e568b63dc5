"""Decode and validate submitted stills: the one place where untrusted image bytes become pixels.

:func:`decode_image` takes the encoded bytes and returns RGB ``uint8`` pixels, or raises :class:`ImageRejected`
with a machine-readable ``reason``. The checks, in order, each before any pixel is decoded:

1. ``empty`` / ``too_large_bytes``: the byte count against :attr:`ImageLimits.max_bytes`.
2. ``unsupported_format``: the format is sniffed from the magic bytes (JPEG, PNG, WebP, BMP, TIFF, HEIC/HEIF),
   never from a file name or a declared content type; the refusal names what the bytes seem to be (GIF, PDF...).
3. ``truncated`` / ``corrupt``: the header is read for width and height by Pillow's format readers, which decode no
   pixel (PNG and BMP: :mod:`rfr.core.image_headers`; TIFF and HEIC: :mod:`rfr.core.pillow_stills`), or by hand
   where Pillow does not do the job (JPEG's segment walk, WebP: :mod:`rfr.core.image_headers` says why).
4. ``zero_size`` / ``too_many_pixels``: each side against ``max_side`` and width x height against ``max_pixels``,
   so a decompression bomb (a 20000 x 20000 PNG of a few kilobytes) is refused unread. The one exception is a
   single-scan sequential (baseline) JPEG: libjpeg decodes it at 1/2, 1/4 or 1/8 scale holding one row of blocks
   at a time, so it is decoded at the largest of these scales whose pixel count is within ``max_pixels`` (the
   same memory bound) and refused only when even 1/8 is over it. PNG, WebP, BMP, TIFF and HEIC have no such
   decode, and a progressive JPEG holds the whole image's coefficients whatever the scale: over the limit, they
   are refused with a hint.
5. ``truncated``: the end of the stream is checked (JPEG EOI after the scan, PNG IEND, the RIFF size of a WebP,
   the file size of a BMP, the strips or tiles of a TIFF, the boxes of a HEIF file), since decoders fill a
   cut-off JPEG with grey instead of failing. A JPEG that lacks only its end-of-image marker is accepted with
   the warning ``jpeg_missing_eoi``: its stream must stop inside its final scan's entropy-coded data with every
   scan present (:mod:`rfr.core.jpeg_structure`), and libjpeg, strict (simplejpeg), must decode that data, EOI put
   back, without reporting a premature end; a stream cut anywhere else is still ``truncated``.
6. ``corrupt``: the decoder fails, or decodes to another size than the header declared.

EXIF orientation is applied (OpenCV does it for opaque images, also at reduced scale; for images with alpha it is
read here with Pillow; TIFF and HEIC: :mod:`rfr.core.pillow_stills`). Grey images become RGB; alpha is composited over
white; 16-bit samples are reduced to 8 bits. ``width`` and ``height`` of the result are those of the oriented,
decoded pixels: at ``scale`` 2 about half the declared ones (libjpeg rounds up).
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

from rfr.core.image_headers import (
    JPEG_MISSING_EOI,
    ImageHeader,
    ImageRejected,
    check_complete,
    describe_unsupported,
    read_header,
    sniff_format,
)
from rfr.core.pillow_stills import TIFF_PAGES, decode_pillow, over_white
from rfr.core.reasons import Reason
from rfr.core.settings import IngestSettings

__all__ = ["CONTENT_TYPES", "JPEG_MISSING_EOI", "SCALES", "TIFF_PAGES", "DecodedImage", "ImageHeader", "ImageLimits",
           "ImageRejected", "check_limits", "decode_image", "describe_unsupported", "probe_image",
           "read_header", "sniff_format"]

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
Pixels = npt.NDArray[Any]

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
                 "tiff": "image/tiff", "heic": "image/heic", "heif": "image/heif"}
SCALES = (1, 2, 4, 8)  # decode scales: libjpeg's DCT scaling as OpenCV exposes it (IMREAD_REDUCED_*)
# The scale bits of IMREAD_REDUCED_* (16, 32, 64; the _GRAYSCALE_ flags are those bits alone): combined with
# IMREAD_COLOR_RGB they ask for a colour decode at 1/2, 1/4, 1/8 (IMREAD_REDUCED_COLOR_* adds BGR's bit instead).
_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_PILLOW_FORMATS = frozenset({"tiff", "heic", "heif"})
_EOI = b"\xff\xd9"

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
    """Decoded, oriented pixels. ``scale``: the still was decoded at 1/scale of its declared size (1, 2, 4, 8;
    ``width`` and ``height`` are the decoded ones). ``warnings``: what was accepted although unusual, e.g.
    ``jpeg_missing_eoi`` or ``tiff_pages: 3 pages, the first was decoded``."""

    rgb: RGB  # height x width x 3, uint8, C-contiguous
    format: str
    width: int
    height: int
    scale: int = 1
    warnings: tuple[str, ...] = ()

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def _reduced(n: int, scale: int) -> int:
    """A side decoded at 1/scale: libjpeg rounds up (jdiv_round_up in jpeg_calc_output_dimensions)."""
    return -(-n // scale)


def check_limits(header: ImageHeader, limits: ImageLimits) -> int:
    """The scale (1, 2, 4 or 8) at which the still is decoded within ``limits``; raises ImageRejected
    (zero_size, too_many_pixels with a hint) when it cannot be."""
    w, h = header.width, header.height
    if w <= 0 or h <= 0:
        raise ImageRejected(Reason.ZERO_SIZE, f"{w}x{h}")
    if max(w, h) > limits.max_side:
        raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{w}x{h}: a side is longer than {limits.max_side} "
                            "(ingest.max_side); resize the still before submitting it")
    if w * h <= limits.max_pixels:
        return 1
    over = f"{w}x{h} = {w * h} pixels > {limits.max_pixels} (ingest.max_pixels)"
    if header.format != "jpeg":
        raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{over}; {header.format.upper()} has no reduced-scale "
                            "decode: resize the still, or send it as a JPEG (decoded at up to 1/8 scale)")
    if not header.scalable:
        raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{over}; a progressive or multi-scan JPEG needs the "
                            "whole image's coefficients even at reduced scale: re-save it as a baseline JPEG or "
                            "resize it")
    for scale in SCALES[1:]:
        if _reduced(w, scale) * _reduced(h, scale) <= limits.max_pixels:
            return scale
    raise ImageRejected(Reason.TOO_MANY_PIXELS, f"{over}, and still over it decoded at 1/8 scale "
                        f"({_reduced(w, 8)}x{_reduced(h, 8)}): resize the still before submitting it")


def _verify_scan_data(data: bytes) -> None:
    """A JPEG without EOI whose structure is complete: libjpeg, strict, must decode its entropy-coded data with
    the EOI put back without a warning (a premature end is one). Decoded at 1/8 scale to grey: every block's
    data is still entropy-decoded, the output stays small."""
    import simplejpeg  # type: ignore[import-untyped]

    try:
        simplejpeg.decode_jpeg(data + _EOI, colorspace="GRAY", min_height=1, min_width=1, min_factor=8, strict=True)
    except ValueError as exc:
        raise ImageRejected(Reason.TRUNCATED, f"jpeg without end-of-image marker ({len(data)} bytes) and its "
                            f"scan data is incomplete: {exc}") from exc
    logger.info("JPEG without end-of-image marker accepted: its scan data is complete (%d bytes)", len(data))


def _probe(data: bytes, limits: ImageLimits) -> tuple[ImageHeader, int]:
    if not data:
        raise ImageRejected(Reason.EMPTY, "no bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(Reason.TOO_LARGE_BYTES, f"{len(data)} bytes > {limits.max_bytes}")
    header = read_header(data)
    scale = check_limits(header, limits)
    header = check_complete(data, header)
    if JPEG_MISSING_EOI in header.warnings:
        _verify_scan_data(data)
    return header, scale


def probe_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Every check of steps 1-5 of the module doc (none decodes pixels, but for the strict check of a JPEG that
    lacks its EOI); the header carries the warnings of an accepted oddity."""
    return _probe(data, limits)[0]


def _decode_opencv(data: bytes, header: ImageHeader, scale: int) -> Pixels | None:
    buf = np.frombuffer(data + _EOI if JPEG_MISSING_EOI in header.warnings else data, dtype=np.uint8)
    try:
        if header.has_alpha:
            raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            return None if raw is None else _orient(_to_rgb(raw), _exif_orientation(data))
        if scale > 1:  # libjpeg's scaled decode, straight to RGB, EXIF orientation applied
            return cv2.imdecode(buf, _REDUCED[scale] | cv2.IMREAD_COLOR_RGB)
        return cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
    except cv2.error as exc:
        raise ImageRejected(Reason.CORRUPT, f"{header.format} decoder failed: {exc}") from exc


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Validate and decode ``data`` to RGB uint8 (at 1/scale for a large baseline JPEG); raises ImageRejected."""
    header, scale = _probe(data, limits)
    if header.format in _PILLOW_FORMATS:
        rgb: Pixels | None = decode_pillow(data, header)
    else:
        rgb = _decode_opencv(data, header, scale)
    if rgb is None:
        raise ImageRejected(Reason.CORRUPT, f"{header.format} data could not be decoded")
    h, w = rgb.shape[:2]
    expected = (_reduced(header.width, scale), _reduced(header.height, scale))
    if sorted((w, h)) != sorted(expected):
        raise ImageRejected(Reason.CORRUPT, f"decoded {w}x{h}, header says {header.width}x{header.height}"
                            + (f" (at 1/{scale}: {expected[0]}x{expected[1]})" if scale > 1 else ""))
    if scale > 1:
        logger.info("%s of %dx%d decoded at 1/%d scale (%dx%d) to stay within max_pixels=%d", header.format,
                    header.width, header.height, scale, w, h, limits.max_pixels)
    out: RGB = np.ascontiguousarray(rgb, dtype=np.uint8)
    return DecodedImage(out, header.format, w, h, scale, header.warnings)


def _to_rgb(img: Pixels) -> Pixels:
    """Any OpenCV ``IMREAD_UNCHANGED`` result -> RGB uint8 (alpha over white)."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageRejected(Reason.UNSUPPORTED_FORMAT, f"{img.dtype} samples")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return over_white(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA))


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


def encode_jpeg(rgb: RGB, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 image (H, W, 3) at ``quality`` (1-100); the one RGB -> JPEG encoder.

    Raises :class:`ValueError` when OpenCV cannot encode it (an empty or non-uint8 array).
    """
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding of a {rgb.shape} {rgb.dtype} image failed")
    return bytes(buf)
