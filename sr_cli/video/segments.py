"""Resumable work: a work folder beside the output holding finished segments and a manifest,
and the final assembly (concatenate segments, copy the source's audio/subtitles, atomic rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from sr_cli.errors import RuntimeFailure
from sr_cli.io.atomic import atomic_write_bytes, check_output, sweep_stale_temps, temp_name
from sr_cli.video import ffmpeg
from sr_cli.video.probe import StreamInfo


def work_dir_for(dst: Path) -> Path:
    """The work folder of an output: ``.NAME.sr-work`` beside it."""
    return dst.parent / f".{dst.name}.sr-work"


def segment_path(work: Path, k: int) -> Path:
    return work / f"seg_{k:05d}.nut"


@dataclass
class WorkState:
    """A work folder and how many leading segments in it are finished."""

    path: Path
    done: int
    fingerprint: dict[str, Any]
    resumed: bool = False

    def save(self) -> None:
        data = {"fingerprint": self.fingerprint, "done": self.done}
        atomic_write_bytes(self.path / "manifest.json", json.dumps(data, indent=1).encode())

    def finish_segment(self, k: int) -> None:
        """Publish segment ``k`` (its ``.part`` file renamed) and record it."""
        seg = segment_path(self.path, k)
        os.replace(seg.with_suffix(".part"), seg)
        self.done = k + 1
        self.save()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def open_work(dst: Path, fingerprint: dict[str, Any], *, resume: bool) -> WorkState:
    """Open (resume) or create the work folder of ``dst``.

    With ``resume`` and a manifest whose fingerprint matches (same input, model and options),
    the finished segments are kept; otherwise any old work folder is replaced.
    """
    work = work_dir_for(dst)
    if work.is_dir():
        if resume:
            try:
                data = json.loads((work / "manifest.json").read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("fingerprint") == fingerprint:
                done = 0
                while done < int(data.get("done", 0)) and segment_path(work, done).is_file():
                    done += 1
                st = WorkState(work, done, fingerprint, resumed=done > 0)
                st.save()
                return st
        shutil.rmtree(work)
    work.mkdir(parents=True)
    st = WorkState(work, 0, fingerprint)
    st.save()
    return st


def _us(t: Fraction) -> int:
    return round(t * 1_000_000)


def write_concat_list(work: Path, starts: list[Fraction], end: Fraction) -> Path:
    """An ffconcat list of the segments; ``starts[k]`` is segment k's first timestamp (s,
    relative to the first), ``end`` the end of the last frame. Durations are differences of
    rounded cumulative times, so rounding never accumulates."""
    bounds = [*starts, end]
    lines = ["ffconcat version 1.0"]
    for k in range(len(starts)):
        d = _us(bounds[k + 1]) - _us(bounds[k])
        lines += [f"file '{segment_path(work, k).name}'", f"duration {d / 1e6:.6f}"]
    p = work / "segments.ffconcat"
    p.write_text("\n".join(lines) + "\n")
    return p


def assemble(
    work: Path, concat_list: Path, dst: Path, *, muxer: str, offset: Fraction, tb: Fraction,
    src: Path | None, src_input_args: list[str], streams: list[tuple[StreamInfo, str]],
    duration: float | None = None,
) -> None:
    """Mux the concatenated segments (shifted by ``offset`` seconds to the source's timeline)
    with the chosen source streams into ``dst``, through a temporary file renamed at the end.
    """
    check_output(dst)
    sweep_stale_temps(dst.parent)
    tmp = temp_name(dst)  # recognisable: a later run removes it if this process is killed
    args = ["-y", "-itsoffset", f"{float(offset):.9f}", "-f", "concat", "-safe", "0",
            "-i", str(concat_list)]
    if src is not None:
        args += [*src_input_args, "-i", str(src)]
    args += ["-map", "0:v:0"]
    codecs = ["-c:0", "copy"]
    for n, (s, codec) in enumerate(streams, start=1):
        args += ["-map", f"1:{s.index}"]
        codecs += [f"-c:{n}", codec]
    args += codecs
    if src is not None and "-ss" in src_input_args:
        args += ["-copypriorss", "0"]  # packets before --start would shift the whole output
    if src is not None:
        args += ["-map_metadata", "1", "-map_chapters", "1"]
    if muxer in ("mp4", "mov") and tb.numerator == 1 and tb.denominator < 2**31:
        args += ["-video_track_timescale", str(tb.denominator)]
    args += ["-f", muxer, str(tmp)]
    try:
        res = ffmpeg.run(args, timeout=ffmpeg.timeout_for(duration, per_second=1.0))
        if res.returncode != 0:
            raise RuntimeFailure(f"{dst}: muxing failed ({ffmpeg.last_lines(res.stderr)})")
        check_output(dst)
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise RuntimeFailure(f"{dst}: cannot write ({exc.strerror or exc})") from None
        raise
