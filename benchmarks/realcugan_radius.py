"""Measure Real-CUGAN's convolution reach and its tiling error, and print them.

    OMP_NUM_THREADS=1 python benchmarks/realcugan_radius.py [--scales 2 3 4]

1. Receptive radius of the convolutions (the SE gates held at one image's means): for every
   output sub-pixel phase of one period (``scale * size_multiple`` output pixels per side), the
   support of d(output pixel)/d(input) on a random 64x64 image; the radius is the largest
   distance, in input pixels, from the input pixel holding the output pixel to a pixel with a
   non-zero gradient. These are ``REALCUGAN_RADIUS`` in ``sr_cli/archs/facts.py``.
2. Tiled (each tile's own SE means, what the engine does) against untiled output on a random
   128x128 image at tiles of 32 and 64 with that context, for weights scaled so the SE gates
   vary (the tests' ``_cugan_random``): the maximum absolute difference.

No trained weights here: the figures are for random weights. Takes minutes on one CPU thread
(x3 is the slowest: its output period is 12 pixels, 144 backward passes).
"""

from __future__ import annotations

import argparse
import time

import torch

from sr_cli.archs import build
from sr_cli.archs.realcugan import RealCUGAN, shared_se_statistics
from sr_cli.infer.tiling import plan_tiles, run_tiled


def randomize(net: RealCUGAN, seed: int = 3) -> None:
    """As the tests do: uniform weights of variance ~1.4/fan-in, biases in +-0.1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                k = m.kernel_size[0] * m.kernel_size[1]
                fan = (m.in_channels * k if isinstance(m, torch.nn.Conv2d)
                       else m.in_channels * k / (m.stride[0] * m.stride[1]))
                bound = (4.2 / fan) ** 0.5
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                assert m.bias is not None
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * 0.1)


def radius(net: RealCUGAN, n: int = 64) -> int:
    s, m = net.scale, net.multiple
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    worst = 0
    with shared_se_statistics(net, x):
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        c = n // 2
        for py in range(s * m):
            for px in range(s * m):
                oy, ox = c * s + py, c * s + px
                (g,) = torch.autograd.grad(out[0, :, oy, ox].sum(), xi, retain_graph=True)
                ys, xs = torch.nonzero(g.abs().sum(dim=(0, 1))).unbind(1)
                iy, ix = oy // s, ox // s
                worst = max(worst, int(iy - ys.min()), int(ys.max() - iy),
                            int(ix - xs.min()), int(xs.max() - ix))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    args = ap.parse_args()
    for s in args.scales:
        net, desc = build("realcugan", scale=s)
        net.eval()
        randomize(net)
        t = time.perf_counter()
        r = radius(net)
        print(f"x{s}: convolution radius {r} input px ({time.perf_counter() - t:.0f} s); "
              f"descriptor context {desc.context}, size multiple {desc.size_multiple}")
        x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            ref = net(x)
            for tile in (32, 64):
                tiles = plan_tiles(128, 128, tile, desc.context, desc.size_multiple)
                diff = (run_tiled(net, x, s, tiles) - ref).abs().max().item()
                print(f"x{s}: tile {tile}, per-tile SE means: max |tiled - untiled| "
                      f"{diff:.2e} (output max {ref.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
