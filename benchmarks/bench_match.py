"""Match benchmark: gallery build rate and search latency at 10k / 100k (/ 1M) vectors, enrolment rate. JSON out.

    .venv/bin/python benchmarks/bench_match.py                       # 10k and 100k, HNSW
    .venv/bin/python benchmarks/bench_match.py --sizes 1000000       # 1M (about 2 GB of vectors; slow to build)
    .venv/bin/python benchmarks/bench_match.py --strategy-check      # partition vs filter for a small watch-list
    .venv/bin/python benchmarks/bench_match.py --enrol-images 300    # real decode/detect/embed/insert on LFW

It starts its own milvus-lite server (as `rfr up` does) in a temporary folder and goes through
:class:`rfr.gallery.milvus.MilvusGallery`, the code the match service runs. Vectors are synthetic
identities (2 photos per subject, genuine cosine about 0.7), so recall against exact search means something;
latency does not depend on that. milvus-lite builds the ANN index in the background after a flush and searches
brute force until it is done: the benchmark waits for every segment's index file before timing searches.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rfr.core.settings import MilvusSettings
from rfr.gallery.base import GalleryFace
from rfr.gallery.milvus import MilvusGallery
from rfr.gallery.milvus_schema import connect
from rfr.tools import procs

logger = logging.getLogger("bench_match")

DIM = 512
NOISE = 0.029  # per-dimension noise: two photos of one synthetic subject score about 0.7
CHUNK = 5000


def photos(n: int, seed: int, dim: int = DIM) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(gallery vectors: 2 per subject, probe vectors: a third photo of each subject), unit length."""
    rng = np.random.default_rng(seed)
    subjects = n // 2
    centres = rng.standard_normal((subjects, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def noisy(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        v = rows + rng.standard_normal(rows.shape, dtype=np.float32) * NOISE
        out: npt.NDArray[np.float32] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    gallery = np.concatenate([noisy(centres[i:i + CHUNK].repeat(2, axis=0)) for i in range(0, subjects, CHUNK)])
    return gallery, noisy(centres[: min(subjects, 2000)])


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
            "n": len(ms)}


def wait_for_indexes(data_dir: Path, collection: str, timeout_s: float) -> float:
    """Seconds until every data segment of ``collection`` has its index file (milvus-lite's on-disk layout)."""
    started = time.perf_counter()
    root = data_dir / "collections" / collection / "partitions"
    stable = 0
    while time.perf_counter() - started < timeout_s:
        data = {p.stem for p in root.glob("*/data/*.parquet")}
        indexed = {p.name.split(".")[0] for p in root.glob("*/indexes/*.idx")}
        stable = stable + 1 if data and data <= indexed else 0
        if stable >= 3:
            return time.perf_counter() - started
        time.sleep(1.0)
    raise TimeoutError(f"indexes of {collection} not built within {timeout_s:.0f}s")


def build(gallery: MilvusGallery, vectors: npt.NDArray[np.float32], watch_list: Callable[[int], str]) -> dict[str, Any]:
    started = time.perf_counter()
    for start in range(0, len(vectors), CHUNK):
        gallery.add([GalleryFace(f"f{i}", f"s{i // 2}", watch_list(i), vectors[i], f"bench/{i}.jpg")
                     for i in range(start, min(len(vectors), start + CHUNK))])
    inserted = time.perf_counter() - started
    gallery.flush()
    flushed = time.perf_counter() - started - inserted
    return {"insert_s": round(inserted, 2), "insert_vectors_per_s": round(len(vectors) / inserted, 1),
            "flush_s": round(flushed, 2)}


def time_searches(gallery: MilvusGallery, probes: npt.NDArray[np.float32], truth: npt.NDArray[np.int64],
                  watch_lists: list[str], queries: int, batch: int) -> dict[str, Any]:
    single: list[float] = []
    rank1 = 0
    for i in range(queries):
        t = time.perf_counter()
        [hits] = gallery.search(probes[i:i + 1], 5, watch_lists, -1.0)
        single.append(time.perf_counter() - t)
        rank1 += bool(hits) and hits[0].subject_id == f"s{truth[i]}"
    batched: list[float] = []
    for start in range(0, min(len(probes), batch * 10), batch):
        t = time.perf_counter()
        gallery.search(probes[start:start + batch], 5, watch_lists, -1.0)
        batched.append(time.perf_counter() - t)
    per_query = [b / batch for b in batched]
    return {"single": percentiles(single), f"batch{batch}": percentiles(batched),
            f"batch{batch}_per_query": percentiles(per_query), "rank1_agreement_with_exact": round(rank1 / queries, 4)}


def exact_top1(vectors: npt.NDArray[np.float32], probes: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None
               ) -> npt.NDArray[np.int64]:
    """Subject of the exact nearest gallery vector (among ``mask``) for each probe."""
    best = np.full(len(probes), -np.inf, dtype=np.float32)
    arg = np.zeros(len(probes), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        block = vectors[start:start + 100_000]
        scores = probes @ block.T
        if mask is not None:
            scores[:, ~mask[start:start + 100_000]] = -np.inf
        j = np.argmax(scores, axis=1)
        better = scores[np.arange(len(probes)), j] > best
        best[better] = scores[np.arange(len(probes)), j][better]
        arg[better] = start + j[better]
    return arg // 2


def run_size(server: Server, size: int, args: argparse.Namespace) -> dict[str, Any]:
    vectors, probes = photos(size, seed=size)
    settings = MilvusSettings(uri=server.uri, collection_prefix=f"bench{size}", index_type=args.index)
    gallery = MilvusGallery(settings, "bench-model")
    if gallery.dim() is not None:
        gallery.drop()
    out: dict[str, Any] = {"vectors": size, "index": args.index, "build": build(gallery, vectors, lambda _i: "custody")}
    if args.index != "FLAT":
        out["build"]["index_wait_s"] = round(wait_for_indexes(server.data_dir, gallery.collection, 3600), 1)
    truth = exact_top1(vectors, probes[: args.queries], None)
    out["search"] = time_searches(gallery, probes, truth, ["custody"], args.queries, args.batch)
    t = time.perf_counter()
    out["count"] = {"faces": gallery.count(), "seconds": round(time.perf_counter() - t, 3)}
    gallery.drop()
    return out


def strategy_check(server: Server, args: argparse.Namespace, size: int = 100_000, share: float = 0.1) -> dict[str, Any]:
    """A small watch-list (``share`` of the vectors): its own partition (what the service does) vs a filter on a
    field inside one shared partition, against exact search restricted to that watch-list. (The output keys
    ``small_gallery_share`` and ``gallery_filter_strategy`` keep their names, for comparison with earlier runs.)"""
    vectors, probes = photos(size, seed=7)
    small = ((np.arange(size) // 2) % round(1 / share)) == 0
    rows = np.flatnonzero(np.arange(len(probes)) % round(1 / share) == 0)[: args.queries]
    truth = exact_top1(vectors, probes[rows], small)
    results: dict[str, Any] = {"vectors": size, "small_gallery_share": share, "index": args.index}
    for strategy in ("partition", "filter"):
        settings = MilvusSettings(uri=server.uri, collection_prefix=f"strategy_{strategy}", index_type=args.index)
        gallery = MilvusGallery(settings, "bench-model")
        if gallery.dim() is not None:
            gallery.drop()
        if strategy == "partition":
            build(gallery, vectors, lambda i: "small" if small[i] else "big")
        else:
            _build_marked(gallery, vectors, small)
        wait_for_indexes(server.data_dir, gallery.collection, 3600)
        client = connect(settings)
        times, hits, agree = [], 0, 0
        for k, row in enumerate(rows):
            t = time.perf_counter()
            if strategy == "partition":
                [found] = gallery.search(probes[row:row + 1], 5, ["small"], -1.0)
                subjects = [h.subject_id for h in found]
            else:
                [raw] = client.search(gallery.collection, data=[probes[row].tolist()], limit=5,
                                      filter='source_ref == "small"', output_fields=["subject_id"],
                                      search_params={"params": {"ef": settings.search_ef}},
                                      group_by_field="subject_id")
                subjects = [h["entity"]["subject_id"] for h in raw]
            times.append(time.perf_counter() - t)
            hits += len(subjects)
            agree += bool(subjects) and subjects[0] == f"s{truth[k]}"
        results[strategy] = {"latency": percentiles(times), "mean_hits_of_5": round(hits / len(rows), 3),
                             "rank1_agreement_with_exact": round(agree / len(rows), 4)}
        gallery.drop()
    return results


def _build_marked(gallery: MilvusGallery, vectors: npt.NDArray[np.float32], small: npt.NDArray[np.bool_]) -> None:
    """Every vector on one watch-list (one partition); ``source_ref`` marks the small watch-list's rows."""
    for start in range(0, len(vectors), CHUNK):
        gallery.add([GalleryFace(f"f{i}", f"s{i // 2}", "custody", vectors[i], "small" if small[i] else "big")
                     for i in range(start, min(len(vectors), start + CHUNK))])
    gallery.flush()


class Server:
    """A milvus-lite server on a free port with its own data folder."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "milvus"
        self.port = procs.free_port()
        self.info, self.proc = procs.spawn("milvus-bench", procs.milvus_argv(self.data_dir, self.port), root)
        procs.wait_port("127.0.0.1", self.port, 60, self.proc)
        self.uri = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


class _Timed:
    """Wraps an object and adds the seconds spent in one of its methods to ``seconds``."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner = inner
        self._method = method
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t

        return timed


def enrol_rate(server: Server, images: int, lfw: Path, batch_size: int) -> dict[str, Any]:
    """Real enrolment (decode, detect, align, embed, insert) of the first ``images`` LFW photos."""
    from rfr.core.settings import load_settings
    from rfr.gallery.enrol import Enroller, items_from_folder
    from rfr.gallery.extraction import PipelineExtractor, load_embedder

    settings = load_settings()
    items = items_from_folder(lfw)[:images]
    embedder = load_embedder(settings)
    extractor = PipelineExtractor(settings)
    gallery = MilvusGallery(MilvusSettings(uri=server.uri, collection_prefix="bench_enrol"), embedder.model_id)
    embedder.embed(np.zeros((1, 160, 160, 3), np.uint8))  # build the model outside the timing
    ex, em, ga = _Timed(extractor, "extract"), _Timed(embedder, "embed"), _Timed(gallery, "add")
    report = Enroller(ex, em, ga, "custody", batch_size=batch_size).run(items)
    extractor.close()
    gallery.drop()
    return {"images": report.images, "enrolled": report.enrolled, "rejected": report.reasons(),
            "seconds": round(report.seconds, 2), "images_per_s": round(report.images / report.seconds, 2),
            "stage_seconds": {"decode_detect_align": round(ex.seconds, 2), "embed": round(em.seconds, 2),
                              "milvus_insert": round(ga.seconds, 2)},
            "batch_size": batch_size, "embed_runtime": getattr(getattr(embedder, "runtime", None), "describe",
                                                               lambda: "?")()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="Gallery sizes (comma-separated).")
    parser.add_argument("--index", default="HNSW", choices=["HNSW", "FLAT", "IVF_FLAT"])
    parser.add_argument("--queries", type=int, default=200, help="Single queries timed per size.")
    parser.add_argument("--batch", type=int, default=64, help="Probes per batched search.")
    parser.add_argument("--strategy-check", action="store_true", help="Partition vs filter for a 10%% watch-list.")
    parser.add_argument("--enrol-images", type=int, default=0, help="Also time real enrolment of N LFW photos.")
    parser.add_argument("--lfw", type=Path, default=Path(__file__).resolve().parents[2] / "shared/faces/lfw")
    parser.add_argument("--output", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from importlib.metadata import version

    result: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": _cpus(),
                                          "milvus_lite": version("milvus-lite"), "pymilvus": version("pymilvus")},
                              "dim": DIM, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="rfr-bench-match-") as tmp:
        server = Server(Path(tmp))
        try:
            for size in (int(s) for s in args.sizes.split(",") if s):
                started = time.perf_counter()
                entry = run_size(server, size, args)
                entry["total_s"] = round(time.perf_counter() - started, 1)
                result["sizes"].append(entry)
                print(json.dumps(entry), flush=True)
            if args.strategy_check:
                result["gallery_filter_strategy"] = strategy_check(server, args)
            if args.enrol_images:
                result["enrolment"] = enrol_rate(server, args.enrol_images, args.lfw, 32)
        finally:
            server.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
