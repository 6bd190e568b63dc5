"""Embed-stage throughput on this CPU, and the accuracy effect of the fast (bf16) path. Prints JSON.

    .venv/bin/python -m benchmarks.bench_embed [--model-dir DIR] [--lfw-dir DIR] [--seconds 1.5] [--quick]

* ``bare``: the model's forward pass on a preprocessed batch (faces/s), for fp32 and the auto path
  (bf16 autocast + channels_last where the CPU has native bf16), at batch 1, 8, 32, on 1 and 2 threads;
  plus fp32 without channels_last at batch 32 for reference.
* ``stage``: the embed stage in process at batch 32 - crop JPEG decode (cv2) + preprocessing + model - and
  the whole handler (FaceEvent JSON in, EmbeddingEvent JSON out) on the auto path.
* ``accuracy``: bf16-vs-fp32 cosine on real LFW crops and the same/different-person AUC under both.
* ``--levers`` (alone): issue #17's embedder levers in one run, ``embed()`` faces/s at batch 32 on the auto
  path: today's model, mirror TTA, the fine-tuned ``casia-webface-lowres-v1`` and both (``rfr models fetch``).

Each figure is the median of per-iteration rates over at least ``--seconds`` and 2 iterations after a warm-up.
The machine may be shared: the load average at start and end is recorded beside the numbers (with other work
on the 2 cores, 2 intra-op threads fall far behind 1). Default run: about 1.5 minutes on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rfr.core.geometry import Box  # noqa: E402
from rfr.core.imaging import encode_jpeg  # noqa: E402
from rfr.core.schemas import FaceEvent, FaceQuality, Point, SubmissionMeta  # noqa: E402
from rfr.core.settings import EmbedSettings, load_settings  # noqa: E402
from rfr.core.topics import Topics  # noqa: E402
from rfr.embedding.device import Runtime, cpu_flags, cpu_has_fast_bf16  # noqa: E402
from rfr.embedding.embedder import CROP_SIZE, FacenetEmbedder, load_embedder, preprocess  # noqa: E402
from rfr.embedding.samples import centre_crop, lfw_people  # noqa: E402
from rfr.face.crops import decode_crop  # noqa: E402
from services.embed.handler import EmbedHandler  # noqa: E402
from services.embed.metrics import EmbedMetrics  # noqa: E402


def rate(fn: Callable[[], object], faces: int, seconds: float, min_iters: int = 2) -> float:
    """Median faces/s of ``fn`` (which handles ``faces`` faces) after one warm-up call."""
    fn()
    rates: list[float] = []
    started = time.perf_counter()
    while len(rates) < min_iters or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        fn()
        rates.append(faces / (time.perf_counter() - t0))
    return round(statistics.median(rates), 1)


def load_crops(lfw_dir: Path | None, people: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(first photos, second photos) of ``people`` LFW people as aligned-crop stand-ins; synthetic without LFW."""
    if lfw_dir is None or not lfw_dir.is_dir():
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, size=(people, 20, 20, 3), dtype=np.uint8)
        return np.kron(small, np.ones((1, 8, 8, 1), dtype=np.uint8)), None
    pairs = lfw_people(lfw_dir, min_images=2, limit=people)
    return np.stack([centre_crop(p[0]) for p in pairs]), np.stack([centre_crop(p[1]) for p in pairs])


def batch_of(crops: np.ndarray, n: int) -> np.ndarray:
    return np.resize(crops, (n, *crops.shape[1:])) if len(crops) < n else crops[:n]


def bare_rows(embedders: dict[str, FacenetEmbedder], crops: np.ndarray, threads: Sequence[int],
              batches: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for name, emb in embedders.items():
        for t in threads:
            torch.set_num_threads(t)
            for b in (batches if name != "fp32_contiguous" else [max(batches)]):
                x = preprocess(batch_of(crops, b))
                rows.append({"path": name, "precision": emb.runtime.precision, "threads": t, "batch": b,
                             "faces_per_s": rate(partial(emb.forward, x), b, seconds)})
    return rows


def embed_jpegs(emb: FacenetEmbedder, jpegs: list[bytes]) -> np.ndarray:
    return emb.embed(np.stack([decode_crop(j, CROP_SIZE) for j in jpegs]))


def stage_rows(embedders: dict[str, FacenetEmbedder], crops: np.ndarray, threads: Sequence[int], batch: int,
               seconds: float) -> list[dict[str, Any]]:
    jpegs = [encode_jpeg(c) for c in batch_of(crops, batch)]
    rows = []
    for name in ("fp32", "auto"):
        emb = embedders[name]
        for t in threads:
            torch.set_num_threads(t)
            decode_only = rate(lambda: [decode_crop(j, CROP_SIZE) for j in jpegs], batch, seconds / 3)
            stage = rate(partial(embed_jpegs, emb, jpegs), batch, seconds)
            rows.append({"path": name, "precision": emb.runtime.precision, "threads": t, "batch": batch,
                         "decode_faces_per_s": decode_only, "stage_faces_per_s": stage})
    return rows


class _Msg:
    """The parts of a Kafka message the handler reads."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_CREATE_TIME, int(time.time() * 1000))


def face_event_bytes(index: int, crop: np.ndarray) -> bytes:
    now = datetime.now(UTC)
    return FaceEvent(
        event_id=f"sub_bench:f{index}", face_id=f"sub_bench:f{index}", submission_id="sub_bench", face_index=index,
        faces_in_frame=1, meta=SubmissionMeta(retailer_id="r", store_id="s", camera_id="c", captured_at=now),
        received_at=now, box=Box(x=0, y=0, width=80, height=80), keypoints=[Point(x=1, y=1)] * 5,
        quality=FaceQuality(face_px=80, score=0.9, sharpness=50, eye_distance_px=30, pose_ok=True),
        crop_jpeg=encode_jpeg(crop),
    ).to_bytes()


def handler_rate(emb: FacenetEmbedder, crops: np.ndarray, batch: int, seconds: float) -> float:
    """The whole handler on FaceEvent bytes (JSON + base64 + JPEG decode + model + EmbeddingEvent JSON)."""
    msgs = [_Msg(face_event_bytes(i, c)) for i, c in enumerate(batch_of(crops, batch))]
    handler = EmbedHandler(emb, Topics(), EmbedMetrics.create(CollectorRegistry()))
    return rate(lambda: handler.handle_batch(cast(Sequence[Message], msgs)), batch, seconds)


def accuracy(fp32: FacenetEmbedder, fast: FacenetEmbedder, first: np.ndarray, second: np.ndarray | None
             ) -> dict[str, Any]:
    if second is None:
        return {"skipped": "no LFW crops (../shared absent): cosine on real faces not measured"}
    crops = np.concatenate([first, second])
    e32, efast = fp32.embed(crops), fast.embed(crops)
    cos = (e32 * efast).sum(axis=1)
    n = len(first)

    def auc(e: np.ndarray) -> float:
        scores = e[:n] @ e[n:].T
        genuine, impostor = np.diag(scores), scores[~np.eye(n, dtype=bool)]
        return round(float((genuine[:, None] > impostor[None, :]).mean()), 5)

    return {"faces": len(crops), "fast_precision": fast.runtime.precision,
            "cosine_min": round(float(cos.min()), 6), "cosine_p01": round(float(np.quantile(cos, 0.01)), 6),
            "cosine_median": round(float(np.median(cos)), 6), "cosine_mean": round(float(cos.mean()), 6),
            "auc_fp32": auc(e32), "auc_fast": auc(efast),
            "top1_agreement": float(((e32[:n] @ e32[n:].T).argmax(1) == (efast[:n] @ efast[n:].T).argmax(1)).mean())}


LEVERS = {"casia-webface": {}, "tta-mirror": {"tta": "mirror"}, "lowres-v1": {"model": "casia-webface-lowres-v1"},
          "lowres-v1+tta-mirror": {"model": "casia-webface-lowres-v1", "tta": "mirror"}}


def lever_rows(model_dir: Path, crops: np.ndarray, seconds: float, batch: int = 32) -> dict[str, Any]:
    """``embed()`` faces/s (median) of each lever at ``batch`` on the auto path, 2 threads, in one run."""
    torch.set_num_threads(2)
    rows: dict[str, Any] = {}
    for name, update in LEVERS.items():
        embedder = load_embedder(EmbedSettings(device="cpu", precision="auto", **update), model_dir).load()
        faces_per_s = rate(partial(embedder.embed, batch_of(crops, batch)), batch, seconds)
        rows[name] = {"model_id": embedder.model_id, "tta": embedder.tta, "faces_per_s": round(faces_per_s, 1)}
    base = rows["casia-webface"]["faces_per_s"]
    for row in rows.values():
        row["vs_today"] = round(row["faces_per_s"] / base, 2)
    return {"batch": batch, "threads": 2, "loadavg": os.getloadavg(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--lfw-dir", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 32 only, shorter timings, 40 people")
    parser.add_argument("--levers", action="store_true", help="only issue #17's embedder levers (faces/s)")
    args = parser.parse_args()
    if args.levers:
        crops, _ = load_crops(args.lfw_dir, min(args.people, 40))
        print(json.dumps(lever_rows(args.model_dir or load_settings().model_dir, crops, args.seconds), indent=2))
        return
    if args.quick:
        args.seconds, args.people = min(args.seconds, 0.3), min(args.people, 40)
    batches = (1, 32) if args.quick else (1, 8, 32)
    model_dir = args.model_dir or load_settings().model_dir
    load_before = os.getloadavg()
    fp32 = load_embedder(EmbedSettings(device="cpu", precision="fp32"), model_dir).load()
    auto = load_embedder(EmbedSettings(device="cpu", precision="auto"), model_dir).load()
    plain = Runtime("cpu", "fp32", channels_last=False, threads=2, reason="benchmark reference")
    contiguous = FacenetEmbedder(fp32.weights_path, fp32.model_id, fp32.weights_sha256, plain).load()
    embedders = {"fp32": fp32, "auto": auto, "fp32_contiguous": contiguous}
    first, second = load_crops(args.lfw_dir, args.people)
    bare = bare_rows(embedders, first, (1, 2), batches, args.seconds)
    stage = stage_rows(embedders, first, (1, 2), 32, args.seconds)
    torch.set_num_threads(2)
    handler = handler_rate(auto, first, 32, args.seconds)
    acc = accuracy(fp32, auto, first, second)

    def pick(path: str, t: int, b: int) -> float:
        return float(next(r["faces_per_s"] for r in bare if (r["path"], r["threads"], r["batch"]) == (path, t, b)))

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "bf16_flags": sorted(cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16"}),
                    "native_bf16": cpu_has_fast_bf16(), "loadavg_start": load_before,
                    "loadavg_end": os.getloadavg()},
        "model": {"model_id": fp32.model_id, "weights_sha256": fp32.weights_sha256,
                  "auto": auto.runtime.describe()},
        "bare": bare,
        "stage": stage,
        "handler_auto_2threads_batch32_faces_per_s": handler,
        "ratios": {"auto_vs_fp32_2threads_batch32": round(pick("auto", 2, 32) / pick("fp32", 2, 32), 2),
                   "2_vs_1_threads_auto_batch32": round(pick("auto", 2, 32) / pick("auto", 1, 32), 2),
                   "2_vs_1_threads_fp32_batch32": round(pick("fp32", 2, 32) / pick("fp32", 1, 32), 2),
                   "channels_last_vs_contiguous_fp32_2threads_batch32":
                       round(pick("fp32", 2, 32) / pick("fp32_contiguous", 2, 32), 2)},
        "accuracy": acc,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
