"""rfr.core.imaging: TIFF and HEIC stills, large JPEGs decoded at reduced scale, JPEGs that lack only their EOI."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from pillow_heif.as_plugin import HeifImageFile
from support.stills import (
    encode,
    heic,
    heic_with_size,
    jpeg,
    multipage_tiff,
    pattern,
    pillow_bytes,
    progressive_jpeg,
    tiff,
    tiff_with_size,
    with_exif_orientation,
)

from rfr.core import imaging
from rfr.core.imaging import ImageLimits, ImageRejected, decode_image, sniff_format

LIMITS = ImageLimits(max_bytes=1 << 20)
EOI = b"\xff\xd9"


def refuse_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every pixel decoder fail the test: OpenCV, Pillow's plugins, pillow-heif."""
    def no_decoding(*_args: object) -> None:
        raise AssertionError("the decoder must not be reached")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(HeifImageFile, "load", no_decoding)


def reason_of(data: bytes, limits: ImageLimits = LIMITS) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, limits)
    return info.value


# -- sniffing: by content, from the first 64 bytes -------------------------------------------------------------

def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + bytes(32)


@pytest.mark.parametrize(("data", "expected"), [
    (jpeg(), "jpeg"),
    (tiff(), "tiff"),
    (b"MM\x00*\x00\x00\x00\x08" + bytes(56), "tiff"),  # big-endian TIFF
    (pillow_bytes(pattern(8, 8), "TIFF", big_tiff=True), "tiff"),
    (heic(), "heic"),
    (_ftyp(b"heix", b"mif1", b"heix"), "heic"),
    (_ftyp(b"mif1", b"mif1", b"heic"), "heic"),
    (_ftyp(b"msf1", b"msf1", b"hevc"), "heic"),
    (_ftyp(b"mif1", b"mif1", b"miaf"), "heif"),
    (_ftyp(b"avif", b"avif", b"mif1", b"miaf"), None),
    (_ftyp(b"mif1", b"mif1", b"avif"), None),
    (_ftyp(b"isom", b"isom", b"mp42"), None),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", None),
])
def test_sniff_format_reads_the_first_64_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_format(data[:64]) == expected


@pytest.mark.parametrize(("data", "named"), [
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "a GIF image"),
    (b"%PDF-1.7\n" + bytes(40), "a PDF document"),
    (_ftyp(b"avif", b"avif", b"mif1"), "an AVIF image"),
    (_ftyp(b"isom", b"isom"), "brand 'isom'"),
    (b"  <svg xmlns='http://www.w3.org/2000/svg'/>", "text markup"),
    (b"\x01\x02\x03\x04\x05\x06\x07\x08\x09", "unrecognised bytes"),
])
def test_unsupported_bytes_are_named(data: bytes, named: str) -> None:
    exc = reason_of(data)
    assert exc.reason == "unsupported_format" and named in exc.detail and "TIFF or HEIC" in exc.detail


# -- TIFF and HEIC ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", [None, "tiff_lzw", "tiff_deflate", "packbits"])
def test_tiff_decodes_losslessly(compression: str | None) -> None:
    out = decode_image(tiff(96, 64, seed=3, compression=compression), LIMITS)
    assert (out.format, out.content_type, out.width, out.height, out.scale) == ("tiff", "image/tiff", 96, 64, 1)
    np.testing.assert_array_equal(out.rgb, pattern(96, 64, seed=3))


def test_bigtiff_and_grey_16bit_tiff() -> None:
    src = pattern(40, 30, seed=8)
    np.testing.assert_array_equal(decode_image(pillow_bytes(src, "TIFF", big_tiff=True), LIMITS).rgb, src)
    grey = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    out = decode_image(pillow_bytes(grey, "TIFF"), LIMITS)
    np.testing.assert_array_equal(out.rgb[..., 0], (grey >> 8).astype(np.uint8))


def test_heic_decodes_close_to_the_source() -> None:
    out = decode_image(heic(96, 64, seed=3), LIMITS)
    assert (out.format, out.content_type, out.width, out.height) == ("heic", "image/heic", 96, 64)
    error = np.abs(out.rgb.astype(np.int16) - pattern(96, 64, seed=3).astype(np.int16)).mean()
    assert error < 12, error  # lossy HEVC at quality 90
    assert out.rgb[5, 5, 0] > 200 and out.rgb[5, 5, 2] < 80  # the red block stays top-left


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_exif_orientation_matches_pillow(orientation: int) -> None:
    data = pillow_bytes(pattern(48, 32, seed=orientation), "TIFF", orientation)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = decode_image(data, LIMITS)
    np.testing.assert_array_equal(out.rgb, expected)
    assert (out.width, out.height) == ((32, 48) if orientation >= 5 else (48, 32))


def test_heic_orientation_is_applied_once() -> None:
    out = decode_image(heic(96, 64, seed=4, orientation=6), LIMITS)  # 90 degrees clockwise
    assert (out.width, out.height) == (64, 96)
    assert out.rgb[5, -5, 0] > 200 and out.rgb[5, -5, 2] < 80  # the top-left red block is now top-right


def test_multipage_tiff_decodes_its_first_page_and_says_so() -> None:
    out = decode_image(multipage_tiff(3), LIMITS)
    assert (out.width, out.height) == (40, 30)
    assert out.warnings == ("tiff_pages: 3 pages, the first was decoded",)


@pytest.mark.parametrize("make", [lambda: tiff_with_size(9_000, 9_000), lambda: tiff_with_size(20_000, 12_000),
                                  lambda: heic_with_size(8_000, 8_000), lambda: heic_with_size(20_000, 12_000)],
                         ids=["tiff_81mp", "tiff_240mp", "heic_64mp", "heic_240mp"])
def test_tiff_and_heic_bombs_are_refused_unread(make: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    data = make()
    refuse_decoding(monkeypatch)
    exc = reason_of(data, ImageLimits())
    assert exc.reason == "too_many_pixels", exc


@pytest.mark.parametrize("data", [tiff(), heic()], ids=["tiff", "heic"])
def test_tiff_and_heic_get_the_pixel_limit_with_a_hint(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_decoding(monkeypatch)
    exc = reason_of(data, ImageLimits(max_pixels=96 * 64 - 1))
    assert exc.reason == "too_many_pixels" and "no reduced-scale decode" in exc.detail


@pytest.mark.parametrize("fraction", [0.5, 0.9])
@pytest.mark.parametrize("make", [tiff, lambda: tiff(compression="tiff_lzw"), heic], ids=["tiff", "tiff_lzw", "heic"])
def test_cut_tiff_and_heic_are_truncated(make: Callable[[], bytes], fraction: float) -> None:
    data = make()
    assert decode_image(data, LIMITS).width == 96
    assert reason_of(data[: int(len(data) * fraction)]).reason == "truncated"


def test_tiff_with_float_samples_is_refused_with_its_layout() -> None:
    data = pillow_bytes(np.ones((8, 8), np.float32), "TIFF")
    exc = reason_of(data)
    assert exc.reason == "unsupported_format" and "32-bit samples" in exc.detail


# -- large JPEGs: libjpeg's reduced-scale decode within max_pixels ---------------------------------------------

def test_a_fifty_megapixel_phone_jpeg_is_decoded_at_half_scale() -> None:
    still = np.full((6144, 8160, 3), 128, np.uint8)  # 8160 x 6144 = 50.1 MP, over the default 40 MP
    still[:600, :800] = (20, 20, 250)  # BGR: a red block top-left
    data = cv2.imencode(".jpg", still, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    del still
    out = decode_image(data, ImageLimits())
    assert (out.width, out.height, out.scale) == (4080, 3072, 2)
    assert out.width * out.height <= ImageLimits().max_pixels
    assert out.rgb[10, 10, 0] > 200 and out.rgb[10, 10, 2] < 60


@pytest.mark.parametrize(("max_pixels", "scale", "size"), [
    (120_000, 1, (400, 300)), (119_999, 2, (200, 150)), (30_000, 2, (200, 150)), (29_999, 4, (100, 75)),
    (7_500, 4, (100, 75)), (7_499, 8, (50, 38)), (1_900, 8, (50, 38)),
])
def test_the_largest_scale_within_max_pixels_is_chosen(max_pixels: int, scale: int, size: tuple[int, int]) -> None:
    out = decode_image(jpeg(400, 300, seed=5), ImageLimits(max_bytes=1 << 20, max_pixels=max_pixels))
    assert (out.scale, (out.width, out.height)) == (scale, size)
    assert out.rgb.shape == (size[1], size[0], 3) and out.width * out.height <= max_pixels


def test_a_reduced_decode_looks_like_the_full_one_downscaled() -> None:
    data = jpeg(400, 300, seed=6)
    full = decode_image(data, LIMITS).rgb
    half = decode_image(data, ImageLimits(max_bytes=1 << 20, max_pixels=30_000)).rgb
    expected = cv2.resize(full, (200, 150), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(np.int16) - expected.astype(np.int16)).mean() < 6


def test_a_reduced_decode_applies_exif_orientation() -> None:
    data = with_exif_orientation(pattern(400, 300), "JPEG", 6)
    out = decode_image(data, ImageLimits(max_bytes=1 << 20, max_pixels=30_000))
    assert (out.width, out.height, out.scale) == (150, 200, 2)
    assert out.rgb[5, -5, 0] > 200 and out.rgb[5, -5, 2] < 80  # the top-left red block is now top-right


def test_over_the_limit_even_at_one_eighth_is_refused_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    data = jpeg(400, 300)
    refuse_decoding(monkeypatch)
    exc = reason_of(data, ImageLimits(max_bytes=1 << 20, max_pixels=1_899))
    assert exc.reason == "too_many_pixels" and "1/8 scale (50x38)" in exc.detail and "resize" in exc.detail


@pytest.mark.parametrize(("data", "hint"), [
    (progressive_jpeg(400, 300), "baseline JPEG"),
    (encode(pattern(400, 300), ".png"), "PNG has no reduced-scale decode"),
    (encode(pattern(400, 300), ".webp"), "WEBP has no reduced-scale decode"),
], ids=["progressive_jpeg", "png", "webp"])
def test_formats_without_a_bounded_scaled_decode_are_refused_unread(data: bytes, hint: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_decoding(monkeypatch)
    exc = reason_of(data, ImageLimits(max_bytes=1 << 20, max_pixels=30_000))
    assert exc.reason == "too_many_pixels" and hint in exc.detail


# -- a JPEG that lacks only its end-of-image marker ------------------------------------------------------------

def _restart_jpeg() -> bytes:
    bgr = cv2.cvtColor(pattern(160, 120, seed=9), cv2.COLOR_RGB2BGR)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1].tobytes()


JPEGS: dict[str, Callable[[], bytes]] = {
    "baseline": lambda: jpeg(320, 240, seed=7),
    "progressive": lambda: progressive_jpeg(320, 240, seed=7),
    "grey": lambda: encode(cv2.cvtColor(pattern(200, 150), cv2.COLOR_RGB2GRAY), ".jpg"),
    "restart_markers": _restart_jpeg,
    "exif_rotated": lambda: with_exif_orientation(pattern(120, 80), "JPEG", 8),
}


@pytest.mark.parametrize("name", JPEGS)
def test_a_jpeg_missing_only_its_eoi_is_accepted_and_flagged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    data = JPEGS[name]()
    assert data.endswith(EOI)
    whole = decode_image(data, LIMITS)
    with caplog.at_level(logging.INFO, logger="rfr.core.imaging"):
        out = decode_image(data[:-2], LIMITS)
    np.testing.assert_array_equal(out.rgb, whole.rgb)
    assert out.warnings == ("jpeg_missing_eoi",) and whole.warnings == ()
    assert any("without end-of-image marker accepted" in r.getMessage() for r in caplog.records)


def test_a_large_jpeg_missing_its_eoi_is_also_decoded_at_reduced_scale() -> None:
    out = decode_image(jpeg(400, 300)[:-2], ImageLimits(max_bytes=1 << 20, max_pixels=30_000))
    assert (out.scale, out.width, out.warnings) == (2, 200, ("jpeg_missing_eoi",))


@pytest.mark.parametrize("fraction", [0.5, 0.9])
@pytest.mark.parametrize("name", JPEGS)
def test_a_jpeg_cut_inside_its_data_is_still_truncated(name: str, fraction: float) -> None:
    data = JPEGS[name]()
    exc = reason_of(data[: int(len(data) * fraction)])
    assert exc.reason == "truncated", exc


@pytest.mark.parametrize("seed", range(6))
def test_one_scan_byte_less_than_complete_is_truncated(seed: int) -> None:
    data = jpeg(96, 64, seed=seed)
    exc = reason_of(data[:-3])  # the EOI and the scan's last byte, which holds at least one coded bit
    assert exc.reason == "truncated", exc


def test_a_progressive_jpeg_cut_between_scans_is_truncated() -> None:
    """Cut where the last scan's segments start: every byte left is whole, but the progression is unfinished
    (libjpeg itself would decode it without a word, at lower quality)."""
    data = progressive_jpeg(320, 240, seed=7)
    last_sos = data.rfind(b"\xff\xda")
    table = data.rfind(b"\xff\xc4", 0, last_sos)  # a Huffman table may precede the last scan
    cut = table if table > data.rfind(b"\xff\xda", 0, last_sos) else last_sos
    exc = reason_of(data[:cut])
    assert exc.reason == "truncated" and "progression" in exc.detail, exc
