"""`sr models list|info|convert`: inspect the zoo and import checkpoints.

``fetch`` lives in its own module (``sr_cli.commands.fetch``, function ``fetch``); when that
module exists it is appended to :data:`COMMANDS` here, so ``cli.py`` registers it with the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sr_cli import zoo
from sr_cli.console import info
from sr_cli.errors import ModelError, UsageError
from sr_cli.io.atomic import refuse_existing


def _fmt_scale(scale: float) -> str:
    if scale == 0:
        return "any"
    return f"x{int(scale)}" if float(scale).is_integer() else f"x{scale:g}"


def _fmt_scores(scores: dict[str, Any]) -> str:
    parts = []
    for ds, vals in sorted(scores.items()):
        if isinstance(vals, dict):
            psnr, ssim = vals.get("psnr_y", vals.get("psnr")), vals.get("ssim_y", vals.get("ssim"))
            txt = " ".join(
                f"{v:.2f}" if k == "psnr" else f"{v:.4f}"
                for k, v in (("psnr", psnr), ("ssim", ssim))
                if isinstance(v, (int, float))
            )
            shown = ("psnr_y", "psnr", "ssim_y", "ssim")
            extra = [f"{k}={v:.3g}" for k, v in vals.items()
                     if k not in shown and isinstance(v, (int, float))]
            parts.append(f"{ds} {' '.join([txt, *extra]).strip()}".strip())
        elif isinstance(vals, (int, float)):
            parts.append(f"{ds} {vals:.4g}")
    return "; ".join(parts) if parts else "-"


def _short_scores(scores: dict[str, Any]) -> str:
    """``Set5 31.02/0.8781; Set14 27.96/0.7644``: PSNR-Y/SSIM-Y only, Set5 first."""
    parts = []
    for ds, vals in sorted(scores.items(), key=lambda kv: (kv[0].lower() != "set5", kv[0])):
        if not isinstance(vals, dict):
            continue
        psnr, ssim = vals.get("psnr_y", vals.get("psnr")), vals.get("ssim_y", vals.get("ssim"))
        if isinstance(psnr, (int, float)):
            txt = f"{psnr:.2f}" + (f"/{ssim:.4f}" if isinstance(ssim, (int, float)) else "")
            parts.append(f"{ds} {txt}")
    return "; ".join(parts) if parts else "-"


WIDTH = 100
"""The table of `sr models list` fits this many columns (without --long)."""


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")]
    = False,
    long: Annotated[bool, typer.Option("--long", "-l", help="Add the FILE column (absolute "
                                       "paths) and every score (NIQE...).")] = False,
) -> None:
    """List the models of the zoo: name, architecture, scale, parameters, scores.

    Example: sr models list --json | jq '.[] | select(.default)'

    The table (or JSON) goes to stdout. The table fits 100 columns: scores are PSNR-Y/SSIM-Y
    per data set, Set5 first (a long cell is cut with '...'); --long adds each file's path and
    every score. The default model (used when -m is not given) is marked with '*'; while the
    zoo holds no scored learned model it is the bicubic baseline, and a note on stderr says
    so. Zoo folders: the repository's models/, $SR_HOME/models (else
    ~/.cache/sr/models) and SR_MODELS_PATH; `sr models info NAME` shows one model in detail.
    """
    entries = zoo.list_models()
    default = next((e.name for e in entries if e.default), zoo.default_model_name())
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        head = ["", "NAME", "ARCH", "SCALE", "PARAMS"]
        rows = [head + (["FILE", "SCORES (PSNR-Y SSIM-Y)"] if long
                        else ["SCORES (PSNR-Y/SSIM-Y)"])]
        for e in entries:
            row = [
                "*" if e.default else "",
                e.name,
                e.arch,
                _fmt_scale(e.scale),
                f"{e.params:,}" if e.learned else "-",
            ]
            if long:
                row += [str(e.file) if e.file else "(built in)", _fmt_scores(e.scores)]
            else:
                row.append(_short_scores(e.scores))
            rows.append(row)
        if not long:
            widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
            room = max(20, WIDTH - sum(w + 2 for w in widths))
            for r in rows:
                if len(r[-1]) > room:
                    r[-1] = r[-1][: room - 3] + "..."
        typer.echo(_table(rows))
    if default == "bicubic" and not any(e.learned and e.default for e in entries):
        info("default model: bicubic (fallback: no scored learned model in models/ yet)")
    else:
        info(f"default model: {default}")


def _describe(lm: zoo.LoadedModel | zoo.ModelHeader) -> dict[str, Any]:
    from sr_cli.archs.facts import DESCRIPTIONS

    d = lm.desc
    if isinstance(lm, zoo.ModelHeader):
        params = lm.params
    else:
        params = sum(p.numel() for p in lm.net.parameters())
    return {
        "name": lm.name,
        "arch": d.arch,
        "description": DESCRIPTIONS.get(d.arch, ""),
        "scale": zoo.scale_json(d.scale),  # null: any scale (a baseline)
        "in_channels": d.in_channels,
        "accepts_rgb": d.accepts_rgb,
        "learned": d.learned,
        "params": params,
        "size_multiple": d.size_multiple,
        "context": d.context,
        "supports_half": d.supports_half,
        "hparams": d.hparams,
        "file": str(lm.source) if lm.source else None,
        "metadata": {k: v for k, v in lm.metadata.items() if k != "hparams"},
    }


def info_(
    model: Annotated[str, typer.Argument(help="Zoo name, baseline name or weights path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    header: Annotated[
        bool,
        typer.Option("--header", help="Read a .safetensors file's header only: fast, no torch, "
                     "but the weights are not checked (files without sr metadata and .pth "
                     "files are still loaded)."),
    ] = False,
) -> None:
    """Show one model: architecture, hyperparameters, scale, channels, parameters, metadata.

    Example: sr models info weights/realesr-animevideov3.pth

    Works on zoo names, the baselines (bicubic, lanczos, nearest), any .safetensors or .pth
    file (the architecture is detected from the tensors when the file has no metadata) and ncnn
    .param / .param.bin files. accepts_rgb: RGB images go in as they are (every 3-channel
    network). The weights are loaded and checked (NaN/Inf, shapes), so a bad file exits with
    code 4; with --header a zoo .safetensors file is described from its header alone, without torch.
    """
    peeked = zoo.peek_model(model, header_only=header)
    facts = _describe(peeked if peeked is not None else zoo.load_model(model))
    if as_json:
        typer.echo(json.dumps(facts, indent=2, sort_keys=False))
        return
    lines = []
    for key, val in facts.items():
        if key in ("hparams", "metadata"):
            continue
        if key == "params":
            val = f"{val:,}"
        elif key == "scale":
            val = _fmt_scale(val or 0)  # x4, x1.5, any
        lines.append(f"{key}: {val}")
    lines.append("hparams: " + json.dumps(facts["hparams"], sort_keys=True))
    for k, v in sorted(facts["metadata"].items()):
        lines.append(f"metadata.{k}: {v}")
    typer.echo("\n".join(lines))


def _read_weights_stdin() -> tuple[dict[str, Any], dict[str, str]]:
    """A .pth or .safetensors checkpoint piped into stdin (the format is sniffed from the
    bytes, as for files): read through a private temporary file."""
    import tempfile

    from sr_cli.io.images import read_stdin_bytes

    data = read_stdin_bytes()
    with tempfile.TemporaryDirectory(prefix="sr-convert-") as tmp:
        path = Path(tmp) / "stdin"
        path.write_bytes(data)
        try:
            return zoo.read_weights(path)
        except ModelError as exc:  # name what the user gave, not the temporary file
            raise ModelError(exc.message.replace(str(path), "<stdin>")) from None


def convert(
    src: Annotated[Path, typer.Argument(help="Input checkpoint (.pth/.pt, .safetensors, or an "
                                        "ncnn .param or binary .param.bin with its .bin beside "
                                        "it); '-' reads a .pth or .safetensors from stdin.")],
    dst: Annotated[str | None, typer.Argument(
        help="Output .safetensors file ('-' for stdout); or give it with -o.",
        show_default=False, metavar="[DST]")] = None,
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Output .safetensors file ('-' for stdout), instead of DST.",
        show_default=False)] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name stored in the metadata.")
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option("--scale", help="Scale for checkpoints that do not store it (SRCNN)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT (never the input).")
    ] = False,
) -> None:
    """Convert a checkpoint to a zoo .safetensors file with metadata.

    Example: sr models convert RealESRGAN_x4plus.pth realesrgan-x4plus.safetensors

    The output is DST or -o/--output ('-' writes it to stdout).

    The architecture and hyperparameters are detected from the tensors (BasicSR, original
    ESRGAN and old model.N key schemes load); the weights are verified by loading them strictly.
    An ncnn model (realesrgan-ncnn-vulkan / upscayl .param or binary .param.bin + .bin, fp16 or
    fp32; int8-quantised models are refused) is mapped onto RRDBNet (x1/x2 with their
    Reshape/Permute pixel-unshuffle too) or SRVGGNetCompact and checked against a run of the
    ncnn graph itself.
    .pth files are read with torch.load(weights_only=True): pickles that need code execution are
    refused. The output is written atomically and never over the input.
    """
    from sr_cli.io.positional import split_inputs_output

    inputs, target = split_inputs_output([str(src), *([dst] if dst else [])], output)
    if len(inputs) != 1 or target is None:
        raise UsageError("one SRC, then the output: DST or -o DST (not both; '-' is stdout)")
    dst = target
    if dst != "-":
        out = Path(dst)
        if out.suffix.lower() != ".safetensors":
            raise UsageError(f"{dst}: the output must be a .safetensors file")
        if out.exists() and src.exists() and os.path.samefile(out, src):
            raise UsageError(f"{dst}: refusing to overwrite the input")
        if out.is_dir():
            raise UsageError(f"{dst}: is a directory")
        refuse_existing([out], overwrite)
    from_stdin = str(src) == "-"
    if from_stdin:
        sd, meta = _read_weights_stdin()
    else:
        sd, meta = zoo.read_weights(src)
    lm = zoo.build_loaded(sd, meta, name=name or "", source=src, scale=scale)
    keep = {k: v for k, v in meta.items()
            if k not in ("arch", "hparams", "scale", "in_channels", "params", "format")}
    keep["name"] = name or keep.get("name") or (
        Path(dst).stem if dst != "-" else ("stdin" if from_stdin else src.stem))
    keep.setdefault("converted_from", "<stdin>" if from_stdin else src.name)
    n_params = sum(p.numel() for p in lm.net.parameters())
    if dst == "-":
        from safetensors.torch import save

        from sr_cli.io.images import write_stdout_bytes

        tensors = {k: v.contiguous().clone() for k, v in lm.net.state_dict().items()}
        write_stdout_bytes(save(tensors, metadata=zoo.model_metadata(lm.net, lm.desc, keep)))
    else:
        zoo.save_model(dst, lm.net, lm.desc, keep)
    info(f"{src} -> {dst}: {lm.desc.arch} {_fmt_scale(lm.desc.scale)}, {n_params:,} parameters")


COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("list", list_),
    ("info", info_),
    ("convert", convert),
]

# Slot for `sr models fetch`, written in its own module by the fetch work.
if importlib.util.find_spec("sr_cli.commands.fetch") is not None:
    COMMANDS.append(("fetch", importlib.import_module("sr_cli.commands.fetch").fetch))
