#!/usr/bin/env python3
"""The fast face detector on one CUDA GPU: batched BlazeFace pyramid throughput and agreement with the CPU. JSON.

HOW TO RUN (two steps; the device machine is bare, cannot reach the internet and has torch but not pydantic):

1. Here, once, with the project venv (needs ``rfr models fetch`` and ../shared/faces/lfw)::

       .venv/bin/python benchmarks/gpu_detect.py prepare

   writes ``.rfr/gpu_detect/`` (git-ignored, ~10 MB): the BlazeFace graph read from the ``.tflite`` file
   (``graph.pt``: the ops and float32 weights, so the device needs no LiteRT), 48 synthetic 1080p CCTV scenes
   (mild degradation, faces 32-200 px, rfr/tools/degrade.py) as JPEG, and the CPU detector's (LiteRT) detections
   of each as the reference. Delete the folder after.

2. On the device, ONE call (1-3 minutes; optional steps stop past ``--budget-s``)::

       run(command="python3 benchmarks/gpu_detect.py run --out $OUT", carry=[".rfr/gpu_detect"], timeout_s=420)

   Checked without a GPU (tiny sizes): ``.venv/bin/python benchmarks/gpu_detect.py run --smoke-cpu``.

Measured: agreement of the GPU detections (fp16 and fp32) with the CPU reference (recall of the reference faces,
matched boxes' IoU and keypoint distance at 128 px face scale); frames/s of the whole detector
(``BlazeFaceDetector.detect_batch``: frames from host memory, levels scaled on the GPU, candidates selected on
the GPU, weighted NMS on the CPU) at several batch sizes; the network alone per level; and frames from JPEG bytes
decoded by nvJPEG (``torchvision.io.decode_jpeg(device='cuda')``) when torchvision is there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PREP = REPO / ".rfr" / "gpu_detect"
SIZES = (32, 48, 64, 96, 200)


def prepare(args: argparse.Namespace) -> None:
    import cv2
    import torch

    from benchmarks.bench_detect import lfw_faces, make_samples
    from rfr.core.settings import DetectSettings, load_settings
    from rfr.face.blazeface_torch import read_graph
    from rfr.face.runners import make_detector
    from rfr.models import detector_model_path

    model_dir = load_settings().model_dir
    PREP.mkdir(parents=True, exist_ok=True)
    torch.save(read_graph(detector_model_path(model_dir)), PREP / "graph.pt")
    samples = make_samples(lfw_faces(args.faces, args.n, 0), list(SIZES), (1920, 1080), "mild", 0)
    detector = make_detector(DetectSettings(detector="litert"), model_dir)
    reference = []
    for i, sample in enumerate(samples):
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(sample.scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (PREP / f"scene{i:03d}.jpg").write_bytes(jpeg.tobytes())
        # the reference sees the decoded JPEG, as the GPU will
        bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        assert bgr is not None
        decoded = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        reference.append({"truth": list(sample.box), "face_px": sample.face_px,
                          "detections": [_det_json(d) for d in detector.detect(decoded)]})
    (PREP / "reference.json").write_text(json.dumps(reference))
    print(json.dumps({"prepared": str(PREP), "scenes": len(samples)}))


def _det_json(d: Any) -> dict[str, Any]:
    return {"box": [float(v) for v in d.box], "score": float(d.score), "keypoints": [list(p) for p in d.keypoints]}


def _iou(a: list[float], b: list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: list[dict[str, Any]], found: list[list[Any]]) -> dict[str, Any]:
    """Reference (CPU) detections matched to these: recall, IoU and keypoint error at 128 px face scale."""
    ious, kp, matched, total, truth_hits = [], [], 0, 0, 0
    for ref, dets in zip(reference, found, strict=True):
        mine = [_det_json(d) for d in dets]
        truth_hits += any(_iou(ref["truth"], m["box"]) >= 0.3 for m in mine)
        for r in ref["detections"]:
            total += 1
            best = max(mine, key=lambda m: _iou(r["box"], m["box"]), default=None)
            if best is None or _iou(r["box"], best["box"]) < 0.5:
                continue
            matched += 1
            ious.append(_iou(r["box"], best["box"]))
            scale = 128.0 / max(r["box"][2], 1e-6)
            kp.append(max(float(np.hypot(p[0] - q[0], p[1] - q[1])) * scale
                          for p, q in zip(r["keypoints"], best["keypoints"], strict=True)))
    return {"reference_faces": total, "matched": matched, "iou_min": round(min(ious), 4) if ious else None,
            "iou_median": round(statistics.median(ious), 4) if ious else None,
            "keypoint_px_at_128_max": round(max(kp), 3) if kp else None,
            "keypoint_px_at_128_median": round(statistics.median(kp), 3) if kp else None,
            "truth_recall": round(truth_hits / len(reference), 4)}


def _decoded(jpeg: bytes) -> Any:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a prepared scene is not a JPEG: run prepare again")
    return bgr


def _timed(fn: Any, sync: Any, repeats: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cv2
    import torch

    from rfr.face.blazeface import logit_cut
    from rfr.face.blazeface_torch import BlazeFaceTorch, TorchRunner
    from rfr.face.fast_detector import BlazeFaceDetector, whole_input_size

    started = time.perf_counter()
    device = torch.device("cpu" if args.smoke_cpu else "cuda")
    graph = torch.load(PREP / "graph.pt", weights_only=False)
    reference = json.loads((PREP / "reference.json").read_text())
    jpegs = [(PREP / f"scene{i:03d}.jpg").read_bytes() for i in range(len(reference))]
    frames = [np.asarray(cv2.cvtColor(_decoded(j), cv2.COLOR_BGR2RGB), dtype=np.uint8) for j in jpegs]
    if args.smoke_cpu:
        frames, reference, jpegs = frames[:4], reference[:4], jpegs[:4]
    settings = SimpleNamespace(strategy="auto", min_face_px=32, score_threshold=0.5, nms_iou=0.3,
                               nms_containment=0.7)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {"benchmark": "gpu_detect", "device": torch.cuda.get_device_name(0) if device.type == "cuda"
                           else "cpu", "torch": torch.__version__, "frame": "1920x1080", "scenes": len(frames)}
    for half in (False,) if args.smoke_cpu else (False, True):  # CPU kernels lack fp16 antialiasing
        det = BlazeFaceDetector(TorchRunner(BlazeFaceTorch(graph), device, half=half), settings)  # type: ignore[arg-type]
        found = det.detect_batch(frames)
        out[f"agreement_{'fp16' if half else 'fp32'}"] = agreement(reference, found)
    runner = TorchRunner(BlazeFaceTorch(graph), device, half=device.type == "cuda")
    det = BlazeFaceDetector(runner, settings)  # type: ignore[arg-type]
    levels = det.levels(1920, 1080)
    out["levels"] = ["{}x{}".format(*whole_input_size(lv)) for lv in levels]
    throughput = []
    for batch in ((1, 2) if args.smoke_cpu else (1, 8, 32, 64, 128)):
        if time.perf_counter() - started > args.budget_s:
            break
        chunk = (frames * (batch // len(frames) + 1))[:batch]
        seconds = _timed(lambda chunk=chunk: det.detect_batch(chunk), sync, args.repeats)
        throughput.append({"batch": batch, "frames_per_s": round(batch / seconds, 1),
                           "ms_per_batch": round(seconds * 1000, 2)})
    out["detector_frames_per_s"] = throughput
    out["network_only"] = network_only(runner, levels, device, sync, args, started)
    out["nvjpeg"] = nvjpeg(runner, levels, jpegs, logit_cut(0.5), sync, args, started)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def network_only(runner: Any, levels: list[Any], device: Any, sync: Any, args: argparse.Namespace,
                 started: float) -> list[dict[str, Any]]:
    import torch

    from rfr.face.fast_detector import whole_input_size

    rows = []
    batch = 2 if args.smoke_cpu else 64
    for level in levels:
        if time.perf_counter() - started > args.budget_s:
            break
        input_w, input_h = whole_input_size(level)
        x = torch.zeros(batch, input_h, input_w, 3, device=device)
        seconds = _timed(lambda x=x: runner.run_tensor(x), sync, args.repeats)
        rows.append({"input": f"{input_w}x{input_h}", "batch": batch,
                     "inputs_per_s": round(batch / seconds, 1)})
    return rows


def nvjpeg(runner: Any, levels: list[Any], jpegs: list[bytes], cut: float, sync: Any, args: argparse.Namespace,
           started: float) -> dict[str, Any]:
    """JPEG bytes -> nvJPEG decode -> pyramid on the GPU (selection included, NMS excluded)."""
    try:
        import torch
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        return {"skipped": f"torchvision not importable: {exc}"}
    if args.smoke_cpu or time.perf_counter() - started > args.budget_s:
        return {"skipped": "smoke run or over budget"}
    batch = 64
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in (jpegs * (batch // len(jpegs) + 1))[:batch]]

    def step() -> None:
        images = decode_jpeg(data, device="cuda")
        frames = torch.stack(images).permute(0, 2, 3, 1)
        for _ in runner.pyramid_tensor(frames, levels, cut):
            pass

    seconds = _timed(step, sync, args.repeats)
    return {"batch": batch, "frames_per_s": round(batch / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    p.add_argument("--n", type=int, default=10, help="identities per face size")
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, default=None, help="folder for gpu_detect.json")
    r.add_argument("--smoke-cpu", action="store_true")
    r.add_argument("--repeats", type=int, default=10)
    r.add_argument("--budget-s", type=float, default=240.0)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args)
        return
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
        (args.out / "gpu_detect.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
