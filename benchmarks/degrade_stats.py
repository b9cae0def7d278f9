"""PSNR statistics of the Real-ESRGAN x4 degradation against the clean MATLAB-bicubic LR.

For each 400x400 natural crop (by default the first 4 BSDS500 test images of
../shared/data/train/bsds500/test, their short side padded to 400 by reflection and the long
side centre-cropped, as Real-ESRGAN's dataset pads/crops to 400; or Set14 images given with
--images), run the realesrgan preset with 60 seeds (one image at a time, the CLI path) and
compute PSNR(LR, imresize(HR, 1/4)) on RGB 0..255 (the clean LR is MATLAB bicubic of the same
crop, rounded to 8 bits). Prints mean, std and quantiles per image.

Usage: python benchmarks/degrade_stats.py [--seeds 60] [--bsds 4] [--images lenna baboon]
                                          [--jpeg-backend diffjpeg|torch|pillow]
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


def crop400(a: np.ndarray) -> np.ndarray:
    """Pad (reflect-101, bottom/right, as cv2.BORDER_REFLECT_101) then centre-crop to 400."""
    h, w = a.shape[:2]
    if h < 400 or w < 400:
        a = np.pad(a, ((0, max(0, 400 - h)), (0, max(0, 400 - w)), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    t, left = (h - 400) // 2, (w - 400) // 2
    return a[t : t + 400, left : left + 400, :3]


def load(a: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    out = []
    bsds = DATA / "train" / "bsds500" / "test"
    if a.bsds and bsds.is_dir():
        for p in sorted(bsds.glob("*.jpg"))[: a.bsds]:
            out.append((p.name, crop400(iio.imread(p))))
    for name in a.images:
        out.append((f"{name}.png", crop400(iio.imread(DATA / "Set14" / "HR" / f"{name}.png"))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--jpeg-backend", default=None, choices=["diffjpeg", "torch", "pillow"])
    ap.add_argument("--bsds", type=int, default=4, help="first N BSDS500 test images")
    ap.add_argument("--images", nargs="*", default=[], help="Set14 names, e.g. lenna baboon")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = RealESRGANConfig()
    if a.jpeg_backend:
        cfg.jpeg_backend = a.jpeg_backend
    allp: list[float] = []
    for name, hr in load(a):
        x = torch.from_numpy(hr.astype(np.float32) / 255).permute(2, 0, 1)[None]
        clean = imresize(torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1), 0.25,
                         quantize=255)
        vals = []
        for s in range(a.seeds):
            p = sample_realesrgan(cfg, make_generator(derive_seed(s, name)))
            lr, _ = apply_realesrgan(x, [p], 4, cfg)
            vals.append(psnr(torch.round(lr[0].double() * 255), clean))
        v = np.array(vals)
        allp += vals
        q = np.quantile(v, [0.1, 0.5, 0.9])
        print(f"{name:12s} n={len(v)} PSNR mean {v.mean():6.2f} dB  std {v.std(ddof=1):5.2f}  "
              f"p10 {q[0]:6.2f}  median {q[1]:6.2f}  p90 {q[2]:6.2f}")
    v = np.array(allp)
    print(f"{'all':12s} n={len(v)} PSNR mean {v.mean():6.2f} dB  std {v.std(ddof=1):5.2f}")


if __name__ == "__main__":
    main()
