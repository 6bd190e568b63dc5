"""rfr.core.imaging: sniffing, header checks before decoding, truncation, pixel layouts, EXIF orientation."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from pillow_heif.as_plugin import HeifImageFile
from support.stills import (
    Case,
    bad_cases,
    encode,
    good_cases,
    jpeg,
    pattern,
    pillow_bytes,
    png_raw,
    with_exif_orientation,
)

from rfr.core import imaging
from rfr.core.imaging import (
    ImageLimits,
    ImageRejected,
    check_limits,
    decode_image,
    probe_image,
    read_header,
    sniff_format,
)

LIMITS = ImageLimits(max_bytes=1 << 20)


@pytest.mark.parametrize("case", bad_cases(LIMITS.max_bytes), ids=lambda c: c.name)
def test_bad_input_gets_its_reason(case: Case) -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(case.data, LIMITS)
    assert info.value.reason == case.reason, info.value


@pytest.mark.parametrize("name", ["png_bomb_20000", "header_50k_x_50k", "huge_file", "zero_by_zero_png",
                                  "html_named_jpg", "truncated_jpeg", "tiff_bomb_9000", "heic_bomb_8000",
                                  "truncated_tiff", "truncated_heic", "avif_brand"])
def test_refused_before_any_decoding(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_args: object) -> None:
        raise AssertionError("the decoder must not be reached")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # Pillow (TIFF), pillow-heif (HEIC)
    monkeypatch.setattr(HeifImageFile, "load", no_decoding)
    case = next(c for c in bad_cases(LIMITS.max_bytes) if c.name == name)
    with pytest.raises(ImageRejected) as info:
        decode_image(case.data, LIMITS)
    assert info.value.reason == case.reason


@pytest.mark.parametrize("case", good_cases(), ids=lambda c: c.name)
def test_good_input_decodes_to_rgb_uint8(case: Case) -> None:
    out = decode_image(case.data, LIMITS)
    assert out.rgb.dtype == np.uint8 and out.rgb.ndim == 3 and out.rgb.shape[2] == 3
    assert out.rgb.shape[:2] == (out.height, out.width)
    assert out.rgb.flags["C_CONTIGUOUS"]
    assert out.format == sniff_format(case.data)
    assert out.content_type == f"image/{out.format}"


def test_channels_are_rgb_not_bgr() -> None:
    rgb = pattern(40, 30, seed=5)
    out = decode_image(encode(rgb, ".png"), LIMITS)
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.rgb[0, 0, 0] > 200 and out.rgb[0, 0, 2] < 60  # the red marker block stays red


def test_grey_16bit_and_alpha_are_converted() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(encode(grey, ".png"), LIMITS)
    assert all(np.array_equal(out.rgb[..., c], grey) for c in range(3))
    deep = decode_image(cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(), LIMITS)
    np.testing.assert_array_equal(deep.rgb[..., 1], grey)
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 2] = 100  # red channel in BGRA order
    bgra[..., 3] = 128
    out = decode_image(cv2.imencode(".png", bgra)[1].tobytes(), LIMITS)
    a = 128 / 255
    assert tuple(out.rgb[0, 0]) == (round(100 * a + 255 * (1 - a)), round(255 * (1 - a)), round(255 * (1 - a)))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("alpha", [False, True], ids=["opaque", "alpha"])
def test_exif_orientation_matches_pillow(orientation: int, alpha: bool) -> None:
    rgb = pattern(48, 32, seed=orientation)
    src = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]) if alpha else rgb
    data = with_exif_orientation(src, "PNG", orientation)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = decode_image(data, LIMITS)
    np.testing.assert_array_equal(out.rgb, expected)
    assert (out.width, out.height) == (32, 48) if orientation >= 5 else (48, 32)


def test_jpeg_exif_orientation_is_applied() -> None:
    rgb = pattern(60, 40)
    out = decode_image(with_exif_orientation(rgb, "JPEG", 8), LIMITS)  # 90 degrees counter-clockwise
    assert (out.width, out.height) == (40, 60)
    assert out.rgb[-5, 5, 0] > 200 and out.rgb[-5, 5, 2] < 80  # the top-left red block is now bottom-left


def test_limits_on_pixels_and_side() -> None:
    data = encode(pattern(200, 100), ".png")
    assert probe_image(data, ImageLimits(max_pixels=20_000)).width == 200
    with pytest.raises(ImageRejected, match="too_many_pixels"):
        probe_image(data, ImageLimits(max_pixels=19_999))
    data = jpeg(200, 100)  # a baseline JPEG over max_pixels is decoded at reduced scale, not refused
    assert check_limits(probe_image(data, ImageLimits(max_pixels=19_999)), ImageLimits(max_pixels=19_999)) == 2
    with pytest.raises(ImageRejected, match="side"):
        probe_image(data, ImageLimits(max_side=199))
    with pytest.raises(ImageRejected, match="too_large_bytes"):
        probe_image(data, ImageLimits(max_bytes=len(data) - 1))


@pytest.mark.parametrize("ext", [".webp", ".bmp", ".png", ".jpg", ".tif", ".heic"])
def test_truncation_is_detected_for_every_format(ext: str) -> None:
    rgb = pattern(64, 64, seed=9)
    data = pillow_bytes(rgb, {".tif": "TIFF", ".heic": "HEIF"}[ext]) if ext in (".tif", ".heic") else encode(rgb, ext)
    assert decode_image(data, LIMITS).width == 64
    with pytest.raises(ImageRejected) as info:
        decode_image(data[: len(data) - max(8, len(data) // 3)], LIMITS)
    assert info.value.reason == "truncated"


def test_trailing_bytes_after_a_complete_jpeg_are_tolerated() -> None:
    data = jpeg(32, 32) + b"camera-vendor-trailer" * 10
    assert decode_image(data, LIMITS).width == 32


def test_png_bmp_headers_are_read_by_pillow_readers_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("no pixel decoder (nor Image.open, with its own size limit) may run for a header")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # Pillow's pixel decode
    monkeypatch.setattr(Image, "open", no_decoding)  # PNG, BMP: the reader classes, not Image.open
    assert read_header(png_raw(20_000, 10, b"")).width == 20_000
    assert read_header(png_raw(20_000, 20_000, b"")).height == 20_000  # over Pillow's own bomb limit: ours decide
    webp = encode(pattern(30, 20), ".webp")
    assert (read_header(webp).width, read_header(webp).height) == (30, 20)
    bmp = encode(pattern(30, 20), ".bmp")
    assert (read_header(bmp).width, read_header(bmp).height) == (30, 20)


def test_sniffing_ignores_names_and_declared_types() -> None:
    assert sniff_format(jpeg()) == "jpeg"
    assert sniff_format(b"<html>") is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    with pytest.raises(ImageRejected, match="unsupported_format"):
        decode_image(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32), LIMITS)


def test_corrupt_jpeg_structure() -> None:
    data = bytearray(jpeg(32, 32))
    assert data[2:4] == b"\xff\xe0"
    data[4:6] = b"\x00\x07"  # APP0 claims 7 bytes: the next "marker" falls inside its JFIF header
    with pytest.raises(ImageRejected, match="corrupt"):
        decode_image(bytes(data), LIMITS)
