"""Scaling out on this machine: `sr upscale` under torchrun with 1 and 2 ranks (1 thread each).

    python benchmarks/scale.py [--images 24] [--size 64] [--model srresnet-x4]

Writes ``--images`` generated images to a temporary folder, then runs
``torchrun --standalone --nproc-per-node N -m sr_cli upscale -m MODEL IN OUT --json`` for
N = 1 and 2 with OMP_NUM_THREADS=1, and prints for each:
  work images/s   images / the slowest rank's processing time (the summary's "seconds",
                  model loading and torch start-up excluded): what the split itself gains
  end-to-end      images / the launcher's wall time (start-up of torch in every rank included)
and the 2-rank / 1-rank ratios measured in the same run. On a machine whose cores are busy
with other work the ratio is below what idle cores give: say so when quoting it. The two
runs' outputs are compared byte for byte. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = 0.5 + 0.4 * np.sin((6 + i) * xx[..., None] + np.arange(3) + 3 * yy[..., None])
        img = np.clip(base + 0.05 * rng.standard_normal((size, size, 3)), 0, 1)
        iio.imwrite(folder / f"img{i:04d}.png", np.round(img * 255).astype(np.uint8))


def run(nproc: int, src: Path, dst: Path, model: str) -> tuple[float, float, dict]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(nproc), "-m", "sr_cli", "upscale", "-m", model, str(src), str(dst), "--json",
           "-q", "--device", "cpu"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"torchrun with {nproc} rank(s) failed:\n{res.stderr[-2000:]}")
    summary = json.loads(res.stdout)
    return wall, float(summary["seconds"]), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="srresnet-x4")
    args = ap.parse_args()
    print(f"sr upscale -m {args.model}, {args.images} images of {args.size}x{args.size}, "
          f"torchrun on {os.cpu_count()} visible core(s), 1 thread per rank (gloo)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        make_images(src, args.images, args.size)
        rows = []
        for n in (1, 2):
            wall, work, summary = run(n, src, Path(tmp) / f"out{n}", args.model)
            assert summary["ok"] == args.images, summary
            rows.append((n, args.images / work, args.images / wall))
            print(f"  {n} rank(s): work {args.images / work:7.2f} images/s "
                  f"({work:.2f} s)   end-to-end {args.images / wall:6.2f} images/s "
                  f"({wall:.1f} s)")
        same = all((Path(tmp) / "out1" / p.name).read_bytes() == p.read_bytes()
                   for p in (Path(tmp) / "out2").iterdir())
    (_, w1, e1), (_, w2, e2) = rows
    print(f"  ratio 2 ranks / 1 rank: work x{w2 / w1:.2f}, end-to-end x{e2 / e1:.2f}; "
          f"outputs identical: {same}")


if __name__ == "__main__":
    main()
