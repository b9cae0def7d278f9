"""Training throughput per recipe: prints samples/s (HR patches per second) on this machine.

Runs each recipe's real training loop (data loading, on-the-fly degradation, generator,
discriminator, perceptual VGG19, EMA) for a few steps on generated images and times the steps
after a warm-up. Published networks and patch sizes by default; ``--tiny`` shrinks them.

Usage:
    python benchmarks/train.py                       # all recipes, published sizes, CPU
    python benchmarks/train.py --tiny --steps 4      # quick smoke numbers
    python benchmarks/train.py --recipes srcnn,esrgan-psnr --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _images(folder: Path, n: int, size: int) -> None:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin((3 + c + i) * xx * 6) * np.cos((2 + c) * yy * 5) for c in range(3)],
                        -1) * 0.4 + 0.5
        img = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
        iio.imwrite(folder / f"{i}.png", (img * 255).round().astype(np.uint8))


def main() -> None:
    from sr_cli.archs import get_arch
    from sr_cli.train.config import apply_overrides
    from sr_cli.train.loop import RunOptions, run_training
    from sr_cli.train.recipes import RECIPES, recipe_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up step)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="tiny networks and patches")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _images(data, 4, 400)
        dev = args.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"# sr train throughput: device={dev}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, batch {args.batch}, x{args.scale}, "
              f"{'tiny' if args.tiny else 'published'} networks")
        print(f"{'recipe':<20} {'arch':<9} {'patch':>5} {'s/step':>8} {'samples/s':>10}")
        for name in args.recipes.split(","):
            scale = 3 if name == "srcnn" and args.scale == 4 else args.scale
            cfg = recipe_config(name, scale)
            over: dict = {"batch_size": args.batch, "steps": 1 + args.steps,
                          "log_every": 10_000, "ckpt_every": 10_000, "val_every": 10_000}
            if cfg.pool_size:
                over["pool_size"] = args.batch * 2
            if args.tiny:
                tiny = dict(get_arch(cfg.arch).extra.get("tiny", {}))
                tiny.pop("scale", None)
                tiny.pop("upscale", None)
                over["arch_params"] = tiny
                if cfg.arch != "srcnn":  # SRCNN's 33x33 sub-images are small already
                    over["patch_size"] = 80 if cfg.degradation == "realesrgan" else 32
                over["d_features"] = 8
            cfg = apply_overrides(cfg, over, "benchmark")
            stamps: list[float] = []

            def progress(done: int, total: int, info: dict, stamps: list[float] = stamps) -> None:
                stamps.append(time.perf_counter())

            out = Path(tmp) / f"run-{name}"
            run_training(cfg, RunOptions(data=data, out=out, perceptual="random", device=dev),
                         progress=progress)
            per_step = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
            print(f"{name:<20} {cfg.arch:<9} {cfg.patch_size:>5} {per_step:>8.3f} "
                  f"{cfg.batch_size / per_step:>10.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
