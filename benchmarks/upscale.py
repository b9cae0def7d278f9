"""Upscaling throughput on this machine: sr's engine against a plain PyTorch forward.

    python benchmarks/upscale.py [--quick]

For RRDBNet-23 x4 and SRVGGNetCompact x4 (random weights: speed does not depend on them) it
prints input megapixels/s and achieved GFLOP/s (2 x multiply-adds, from DESIGN.md's per-pixel
counts) for:
  baseline   plain NCHW fp32 forward under torch.no_grad (how Real-ESRGAN runs, tile 0)
  sr fp32    sr's Upscaler, fp32, channels_last, whole image
  sr bf16    sr's Upscaler, --precision bf16 (CPU)
  sr tiled   sr's Upscaler at a forced tile size vs whole image (tiling overhead)
Ratios are against the baseline measured in the same run. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sr_cli.archs import build
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel

MACS_PER_PX = {"rrdbnet": 17_926_848, "srvgg": 619_200}


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(arch: str, hp: dict, size: int, tile: int, reps: int) -> None:
    torch.manual_seed(0)
    net, desc = build(arch, **hp)
    net.eval()
    model = LoadedModel(name=arch, net=net, desc=desc, metadata={}, source=None)
    x = torch.rand(1, 3, size, size)
    mpx = size * size / 1e6
    flops = 2 * MACS_PER_PX[arch] * size * size

    def baseline() -> None:
        with torch.no_grad():
            net(x)

    rows = [("baseline NCHW fp32", _time(baseline, reps))]
    for prec in ("fp32", "bf16"):
        up = Upscaler(model, InferenceOptions(device="cpu", precision=prec, tile=0))
        rows.append((f"sr {prec} whole", _time(lambda up=up: up.run(x), reps)))
    up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile))
    rows.append((f"sr fp32 tile {tile}", _time(lambda: up.run(x), reps)))
    base = rows[0][1]
    print(f"\n{arch} {hp} input {size}x{size} ({mpx:.3f} MP), context {desc.context}px")
    print(f"{'variant':24s} {'seconds':>8s} {'MP/s':>8s} {'GFLOP/s':>8s} {'vs base':>8s}")
    for name, sec in rows:
        print(f"{name:24s} {sec:8.3f} {mpx / sec:8.4f} {flops / sec / 1e9:8.1f} "
              f"{base / sec:7.2f}x")
    whole = rows[1][1]
    planned = _planned_overhead(desc, tile, size, size)
    print(f"tiling overhead at tile {tile}: measured {rows[-1][1] / whole - 1:+.1%}, "
          f"computed-pixel ratio of the plan {planned:+.1%}")
    # At the auto tile size (what users get), images large enough to be tiled at all take
    # minutes per image here, so report the plan's computed-pixel overhead, which the measured
    # line above shows to predict the time overhead.
    up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32"))
    for w, h in ((1920, 1080), (3840, 2160), (7680, 4320)):
        t = up.auto_tile(h, w)
        print(f"auto tile for {w}x{h}: {t or 'whole image'}; "
              f"overhead {_planned_overhead(desc, t, h, w):+.1%} computed pixels")


def _planned_overhead(desc, tile: int, h: int, w: int) -> float:
    from sr_cli.infer.tiling import plan_tiles

    tiles = plan_tiles(h, w, tile, desc.context, max(1, desc.size_multiple))
    computed = sum((t.py1 - t.py0) * (t.px1 - t.px0) for t in tiles)
    return computed / (h * w) - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, one repetition")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    reps = 1 if args.quick else 3
    bench("srvgg", {"num_conv": 16, "upscale": 4}, 128 if args.quick else 256,
          96 if args.quick else 192, reps)
    bench("rrdbnet", {"num_block": 23, "scale": 4}, 48 if args.quick else 96,
          32 if args.quick else 64, reps)


if __name__ == "__main__":
    main()
