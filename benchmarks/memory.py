"""Peak resident memory of `sr upscale` against the size of its output.

    python benchmarks/memory.py [--quick] [--huge] [--threads N]

Each case runs `python -m sr_cli upscale` in its own process (so one case's memory cannot hide
another's) on a generated photo-like PNG and reads the child's peak RSS (``ru_maxrss`` from
``wait4``). Cases: SRVGGNetCompact x4 (the official realesr-animevideov3 weights from
../shared/weights when present, else random weights of the same shape: memory does not depend
on the values) at several input sizes; the same 1600x1600 case through the old whole-image
path is not available any more, so the printed "whole float32 output" column gives what that
path held at least (the float32 output alone). ``--huge`` adds a 4000x4000 -> 16000x16000 PNG
(-m bicubic -s 4; 768 MB of pixels), to show that output size is no longer the limit.
Nothing here is a test; the figures go in the README.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "realesr-animevideov3.pth"


def _photo(n: int, path: Path) -> None:
    from sr_cli.io.images import Image, write_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / max(1, n)
    base = np.stack([np.sin(9 * xx + k) * np.cos(7 * yy - k) for k in range(3)], axis=-1)
    img = np.clip(0.5 + 0.35 * base + 0.05 * rng.standard_normal(base.shape), 0, 1)
    write_image(path, Image((img * 255).round().astype(np.uint8)))


def _model(tmp: Path) -> str:
    if SHARED_WEIGHTS.is_file():
        return str(SHARED_WEIGHTS)
    import torch

    from sr_cli.archs import build
    from sr_cli.zoo import save_model

    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=64, num_conv=16, upscale=4, act_type="prelu")
    path = tmp / "srvgg-random.safetensors"
    save_model(path, net, desc)
    return str(path)


def _run(args: list[str], threads: int) -> tuple[float, int, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sr_cli", "upscale", "-q",
                             "--threads", str(threads), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024, proc.returncode


def _baseline_rss(threads: int) -> int:
    """Peak RSS of importing the CLI and loading torch: the floor of every case."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, "-c", "import torch, sr_cli.cli, sr_cli.infer.engine"],
                            env=env)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--huge", action="store_true", help="add the 16000x16000 PNG case")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    mb = 1024**2
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        model = _model(tmp)
        floor = _baseline_rss(args.threads)
        print(f"threads {args.threads}; model {Path(model).name}; python+torch import floor "
              f"{floor / mb:.0f} MB RSS")
        print(f"{'case':44s} {'out MP':>7s} {'out MB':>7s} {'f32 MB':>7s} {'peak MB':>8s} "
              f"{'s':>6s}")
        sizes = (200, 400) if args.quick else (400, 800, 1600)
        cases: list[tuple[str, int, list[str], int]] = []
        for n in sizes:
            for ext in (".png", ".tif"):
                if ext == ".tif" and n != sizes[-1]:
                    continue
                cases.append((f"srvgg x4 {n}x{n} -> {ext[1:]}", n, ["-m", model], 4))
            if n == sizes[-1]:
                cases.append((f"srvgg x4 {n}x{n} -s 3 -> png", n, ["-m", model, "-s", "3"], 3))
        if args.huge:
            cases.append(("bicubic -s 4 4000x4000 -> png", 4000, ["-m", "bicubic", "-s", "4"],
                          4))
        for name, n, extra, s in cases:
            src = tmp / f"in{n}.png"
            if not src.exists():
                _photo(n, src)
            ext = ".tif" if "tif" in name else ".png"
            dst = tmp / f"out{ext}"
            sec, rss, _ = _run([str(src), str(dst), "--overwrite", *extra], args.threads)
            out_px = (n * s) ** 2
            print(f"{name:44s} {out_px / 1e6:7.1f} {out_px * 3 / mb:7.0f} "
                  f"{out_px * 12 / mb:7.0f} {rss / mb:8.0f} {sec:6.1f}")
            dst.unlink()


if __name__ == "__main__":
    main()
