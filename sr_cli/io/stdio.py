"""stdout that never loses data: every byte is written or the command fails.

- :func:`install` (called by the CLI guard) puts a stdout in place whose writes loop until done
  (a short write, ``PYTHONUNBUFFERED=1``, a non-blocking pipe whose reader is slow), so
  ``print``, ``typer.echo`` and ``sys.stdout.write`` anywhere are safe. A closed stdout
  (``sr ... >&-``) becomes a stream whose first write raises :class:`RuntimeFailure`, and fds
  0-2 are kept occupied (``/dev/null``) so no file we open can land on them.
- :func:`write_bytes` writes binary data (images) the same way.
- :func:`finish` flushes at the end of a command so a failure there (full disk,
  ``> /dev/full``) is a one-line error, never Python's "Exception ignored" at exit.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import sys
from typing import Any

from sr_cli.errors import RuntimeFailure

CLOSED_MESSAGE = "stdout is closed; redirect it to a file or a pipe (or give an OUTPUT path)"


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd``: loops over short writes and waits while a
    non-blocking descriptor is full. OSError (EPIPE, ENOSPC, ...) propagates."""
    view = memoryview(data).cast("B")
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        if n == 0:  # should not happen for a blocking descriptor; do not spin
            select.select([], [fd], [])
            continue
        view = view[n:]


class _FdRaw(io.RawIOBase):
    """A raw stream over a descriptor whose ``write`` is all-or-error."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def write(self, b: Any) -> int:
        data = memoryview(b).cast("B")
        try:
            write_all(self._fd, data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise RuntimeFailure(stdout_error(exc)) from None
        return len(data)

    def close(self) -> None:  # the descriptor belongs to the process, not to us
        with contextlib.suppress(Exception):
            super().close()


class _ClosedStdout(io.TextIOBase):
    """Stands in for a stdout that was closed (``>&-``): the first write fails cleanly."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = _ClosedBuffer()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s:
            raise RuntimeFailure(CLOSED_MESSAGE)
        return 0

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        return None


class _ClosedBuffer(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if len(memoryview(b)):
            raise RuntimeFailure(CLOSED_MESSAGE)
        return 0

    def isatty(self) -> bool:
        return False


_installed = {"done": False}


def _read_only(fd: int) -> bool:
    """A stdout/stderr descriptor open for reading only (a launcher's script file left on
    fd 2 after ``2>&-``) cannot take a byte: treat it as closed."""
    try:
        import fcntl

        return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDONLY
    except (ImportError, OSError):
        return False


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def install() -> None:
    """Make the process's stdout loss-free (see the module docstring). Idempotent; leaves a
    stdout without a real descriptor (test runners, API use) alone."""
    if _installed["done"]:
        return
    _installed["done"] = True
    closed = [fd for fd in (0, 1, 2) if not _fd_open(fd) or (fd > 0 and _read_only(fd))]
    for fd in closed:  # occupy them, so no file we open later lands there
        with contextlib.suppress(OSError):
            got = os.open(os.devnull, os.O_RDWR)
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
    if sys.stderr is None:  # started with stderr closed (`2>&-`): messages go nowhere
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if 1 in closed or sys.stdout is None:
        sys.stdout = _ClosedStdout()
        return
    out = sys.stdout
    try:
        fd = out.fileno()
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return
    if fd != 1:
        return
    with contextlib.suppress(Exception):
        out.flush()
    line = bool(getattr(out, "line_buffering", False))
    wrapper = io.TextIOWrapper(
        io.BufferedWriter(_FdRaw(fd)), encoding=getattr(out, "encoding", None) or "utf-8",
        errors=getattr(out, "errors", None) or "strict", newline=None,
        line_buffering=line, write_through=False)
    sys.stdout = wrapper


def write_bytes(data: bytes) -> None:
    """Write binary data to stdout completely (see :func:`write_all`), then flush."""
    out: Any = sys.stdout
    if out is None:
        raise RuntimeFailure(CLOSED_MESSAGE)
    with contextlib.suppress(AttributeError, ValueError):
        out.flush()  # text written before stays in order
    buf = getattr(out, "buffer", out)
    fd = None
    with contextlib.suppress(AttributeError, ValueError, OSError, io.UnsupportedOperation):
        fd = buf.fileno()
    if fd is not None and fd >= 0:
        try:
            with contextlib.suppress(AttributeError, ValueError):
                buf.flush()
            write_all(fd, data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            discard()
            raise RuntimeFailure(stdout_error(exc)) from None
        return
    buf.write(data)
    with contextlib.suppress(AttributeError):
        buf.flush()


def finish() -> None:
    """Flush stdout at the end of a command; an error becomes OSError for the guard, and the
    descriptor is pointed at /dev/null so the interpreter's own flush at exit cannot fail."""
    out: Any = sys.stdout
    if out is None:
        return
    try:
        out.flush()
    except BrokenPipeError:
        discard()
        raise
    except OSError as exc:
        discard()
        raise RuntimeFailure(stdout_error(exc)) from None
    except (ValueError, RuntimeFailure):
        discard()
        raise


def discard() -> None:
    """Drop what is still buffered for stdout (after a write error or a vanished reader)."""
    out: Any = sys.stdout
    with contextlib.suppress(Exception):
        fd = out.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    with contextlib.suppress(Exception):
        out.flush()


def stdout_error(exc: OSError) -> str:
    """One line for a failed write to stdout."""
    why = "no space left on device" if exc.errno == errno.ENOSPC else (
        exc.strerror or type(exc).__name__).lower()
    return f"<stdout>: cannot write ({why})"
