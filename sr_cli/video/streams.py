"""Frames in and out of ffmpeg through pipes, each side on its own thread with a small queue,
so decoding and encoding overlap inference and memory stays bounded (``depth`` frames)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sr_cli.errors import InputError, RuntimeFailure, SRError
from sr_cli.infer.pipeline import put_until_stopped
from sr_cli.video import mkvpipe
from sr_cli.video.encode import EncodeSettings
from sr_cli.video.ffmpeg import Proc

_END = object()


class FrameReader:
    """Decode ``decode_args`` (input options, ``-i``, map and filters) to ``(H, W, 3)`` uint8
    RGB frames, iterated in order. At most ``depth`` decoded frames wait in memory."""

    def __init__(self, decode_args: list[str], width: int, height: int, *, label: str,
                 depth: int = 4) -> None:
        self.width, self.height, self.label = width, height, label
        self.proc = Proc([*decode_args, "-fps_mode", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "pipe:1"], stdout=True)
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = self.width * self.height * 3
        try:
            while not self.stop.is_set():
                buf = bytearray(n)
                view, got = memoryview(buf), 0
                while got < n:
                    k = self.proc.stdout.readinto(view[got:])  # type: ignore[attr-defined]
                    if not k:
                        break
                    got += k
                if got == 0:
                    break
                if got < n:
                    raise InputError(f"{self.label}: truncated frame from the decoder")
                frame = np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)
                if not put_until_stopped(self.q, frame, self.stop):
                    return
            rc = self.proc.wait()
            if rc != 0 and not self.stop.is_set():
                raise InputError(f"{self.label}: decoding failed ({self.proc.stderr_tail()})")
            put_until_stopped(self.q, _END, self.stop)
        except BaseException as exc:  # handed to the consumer
            put_until_stopped(self.q, exc, self.stop)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop decoding (kills ffmpeg when it is still running)."""
        self.stop.set()
        self.proc.kill()
        with contextlib.suppress(queue.Empty):
            while True:
                self.q.get_nowait()
        self.thread.join(timeout=10)


class SegmentWriter:
    """Encode frames (with their timestamps) into one video-only file via ffmpeg.

    Frames go to ffmpeg as a Matroska stream of raw RGB (see :mod:`sr_cli.video.mkvpipe`), so
    each frame keeps its own timestamp and duration. The encoder starts at the first frame
    (its size fixes the stream's). ``close()`` waits for the file and raises on failure.
    """

    def __init__(self, path: Path, enc: EncodeSettings, *, muxer: str = "nut",
                 depth: int = 4) -> None:
        self.path, self.enc, self.muxer = path, enc, muxer
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.proc: Proc | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _start(self, width: int, height: int) -> None:
        self.proc = Proc(["-f", "matroska", "-i", "pipe:0", "-map", "0:v:0",
                          "-fps_mode", "passthrough", *self.enc.ffmpeg_args(),
                          "-f", self.muxer, "-y", str(self.path)], stdin=True)
        self.thread = threading.Thread(target=self._run, args=(width, height), daemon=True)
        self.thread.start()

    def _run(self, width: int, height: int) -> None:
        assert self.proc is not None  # noqa: S101 - set before the thread starts
        try:
            self.proc.stdin.write(mkvpipe.header(width, height))
            while True:
                item = self.q.get()
                if item is _END:
                    break
                frame, pts_ns, dur_ns = item
                self.proc.stdin.write(mkvpipe.frame(frame.tobytes(), pts_ns, dur_ns))
        except BaseException as exc:  # BrokenPipe when the encoder died
            self.error = exc
            self.stop.set()

    def put(self, frame: np.ndarray, pts_ns: int, dur_ns: int) -> None:
        """Queue one ``(H, W, 3)`` uint8 frame; blocks while ``depth`` frames wait."""
        if self.proc is None:
            self._start(frame.shape[1], frame.shape[0])
        if self.stop.is_set() or not put_until_stopped(self.q, (frame, pts_ns, dur_ns), self.stop):
            self._raise()

    def _raise(self) -> None:
        tail = self.proc.stderr_tail() if self.proc is not None else ""
        self.abort()
        raise RuntimeFailure(f"encoding with {self.enc.codec} failed ({tail or self.error})")

    def close(self) -> None:
        """Flush and wait for the encoder; RuntimeFailure when it failed."""
        if self.proc is None:
            raise SRError("no frames were written")
        put_until_stopped(self.q, _END, self.stop)
        if self.thread is not None:
            self.thread.join()
        rc = self.proc.wait(timeout=600)  # the encoder flushes its lookahead: bounded
        if rc != 0 or self.error is not None:
            self._raise()

    def abort(self) -> None:
        """Stop the encoder and remove the unfinished file."""
        self.stop.set()
        if self.proc is not None:
            self.proc.kill()
        with contextlib.suppress(queue.Empty):
            while True:
                self.q.get_nowait()
        if self.thread is not None:
            self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.path.unlink()
