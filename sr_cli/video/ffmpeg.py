"""Running the bundled ffmpeg (imageio-ffmpeg): locating it, child processes with a drained
stderr, and turning its failures into typed errors.

No ffprobe ships with imageio-ffmpeg, so everything here goes through ``ffmpeg`` itself.
"""

from __future__ import annotations

import collections
import contextlib
import functools
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


def run(args: Sequence[str], *, loglevel: str = "error") -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg to completion, capturing stdout and stderr (bytes)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)


def last_lines(text: str | bytes, n: int = 3) -> str:
    """The last ``n`` non-empty lines of ffmpeg's stderr, joined for a one-line message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


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

    def wait(self) -> int:
        """Close our ends, wait for exit, return the exit status."""
        if self.p.stdin is not None:
            with contextlib.suppress(OSError):
                self.p.stdin.close()
        rc = self.p.wait()
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
