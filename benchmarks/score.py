"""Seconds per 512x512 image for each `sr score` metric (CPU unless --device says otherwise).

Usage: python benchmarks/score.py [--repeat 5] [--threads N] [--device cpu] [--ma-model model.mat]

Prints one line per metric: median wall-clock seconds for one 512x512 RGB image, including
the colour conversion. Ma/PI need Ma et al.'s model.mat (not shipped); without it, Ma is timed
with a synthetic one-split forest, which measures the feature extraction (the real model's
2000-tree forests add only tree walks).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_cli.metrics.color import to_channels  # noqa: E402
from sr_cli.metrics.niqe import load_niqe_params, niqe  # noqa: E402
from sr_cli.metrics.psnr import psnr  # noqa: E402
from sr_cli.metrics.ssim import ssim  # noqa: E402


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    base = 0.5 + 0.3 * np.sin(12 * xx) * np.cos(9 * yy)
    img = base[..., None] + 0.08 * rng.standard_normal((512, 512, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _synthetic_model(path: Path) -> None:
    import scipy.io

    def forest() -> dict:
        z = np.zeros((3, 1))
        return {"lDau": z + [[2], [0], [0]], "rDau": z + [[3], [0], [0]],
                "nodestatus": z + [[-3], [-1], [-1]], "nrnodes": 3, "upper": z,
                "avnode": z + [[0], [1], [2]], "mbest": z + [[1], [0], [0]],
                "ndtree": np.array([3]), "ntree": 1}

    rf = np.empty((3, 1), dtype=object)
    for i in range(3):
        rf[i, 0] = forest()
    scipy.io.savemat(path, {"model": {"rf": rf, "linear": np.ones((4, 1))}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ma-model", default=None)
    ap.add_argument("--skip-ma", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sr_px, hr_px = _image(0), _image(1)
    params = load_niqe_params()

    def t_psnr():
        psnr(to_channels(sr_px, "y").to(dev), to_channels(hr_px, "y").to(dev))

    def t_ssim():
        ssim(to_channels(sr_px, "y").to(dev), to_channels(hr_px, "y").to(dev))

    def t_niqe():
        niqe(to_channels(sr_px, "y", round_8bit=True).to(dev), params)

    jobs = [("psnr", t_psnr), ("ssim", t_ssim), ("niqe", t_niqe)]
    if not args.skip_ma:
        from sr_cli.metrics.ma import load_ma_model, ma_score

        if args.ma_model:
            model = load_ma_model(args.ma_model)
            label = "ma"
        else:
            tmp = Path(tempfile.mkdtemp()) / "synthetic.mat"
            _synthetic_model(tmp)
            model = load_ma_model(tmp)
            label = "ma (features; synthetic forest)"

        def t_ma():
            ma_score(to_channels(sr_px, "y", round_8bit=True).to(dev), model)

        jobs.append((label, t_ma))
    print(f"sr score metrics, 512x512 RGB, device={dev}, torch threads={torch.get_num_threads()}")
    for name, fn in jobs:
        fn()  # warm-up (tables, caches)
        reps = 1 if name.startswith("ma") else args.repeat
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name:<32} {statistics.median(times):8.3f} s/image")


if __name__ == "__main__":
    main()
