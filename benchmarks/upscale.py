"""Upscaling speed on this machine: sr's engines against a plain PyTorch forward and ncnn.

    OMP_NUM_THREADS=1 python benchmarks/upscale.py            # threads from the environment
    python benchmarks/upscale.py --threads 1,2 [--quick] [--size-factor 0.5] [--rounds 5]
                                 [--nets srvgg,rrdbnet,srresnet] [--tiled]
    python benchmarks/upscale.py --tiling                     # auto-tile overhead figures
    python benchmarks/upscale.py --ab 2 --threads 1,2          # sr's CPU memory setting on/off

Every row runs under ``sr upscale``'s allocator setting (``limit_heap_fragmentation``: blocks
of 1 MB and more get their own pages, so each fresh activation takes page faults; the
``faults`` column counts them); ``--glibc-malloc`` leaves glibc's adaptive defaults (tables
before issue 18's fourth pass were measured that way, which hid the faults sr upscale took).

``--ab N`` runs the whole benchmark in 2N child processes, alternating ``SR_CPU_MALLOC=system``
(glibc's defaults, the default) and ``keep`` (opt-in, see
sr_cli/infer/cpumem.py): a process-wide allocator setting cannot be switched fairly inside one
process, so the A/B is per process, and every row of a child (the bare forward and ncnn too)
runs under its setting. It prints one compact table of both settings, their ratio, and sr
(keep) against ncnn, with the load average before and after.

Networks (random weights: speed does not depend on them): SRVGGNetCompact x4 (16 convs, 320x320
input), RRDBNet-23 x4 (x4plus, 120x125), SRResNet x4 (16 blocks with batch norm, 160x160).
Rows (one image, uint8 in and out, inference only; engines alternate in rounds in one process,
median [min-max] seconds; ratios of medians, of minimums in brackets):

  torch cl fp32     plain channels-last fp32 forward under no_grad, then clamp and round to
                    uint8: the baseline
  sr torch fp32     sr's Upscaler.stream, ``--engine torch``, whole image (conversion, padding,
                    clamp, checks; SRVGGNetCompact in its inference form; freed memory kept
                    with SR_CPU_MALLOC=keep): its overhead over the baseline is printed
  sr net fp32       sr's prepared network alone (the inference form sr runs: SRVGGNetCompact's
                    one-pass tail, SRResNet's folded/fused form), on the same channels-last
                    tensor, then clamp and round: sr's path overhead is sr torch over this row
  sr ncnn fp32      sr's Upscaler.stream, ``--engine ncnn`` (the network exported to ncnn)
  sr ncnn tiled     the same at a tile of half the input side (``--tiled``; also the row
                    ``sr torch tiled``: sr's default path at that tile)
  ncnn official     ncnn's own runtime on the official .param/.bin (x4plus: ``--ncnn-dir``,
                    default /work/runs/teacher or $SR_NCNN_MODELS; third-party files, never in
                    the repository), else on sr's exported graph (``ncnn exported``): ncnn
                    without sr's path around it (SRResNet: ``ncnn exported+wrap``, with its
                    last 9x9 convolution in PyTorch as sr runs it)
  sr bf16           only where oneDNN has native bf16 (emulated bf16 is 16-22x slower)

Each row also gets its median CPU seconds (``time.process_time``, all threads of the process):
less disturbed by other processes than wall time on a loaded machine. Without the ncnn package
the ncnn rows are skipped (``pip install ncnn``). Nothing here is a
test.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sr_cli.archs import build  # noqa: E402
from sr_cli.infer.cpumem import forward_scope, keep_freed_memory  # noqa: E402
from sr_cli.infer.device import limit_heap_fragmentation, native_bf16_cpu  # noqa: E402
from sr_cli.infer.engine import InferenceOptions, Upscaler  # noqa: E402
from sr_cli.infer.ncnn_backend import ncnn_module  # noqa: E402
from sr_cli.infer.ncnn_export import _plain, export  # noqa: E402
from sr_cli.zoo import LoadedModel  # noqa: E402

NETS = {
    # key: (title, arch, hparams, official ncnn stem, input (h, w), quick input)
    "srvgg": ("SRVGGNetCompact x4", "srvgg", {"num_conv": 16, "upscale": 4},
              "realesr-animevideov3-x4", (320, 320), (96, 96)),
    "rrdbnet": ("RRDBNet-23 x4", "rrdbnet", {"num_block": 23, "scale": 4}, "realesrgan-x4plus",
                (120, 125), (40, 40)),
    "srresnet": ("SRResNet x4 (BN)", "srresnet", {}, "", (160, 160), (64, 64)),
}
MACS_PER_PX = {"rrdbnet": 17_926_848, "srvgg": 619_200}
NCNN_DIR = os.environ.get("SR_NCNN_MODELS", "/work/runs/teacher")


def _ncnn_runner(param: str, weights: str, x: np.ndarray, threads: int
                 ) -> Callable[[], object] | None:
    ncnn = ncnn_module()
    if ncnn is None:
        return None
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    for k in ("use_bf16_storage", "use_bf16_packed", "use_fp16_storage", "use_fp16_packed",
              "use_fp16_arithmetic"):
        setattr(net.opt, k, False)
    if net.load_param(param) or net.load_model(weights):
        return None

    def run() -> object:
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(x))
        _, y = ex.extract("output")
        return np.clip(np.array(y) * 255, 0, 255).round().astype(np.uint8)

    run.net = net  # type: ignore[attr-defined]  # keep it alive
    return run


def _wrapped(net, exp, x: torch.Tensor) -> Callable[[], object]:
    """Bare ncnn on an exported graph, with the export's PyTorch steps around it."""
    ncnn = ncnn_module()
    assert ncnn is not None

    def body(t: torch.Tensor) -> torch.Tensor:
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(np.ascontiguousarray(t[0].numpy())))
        _, y = ex.extract("output")
        return torch.from_numpy(np.array(y))[None]

    def run() -> object:
        y = exp.wrap(x, body)
        return y.clamp_(0, 1).mul_(255).round_().byte()[0].permute(1, 2, 0).numpy()

    return run


def _time_rounds(fns: dict[str, Callable[[], object]], rounds: int
                 ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[int]]]:
    """Wall and CPU seconds and minor page faults per call, engines alternating within each
    round."""
    for f in fns.values():
        f()  # warm-up (oneDNN primitives, ncnn pipelines, the export)
    res: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    flt: dict[str, list[int]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            res[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            flt[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return res, cpu, flt


def bench(key: str, size: tuple[int, int], threads: int, rounds: int, ncnn_dir: Path,
          tiled: bool, bf16: bool, rows: list[str], record: str = "") -> None:
    title, arch, hp, stem, _, _ = NETS[key]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, desc = build(arch, **hp)
    net.eval().requires_grad_(False)
    if arch == "srresnet":  # trained-like batch-norm statistics (random init has 0/1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    if not desc.exact_context:  # random weights: a fixed stand-in for the measured context
        desc = dataclasses.replace(desc, context=40)
    model = LoadedModel(name=arch, net=net, desc=desc, metadata={"context": str(desc.context)},
                        source=None)
    h, w = size
    x = torch.rand(1, 3, h, w)
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255  # the same pixels
    xc = x.contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def baseline() -> object:
        with forward_scope():  # the allocator setting sr's own network calls get
            y = plain(xc)
        y = y.clamp_(0, 1).mul_(255).round_().byte()
        return y[0].permute(1, 2, 0).numpy()

    fns: dict[str, Callable[[], object]] = {"torch cl fp32": baseline}

    def sr(engine: str, prec: str = "fp32", tile: int = 0) -> Callable[[], object]:
        up = Upscaler(model, InferenceOptions(device="cpu", precision=prec, tile=tile,
                                              engine=engine))
        return lambda: up.stream(img).collect()

    fns["sr torch fp32"] = sr("torch")
    prepared = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0,
                                                engine="torch"))._net("fp32")

    def sr_net() -> object:  # sr's prepared network alone: what its path wraps
        with forward_scope():
            y = prepared(xc)
        y = y.clamp_(0, 1).mul_(255).round_().byte()
        return y[0].permute(1, 2, 0).numpy()

    fns["sr net fp32"] = sr_net
    if tiled:
        fns[f"sr torch tiled {max(h, w) // 2}"] = sr("torch", tile=max(h, w) // 2)
    has_ncnn = ncnn_module() is not None
    if has_ncnn:
        fns["sr ncnn fp32"] = sr("ncnn")
        if tiled:
            fns[f"sr ncnn tiled {max(h, w) // 2}"] = sr("ncnn", tile=max(h, w) // 2)
        xn = x[0].numpy().copy()
        param, weights = ncnn_dir / f"{stem}.param", ncnn_dir / f"{stem}.bin"
        official = (_ncnn_runner(str(param), str(weights), xn, threads)
                    if stem and param.is_file() and weights.is_file() else None)
        if official is not None:
            fns["ncnn official fp32"] = official
        else:
            import tempfile

            exp = export(net)
            assert exp is not None
            tmp = Path(tempfile.mkdtemp(prefix="sr-bench-"))
            (tmp / "n.param").write_text(exp.param)
            (tmp / "n.bin").write_bytes(exp.weights)
            run = _ncnn_runner(str(tmp / "n.param"), str(tmp / "n.bin"), xn, threads)
            if run is not None and exp.wrap is _plain:
                fns["ncnn exported fp32"] = run
            elif run is not None:  # torch steps around the graph (SRResNet's conv_last)
                fns["ncnn exported+wrap fp32"] = _wrapped(run.net, exp, x)  # type: ignore[attr-defined]
    if bf16:
        fns["sr torch bf16"] = sr("torch", "bf16")
    if rows:  # keep the baseline, sr torch and the rows asked for
        fns = {k: f for k, f in fns.items()
               if k in ("torch cl fp32", "sr torch fp32", "sr net fp32")
               or any(r in k for r in rows)}
    with torch.no_grad():
        res, cpu, flt = _time_rounds(fns, rounds)
    if record:
        with open(record, "a") as fh:
            for k in res:
                fh.write(json.dumps({"net": key, "threads": threads, "row": k,
                                     "mode": os.environ.get("SR_CPU_MALLOC", "system"),
                                     "wall": res[k], "cpu": cpu[k], "faults": flt[k]}) + "\n")
    med = {k: statistics.median(v) for k, v in res.items()}
    mn = {k: min(v) for k, v in res.items()}
    base = "torch cl fp32"
    nc = next((k for k in res if k.startswith("ncnn ")), None)
    flops = 2 * MACS_PER_PX.get(arch, 0) * h * w
    print(f"\n{title}, input {w}x{h}, {threads} thread(s), {rounds} rounds")
    print(f"{'engine':22s} {'median s':>9s} {'range s':>15s} {'cpu s':>6s} {'faults':>7s} "
          f"{'GFLOP/s':>8s} "
          f"{'vs torch cl':>17s} {'vs ' + (nc or 'ncnn'):>24s}")
    for k, v in res.items():
        gf = f"{flops / med[k] / 1e9:8.1f}" if flops else f"{'-':>8s}"
        vs_nc = (f"{med[nc] / med[k]:13.2f}x ({mn[nc] / mn[k]:.2f}x)" if nc
                 else f"{'-':>24s}")
        print(f"{k:22s} {med[k]:9.3f} {min(v):7.3f}-{max(v):7.3f} "
              f"{statistics.median(cpu[k]):6.2f} {statistics.median(flt[k]):7.0f} {gf} "
              f"{med[base] / med[k]:8.2f}x ({mn[base] / mn[k]:.2f}x) {vs_nc}")
    print(f"sr torch vs the bare forward: median "
          f"{med['sr torch fp32'] / med[base] - 1:+.1%}, of minimums "
          f"{mn['sr torch fp32'] / mn[base] - 1:+.1%}; sr's path overhead over its own "
          f"network (sr net): median {med['sr torch fp32'] / med['sr net fp32'] - 1:+.1%}, "
          f"of minimums {mn['sr torch fp32'] / mn['sr net fp32'] - 1:+.1%}")
    if has_ncnn and nc and "sr ncnn fp32" in med:
        print(f"sr ncnn overhead over bare ncnn ({nc}): median "
              f"{med['sr ncnn fp32'] / med[nc] - 1:+.1%}, of minimums "
              f"{mn['sr ncnn fp32'] / mn[nc] - 1:+.1%}")
    if not has_ncnn:
        print("(ncnn rows skipped: pip install ncnn)")


def tiling() -> None:
    """Planned auto-tile overhead (computed pixels) and the shipped RRDBNet's context."""
    from sr_cli import zoo
    from sr_cli.infer.context import measure_context
    from sr_cli.infer.tiling import plan_tiles

    def planned(desc, t: int, h: int, w: int) -> float:
        tiles = plan_tiles(h, w, t, desc.context if t else 0, max(1, desc.size_multiple))
        return sum((t_.py1 - t_.py0) * (t_.px1 - t_.px0) for t_ in tiles) / (h * w) - 1

    for name in ("srvgg", "rrdbnet"):
        _, arch, hp, _, _, _ = NETS[name]
        net, desc = build(arch, **hp)
        if not desc.exact_context:
            desc = dataclasses.replace(desc, context=40)
        model = LoadedModel(name=arch, net=net.eval(), desc=desc,
                            metadata={"context": str(desc.context)}, source=None)
        up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32"))
        for w, h in ((1920, 1080), (3840, 2160), (7680, 4320)):
            t = up.auto_tile(h, w)
            print(f"{name}: auto tile for {w}x{h}: {t or 'whole image'}; overhead "
                  f"{planned(desc, t, h, w):+.1%} computed pixels")
    path = REPO / "models" / "esrgan-psnr-x4.safetensors"
    if path.is_file():
        lm = zoo.load_model(str(path))
        t0 = time.perf_counter()
        ctx = measure_context(lm.net, lm.desc)
        print(f"trained {path.stem}: measured context {ctx}px (metadata "
              f"{lm.metadata.get('context')}, probe {time.perf_counter() - t0:.1f}s)")


def ab(args: argparse.Namespace, child_argv: list[str]) -> None:
    """``--ab N``: the benchmark in 2N child processes, SR_CPU_MALLOC system/keep alternating,
    then one table of both."""
    record = tempfile.mkstemp(prefix="sr-bench-ab-", suffix=".jsonl")[1]
    load0 = os.getloadavg()
    for i in range(args.ab):
        for mode in ("system", "keep"):
            env = dict(os.environ, SR_CPU_MALLOC=mode)
            print(f"[{i + 1}/{args.ab}] SR_CPU_MALLOC={mode} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, __file__, *child_argv, "--record", record],
                           env=env, check=True, stdout=subprocess.DEVNULL)
    load1 = os.getloadavg()
    data: dict[tuple[str, int, str, str], list[float]] = {}
    cpu: dict[tuple[str, int, str, str], list[float]] = {}
    flt: dict[tuple[str, int, str, str], list[int]] = {}
    with open(record) as fh:
        for line in fh:
            r = json.loads(line)
            k = (r["net"], r["threads"], r["row"], r["mode"])
            data.setdefault(k, []).extend(r["wall"])
            cpu.setdefault(k, []).extend(r["cpu"])
            flt.setdefault(k, []).extend(r["faults"])
    os.unlink(record)
    print(f"\nA/B SR_CPU_MALLOC system (glibc defaults) vs keep (opt-in); "
          f"{args.ab} process(es) each, alternating; load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after, on {os.cpu_count()} CPUs")
    print("seconds: median [min]; ratios: of medians (of minimums); cpu: median CPU seconds; "
          "faults: median minor page faults per call")
    print(f"{'net':9s} {'thr':>3s} {'row':20s} {'keep':>15s} {'system':>15s} "
          f"{'system/keep':>14s} {'cpu keep/sys':>13s} {'faults keep/sys':>16s} "
          f"{'keep vs ncnn':>14s}")
    for net, th, row, mode in list(data):
        if mode != "keep" or (net, th, row, "system") not in data:
            continue
        k, sy = data[(net, th, row, "keep")], data[(net, th, row, "system")]
        ck, cs = cpu[(net, th, row, "keep")], cpu[(net, th, row, "system")]
        fk, fs = flt[(net, th, row, "keep")], flt[(net, th, row, "system")]
        nc = next((v for (n2, t2, r2, m2), v in data.items()
                   if (n2, t2, m2) == (net, th, "keep") and r2.startswith("ncnn ")), None)
        vs = (f"{statistics.median(nc) / statistics.median(k):6.2f}x ({min(nc) / min(k):.2f}x)"
              if nc else f"{'-':>14s}")
        print(f"{net:9s} {th:3d} {row:20s} {statistics.median(k):7.3f} [{min(k):5.3f}] "
              f"{statistics.median(sy):7.3f} [{min(sy):5.3f}] "
              f"{statistics.median(sy) / statistics.median(k):6.2f}x ({min(sy) / min(k):.2f}x) "
              f"{statistics.median(ck):5.2f}/{statistics.median(cs):5.2f} "
              f"{statistics.median(fk):7.0f}/{statistics.median(fs):<7.0f} {vs}")
    print("keep vs ncnn: ncnn's time / this row's (above 1 = faster than ncnn)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, 2 rounds")
    ap.add_argument("--threads", default="",
                    help="comma-separated thread counts (default: torch's, e.g. from "
                         "OMP_NUM_THREADS)")
    ap.add_argument("--rounds", type=int, default=0, help="timing rounds (0 = 3, quick 2)")
    ap.add_argument("--size-factor", type=float, default=1.0,
                    help="scale the input sizes (e.g. 0.5 on a busy machine)")
    ap.add_argument("--nets", default=",".join(NETS), help="srvgg,rrdbnet,srresnet")
    ap.add_argument("--ncnn-dir", default=NCNN_DIR, help="official ncnn .param/.bin files")
    ap.add_argument("--tiled", action="store_true", help="add the tiled sr torch and sr ncnn rows")
    ap.add_argument("--tiling", action="store_true", help="only the auto-tile figures")
    ap.add_argument("--rows", default="",
                    help="comma-separated row names (substrings) to run besides the baseline "
                         "and sr torch, e.g. 'ncnn official' (default: all)")
    ap.add_argument("--ab", type=int, default=0, metavar="N",
                    help="A/B of SR_CPU_MALLOC system vs keep in 2N alternating processes")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="leave glibc's malloc thresholds alone (sr upscale fixes its mmap "
                         "threshold at 1 MB; every row runs under sr upscale's setting unless "
                         "this is given)")
    ap.add_argument("--record", default="", help=argparse.SUPPRESS)  # --ab's children
    args = ap.parse_args()
    if args.ab:
        argv = sys.argv[1:]
        i = argv.index("--ab") if "--ab" in argv else -1
        child = argv[:i] + argv[i + 2:] if i >= 0 else [a for a in argv
                                                          if not a.startswith("--ab=")]
        ab(args, child)
        return
    cli = False if args.glibc_malloc else limit_heap_fragmentation()  # as sr upscale does
    kept = keep_freed_memory()  # as sr does, for every row of this process ($SR_CPU_MALLOC)
    how = "sr upscale's (blocks of 1 MB and more mmapped)" if cli else "glibc defaults"
    print(f"malloc: {how}; SR_CPU_MALLOC: freed memory {'kept' if kept else 'returned'}")
    nb = native_bf16_cpu()
    mod = ncnn_module()
    print(f"torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if nb else 'no'}, "
          f"ncnn {getattr(mod, '__version__', 'not installed')}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.tiling:
        tiling()
        return
    threads = [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]
    rounds = args.rounds or (2 if args.quick else 3)
    for key in [k.strip() for k in args.nets.split(",") if k.strip()]:
        size = NETS[key][5 if args.quick else 4]
        size = (max(8, round(size[0] * args.size_factor)),
                max(8, round(size[1] * args.size_factor)))
        for th in threads:
            bench(key, size, th, rounds, Path(args.ncnn_dir), args.tiled, nb,
                  [r.strip() for r in args.rows.split(",") if r.strip()], args.record)


if __name__ == "__main__":
    main()
