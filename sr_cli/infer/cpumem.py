"""Keep freed memory in the process during CPU inference (glibc ``mallopt``).

A forward pass allocates and frees every activation. glibc hands large blocks back to the
kernel as soon as they are freed (``mmap`` for blocks over its threshold, heap trimming for the
rest), so the next allocation of the same size takes fresh pages: one page fault and one
zeroed 4 KiB page at a time. Counted with ``getrusage`` (deterministic, load-independent), one
RRDBNet-23 x4 forward of a 120x125 image took 150,000-220,000 minor faults (600-900 MB of
fresh pages) and one SRVGGNetCompact x4 forward of 320x320 about 14,000; with freed memory
kept, none after the first pass. ncnn avoids this with its own pool allocator.

:func:`keep_freed_memory` raises glibc's trim threshold (``M_TRIM_THRESHOLD``) once per
process, and :func:`forward_scope` turns its ``mmap`` off (``M_MMAP_MAX`` = 0) while a network
runs, so activations come from the heap and are reused by the next pass. :func:`attach` makes
every module of a network enter that scope. Outside network calls glibc's ``mmap`` stays on,
so the band- and tile-sized buffers of the streamed output (``sr upscale`` serves blocks of
1 MB or more by ``mmap``, :func:`sr_cli.infer.device.limit_heap_fragmentation`) still go back
to the kernel when freed: with ``mmap`` off process-wide they fragmented the heap and the
streamed output's peak grew with the image height. The cost: the process keeps up to 64 MiB
of freed heap, and the heap's holes, after a pass.

``keep`` is opt-in (``SR_CPU_MALLOC=keep``; the default, ``system``, leaves glibc's defaults
alone; other C libraries are never touched). It keeps at most 64 MiB of free heap top
(``M_TRIM_THRESHOLD``): with 2 GiB (the first version) the streamed output's peak grew with
the image, because while a network runs ``mmap`` is off for the whole process and the encoder
thread's buffers land in the heap between activations. Measured on ``sr upscale`` with
SRVGGNetCompact x4 (the official realesr-animevideov3 weights), one thread, a quiet 2-core
machine (``/usr/bin/time``; the PNG output is byte-identical in every mode):

============================  =======================  =======================
input -> x4 PNG               ``system``               ``keep`` (64 MiB)
============================  =======================  =======================
800x800                       33.4-36.2 s, 400 MB,     22.7 s, 436 MB,
                              1.26 M page faults       0.15 M page faults
1600x1600                     114.3 s, 436 MB,         74.9-80.2 s, 647 MB,
                              4.86 M page faults       1.45 M page faults
============================  =======================  =======================

``benchmarks/memory.py`` with ``keep``: 1600x1600 PNG 678 MB, TIFF 622 MB (``system``: 471,
471; issue 13's bound is 700). Other thresholds, 1600x1600 PNG: 128 MiB 70.7 s and 684 MB;
2 GiB (the first, opt-in version) 499-634 MB in ``sr upscale`` runs and 711-718 MB in
``benchmarks/memory.py``. PyTorch's transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``) with
64 MiB cut the faults further (0.1 M, 71.7 s) but raised the peak to 757 MB: not used. In
``system`` mode the faults also cost wall time beyond their CPU time (33-36 s wall for 25 s of
CPU at 800x800): the threads wait on each other's page-table changes.

Why it is still not the default: setting the trim threshold also fixes glibc's ``mmap``
threshold at 128 KiB (glibc stops adapting it), so every allocation *outside* a forward scope
takes fresh pages. RRDBNet's staged trunk calls its blocks on inputs below
:data:`MIN_ELEMENTS` (a 125x120 image: 0.96 M elements), and with ``keep`` one RRDBNet-23
call through ``Upscaler.stream`` took 795,000 page faults and 11.7 s against 53,000 and 9.4 s
for the network alone (``benchmarks/upscale.py``, quiet machine, one thread). The staged
runner now runs each strip's trunk and each tail call inside the scope (by output size):
with ``keep`` that call took 30,000 faults and 9.7 s (9.4 s for the network alone). A default
still needs the peak measured again for large staged images (whole-strip maps come from the
heap under ``keep``): not done.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sr_cli.errors import UsageError

ENV_VAR = "SR_CPU_MALLOC"
MODES = ("keep", "system")
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM = 64 * 1024 * 1024  # free heap top kept (see the module notes: the peak-memory bound)
_DEFAULT_MMAP_MAX = 65536  # glibc's DEFAULT_MMAP_MAX

_lock = threading.Lock()
_applied: bool | None = None
_libc: Any = None
_depth = 0  # network calls in progress (nested modules and threads)


def resolve_mode() -> str:
    """``$SR_CPU_MALLOC`` or ``system`` (the default: see the module notes), checked.

    Raises UsageError when unknown."""
    s = (os.environ.get(ENV_VAR) or "system").strip().lower()
    if s not in MODES:
        raise UsageError(f"unknown {ENV_VAR}={s!r} ({', '.join(MODES)})")
    return s


def keep_freed_memory() -> bool:
    """Apply the ``keep`` setting once per process (see the module notes).

    Returns:
        True when glibc's settings are (now or already) changed, False when left alone
        (``SR_CPU_MALLOC=system``, not Linux/glibc, or ``mallopt`` refused).
    """
    global _applied, _libc
    with _lock:
        if _applied is not None:
            return _applied
        if resolve_mode() == "system":
            return False  # not cached: the variable may be set later in tests
        _applied = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                _applied = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM) == 1
                _libc = libc if _applied else None
            except (OSError, AttributeError):
                _applied = False
        return _applied


MIN_ELEMENTS = 1 << 20
"""A module call enters :func:`forward_scope` only when its input has at least this many
elements (4 MB in fp32): smaller calls gain little from the kept heap, and in them the
output pipeline's own buffers would fragment it."""


def _enter() -> None:
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            _libc.mallopt(_M_MMAP_MAX, 0)


def _leave() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            _libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)


@contextmanager
def forward_scope(elements: int | None = None) -> Iterator[None]:
    """While inside (any thread, nestable): glibc serves every allocation from the heap, so
    a network's activations reuse the memory the previous pass freed. No-op when
    :func:`keep_freed_memory` is off, or for an input of fewer than :data:`MIN_ELEMENTS`
    ``elements`` (when given)."""
    if not keep_freed_memory() or (elements is not None and elements < MIN_ELEMENTS):
        yield
        return
    _enter()
    try:
        yield
    finally:
        _leave()


def attach(net: Any) -> None:
    """Run the calls of ``net`` and of each of its modules (the staged runner calls stages
    directly) on inputs of at least :data:`MIN_ELEMENTS` elements inside
    :func:`forward_scope`, through forward hooks that also run when a forward raises. Does
    nothing when :func:`keep_freed_memory` is off."""
    if not keep_freed_memory():
        return
    local = threading.local()  # per thread: which of the open module calls entered

    def enter(_m: Any, args: Any) -> None:
        big = bool(args) and getattr(args[0], "numel", lambda: 0)() >= MIN_ELEMENTS
        local.__dict__.setdefault("stack", []).append(big)
        if big:
            _enter()

    def leave(_m: Any, _args: Any, _out: Any) -> None:
        if local.__dict__.setdefault("stack", []).pop():
            _leave()

    for m in net.modules():
        m.register_forward_pre_hook(enter)
        m.register_forward_hook(leave, always_call=True)
