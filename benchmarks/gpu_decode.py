#!/usr/bin/env python3
"""Which JPEG decoder keeps FaceNet fed on one GPU: the embed stage (crop JPEG -> embedding on the host), pipelined.

``gpu_embed.py`` showed the stage bounded by decoding: torchvision's nvJPEG (one process-wide lock, Huffman
decoding on one CPU thread) and OpenCV on a Python thread pool both stay near 15-35k crops/s, against 79k/s for
the compiled fp16 model. This script measures NVIDIA nvImageCodec's backends on the same crops (the hardware
JPEG engines, the CUDA decoder, the hybrid one, libjpeg-turbo on a C++ thread pool), each on its own and as the
feeder of the pipelined stage, beside torchvision's nvJPEG; and how far each decoder's pixels are from OpenCV's.

HOW TO RUN: the wheels travel in ``.whl/`` (git-ignored)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \\
        nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43

then ONE device call (about 2 minutes; the weights are not needed: speed only, pixels compared directly)::

    run(command="S=/tmp/site; python3 -m pip install -q --no-index --no-deps --target $S .whl/nvidia_*.whl && "
                "export PYTHONPATH=$S LD_LIBRARY_PATH=$S/nvidia/cu13/lib; python3 benchmarks/gpu_decode.py --out $OUT",
        carry=[".whl", ".rfr/gpu_embed/crops.npz"], timeout_s=300)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_embed as ge
from gpu_embed_pipeline import Model, Produce, SplitDecode, decode_on, pipelined_rate, repeat_to, report

BATCH = 4096


def nvimgcodec_variants(jpegs: list[bytes], threads: int) -> dict[str, Produce]:
    """One batch producer per nvImageCodec backend set; each returns N x 3 x H x W uint8 on the GPU."""
    from nvidia import nvimgcodec as nv

    streams = [nv.CodeStream(b) for b in jpegs]

    def on_gpu(backends: list[Any] | None) -> Produce:
        decoders: list[Any] = []  # created on first use, so that one backend set failing spares the others

        def produce() -> torch.Tensor:
            if not decoders:
                decoders.append(nv.Decoder(device_id=0, max_num_cpu_threads=threads, backends=backends))
            decoder = decoders[0]
            images = decoder.decode(streams, cuda_stream=torch.cuda.current_stream().cuda_stream)
            if any(image is None for image in images):
                raise RuntimeError("this backend set could not decode every crop")
            batch = torch.stack([torch.as_tensor(image, device="cuda") for image in images]).permute(0, 3, 1, 2)
            torch.cuda.current_stream().synchronize()  # the stack has read the decoder's buffers: free to go
            return batch

        return produce

    cpu_decoders: list[Any] = []

    def on_cpu() -> torch.Tensor:
        if not cpu_decoders:
            cpu_decoders.append(nv.Decoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=threads,
                                           backends=[nv.Backend(nv.BackendKind.CPU_ONLY)]))
        host = np.stack([np.asarray(image.cpu()) for image in cpu_decoders[0].decode(streams)])
        return torch.from_numpy(host).pin_memory().to("cuda", non_blocking=True).permute(0, 3, 1, 2)

    kind = nv.BackendKind
    return {
        "nvimgcodec_hw": on_gpu([nv.Backend(kind.HW_GPU_ONLY)]),
        "nvimgcodec_cuda": on_gpu([nv.Backend(kind.GPU_ONLY)]),
        "nvimgcodec_hybrid": on_gpu([nv.Backend(kind.HYBRID_CPU_GPU)]),
        "nvimgcodec_default": on_gpu(None),
        "nvimgcodec_hw_0.7_cuda": on_gpu([nv.Backend(kind.HW_GPU_ONLY, load_hint=0.7), nv.Backend(kind.GPU_ONLY)]),
        "nvimgcodec_cpu_turbo": on_cpu,
    }


def pixels_vs_cv2(produce: Produce, reference: torch.Tensor) -> dict[str, float]:
    """Largest and mean absolute difference (0-255) from OpenCV's decode of the same crops."""
    with torch.inference_mode():
        diff = (produce()[: len(reference)].int() - reference.int()).abs()
    return {"max_abs": int(diff.max()), "mean_abs": round(float(diff.float().mean()), 4)}


def measure(name: str, produce: Produce, model: Model,
            reference: torch.Tensor, faces: int) -> dict[str, Any]:
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def decode_only() -> torch.Tensor:
        return decode_on(side, produce)

    out: dict[str, Any] = {"pixels_vs_cv2": report(lambda: pixels_vs_cv2(decode_only, reference))}
    out["decode_only_faces_per_s"] = report(lambda: ge.timed(decode_only, faces))
    out["pipelined_stage_faces_per_s"] = report(lambda: pipelined_rate(model, produce, faces))
    print(name, json.dumps(out), flush=True)
    return out


def compiled_fp16() -> tuple[Model, str]:
    """The fp16 model under ``torch.compile`` (compiled on first call) and which weights it holds."""
    cls, _ = ge.facenet_class()
    model32, weights = ge.load_model(cls)  # speed only: random weights are fine when none were carried
    return ge.fp16_model(torch.compile(ge._half_copy(model32))), weights  # type: ignore[arg-type]


def replica(seconds: float, barrier: Any, results: Any) -> None:
    """One embed-stage process (spawned): compiled fp16 model fed by torchvision's nvJPEG, pipelined; after all
    replicas are warm it measures for ``seconds`` and puts its faces/s on ``results``."""
    try:
        model, _ = compiled_fp16()
        jpegs, _, _ = ge.load_inputs()
        decode, _ = ge.cpu_decoder()
        nvjpeg = ge.gpu_decoder()
        if nvjpeg is None:
            raise RuntimeError("torchvision cannot decode on the GPU here")
        produce = SplitDecode(repeat_to(jpegs, BATCH), 0.0, decode, nvjpeg, 1)
        pipelined_rate(model, produce, BATCH, batches=2)  # compile and warm up
        barrier.wait(timeout=300)
        results.put(pipelined_rate(model, produce, BATCH, seconds=seconds))
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put(f"failed: {type(exc).__name__}: {str(exc)[:200]}")


def replicas(count: int, seconds: float = 10.0) -> dict[str, Any]:
    """``count`` embed-stage processes sharing the GPU, as ``count`` consumers of one group would."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=replica, args=(seconds, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    rates = [results.get(timeout=400) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    numbers = [r for r in rates if isinstance(r, float)]
    total = round(sum(numbers), 1) if len(numbers) == count else None
    return {"per_process_faces_per_s": rates, "total_faces_per_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parser.add_argument("--procs", default="", help="e.g. 2,3: only measure that many stage processes at once")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    if args.procs:
        ge.facenet_class()  # installs the wheel once, before the replicas import it
        by_count = {f"processes_{n}": replicas(int(n)) for n in args.procs.split(",")}
        ge.write_report({"device": torch.cuda.get_device_name(), "batch": BATCH, "decoder": "torchvision_nvjpeg",
                         "replicas": by_count}, args.out, "gpu_replicas.json")
        return
    started = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    model, weights = compiled_fp16()
    jpegs, _, _ = ge.load_inputs()
    batch = repeat_to(jpegs, BATCH)
    reference, _ = ge.decode_all(jpegs)
    threads = max(1, (os.cpu_count() or 4) - 2)
    x = reference.repeat(BATCH // len(reference), 1, 1, 1)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(x).cpu()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "weights": weights, "batch": BATCH, "cpu_threads": threads,
                              "compile_s": round(time.perf_counter() - t0, 1)}
    with torch.inference_mode():
        result["model_only_compiled_fp16_faces_per_s"] = ge.timed(lambda: model(x), BATCH)
    decode, _ = ge.cpu_decoder()
    nvjpeg = ge.gpu_decoder()
    variants: dict[str, Produce] = {}
    if nvjpeg is not None:
        variants["torchvision_nvjpeg"] = SplitDecode(batch, 0.0, decode, nvjpeg, threads)
        variants["torchvision_nvjpeg_0.8_cv2_0.2"] = SplitDecode(batch, 0.2, decode, nvjpeg, threads)
    found = report(lambda: nvimgcodec_variants(batch, threads))
    if isinstance(found, dict):
        variants.update(found)
    else:
        result["nvimgcodec"] = found
    result["decoders"] = {name: measure(name, produce, model, reference, BATCH) for name, produce in variants.items()}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    ge.write_report(result, args.out, "gpu_decode.json")



if __name__ == "__main__":
    main()
