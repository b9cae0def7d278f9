"""`sr interp`: network interpolation of two models (or pixel interpolation of two images)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sr_cli import console
from sr_cli.errors import UsageError
from sr_cli.io.atomic import make_parent, refuse_existing

if TYPE_CHECKING:
    import numpy as np

# sr_cli.interp (numpy, torch) loads inside the functions: `sr interp --help` stays light.

MODEL_EXT = ".safetensors"


def _is_dir_target(out: str) -> bool:
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def _prepare_dir(out: str) -> Path:
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UsageError(f"-o {out}: several outputs need a folder, but this is a file")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _not_an_input(target: Path, inputs: list[Path]) -> None:
    for p in inputs:
        try:
            if p.exists() and target.exists() and target.resolve() == p.resolve():
                raise UsageError(f"refusing to overwrite the input {p}")
        except OSError:
            pass


def interp(
    a: Annotated[str, typer.Argument(help="Model A (zoo name or .safetensors/.pth file; the "
                                          "alpha-0 end, e.g. a PSNR model), or image A with "
                                          "--images.", show_default=False)],
    b: Annotated[str, typer.Argument(help="Model B (the alpha-1 end, e.g. the GAN model), or "
                                          "image B with --images.", show_default=False)],
    output_arg: Annotated[
        str | None,
        typer.Argument(help="The output, as -o gives it (the INPUT... [OUTPUT] convention of "
                       "every command).", show_default=False, metavar="[OUTPUT]"),
    ] = None,
    alpha: Annotated[
        str,
        typer.Option("-a", "--alpha", help="Weight of B: theta = (1-alpha)*A + alpha*B. One "
                     "value, a list '0,0.2,0.4', a range '0:1:0.2' or '0,0.2,...,1' (several "
                     "values write one output each into the -o folder)."),
    ] = "0.8",
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", help="Output file (one alpha) or folder (several "
                     "alphas, or --preview). Models are written as .safetensors; with "
                     "--images and one alpha, '-' writes the PNG to stdout.",
                     show_default=False),
    ] = None,
    extrapolate: Annotated[
        bool, typer.Option("--extrapolate", help="Allow alpha outside [0, 1].")
    ] = False,
    preview: Annotated[
        Path | None,
        typer.Option("--preview", help="Also upscale this image with every blend and write "
                     "the results plus a labelled contact sheet into the -o folder.",
                     show_default=False),
    ] = None,
    images: Annotated[
        bool,
        typer.Option("--images", help="A and B are two already-upscaled images of the same "
                     "size: blend pixels instead of networks (the ESRGAN paper's baseline)."),
    ] = False,
    sheet_tile: Annotated[
        int, typer.Option("--sheet-tile", min=16, help="Target longest side of each picture on "
                          "the contact sheet (resized by an integer factor: box average down, "
                          "pixel repetition up).")
    ] = 384,
    tile: Annotated[
        int | None, typer.Option("--tile", help="Tile size for --preview inference "
                                 "(0 = whole image; default auto).", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Device for --preview: auto, cpu, "
                                        "cuda, cuda:N.")] = "auto",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No messages on stderr.")] = False,
) -> None:
    """Blend two networks of the same architecture (ESRGAN network interpolation).

    Example: sr interp esrgan-psnr-x4 esrgan-x4 blend.safetensors --alpha 0.8

    The output is the last argument or -o/--output (-o blend.safetensors is the same). The
    paper's own pair, after `sr models fetch`: sr interp RRDB_PSNR_x4 RRDB_ESRGAN_x4 ...

    Every tensor becomes (1 - alpha) * A + alpha * B, computed in float64 and rounded once,
    so alpha 0 and 1 reproduce A and B exactly. The result records both parents and alpha
    in its metadata and loads like any model (sr upscale -m FILE).

    Several alphas (--alpha 0,0.2,...,1 -o DIR/) write DIR/<A>_<B>_a0.20.safetensors etc.;
    --preview IMAGE also writes DIR/<A>_<B>_a0.20.png for each alpha and
    DIR/<A>_<B>_sheet.png, one labelled picture to choose from by eye. --images blends two
    upscaled images pixel by pixel instead. To blend at load time without a file, use
    sr upscale -m A -m B --mix ALPHA.
    """
    from sr_cli.interp import parse_alphas
    from sr_cli.io.positional import split_inputs_output

    inputs, output = split_inputs_output([a, b, *([output_arg] if output_arg else [])], output)
    if len(inputs) != 2:
        raise UsageError("two inputs A B, then the output (OUTPUT or -o, not both)")
    alphas = parse_alphas(alpha, extrapolate=extrapolate)
    if output is None:
        raise UsageError("give -o OUTPUT (a file for one alpha, a folder for several)")
    if images:
        if preview is not None:
            raise UsageError("--preview blends networks; it cannot be combined with --images")
        _interp_images(a, b, alphas, output, sheet_tile, overwrite)
        return
    _interp_models(a, b, alphas, output, preview, sheet_tile, tile, device, overwrite)


def _interp_models(
    a: str, b: str, alphas: list[float], output: str, preview: Path | None, sheet_tile: int,
    tile: int | None, device: str, overwrite: bool,
) -> None:
    from sr_cli import zoo
    from sr_cli.interp import alpha_tag, blend_models, check_models, output_stem

    if output == "-":
        raise UsageError("-o -: models are written to files; give a .safetensors path")
    pixels = None
    if preview is not None:
        from sr_cli.io.images import read_image

        pixels = read_image(preview).pixels  # read first: a bad image fails before any work
    model_a = zoo.load_model(a)
    model_b = zoo.load_model(b)
    check_models(model_a, model_b)
    stem = output_stem(model_a.name, model_b.name)
    several = len(alphas) > 1 or preview is not None
    inputs = [Path(x) for x in (a, b)] + ([preview] if preview is not None else [])

    if several:
        folder = _prepare_dir(output)
        targets = [folder / f"{stem}_{alpha_tag(al)}{MODEL_EXT}" for al in alphas]
    elif _is_dir_target(output):
        targets = [_prepare_dir(output) / f"{stem}_{alpha_tag(alphas[0])}{MODEL_EXT}"]
    else:
        target = Path(output)
        if target.suffix.lower() != MODEL_EXT:
            raise UsageError(f"-o {output}: models are written as {MODEL_EXT} files")
        make_parent(target)
        targets = [target]
    for t in targets:
        _not_an_input(t, inputs)
    planned = list(targets)
    if preview is not None:
        planned += [t.with_suffix(".png") for t in targets] + [
            targets[0].parent / f"{stem}_sheet.png"]
    refuse_existing(planned, overwrite)

    upscaler_opts = None
    if pixels is not None:
        from sr_cli.infer.engine import InferenceOptions, Upscaler

        upscaler_opts = InferenceOptions(device=device, tile=tile)
        Upscaler(model_a, upscaler_opts)  # bad --tile / --device fail before any file is written

    tiles: list[tuple[str, np.ndarray]] = []
    with console.progress_bar("interp", total=len(alphas)) as progress:
        for i, (al, target) in enumerate(zip(alphas, targets, strict=True)):
            blended = blend_models(model_a, model_b, al)
            blended.metadata["name"] = target.stem
            zoo.save_model(target, blended.net, blended.desc, blended.metadata)
            console.info(f"wrote {target} (alpha {al:g})")
            if pixels is not None and upscaler_opts is not None:
                from sr_cli.infer.engine import Upscaler
                from sr_cli.io.images import Image, write_image

                up = Upscaler(blended, upscaler_opts, on_warning=console.warn)
                result = up.upscale_array(pixels)
                if result.ndim == 2:
                    result = result[:, :, None]
                img_path = target.with_suffix(".png")
                write_image(img_path, Image(result))
                console.info(f"wrote {img_path}")
                tiles.append((f"a={al:.2f}", result))
            progress(i + 1, len(alphas))
    if tiles:
        sheet_path = targets[0].parent / f"{stem}_sheet.png"
        _write_sheet(sheet_path, tiles, sheet_tile)


def _write_sheet(path: Path, tiles: list[tuple[str, np.ndarray]], sheet_tile: int) -> None:
    from sr_cli.interp import contact_sheet
    from sr_cli.io.images import Image, write_image

    sheet = contact_sheet(tiles, max_tile_side=sheet_tile)
    write_image(path, Image(sheet))
    console.info(f"wrote {path} (contact sheet, {len(tiles)} pictures)")


def _interp_images(a: str, b: str, alphas: list[float], output: str, sheet_tile: int,
                   overwrite: bool) -> None:
    from sr_cli.interp import alpha_tag, blend_images, output_stem
    from sr_cli.io.images import (
        Image,
        encode_image,
        format_for_path,
        read_image,
        write_image,
        write_stdout_bytes,
    )

    img_a = read_image(a).pixels
    img_b = read_image(b).pixels
    inputs = [Path(a), Path(b)]
    stem = output_stem(a, b)
    if len(alphas) == 1 and not _is_dir_target(output):
        out = blend_images(img_a, img_b, alphas[0])
        if output == "-":
            write_stdout_bytes(encode_image(Image(out), "png"))
            return
        target = Path(output)
        format_for_path(target)  # a clear error for an unknown extension, before writing
        _not_an_input(target, inputs)
        refuse_existing([target], overwrite)
        make_parent(target)
        write_image(target, Image(out))
        console.info(f"wrote {target} (alpha {alphas[0]:g})")
        return
    if output == "-":
        raise UsageError("-o -: several alphas need a folder")
    folder = _prepare_dir(output)
    targets = [folder / f"{stem}_{alpha_tag(al)}.png" for al in alphas]
    for target in targets:
        _not_an_input(target, inputs)
    refuse_existing(targets + ([folder / f"{stem}_sheet.png"] if len(alphas) > 1 else []),
                    overwrite)
    tiles: list[tuple[str, np.ndarray]] = []
    for al, target in zip(alphas, targets, strict=True):
        out = blend_images(img_a, img_b, al)
        write_image(target, Image(out))
        console.info(f"wrote {target}")
        tiles.append((f"a={al:.2f}", out))
    if len(tiles) > 1:
        _write_sheet(folder / f"{stem}_sheet.png", tiles, sheet_tile)
