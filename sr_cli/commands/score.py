"""`sr score`: PSNR / SSIM / NIQE / Ma / PI of images, and `sr score fit-niqe`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sr_cli import console, distributed
from sr_cli.errors import ThresholdError, UsageError

if TYPE_CHECKING:
    import torch

# numpy, torch and the metrics load inside the functions that run them: `sr score --help` and
# Click's usage errors need none of them.

FIT_NIQE = "fit-niqe"

MA_MODEL_HELP = (
    "Ma et al.'s trained model (model.mat of https://github.com/chaoma99/sr-metric; "
    "also used by the PIRM 2018 challenge code). Needed by --ma and --pi; not shipped "
    "with sr. Env: SR_MA_MODEL."
)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device available")
    return dev


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:.{digits}f}"


DIGITS = {"psnr": 4, "ssim": 4, "niqe": 4, "ma": 4, "pi": 4}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no inf/nan: identical images (PSNR inf) are written as null
    return v


def _emit(rows: list[dict[str, Any]], means: dict[str, float], metrics: tuple[str, ...],
          convention: dict[str, Any], mode: str) -> None:
    if mode == "json":
        obj = {
            "convention": convention,
            "mean": {k: _clean(means[k]) for k in metrics},
            "images": [{k: _clean(v) for k, v in r.items()} for r in rows],
        }
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    elif mode == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["name", *metrics])
        for r in rows:
            w.writerow([r["name"], *(repr(r[m]) for m in metrics)])
        w.writerow(["mean", *(repr(means[m]) for m in metrics)])
        sys.stdout.write(buf.getvalue())
    else:
        names = [r["name"] for r in rows] + ["mean"]
        width = max(len(n) for n in names)
        cols = [m.upper() if m != "ma" else "Ma" for m in metrics]
        lines = ["  ".join([f"{'image':<{width}}", *(f"{c:>9}" for c in cols)])]
        for r in rows:
            lines.append("  ".join([f"{r['name']:<{width}}",
                                    *(f"{_fmt(r[m], DIGITS[m]):>9}" for m in metrics)]))
        lines.append("  ".join([f"{'mean':<{width}}",
                                *(f"{_fmt(means[m], DIGITS[m]):>9}" for m in metrics)]))
        conv = "; ".join(f"{k}={v}" for k, v in convention.items())
        lines.append(f"({conv})")
        sys.stdout.write("\n".join(lines) + "\n")


def _fit_niqe(folder: str | None, output: str | None, threshold: float) -> None:
    import numpy as np

    from sr_cli.io.atomic import atomic_open
    from sr_cli.io.images import is_image_path, read_image
    from sr_cli.metrics.color import to_channels
    from sr_cli.metrics.niqe import fit_niqe_params

    if folder is None:
        raise UsageError("usage: sr score fit-niqe DIR -o FILE.npz")
    if output is None:
        raise UsageError("sr score fit-niqe needs -o FILE.npz for the fitted parameters")
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{folder}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not files:
        raise UsageError(f"{folder}: no images found (searched recursively)")

    def images():
        for p in files:
            yield p.name, to_channels(read_image(p).pixels, "gray", round_8bit=True)

    with console.progress_bar("fit-niqe", len(files)) as cb:
        mu, cov, stats = fit_niqe_params(images(), threshold=threshold, callback=cb,
                                         total=len(files))
    if stats["patches"] <= 36:
        console.warn(f"only {stats['patches']} patches: the 36x36 covariance is singular; "
                     "use more images")
    desc = (f"fitted by `sr score fit-niqe` on {root.name} ({stats['images']} images, "
            f"{stats['patches']} patches of 96x96, sharpness threshold {threshold})")
    out = Path(output)
    with atomic_open(out, "wb") as fh:
        np.savez(fh, mu_pris_param=mu.reshape(1, -1), cov_pris_param=cov,
                 name=np.array(desc), source=np.array(str(root)),
                 threshold=np.array(threshold), n_images=np.array(stats["images"]),
                 n_patches=np.array(stats["patches"]))
    console.info(f"sr: wrote {out}: {desc}; skipped {stats['skipped_small']} images smaller "
                 f"than 96x96, dropped {stats['dropped_nan']} NaN patches")


def score(
    sr: Annotated[
        str,
        typer.Argument(help="SR image or folder, '-' for stdin; or the word 'fit-niqe' to fit "
                       "NIQE parameters (then the next argument is the image folder).",
                       show_default=False, metavar="SR"),
    ],
    hr: Annotated[
        str | None,
        typer.Argument(help="HR reference image or folder (paired with SR by file stem). "
                       "Needed by PSNR/SSIM.", show_default=False, metavar="[HR]"),
    ] = None,
    psnr_: Annotated[bool, typer.Option("--psnr", help="PSNR (dB), needs HR.")] = False,
    ssim_: Annotated[bool, typer.Option("--ssim", help="SSIM, needs HR.")] = False,
    niqe_: Annotated[bool, typer.Option("--niqe", help="NIQE (no reference; lower is "
                                        "better).")] = False,
    ma_: Annotated[bool, typer.Option("--ma", help="Ma et al.'s score (NRQM; needs "
                                      "--ma-model).")] = False,
    pi_: Annotated[bool, typer.Option("--pi", help="Perceptual index ((10 - Ma) + NIQE) / 2 "
                                      "(needs --ma-model).")] = False,
    channel: Annotated[str, typer.Option("--channel", help="PSNR/SSIM on 'y' (MATLAB "
                                         "rgb2ycbcr luma, 16..235) or 'rgb'. NIQE/Ma always "
                                         "use Y.")] = "y",
    scale: Annotated[int | None, typer.Option("--scale", "-s", help="Upscaling factor of the "
                                              "SR images; sets the default --crop-border, and "
                                              "an HR image larger than SR only by its remainder "
                                              "modulo the scale is cropped to SR (modcrop).",
                                              min=1)] = None,
    crop_border: Annotated[int | None, typer.Option("--crop-border", help="Pixels removed "
                                                    "from each side before scoring (all "
                                                    "metrics). Default: --scale, else 0.",
                                                    min=0)] = None,
    strip_suffix: Annotated[str | None, typer.Option("--strip-suffix", help="Remove this "
                                                     "from SR file stems before pairing, e.g. "
                                                     "'_out' pairs baby_out.png with "
                                                     "baby.png.")] = None,
    niqe_params: Annotated[str | None, typer.Option("--niqe-params", help="NIQE pristine "
                                                    "model: 'matlab' (default: the MATLAB "
                                                    "release's parameters, as papers and "
                                                    "pyiqa report NIQE), 'sr' (fitted by sr "
                                                    "on BSDS500 + T91 with fit-niqe), or a "
                                                    ".npz (mu_pris_param, cov_pris_param) or "
                                                    "MATLAB .mat file.")] = None,
    ma_model: Annotated[str | None, typer.Option("--ma-model", envvar="SR_MA_MODEL",
                                                 help=MA_MODEL_HELP)] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="CSV on stdout (last row: mean).")] = False,
    fail_under: Annotated[list[str] | None, typer.Option("--fail-under", help="METRIC=VALUE: "
                                                         "exit 5 if the mean is below "
                                                         "(repeatable).")] = None,
    fail_over: Annotated[list[str] | None, typer.Option("--fail-over", help="METRIC=VALUE: "
                                                        "exit 5 if the mean is above "
                                                        "(repeatable).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N (for the "
                                        "no-reference metrics).")] = "cpu",
    output: Annotated[str | None, typer.Option("-o", "--output", help="fit-niqe only: the "
                                               ".npz file to write.")] = None,
    threshold: Annotated[float, typer.Option("--sharpness-threshold", help="fit-niqe only: "
                                             "keep patches sharper than this fraction of the "
                                             "image's sharpest.", min=0.0, max=1.0)] = 0.75,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch (default 1: "
                                         "the metrics' small float64 ops gain nothing from "
                                         "intra-op threads and lose a lot on a busy CPU).",
                                         min=1)] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on "
                                        "stderr.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", metavar="K/N", help=distributed.
                                              SHARD_HELP + " Means are over the part's "
                                              "images; gates are checked per part.")] = None,
) -> None:
    """Measure images the way papers report them: PSNR, SSIM, NIQE, Ma, PI.

    Example: sr score --scale 4 out/ Set5/HR --fail-under psnr=30.5

    Files or folders (paired by file stem); '-' reads SR from stdin. Default metrics: PSNR and
    SSIM when HR is given, NIQE otherwise. PSNR/SSIM are MATLAB-compatible (float64, Y of
    rgb2ycbcr or RGB, SSIM 11x11 Gaussian sigma 1.5, valid window); NIQE follows the MATLAB
    release (96x96 blocks, two scales). Output: a table, --json or --csv on stdout; the
    conventions and parameter sets used are part of every output. --fail-under/--fail-over
    exit with code 5 when a mean misses its gate.

    sr score fit-niqe DIR -o FILE.npz fits NIQE pristine parameters from natural images
    (the NIQE paper's estimatemodelparam procedure); the literal first argument 'fit-niqe'
    selects it (score a file of that name as ./fit-niqe).

    Under torchrun (torchrun --nproc-per-node 4 -m sr_cli score --json out/ HR/) the images
    are split across ranks; rank 0 gathers the per-image scores, computes the means once and
    prints the same output as one process (docs/scaling.md).
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _score(sr, hr, psnr_, ssim_, niqe_, ma_, pi_, channel, scale, crop_border, strip_suffix,
               niqe_params, ma_model, json_, csv_, fail_under, fail_over, device, output,
               threshold, shard)
    finally:
        torch.set_num_threads(saved)


def _score(sr, hr, psnr_, ssim_, niqe_, ma_, pi_, channel, scale, crop_border, strip_suffix,
           niqe_params, ma_model, json_, csv_, fail_under, fail_over, device, output,
           threshold, shard=None) -> None:
    if sr == FIT_NIQE:
        _fit_niqe(hr, output, threshold)
        return
    if output is not None:
        raise UsageError("-o/--output is only for 'sr score fit-niqe'")
    from sr_cli.metrics import runner

    if json_ and csv_:
        raise UsageError("give at most one of --json and --csv")
    channel = channel.lower()
    if channel not in ("y", "rgb"):
        raise UsageError(f"--channel must be y or rgb, got {channel!r}")
    chosen = [m for m, on in zip(runner.METRICS, (psnr_, ssim_, niqe_, ma_, pi_), strict=True)
              if on]
    if not chosen:
        chosen = ["psnr", "ssim"] if hr is not None else ["niqe"]
    metrics = tuple(chosen)
    if hr is None and any(m in runner.FULL_REFERENCE for m in metrics):
        raise UsageError("--psnr/--ssim need an HR reference: sr score SR HR")
    under = runner.parse_gates(fail_under, "--fail-under", metrics)
    over = runner.parse_gates(fail_over, "--fail-over", metrics)
    border = crop_border if crop_border is not None else (scale or 0)
    part = distributed.current(shard)
    dev = _device(part.device(device))

    settings = runner.Settings(metrics=metrics, channel=channel, crop_border=border, scale=scale,
                               device=dev)
    convention: dict[str, Any] = {}
    if any(m in runner.FULL_REFERENCE for m in metrics):
        convention.update({"channel": channel if channel == "rgb" else "y (rgb2ycbcr, float)",
                           "data_range": 255, "float": "float64"})
        if "ssim" in metrics:
            convention["ssim"] = "gaussian 11x11 sigma 1.5, K1=0.01, K2=0.03, valid"
    convention["crop_border"] = border
    if scale:
        convention["hr_mod_crop"] = scale
    if any(m in ("ma", "pi") for m in metrics):
        if not ma_model:
            raise UsageError(
                "--ma/--pi need Ma et al.'s trained regression forests, which sr cannot ship: "
                "download model.mat from https://github.com/chaoma99/sr-metric (or the PIRM "
                "2018 code) and pass --ma-model PATH or set SR_MA_MODEL"
            )
        from sr_cli.metrics.ma import load_ma_model

        settings.ma_model = load_ma_model(ma_model)
        convention["ma_model"] = os.fspath(ma_model)
    if any(m in ("niqe", "pi") for m in metrics):
        from sr_cli.metrics.niqe import load_niqe_params

        settings.niqe_params = load_niqe_params(niqe_params)
        convention["niqe_channel"] = "y (rgb2ycbcr, rounded as MATLAB uint8)"
        convention["niqe_params"] = settings.niqe_params.name
    pairs = runner.pair_inputs(sr, hr, strip_suffix)
    mine = part.pick(pairs, key=lambda p: p.name)  # this rank's / shard's images
    with console.progress_bar("score", len(mine), enabled=None if len(mine) > 1 else False) as cb:
        done = [0]  # images scored so far: the next one is where an error came from

        def count(i: int, n: int) -> None:
            done[0] = i
            cb(i, n)

        def run() -> list[dict[str, Any]]:
            return runner.score_rows(mine, settings, callback=count)

        rows, err = part.attempt(run)
    gathered = part.gather((rows, err, mine[done[0]].name if err is not None else None))
    if gathered is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    order = {p.name: i for i, p in enumerate(pairs)}
    failed_at = [(order[name], e) for _, e, name in gathered if e is not None]
    if failed_at:  # the error of the first failing image, as one process would stop there
        raise min(failed_at, key=lambda f: f[0])[1]
    rows = sorted((r for part_rows, _, _ in gathered for r in part_rows or []),
                  key=lambda r: order[r["name"]])
    means = runner.mean_scores(rows, metrics)
    mode = "json" if json_ else "csv" if csv_ else "table"
    _emit(rows, means, metrics, convention, mode)
    failed = runner.check_gates(means, under, over) if rows else []
    if failed:
        raise ThresholdError("score gate not met: " + "; ".join(failed))
