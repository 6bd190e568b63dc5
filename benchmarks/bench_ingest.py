"""Ingest throughput on this machine: decode+validate of 1080p JPEG stills, and the whole per-still handler path.

Prints one JSON object (medians over repeats):

* ``probe``: the checks before decoding (size, magic bytes, header, limits, end of stream), stills/s;
* ``decode_validate``: :func:`rfr.core.imaging.decode_image` (probe + OpenCV decode to RGB), one thread and
  ``--threads`` threads (OpenCV releases the GIL while decoding);
* ``handler``: :class:`SubmissionHandler` on in-memory messages (decode, sha256, FrameEvent JSON with the
  image inline, SQLite claim), one thread, no broker.

Usage: ``python benchmarks/bench_ingest.py [--stills 24] [--repeats 5] [--threads 2] [--quality 85]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

from rfr.core.blobstore import FileBlobStore
from rfr.core.imaging import ImageLimits, decode_image, encode_jpeg, probe_image
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stills", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args(argv)
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
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads(), "processor": platform.processor() or platform.machine()},
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
