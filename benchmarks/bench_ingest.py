"""Ingest throughput on this machine: decode+validate of 1080p JPEG stills, and the whole per-still handler path.

Prints one JSON object (medians over repeats):

* ``probe``: the checks before decoding (size, magic bytes, header, limits, end of stream), stills/s;
* ``decode_validate``: :func:`rfr.core.imaging.decode_image` (probe + OpenCV decode to RGB), one thread and
  ``--threads`` threads (OpenCV releases the GIL while decoding);
* ``handler``: :class:`SubmissionHandler` on in-memory messages (decode, sha256, FrameEvent JSON with the
  image inline, SQLite claim), one thread, no broker;
* ``headers``: per format (one 1080p scene as JPEG, PNG, WebP, BMP), microseconds per still for the header read
  by hand (``hand``), by Pillow's lazy open for format and size (``pillow_lazy_open``: ``Image.open``, no pixel
  decoded) and as :func:`rfr.core.image_headers.read_header` ships, with their ratio; then the whole pre-decode
  check path (:func:`rfr.core.imaging.probe_image`) with the hand headers and as shipped, and the whole decode
  (:func:`rfr.core.imaging.decode_image`) for scale. The hand PNG and BMP readers that issue 13 replaced by
  Pillow are kept below only as the baseline of this comparison;
* ``webp_canvas``: the memory Pillow's WebP open reserves for a 9000 x 9000 WebP before any limit could refuse it.

Usage: ``python -m benchmarks.bench_ingest [--stills 24] [--repeats 5] [--threads 2] [--quality 85]
[--header-loops 200] [--headers-only]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import PIL
import psutil
from confluent_kafka import Message
from PIL import Image
from prometheus_client import CollectorRegistry

from rfr.core import imaging
from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageHeader, ImageLimits, decode_image, encode_jpeg, probe_image, read_header, sniff_format
from rfr.core.topics import Topics
from rfr.tools.degrade import SCENE_1080P, synthetic_background
from services.ingest.accept import Ingestor
from services.ingest.handler import SubmissionHandler, submission_headers
from services.ingest.metrics import IngestMetrics
from services.ingest.store import SqliteSubmissionStore


class _Msg:
    """The parts of a Kafka message the handler reads."""

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset
        self._headers = submission_headers("bench", "store", "cam", "2024-05-01T00:00:00Z")

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def topic(self) -> str:
        return "bench.submissions"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def make_stills(n: int, quality: int) -> list[bytes]:
    rng = np.random.default_rng(1080)
    out = []
    for _ in range(n):
        scene = synthetic_background(SCENE_1080P, rng)
        out.append(encode_jpeg(scene, quality))
    return out


def rates(fns: dict[str, Callable[[], object]], n: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median stills/s of each ``fn`` (handling ``n`` stills) over ``repeats`` runs, after one warm-up each.

    The functions take turns within each repeat, so a busy neighbour on the machine slows them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"stills_per_s": round(n / med, 1), "ms_per_still": round(1000 * med / n, 3),
                     "min_ms_per_still": round(1000 * min(ts) / n, 3)}
    return out


def bench_handler(stills: list[bytes], repeats: int, limits: ImageLimits) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = iter(range(10**6))

        def once() -> None:
            run = next(runs)  # a fresh store per run: every still is new, none a duplicate
            store = SqliteSubmissionStore(root / f"ingest-{run}.db")
            ingestor = Ingestor(Topics("bench"), store, FileBlobStore(root / "blobs"),
                                IngestMetrics.create(CollectorRegistry()), limits, 4 * 1024 * 1024)
            msgs = cast(list[Message], [_Msg(s, i) for i, s in enumerate(stills)])
            results = SubmissionHandler(ingestor).handle_batch(msgs)
            assert all(isinstance(r, list) and len(r) == 2 for r in results)
            store.close()

        return rates({"handler": once}, len(stills), repeats)["handler"]


def _hand_png(data: bytes) -> ImageHeader:
    """Baseline: the hand PNG header reader (IHDR, a tRNS chunk before IDAT) replaced in issue 13."""
    width, height = struct.unpack_from(">II", data, 16)
    alpha, pos = data[25] in (4, 6), 33
    while not alpha and pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        alpha, pos = kind == b"tRNS", pos + 12 + length
    return ImageHeader("png", width, height, alpha)


def _hand_bmp(data: bytes) -> ImageHeader:
    """Baseline: the hand BMP header reader (BITMAPCOREHEADER or BITMAPINFOHEADER) replaced in issue 13."""
    if struct.unpack_from("<I", data, 14)[0] == 12:
        w, h = struct.unpack_from("<HH", data, 18)
    else:
        w, h = struct.unpack_from("<ii", data, 18)
    return ImageHeader("bmp", w, abs(h))


def hand_header(data: bytes) -> ImageHeader:
    """The header read by hand: JPEG and WebP as :mod:`rfr.core.image_headers` still reads them, PNG and BMP as it
    did before issue 13."""
    return {"png": _hand_png, "bmp": _hand_bmp}.get(sniff_format(data) or "", read_header)(data)


def pillow_lazy_open(data: bytes, fmt: str) -> tuple[str | None, tuple[int, int]]:
    """Format and size from Pillow's lazy open (``Image.open`` reads the header, decodes no pixel)."""
    with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as im:
        return im.format, im.size


@contextmanager
def hand_headers_in_probe() -> Iterator[None]:
    """Run :func:`probe_image` with :func:`hand_header` in place of the shipped header reader."""
    shipped = imaging.read_header
    imaging.read_header = hand_header
    try:
        yield
    finally:
        imaging.read_header = shipped


def micros(batches: dict[str, Callable[[], object]], loops: int, repeats: int) -> dict[str, float]:
    """Median microseconds per call of each batch (``loops`` calls) over ``repeats``, after one warm-up each; the
    batches take turns within each repeat, so a busy neighbour slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in batches}
    for fn in batches.values():
        fn()
    for _ in range(repeats):
        for name, fn in batches.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: round(1e6 * statistics.median(ts) / loops, 2) for name, ts in times.items()}


def _batch(loops: int, fn: Callable[..., object], *args: object) -> Callable[[], None]:
    def run() -> None:
        for _ in range(loops):
            fn(*args)
    return run


def bench_headers(quality: int, loops: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Header read and pre-decode checks per format, by hand and by Pillow (see the module doc)."""
    scene = synthetic_background(SCENE_1080P, np.random.default_rng(1080))
    bgr = cv2.cvtColor(scene, cv2.COLOR_RGB2BGR)
    stills = {"jpeg": encode_jpeg(scene, quality), **{ext: cv2.imencode(f".{ext}", bgr)[1].tobytes()
                                                      for ext in ("png", "webp", "bmp")}}
    limits = ImageLimits()
    out: dict[str, dict[str, Any]] = {}
    for fmt, data in stills.items():
        shipped_probe = _batch(loops, probe_image, data, limits)

        def probe_hand(shipped_probe: Callable[[], None] = shipped_probe) -> None:
            with hand_headers_in_probe():
                shipped_probe()

        us = micros({"hand": _batch(loops, hand_header, data),
                     "pillow_lazy_open": _batch(loops, pillow_lazy_open, data, fmt),
                     "read_header": _batch(loops, read_header, data),
                     "probe_hand_headers": probe_hand, "probe": shipped_probe}, loops, repeats)
        decode_us = micros({"decode": _batch(2, decode_image, data, limits)}, 2, repeats)["decode"]
        hand = hand_header(data)
        out[fmt] = {"bytes": len(data), "same_size": pillow_lazy_open(data, fmt)[1] == (hand.width, hand.height),
                    **{f"{k}_us": v for k, v in us.items()},
                    "pillow_vs_hand": round(us["pillow_lazy_open"] / us["hand"], 2),
                    "read_header_vs_hand": round(us["read_header"] / us["hand"], 2),
                    "probe_vs_probe_hand_headers": round(us["probe"] / us["probe_hand_headers"], 2),
                    "decode_validate_ms": round(decode_us / 1000, 2),
                    "read_header_share_of_decode_pct": round(100 * us["read_header"] / decode_us, 3)}
    return out


def bench_webp_canvas(side: int = 9000) -> dict[str, float]:
    """What Pillow's WebP open reserves before any limit could refuse the still: a flat ``side`` x ``side`` WebP
    (81 MP at 9000: over ingest's 40 MP, under Pillow's own 179 MP), the growth of this process's virtual memory
    while it is open (psutil), against the hand header read."""
    flat = np.zeros((side, side, 3), np.uint8)
    data = cv2.imencode(".webp", flat, [cv2.IMWRITE_WEBP_QUALITY, 1])[1].tobytes()
    del flat
    me = psutil.Process()
    before = me.memory_info().vms
    t0 = time.perf_counter()
    with Image.open(io.BytesIO(data), formats=["WEBP"]):
        open_ms = 1000 * (time.perf_counter() - t0)
        reserved = me.memory_info().vms - before
    hand_us = micros({"hand": _batch(1000, read_header, data)}, 1000, 3)["hand"]
    return {"side": side, "bytes": len(data), "pillow_open_ms": round(open_ms, 1),
            "pillow_open_reserved_mb": round(reserved / 2**20), "hand_header_us": hand_us}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "opencv": cv2.__version__, "pillow": PIL.__version__,
            "opencv_threads": cv2.getNumThreads(), "processor": platform.processor() or platform.machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stills", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--header-loops", type=int, default=200, help="header reads per timed batch")
    parser.add_argument("--headers-only", action="store_true", help="only the header comparison")
    args = parser.parse_args(argv)
    headers = bench_headers(args.quality, args.header_loops, args.repeats)
    if args.headers_only:
        json.dump({"benchmark": "ingest_headers", "headers": headers, "webp_canvas": bench_webp_canvas(),
                   "machine": machine()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    limits = ImageLimits()
    stills = make_stills(args.stills, args.quality)

    def probe_all() -> None:
        for s in stills:
            probe_image(s, limits)

    def decode_all() -> None:
        for s in stills:
            decode_image(s, limits)

    threaded = f"decode_validate_{args.threads}_threads"
    with ThreadPoolExecutor(args.threads) as pool:
        def decode_parallel() -> None:
            list(pool.map(lambda s: decode_image(s, limits), stills))

        measured = rates({"probe": probe_all, "decode_validate_1_thread": decode_all, threaded: decode_parallel},
                         len(stills), args.repeats)
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "still": {"width": SCENE_1080P[0], "height": SCENE_1080P[1], "format": "jpeg", "quality": args.quality,
                  "median_bytes": int(statistics.median(len(s) for s in stills)), "count": len(stills)},
        **measured,
        "handler_1_thread": bench_handler(stills, args.repeats, limits),
        "parallel_speedup": round(measured[threaded]["stills_per_s"]
                                  / measured["decode_validate_1_thread"]["stills_per_s"], 2),
        "headers": headers,
        "webp_canvas": bench_webp_canvas(),
        "machine": machine(),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
