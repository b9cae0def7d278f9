"""Compare sr's HAT and DAT with the upstream code as spandrel ships it (opt-in, offline).

spandrel cannot be installed next to this project's CPU torch (its torchvision fails to
import), but its architecture files (copies of the upstream HAT / DAT code) only need torch
and einops. This script loads those two files from an unpacked spandrel wheel, without
importing the rest of spandrel, builds networks of the published widths (fewer blocks, to
keep it quick on a CPU), perturbs every weight and BatchNorm statistic, and checks that:

- sr's detection reads every hyperparameter back from the state dict *upstream's code*
  produced (its key set, with upstream's derived buffers), and loads it strictly;
- both forwards agree in float64, on inputs that are and are not window multiples.

It prints one line per configuration with the largest absolute difference. Usage::

    pip download spandrel==0.4.2 --no-deps -d /tmp/sp && python -m zipfile -e \\
        /tmp/sp/spandrel-0.4.2-py3-none-any.whl /tmp/sp/src
    pip install einops   # in a virtual environment, e.g. python -m venv --system-site-packages
    python benchmarks/hat_dat_vs_spandrel.py /tmp/sp/src
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import torch

from sr_cli.archs.swinir import RGB_MEAN


def load_upstream(src: Path) -> tuple[Any, Any]:
    """spandrel's HAT and DAT classes, imported without spandrel's package ``__init__``."""
    pkg = types.ModuleType("spandrel")
    pkg.__path__ = [str(src / "spandrel")]
    sys.modules["spandrel"] = pkg
    hat = importlib.import_module("spandrel.architectures.HAT.__arch.HAT")
    dat = importlib.import_module("spandrel.architectures.DAT.__arch.DAT")
    return hat.HAT, dat.DAT


def perturb(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_((torch.rand(p.shape, generator=g) - 0.5) * 0.1)
        for n, b in net.named_buffers():
            if n.endswith("running_mean"):
                b.copy_((torch.rand(b.shape, generator=g) - 0.5) * 0.2)
            elif n.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def compare(label: str, upstream: torch.nn.Module, sizes: list[tuple[int, int]],
            in_ch: int = 3) -> float:
    from sr_cli import zoo

    perturb(upstream, 7)
    upstream = upstream.double().eval()
    if in_ch == 3:  # upstream keeps the DIV2K mean as a float32 attribute, not a buffer
        upstream.mean = torch.tensor(RGB_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    sd = {k: v.detach().clone() for k, v in upstream.state_dict().items()}
    model = zoo.build_loaded({k: v.float() for k, v in sd.items()}, name=label)
    ours = model.net.double()
    with torch.no_grad():
        ours_sd = dict(ours.state_dict())
        for k in ours_sd:  # float64 weights straight from upstream (build_loaded is fp32)
            ours_sd[k] = sd[k].to(ours_sd[k].dtype)
        ours.load_state_dict(ours_sd)
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(1, in_ch, h, w, generator=torch.Generator().manual_seed(h * w),
                       dtype=torch.float64)
        with torch.no_grad():
            a, b = upstream(x), ours(x)
        assert a.shape == b.shape, (a.shape, b.shape)
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        print(f"{label:<48} {h:>3}x{w:<3} max |upstream - sr| = {diff:.2e} "
              f"(output range {a.min().item():.2f}..{a.max().item():.2f})")
    print(f"{label:<48} detected: {model.desc.arch} {model.desc.hparams}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spandrel_src", type=Path, help="folder holding the unpacked spandrel/")
    args = ap.parse_args()
    hat_cls, dat_cls = load_upstream(args.spandrel_src)
    torch.manual_seed(0)
    worst = 0.0
    hat_common = {"img_size": 64, "window_size": 16, "overlap_ratio": 0.5, "mlp_ratio": 2.0,
                  "img_range": 1.0, "upsampler": "pixelshuffle", "resi_connection": "1conv",
                  "conv_scale": 0.01}
    worst = max(worst, compare(
        "HAT widths (embed 180, cr 3, sf 30), 2x2 blocks, x4",
        hat_cls(upscale=4, embed_dim=180, depths=[2, 2], num_heads=[6, 6],
                compress_ratio=3, squeeze_factor=30, **hat_common),
        [(32, 48), (20, 37)]))
    worst = max(worst, compare(
        "HAT-S widths (embed 144, cr 24, sf 24), 3 blocks, x3",
        hat_cls(upscale=3, embed_dim=144, depths=[3], num_heads=[6],
                compress_ratio=24, squeeze_factor=24, **hat_common),
        [(32, 32)]))
    dat_common = {"img_size": 64, "img_range": 1.0, "qkv_bias": True, "num_heads": [6, 6]}
    worst = max(worst, compare(
        "DAT widths (embed 180, 8x32, ef 4), 2x3 blocks, x2",
        dat_cls(upscale=2, embed_dim=180, split_size=[8, 32], depth=[3, 3],
                expansion_factor=4.0, resi_connection="1conv", upsampler="pixelshuffle",
                **dat_common),
        [(64, 64), (40, 72), (33, 21)]))
    worst = max(worst, compare(
        "DAT-light widths (embed 60, 3conv, direct), 5 blocks, x4",
        dat_cls(upscale=4, embed_dim=60, split_size=[8, 32], depth=[5], num_heads=[6],
                expansion_factor=2.0, resi_connection="3conv", upsampler="pixelshuffledirect",
                img_size=64, img_range=1.0),
        [(64, 64), (24, 40)]))
    print(f"worst max |upstream - sr| over all: {worst:.2e}")


if __name__ == "__main__":
    main()
