"""Running the bundled ffmpeg (imageio-ffmpeg): locating it, child processes with a drained
stderr, and turning its failures into typed errors.

No ffprobe ships with imageio-ffmpeg, so everything here goes through ``ffmpeg`` itself.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

from sr_cli.errors import RuntimeFailure


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary (RuntimeFailure when imageio-ffmpeg has none)."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception as exc:  # imageio-ffmpeg raises RuntimeError and others
        raise RuntimeFailure(f"ffmpeg is not available (imageio-ffmpeg): {exc}") from None


BASE_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")


DEFAULT_TIMEOUT = 120.0
"""Seconds a short ffmpeg run (probe, trial encode, listing) may take; longer runs (a decode
pre-pass, the final mux) get a limit scaled to the media's duration (:func:`timeout_for`)."""


def timeout_for(duration: float | None, per_second: float = 4.0) -> float:
    """A bound for an ffmpeg run over ``duration`` seconds of media: generous (decoding at a
    quarter of real time still finishes) yet finite, so a stuck child never hangs ``sr``."""
    d = duration if duration is not None and duration > 0 else 0.0
    return DEFAULT_TIMEOUT + 300.0 + per_second * min(d, 1e7)


def run(args: Sequence[str], *, loglevel: str = "error",
        timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg to completion, capturing stdout and stderr (bytes). Every run is bounded:
    past ``timeout`` seconds the child is killed and RuntimeFailure raised (exit 1)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped the child
        raise RuntimeFailure(f"ffmpeg did not finish within {timeout:.0f} s and was stopped "
                             "(check --ffmpeg-args and the input)") from None


def last_lines(text: str | bytes, n: int = 3) -> str:
    """The last ``n`` non-empty lines of ffmpeg's stderr, joined for a one-line message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [_ADDR.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return " | ".join(lines[-n:])


# "[h264 @ 0x5622...] " prefixes: object addresses, noise in a one-line message
_ADDR = re.compile(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*")


class Proc:
    """An ffmpeg child process whose stderr is drained by a thread (no pipe deadlocks).

    Args:
        args: ffmpeg arguments after the executable and the base flags.
        stdin: ``subprocess.PIPE`` to feed it, else None (devnull).
        stdout: ``subprocess.PIPE`` to read it, else None (devnull).
    """

    def __init__(self, args: Sequence[str], *, stdin: bool = False, stdout: bool = False) -> None:
        self.cmd = [ffmpeg_exe(), *BASE_ARGS, *args]
        self.p = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._err: collections.deque[str] = collections.deque(maxlen=50)
        self._drain = threading.Thread(target=self._read_err, daemon=True)
        self._drain.start()

    def _read_err(self) -> None:
        assert self.p.stderr is not None  # noqa: S101 - opened above
        for raw in iter(self.p.stderr.readline, b""):
            self._err.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def stdin(self) -> IO[bytes]:
        assert self.p.stdin is not None  # noqa: S101 - only called when opened with stdin
        return self.p.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.p.stdout is not None  # noqa: S101
        return self.p.stdout

    def stderr_tail(self, n: int = 3) -> str:
        self._drain.join(timeout=2)
        return last_lines("\n".join(self._err), n)

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT) -> int:
        """Close our ends, wait for exit (at most ``timeout`` seconds once its input is
        closed: then it is killed, RuntimeFailure), return the exit status."""
        if self.p.stdin is not None:
            with contextlib.suppress(OSError):
                self.p.stdin.close()
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeFailure(f"ffmpeg did not finish within {timeout:.0f} s after its "
                                 "input ended and was stopped") from None
        self._drain.join(timeout=5)
        if self.p.stdout is not None:
            self.p.stdout.close()
        return rc

    def kill(self) -> None:
        """Stop the process (no-op when it already ended) and release its pipes."""
        if self.p.poll() is None:
            self.p.kill()
        for f in (self.p.stdin, self.p.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=10)
        self._drain.join(timeout=2)


@functools.lru_cache(maxsize=1)
def encoders() -> frozenset[str]:
    """Names of the video/audio/subtitle encoders this ffmpeg has."""
    res = run(["-encoders"], loglevel="quiet")
    names = set()
    started = False
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2:
            names.add(parts[1])
    return frozenset(names)
