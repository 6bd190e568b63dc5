"""Pipelined embed stage on one GPU (used by ``gpu_embed.py`` and ``gpu_decode.py``).

A feeder thread decodes batch k+1 on a side CUDA stream while the main thread embeds batch k on the default
stream and copies the embeddings to the host. ``Produce`` is any callable that returns one decoded batch as an
N x 3 x H x W uint8 CUDA tensor (any strides); it runs under the side stream.

torchvision's nvJPEG decoder holds one process-wide lock, so a second nvJPEG thread buys nothing:
:class:`SplitDecode` instead splits each batch between OpenCV on a CPU thread pool and nvJPEG.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

Decode = Callable[[bytes], np.ndarray]
GpuDecode = Callable[[list[torch.Tensor]], list[torch.Tensor]]
Model = Callable[[torch.Tensor], torch.Tensor]
Produce = Callable[[], torch.Tensor]


def repeat_to(items: list[bytes], n: int) -> list[bytes]:
    """``items`` repeated in order until there are ``n`` (a batch larger than the prepared crops)."""
    return [items[i % len(items)] for i in range(n)]


def jpeg_tensors(jpegs: list[bytes]) -> list[torch.Tensor]:
    """Encoded JPEGs as the 1-D uint8 CPU tensors torchvision's decoder takes."""
    return [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]


def decode_on(side: torch.cuda.Stream, produce: Produce) -> torch.Tensor:
    """One batch from ``produce``, decoded on the ``side`` stream and complete when returned, so the decoder's
    own buffers may be released."""
    with torch.cuda.stream(side):
        x = produce()
    side.synchronize()
    return x


class SplitDecode:
    """A share ``cpu_share`` of the batch decoded by OpenCV threads, the rest by torchvision's nvJPEG."""

    def __init__(self, jpegs: list[bytes], cpu_share: float, decode: Decode, nvjpeg: GpuDecode,
                 workers: int) -> None:
        split = round(len(jpegs) * cpu_share)
        self.gpu_part = jpeg_tensors(jpegs[split:])
        self.decode, self.nvjpeg = decode, nvjpeg
        self.pool = ThreadPoolExecutor(max(1, workers))
        chunk = max(1, split // max(1, workers))
        self.chunks = [jpegs[i:min(i + chunk, split)] for i in range(0, split, chunk)]

    def _decode_chunk(self, chunk: list[bytes]) -> np.ndarray:
        return np.stack([self.decode(b) for b in chunk])

    def __call__(self) -> torch.Tensor:
        # Every chunk goes to the pool straight from here: a task that waited on the pool's other tasks could
        # hold its only worker and deadlock.
        cpu_futures = [self.pool.submit(self._decode_chunk, c) for c in self.chunks]
        pieces = [torch.stack(self.nvjpeg(self.gpu_part))] if self.gpu_part else []
        if cpu_futures:
            host = torch.from_numpy(np.concatenate([f.result() for f in cpu_futures])).pin_memory()
            pieces.insert(0, host.to("cuda", non_blocking=True).permute(0, 3, 1, 2))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def close(self) -> None:
        self.pool.shutdown()


def pipelined_rate(model: Model, produce: Produce, faces: int, batches: int = 8,
                   seconds: float | None = None) -> float:
    """Faces/s with decode overlapped with the model, after one warm-up batch: over ``batches`` batches, or,
    when ``seconds`` is given, over as many batches as fit in that time."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    ahead = ThreadPoolExecutor(1)
    pending: Future[torch.Tensor] = ahead.submit(decode_on, side, produce)
    started, done = 0.0, 0
    with torch.inference_mode():
        while True:
            x = pending.result()
            last = done == batches if seconds is None else done > 0 and time.perf_counter() - started >= seconds
            if not last:
                pending = ahead.submit(decode_on, side, produce)
            x.record_stream(torch.cuda.current_stream())
            model(x).float().cpu()
            if done == 0:
                started = time.perf_counter()
            if last:
                break
            done += 1
    ahead.shutdown()
    return round(faces * done / (time.perf_counter() - started), 1)


def report(fn: Callable[[], object]) -> object:
    """``fn()``, or the failure as a short string: one failed variant must not end the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - report, do not crash the run
        return f"failed: {type(exc).__name__}: {str(exc)[:200]}"


def sweep(model: Model, jpegs: list[bytes], decode: Decode, nvjpeg: GpuDecode, workers: int,
          shares: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4)) -> dict[str, object]:
    """Pipelined stage faces/s for each CPU-decode share of :class:`SplitDecode`."""
    out: dict[str, object] = {}
    for share in shares:
        split = SplitDecode(jpegs, share, decode, nvjpeg, workers)
        out[f"cpu_share_{share:.1f}"] = report(lambda s=split: pipelined_rate(model, s, len(jpegs)))
        split.close()
    return out
