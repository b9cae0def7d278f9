"""`sr train`: train a recipe (SRCNN, SRResNet/SRGAN, ESRGAN, Real-ESRGAN, compact variants)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sr_cli.console import info, show_progress, stderr_console
from sr_cli.errors import UsageError


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as TOML (numbers, true/false, lists, "strings")."""
    import tomllib  # here: its regexes cost `sr train --help` a few ms

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
        raise UsageError("usage: sr train plot RUN_DIR [-o PNG]")
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
        typer.Argument(help="Recipe (see --list), or 'plot' to draw a run's curves; with "
                       "--resume, the run folder (RUN_DIR) alone is enough."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Argument(help="With 'plot' (or RECIPE --resume): the run folder.")
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
        typer.Option("-o", "--output", "--out", metavar="RUN_DIR",
                     help="Run folder (RUN_DIR); with 'plot': the PNG to write ('-' for "
                     "stdout). --out is an alias."),
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
        bool, typer.Option("--resume", help="Continue a run from its checkpoint: `sr train "
                           "--resume RUN_DIR` alone reuses every stored setting (data paths "
                           "included); --steps N extends the schedule; flags that would "
                           "change the run are refused, listing the differences.")
    ] = False,
    published: Annotated[
        bool, typer.Option("--published", help="On a CPU, keep the recipe's published "
                           "batch_size, patch_size, pool_size and cache_mb (by default they "
                           "are reduced to fit about 4 GB; a note lists the changes).")
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
        str | None,
        typer.Option("--perceptual", help="vgg19 (needs --vgg-weights) or random (fixed seed). "
                     "Default: vgg19."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[
        int | None, typer.Option("--workers", help="DataLoader worker processes.")
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", metavar="SECONDS", min=0,
                     help="Stop after this many seconds of training, saving the checkpoint "
                     "and RUN_DIR/model.safetensors as at the end (continue with --resume): "
                     "for a scheduler's time slot."),
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

    Example: sr train srcnn --scale 3 --data train/ --val Set5/HR --steps 5000 -o runs/srcnn

    Continue it later: sr train --resume runs/srcnn (add --steps 8000 to extend it).

    Recipes: srcnn, srresnet, srgan, esrgan-psnr, esrgan, realesrnet, realesrgan,
    realesrnet-compact, realesrgan-compact, distill (`sr train --list`). Settings start at
    the recipe's published values and can be overridden with --config FILE.toml and --set KEY=VALUE
    (`sr train RECIPE --print-config` shows them all). The result is RUN_DIR/model.safetensors
    (EMA weights where the recipe uses EMA) of the last checkpoint, usable with `sr upscale -m
    RUN_DIR` also after an interrupt; RUN_DIR also holds checkpoint.pt (for --resume; Ctrl-C or
    SIGTERM stop within seconds and save the last completed step), metrics.jsonl and, with
    --val, model_best.safetensors. One run per RUN_DIR at a time (a lock; a second gets exit 2).
    On a CPU, batch and crop sizes are reduced to fit about
    4 GB (a note says what changed; --published keeps the recipe's values), and after the
    first steps a note gives the speed, the ETA and, for schedules of days, how to shorten them.
    `sr train plot RUN_DIR` draws the curves (needs matplotlib).
    Multi-GPU: torchrun --nproc_per_node N -m sr_cli train ... (batch_size is per GPU).
    """
    from sr_cli.train.config import apply_overrides, config_to_toml, load_toml
    from sr_cli.train.recipes import recipe_config

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if list_:
        _print_list()
        return
    if recipe is None and not resume:
        raise UsageError("give a RECIPE (see `sr train --list`)")
    if recipe == "plot":
        _plot(run_dir, out)
        return
    if resume:
        recipe, out = _resume_target(recipe, run_dir, out)
    elif run_dir is not None:
        raise UsageError(f"unexpected extra argument {str(run_dir)!r}")
    file_settings = load_toml(config) if config is not None else {}
    cli_settings = _parse_set(set_ or [])
    flags: dict[str, Any] = {}
    if steps is not None:
        flags["steps"] = steps
    if workers is not None:
        flags["workers"] = workers
    given = {"data": data, "lr_data": lr_data, "val": val, "init": init,
             "vgg_weights": vgg_weights, "perceptual": perceptual}
    if resume:
        assert out is not None  # noqa: S101 - _resume_target returns the run folder
        cfg, paths = _resumed_settings(out, recipe, scale, file_settings, config, cli_settings,
                                       flags, given)
        if print_config:
            sys.stdout.write(config_to_toml(cfg))
            return
        _run(cfg, paths["data"], paths["lr_data"], paths["val"], out, True, paths["init"],
             paths["vgg_weights"], paths["perceptual"] or "vgg19", device, time_limit)
        return
    if recipe is None:
        raise UsageError("give a RECIPE (see `sr train --list`)")
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
    if flags:
        cfg = apply_overrides(cfg, flags, "options")
    cfg.validate()
    if not published and _on_cpu(device):
        from sr_cli.train.cpu import cpu_sized

        cfg, note = cpu_sized(cfg, set(file_settings) | set(cli_settings) | set(flags))
        if note:
            info(note)
        cfg.validate()
    if print_config:
        sys.stdout.write(config_to_toml(cfg))
        return
    if data is None:
        raise UsageError("--data HR_DIR is required")
    if out is None:
        raise UsageError("-o/--output RUN_DIR is required")
    _run(cfg, data, lr_data, val, out, resume, init, vgg_weights, perceptual or "vgg19", device,
         time_limit)


def _checkpoint_step(run: Path) -> int:
    from sr_cli.train.checkpoint import CHECKPOINT_NAME

    try:
        import torch

        state = torch.load(str(run / CHECKPOINT_NAME), map_location="cpu", weights_only=True,
                           mmap=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001 - only used to show the first step; the loop checks
        return 0


def _on_cpu(device: str) -> bool:
    """Whether training will run on a CPU (``--device cpu``, or auto without CUDA)."""
    if device.startswith("cuda"):
        return False
    if device == "auto":
        import glob

        if not glob.glob("/dev/nvidia[0-9]*"):  # no NVIDIA device node: a CPU, without torch
            return True
        import torch

        return not torch.cuda.is_available()
    return True


def _resume_target(recipe: str | None, run_dir: Path | None,
                   out: Path | None) -> tuple[str | None, Path]:
    """``--resume RUN_DIR``, ``RECIPE --resume RUN_DIR`` or ``... --resume -o RUN_DIR``:
    (recipe or None, run folder)."""
    from sr_cli.train.recipes import RECIPES

    if recipe is not None and recipe.lower() not in RECIPES:  # `sr train --resume RUN_DIR`
        if run_dir is not None:
            raise UsageError(f"unexpected extra argument {str(run_dir)!r}")
        run_dir, recipe = Path(recipe), None
    if run_dir is not None and out is not None and run_dir.resolve() != out.resolve():
        raise UsageError(f"--resume: two run folders given ({run_dir} and -o {out})")
    target = run_dir if run_dir is not None else out
    if target is None:
        raise UsageError("--resume needs the run folder: sr train --resume RUN_DIR")
    return recipe, target


# Settings a resumed run may change: run length, cadence, loader workers, cache.
_FREE_ON_RESUME = {"steps", "log_every", "val_every", "ckpt_every", "workers", "cache_mb"}


def _resumed_settings(run: Path, recipe: str | None, scale: int | None,
                      file_settings: dict[str, Any], config: Path | None,
                      cli_settings: dict[str, Any], flags: dict[str, Any],
                      given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The stored settings of ``run`` with the allowed changes; UsageError listing every flag
    that would change the run."""
    import dataclasses

    from sr_cli.train.checkpoint import read_run_settings
    from sr_cli.train.config import TrainConfig, apply_overrides

    saved_cfg, saved_opts = read_run_settings(run)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in saved_cfg.items()
                                               if k in fields})
    diffs: list[str] = []
    if recipe is not None and recipe.lower() != cfg.recipe:
        diffs.append(f"recipe {cfg.recipe} -> {recipe}")
    if scale is not None and scale != cfg.scale:
        diffs.append(f"scale {cfg.scale} -> {scale}")
    new = cfg
    for settings, source in ((file_settings, str(config)), (cli_settings, "--set"),
                             (flags, "options")):
        if settings:
            new = apply_overrides(new, settings, source)
    for key, value in new.to_dict().items():
        if key not in _FREE_ON_RESUME and saved_cfg.get(key) != value:
            diffs.append(f"{key} {saved_cfg.get(key)!r} -> {value!r}")
    paths: dict[str, Any] = {}
    for key, value in given.items():
        stored = saved_opts.get(key)
        if value is None:
            paths[key] = Path(stored) if stored and key in _PATH_OPTIONS else stored
            continue
        mine = str(Path(value).resolve()) if key in _PATH_OPTIONS else str(value)
        if (stored is not None and mine != stored) or (stored is None and saved_opts):
            diffs.append(f"--{key.replace('_', '-')} {stored} -> {mine}")
        paths[key] = value
    if diffs:
        raise UsageError(
            f"--resume {run}: these would change the run: {'; '.join(diffs)}. Resume with the "
            "stored settings (--steps N may extend it), or train into a new -o RUN_DIR"
        )
    if paths.get("data") is None:
        raise UsageError(f"--resume {run}: the checkpoint does not record the data folder "
                         "(an older run): add --data HR_DIR")
    new.validate()
    return new, paths


_PATH_OPTIONS = {"data", "lr_data", "val", "vgg_weights"}


def _run(cfg: Any, data: Path, lr_data: Path | None, val: Path | None, out: Path, resume: bool,
         init: str | None, vgg_weights: Path | None, perceptual: str, device: str,
         time_limit: float | None = None) -> None:
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
                      vgg_weights=vgg_weights, perceptual=perceptual, device=device,
                      time_limit=time_limit)
    start = time.perf_counter()
    if show_progress():
        prog = Progress(
            TextColumn(f"train {cfg.recipe}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=stderr_console(), transient=True,
        )
        with prog:
            # No loss or speed before the first step has produced one.
            task = prog.add_task("train", total=cfg.steps,
                                 status="preparing data and the first step...")

            def progress(done: int, total: int, inf: dict[str, float]) -> None:
                prog.update(task, completed=done, total=total,
                            status=f"loss {inf['loss']:.4g}  {inf['it_s']:.2f} it/s")

            def notify(msg: str) -> None:
                prog.console.print(msg, markup=False)

            result = run_training(cfg, opts, progress=progress, notify=notify)
    else:
        every = max(1, cfg.log_every)
        first = _checkpoint_step(out) if resume else 0

        def progress(done: int, total: int, inf: dict[str, float]) -> None:
            if done % every == 0 or done == total or done == first + 1:
                from sr_cli.train.cpu import format_duration

                rate = inf["it_s"]
                speed = f"{rate:.2f} it/s" if rate >= 0.5 else f"{1 / max(rate, 1e-9):.1f} s/step"
                eta = format_duration((total - done) / rate) if rate > 0 else "?"
                info(f"step {done}/{total}  loss {inf['loss']:.4g}  {speed}  ETA {eta}")

        result = run_training(cfg, opts, progress=progress, notify=info)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.scores.items())
    info(f"trained {result.step} steps in {time.perf_counter() - start:.1f}s -> "
         f"{result.model_path}" + (f" ({scores})" if scores else ""))
