"""Detect-stage cost and recall per strategy on synthetic CCTV stills. Prints JSON.

    .venv/bin/python -m benchmarks.bench_detect [--quick] [--configs litert:auto,...] [--rounds N] [--out FILE]

For each scene size (640x480, 1920x1080) and each strategy (``full``, ``tiles540``, ``tiles360``, ``auto``
= tile pyramid from ``min_face_px``): milliseconds per frame (median, p90, one thread of the Tasks model),
model calls per frame, detection recall by face width (a detection with IoU >= 0.3 to the true box) and
false detections per frame away from the pasted photo. Scenes come from :mod:`rfr.tools.degrade` (LFW photos,
seeded). The machine is shared: the load average at start and end is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import emit  # noqa: E402
from rfr.core.geometry import Box  # noqa: E402
from rfr.core.image_files import identity_folders  # noqa: E402
from rfr.core.settings import DetectSettings, load_settings  # noqa: E402
from rfr.face.detector import STRATEGIES, iou, tile_sizes  # noqa: E402
from rfr.face.runners import make_detector  # noqa: E402
from rfr.tools.degrade import LFW_FACE_FRACTION, place_in_scene  # noqa: E402

SCENES = ((640, 480), (1920, 1080))
IOU_MATCH = 0.3


@dataclass(frozen=True)
class Sample:
    scene: npt.NDArray[np.uint8]
    box: Box
    face_px: int


def lfw_faces(faces_dir: Path, n: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    """The first photo of ``n`` identities drawn with ``seed``."""
    people = list(identity_folders(faces_dir).items())
    chosen = np.random.default_rng(seed).choice(len(people), size=min(n, len(people)), replace=False)
    out = []
    for i in sorted(chosen):
        name, photos = people[i]
        bgr = cv2.imread(str(photos[0]))
        if bgr is None:
            raise RuntimeError(f"cannot read a photo of {name}")
        out.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    return out


def make_samples(faces: list[npt.NDArray[np.uint8]], sizes: list[int], scene: tuple[int, int], level: str,
                 seed: int) -> list[Sample]:
    samples = []
    for face_px in sizes:
        if face_px / LFW_FACE_FRACTION * 1.1 > min(scene):
            continue
        rng = np.random.default_rng([seed, face_px, scene[0]])
        for face in faces:
            img, box = place_in_scene(face, face_px, scene, level, rng)
            samples.append(Sample(img, box, face_px))
    return samples


def away_from_photo(box: Box, truth: Box) -> bool:
    """A detection whose centre lies outside the pasted photo (which may hold other real faces)."""
    half = 0.5 / LFW_FACE_FRACTION * truth.width
    (cx, cy), (tx, ty) = box.centre, truth.centre
    return abs(cx - tx) > half or abs(cy - ty) > half


def run_config(model_dir: Path, settings: DetectSettings, config: str, samples: list[Sample]) -> dict[str, Any]:
    """One detector ("litert", "mediapipe", "torch") with one strategy, written ``detector:strategy``."""
    detector, strategy = config.split(":")
    det: Any = make_detector(settings.model_copy(update={"detector": detector}), model_dir, strategy)
    try:
        det.detect(samples[0].scene)
        det.model_calls = 0
        times: list[float] = []
        hits: dict[int, list[bool]] = {}
        false = 0
        for s in samples:
            t0 = time.perf_counter()
            found = det.detect(s.scene)
            times.append((time.perf_counter() - t0) * 1000)
            hits.setdefault(s.face_px, []).append(any(iou(s.box, d.box) >= IOU_MATCH for d in found))
            false += sum(1 for d in found if iou(s.box, d.box) < IOU_MATCH and away_from_photo(d.box, s.box))
        calls = det.model_calls
    finally:
        det.close()
    height, width = samples[0].scene.shape[:2]
    return {
        "scene": f"{width}x{height}",
        "detector": detector,
        "strategy": strategy,
        "tile_sizes": list(tile_sizes(strategy, settings, width, height)) if detector == "mediapipe" else [],
        "ms_median": round(statistics.median(times), 2),
        "ms_p90": round(float(np.percentile(times, 90)), 2),
        "model_calls_per_frame": round(calls / len(samples), 1),
        "false_per_frame": round(false / len(samples), 3),
        "recall": {str(px): round(sum(v) / len(v), 3) for px, v in sorted(hits.items())},
    }


def interleaved(model_dir: Path, settings: DetectSettings, configs: list[str], samples: list[Sample],
                rounds: int) -> list[dict[str, Any]]:
    """Each config over the samples, ``rounds`` times in turn (a noisy machine hits every config alike); the
    figures of the round with the median time are kept."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            runs[c].append(run_config(model_dir, settings, c, samples))
    out = []
    for c in configs:
        by_time = sorted(runs[c], key=lambda r: r["ms_median"])
        chosen = dict(by_time[len(by_time) // 2])
        chosen["ms_median_each_round"] = [r["ms_median"] for r in runs[c]]
        out.append(chosen)
    return out


def smallest_reliable(recall: dict[str, float], floor: float) -> int | None:
    """The smallest face width from which recall stays at or above ``floor``."""
    sizes = sorted(int(k) for k in recall)
    ok = [s for s in sizes if all(recall[str(t)] >= floor for t in sizes if t >= s)]
    return ok[0] if ok else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    parser.add_argument("--model-dir", type=Path, default=None, help="folder of the fetched models")
    parser.add_argument("--n", type=int, default=30, help="identities per face size")
    parser.add_argument("--sizes", default="16,24,32,40,48,64,80,120,200,300")
    parser.add_argument("--configs", default="mediapipe:auto,litert:auto,mediapipe:full,litert:full,"
                        "mediapipe:tiles360,litert:tiles360",
                        help="detector:strategy pairs; the first is the baseline of the speed-up ratios")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is kept")
    parser.add_argument("--level", default="mild", choices=("clean", "mild", "hard"))
    parser.add_argument("--min-face-px", type=int, default=None, help="DetectSettings.min_face_px for auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 identities, fewer sizes, the two auto configs")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def speedups(results: list[dict[str, Any]], baseline: str, min_face_px: int) -> list[dict[str, Any]]:
    """Per scene: each config's median time against the baseline config's, and whether its recall is at least
    the baseline's at every face width from ``min_face_px`` (what the detector is set to find), with the widths
    below it where it is not."""
    out = []
    for r in results:
        base = next(b for b in results if b["scene"] == r["scene"] and f"{b['detector']}:{b['strategy']}" == baseline)
        out.append({
            "scene": r["scene"], "config": f"{r['detector']}:{r['strategy']}", "ms_median": r["ms_median"],
            "speedup_vs_" + baseline: round(base["ms_median"] / r["ms_median"], 2),
            f"recall_at_least_baseline_from_{min_face_px}px": all(
                r["recall"][px] >= base["recall"][px] for px in base["recall"] if int(px) >= min_face_px),
            "below_baseline_under_min_face": {px: [r["recall"][px], base["recall"][px]] for px in base["recall"]
                                              if int(px) < min_face_px and r["recall"][px] < base["recall"][px]},
            "smallest_face_px_recall_0.9": smallest_reliable(r["recall"], 0.9),
            "smallest_face_px_recall_0.97": smallest_reliable(r["recall"], 0.97),
        })
    return out


def main() -> None:
    args = parse_args()
    if not args.faces.is_dir():
        print(json.dumps({"error": f"labelled faces not found at {args.faces}"}))
        sys.exit(2)
    model_dir = args.model_dir or load_settings().model_dir
    base = DetectSettings()
    settings = base if args.min_face_px is None else base.model_copy(update={"min_face_px": args.min_face_px})
    n, sizes = (8, "24,32,48,80,200") if args.quick else (args.n, args.sizes)
    configs = ["mediapipe:auto", "litert:auto"] if args.quick else args.configs.split(",")
    for config in configs:
        if config.count(":") != 1 or config.split(":")[1] not in STRATEGIES:
            raise SystemExit(f"bad config {config!r}: detector:strategy, strategy one of {', '.join(STRATEGIES)}")
    faces = lfw_faces(args.faces, n, args.seed)
    load_start = os.getloadavg()
    results = []
    for scene in SCENES:
        samples = make_samples(faces, [int(v) for v in sizes.split(",")], scene, args.level, args.seed)
        results += interleaved(model_dir, settings, configs, samples, args.rounds)
    report = {
        "benchmark": "detect", "level": args.level, "identities": len(faces), "rounds": args.rounds,
        "settings": settings.model_dump(mode="json"), "results": results,
        "speedup": speedups(results, configs[0], settings.min_face_px),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg()},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
