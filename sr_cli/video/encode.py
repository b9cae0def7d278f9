"""Encoder and container choices: codec per container, pixel format, colour tags, and which
source audio/subtitle streams can be copied unchanged into the output container."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from sr_cli.errors import UsageError
from sr_cli.video import ffmpeg
from sr_cli.video.probe import StreamInfo

MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov",
          ".avi": "avi", ".gif": "gif"}
# Video codecs each container accepts; the default --codec (libx264) is swapped for the first.
_VIDEO_OK = {
    "webm": ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1", "librav1e"),
    "gif": ("gif",),
}
# Lossless RGB encoders and the RGB pixel format they get by default.
_RGB_DEFAULT = {"ffv1": "bgr0", "libx264rgb": "rgb24", "png": "rgb24", "utvideo": "gbrp",
                "qtrle": "rgb24", "apng": "rgb24", "gif": "rgb8", "rawvideo": "rgb24"}
_AUDIO_OK = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "webm": {"opus", "vorbis"},
    "avi": {"mp3", "ac3", "aac"},
    "gif": set(),
}
_AUDIO_REENCODE = {"mp4": "aac", "mov": "aac", "webm": "libopus", "avi": "libmp3lame"}
_TEXT_SUBS = {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"}
_SUB_TARGET = {"mp4": "mov_text", "mov": "mov_text", "webm": "webvtt", "matroska": None}
# scale filter out_color_matrix for a colorspace tag
_MATRIX = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "bt601", "smpte240m": "smpte240m",
           "fcc": "fcc", "bt2020nc": "bt2020", "bt2020c": "bt2020"}


def muxer_for(path: Path) -> str:
    try:
        return MUXERS[path.suffix.lower()]
    except KeyError:
        raise UsageError(f"{path}: unknown video container (use one of "
                         f"{', '.join(sorted(MUXERS))})") from None


@dataclass
class EncodeSettings:
    """Everything the encoder of the upscaled frames needs."""

    codec: str
    pix_fmt: str
    tb: Fraction
    args: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ffmpeg_args(self) -> list[str]:
        """Output options (after ``-i``) for the segment encoder."""
        return ["-c:v", self.codec, "-pix_fmt", self.pix_fmt,
                "-enc_time_base", f"{self.tb.numerator}/{self.tb.denominator}", *self.args]


def check_encoder(enc: EncodeSettings, width: int, height: int) -> None:
    """Encode one gray frame of the output size with ``enc`` to a null muxer, so that options
    ffmpeg rejects (a bad --preset, --crf, --pix-fmt or --ffmpeg-args) fail up front as a
    usage error (exit 2), before any frame is upscaled or any work folder is made."""
    # The source itself is one frame long (d=0.04 at 25 fps), so extra outputs in
    # --ffmpeg-args (e.g. '-f null -y /dev/null') also end; the run is bounded regardless.
    res = ffmpeg.run(["-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:r=25:d=0.04",
                      "-frames:v", "1", *enc.ffmpeg_args(), "-f", "null", "-"], timeout=60)
    if res.returncode != 0:
        text = res.stderr.decode("utf-8", "replace")
        lines = [re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", ln).strip()
                 for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        why = lines[0] if lines else f"ffmpeg exit code {res.returncode}"
        raise UsageError(f"the {enc.codec} encoder rejects these settings: {why}")


def encode_settings(
    *, muxer: str, codec: str, crf: int | None, preset: str | None, pix_fmt: str | None,
    extra: str | None, width: int, height: int, tb: Fraction, src: StreamInfo | None,
    sar: Fraction = Fraction(1),
) -> EncodeSettings:
    """Resolve the codec (the default libx264 becomes VP9 for webm, gif for .gif), the pixel
    format (yuv420p, yuv444p for odd sizes, RGB for lossless RGB codecs), rate control and the
    colour tags copied from ``src``, and the sample aspect ratio ``sar``."""
    notes: list[str] = []
    ok = _VIDEO_OK.get(muxer)
    if ok and codec not in ok:
        if codec == "libx264":
            codec = ok[0]
        else:
            raise UsageError(f"{muxer} output cannot hold {codec} video (use {', '.join(ok)})")
    if codec not in ffmpeg.encoders():
        raise UsageError(f"unknown video codec {codec!r} (this ffmpeg has no such encoder; "
                         "e.g. libx264, libx265, libvpx-vp9, ffv1)")
    if pix_fmt is None:
        if codec in _RGB_DEFAULT:
            pix_fmt = _RGB_DEFAULT[codec]
        elif width % 2 or height % 2:
            pix_fmt = "yuv444p"
            notes.append(f"odd output size {width}x{height}: using pix_fmt yuv444p")
        else:
            pix_fmt = "yuv420p"
    args: list[str] = []
    if crf is not None:
        args += ["-crf", str(crf)]
        if codec in ("libvpx-vp9", "libvpx", "libaom-av1"):
            args += ["-b:v", "0"]
    if preset is not None:
        args += ["-preset", preset]
    rgb_out = pix_fmt.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "pal")) or codec == "gif"
    vf = ""
    if src is not None:
        tags = {"color_primaries": src.color_primaries, "color_trc": src.color_trc}
        if not rgb_out and src.colorspace not in ("gbr", "rgb"):  # YUV -> YUV: keep them
            tags["colorspace"] = src.colorspace
            tags["color_range"] = src.color_range
            matrix = _MATRIX.get(src.colorspace)
            out_range = {"tv": "tv", "pc": "pc"}.get(src.color_range, "")
            opts = []
            if matrix:
                opts.append(f"out_color_matrix={matrix}")
            if out_range:
                opts.append(f"out_range={out_range}")
            if opts:
                vf = "scale=" + ":".join(opts)
        for k, v in tags.items():
            if v and v != "unknown" and v != "reserved":
                args += [f"-{k}", v]
    if sar != 1:  # anamorphic source: keep the display aspect
        vf = ",".join(f for f in (vf, f"setsar={sar.numerator}/{sar.denominator}") if f)
    if vf:
        args += ["-vf", vf]
    if extra:
        try:
            args += shlex.split(extra)
        except ValueError as exc:
            raise UsageError(f"--ffmpeg-args: {exc}") from None
    return EncodeSettings(codec, pix_fmt, tb, args, notes)


def stream_codecs(
    streams: list[StreamInfo], muxer: str, *, audio: bool, subtitles: bool,
) -> tuple[list[tuple[StreamInfo, str]], list[str]]:
    """Choose, for each source audio/subtitle stream, ``copy`` or a re-encode the container
    needs; streams the container cannot hold are dropped. Returns (plan, notes)."""
    plan: list[tuple[StreamInfo, str]] = []
    notes: list[str] = []
    for s in streams:
        if s.kind == "audio" and audio:
            allowed = _AUDIO_OK.get(muxer)
            if allowed is None or s.codec in allowed or (
                muxer in ("mov", "avi") and s.codec.startswith("pcm_")
            ):
                plan.append((s, "copy"))
            elif muxer in _AUDIO_REENCODE:
                plan.append((s, _AUDIO_REENCODE[muxer]))
                notes.append(f"audio stream {s.index} ({s.codec}) re-encoded to "
                             f"{_AUDIO_REENCODE[muxer]} for {muxer}")
            else:
                notes.append(f"audio stream {s.index} dropped ({muxer} holds no audio)")
        elif s.kind == "subtitle" and subtitles:
            if muxer == "matroska":
                plan.append((s, "srt" if s.codec == "mov_text" else "copy"))
            elif muxer in _SUB_TARGET and _SUB_TARGET[muxer] is not None:
                target = _SUB_TARGET[muxer]
                if s.codec == target:
                    plan.append((s, "copy"))
                elif s.codec in _TEXT_SUBS:
                    plan.append((s, str(target)))
                    notes.append(f"subtitle stream {s.index} ({s.codec}) converted to {target}")
                else:
                    notes.append(f"subtitle stream {s.index} ({s.codec}) dropped: {muxer} "
                                 "cannot hold it")
            else:
                notes.append(f"subtitle stream {s.index} dropped ({muxer} holds no subtitles)")
    return plan, notes
