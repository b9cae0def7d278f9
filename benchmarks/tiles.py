"""Tiled against untiled output of a trained deep network on a real photo, and what tiling costs.

    SR_X4PLUS=/path/to/realesrgan-x4plus.safetensors OMP_NUM_THREADS=1 \\
        python benchmarks/tiles.py [--model M] [--image baboon] [--size 128] \\
        [--height H] [--tiles 32,64,96,128] [--context N] [--threads 1] [--profile R]

The model is ``--model``, else ``$SR_X4PLUS`` (the official RealESRGAN x4plus, RRDBNet-23, as
converted by ``sr models convert``: third-party weights, never stored in this repository), else
the shipped trained ``esrgan-psnr-x4`` (RRDBNet 6x32). Its tiling context is what the engine
uses: the file's ``context`` metadata, else measured from the weights now (the probe's time is
printed). ``--context N`` replaces it, to see what a smaller or larger overlap gives.

The input is a centre crop (``--size``, ``--height``) of a Set14 image's x2 bicubic LR version from
../shared/data (a real photo; baboon's fur carries influence furthest). It is upscaled whole
(``--tile 0``) and at each tile size through the streaming engine; printed per tile size:
max / mean absolute difference from the whole-image output in 8-bit levels, the share of output
samples that differ at all and by more than 1 level, the wall time and its ratio to the whole
image, and the plan's computed-pixel overhead (padded tile area / image area - 1). Then the
auto tile size (what users get without ``--tile``) for common frame sizes with its planned
overhead. Nothing here is a test; figures go in the README.

``--staged`` compares, in one run, the untiled network (``--tile 0``) with what auto tiling
gives: the one-pass tiles with the measured context (the path before staging; staging turned
off for that run) and the staged exact tiling (RRDBNet per dense block, and per RRDB), plus
one-pass and staged runs at the ``--tiles`` sizes. ``--budget-mb`` sets the memory budget
auto tiling works with (the engine is told twice that much is free; the CPU's lean tile budget
stays), so a modest crop tiles as a large image would; ``--repeat`` interleaves rounds
(0: only the frame plans).
Printed per run: best wall time and its ratio to the untiled run, planned computed-pixel
overhead, max / mean abs difference in 8-bit levels and the share of samples that differ.
Then both paths' planned overheads for common frame sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sr_cli import zoo
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.infer.tiling import plan_tiles
from sr_cli.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "Set14"
SHIPPED = ROOT / "models" / "esrgan-psnr-x4.safetensors"


def planned_overhead(context: int, multiple: int, tile: int, h: int, w: int) -> float:
    """Computed input pixels of a tile plan over the image's own, minus one."""
    tiles = plan_tiles(h, w, tile, context, multiple)
    return sum((t.py1 - t.py0) * (t.px1 - t.px0) for t in tiles) / (h * w) - 1


def crop(name: str, size: int, height: int | None = None) -> np.ndarray:
    path = SHARED / "LR_bicubic" / "X2" / f"{name}x2.png"
    if not path.is_file():
        sys.exit(f"{path} not found (../shared/data is needed)")
    px = read_image(path).pixels
    h, w = px.shape[:2]
    s = min(size, h, w)
    sh = min(height or s, h)
    y, x = (h - sh) // 2, (w - s) // 2
    return np.ascontiguousarray(px[y : y + sh, x : x + s, :3])


DISTANCES = (8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 90)


def cut_profile(lm: zoo.LoadedModel, image: str, r: int) -> None:
    """Error of a tile border on real content, cheaply: a 40-row strip of the photo is run
    whole and cut ``r`` px inside on the left and on the right (and the same for a 40-column
    strip, for vertical cuts); printed is the largest output change at distance >= d from the
    cut, in 8-bit levels. A tile with context d sees at most this from each of its borders
    (a corner adds two). The same for the context probe's synthetic image, for comparison."""
    from sr_cli.infer.context import PROBE_ROWS, _profile, _Transposed, probe_image

    net = lm.net.float().eval()
    s = max(1, lm.desc.scale)
    w = 2 * r + 8
    px = crop(image, w)
    if px.shape[0] < w:
        sys.exit(f"{image} is too small for --profile {r}")
    x = torch.from_numpy(px).permute(2, 0, 1)[None].float() / 255
    y0 = (w - PROBE_ROWS) // 2
    strips = {
        f"photo {image}": (x[..., y0 : y0 + PROBE_ROWS, :], x[..., :, y0 : y0 + PROBE_ROWS]),
        "synthetic probe": (probe_image(PROBE_ROWS, w, 3), probe_image(w, PROBE_ROWS, 3, seed=1)),
    }
    print(f"model {lm.name}: max output change (levels) at distance >= d (input px) from one "
          f"cut, {PROBE_ROWS}-px strips, cut {r} px inside")
    print(f"{'content':22s} " + " ".join(f"{d:>5d}" for d in DISTANCES if d < w - r))
    with torch.no_grad():
        for name, (hor, ver) in strips.items():
            t0 = time.perf_counter()
            prof = torch.maximum(_profile(net, hor, r, s),
                                 _profile(_Transposed(net), ver.transpose(-1, -2), r, s)) * 255
            tail = [float(prof[d:].max()) for d in DISTANCES if d < w - r]
            print(f"{name:22s} " + " ".join(f"{v:5.2f}" for v in tail)
                  + f"   ({time.perf_counter() - t0:.0f}s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("SR_X4PLUS") or str(SHIPPED))
    ap.add_argument("--image", default="baboon", help="Set14 image name")
    ap.add_argument("--size", type=int, default=128, help="LR crop side (pixels)")
    ap.add_argument("--height", type=int, default=None,
                    help="crop height (default --size; a low strip tests vertical cuts only, "
                    "cheaply)")
    ap.add_argument("--tiles", default="32,64,96,128")
    ap.add_argument("--context", type=int, default=None, help="override the context")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--staged", action="store_true",
                    help="untiled vs one-pass auto tiles vs staged exact tiles (see above)")
    ap.add_argument("--budget-mb", type=float, default=None,
                    help="with --staged: the auto tiling memory budget (MiB)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --staged: interleaved rounds; the best time is printed")
    ap.add_argument("--profile", type=int, default=0, metavar="R",
                    help="instead of whole tiled runs: the error profile of one cut R px "
                    "inside a 40-row strip of the photo (and of the probe's synthetic image)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = zoo.load_model(args.model)
    desc = lm.desc
    m = max(1, desc.size_multiple)
    if args.profile:
        cut_profile(lm, args.image, args.profile)
        return
    if args.context is not None:
        ctx, how = args.context, "given"
    elif desc.exact_context or "context" in (lm.metadata or {}):
        ctx, how = int(desc.context), "exact" if desc.exact_context else "file metadata"
    else:
        from sr_cli.infer.context import measure_context

        t0 = time.perf_counter()
        ctx = measure_context(lm.net.float().eval(), desc)
        how = f"measured now, probe {time.perf_counter() - t0:.1f}s"
    lm = dataclasses.replace(lm, desc=dataclasses.replace(desc, context=ctx),
                             metadata={**(lm.metadata or {}), "context": str(ctx)})
    img = crop(args.image, args.size, args.height)
    h, w = img.shape[:2]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model {lm.name} "
          f"({desc.arch} {desc.hparams.get('num_block', '')}x{desc.hparams.get('num_feat', '')}"
          f" x{desc.scale}); context {ctx}px ({how})")
    print(f"input: Set14 {args.image} x2 LR, centre {w}x{h} crop")

    if args.staged:
        staged_report(lm, img, ctx, args)
        return

    def run(tile: int) -> tuple[np.ndarray, float]:
        up = Upscaler(lm, InferenceOptions(device="cpu", precision="fp32", tile=tile))
        t0 = time.perf_counter()
        out = up.upscale_array(img)
        return out, time.perf_counter() - t0

    whole, t_whole = run(0)
    print(f"{'tile':>6s} {'max':>5s} {'mean':>8s} {'differ':>7s} {'>1 lvl':>7s} {'s':>7s} "
          f"{'time':>6s} {'plan':>7s}")
    print(f"{'whole':>6s} {0:5d} {0:8.4f} {0:7.2%} {0:7.2%} {t_whole:7.1f} {1:5.2f}x {0:+7.1%}")
    for tile in (int(t) for t in args.tiles.split(",")):
        out, sec = run(tile)
        d = np.abs(out.astype(np.int16) - whole.astype(np.int16))
        print(f"{tile:6d} {int(d.max()):5d} {float(d.mean()):8.4f} {float((d > 0).mean()):7.2%} "
              f"{float((d > 1).mean()):7.2%} {sec:7.1f} {sec / t_whole:5.2f}x "
              f"{planned_overhead(ctx, m, tile, h, w):+7.1%}")
    up = Upscaler(lm, InferenceOptions(device="cpu", precision="fp32"))
    for fw, fh in ((1920, 1080), (3840, 2160), (7680, 4320)):
        t = up.auto_tile(fh, fw)
        over = planned_overhead(ctx, m, t, fh, fw)
        print(f"auto tile for {fw}x{fh}: {t or 'whole image'}; planned overhead {over:+.1%}")


def staged_report(lm: zoo.LoadedModel, img: np.ndarray, ctx: int,
                  args: argparse.Namespace) -> None:
    from sr_cli.infer import engine
    from sr_cli.infer.device import free_memory_bytes

    h, w = img.shape[:2]
    m = max(1, lm.desc.size_multiple)
    free = free_memory_bytes(torch.device("cpu"))
    frac = 0.5
    if args.budget_mb is not None:  # pinned: the free memory of a loaded machine drifts
        free = 2 * args.budget_mb * 2**20
        engine.free_memory_bytes = lambda device: free  # type: ignore[assignment]
    print(f"auto tiling budget {min(free * frac, 8 * 2**30) / 2**20:.0f} MiB "
          f"(memory_fraction {frac:.3g} of {free / 2**30:.1f} GiB free)")

    def upscaler(tile: int | None, staged: bool, per: str = "rdb") -> Upscaler:
        engine.STAGED_PER = per
        up = Upscaler(lm, InferenceOptions(device="cpu", precision="fp32", tile=tile,
                                           memory_fraction=frac))
        if not staged:
            up.stages_exactly = lambda: False  # type: ignore[method-assign]
        return up

    def plan(up: Upscaler, tile: int | None, fh: int, fw: int) -> tuple[str, float]:
        lay = up.staged_layout(fh, fw, tile=tile)
        if lay is not None:
            return (f"staged rows {lay.rows} cols {lay.cols} strips {len(lay.strips)} "
                    f"tail {lay.tail_tile or 'strip'}", lay.overhead())
        t = up.auto_tile(fh, fw) if tile is None else tile
        return f"tile {t or 'whole'}", planned_overhead(ctx, m, t, fh, fw)

    runs: list[tuple[str, int | None, bool, str]] = [
        ("untiled (--tile 0)", 0, False, "rdb"),
        ("auto, one-pass tiles", None, False, "rdb"),
        ("auto, staged per RDB", None, True, "rdb"),
        ("auto, staged per RRDB", None, True, "rrdb"),
    ]
    for t in (int(v) for v in args.tiles.split(",")):
        runs += [(f"--tile {t}, one-pass", t, False, "rdb"),
                 (f"--tile {t}, staged per RDB", t, True, "rdb")]
    outs: dict[str, np.ndarray] = {}
    secs: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for rep in range(args.repeat):  # interleaved rounds: a loaded machine's drift hits all
        for name, tile, staged, per in runs:
            up = upscaler(tile, staged, per)
            t0 = time.perf_counter()
            out = up.upscale_array(img)
            secs[name].append(time.perf_counter() - t0)
            outs.setdefault(name, out)
        print(f"round {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    if args.repeat < 1:
        runs = []  # --repeat 0: only the frame plans below
    else:
        whole = outs[runs[0][0]]
        t_whole = min(secs[runs[0][0]])
        print(f"{'run':30s} {'s':>7s} {'time':>6s} {'planned':>8s} {'max':>4s} {'mean':>7s} "
              f"{'differ':>7s}  plan (time: best of {args.repeat}, ratio to untiled)")
    for name, tile, staged, per in runs:
        engine.STAGED_PER = per
        what, over = plan(upscaler(tile, staged, per), tile, h, w)
        sec = min(secs[name])
        d = np.abs(outs[name].astype(np.int16) - whole.astype(np.int16))
        print(f"{name:30s} {sec:7.1f} {sec / t_whole:5.2f}x {over:+8.1%} {int(d.max()):4d} "
              f"{float(d.mean()):7.4f} {float((d > 0).mean()):7.3%}  {what}", flush=True)
    engine.STAGED_PER = "rdb"
    engine.free_memory_bytes = free_memory_bytes
    frac = 0.5
    print("planned overhead of auto tiling for frames (trunk stages for staged; the default "
          "budget):")
    for fw, fh in ((1920, 1080), (3840, 2160), (7680, 4320)):
        old_what, old = plan(upscaler(None, False), None, fh, fw)
        new_what, new = plan(upscaler(None, True), None, fh, fw)
        print(f"  {fw}x{fh}: one-pass {old:+.1%} ({old_what}); staged {new:+.1%} ({new_what})")


if __name__ == "__main__":
    main()
