"""Upscaling throughput on this machine: sr's engine against a plain PyTorch forward.

    python benchmarks/upscale.py [--quick]

For RRDBNet-23 x4 and SRVGGNetCompact x4 (random weights: speed does not depend on them) it
prints input megapixels/s and achieved GFLOP/s (2 x multiply-adds, from DESIGN.md's per-pixel
counts) for:
  baseline   plain NCHW fp32 forward under torch.no_grad (how Real-ESRGAN runs, tile 0)
  sr fp32    sr's Upscaler.stream, fp32, channels_last, whole image (uint8 in, uint8 bands out)
  sr bf16    sr's Upscaler.stream, --precision bf16 (CPU)
  sr tiled   sr's Upscaler.stream at a forced tile size vs whole image (tiling overhead)
RRDBNet's context comes from the weights (measured); random weights are given 40 px here, and
the last lines print the measured context and tiling overhead of the shipped trained
esrgan-psnr-x4.
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
    if not desc.exact_context:  # random weights: a fixed stand-in for the measured context
        import dataclasses

        desc = dataclasses.replace(desc, context=40)
    model = LoadedModel(name=arch, net=net, desc=desc,
                        metadata={"context": str(desc.context)}, source=None)
    x = torch.rand(1, 3, size, size)
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    mpx = size * size / 1e6
    flops = 2 * MACS_PER_PX[arch] * size * size

    def baseline() -> None:
        with torch.no_grad():
            net(x).clamp_(0, 1).mul_(255).round_().byte()

    rows = [("baseline NCHW fp32", _time(baseline, reps))]
    for prec in ("fp32", "bf16"):
        up = Upscaler(model, InferenceOptions(device="cpu", precision=prec, tile=0))
        rows.append((f"sr {prec} whole", _time(lambda up=up: up.stream(img).collect(), reps)))
    up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile))
    rows.append((f"sr fp32 tile {tile}", _time(lambda: up.stream(img).collect(), reps)))
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


def trained_rrdb() -> None:
    """Measured context and tiling overhead of the shipped trained RRDBNet."""
    from pathlib import Path

    from sr_cli import zoo
    from sr_cli.infer.context import measure_context

    path = Path(__file__).resolve().parents[1] / "models" / "esrgan-psnr-x4.safetensors"
    if not path.is_file():
        return
    lm = zoo.load_model(str(path))
    t0 = time.perf_counter()
    ctx = measure_context(lm.net, lm.desc)
    probe = time.perf_counter() - t0
    print(f"\ntrained {path.stem} (RRDBNet 6x32): measured context {ctx}px "
          f"(metadata {lm.metadata.get('context')}, probe {probe:.1f}s)")
    for t in (32, 64, 96, 128, 256):
        print(f"  tile {t}: overhead {_planned_overhead(lm.desc, t, 1080, 1920):+.1%} computed "
              f"pixels (1920x1080)")
    up = Upscaler(lm, InferenceOptions(device="cpu", precision="fp32"))
    t = up.auto_tile(1080, 1920)
    print(f"  auto tile {t or 'whole'}: overhead {_planned_overhead(lm.desc, t, 1080, 1920):+.1%}")


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
    trained_rrdb()


if __name__ == "__main__":
    main()
