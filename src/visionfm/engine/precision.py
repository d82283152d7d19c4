"""Training precision ``auto``: bf16 autocast where the hardware computes bf16 natively, else fp32 (no torch import
at module level beyond what callers already hold)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["bf16_in_cpuinfo", "cpu_has_native_bf16", "resolve_precision"]

# /proc/cpuinfo flags of x86 CPUs with bf16 matrix/vector instructions (Sapphire Rapids AMX, Cooper Lake / Zen 4).
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def bf16_in_cpuinfo(text: str) -> bool | None:
    """Whether the first ``flags`` line of ``/proc/cpuinfo`` text lists AMX-BF16 or AVX512-BF16; None without one."""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _BF16_FLAGS)
    return None


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), as oneDNN uses for autocast on CPU.

    Reads ``/proc/cpuinfo`` flags (Linux); elsewhere asks torch for the CPU capability (``AVX512_BF16`` or
    ``AMX``). Without native support bf16 is emulated and slower than fp32, so ``auto`` stays fp32 there.
    """
    info = Path("/proc/cpuinfo")
    if info.is_file():
        try:
            found = bf16_in_cpuinfo(info.read_text(errors="replace"))
        except OSError:
            found = None
        if found is not None:
            return found
    capability = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()).upper()
    return "AMX" in capability or "BF16" in capability


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``/``bf16``/``fp16`` as given; ``auto``: bf16 on CUDA with bf16 support and on CPUs with native bf16
    (:func:`cpu_has_native_bf16`), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"
