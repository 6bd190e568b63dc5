#!/usr/bin/env python3
"""FaceNet (InceptionResnetV1) on one CUDA GPU: bare model and embed-stage throughput, fp16 accuracy. Prints JSON.

HOW TO RUN (two steps; the device machine is bare and cannot reach the internet):

1. Here, once, with the project venv (needs the fetched weights: ``rfr models fetch``)::

       .venv/bin/python benchmarks/gpu_embed.py prepare [--model-dir DIR] [--lfw-dir ../shared/faces/lfw]

   writes ``.whl/facenet_pytorch-2.5.3-py3-none-any.whl`` and ``.rfr/gpu_embed/`` (both git-ignored, ~52 MB):
   the CASIA-WebFace state dict stored as fp16 (the fp32 file is 94 MB, over the 64 MiB carry limit; the
   rounding's own effect is measured here on the CPU and reported as ``weights_fp16_rounding``), 256 LFW
   centre crops as JPEG with their CPU fp32 embeddings under the original weights. Delete the folder after.

2. On the device, ONE call (about 2-4 minutes wall; the script stops optional steps past ``--budget-s``)::

       run(command="PY=$(command -v python3 || command -v python); $PY benchmarks/gpu_embed.py run --out $OUT",
           carry=[".whl", ".rfr/gpu_embed"], timeout_s=420)

   It needs only torch (+ numpy); facenet-pytorch is imported, else pip-installed --no-deps from ``.whl/``, else
   loaded straight from the wheel. torchvision (GPU JPEG decode) and cv2/PIL (CPU decode) are used when present.
   The JSON is printed and written to ``$OUT/gpu_embed.json``. Checked without a GPU (tiny sizes, ~1 minute):
   ``.venv/bin/python benchmarks/gpu_embed.py run --smoke-cpu``. Results of the H200 runs: ``docs/benchmarks.md``.
   ``benchmarks/gpu_decode.py`` follows up on the stage's bound, JPEG decoding.

Measured: bare faces/s in fp32 (TF32 off), TF32, fp16 eager (autocast as the service runs it, and .half()
channels_last), fp16 .half() + torch.compile at large batch; the stage (JPEG decode + preprocessing + model)
with decode on CPU threads vs nvJPEG on the GPU (torchvision.io.decode_jpeg(device='cuda') batch), and feeding the
compiled model, in turn and pipelined (``gpu_embed_pipeline.py``); fp16-vs-fp32
cosine on the real crops, and each GPU path against the CPU fp32 reference with the original weights.
Reference (H200, random inputs): 2.84 GFLOP/face; 8.6k fp32, 26.7k tf32, 39k fp16 eager (batch 1024), 79k fp16
compiled (batch 4096).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from gpu_embed_pipeline import jpeg_tensors, repeat_to, report, sweep

REPO = Path(__file__).resolve().parents[1]
PREP = REPO / ".rfr" / "gpu_embed"
WHEELS = REPO / ".whl"
WEIGHTS = "casia-webface-fp16.pt"
CROPS = "crops.npz"
FACENET_REQ = "facenet-pytorch==2.5.3"


class Config:
    """Sizes and device; ``--smoke-cpu`` shrinks them to check the script on a machine without a GPU."""

    device = "cuda"
    batches: tuple[int, ...] = (256, 1024)
    big = 4096
    stage_batch = 1024
    seconds = 2.0


CFG = Config()


def sync() -> None:
    if CFG.device == "cuda":
        torch.cuda.synchronize()


def upload(t: torch.Tensor) -> torch.Tensor:
    return t.pin_memory().to(CFG.device, non_blocking=True) if CFG.device == "cuda" else t


# --- facenet-pytorch without its dependencies ----------------------------------------------------------------
def facenet_class() -> tuple[Any, str]:
    """``InceptionResnetV1`` and how it was obtained."""
    with contextlib.suppress(ImportError):
        return importlib.import_module("facenet_pytorch").InceptionResnetV1, "installed"
    wheels = sorted(WHEELS.glob("facenet_pytorch-*.whl"))
    if not wheels:
        raise SystemExit(f"facenet-pytorch is not installed and no wheel in {WHEELS}: run `prepare` first")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])]
    if subprocess.run(pip, capture_output=True, check=False).returncode == 0:
        with contextlib.suppress(ImportError):
            return importlib.import_module("facenet_pytorch").InceptionResnetV1, "pip --no-deps"
    return _from_wheel(wheels[0]).InceptionResnetV1, "loaded from wheel"


def _from_wheel(wheel: Path) -> ModuleType:
    """Import the model module only: its package __init__ pulls in torchvision, PIL and requests."""
    root = Path("/tmp/gpu_embed_facenet")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    pkg = ModuleType("facenet_pytorch")
    pkg.__path__ = [str(root / "facenet_pytorch")]
    sys.modules["facenet_pytorch"] = pkg
    try:
        importlib.import_module("requests.adapters")
    except ImportError:
        stub, adapters = ModuleType("requests"), ModuleType("requests.adapters")
        adapters.HTTPAdapter = object  # type: ignore[attr-defined]
        sys.modules.update({"requests": stub, "requests.adapters": adapters})
    return importlib.import_module("facenet_pytorch.models.inception_resnet_v1")


# --- measurement ---------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], faces: int, min_iters: int = 5) -> float:
    """Median faces/s over per-iteration CUDA-synchronised timings, after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    rates: list[float] = []
    started = time.perf_counter()
    while len(rates) < min_iters or time.perf_counter() - started < CFG.seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        rates.append(faces / (time.perf_counter() - t0))
    return round(float(np.median(rates)), 1)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def standardise(x_uint8_nchw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return ((x_uint8_nchw.to(dtype) - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)


def load_inputs() -> tuple[list[bytes], np.ndarray | None, dict[str, Any]]:
    """JPEG crops (real LFW when prepared, else synthetic), CPU fp32 reference embeddings, prepare's meta."""
    meta = json.loads((PREP / "meta.json").read_text()) if (PREP / "meta.json").exists() else {}
    if (PREP / CROPS).exists():
        data = np.load(PREP / CROPS)
        buf, offsets = data["jpeg_data"], data["jpeg_offsets"]
        jpegs = [buf[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
        return jpegs, data["ref_fp32"], meta
    return synthetic_jpegs(256), None, meta


def synthetic_jpegs(n: int) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(n, 20, 20, 3), dtype=np.uint8)
    return [bytes(cv2.imencode(".jpg", np.kron(s, np.ones((8, 8, 1), np.uint8)))[1]) for s in small]


def cpu_decoder() -> tuple[Callable[[bytes], np.ndarray], str]:
    """bytes -> 160x160x3 RGB uint8 on the CPU: cv2 (releases the GIL), else PIL."""
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)

        def with_cv2(b: bytes) -> np.ndarray:
            bgr = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError("undecodable JPEG")
            return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

        return with_cv2, "cv2"
    import io

    from PIL import Image  # torchvision needs PIL too: without cv2 or PIL nothing here can decode

    return (lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8)), "PIL"


def fp16_model(half: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 N x 3 x H x W batch -> embeddings through the fp16 model, standardisation included."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = half(standardise(x, torch.float16))
        return out

    return run


def bare(model32: torch.nn.Module, half: torch.nn.Module, x_u8: torch.Tensor) -> dict[str, Any]:
    """Model-only faces/s (uint8 batch already on the GPU; standardisation included)."""
    out: dict[str, Any] = {}
    run16 = fp16_model(half)
    with torch.inference_mode():
        for batch in CFG.batches:
            x = x_u8[:batch]

            def fp32(x: torch.Tensor = x) -> torch.Tensor:
                out32: torch.Tensor = model32(standardise(x, torch.float32))
                return out32

            with tf32(False):
                out[f"fp32_b{batch}"] = timed(fp32, batch)
            with tf32(True):
                out[f"tf32_b{batch}"] = timed(fp32, batch)
            with torch.autocast(CFG.device, dtype=torch.float16):
                out[f"fp16_autocast_b{batch}"] = timed(fp32, batch)
            out[f"fp16_half_b{batch}"] = timed(lambda x=x: run16(x), batch)
        out[f"fp16_half_b{len(x_u8)}"] = timed(lambda: run16(x_u8), len(x_u8))
    return out


def _half_copy(model32: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model32).half().to(memory_format=torch.channels_last)


def _compiled(half: torch.nn.Module, x_u8: torch.Tensor, jpegs: list[bytes]) -> Any:
    """fp16 .half() under torch.compile: bare at batch ``big``, then the nvJPEG stage feeding it."""
    try:
        t0 = time.perf_counter()
        model = fp16_model(torch.compile(half))  # type: ignore[arg-type]
        with torch.inference_mode():
            model(x_u8)
            sync()
            compile_s = time.perf_counter() - t0
            rate = timed(lambda: model(x_u8), len(x_u8))
        out: dict[str, Any] = {"faces_per_s": rate, "compile_s": round(compile_s, 1)}
    except Exception as exc:  # noqa: BLE001 - report, do not crash the run
        return f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    nvjpeg = gpu_decoder()
    if nvjpeg is None:
        return out
    batch = repeat_to(jpegs, len(x_u8))
    jp = jpeg_tensors(batch)

    def staged() -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.stack(nvjpeg(jp))).float().cpu()

    out["gpu_decode_stage_faces_per_s"] = report(lambda: timed(staged, len(jp)))
    decode, _ = cpu_decoder()
    out["pipelined_stage_faces_per_s"] = sweep(model, batch, decode, nvjpeg, max(1, (os.cpu_count() or 4) - 2))
    return out


def stage(half: torch.nn.Module, jpegs: list[bytes], batches: int = 6) -> dict[str, Any]:
    """Embed-stage faces/s from JPEG bytes to fp32 embeddings on the host: CPU-thread decode vs nvJPEG."""
    batch = CFG.stage_batch
    jp = repeat_to(jpegs, batch)
    decode, decoder = cpu_decoder()
    workers = os.cpu_count() or 4
    pool, feeder = ThreadPoolExecutor(workers), ThreadPoolExecutor(1)
    chunks = [jp[i:i + 64] for i in range(0, batch, 64)]

    def decode_cpu() -> np.ndarray:
        return np.concatenate(list(pool.map(lambda c: np.stack([decode(b) for b in c]), chunks)))

    run16 = fp16_model(half)

    def model_on(crops_nhwc: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return run16(crops_nhwc.permute(0, 3, 1, 2)).float().cpu()

    def cpu_stage() -> torch.Tensor:
        return model_on(upload(torch.from_numpy(decode_cpu())))

    def cpu_overlapped() -> None:  # decode batch k+1 on CPU threads while the GPU embeds batch k
        pending = feeder.submit(decode_cpu)
        for i in range(batches):
            crops = pending.result()
            if i + 1 < batches:
                pending = feeder.submit(decode_cpu)
            model_on(upload(torch.from_numpy(crops)))

    out: dict[str, Any] = {"batch": batch, "cpu_decoder": f"{decoder} x {workers} threads",
                           "cpu_decode_only": timed(decode_cpu, batch),
                           "cpu_decode_stage": timed(cpu_stage, batch),
                           "cpu_decode_stage_overlapped": timed(cpu_overlapped, batch * batches, min_iters=2)}
    nvjpeg = gpu_decoder()
    if nvjpeg is None:
        out["gpu_decode"] = "skipped: torchvision not importable"
        return out

    def gpu_decode() -> torch.Tensor:
        return torch.stack(nvjpeg(jpeg_tensors(jp)))

    out["gpu_decode_only"] = timed(gpu_decode, batch)
    out["gpu_decode_stage"] = timed(lambda: model_on(gpu_decode().permute(0, 2, 3, 1)), batch)
    pool.shutdown()
    feeder.shutdown()
    return out


def gpu_decoder() -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """nvJPEG batch decode (torchvision) -> list of 3 x H x W uint8 RGB CUDA tensors, or None."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return lambda data: list(decode_jpeg(data, mode=ImageReadMode.RGB, device=CFG.device))


def cosine(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    cos = (a.float() * b.float()).sum(1).cpu()
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def accuracy(model32: torch.nn.Module, half: torch.nn.Module, x_cpu_dec: torch.Tensor,
             x_gpu_dec: torch.Tensor | None, ref: np.ndarray | None) -> dict[str, Any]:
    """Each GPU path vs fp32 (TF32 off) on the same crops, and vs the CPU fp32 reference with fp32 weights."""
    with torch.inference_mode():
        with tf32(False):
            e32 = model32(standardise(x_cpu_dec, torch.float32))
        with tf32(True):
            etf32 = model32(standardise(x_cpu_dec, torch.float32))
        with torch.autocast(CFG.device, dtype=torch.float16):
            eauto = torch.nn.functional.normalize(model32(standardise(x_cpu_dec, torch.float32)).float(), dim=1)
        ehalf = torch.nn.functional.normalize(half(standardise(x_cpu_dec, torch.float16)).float(), dim=1)
        out: dict[str, Any] = {"faces": len(x_cpu_dec), "tf32_vs_fp32": cosine(etf32, e32),
                               "fp16_autocast_vs_fp32": cosine(eauto, e32), "fp16_half_vs_fp32": cosine(ehalf, e32)}
        if x_gpu_dec is not None:
            with tf32(False):
                out["nvjpeg_vs_cpu_decode_fp32"] = cosine(model32(standardise(x_gpu_dec, torch.float32)), e32)
    if ref is not None:
        r = torch.from_numpy(ref).to(CFG.device)
        out["vs_cpu_fp32_original_weights"] = {"fp32": cosine(e32, r), "fp16_autocast": cosine(eauto, r),
                                               "fp16_half": cosine(ehalf, r)}
    return out


def load_model(cls: Any) -> tuple[torch.nn.Module, str]:
    model = cls(pretrained=None).eval()
    path = PREP / WEIGHTS
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("logits.")}, strict=True)
        how = f"{path.name} (fp16-stored CASIA-WebFace)"
    else:
        how = "RANDOM (speed only: run `prepare` for real weights)"
    return model.to(CFG.device).to(memory_format=torch.channels_last), how


def decode_all(jpegs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All crops as N x 3 x 160 x 160 uint8 on the GPU: CPU-decoded, and nvJPEG-decoded when available."""
    decode, _ = cpu_decoder()
    cpu = torch.from_numpy(np.stack([decode(b) for b in jpegs])).to(CFG.device).permute(0, 3, 1, 2).contiguous()
    nvjpeg = gpu_decoder()
    gpu = torch.stack(nvjpeg(jpeg_tensors(jpegs))) if nvjpeg else None
    return cpu, gpu


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    if args.smoke_cpu:
        CFG.device, CFG.batches, CFG.big, CFG.stage_batch, CFG.seconds = "cpu", (4,), 8, 8, 0.0
    elif not torch.cuda.is_available():
        raise SystemExit(json.dumps({"error": "no CUDA device visible to torch"}))
    torch.backends.cudnn.benchmark = True
    cls, how = facenet_class()
    model32, weights = load_model(cls)
    half = _half_copy(model32)
    jpegs, ref, meta = load_inputs()
    if args.smoke_cpu:
        jpegs, ref = jpegs[:16], None if ref is None else ref[:16]
    x_cpu_dec, x_gpu_dec = decode_all(jpegs)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if CFG.device == "cuda" else "cpu (smoke)",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        "facenet_pytorch": how, "weights": weights,
        "crops": "LFW centre crops (prepare)" if ref is not None else "synthetic", "prepare_meta": meta,
        "gflop_per_face": 2.84,
    }
    result["accuracy"] = accuracy(model32, half, x_cpu_dec, x_gpu_dec, ref)
    big = x_cpu_dec.repeat((CFG.big + len(x_cpu_dec) - 1) // len(x_cpu_dec), 1, 1, 1)[:CFG.big]
    result["bare_faces_per_s"] = bare(model32, half, big)
    result["stage_faces_per_s"] = stage(half, jpegs)
    remaining = args.budget_s - (time.perf_counter() - started)
    result["bare_faces_per_s"][f"fp16_half_compiled_b{CFG.big}"] = (
        _compiled(half, big, jpegs) if remaining > 90 and not args.smoke_cpu else f"skipped: {remaining:.0f}s left")
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="FaceNet GPU benchmark (see the module docstring)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="on the GPU machine")
    r.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    r.add_argument("--smoke-cpu", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    r.add_argument("--budget-s", type=float, default=240.0, help="skip torch.compile when less than 90 s is left")
    p = sub.add_parser("prepare", help="here: carry-folder with weights, crops, wheel")
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--lfw-dir", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    args = parser.parse_args()
    if args.cmd == "prepare":
        sys.path.insert(0, str(REPO))
        from benchmarks.gpu_embed_prepare import prepare

        prepare(args.model_dir, args.lfw_dir, PREP, WHEELS, WEIGHTS, CROPS, FACENET_REQ)
        return
    write_report(run(args), args.out, "gpu_embed.json")


def write_report(result: dict[str, Any], out: Path | None, name: str) -> None:
    """Print ``result`` as JSON and, when ``out`` is given (``$OUT`` on the device), write it there as ``name``."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)


if __name__ == "__main__":
    main()
