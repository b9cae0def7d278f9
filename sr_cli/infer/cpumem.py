"""Keep freed memory in the process during CPU inference (glibc ``mallopt``).

A forward pass allocates and frees every activation. glibc hands large blocks back to the
kernel as soon as they are freed (``mmap`` for blocks over its threshold, heap trimming for the
rest), so the next allocation of the same size takes fresh pages: one page fault and one
zeroed 4 KiB page at a time. Counted with ``getrusage`` (deterministic, load-independent), one
RRDBNet-23 x4 forward of a 120x125 image took 150,000-220,000 minor faults (600-900 MB of
fresh pages) and one SRVGGNetCompact x4 forward of 320x320 about 14,000; with freed memory
kept, none after the first pass. ncnn avoids this with its own pool allocator.

:func:`keep_freed_memory` turns glibc's ``mmap`` off for allocations (``M_MMAP_MAX`` = 0) and
raises the trim threshold (``M_TRIM_THRESHOLD``), process-wide and once. The cost: the
process keeps its peak heap (it does not shrink after a large image). ``SR_CPU_MALLOC=system``
leaves glibc's defaults alone; other C libraries are never touched.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

from sr_cli.errors import UsageError

ENV_VAR = "SR_CPU_MALLOC"
MODES = ("keep", "system")
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap top

_lock = threading.Lock()
_applied: bool | None = None


def resolve_mode() -> str:
    """``$SR_CPU_MALLOC`` or ``keep``, checked. Raises UsageError when unknown."""
    s = (os.environ.get(ENV_VAR) or "keep").strip().lower()
    if s not in MODES:
        raise UsageError(f"unknown {ENV_VAR}={s!r} ({', '.join(MODES)})")
    return s


def keep_freed_memory() -> bool:
    """Apply the ``keep`` setting once per process (see the module notes).

    Returns:
        True when glibc's settings are (now or already) changed, False when left alone
        (``SR_CPU_MALLOC=system``, not Linux/glibc, or ``mallopt`` refused).
    """
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        if resolve_mode() == "system":
            return False  # not cached: the variable may be set later in tests
        _applied = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
                _applied = ok and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM) == 1
            except (OSError, AttributeError):
                _applied = False
        return _applied
