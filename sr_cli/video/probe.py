"""What is in a media file, read from ``ffmpeg -i`` (there is no ffprobe in imageio-ffmpeg),
and the exact timestamps of the frames a decode will produce (a ``framecrc`` pre-pass).

The pre-pass decodes with the very arguments the frame reader uses, so its frame count and
timestamps are those of the frames the model will see (edit lists, ``--start``/``--duration``
and ``--fps`` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from sr_cli.errors import InputError
from sr_cli.video import ffmpeg

_STREAM_RE = re.compile(
    r"^\s*Stream #0:(?P<idx>\d+)(?:\[[^\]]*\])?(?:\((?P<lang>[^)]*)\))?: "
    r"(?P<kind>Video|Audio|Subtitle|Data|Attachment): (?P<rest>.*)$"
)
_DURATION_RE = re.compile(
    r"Duration: (?P<d>N/A|\d+:\d+:\d+(?:\.\d+)?)(?:, start: (?P<s>-?[\d.]+))?"
)
_INPUT_RE = re.compile(r"^Input #0, (?P<fmt>[^,]+(?:,[^ ,]+)*), from")
_COLORSPACES = {"bt709", "bt470bg", "smpte170m", "smpte240m", "bt2020nc", "bt2020c", "fcc",
                "ycgco", "gbr", "rgb", "unknown", "bt2020", "smpte2085", "ictcp"}


@dataclass
class StreamInfo:
    """One stream of the input, as ffmpeg describes it.

    ``index`` is the absolute stream index (``-map 0:INDEX``); ``kind`` is video, audio,
    subtitle, data or attachment; ``codec`` the decoder name (``none`` when ffmpeg has none).
    """

    index: int
    kind: str
    codec: str
    line: str
    width: int = 0
    height: int = 0
    pix_fmt: str = ""
    color_range: str = ""
    colorspace: str = ""
    color_primaries: str = ""
    color_trc: str = ""
    fps: float | None = None
    attached_pic: bool = False


@dataclass
class MediaInfo:
    """A probed input file."""

    path: Path
    format: str
    duration: float | None
    start: float
    streams: list[StreamInfo] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == kind]

    @property
    def video(self) -> StreamInfo:
        """The main video stream (cover-art pictures skipped)."""
        for s in self.streams:
            if s.kind == "video" and not s.attached_pic:
                return s
        raise InputError(f"{self.path}: no video stream")


def _split_top(text: str) -> list[str]:
    """Split on ', ' outside parentheses/brackets."""
    out, depth, cur = [], 0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth == 0 and text.startswith(", ", i):
            out.append(cur)
            cur = ""
            i += 2
            continue
        cur += ch
        i += 1
    out.append(cur)
    return [t.strip() for t in out]


def _parse_video(s: StreamInfo, rest: str) -> None:
    tokens = _split_top(rest)
    s.attached_pic = "(attached pic)" in rest
    for tok in tokens[1:]:
        m = re.match(r"^(\d+)x(\d+)\b", tok)
        if m and not s.width:
            s.width, s.height = int(m.group(1)), int(m.group(2))
            continue
        m = re.match(r"^([\d.]+)(k?) fps$", tok)
        if m:
            s.fps = float(m.group(1)) * (1000 if m.group(2) else 1)
            continue
        m = re.match(r"^([a-z0-9_]+)(?:\((.*)\))?$", tok)
        if m and not s.pix_fmt and not s.width:
            s.pix_fmt = m.group(1)
            for part in (m.group(2) or "").split(", "):
                part = part.strip()
                if part in ("tv", "pc"):
                    s.color_range = part
                elif part.count("/") == 2:
                    s.colorspace, s.color_primaries, s.color_trc = part.split("/")
                elif part in _COLORSPACES:
                    s.colorspace = s.color_primaries = s.color_trc = part


def parse_ffmpeg_info(text: str, path: Path) -> MediaInfo:
    """Parse the stderr of ``ffmpeg -i PATH`` (input #0 only)."""
    fmt, duration, start = "", None, 0.0
    streams: list[StreamInfo] = []
    in_input0 = False
    for line in text.splitlines():
        m = _INPUT_RE.match(line)
        if m:
            fmt, in_input0 = m.group("fmt"), True
            continue
        if line.startswith(("Output #", "Input #1")):
            in_input0 = False
        if not in_input0:
            continue
        m = _DURATION_RE.search(line)
        if m and "Duration:" in line.split(",")[0]:
            d = m.group("d")
            if d != "N/A":
                h, mi, se = d.split(":")
                duration = int(h) * 3600 + int(mi) * 60 + float(se)
            if m.group("s"):
                start = float(m.group("s"))
            continue
        m = _STREAM_RE.match(line)
        if m:
            rest = m.group("rest")
            codec = rest.split(",")[0].split(" ")[0]
            s = StreamInfo(int(m.group("idx")), m.group("kind").lower(), codec, line.strip())
            if s.kind == "video":
                _parse_video(s, rest)
            streams.append(s)
    return MediaInfo(path, fmt, duration, start, streams)


def probe(path: str | Path) -> MediaInfo:
    """Describe a media file; InputError when it is missing, unreadable or not media."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a video")
    res = ffmpeg.run(["-i", str(p)], loglevel="info", timeout=ffmpeg.DEFAULT_TIMEOUT)
    text = res.stderr.decode("utf-8", "replace")
    info = parse_ffmpeg_info(text, p)
    if not info.format:
        why = ffmpeg.last_lines(text, 1).replace(str(p), "").strip(" :.") or "unreadable"
        raise InputError(f"{p}: not a readable video ({why})")
    return info


@dataclass
class FrameTimes:
    """Timestamps of decoded frames: ``pts[i] * tb`` seconds, lasting ``durations[i] * tb``."""

    tb: Fraction
    pts: list[int]
    durations: list[int]
    width: int = 0  # decoded frame size (after autorotation and filters), 0 when unknown
    height: int = 0
    sar: Fraction = Fraction(1)
    errors: str = ""  # what the decoder complained about (last lines), "" when nothing

    def __len__(self) -> int:
        return len(self.pts)

    def seconds(self, i: int) -> float:
        return float(self.pts[i] * self.tb)

    def end(self) -> int:
        """End of the last frame, in ``tb`` units."""
        return self.pts[-1] + max(self.durations[-1], 0)


def parse_framecrc(text: str) -> FrameTimes:
    """Parse ``-f framecrc`` output (stream 0 only)."""
    tb = Fraction(1, 1)
    sar = Fraction(1)
    w = h = 0
    pts: list[int] = []
    durs: list[int] = []
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            tb = Fraction(int(num), int(den))
        elif line.startswith("#dimensions 0:"):
            w, h = (int(v) for v in line.split(":", 1)[1].strip().split("x"))
        elif line.startswith("#sar 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            if int(num) > 0 and int(den) > 0:
                sar = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4 and parts[0] == "0":
                pts.append(int(parts[2]))
                durs.append(int(parts[3]))
    return FrameTimes(tb, pts, durs, w, h, sar)


def frame_times(decode_args: list[str], label: str, *, time_base: str = "demux",
                duration: float | None = None) -> FrameTimes:
    """Decode once (``decode_args`` = input options + ``-i`` + map/filters) and return the
    frames' timestamps in ``time_base`` (``demux``: the stream's own, so exact; ``0``: the
    filter graph's, e.g. 1/fps after an ``fps`` filter). InputError when the decode fails.
    ``duration`` (seconds of media, when known) scales the time limit of the run."""
    res = ffmpeg.run([*decode_args, "-fps_mode", "passthrough", "-enc_time_base", time_base,
                      "-f", "framecrc", "-"], timeout=ffmpeg.timeout_for(duration))
    if res.returncode != 0:
        raise InputError(f"{label}: cannot decode the video ({ffmpeg.last_lines(res.stderr)})")
    times = parse_framecrc(res.stdout.decode("utf-8", "replace"))
    times.errors = ffmpeg.last_lines(res.stderr, 2)
    return times


def check_complete(times: FrameTimes, expected: float | None, label: str) -> None:
    """Refuse (InputError, exit 3) a video that ends early: the decoded frames span clearly
    less than the container announces (``expected`` seconds) and the decoder reported errors
    on the way, as a truncated file whose index sits at the front does. A shortfall without
    decoder errors (audio longer than video) is accepted."""
    if expected is None or expected <= 0 or len(times) == 0:
        return
    got = float(Fraction(times.end() - times.pts[0]) * times.tb)
    slack = max(1.0, 0.05 * expected)
    if got < expected - slack and times.errors:
        raise InputError(f"{label}: the video ends early: {len(times)} frames, {got:.2f} s of "
                         f"the {expected:.2f} s the file announces (truncated or damaged: "
                         f"{times.errors})")
