"""GPU throughput of sr's engine against plain PyTorch (how Real-ESRGAN runs), one script.

    python benchmarks/gpu.py            # on a CUDA machine; about 5-8 minutes
    python benchmarks/gpu.py --dry      # anywhere: tiny sizes on the CPU (CI runs it)

For RRDBNet-23 x4 and SRVGGNetCompact x4 (random weights: speed does not depend on them) it
prints input megapixels/s and achieved TFLOP/s (2 x multiply-adds per pixel, DESIGN.md's
counts) for:
  plain fp32 NCHW   net(x) under no_grad, the whole frame (Real-ESRGAN's default)
  sr <prec> whole   sr's Upscaler.stream: uint8 in, uint8 bands out, one tile
  sr <prec> tiled   the same with --tile (the overlap is the network's context)
for fp16 and bf16 (auto = fp16; bf16 where the device supports it), and a folder of 64
1920x1080 frames end to end through `sr upscale DIR OUT -j 2:1:2` with PNG output (SRVGG),
against a plain loop (decode, forward, encode in one thread). Ratios are against the plain
fp32 run of the same session. Nothing here is a test; ``--dry`` only proves that it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sr_cli.archs import build
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel, save_model

MACS_PER_PX = {"rrdbnet": 17_926_848, "srvgg": 619_200}
ROOT = Path(__file__).resolve().parents[1]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn, reps: int, dev: torch.device) -> float:
    fn()
    _sync(dev)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_net(arch: str, hp: dict, h: int, w: int, tile: int, dev: torch.device,
              precs: list[str], reps: int) -> None:
    torch.manual_seed(0)
    net, desc = build(arch, **hp)
    net.eval()
    model = LoadedModel(name=arch, net=net, desc=desc, metadata={"context": "40"}
                        if arch == "rrdbnet" else {}, source=None)
    if arch == "rrdbnet":
        import dataclasses

        model.desc = dataclasses.replace(desc, context=40)  # skip the probe: random weights
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    mpx = h * w / 1e6
    flops = 2 * MACS_PER_PX[arch] * h * w
    plain = net.to(dev)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(dev)

    def baseline() -> None:
        with torch.no_grad():
            y = plain(x).clamp_(0, 1).mul_(255).round_().byte().cpu()
            del y

    rows = [("plain fp32 NCHW", _time(baseline, reps, dev))]
    for prec in precs:
        for t in (0, tile):
            up = Upscaler(model, InferenceOptions(device=str(dev), precision=prec, tile=t))
            rows.append((f"sr {prec} {'whole' if t == 0 else f'tile {t}'}",
                         _time(lambda up=up: up.stream(img).collect(), reps, dev)))
    base = rows[0][1]
    print(f"\n{arch} {hp} input {w}x{h} ({mpx:.2f} MP) on {dev}")
    print(f"{'variant':22s} {'seconds':>8s} {'MP/s':>8s} {'TFLOP/s':>8s} {'vs plain':>8s}")
    for name, sec in rows:
        print(f"{name:22s} {sec:8.3f} {mpx / sec:8.3f} {flops / sec / 1e12:8.2f} "
              f"{base / sec:7.2f}x")
    plain.cpu()


def bench_folder(n: int, h: int, w: int, dev: torch.device, jobs: str,
                 in_process: bool = False) -> None:
    from sr_cli.io.images import Image, read_image, write_image

    with tempfile.TemporaryDirectory() as td:
        src, out, out2 = Path(td) / "in", Path(td) / "out", Path(td) / "plain"
        src.mkdir()
        out2.mkdir()
        rng = np.random.default_rng(0)
        frame = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        for i in range(n):
            write_image(src / f"f{i:03d}.png", Image(np.roll(frame, i, axis=1)))
        torch.manual_seed(0)
        net, desc = build("srvgg", num_feat=64, num_conv=16, upscale=4)
        weights = Path(td) / "srvgg.safetensors"
        save_model(weights, net, desc)
        args = ["upscale", str(src), str(out), "-q", "-m", str(weights), "--device",
                str(dev), "-j", jobs]
        t0 = time.perf_counter()
        if in_process:  # --dry: no second interpreter start-up
            from typer.testing import CliRunner

            from sr_cli.cli import app

            res = CliRunner().invoke(app, args)
            if res.exit_code != 0:
                raise SystemExit(f"sr upscale failed: {res.output}")
        else:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            subprocess.run([sys.executable, "-m", "sr_cli", *args], env=env, check=True)
        sr_s = time.perf_counter() - t0
        if len(list(out.iterdir())) != n:
            raise SystemExit("sr upscale did not write every frame")
        net = net.to(dev).eval()
        t0 = time.perf_counter()
        for f in sorted(src.iterdir()):
            x = torch.from_numpy(read_image(f).pixels.copy()).permute(2, 0, 1)[None].float()
            with torch.no_grad():
                y = net(x.div(255).to(dev)).clamp_(0, 1).mul_(255).round_().byte()
            write_image(out2 / f.name, Image(y[0].permute(1, 2, 0).cpu().numpy()))
        plain_s = time.perf_counter() - t0
        print(f"\nfolder of {n} {w}x{h} frames -> x4 PNG, SRVGG: sr -j {jobs} {sr_s:.1f}s "
              f"({n / sr_s:.2f} frames/s, incl. start-up), plain loop fp32 {plain_s:.1f}s "
              f"({n / plain_s:.2f} frames/s): {plain_s / sr_s:.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="tiny CPU run (CI)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    if dev.type == "cpu" and not args.dry:
        sys.exit("no CUDA device: use --dry for the CPU smoke run")
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    if args.dry:
        bench_net("srvgg", {"num_feat": 8, "num_conv": 2, "upscale": 4}, 24, 32, 16, dev,
                  ["fp32", "bf16"], 1)
        bench_net("rrdbnet", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 4},
                  24, 32, 16, dev, ["fp32"], 1)
        bench_folder(3, 16, 24, dev, "1:1:2", in_process=True)
        return
    precs = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    bench_net("rrdbnet", {"num_block": 23, "scale": 4}, 540, 960, 256, dev, precs, 3)
    bench_net("srvgg", {"num_conv": 16, "upscale": 4}, 1080, 1920, 512, dev, precs, 3)
    bench_folder(64, 1080, 1920, dev, "2:1:2")


if __name__ == "__main__":
    main()
