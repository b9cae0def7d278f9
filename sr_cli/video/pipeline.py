"""Upscaling videos: plan the jobs, stream frames through the model segment by segment, and
assemble the output with the source's timing, audio and subtitles.

Frame ``i`` of a video is upscaled with exactly the engine call an image gets
(``Upscaler.stream``, band by band in uint8), so a lossless codec gives each output frame
bit-equal to upscaling that frame as an image.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sr_cli.distributed import Shard, attempt
from sr_cli.errors import InputError, RuntimeFailure, SRError, UsageError
from sr_cli.infer.jobs import VIDEO_EXTENSIONS, list_inputs
from sr_cli.io.atomic import check_output, input_named, make_parent, note_input
from sr_cli.io.formats import is_image_path
from sr_cli.video import encode, mkvpipe, segments
from sr_cli.video.probe import FrameTimes, MediaInfo, check_complete, frame_times, probe

if TYPE_CHECKING:
    import numpy as np

# numpy, torch and the frame streams load inside the functions that move pixels: planning
# (plan_video_jobs) runs before them, so a wrong path fails at once.

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VideoOptions:
    """Options of ``sr upscale`` for videos (see the command's help).

    ``segment_frames``: frames per resumable segment; ``batch``: frames per forward pass
    (0 = auto: 1 on CPU, which keeps frames bit-equal to the image path, 4 on CUDA);
    ``depth``: decoded/upscaled frames that may wait in each queue.
    """

    fps: float | None = None
    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    ffmpeg_args: str | None = None
    start: str | None = None
    duration: str | None = None
    audio: bool = True
    subtitles: bool = True
    resume: bool = False
    overwrite: bool = False
    recursive: bool = False
    suffix: str = ""
    ext: str | None = None
    segment_frames: int = 300
    batch: int = 0
    depth: int = 4


def parse_time(text: str | None, what: str) -> float | None:
    """Seconds from ``12.5``, ``MM:SS(.ms)`` or ``HH:MM:SS(.ms)``; UsageError otherwise."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)\s*", text)
    if not m:
        raise UsageError(f"--{what}: expected seconds or HH:MM:SS[.ms], got {text!r}")
    a, b, c = m.groups()
    parts = [int(x) for x in (a, b) if x is not None]
    secs = float(c)
    for k, v in enumerate(reversed(parts)):
        secs += v * 60 ** (k + 1)
    return secs


# -- planning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoJob:
    """kind: ``video`` (video -> video), ``frames_in`` (image folder -> video) or
    ``frames_out`` (video -> image folder)."""

    kind: str
    src: Path
    dst: Path


def _is_video(p: Path) -> bool:
    return p.suffix.lower() in VIDEO_EXTENSIONS


def _list(folder: Path, recursive: bool, pred: Callable[[Path], bool],
          exclude: Path | None = None) -> list[Path]:
    return list_inputs(folder, recursive, pred, exclude)


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def list_frames(folder: Path) -> list[Path]:
    """Image files of a frames folder, in natural order (frame2 before frame10)."""
    from sr_cli.io.images import is_image_path

    return sorted(_list(folder, False, is_image_path), key=_natural_key)


def plan_video_jobs(inputs: list[str], out: str | None, vopts: VideoOptions) -> list[VideoJob]:
    """Map inputs (videos, folders of videos, a frames folder) to outputs."""
    if not inputs or any(i == "-" for i in inputs):
        raise UsageError("video input from stdin is not supported; give a file")
    if out is None or out == "-":
        raise UsageError("a video needs an OUTPUT path (stdout is not supported for video)")
    outp = Path(out)
    sources: list[tuple[str, Path, Path | None]] = []  # (kind, path, root folder)
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            vids = _list(p, vopts.recursive, _is_video, outp)
            if vids:
                sources += [("video", v, p) for v in vids]
            elif list_frames(p):
                sources.append(("frames_in", p, None))
            else:
                raise InputError(f"{item}: no videos or images found")
        elif p.exists():
            if not _is_video(p):
                raise InputError(f"{item}: not a video file (extensions: "
                                 f"{', '.join(VIDEO_EXTENSIONS)}); images and videos cannot be "
                                 "mixed in one run")
            sources.append(("video", p, None))
        else:
            raise InputError(f"{item}: no such file or folder")
    jobs: list[VideoJob] = []
    if len(sources) == 1 and sources[0][2] is None:
        kind, src, _ = sources[0]
        if is_image_path(outp):  # never turn a file name into a folder of frames
            raise UsageError(f"{out}: a video's frames cannot go into one image file; give a "
                             "folder (OUTPUT without an extension, e.g. frames/) or a video "
                             "OUTPUT (e.g. out.mp4)")
        if _is_video(outp):
            jobs.append(VideoJob(kind, src, outp))
        elif kind == "video":
            jobs.append(VideoJob("frames_out", src, outp))
        else:
            raise UsageError(f"{out}: a frames folder input needs a video OUTPUT (e.g. out.mp4)")
    else:
        if _is_video(outp) or (outp.exists() and not outp.is_dir()):
            raise UsageError(f"{out}: several inputs need an output folder")
        for kind, src, root in sources:
            rel = src.parent.relative_to(root) if root is not None else Path()
            e = "." + vopts.ext.lstrip(".") if vopts.ext else (src.suffix or ".mp4")
            jobs.append(VideoJob(kind, src, outp / rel / f"{src.stem}{vopts.suffix}{e}"))
    seen: set[Path] = set()
    for j in jobs:
        note_input(j.src)
    for j in jobs:
        r = j.dst.resolve()
        if r == j.src.resolve() or input_named(j.dst) is not None:
            raise UsageError(f"{j.dst}: output would overwrite the input")
        if j.kind != "frames_out":
            check_output(j.dst)  # regular files only, even with --overwrite
        if r in seen:
            raise UsageError(f"two inputs would both write {j.dst}")
        seen.add(r)
    return jobs


# -- frame sources ---------------------------------------------------------------------------
@dataclass
class Source:
    """Frames to upscale: their count, timestamps, an iterator factory, and the media file
    whose other streams may be copied (None for a frames folder)."""

    label: str
    width: int
    height: int
    times: FrameTimes
    open_frames: Callable[[], tuple[Iterator[np.ndarray], Callable[[], None]]]
    media: MediaInfo | None = None
    input_args: tuple[str, ...] = ()


def _video_source(path: Path, vopts: VideoOptions) -> Source:
    info = probe(path)
    v = info.video
    if v.codec == "none" or "unknown" in v.codec:
        raise InputError(f"{path}: unknown video codec ({v.line})")
    if not v.width or not v.height:
        raise InputError(f"{path}: cannot read the video size ({v.line})")
    start = parse_time(vopts.start, "start")
    dur = parse_time(vopts.duration, "duration")
    if dur is not None and dur <= 0:
        raise UsageError("--duration must be > 0")
    input_args: list[str] = []
    if start:
        input_args += ["-ss", f"{start:.6f}"]
    if dur is not None:
        input_args += ["-t", f"{dur:.6f}"]
    decode = [*input_args, "-i", str(path), "-map", f"0:{v.index}", "-an", "-sn", "-dn"]
    time_base = "demux"
    if vopts.fps is not None:
        if not vopts.fps > 0:
            raise UsageError("--fps must be > 0")
        decode += ["-vf", f"fps={Fraction(vopts.fps).limit_denominator(1001)}"]
        time_base = "0"
    times = frame_times(decode, str(path), time_base=time_base, duration=info.duration)
    if len(times) == 0:
        where = " in the --start/--duration range" if (start or dur) else ""
        raise InputError(f"{path}: the video has no frames{where}")
    expected = None if info.duration is None else max(0.0, info.duration - (start or 0.0))
    if expected is not None and dur is not None:
        expected = min(expected, dur)
    check_complete(times, expected, str(path))  # a truncated file: exit 3, not a short output

    # the decoded size: after autorotation (phone videos) and filters, not the coded one
    w, h = (times.width, times.height) if times.width else (v.width, v.height)

    def open_frames() -> tuple[Iterator[np.ndarray], Callable[[], None]]:
        from sr_cli.video.streams import FrameReader

        reader = FrameReader(decode, w, h, label=str(path), depth=vopts.depth)
        return iter(reader), reader.close

    return Source(str(path), w, h, times, open_frames, info, tuple(input_args))


def _frames_source(folder: Path, vopts: VideoOptions) -> Source:
    from sr_cli.io.images import read_image

    files = list_frames(folder)
    if not files:
        raise InputError(f"{folder}: no images found")
    first = read_image(files[0], name=str(files[0])).pixels
    h, w = first.shape[:2]
    fps = Fraction(vopts.fps if vopts.fps is not None else 25).limit_denominator(1001)
    if fps <= 0:
        raise UsageError("--fps must be > 0")
    times = FrameTimes(1 / fps, list(range(len(files))), [1] * len(files))

    def frames() -> Iterator[np.ndarray]:
        for f in files:
            px = read_image(f, name=str(f)).pixels
            if px.shape[:2] != (h, w):
                raise InputError(f"{f}: size {px.shape[1]}x{px.shape[0]} differs from the "
                                 f"first frame's {w}x{h}")
            yield _to_rgb8(px)

    return Source(str(folder), w, h, times, lambda: (frames(), lambda: None))


def _to_rgb8(px: np.ndarray) -> np.ndarray:
    import numpy as np

    """Any image array -> (H, W, 3) uint8 (alpha dropped, gray repeated, 16-bit rounded)."""
    if px.ndim == 2:
        px = px[:, :, None]
    if px.dtype == np.uint16:
        px = np.round(px.astype(np.float32) / 257.0).astype(np.uint8)
    c = px.shape[2]
    if c in (2, 4):
        px = px[:, :, : c - 1]
    if px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    return np.ascontiguousarray(px)


# -- upscaling -------------------------------------------------------------------------------
def upscale_frames(upscaler: Any, frames: list[np.ndarray], scale: float | None) -> np.ndarray:
    """Upscale ``(H, W, 3)`` uint8 frames -> ``(B, H', W', 3)`` uint8.

    One frame (the CPU default) goes through ``Upscaler.stream``, the call an image gets:
    uint8 tiles in, uint8 bands out, no float copy of the frame. Several frames (``batch``,
    4 by default on CUDA) go through ``Upscaler.upscale_frames``: each forward pass takes the
    same tile of every frame, and the bands are written in uint8 as they come, so batching
    holds no float copy of a frame either; the output is the single-frame output up to the
    float rounding of a forward of another batch size (rarely one level).
    """
    if len(frames) == 1:
        return upscaler.stream(frames[0], scale).collect()[None]  # type: ignore[no-any-return]
    return upscaler.upscale_frames(frames, scale)  # type: ignore[no-any-return]


def _batches(it: Iterator[np.ndarray], n: int, size: int) -> Iterable[list[np.ndarray]]:
    """Up to ``n`` frames from ``it`` in lists of ``size``; InputError if it ends early."""
    left = n
    while left > 0:
        batch = []
        for _ in range(min(size, left)):
            try:
                batch.append(next(it))
            except StopIteration:
                raise InputError("the decoder produced fewer frames than announced") from None
        left -= len(batch)
        yield batch


def _fingerprint(src: Path, upscaler: Any, scale: float | None, vopts: VideoOptions,
                 dst: Path) -> dict[str, Any]:
    st = src.stat()
    d = upscaler.model.desc
    return {
        "src": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "model": upscaler.model.name, "arch": d.arch, "hparams": repr(sorted(d.hparams.items())),
        "scale": scale, "precision": upscaler.precision, "codec": vopts.codec, "crf": vopts.crf,
        "preset": vopts.preset, "pix_fmt": vopts.pix_fmt, "ffmpeg_args": vopts.ffmpeg_args,
        "start": vopts.start, "duration": vopts.duration, "fps": vopts.fps,
        "segment_frames": vopts.segment_frames, "container": dst.suffix.lower(),
    }


def _batch_size(upscaler: Any, vopts: VideoOptions) -> int:
    if vopts.batch > 0:
        return vopts.batch
    return 4 if getattr(upscaler.device, "type", "cpu") == "cuda" else 1


@dataclass
class _Prepared:
    """Everything decided about one video before any frame is upscaled."""

    source: Source
    muxer: str
    enc: Any
    plan: list[Any]
    notes: list[str]
    out_size: tuple[int, int]  # (height, width)
    n_seg: int


def _prepare_video(job: VideoJob, upscaler: Any, scale: float | None,
                   vopts: VideoOptions) -> _Prepared:
    dst = job.dst
    muxer = encode.muxer_for(dst)
    if dst.exists() and not vopts.overwrite:
        raise UsageError(f"{dst} exists (use --overwrite)")
    if vopts.segment_frames < 1:
        raise UsageError("segment_frames must be >= 1")
    source = _video_source(job.src, vopts) if job.kind == "video" else \
        _frames_source(job.src, vopts)
    times = source.times
    oh, ow = upscaler.output_size(source.height, source.width, scale)
    vstream = source.media.video if source.media is not None else None
    enc = encode.encode_settings(
        muxer=muxer, codec=vopts.codec, crf=vopts.crf, preset=vopts.preset,
        pix_fmt=vopts.pix_fmt, extra=vopts.ffmpeg_args, width=ow, height=oh, tb=times.tb,
        src=vstream, sar=times.sar)
    plan, notes = ([], []) if source.media is None else encode.stream_codecs(
        source.media.streams, muxer, audio=vopts.audio, subtitles=vopts.subtitles)
    encode.check_encoder(enc, ow, oh)
    make_parent(dst)
    seg = vopts.segment_frames
    return _Prepared(source, muxer, enc, plan, enc.notes + notes, (oh, ow),
                     (len(times) + seg - 1) // seg)


def _encode_segment(prep: _Prepared, work: Path, k: int, frames: Iterator[np.ndarray],
                    upscaler: Any, scale: float | None, vopts: VideoOptions,
                    progress: Progress | None) -> None:
    """Upscale segment ``k``'s frames (the next ones of ``frames``) into its ``.part`` file."""
    from sr_cli.video.streams import SegmentWriter

    times = prep.source.times
    n, seg, t0 = len(times), vopts.segment_frames, times.pts[0]
    lo, hi = k * seg, min(n, (k + 1) * seg)
    writer = SegmentWriter(segments.segment_path(work, k).with_suffix(".part"), prep.enc,
                           depth=vopts.depth)
    try:
        i = lo
        for batch in _batches(frames, hi - lo, _batch_size(upscaler, vopts)):
            for fr in upscale_frames(upscaler, batch, scale):
                writer.put(fr, mkvpipe.to_ns(times.pts[i] - t0, times.tb),
                           mkvpipe.to_ns(times.durations[i], times.tb))
                i += 1
            if progress:
                progress(i, n)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _assemble(prep: _Prepared, job: VideoJob, work: Path, vopts: VideoOptions) -> None:
    """Join the finished segments of ``work`` into ``job.dst`` with the source's streams."""
    times, seg = prep.source.times, vopts.segment_frames
    t0 = times.pts[0]
    starts = [Fraction(times.pts[k * seg] - t0) * times.tb for k in range(prep.n_seg)]
    concat = segments.write_concat_list(work, starts, Fraction(times.end() - t0) * times.tb)
    segments.assemble(work, concat, job.dst, muxer=prep.muxer, offset=t0 * times.tb,
                      tb=times.tb, duration=float(Fraction(times.end() - t0) * times.tb),
                      src=job.src if prep.source.media is not None else None,
                      src_input_args=list(prep.source.input_args), streams=prep.plan)


def _video_record(prep: _Prepared, resumed: int, processed: int, secs: float
                  ) -> dict[str, Any]:
    oh, ow = prep.out_size
    return {
        "frames": len(prep.source.times), "in_size": [prep.source.width, prep.source.height],
        "out_size": [ow, oh], "codec": prep.enc.codec, "pix_fmt": prep.enc.pix_fmt,
        "streams_copied": [f"{s.kind}:{s.index}:{c}" for s, c in prep.plan],
        "resumed_segments": resumed, "segments": prep.n_seg,
        "fps": round(processed / secs, 3) if secs > 0 else None, "notes": prep.notes,
    }


def upscale_to_video(
    job: VideoJob, upscaler: Any, scale: float | None, vopts: VideoOptions, *,
    progress: Progress | None = None, on_segment: Callable[[int], None] | None = None,
    part: Shard | None = None,
) -> dict[str, Any]:
    """One video (or frames folder) -> one video file. Returns the file's record.

    ``part``: under torchrun, the segments are split across the ranks (see
    :func:`_upscale_to_video_ranks`).
    """
    if part is not None and part.gathers:
        return _upscale_to_video_ranks(job, upscaler, scale, vopts, part, progress=progress,
                                       on_segment=on_segment)
    prep = _prepare_video(job, upscaler, scale, vopts)
    n, seg = len(prep.source.times), vopts.segment_frames
    work = segments.open_work(job.dst, _fingerprint(job.src, upscaler, scale, vopts, job.dst),
                              resume=vopts.resume)
    first_seg = min(work.done, prep.n_seg)
    t_started = time.perf_counter()
    done = first_seg * seg
    if progress:
        progress(min(done, n), n)
    frames, close = prep.source.open_frames()
    try:
        for _ in _batches(frames, min(done, n), 1):  # decode and drop finished segments
            pass
        for k in range(first_seg, prep.n_seg):
            _encode_segment(prep, work.path, k, frames, upscaler, scale, vopts, progress)
            work.finish_segment(k)
            if on_segment is not None:
                on_segment(k + 1)
    finally:
        close()
    _assemble(prep, job, work.path, vopts)
    work.remove()
    return _video_record(prep, first_seg, n - min(first_seg * seg, n),
                         time.perf_counter() - t_started)


def _upscale_to_video_ranks(
    job: VideoJob, upscaler: Any, scale: float | None, vopts: VideoOptions, part: Shard, *,
    progress: Progress | None = None, on_segment: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One video across torchrun ranks: segment ``k`` is upscaled by rank ``k % WORLD_SIZE``
    (every rank decodes the stream and drops the frames of other ranks' segments), rank 0
    prepares the work folder and joins the segments. Every rank calls this for every video in
    the same order; errors are agreed between ranks so that all of them take the same path.
    Returns rank 0's record ({} on the other ranks). With ``--resume`` a segment file left by
    any earlier run with the same fingerprint counts as finished.
    """
    t_started = time.perf_counter()
    prep, err = attempt(lambda: _prepare_video(job, upscaler, scale, vopts))
    err = part.agree(err)
    if err is not None:
        raise err
    assert prep is not None
    work_path = segments.work_dir_for(job.dst)
    work: segments.WorkState | None = None
    if part.index == 0:  # may delete an old work folder: before anyone writes a segment
        fp = _fingerprint(job.src, upscaler, scale, vopts, job.dst)
        work, err = attempt(lambda: segments.open_work(job.dst, fp, resume=vopts.resume))
    err = part.agree(err)
    if err is not None:
        raise err
    mine = part.pick_indices(prep.n_seg)

    def run_mine() -> tuple[int, int]:
        resumed = processed = 0
        todo = [k for k in mine if not segments.segment_path(work_path, k).is_file()]
        resumed = len(mine) - len(todo)
        if not todo:
            return resumed, 0
        n, seg = len(prep.source.times), vopts.segment_frames
        frames, close = prep.source.open_frames()
        try:
            pos = 0
            for k in todo:
                for _ in _batches(frames, k * seg - pos, 1):  # other ranks' segments
                    pass
                _encode_segment(prep, work_path, k, frames, upscaler, scale, vopts, progress)
                seg_file = segments.segment_path(work_path, k)
                os.replace(seg_file.with_suffix(".part"), seg_file)
                pos = min(n, (k + 1) * seg)
                processed += pos - k * seg
                if on_segment is not None:
                    on_segment(k + 1)
        finally:
            close()
        return resumed, processed

    counts, err = attempt(run_mine)
    shared = part.all_gather((err, counts))
    err = next((e for e, _ in shared if e is not None), None)
    if err is not None:
        raise err
    if part.index != 0:
        return {}
    assert work is not None
    _assemble(prep, job, work.path, vopts)
    work.remove()
    resumed = sum(c[0] for _, c in shared)
    processed = sum(c[1] for _, c in shared)
    return _video_record(prep, resumed, processed, time.perf_counter() - t_started)


def upscale_to_frames(
    job: VideoJob, upscaler: Any, scale: float | None, vopts: VideoOptions, *,
    progress: Progress | None = None, part: Shard | None = None,
) -> dict[str, Any]:
    """A video -> a folder of numbered images (``frame_000001.png``...).

    ``part``: under torchrun, rank ``k % WORLD_SIZE`` writes the frames of segment ``k``
    (``segment_frames`` frames); the checks are agreed between ranks before any frame is
    written.
    """
    from sr_cli.io.images import Image, format_for_path, write_image

    ranks = part is not None and part.gathers

    def check() -> tuple[Source, str, str]:
        source = _video_source(job.src, vopts)
        ext = "." + (vopts.ext or "png").lstrip(".")
        fmt = format_for_path(Path("x" + ext))
        if job.dst.exists() and any(job.dst.iterdir()) and not vopts.overwrite:
            raise UsageError(f"{job.dst}: folder is not empty (use --overwrite)")
        return source, ext, fmt

    if not ranks:
        source, ext, fmt = check()
    else:
        assert part is not None
        checked, err = attempt(check)
        err = part.agree(err)
        if err is not None:
            raise err
        assert checked is not None
        source, ext, fmt = checked
    n = len(source.times)
    out = job.dst
    t_started = time.perf_counter()
    bs = _batch_size(upscaler, vopts)

    def write(i: int, fr: np.ndarray) -> None:  # i: 1-based frame number
        write_image(out / f"frame_{i:06d}{vopts.suffix}{ext}", Image(fr, format=fmt), fmt=fmt)

    def run_mine() -> None:
        """This rank's segments of frames (all of them without torchrun), frames of other
        ranks' segments decoded and skipped."""
        seg = vopts.segment_frames
        n_seg = (n + seg - 1) // seg
        mine = part.pick_indices(n_seg) if (ranks and part is not None) else list(range(n_seg))
        out.mkdir(parents=True, exist_ok=True)
        if not mine:
            return
        frames, close = source.open_frames()
        pos = 0
        try:
            for k in mine:
                for _ in _batches(frames, k * seg - pos, 1):  # other ranks' frames
                    pass
                i, pos = k * seg, min(n, (k + 1) * seg)
                for batch in _batches(frames, pos - i, bs):
                    for fr in upscale_frames(upscaler, batch, scale):
                        i += 1
                        write(i, fr)
                    if progress:
                        progress(i, n)
        finally:
            close()

    if not ranks:
        run_mine()
    else:
        assert part is not None
        _, err = attempt(run_mine)
        err = part.agree(err)
        if err is not None:
            raise err
    secs = time.perf_counter() - t_started
    oh, ow = upscaler.output_size(source.height, source.width, scale)
    return {"frames": n, "in_size": [source.width, source.height], "out_size": [ow, oh],
            "fps": round(n / secs, 3) if secs > 0 else None, "notes": []}


def upscale_videos(
    inputs: list[str], out: str | None, upscaler: Any, scale: float | None,
    vopts: VideoOptions, *, progress: Progress | None = None,
    on_segment: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None, shard: Shard | None = None,
) -> dict[str, Any] | None:
    """Upscale videos; returns the summary dict of ``sr upscale`` (see the command).

    Args:
        inputs / out: command-line paths (videos, folders of videos, a frames folder; an
            output video, folder of videos, or frames folder).
        upscaler: a :class:`sr_cli.infer.engine.Upscaler`.
        scale: output scale (None = the model's native one).
        progress: ``progress(done_frames, total_frames)`` per video.
        on_segment: called with the number of finished segments after each one (tests use it
            to simulate an interrupted run).
        on_note: receives one-line notes (re-encoded or dropped streams, pixel format).

    A single video raises its SRError; with several, failures are collected in
    ``_failures`` and the records.

    ``shard``: with ``--shard K/N`` this part's videos (whole files); under torchrun every rank
    takes part in every video (its segments, see :func:`upscale_to_video`) and rank 0 returns
    the summary, the other ranks None.
    """
    part = shard or Shard()
    jobs = plan_video_jobs(inputs, out, vopts)
    lone = len(jobs) == 1 and part.reports
    if part.split and not part.gathers:
        jobs = part.pick(jobs, key=lambda j: str(j.dst))
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    failures: list[SRError] = []
    for job in jobs:
        rec: dict[str, Any] = {"input": str(job.src), "output": str(job.dst)}
        t0 = time.perf_counter()
        try:
            if job.kind == "frames_out":
                rec.update(upscale_to_frames(job, upscaler, scale, vopts, progress=progress,
                                             part=part))
            else:
                rec.update(upscale_to_video(job, upscaler, scale, vopts, progress=progress,
                                            on_segment=on_segment, part=part))
            rec["status"] = "ok"
            if on_note:
                for note in rec.get("notes", []):
                    on_note(f"{job.src}: {note}")
        except SRError as exc:
            if lone:
                raise
            failures.append(exc)
            rec.update(status="failed", error=exc.message, code=int(exc.exit_code))
        except OSError as exc:
            err = RuntimeFailure(f"{job.src}: {exc.strerror or exc}")
            if lone:
                raise err from None
            failures.append(err)
            rec.update(status="failed", error=err.message, code=int(err.exit_code))
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        records.append(rec)
    if not part.reports:
        return None
    from sr_cli.zoo import scale_json

    d = upscaler.model.desc
    return {
        "model": upscaler.model.name, "arch": d.arch, "native_scale": scale_json(d.scale),
        "scale": scale_json(scale if scale is not None else d.scale),
        "device": str(upscaler.device),
        "precision": upscaler.precision, "engine": upscaler.engine, "files": records,
        "ok": sum(r["status"] == "ok" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": len(failures), "seconds": round(time.perf_counter() - started, 4),
        "_failures": failures,
    }

