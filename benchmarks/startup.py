"""Start-up cost of `sr`: light commands against `python -c pass`, and a loop over files against
one batch call.

Usage: python benchmarks/startup.py [--runs 7] [--images 20] [--size 64] [--models bicubic,...]
                                    [--skip-batch] [--every-help]

Part 1 runs each command ``--runs`` times in a fresh interpreter and prints the median (and
minimum) wall and CPU (user + system, from the child's rusage) time: `python -c pass`, `python
-c "import torch"` (what every command paid before the imports became lazy), `import typer`
(the CLI framework's floor) and `import typer._adapters` (what Typer 0.29's pydantic option
checks would add; sr_cli.coercion avoids them), and the light commands `sr --version`, `sr
--help`, `sr upscale --help` (with --every-help: every other sub-command's --help too), `sr
models list`, `sr models info` of a baseline and with --header, and three usage errors (an
existing output, an option value out of range, an unknown command).
Each light command is printed with its difference to `python -c pass` (also as a fraction of
the CPU that `import torch` adds, which moves less with the load than seconds) and checked
against the target of 0.35 s (wall and CPU). The commands run as `python -m sr_cli` with
this checkout first on PYTHONPATH, so the code measured is the code next to this script.

Part 2 upscales ``--images`` small generated PNGs (``--size`` pixels square) two ways: one `sr
upscale IN OUT` process per file (a shell loop) and one `sr upscale in/ out/` call, per model
of ``--models`` (default: the bicubic baseline and the smallest shipped learned model). It
prints total wall and CPU time of both and their ratio.

Every child runs with OMP_NUM_THREADS=1. The load average is printed before and after: on a
busy machine wall times grow (CPU times much less), so read them together.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # measure this checkout (also for the children: child_env)
TARGET_S = 0.35


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("SR_PROGRESS", None)
    # An installed sr has its bytecode compiled (pip does it); a checkout gets it on the first
    # run, unless the shell says not to write it. Measured without it, every run would compile
    # sr's sources again (about 0.1 s here): the warm-up run writes __pycache__ instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(argv: list[str], cwd: Path | None = None) -> tuple[float, float, int]:
    """Run ``argv`` once; (wall seconds, CPU seconds of the child, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def median_times(argv: list[str], runs: int, cwd: Path | None = None
                 ) -> tuple[float, float, float, float, int]:
    """(median wall, median CPU, min wall, min CPU, exit code) of ``runs`` runs."""
    walls, cpus, code = [], [], 0
    timed(argv, cwd)  # warm the file cache (and write the bytecode cache)
    for _ in range(runs):
        w, c, code = timed(argv, cwd)
        walls.append(w)
        cpus.append(c)
    return statistics.median(walls), statistics.median(cpus), min(walls), min(cpus), code


def sr(*args: str) -> list[str]:
    return [sys.executable, "-m", "sr_cli", *args]


def part1(runs: int, work: Path, every: bool) -> None:
    (work / "in.png").write_bytes(b"x")
    (work / "out.png").write_bytes(b"x")
    shipped = sorted((REPO / "models").glob("*.safetensors"))
    more_help = [["degrade"], ["train"], ["interp"], ["score"], ["models"], ["models", "list"],
                 ["models", "info"], ["models", "convert"], ["models", "fetch"]]
    rows = [
        ("python -c pass", [sys.executable, "-c", "pass"], False),
        ('python -c "import torch"', [sys.executable, "-c", "import torch"], False),
        # the CLI framework's own floor (`import typer`), and what Typer 0.29's option checks
        # would add (pydantic, through typer._adapters): sr_cli.coercion keeps light commands
        # clear of the second
        ('python -c "import typer"', [sys.executable, "-c", "import typer"], False),
        ('python -c "import typer._adapters"', [sys.executable, "-c", "import typer._adapters"],
         False),
        ("sr --version", sr("--version"), True),
        ("sr --help", sr("--help"), True),
        ("sr upscale --help", sr("upscale", "--help"), True),
        *([(f"sr {' '.join(c)} --help", sr(*c, "--help"), True) for c in more_help]
          if every else []),
        ("sr models list", sr("models", "list"), True),
        ("sr models info bicubic", sr("models", "info", "bicubic"), True),
        *([("sr models info --header NAME", sr("models", "info", "--header",
                                                shipped[0].stem), True)] if shipped else []),
        ("sr upscale in.png out.png (exists)", sr("upscale", "in.png", "out.png"), True),
        ("sr upscale ... --tile-batch 0", sr("upscale", "in.png", "x.png", "--tile-batch", "0"),
         True),
        ("sr nope (unknown command)", sr("nope"), True),
    ]
    print(f"{runs} runs each (OMP_NUM_THREADS=1): median, and min in brackets; "
          "-pass: the difference to `python -c pass` (median to median, min to min)")
    print(f"{'command':<38}{'wall s':>15}{'cpu s':>15}{'wall-pass':>17}{'cpu-pass':>17}"
          f"{'x pass':>8}{'cpu-pass / torch':>18}  target (median)")
    base_w = base_c = base_mw = base_mc = torch_c = 0.0
    for label, argv, light in rows:
        w, c, mw, mc, code = median_times(argv, runs, work)
        if label == "python -c pass":
            base_w, base_c, base_mw, base_mc = w, c, mw, mc
        dw, dc = w - base_w, c - base_c
        if "import torch" in label:
            torch_c = dc
        verdict = ""
        if light:
            ok = dw <= TARGET_S and dc <= TARGET_S
            verdict = f"{'ok' if ok else 'MISSED'} (<= +{TARGET_S:.2f} s)"
        ratio = w / base_w if base_w else float("nan")
        # CPU over `python -c pass` as a fraction of what importing torch costs: a figure that
        # moves less with the machine's load than seconds do
        share = f"{dc / torch_c:.3f}" if torch_c > 0 else "-"
        print(f"{label:<38}{w:>7.3f} ({mw:.3f}){c:>7.3f} ({mc:.3f})"
              f"{dw:>+8.3f} ({mw - base_mw:+.3f}){dc:>+8.3f} ({mc - base_mc:+.3f})"
              f"{ratio:>8.1f}{share:>18}  {verdict}"
              + (f"  [exit {code}]" if code else ""))


def make_images(folder: Path, n: int, size: int) -> None:
    import numpy as np

    from sr_cli.io.atomic import atomic_write_bytes
    from sr_cli.io.images import Image, encode_image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = 127 + 100 * np.sin(xx / (3 + i) + yy / 7)[:, :, None] * np.ones((1, 1, 3))
        pixels = np.clip(base + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        atomic_write_bytes(folder / f"img{i:03d}.png", encode_image(Image(pixels), "png"))


def part2(n: int, size: int, models: list[str], work: Path) -> None:
    src = work / "in"
    make_images(src, n, size)
    files = sorted(src.glob("*.png"))
    print(f"\n{n} images of {size}x{size}: one `sr upscale IN OUT` per file vs one "
          "`sr upscale in/ out/`")
    print(f"{'model':<28}{'per file wall':>15}{'cpu':>8}{'one call wall':>15}{'cpu':>8}"
          f"{'wall ratio':>12}")
    for model in models:
        loop_dir, batch_dir = work / f"loop-{model}", work / f"batch-{model}"
        loop_dir.mkdir()
        t_wall = t_cpu = 0.0
        for f in files:
            w, c, code = timed(sr("upscale", str(f), str(loop_dir / f.name), "-m", model, "-q"))
            if code:
                raise SystemExit(f"sr upscale {f} failed with exit {code}")
            t_wall += w
            t_cpu += c
        b_wall, b_cpu, code = timed(sr("upscale", str(src), str(batch_dir), "-m", model, "-q"))
        if code:
            raise SystemExit(f"sr upscale {src} failed with exit {code}")
        print(f"{model:<28}{t_wall:>15.2f}{t_cpu:>8.2f}{b_wall:>15.2f}{b_cpu:>8.2f}"
              f"{t_wall / b_wall:>11.1f}x")
        shutil.rmtree(loop_dir)
        shutil.rmtree(batch_dir)


def smallest_learned_model() -> str | None:
    files = sorted((REPO / "models").glob("*.safetensors"), key=lambda p: p.stat().st_size)
    return files[0].stem if files else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", default=None,
                    help="comma-separated models for part 2 (default: bicubic and the smallest "
                         "shipped model)")
    ap.add_argument("--skip-batch", action="store_true", help="only part 1")
    ap.add_argument("--every-help", action="store_true",
                    help="part 1 also times the --help of every other sub-command")
    args = ap.parse_args()
    models = (args.models.split(",") if args.models
              else ["bicubic", *filter(None, [smallest_learned_model()])])
    print(f"checkout: {REPO}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="sr-startup-") as tmp:
        work = Path(tmp)
        part1(args.runs, work, args.every_help)
        if not args.skip_batch:
            part2(args.images, args.size, models, work)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
