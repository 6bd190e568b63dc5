"""Device and precision resolution for the embedder, with the hardware faked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rfr.core.settings import EmbedSettings
from rfr.embedding.device import DeviceUnavailableError, cpu_flags, resolve_runtime

AMX = frozenset({"avx512f", "amx_bf16", "amx_tile"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.fixture
def avx512_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


def test_cpu_flags_parses_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\nbugs\t: none\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.usefixtures("avx512_torch")
@pytest.mark.parametrize(("flags", "expected"), [(AMX, "bf16"), (AVX512_BF16, "bf16"), (AVX2, "fp32")])
def test_auto_on_cpu_picks_bf16_only_with_native_bf16(flags: frozenset[str], expected: str) -> None:
    rt = resolve_runtime(EmbedSettings(threads=3), cuda_available=False, flags=flags)
    assert (rt.device, rt.precision, rt.threads, rt.channels_last) == ("cpu", expected, 3, True)
    assert rt.autocast_dtype == (torch.bfloat16 if expected == "bf16" else None)


def test_explicit_fp32_wins_over_fast_hardware() -> None:
    rt = resolve_runtime(EmbedSettings(precision="fp32"), cuda_available=False, flags=AMX)
    assert rt.precision == "fp32" and rt.autocast_dtype is None


def test_cuda_auto_uses_fp16_and_explicit_fp32_stays_fp32() -> None:
    assert resolve_runtime(EmbedSettings(), cuda_available=True, flags=AVX2).precision == "fp16"
    rt = resolve_runtime(EmbedSettings(device="auto", precision="fp32"), cuda_available=True, flags=AVX2)
    assert (rt.device, rt.precision, rt.channels_last) == ("cuda", "fp32", False)
    assert resolve_runtime(EmbedSettings(device="cpu"), cuda_available=True, flags=AVX2).device == "cpu"


def test_impossible_asks_are_refused() -> None:
    with pytest.raises(DeviceUnavailableError, match="no CUDA"):
        resolve_runtime(EmbedSettings(device="cuda"), cuda_available=False, flags=AMX)
    with pytest.raises(DeviceUnavailableError, match="CUDA only"):
        resolve_runtime(EmbedSettings(device="cpu", precision="fp16"), cuda_available=False, flags=AMX)
