"""Throughput of the Real-ESRGAN degradation (x4, 400x400 crops): one image at a time and batched.

Usage: python benchmarks/degrade.py [--batch 16] [--images 64] [--threads N]
                                    [--jpeg-model diffjpeg|libjpeg]
Prints images/s for (a) one image per call, like `sr degrade` on files, and (b) batches through
the torch API used for training (`realesrgan_batch`). Uses ../shared/data when present (Set14
crops), else synthetic images. The sampled degradations (seed 0) are the same from run to run,
so figures of two versions of the code are comparable.

Mind the load: with another process busy on one of the 2 cores, torch's 2 intra-op threads
spend most of their time waiting for each other (every parallel op waits for the descheduled
thread); the figures then drop 3-5x, and `--threads 1` is faster. The load average is printed
before and after the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

from sr_cli.degrade.config import RealESRGANConfig  # noqa: E402
from sr_cli.degrade.pipeline import realesrgan_batch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Set14" / "HR"


def crops(n: int) -> torch.Tensor:
    imgs = []
    if SHARED.is_dir():
        import imageio.v3 as iio

        for p in sorted(SHARED.glob("*.png")):
            a = iio.imread(p)
            if a.ndim == 3 and min(a.shape[:2]) >= 400:
                imgs.append(a[:400, :400, :3])
    rng = np.random.default_rng(0)
    while len(imgs) < n:
        imgs.append((rng.random((400, 400, 3)) * 255).astype(np.uint8) if not imgs
                    else imgs[len(imgs) % max(1, len(imgs))])
    t = torch.stack([torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)
                     for a in imgs[:n]])
    return t.contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--jpeg-backend", default="torch", choices=["torch", "pillow"])
    ap.add_argument("--jpeg-model", default="diffjpeg", choices=["diffjpeg", "libjpeg"])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = RealESRGANConfig(jpeg_backend=a.jpeg_backend, jpeg_model=a.jpeg_model)
    x = crops(a.images)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gen = torch.Generator().manual_seed(0)
    realesrgan_batch(x[:2], 4, cfg, gen)  # warm-up
    with torch.inference_mode():
        t0 = time.perf_counter()
        for i in range(a.images):
            realesrgan_batch(x[i : i + 1], 4, cfg, gen)
        single = a.images / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, a.images, a.batch):
            realesrgan_batch(x[i : i + a.batch], 4, cfg, gen)
        batched = a.images / (time.perf_counter() - t0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"realesrgan x4 400x400, {a.images} images, threads={torch.get_num_threads()}, "
          f"jpeg={a.jpeg_backend}/{a.jpeg_model}, "
          f"load average {load0:.1f} before, {load:.1f} after")
    print(f"one at a time : {single:6.2f} images/s ({1000 / single:.0f} ms/image)")
    print(f"batched ({a.batch:3d}) : {batched:6.2f} images/s ({1000 / batched:.0f} ms/image)")


if __name__ == "__main__":
    main()
