"""`sr train`: train a recipe (SRCNN, SRResNet/SRGAN, ESRGAN, Real-ESRGAN, compact variants)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import tomllib
import typer

from sr_cli.console import err_console, info, is_quiet, set_quiet, show_progress
from sr_cli.errors import UsageError


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as TOML (numbers, true/false, lists, "strings")."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        if "." in key:  # arch_params.num_block=6 / perceptual_layers.conv5_4=1
            table, sub = key.split(".", 1)
            out.setdefault(table, {})[sub] = value
        else:
            out[key] = value
    return out


def _print_list() -> None:
    from sr_cli.train.recipes import RECIPES

    width = max(len(n) for n in RECIPES)
    for name, recipe in RECIPES.items():
        print(f"{name:<{width}}  {recipe.summary}")


def _plot(run_dir: Path | None, out: Path | None) -> None:
    from sr_cli.train.plot import plot_run

    if run_dir is None:
        raise UsageError("usage: sr train plot RUN_DIR [--out PNG]")
    if out is not None and str(out) == "-":  # the PNG to stdout (never to a terminal)
        from sr_cli.io.images import write_stdout_bytes
        from sr_cli.train.plot import render_run

        write_stdout_bytes(render_run(run_dir))
        return
    target = plot_run(run_dir, out or (run_dir / "metrics.png"))
    info(f"wrote {target}")


def train(
    recipe: Annotated[
        str | None,
        typer.Argument(help="Recipe (see --list), or 'plot' to draw a run's curves."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Argument(help="With 'plot': the run folder (RUN_DIR).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Folder of HR training images (recursive).")
    ] = None,
    lr_data: Annotated[
        Path | None,
        typer.Option("--lr-data", help="Folder of matching LR images (NAME.ext or NAMExS.ext)."),
    ] = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Folder of HR validation images.")
    ] = None,
    scale: Annotated[int | None, typer.Option("--scale", help="Upscaling factor.")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run folder (RUN_DIR); with 'plot': the PNG to write."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Total training steps.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of settings (see --print-config).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one setting, KEY=VALUE (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
    init: Annotated[
        str | None,
        typer.Option("--init", help="Start from these weights (path or zoo name); the same "
                     "network at another scale loads its matching tensors (a note names the "
                     "rest)."),
    ] = None,
    vgg_weights: Annotated[
        Path | None,
        typer.Option("--vgg-weights", help="torchvision vgg19 .pth or safetensors conversion."),
    ] = None,
    perceptual: Annotated[
        str,
        typer.Option("--perceptual", help="vgg19 (needs --vgg-weights) or random (fixed seed)."),
    ] = "vgg19",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[
        int | None, typer.Option("--workers", help="DataLoader worker processes.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print every setting of RECIPE as TOML, exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes.")] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for PyTorch (default: "
                                 "one per core); data loading workers are set in the config.")
    ] = None,
) -> None:
    """Train a super-resolution recipe on a folder of images.

    Example: sr train srcnn --scale 3 --data train/ --val Set5/HR --steps 5000 --out runs/srcnn

    Recipes: srcnn, srresnet, srgan, esrgan-psnr, esrgan, realesrnet, realesrgan,
    realesrnet-compact, realesrgan-compact (`sr train --list`). Settings start at the recipe's
    published values and can be overridden with --config FILE.toml and --set KEY=VALUE
    (`sr train RECIPE --print-config` shows them all). The result is RUN_DIR/model.safetensors
    (EMA weights where the recipe uses EMA), usable with `sr upscale -m`; RUN_DIR also holds
    checkpoint.pt (for --resume; Ctrl-C or SIGTERM saves it first), metrics.jsonl and, with --val,
    model_best.safetensors. `sr train plot RUN_DIR` draws the curves (needs matplotlib).
    Multi-GPU: torchrun --nproc_per_node N -m sr_cli train ... (batch_size is per GPU).
    """
    from sr_cli.train.config import apply_overrides, config_to_toml, load_toml
    from sr_cli.train.recipes import recipe_config

    set_quiet(quiet or is_quiet())
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if list_:
        _print_list()
        return
    if recipe is None:
        raise UsageError("give a RECIPE (see `sr train --list`)")
    if recipe == "plot":
        _plot(run_dir, out)
        return
    if run_dir is not None:
        raise UsageError(f"unexpected extra argument {str(run_dir)!r}")
    file_settings = load_toml(config) if config is not None else {}
    cli_settings = _parse_set(set_ or [])
    chosen_scale = scale if scale is not None else cli_settings.get(
        "scale", file_settings.get("scale"))
    if chosen_scale is not None and (isinstance(chosen_scale, bool)
                                     or not isinstance(chosen_scale, int)):
        raise UsageError(f"scale must be an integer, got {chosen_scale!r}")
    cfg = recipe_config(recipe, chosen_scale)
    if file_settings:
        cfg = apply_overrides(cfg, file_settings, str(config))
    if cli_settings:
        cfg = apply_overrides(cfg, cli_settings, "--set")
    flags: dict[str, Any] = {}
    if steps is not None:
        flags["steps"] = steps
    if workers is not None:
        flags["workers"] = workers
    if flags:
        cfg = apply_overrides(cfg, flags, "options")
    cfg.validate()
    if print_config:
        sys.stdout.write(config_to_toml(cfg))
        return
    if data is None:
        raise UsageError("--data HR_DIR is required")
    if out is None:
        raise UsageError("--out RUN_DIR is required")
    _run(cfg, data, lr_data, val, out, resume, init, vgg_weights, perceptual, device)


def _run(cfg: Any, data: Path, lr_data: Path | None, val: Path | None, out: Path, resume: bool,
         init: str | None, vgg_weights: Path | None, perceptual: str, device: str) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sr_cli.train.loop import RunOptions, run_training

    opts = RunOptions(data=data, out=out, lr_data=lr_data, val=val, resume=resume, init=init,
                      vgg_weights=vgg_weights, perceptual=perceptual, device=device)
    start = time.perf_counter()
    if show_progress():
        prog = Progress(
            TextColumn(f"train {cfg.recipe}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4g}  {task.fields[rate]:.2f} it/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console, transient=True,
        )
        with prog:
            task = prog.add_task("train", total=cfg.steps, loss=float("nan"), rate=0.0)

            def progress(done: int, total: int, inf: dict[str, float]) -> None:
                prog.update(task, completed=done, total=total, loss=inf["loss"],
                            rate=inf["it_s"])

            def notify(msg: str) -> None:
                prog.console.print(msg, markup=False)

            result = run_training(cfg, opts, progress=progress, notify=notify)
    else:
        every = max(1, cfg.log_every)

        def progress(done: int, total: int, inf: dict[str, float]) -> None:
            if done % every == 0 or done == total:
                rate = inf["it_s"]
                eta = (total - done) / rate if rate > 0 else float("nan")
                info(f"step {done}/{total}  loss {inf['loss']:.4g}  {rate:.2f} it/s  "
                     f"ETA {eta:.0f}s")

        result = run_training(cfg, opts, progress=progress, notify=info)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.scores.items())
    info(f"trained {result.step} steps in {time.perf_counter() - start:.1f}s -> "
         f"{result.model_path}" + (f" ({scores})" if scores else ""))
