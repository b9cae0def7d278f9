"""Device and precision resolution (pure functions; no printing)."""

from __future__ import annotations

from functools import cache

import torch

from sr_cli.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N``.

    Raises UsageError for an unknown spec or a CUDA device that is not present.
    """
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine")
        if ":" in s:
            idx_s = s.split(":", 1)[1]
            if not idx_s.isdigit():
                raise UsageError(f"--device {spec}: expected cuda:N with an integer N")
            idx = int(idx_s)
            if idx >= torch.cuda.device_count():
                raise UsageError(
                    f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
                )
        return torch.device(s)
    raise UsageError(f"unknown --device {spec!r} (auto, cpu, cuda, cuda:N)")


def resolve_precision(spec: str, device: torch.device, supports_half: bool = True) -> str:
    """Return ``fp32``/``bf16``/``fp16`` for a requested precision on a device.

    ``auto`` is fp16 on CUDA (when the network supports half precision) and fp32 on CPU, where
    fp32 reproduces reference outputs exactly; ``bf16`` on CPU is the fast opt-in.
    fp16 on CPU is refused (slow and unsupported by many CPU kernels).
    """
    s = (spec or "auto").strip().lower()
    if s not in PRECISIONS:
        raise UsageError(f"unknown --precision {spec!r} ({', '.join(PRECISIONS)})")
    if s == "auto":
        return "fp16" if device.type == "cuda" and supports_half else "fp32"
    if s == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 is not supported on CPU; use bf16 or fp32")
    return s


@cache
def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def emulated_bf16_warning(device: torch.device, precision: str) -> str | None:
    """The one-line warning for bf16 on a CPU that only emulates it, else None.

    Without AVX512-BF16/AMX oneDNN emulates bf16 convolutions: measured 16-22x the fp32 time
    on an AVX2 CPU (docs/engines.md), so the "fast" precision is the slow one there.
    """
    if device.type != "cpu" or precision != "bf16" or native_bf16_cpu():
        return None
    return ("this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 is emulated: "
            "measured 16-22x slower than fp32 on such a CPU; fp32 is the fast precision here")


def free_memory_bytes(device: torch.device) -> int:
    """Free memory available for activations on ``device`` (a conservative estimate)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


MMAP_THRESHOLD = 1 << 20
"""Allocations of at least this many bytes get their own pages from the OS (see
:func:`limit_heap_fragmentation`)."""


def limit_heap_fragmentation(threshold: int = MMAP_THRESHOLD) -> bool:
    """Make glibc's ``malloc`` serve blocks of ``threshold`` bytes or more with ``mmap``, so
    they go back to the OS when freed.

    By default glibc raises this threshold, up to 32 MB, each time such a block is freed, after
    which band- and tile-sized buffers (a few to 30 MB: quantised tiles, output bands, encoder
    rows) are carved from the heap and freed memory stays resident as holes between live
    blocks: a 1600x1600 -> x4 upscale peaked about 200 MB higher, growing band by band. A fixed
    threshold keeps the peak at what the live buffers need. Returns False (and does nothing)
    off glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set in the environment (the user's choice
    wins). Process-wide; the upscale command calls it once before any work.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # <malloc.h> M_MMAP_THRESHOLD
    return bool(mallopt(m_mmap_threshold, int(threshold)))
