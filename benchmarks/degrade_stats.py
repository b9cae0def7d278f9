"""PSNR statistics of the Real-ESRGAN x4 degradation against the clean MATLAB-bicubic LR.

For each 400x400 natural crop (Set14 lenna, baboon, barbara; and BSDS500 test images padded
to 400 by reflection as Real-ESRGAN's dataset does when --bsds N is given), run the
realesrgan preset with 60 seeds (one image at a time, the CLI path) and compute
PSNR(LR, imresize(HR, 1/4)) on RGB 0..255. Prints mean, std and quantiles per image.

Usage: python benchmarks/degrade_stats.py [--seeds 60] [--jpeg-backend torch|pillow]
No reference implementation is installed here; compare the figures with those of BasicSR's
pipeline run elsewhere on the same crops.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from sr_cli.degrade.config import RealESRGANConfig
from sr_cli.degrade.pipeline import (
    apply_realesrgan,
    derive_seed,
    make_generator,
    sample_realesrgan,
)
from sr_cli.degrade.resize import imresize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--jpeg-backend", default="torch", choices=["torch", "pillow"])
    ap.add_argument("--images", nargs="*", default=["lenna", "baboon", "barbara"])
    a = ap.parse_args()
    cfg = RealESRGANConfig(jpeg_backend=a.jpeg_backend)
    allp: list[float] = []
    for name in a.images:
        hr = iio.imread(DATA / "Set14" / "HR" / f"{name}.png")[:400, :400, :3]
        x = torch.from_numpy(hr.astype(np.float32) / 255).permute(2, 0, 1)[None]
        clean = imresize(torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1), 0.25,
                         quantize=255)
        vals = []
        for s in range(a.seeds):
            p = sample_realesrgan(cfg, make_generator(derive_seed(s, f"{name}.png")))
            lr, _ = apply_realesrgan(x, [p], 4, cfg)
            vals.append(psnr(torch.round(lr[0].double() * 255), clean))
        v = np.array(vals)
        allp += vals
        q = np.quantile(v, [0.1, 0.5, 0.9])
        print(f"{name:8s} n={len(v)} PSNR mean {v.mean():6.2f} dB  std {v.std(ddof=1):5.2f}  "
              f"p10 {q[0]:6.2f}  median {q[1]:6.2f}  p90 {q[2]:6.2f}")
    v = np.array(allp)
    print(f"{'all':8s} n={len(v)} PSNR mean {v.mean():6.2f} dB  std {v.std(ddof=1):5.2f}")


if __name__ == "__main__":
    main()
