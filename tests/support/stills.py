"""Good and bad stills in every format the pipeline meets, generated in code (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()  # Pillow saves HEIF too (rfr.core.pillow_stills registers it for reading)


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB test picture: gradients, a few blocks, and noise from ``seed`` (so each seed differs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                    (x + y) * 255 // max(1, width + height - 2)], axis=-1).astype(np.uint8)
    img[: height // 3, : width // 4] = (250, 20, 20)  # a red block top-left marks the orientation
    noise = rng.integers(0, 24, img.shape, dtype=np.uint8)
    return np.asarray(np.clip(img.astype(np.int16) + noise, 0, 255), dtype=np.uint8)


def encode(rgb: np.ndarray, ext: str, **params: int) -> bytes:
    flags: list[int] = []
    if ext == ".jpg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.get("quality", 90)]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb, flags)
    assert ok
    return buf.tobytes()


def jpeg(width: int = 64, height: int = 48, seed: int = 0, quality: int = 90) -> bytes:
    return encode(pattern(width, height, seed), ".jpg", quality=quality)


def gif(width: int = 32, height: int = 24, seed: int = 5) -> bytes:
    """A GIF of :func:`pattern`: an image format no still is accepted in."""
    out = io.BytesIO()
    Image.fromarray(pattern(width, height, seed)).save(out, format="GIF")
    return out.getvalue()


def with_exif_orientation(rgb: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


def pillow_bytes(rgb: np.ndarray, fmt: str, orientation: int | None = None, **params: object) -> bytes:
    """``rgb`` (or RGBA, grey, 16-bit grey) saved by Pillow as ``fmt`` ("TIFF", "HEIF", "JPEG"...)."""
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    Image.fromarray(rgb).save(buf, fmt, **params)
    return buf.getvalue()


@lru_cache(maxsize=8)
def tiff(width: int = 96, height: int = 64, seed: int = 3, compression: str | None = None) -> bytes:
    """A TIFF of :func:`pattern` (lossless: it decodes to exactly that pattern)."""
    rgb = pattern(width, height, seed)
    return pillow_bytes(rgb, "TIFF", compression=compression) if compression else pillow_bytes(rgb, "TIFF")


@lru_cache(maxsize=8)
def heic(width: int = 96, height: int = 64, seed: int = 3, orientation: int | None = None) -> bytes:
    """An HEVC-coded HEIF still of :func:`pattern` (lossy), as phones write them."""
    return pillow_bytes(pattern(width, height, seed), "HEIF", orientation, quality=90)


def multipage_tiff(pages: int = 3) -> bytes:
    first, *rest = (Image.fromarray(pattern(40 + 8 * k, 30, seed=k)) for k in range(pages))
    buf = io.BytesIO()
    first.save(buf, "TIFF", save_all=True, append_images=rest)
    return buf.getvalue()


def _tiff_entries(data: bytes) -> tuple[str, list[tuple[int, int, int]]]:
    """Byte order and the first IFD's (tag, type, offset of the entry) of a classic TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    count = struct.unpack_from(order + "H", data, ifd)[0]
    entries = []
    for k in range(count):
        pos = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from(order + "HH", data, pos)
        entries.append((tag, kind, pos))
    return order, entries


def tiff_with_size(width: int, height: int) -> bytes:
    """A small real TIFF whose directory is rewritten to claim ``width`` x ``height`` (a bomb, unread)."""
    data = bytearray(pillow_bytes(np.zeros((8, 8), np.uint8), "TIFF", compression="tiff_deflate"))
    order, entries = _tiff_entries(bytes(data))
    for tag, kind, pos in entries:
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = order + ("H" if kind == 3 else "I")
            struct.pack_into(fmt, data, pos + 8, width if tag == 256 else height)
    return bytes(data)


def heic_with_size(width: int, height: int) -> bytes:
    """A small real HEIC whose ``ispe`` (image spatial extents) property claims ``width`` x ``height``."""
    data = bytearray(pillow_bytes(pattern(64, 64), "HEIF", quality=50))
    at = data.find(b"ispe")
    assert at > 0 and data.count(b"ispe") == 1
    struct.pack_into(">II", data, at + 8, width, height)
    return bytes(data)


def progressive_jpeg(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(pattern(width, height, seed), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_raw(width: int, height: int, idat: bytes, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels (400 MP at 20000) in about 50 kB: a decompression bomb."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    return png_raw(side, side, b"".join(parts), bit_depth=1)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim ``width`` x ``height``."""
    data = bytearray(jpeg(16, 16))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    reason: str  # the rfr.core.reasons.Reason the still must get
    filename: str = "still.jpg"
    content_type: str = "image/jpeg"


def bad_cases(max_bytes: int) -> list[Case]:
    """Bad stills with the reason each must be rejected for, under limits of ``max_bytes`` (default pixels)."""
    good = jpeg(320, 240, seed=7)
    html = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
    grey = np.full((8, 8), 128, np.uint8)
    png_good = encode(grey, ".png")
    corrupt_idat = png_raw(32, 32, b"\x78\x9c" + bytes(range(200)), colour_type=0)
    return [
        Case("empty", b"", "empty"),
        Case("truncated_jpeg", good[: len(good) * 2 // 3], "truncated"),
        Case("jpeg_header_only", good[:40], "truncated"),
        Case("truncated_png", png_good[:-20], "truncated", "still.png", "image/png"),
        Case("png_bomb_20000", png_bomb(), "too_many_pixels", "bomb.png", "image/png"),
        Case("html_named_jpg", html, "unsupported_format"),
        Case("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "unsupported_format", "x.gif", "image/gif"),
        Case("zero_by_zero_png", png_raw(0, 0, zlib.compress(b"")), "zero_size", "zero.png", "image/png"),
        Case("header_50k_x_50k", jpeg_with_size(50_000, 50_000), "too_many_pixels"),
        Case("huge_file", good + b"\x00" * (max_bytes + 1 - len(good)), "too_large_bytes", "huge.jpg"),
        Case("corrupt_png_data", corrupt_idat, "corrupt", "corrupt.png", "image/png"),
        Case("tiff_bomb_9000", tiff_with_size(9_000, 9_000), "too_many_pixels", "bomb.tif", "image/tiff"),
        Case("heic_bomb_8000", heic_with_size(8_000, 8_000), "too_many_pixels", "bomb.heic", "image/heic"),
        Case("truncated_tiff", tiff()[: len(tiff()) // 2], "truncated", "cut.tif", "image/tiff"),
        Case("truncated_heic", heic()[: len(heic()) * 9 // 10], "truncated", "cut.heic", "image/heic"),
        Case("avif_brand", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40),
             "unsupported_format", "z.heic", "image/heic"),
    ]


def good_cases() -> list[Case]:
    """Valid stills in every accepted format and pixel layout (the reason field is unused: '')."""
    rgb = pattern(96, 64, seed=3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    deep = (grey.astype(np.uint16) * 257)
    return [
        Case("jpeg", jpeg(96, 64, seed=1), ""),
        Case("jpeg_exif_rotated", with_exif_orientation(rgb, "JPEG", 6), ""),
        Case("png_rgb", encode(rgb, ".png"), "", "a.png", "image/png"),
        Case("png_grey", encode(grey, ".png"), "", "b.png", "image/png"),
        Case("png_rgba", cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes(), "", "c.png"),
        Case("png_16bit", cv2.imencode(".png", deep)[1].tobytes(), "", "d.png", "image/png"),
        Case("webp", encode(rgb, ".webp"), "", "e.webp", "image/webp"),
        Case("bmp", encode(rgb, ".bmp"), "", "f.bmp", "image/bmp"),
        Case("jpeg_sent_as_text", jpeg(64, 64, seed=2), "", "notes.txt", "text/plain"),
        Case("tiff", tiff(), "", "g.tif", "image/tiff"),
        Case("tiff_lzw_named_jpg", tiff(compression="tiff_lzw"), "", "g.jpg", "image/jpeg"),
        Case("tiff_16bit_grey", pillow_bytes(deep, "TIFF"), "", "h.tiff", "image/tiff"),
        Case("tiff_rgba", pillow_bytes(rgba, "TIFF"), "", "i.tif", "image/tiff"),
        Case("heic", heic(), "", "j.heic", "image/heic"),
        Case("heic_no_name", heic(seed=4, orientation=6), "", "upload", "application/octet-stream"),
    ]
