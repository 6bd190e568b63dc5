"""Image headers read without a decoder: the format from the magic bytes, the declared size, and whether the
stream is complete. :mod:`rfr.core.imaging` runs these checks before any pixel is decoded (see its module doc).

Which parts Pillow reads, and why the rest is read by hand:

* PNG and BMP: Pillow's reader classes (``PIL.PngImagePlugin.PngImageFile``, ``PIL.BmpImagePlugin.BmpImageFile``)
  constructed on the bytes, which parse the header (PNG: the chunks up to the first IDAT, checksums verified) and
  decode nothing. About 7 µs more per image than by hand, under 1% of decoding it (``docs/benchmarks.md``). Not
  ``Image.open``: its own decompression-bomb limit would refuse a large image before RFR's configurable limits, with
  their "resize the still" hints (:func:`rfr.core.imaging.check_limits`), decide. Pillow calls a zero-sized or
  cut-off header "not identified by this driver", so when it refuses one a small fallback
  (:mod:`rfr.core.png_bmp_refusals`) reads the declared size and the file's end to keep the reasons ``zero_size``,
  ``truncated`` and ``corrupt``. OpenCV still decodes the pixels.
* TIFF and HEIC/HEIF: Pillow's lazy open, which reads the header and the directories but no pixel data
  (:mod:`rfr.core.pillow_stills`).
* JPEG, by hand: the segment walk up to the first scan. Pillow stops at the first scan marker without reading the
  scan header, so it cannot tell a single-scan baseline JPEG (decodable at reduced scale) from a progressive one,
  nor say where the scan starts for the end-of-image check; ``Image.open`` also refuses a 16000 x 12000 baseline
  JPEG that RFR decodes at 1/4 scale.
* WebP, by hand: Pillow's WebP open is not lazy. It hands the whole file to libwebp's animation decoder, which
  reserves the full canvas before any limit runs (618 MB for a 144 kB WebP declaring 9000 x 9000), and is some
  hundreds of times slower (``webp_canvas``, ``pillow_lazy_open_us`` in ``benchmarks/bench_ingest.py``).
* By hand for every format: the format from the magic bytes (:func:`sniff_format`), and every completeness check
  (:func:`check_complete`): the JPEG end-of-image marker after the scan and its scan structure, the PNG end chunk
  (IEND), the WebP RIFF size field, the BMP file size, the TIFF strips or tiles and the HEIF boxes.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace

from PIL import BmpImagePlugin, ImageFile, PngImagePlugin

from rfr.core.errors import ReasonedError
from rfr.core.jpeg_structure import SOF_MARKERS, STANDALONE_MARKERS, missing_only_eoi
from rfr.core.reasons import Reason

JPEG_MISSING_EOI = "jpeg_missing_eoi"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
# Huffman sequential frames (baseline, extended): with every component in one scan libjpeg streams them, so a
# scaled decode holds one MCU row, not the whole image's coefficients as progressive or multi-scan ones need.
_SEQUENTIAL = frozenset({0xC0, 0xC1})
# ISO-BMFF (ISO/IEC 14496-12) ``ftyp`` brands of HEIF stills (ISO/IEC 23008-12): HEVC-coded, then generic.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF 6.0 and BigTIFF, both byte orders
SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF or HEIC"
_PILLOW_READERS: dict[str, type[ImageFile.ImageFile]] = {"png": PngImagePlugin.PngImageFile,
                                                         "bmp": BmpImagePlugin.BmpImageFile}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow's readers raise on a header they refuse ("not identified by this driver", "broken PNG file",
# "Truncated File Read", "Unsupported BMP header type", "Truncated IHDR chunk"...).
_PILLOW_REFUSED = (SyntaxError, OSError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                   zlib.error)

# What common unsupported bytes are, to name them when refusing (prefix -> name).
_KNOWN: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 codestream"), (b"\xff\n", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image"), (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an ICO icon"), (b"RIFF", "a RIFF file that is not WebP (WAVE or AVI?)"),
)


class ImageRejected(ReasonedError):
    """The bytes are not an acceptable still; ``reason`` is one of :class:`rfr.core.reasons.Reason`."""


@dataclass(frozen=True)
class ImageHeader:
    """What the header declares, read without decoding: the stored (un-oriented) size."""

    format: str
    width: int
    height: int
    has_alpha: bool = False
    scan_offset: int = 0  # JPEG: where the first scan starts (the EOI must come after it)
    scalable: bool = False  # JPEG: single-scan sequential, so decodable at 1/2, 1/4, 1/8 in bounded memory
    data_end: int = 0  # TIFF: end of the first image's strips or tiles; HEIF: end of the last top-level box
    warnings: tuple[str, ...] = ()  # accepted oddities, e.g. "jpeg_missing_eoi" (see rfr.core.imaging)


def _heif_brand(data: bytes) -> str | None:
    """"heic" or "heif" from an ISO-BMFF ``ftyp`` box (major brand, then the compatible brands), else None."""
    if data[4:8] != b"ftyp" or len(data) < 12:
        return None
    box_end = min(int.from_bytes(data[:4], "big"), len(data))
    major = data[8:12]
    brands = {data[k: k + 4] for k in range(16, box_end - 3, 4)}
    if major in _HEVC_BRANDS or (major in _HEIF_BRANDS and brands & _HEVC_BRANDS):
        return "heic"
    return "heif" if major in _HEIF_BRANDS and not brands & {b"avif", b"avis"} else None


def sniff_format(data: bytes) -> str | None:
    """The still format named by the magic bytes (the first 64 bytes of a file are enough), or None when it is
    not one of :data:`SUPPORTED`: "jpeg", "png", "webp", "bmp", "tiff", "heic" (HEVC-coded HEIF) or "heif"."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_MAGIC:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 14:
        return "bmp"
    if data[:4] in _TIFF_MAGIC:
        return "tiff"
    return _heif_brand(data)


def describe_unsupported(data: bytes) -> str:
    """What bytes that :func:`sniff_format` does not accept seem to be, for a refusal message."""
    if not data:
        return "no bytes"
    head = data[:8].hex(" ")
    what = None
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("latin-1")
        what = "an AVIF image" if brand in ("avif", "avis") else f"an ISO-BMFF file of brand {brand!r} (MP4 or MOV?)"
    what = what or next((name for magic, name in _KNOWN if data.startswith(magic)), None)
    if what is None and data.lstrip()[:1] == b"<":
        what = "text markup (HTML, XML or SVG)"
    return f"{what or 'unrecognised bytes'} (starts {head}); supported stills are {SUPPORTED}"


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise ImageRejected(Reason.TRUNCATED, f"{what} header cut off at {len(data)} bytes")


def _jpeg_scan(data: bytes) -> ImageHeader:
    """Walk the JPEG segments up to the first scan: its size, where that scan starts, whether it is scalable."""
    i, size, frame = 2, None, (0, 0)  # frame: (SOF marker, component count)
    while True:
        if i >= len(data):
            raise ImageRejected(Reason.TRUNCATED, "JPEG ends before its first scan")
        if data[i] != 0xFF:
            raise ImageRejected(Reason.CORRUPT, f"JPEG marker expected at byte {i}")
        while i < len(data) and data[i] == 0xFF:
            i += 1
        _need(data, i + 1, "JPEG")
        marker = data[i]
        i += 1
        if marker in STANDALONE_MARKERS:
            continue
        if marker == 0xD9:
            raise ImageRejected(Reason.CORRUPT, "JPEG ends before its first scan")
        if marker == 0xDA:
            if size is None:
                raise ImageRejected(Reason.CORRUPT, "JPEG scan before any frame header")
            _need(data, i + 3, "JPEG scan")
            scalable = frame[0] in _SEQUENTIAL and data[i + 2] == frame[1]
            return ImageHeader("jpeg", size[0], size[1], scan_offset=i, scalable=scalable)
        _need(data, i + 2, "JPEG")
        length = struct.unpack_from(">H", data, i)[0]
        if length < 2:
            raise ImageRejected(Reason.CORRUPT, f"JPEG segment length {length}")
        if marker in SOF_MARKERS and size is None:
            _need(data, i + 8, "JPEG frame")
            height, width = struct.unpack_from(">HH", data, i + 3)
            size, frame = (width, height), (marker, data[i + 7])
        i += length


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
            raise ImageRejected(Reason.CORRUPT, "WebP lossless signature missing")
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1))
    if kind == b"VP8 ":
        _need(data, 30, "WebP")
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageRejected(Reason.CORRUPT, "WebP lossy start code missing")
        w, h = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", w & 0x3FFF, h & 0x3FFF)
    raise ImageRejected(Reason.CORRUPT, f"unknown WebP chunk {kind!r}")


def _pillow_header(data: bytes, fmt: str) -> ImageHeader:
    """PNG and BMP: the header as Pillow's reader class parses it, no pixel decoded (see the module doc)."""
    try:
        im = _PILLOW_READERS[fmt](io.BytesIO(data))
    except _PILLOW_REFUSED as exc:
        from rfr.core.png_bmp_refusals import refusal

        raise refusal(data, fmt, exc) from exc
    # Not closed: it owns no file, and is freed on return. A BMP's alpha stays the decoder's, as before (OpenCV
    # drops it); a PNG's (alpha channel or tRNS chunk) is composited over white.
    alpha = fmt == "png" and (im.mode in _ALPHA_MODES or "transparency" in im.info)
    return ImageHeader(fmt, im.width, im.height, alpha)


def read_header(data: bytes) -> ImageHeader:
    """Format and declared size from the header alone; raises ImageRejected."""
    fmt = sniff_format(data)
    if fmt == "jpeg":
        return _jpeg_scan(data)
    if fmt == "webp":
        return _webp_header(data)
    if fmt in ("png", "bmp"):
        return _pillow_header(data, fmt)
    if fmt is not None:  # tiff, heic, heif
        from rfr.core.pillow_stills import pillow_header

        return pillow_header(data, fmt)
    raise ImageRejected(Reason.UNSUPPORTED_FORMAT, describe_unsupported(data))


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


def _jpeg_ending(data: bytes, header: ImageHeader) -> ImageHeader:
    if data.rfind(b"\xff\xd9", header.scan_offset) >= 0:  # from the end: EOI is last (a trailer may follow)
        return header
    cut = missing_only_eoi(data)
    if cut is not None:
        raise ImageRejected(Reason.TRUNCATED, f"jpeg data ends early ({len(data)} bytes): {cut}")
    return replace(header, warnings=(*header.warnings, JPEG_MISSING_EOI))


def check_complete(data: bytes, header: ImageHeader) -> ImageHeader:
    """Raise ``truncated`` when the stream visibly stops early; return ``header``, with the warning
    :data:`JPEG_MISSING_EOI` added for a JPEG that lacks only its end-of-image marker as far as its structure
    shows (whether its last scan's data is whole is for a decoder to confirm: :func:`rfr.core.imaging.probe_image`)."""
    fmt = header.format
    if fmt == "jpeg":
        return _jpeg_ending(data, header)
    if fmt in ("tiff", "heic", "heif"):
        complete = len(data) >= header.data_end
    elif fmt == "png":
        complete = data.rfind(_PNG_END) >= 0
    elif fmt == "webp":
        complete = len(data) >= 8 + struct.unpack_from("<I", data, 4)[0]
    else:
        complete = len(data) >= _bmp_expected_size(data, header)
    if not complete:
        need = f", {header.data_end} declared" if header.data_end else ""
        raise ImageRejected(Reason.TRUNCATED, f"{fmt} data ends early ({len(data)} bytes{need})")
    return header
