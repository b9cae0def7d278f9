"""`sr degrade`: make low-resolution images the way the literature does, as a filter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sr_cli import distributed
from sr_cli.console import info, progress_bar, warn
from sr_cli.errors import InputError, SRError, UsageError, batch_error
from sr_cli.io.atomic import atomic_write_bytes, make_parent, note_input, refuse_existing
from sr_cli.io.formats import format_for_path, is_image_path
from sr_cli.io.positional import split_inputs_output

if TYPE_CHECKING:
    import numpy as np
    import torch

    from sr_cli.degrade.config import DegradeConfig

# numpy, torch and the degradation code load inside the functions that run them, so
# `sr degrade --help` and Click's usage errors need none of them.


def build_config(
    *, config: Path | None, overrides: list[str], preset: str | None, scale: int | None,
    order: int | None, seed: int | None, jpeg_backend: str | None,
) -> DegradeConfig:
    """Defaults <- config file <- --set overrides <- named flags; validated (UsageError)."""
    from sr_cli.degrade.config import (
        DegradeConfig,
        apply_overrides,
        load_config_file,
        merge,
        validate,
    )

    cfg = DegradeConfig()
    if config is not None:
        merge(cfg, load_config_file(config))
    apply_overrides(cfg, overrides)
    if order is not None:
        cfg.realesrgan.order = order
        if preset is None:
            preset = "realesrgan"
        elif preset != "realesrgan":
            raise UsageError("--order applies to the realesrgan preset only")
    if preset is not None:
        cfg.preset = preset
    if scale is not None:
        cfg.scale = scale
    if seed is not None:
        cfg.seed = seed
    if jpeg_backend is not None:
        cfg.realesrgan.jpeg_backend = jpeg_backend
        cfg.classical.jpeg_backend = jpeg_backend
    return validate(cfg)


def _to_rgb_float(pixels: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None, float]:
    """(H, W, C) uint -> ((1, 3, H, W) float32 in [0, 1], alpha plane or None, max value)."""
    import numpy as np
    import torch

    maxv = 65535.0 if pixels.dtype == np.uint16 else 255.0
    c = pixels.shape[2]
    alpha = pixels[:, :, c - 1] if c in (2, 4) else None
    color = pixels[:, :, : (1 if c <= 2 else 3)].astype(np.float32) / np.float32(maxv)
    t = torch.from_numpy(np.ascontiguousarray(color)).permute(2, 0, 1).unsqueeze(0)
    if t.shape[1] == 1:
        t = t.expand(1, 3, -1, -1).contiguous()
    return t, alpha, maxv


def _destinations(names: list[str], repeat: int, output: str, pairs: Path | None,
                  folder_mode: bool) -> list[list[Path]]:
    """Output paths of every (image, variant) in processing order, decided before any work:
    ``[HR, LR]`` under ``--pairs``, one path otherwise, none for stdout."""
    out: list[list[Path]] = []
    for name in names:
        for k in range(repeat):
            vname = _variant_name(name, k, repeat)
            if pairs is not None:
                stem = Path(vname).stem + ".png"
                out.append([pairs / "HR" / stem, pairs / "LR" / stem])
            elif output == "-":
                out.append([])
            else:
                out_path = Path(output)
                if folder_mode or (repeat > 1 and not out_path.suffix) or out_path.is_dir():
                    out.append([out_path / vname])
                elif repeat > 1:
                    out.append([out_path.with_name(_variant_name(out_path.name, k, repeat))])
                else:
                    out.append([out_path])
    return out


def degrade_image(
    pixels: np.ndarray, cfg: DegradeConfig, params: dict[str, Any] | None, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Degrade one ``(H, W, C)`` image. Returns (lr pixels, cropped hr pixels, parameters).

    The HR is cropped to a multiple of the scale. ``params`` (from --replay) fixes every random
    choice; otherwise they are drawn from a generator seeded with ``seed``.
    """
    import numpy as np
    import torch

    from sr_cli.degrade.pipeline import (
        apply_classical,
        apply_realesrgan,
        bicubic_downscale,
        make_generator,
        min_input_size,
        sample_classical,
        sample_realesrgan,
    )
    from sr_cli.degrade.resize import imresize

    s = cfg.scale
    h, w = pixels.shape[:2]
    need = min_input_size(cfg)
    if min(h, w) < need:
        raise InputError(
            f"image {w}x{h} is too small for preset {cfg.preset} at x{s} "
            f"(needs at least {need} pixels per side)"
        )
    hr = pixels[: h - h % s, : w - w % s]
    hh, ww = hr.shape[:2]
    if cfg.preset == "bicubic":
        maxv = 65535.0 if hr.dtype == np.uint16 else 255.0
        x = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)
        b = cfg.bicubic
        y = bicubic_downscale(x, s, kernel=b.kernel, antialias=b.antialias,
                              maxval=maxv if b.quantize else None)
        lr = torch.floor(y + 0.5).clamp(0, maxv).permute(1, 2, 0).numpy().astype(hr.dtype)
        return np.ascontiguousarray(lr), hr, {"preset": "bicubic"}
    gen = make_generator(seed)
    x, alpha, _ = _to_rgb_float(hr)
    if cfg.preset == "classical":
        p = params if params is not None else sample_classical(cfg.classical, gen)
        if p.get("preset") != "classical":
            raise UsageError("replayed parameters are not for the classical preset")
        out = apply_classical(x, [p], s, cfg.classical)
    else:
        p = params if params is not None else sample_realesrgan(cfg.realesrgan, gen)
        if p.get("preset") != "realesrgan":
            raise UsageError("replayed parameters are not for the realesrgan preset")
        out, _ = apply_realesrgan(x, [p], s, cfg.realesrgan)
    lr = torch.round(out[0] * 255.0).clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    if hr.shape[2] in (1, 2):  # gray in, gray out (BT.601 luma of the degraded RGB)
        luma = lr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lr = np.clip(np.floor(luma + 0.5), 0, 255).astype(np.uint8)[:, :, None]
    if alpha is not None:
        a = torch.from_numpy(alpha.astype(np.float64) / (65535.0 if alpha.dtype == np.uint16
                                                         else 255.0))[None, None]
        a8 = imresize(a, size=(hh // s, ww // s))[0, 0].clamp(0, 1).mul(255).round()
        lr = np.concatenate([lr, a8.numpy().astype(np.uint8)[:, :, None]], axis=2)
    hr8 = hr if hr.dtype == np.uint8 else np.ascontiguousarray(
        ((hr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    return np.ascontiguousarray(lr), hr8, p


def _load_replay(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    note_input(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --replay {str(path)!r}: {exc.strerror or exc}") from None
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            table[(str(rec["name"]), int(rec.get("variant", 0)))] = rec["params"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UsageError(f"{path}:{n}: not a degrade record") from None
    return table


def _variant_name(name: str, k: int, repeat: int) -> str:
    if repeat == 1:
        return name
    p = Path(name)
    return f"{p.stem}_{k}{p.suffix}"


def degrade(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="INPUT [OUTPUT]: an image file, a folder of images or '-' (stdin), "
                       "then the output file, folder or '-' (stdout) unless -o is given. "
                       "With no OUTPUT the image goes to stdout.",
                       show_default=False, metavar="[INPUT] [OUTPUT]"),
    ] = None,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="Output file, folder, or - for stdout "
                                 "(instead of a trailing OUTPUT).")
    ] = None,
    scale: Annotated[
        int | None, typer.Option("-s", "--scale", help="Downscale factor: 1, 2, 3, 4 or 8.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="bicubic (default), classical or realesrgan."),
    ] = None,
    order: Annotated[
        int | None,
        typer.Option("--order", help="Real-ESRGAN high-order model with N stages (implies "
                                     "--preset realesrgan; the paper uses 2)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed; per-image seeds hash it with file names.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML or JSON file with parameters.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a parameter, e.g. "
                                   "realesrgan.stage1.noise.sigma=[1,20] (repeatable)."),
    ] = None,
    jpeg_backend: Annotated[
        str | None,
        typer.Option("--jpeg-backend", help="torch (batched DCT model) or pillow (libjpeg)."),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the effective config (JSON), exit.")
    ] = False,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write every sampled value to FILE.jsonl.")
    ] = None,
    replay: Annotated[
        Path | None, typer.Option("--replay", help="Reuse the values of a --record file.")
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="Write aligned OUT/HR and OUT/LR (HR cropped to a "
                                     "multiple of the scale) instead of -o."),
    ] = None,
    repeat: Annotated[
        int, typer.Option("--repeat", help="Variants per image (name_K.ext when > 1).")
    ] = 1,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Output format for stdout (default png).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (never the input).")
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip images whose outputs all exist "
                           "(resume a batch; not with --record).")
    ] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", metavar="K/N", help=distributed.SHARD_HELP + " "
                                 "--record FILE.jsonl becomes FILE.K-of-N.jsonl.")
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="CPU threads. The default 1 makes seeded "
                          "bytes independent of the machine's core count (parallel float sums "
                          "can flip a rounding tie); more threads are faster.")
    ] = 1,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or notes.")] = False,
) -> None:
    """Degrade images to low resolution: MATLAB bicubic, classical, or Real-ESRGAN high order.

    Example: sr degrade --preset bicubic --scale 4 hr/ lr/

    More: cat hr.png | sr degrade --order 2 --seed 7 > lr.png;  sr degrade hr.png lr.png -s 2.

    Presets: bicubic (MATLAB imresize 1/scale; reproduces the benchmark LR_bicubic sets),
    classical (blur, downsample, noise, JPEG) and realesrgan (USM-sharpened input, two
    stages of blur/resize/noise/JPEG, final sinc + JPEG in random order). Files map to files,
    folders to folders with the same names. The same input, seed and name give the same bytes.

    Under torchrun (torchrun --nproc-per-node 8 -m sr_cli degrade hr/ -o lr/ --seed 1) the
    images are split across ranks; seeds depend on (seed, name) only, so the bytes do not
    depend on the number of ranks, and rank 0 writes the --record file (docs/scaling.md).
    """
    import torch

    inputs, out = split_inputs_output(list(paths or []), output)
    if len(inputs) > 1:
        raise UsageError(f"one INPUT (a file, a folder or '-'), then OUTPUT; got {len(inputs)} "
                         "inputs (use a folder for several images)")
    input = inputs[0] if inputs else "-"
    output = out if out is not None else "-"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _degrade(input, output, preset, scale, order, seed, config, set_, print_config, record,
                 replay, pairs, repeat, fmt, jpeg_backend, overwrite, skip_existing, shard)
    finally:
        torch.set_num_threads(previous_threads)


def _degrade(input, output, preset, scale, order, seed, config, set_, print_config, record,
             replay, pairs, repeat, fmt, jpeg_backend, overwrite, skip_existing=False,
             shard=None) -> None:
    from sr_cli.degrade.config import to_dict

    cfg = build_config(config=config, overrides=list(set_ or []), preset=preset, scale=scale,
                       order=order, seed=seed, jpeg_backend=jpeg_backend)
    part = distributed.current(shard)
    if print_config:
        if part.reports:
            sys.stdout.write(json.dumps(to_dict(cfg), indent=2) + "\n")
            sys.stdout.flush()
        return
    if repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if record is not None and replay is not None and record.resolve() == replay.resolve():
        raise UsageError("--record and --replay must be different files")
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other")
    if skip_existing and record is not None:
        raise UsageError("--record lists every image; it cannot be combined with --skip-existing")
    if record is not None and part.split and not part.gathers:
        record = record.with_name(f"{record.stem}.{part.index}-of-{part.count}{record.suffix}")
    replay_table = _load_replay(replay) if replay is not None else None
    # this rank's / shard's images, checked and degraded in memory; written only when every
    # rank got this far (a bad image anywhere leaves no output, as in one process)
    planned, err = part.attempt(lambda: _plan(input, output, pairs, repeat, fmt, cfg,
                                              replay_table, record, overwrite, skip_existing,
                                              part))
    if part.settle(part.agree(err)):
        return
    assert planned is not None
    results, dests, records, failed, n_read = planned
    _, err = part.attempt(lambda: _write(results, dests, output, pairs, fmt))
    gathered = part.gather((err, records, len(results), failed, n_read))
    if gathered is None:  # a torchrun rank other than 0, which reports for all
        return
    err = next((g[0] for g in gathered if g[0] is not None), None)
    if err is not None:
        raise err
    if record is not None:
        lines = sorted((r for g in gathered for r in g[1]), key=lambda r: r[:2])
        atomic_write_bytes(record, ("\n".join(line for _, _, line in lines) + "\n").encode())
    info(f"sr degrade: {sum(g[2] for g in gathered)} image(s), preset {cfg.preset}, "
         f"x{cfg.scale}")
    all_failed = sorted((f for g in gathered for f in g[3]), key=lambda f: f[0])
    if all_failed:
        raise batch_error(all_failed, len(all_failed) + sum(g[4] for g in gathered))


def _plan(input, output, pairs, repeat, fmt, cfg, replay_table, record, overwrite,
          skip_existing, part: distributed.Shard
          ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[list[Path]],
                     list[tuple[str, int, str]], list[tuple[str, SRError]], int]:
    """Read, check and degrade this part's images: (results, destinations, records, failed
    files, images read). In a folder, a bad file is a failure of its own, not of the run."""
    from sr_cli.degrade.pipeline import derive_seed, min_input_size
    from sr_cli.io.images import Image, read_image, read_stdin_bytes

    # ---- gather inputs: (name, loader), then read this rank's / shard's share
    sources: list[tuple[str, Any]] = []
    failed: list[tuple[str, SRError]] = []
    src = Path(input)
    folder_mode = input != "-" and src.is_dir()
    if input == "-":
        sources.append(("stdin.png", lambda: read_image(read_stdin_bytes(), name="<stdin>")))
    elif folder_mode:
        files = sorted(p for p in src.iterdir() if p.is_file() and is_image_path(p))
        if not files:
            raise InputError(f"{input}: no images in folder")
        sources = [(p.name, lambda p=p: read_image(p)) for p in files]
    else:
        sources.append((src.name, lambda: read_image(src)))
    items: list[tuple[str, Image]] = []
    for name, load in part.pick(sources, key=lambda s: s[0]):
        if not folder_mode:
            items.append((name, load()))
            continue
        try:  # a bad file does not stop the others (like sr upscale)
            items.append((name, load()))
        except SRError as exc:
            failed.append((str(src / name), exc))
            warn(exc.message)

    # ---- decide destinations before doing any work (no output on error)
    if pairs is None:
        if output == "-":
            if folder_mode or repeat > 1:
                raise UsageError("several outputs need an output folder (OUTPUT, -o FOLDER or "
                                 "--pairs OUT)")
        else:
            out_path = Path(output)
            if folder_mode:
                if out_path.exists() and not out_path.is_dir():
                    raise UsageError(f"{output}: not a folder (input is a folder)")
                if out_path.resolve() == src.resolve():
                    raise UsageError("output folder must differ from the input folder")
            elif input != "-" and out_path.resolve() == src.resolve():
                raise UsageError("refusing to overwrite the input image")
            elif not out_path.is_dir():
                format_for_path(out_path)  # validates the extension early
    dests = _destinations([n for n, _ in items], repeat, output, pairs, folder_mode)
    if not skip_existing:
        refuse_existing([d for group in dests for d in group]
                        + ([record] if record is not None and part.reports else []), overwrite)
    need = min_input_size(cfg)
    for name, img in list(items):
        if min(img.height, img.width) < need:
            err = InputError(
                f"{name}: image {img.width}x{img.height} is too small for preset {cfg.preset} "
                f"at x{cfg.scale} (needs at least {need} pixels per side)"
            )
            if not folder_mode:
                raise err
            failed.append((str(src / name), err))
            warn(err.message)
            items.remove((name, img))
    if folder_mode:
        dests = _destinations([n for n, _ in items], repeat, output, pairs, folder_mode)

    # ---- process everything in memory, then write
    results: list[tuple[str, np.ndarray, np.ndarray]] = []
    records: list[tuple[str, int, str]] = []
    kept: list[list[Path]] = []
    total = len(items) * repeat
    with progress_bar("degrade", total) as cb:
        done = 0
        for n, (name, img) in enumerate(items):
            for k in range(repeat):
                group = dests[n * repeat + k]
                if skip_existing and group and all(d.exists() for d in group):
                    done += 1
                    continue
                params = None
                if replay_table is not None:
                    params = replay_table.get((name, k))
                    if params is None and cfg.preset != "bicubic":
                        raise UsageError(f"--replay has no record for {name} variant {k}")
                s = derive_seed(cfg.seed, name, k)
                lr, hr, p = degrade_image(img.pixels, cfg, params, s)
                results.append((_variant_name(name, k, repeat), lr, hr))
                kept.append(group)
                records.append((name, k, json.dumps({"name": name, "variant": k, "seed": s,
                                                     "scale": cfg.scale, "params": p},
                                                    sort_keys=True)))
                done += 1
                cb(done, total)
    return results, kept, records, failed, len(items)


def _write(results: list[tuple[str, np.ndarray, np.ndarray]], dests: list[list[Path]],
           output: str, pairs: Path | None, fmt: str | None) -> None:
    from sr_cli.io.images import Image, encode_image, write_stdout_bytes

    if output == "-" and pairs is None:
        if results:  # (a rank without the one image has nothing to write)
            f = (fmt or "png").lower()
            write_stdout_bytes(encode_image(Image(results[0][1]),
                                            format_for_path(Path("x"), f)))
    else:
        for (_, lr, hr), group in zip(results, dests, strict=True):
            for dest, pixels in zip(group, [hr, lr] if pairs is not None else [lr],
                                    strict=True):
                make_parent(dest)
                fmt_out = "png" if pairs is not None else format_for_path(dest, fmt)
                atomic_write_bytes(dest, encode_image(Image(pixels), fmt_out))
