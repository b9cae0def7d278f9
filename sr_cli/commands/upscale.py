"""`sr upscale`: thin CLI over the inference engine (sr_cli.infer) and image I/O (sr_cli.io)."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sr_cli import console, distributed
from sr_cli.errors import ExitCode, RuntimeFailure, SRError, UsageError
from sr_cli.infer.jobs import Job, is_video_run, plan_jobs, split_inputs_output
from sr_cli.io.atomic import make_parent, refuse_existing

HELP_SCALE = (
    "Output scale factor (any positive number). The network runs at its native scale "
    "(e.g. x4); if the requested factor differs, a MATLAB-bicubic resize (antialiased when "
    "shrinking) takes the network output to the requested size, ceil(H*scale) as MATLAB's "
    "imresize. Baselines (bicubic, lanczos, "
    "nearest) resize directly. Default: the model's native scale. Without -m, the zoo's "
    "best model of native scale SCALE is used when there is one (a note names it)."
)


def upscale(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="INPUT... [OUTPUT]: image files, folders or '-' (stdin); the last argument is "
            "the output (file, folder, or '-' for stdout) unless -o is given. With one input "
            "and no output, the image goes to stdout.",
            show_default=False,
            metavar="[INPUT]... [OUTPUT]",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", help="Output file, folder, or '-'; then every "
                     "positional argument is an input."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("-m", "--model", "-n", help="Zoo name or weights file (.safetensors, "
                     ".pth, or an ncnn model.param / model.param.bin with model.bin beside it); "
                     "-n is an alias "
                     "(Real-ESRGAN's and realesrgan-ncnn-vulkan's flag). Give two with --mix to "
                     "blend them. Default: the zoo's default model "
                     "(see `sr models list`)."),
    ] = None,
    mix: Annotated[
        float | None,
        typer.Option("--mix", help="Blend two -m models at load time: (1-MIX)*A + MIX*B "
                     "(network interpolation, e.g. a denoise strength)."),
    ] = None,
    scale: Annotated[float | None, typer.Option("-s", "--scale", help=HELP_SCALE)] = None,
    tile: Annotated[
        int | None,
        typer.Option("--tile", help="Tile size in input pixels; 0 = whole image; default: "
                     "auto, sized to the device's free memory. Tiles overlap by the network's "
                     "context, so the output matches an untiled run (no seams). RRDBNet runs "
                     "staged (block by block over stored feature maps, exact): N sets the "
                     "block and tail tiles."),
    ] = None,
    tile_batch: Annotated[
        int, typer.Option("--tile-batch", help="Tiles per forward pass.", min=1)
    ] = 4,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option("--precision", help="auto (fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16 "
                     "(not on CPU). A half-precision tile with NaN/Inf is redone in fp32."),
    ] = "auto",
    tta: Annotated[
        bool, typer.Option("--tta", help="x8 self-ensemble: average the outputs of the 8 "
                           "flips/rotations of the input (8x slower; typically +0.1 dB PSNR). "
                           "Works with tiling.")
    ] = False,
    alpha: Annotated[
        str, typer.Option("--alpha", help="Alpha channel: 'model' (through the network) or "
                          "'bicubic'.")
    ] = "model",
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Descend into subfolders.")
    ] = False,
    suffix: Annotated[
        str, typer.Option("--suffix", help="Folder output names: {stem}{suffix}.{ext}.")
    ] = "",
    ext: Annotated[
        str | None, typer.Option("--ext", help="Folder output extension (default: the "
                                 "input's).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("-f", "--format", help="Output format (png, jpeg, webp, "
                                 "bmp, tiff); default from the extension, PNG on stdout.")
    ] = None,
    quality: Annotated[
        int | None, typer.Option("--quality", help="JPEG/WebP quality 1-100.", min=1, max=100)
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip outputs that already exist "
                           "(resume a batch).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (never inputs).")
    ] = False,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Refuse inputs with more pixels than this "
                          "(decompression-bomb guard); 0 = no limit. Each input pixel costs "
                          "about 40 bytes of memory while it is decoded and converted, so the "
                          "default 50 M pixels needs about 2 GB; raise it for larger scans.",
                          min=0)
    ] = 50_000_000,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or notes.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary (stdout; stderr when the "
                           "image itself goes to stdout).")
    ] = False,
    channels_last: Annotated[
        bool, typer.Option("--channels-last/--no-channels-last", help="Channels-last memory "
                           "format (faster convolutions).")
    ] = True,
    fps: Annotated[
        float | None, typer.Option("--fps", help="Video: force this output frame rate.")
    ] = None,
    codec: Annotated[
        str, typer.Option("--codec", help="Video codec (libx264, libx265, libvpx-vp9, ffv1...).")
    ] = "libx264",
    crf: Annotated[int | None, typer.Option("--crf", help="Video: constant rate factor.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Video: encoder preset.")
    ] = None,
    pix_fmt: Annotated[
        str | None, typer.Option("--pix-fmt", help="Video: output pixel format.")
    ] = None,
    ffmpeg_args: Annotated[
        str | None, typer.Option("--ffmpeg-args", help="Video: extra ffmpeg output arguments.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="Video: start time (seconds or HH:MM:SS).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="Video: duration to process.")
    ] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Video: drop audio.")] = False,
    no_subtitles: Annotated[
        bool, typer.Option("--no-subtitles", help="Video: drop subtitles.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Video: continue an interrupted run from its "
                           "last finished segment.")
    ] = False,
    segment_frames: Annotated[
        int, typer.Option("--segment-frames", min=1, help="Video: frames per resumable "
                          "segment, the unit of work across torchrun ranks (segment k goes "
                          "to rank k % WORLD_SIZE).")
    ] = 300,
    shard: Annotated[
        str | None, typer.Option("--shard", metavar="K/N", help=distributed.SHARD_HELP + " "
                                 "Videos are split as whole files; under torchrun by segments.")
    ] = None,
    jobs_spec: Annotated[
        str | None, typer.Option("-j", "--jobs", help="Threads load:proc:save for several "
                                 "images (default 1:1:2): the next images are decoded and "
                                 "finished ones encoded while the network computes.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for the network "
                                 "(default: PyTorch's, one per core).")
    ] = None,
    compile_net: Annotated[
        bool, typer.Option("--compile", help="Run the network through torch.compile (a "
                           "slow first image, faster after; mostly useful on CUDA).")
    ] = False,
    engine: Annotated[
        str, typer.Option("--engine", help="Who runs fp32 inference on the CPU: auto (ncnn "
                          "when the ncnn package is installed and the architecture exports to "
                          "it: SRVGGNetCompact, RRDBNet, SRResNet, SRCNN; else torch), torch, "
                          "ncnn. ncnn uses --threads too. The --json summary names the engine "
                          "that ran.")
    ] = "auto",
) -> None:
    """Upscale images (and videos) with a super-resolution model.

    Example: sr upscale photo.jpg photo_x4.png

    With another model: sr upscale photo.jpg photo_x4.png -m realesrgan-x4 (`sr models list`).

    More: cat in.png | sr upscale -s 2 > out.png;  sr upscale -r scans/ out/ --suffix _x4;
    sr upscale in.mp4 out.mp4 -m realesr-animevideov3 --crf 18.

    Many GPUs or machines: torchrun --nproc-per-node 4 -m sr_cli upscale -r in/ out/
    --skip-existing splits the files (a video's segments) across ranks, each on cuda:LOCAL_RANK;
    rank 0 prints the summary and exits with the batch's code (docs/scaling.md).
    """
    from sr_cli.infer.pipeline import parse_jobs

    spec = parse_jobs(jobs_spec)
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise UsageError(f"--scale must be a finite number > 0, got {scale}")
    inputs, out = split_inputs_output(list(paths or []), output)
    video = is_video_run(inputs, out)
    part = distributed.current(shard)
    # plan image work first: a wrong path fails before a large model is loaded
    all_jobs = [] if video else plan_jobs(inputs, out, recursive=recursive, suffix=suffix,
                                          ext=ext, fmt=fmt)
    jobs = part.pick(all_jobs, key=_job_key)  # this rank's / shard's files (all without one)
    if not skip_existing:
        _, err = part.attempt(lambda: refuse_existing(
            [j.dst for j in jobs if j.dst is not None], overwrite,
            "use --overwrite to replace or --skip-existing to keep existing outputs"))
        if part.settle(part.agree(err)):
            return
    if any(j.dst is None for j in jobs):
        from sr_cli.io.images import refuse_terminal_stdout

        refuse_terminal_stdout()  # before any work, not after the network ran
    if video:
        from sr_cli.video.pipeline import VideoOptions, plan_video_jobs

        vopts = VideoOptions(fps=fps, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                             ffmpeg_args=ffmpeg_args, start=start, duration=duration,
                             audio=not no_audio, subtitles=not no_subtitles, resume=resume,
                             overwrite=overwrite, recursive=recursive, suffix=suffix, ext=ext,
                             segment_frames=segment_frames)
        refuse_existing([j.dst for j in plan_video_jobs(inputs, out, vopts)
                         if j.kind != "frames_out"], overwrite)

    # torch loads from here on: everything above (usage errors, missing inputs, existing
    # outputs) is reported without it, so a mistyped command fails at once
    from sr_cli.infer.device import emulated_bf16_warning, limit_heap_fragmentation
    from sr_cli.infer.engine import InferenceOptions, Upscaler

    limit_heap_fragmentation()  # band-sized buffers go back to the OS: bounded peak memory
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    loaded = _load_models(model or [], mix, scale)
    opts = InferenceOptions(device=part.device(device), precision=precision, tile=tile,
                            tile_batch=tile_batch, channels_last=channels_last, alpha=alpha,
                            tta=tta, compile=compile_net, engine=engine)
    upscaler = Upscaler(loaded, opts, on_warning=console.warn)
    slow = emulated_bf16_warning(upscaler.device, upscaler.precision)
    if slow:
        console.warn(f"--precision bf16: {slow}")

    if video:
        from sr_cli.video import upscale_videos

        with console.progress_bar("frames", None) as frames_bar:
            summary = upscale_videos(inputs, out, upscaler, scale, vopts, progress=frames_bar,
                                     on_note=console.info, shard=part)
        if summary is not None:
            _finish(summary, json_out, to_stdout=False)
        return

    summary = _run_jobs(jobs, upscaler, scale, quality=quality, skip_existing=skip_existing,
                        overwrite=overwrite, max_pixels=max_pixels, spec=spec,
                        single=len(all_jobs) == 1 and not part.gathers)
    summary = distributed.gather_batch_summary(part, summary, [_job_key(j) for j in all_jobs])
    if summary is not None:  # None: a torchrun rank other than 0, which reports for all
        _finish(summary, json_out, to_stdout=any(j.dst is None for j in all_jobs))


def _job_key(job: Job) -> str:
    """A job's name for the split across ranks and the order of gathered records."""
    return str(job.dst) if job.dst is not None else "<stdout>"


def _load_models(names: list[str], mix: float | None, scale: float | None) -> Any:
    from sr_cli import zoo

    if mix is not None:
        if len(names) != 2:
            raise UsageError("--mix needs exactly two -m models")
        if not 0.0 <= mix <= 1.0:
            raise UsageError("--mix must be in [0, 1]")
        from sr_cli.interp import blend_models

        a = zoo.load_model(names[0], scale=scale)
        b = zoo.load_model(names[1], scale=scale)
        return blend_models(a, b, mix)
    if len(names) > 1:
        raise UsageError("several -m models need --mix")
    if names:
        return zoo.load_model(names[0], scale=scale)
    name = zoo.default_model_name(scale)
    default = zoo.default_model_name() if scale is not None else name
    if name != default:
        console.info(f"note: -s {scale:g} without -m: using {name}, the zoo's best model of "
                     f"native scale x{scale:g} (Set5 PSNR-Y); -m {default} runs the default "
                     "model and resizes its output")
    return zoo.load_model(name, scale=scale)


def _run_jobs(
    jobs: list[Job], upscaler: Any, scale: float | None, *, quality: int | None,
    skip_existing: bool, overwrite: bool, max_pixels: int, spec: Any,
    single: bool | None = None,
) -> dict[str, Any]:
    """Run the jobs through the load/process/save pipeline (``spec`` threads). ``single``:
    raise a lone job's error instead of recording it (default: when there is one job; a part
    of a split batch records it for the gathered summary)."""
    from sr_cli.infer.pipeline import Cancelled, prefetched, run_pipeline
    from sr_cli.io import images
    from sr_cli.zoo import scale_json

    lone = len(jobs) == 1 if single is None else single
    started = time.perf_counter()
    records: list[dict[str, Any] | None] = [None] * len(jobs)
    failures: list[SRError] = []
    t0s: dict[int, float] = {}

    def load(job: Job) -> Any:
        t0s[id(job)] = time.perf_counter()
        if skip_existing and job.dst is not None and job.dst.exists():
            return None
        data = images.read_stdin_bytes() if job.src is None else job.src
        return images.read_image(data, name=job.label, max_pixels=max_pixels)

    def process(job: Job, img: Any, progress: Any = None) -> tuple[Any, Any]:
        if img is None:
            return None, ()
        return None, upscaler.stream(img.pixels, scale, progress=progress)

    def overlapped(stream: Any, stop: threading.Event) -> Any:
        """A lone image's bands computed one ahead of the encoder (the pipeline's overlap);
        ``stop`` (set when the writer stops) cancels the computation at its next tile."""
        if not isinstance(stream, images.PixelStream):
            return stream
        return images.PixelStream(stream.height, stream.width, stream.channels, stream.dtype,
                                  prefetched(stream.bands, 1, stop))

    def save(job: Job, img: Any, _header: Any, bands: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"input": job.label,
                               "output": str(job.dst) if job.dst else "<stdout>"}
        if img is None:
            list(bands)
            return {**rec, "status": "skipped"}
        stream = bands if isinstance(bands, images.PixelStream) else _restream(img, bands)
        meta = images.Image(img.pixels[:0, :0], format=job.fmt, icc=img.icc, exif=img.exif,
                            info=dict(img.info))
        if job.dst is not None:
            make_parent(job.dst)
        images.write_image_stream(job.dst, stream, meta, fmt=job.fmt, quality=quality)
        oh, ow = upscaler.output_size(img.height, img.width, scale, planes=1)
        return {**rec, "status": "ok", "in_size": [img.width, img.height], "out_size": [ow, oh]}

    def _restream(img: Any, bands: Any) -> Any:
        oh, ow = upscaler.output_size(img.height, img.width, scale, planes=1)
        return images.PixelStream(oh, ow, img.channels, img.pixels.dtype, bands)

    def failed(n: int, job: Job, exc: BaseException) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, SRError):
            exc = RuntimeFailure(f"{job.label}: {exc.strerror or exc}")
        if not isinstance(exc, SRError):
            raise exc
        failures.append(exc)
        records[n] = {"input": job.label, "output": str(job.dst) if job.dst else "<stdout>",
                      "status": "failed", "error": exc.message, "code": int(exc.exit_code)}
        console.warn(exc.message if exc.message.startswith(job.label)
                     else f"{job.label}: {exc.message}")

    if len(jobs) == 1:  # one image: inline; progress counts its tiles
        job = jobs[0]
        try:
            img = load(job)
            with console.progress_bar(f"tiles {Path(job.label).name}", None) as tiles:
                stop = threading.Event()

                def tick(done: int, total: int) -> None:  # on the prefetch thread
                    if stop.is_set():
                        raise Cancelled
                    tiles(done, total)

                _h, stream = process(job, img, tick)
                records[0] = save(job, img, None, overlapped(stream, stop))
        except (SRError, OSError) as exc:
            if lone:
                raise
            failed(0, job, exc)
        rec0 = records[0]
        assert rec0 is not None  # noqa: S101 - set above
        rec0["seconds"] = round(time.perf_counter() - t0s.get(id(job), started), 4)
    elif jobs:
        with console.progress_bar("images", len(jobs), enabled=console.show_progress()) \
                as advance:
            results = run_pipeline(jobs, load, process, save, spec)
            for done, (n, rec_or_none, err) in enumerate(results, start=1):
                job = jobs[n]
                if err is not None:
                    failed(n, job, err)
                else:
                    records[n] = rec_or_none
                rec_n = records[n]
                assert rec_n is not None  # noqa: S101 - set just above
                rec_n["seconds"] = round(time.perf_counter() - t0s.get(id(job), started), 4)
                advance(done, len(jobs))
    d = upscaler.model.desc
    files = [r for r in records if r is not None]
    return {
        "model": upscaler.model.name,
        "arch": d.arch,
        "native_scale": scale_json(d.scale),  # null: an any-scale baseline
        "scale": scale_json(scale if scale is not None else upscaler.default_scale),
        "device": str(upscaler.device),
        "precision": upscaler.precision,
        "engine": upscaler.engine,
        "tta": upscaler.options.tta,
        "files": files,
        "ok": sum(r["status"] == "ok" for r in files),
        "skipped": sum(r["status"] == "skipped" for r in files),
        "failed": len(failures),
        "seconds": round(time.perf_counter() - started, 4),
        "_failures": failures,
    }


def _finish(summary: dict[str, Any], json_out: bool, *, to_stdout: bool) -> None:
    failures: list[SRError] = summary.pop("_failures", [])
    if json_out:
        text = json.dumps(summary, indent=2)
        if to_stdout:
            console.err_console.print(text, markup=False, highlight=False)
        else:
            sys.stdout.write(text + "\n")
    n = len(summary.get("files", []))
    if n > 1:
        console.info(f"{summary['ok']} written, {summary['skipped']} skipped, "
                     f"{summary['failed']} failed in {summary['seconds']:.1f}s")
    if failures:
        names = ", ".join(r["input"] for r in summary["files"] if r.get("status") == "failed")
        codes = {int(f.exit_code) for f in failures}
        code = codes.pop() if len(codes) == 1 else int(ExitCode.FAILURE)
        console.error(f"{len(failures)} of {n} file(s) failed: {names}")
        raise typer.Exit(code)
