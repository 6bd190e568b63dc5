"""Where and how the embedder runs: device, numeric precision, memory format and CPU threads.

Resolved once at start-up from :class:`rfr.core.settings.EmbedSettings` and the hardware, then logged:

* device ``auto`` -> CUDA when torch sees a GPU, else the CPU.
* precision ``auto`` -> fp16 autocast on CUDA; bf16 autocast on a CPU with native bf16 (AMX or AVX512-BF16,
  about 3-4x faster than fp32 for FaceNet, cosine >= 0.9998 to the fp32 embedding); fp32 otherwise.
* channels_last memory format for the convolutions on the CPU (oneDNN's fast layout) and under half precision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rfr.core.settings import EmbedSettings

logger = logging.getLogger(__name__)

DeviceName = Literal["cpu", "cuda"]
Precision = Literal["fp32", "bf16", "fp16"]

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


class DeviceUnavailableError(RuntimeError):
    """The settings ask for a device or precision this machine cannot provide."""


@dataclass(frozen=True)
class Runtime:
    """The resolved execution plan for the model."""

    device: DeviceName
    precision: Precision
    channels_last: bool
    threads: int
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"device={self.device} precision={self.precision} layout={layout} threads={self.threads}"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty when /proc/cpuinfo is not there)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AMX tiles or AVX512-BF16) and torch was built for AVX-512."""
    found = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability()
    return bool(found & BF16_CPU_FLAGS) and capability.startswith("AVX512")


def resolve_runtime(settings: EmbedSettings, *, cuda_available: bool | None = None,
                    flags: frozenset[str] | None = None) -> Runtime:
    """Pick device and precision from the settings and the hardware; raise when an explicit ask cannot be met."""
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if settings.device == "cuda" and not has_cuda:
        raise DeviceUnavailableError("RFR_EMBED__DEVICE=cuda but torch sees no CUDA device; use auto or cpu")
    device: DeviceName = "cuda" if settings.device == "cuda" or (settings.device == "auto" and has_cuda) else "cpu"
    precision, reason = _precision(settings, device, flags)
    channels_last = device == "cpu" or precision != "fp32"
    return Runtime(device, precision, channels_last, settings.threads, reason)


def _precision(settings: EmbedSettings, device: DeviceName, flags: frozenset[str] | None) -> tuple[Precision, str]:
    asked = settings.precision
    if device == "cuda":
        if asked == "auto":
            return "fp16", "auto: CUDA -> fp16 autocast"
        if asked == "bf16" and not torch.cuda.is_bf16_supported():
            raise DeviceUnavailableError("RFR_EMBED__PRECISION=bf16 but this GPU has no bf16; use fp16 or fp32")
        return asked, f"{asked} as configured"
    if asked == "fp16":
        raise DeviceUnavailableError("RFR_EMBED__PRECISION=fp16 is for CUDA only; on the CPU use bf16 or fp32")
    fast_bf16 = cpu_has_fast_bf16(flags)
    if asked == "auto":
        if fast_bf16:
            return "bf16", "auto: CPU has native bf16 (AMX/AVX512-BF16) -> bf16 autocast"
        return "fp32", "auto: no native bf16 on this CPU -> fp32"
    if asked == "bf16" and not fast_bf16:
        logger.warning("bf16 asked for on a CPU without native bf16: it will be emulated and slower than fp32")
    return asked, f"{asked} as configured"


def apply_runtime(runtime: Runtime) -> None:
    """Set the process-wide torch knobs the runtime implies (CPU threads; strict fp32 on CUDA)."""
    if runtime.device == "cpu":
        torch.set_num_threads(runtime.threads)
    elif runtime.precision == "fp32":
        # fp32 means fp32: torch lets cuDNN convolutions run in TF32 unless told otherwise.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
