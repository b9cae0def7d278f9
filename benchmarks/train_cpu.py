"""The README's training example on a CPU: peak memory, time to the first step, Ctrl-C latency.

Runs ``python -m sr_cli train RECIPE --data DATA --scale 4 -o RUN --steps N`` in a child
process (stderr is not a terminal, so progress comes as lines), and prints:

- peak RSS of the child (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, one child per run)
  and its CPU seconds (user + system: on a shared machine, wall time mostly measures the load);
- seconds from start to the ``step 1/...`` line (imports, data decoding, model build, step 1),
  as wall time and as the child's CPU time (user + system from ``/proc/PID/stat`` when the
  line arrives; on a loaded machine the CPU figure is the one that compares across runs);
- seconds per step from the speed note printed after step 3;
- seconds from SIGINT (sent once the speed note appears) to exit, the exit code, and whether
  RUN/model.safetensors and checkpoint.pt exist afterwards.

Usage::

    python benchmarks/train_cpu.py --data ../shared/data/train            # the README example
    python benchmarks/train_cpu.py --data small/ --published              # the GPU recipe
    python benchmarks/train_cpu.py --make-small /tmp/hr8                  # 8 generated images
    python benchmarks/train_cpu.py --data DIR --phases     # CPU seconds of each start-up phase

``--phases`` runs the start-up of ``sr train realesrnet --scale 4`` (CPU-sized) in this process,
phase by phase, with the loop's own pieces, and prints the CPU (``time.process_time``) and wall
seconds of each: imports, listing/checking the data, building the generator, its EMA copy,
the first ``torch.optim.Adam`` (imports ``torch._dynamo``), the degrader, the first two steps
split into forward and backward, the export's tiling-context probe, and writing the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_small(folder: Path, n: int = 8) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        yy, xx = np.mgrid[0:320, 0:480].astype(np.float64)
        img = np.stack([128 + 100 * np.sin(xx / (5 + i + k) + k) * np.cos(yy / (9 + k))
                        for k in range(3)], axis=-1) + rng.normal(0, 8, (320, 480, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(recipe: str, data: Path, steps: int | None, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "sr_cli", "train", recipe, "--data", str(data),
               "--scale", "4", "-o", str(out), *(["--steps", str(steps)] if steps else []),
               *extra]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        first = first_cpu = per_step = sigint_at = None
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            print("  |", line.rstrip(), file=sys.stderr)
            if first is None and re.match(r"sr: step 1/|step 1/", line.strip()):
                first = time.perf_counter() - t0
                first_cpu = _cpu_seconds(proc.pid)
            m = re.search(r"speed: ([0-9.]+) s/step", line)
            if m and sigint_at is None:
                per_step = float(m.group(1))
                sigint_at = time.perf_counter()
                proc.send_signal(signal.SIGINT)
        code = proc.wait()
        stop_s = time.perf_counter() - sigint_at if sigint_at is not None else None
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kb = usage.ru_maxrss
        return {"cmd": " ".join(cmd[1:]), "cpu_s": usage.ru_utime + usage.ru_stime,
                "first_step_s": first, "first_step_cpu_s": first_cpu, "s_per_step": per_step,
                "stop_after_sigint_s": stop_s, "exit": code, "peak_rss_gb": peak_kb / 2**20,
                "model": (out / "model.safetensors").exists(),
                "checkpoint": (out / "checkpoint.pt").exists()}


def phases(data: Path) -> None:
    import io
    import time

    cpu, wall = time.process_time, time.perf_counter
    mark = [cpu(), wall()]

    def lap(name: str) -> None:
        c, w = cpu(), wall()
        print(f"{name:34s} cpu {c - mark[0]:7.2f} s   wall {w - mark[1]:7.2f} s", flush=True)
        mark[:] = [cpu(), wall()]

    import torch

    from sr_cli.train.cpu import cpu_sized
    from sr_cli.train.data import PairSource, TrainSet
    from sr_cli.train.ema import EMA
    from sr_cli.train.loop import _Degrader, _Pool, _step_generator, build_generator
    from sr_cli.train.losses import pixel_loss
    from sr_cli.train.recipes import recipe_config
    lap("imports (torch, sr_cli.train)")
    cfg, _ = cpu_sized(recipe_config("realesrnet", 4), set())
    src = PairSource.build(data, None, scale=4, patch_size=cfg.patch_size,
                           degradation=cfg.degradation, cache_mb=cfg.cache_mb, lazy=True)
    lap(f"data: {src.count} images checked")
    torch.manual_seed(0)
    net, desc = build_generator(cfg)
    net.train()
    lap("build RRDBNet-23")
    ema = EMA(net, cfg.ema)
    lap("EMA copy")
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    lap("first torch.optim.Adam")
    deg, pool = _Degrader(cfg.scale, cfg.patch_size, cfg.usm_gt), _Pool(cfg.pool_size)
    ds = TrainSet(src, seed=0, rank=0, flip=True, rot90=True)
    lap("degrader")
    for step in range(2):
        hr = torch.stack([ds[step * cfg.batch_size + b]["hr"] for b in range(cfg.batch_size)])
        g = _step_generator(0, 0, step)
        with torch.no_grad():
            lq = deg.degrade(hr, g)
        lq, hr = pool(lq, hr, g)
        gt = deg.usm(hr)
        lap(f"step {step + 1}: batch (decode) + degrade")
        opt.zero_grad(set_to_none=True)
        sr = net(lq)
        lap(f"step {step + 1}: forward")
        pixel_loss(sr, gt, "l1", on_y=False).backward()
        lap(f"step {step + 1}: backward")
        opt.step()
        pool.commit()
        ema.update(net)
        lap(f"step {step + 1}: update + EMA")
    from sr_cli.infer.context import measure_context

    measure_context(ema.module, desc)
    lap("tiling-context probe (export)")
    buf = io.BytesIO()
    torch.save({"net_g": net.state_dict(), "opt_g": opt.state_dict(),
                "ema": ema.state_dict()}, buf)
    lap(f"checkpoint to memory ({len(buf.getvalue()) / 2**20:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--recipe", default="realesrnet")
    ap.add_argument("--steps", type=int, default=None, help="default: the recipe's own")
    ap.add_argument("--published", action="store_true", help="the GPU-sized recipe")
    ap.add_argument("--make-small", type=Path, help="write 8 generated 480x320 images here")
    ap.add_argument("--phases", action="store_true",
                    help="CPU/wall seconds of each start-up phase, in this process")
    args = ap.parse_args()
    if args.make_small:
        make_small(args.make_small)
        print(f"wrote 8 images to {args.make_small}")
        return
    if args.data is None:
        ap.error("--data is required")
    if args.phases:
        phases(args.data)
        return
    extra = ["--published"] if args.published else []
    r = run(args.recipe, args.data, args.steps, extra)
    for k, v in r.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
