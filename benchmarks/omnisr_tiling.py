"""OmniSR tiling: the context measured from the weights, and tiled vs untiled output.

    python benchmarks/omnisr_tiling.py [--weights OMNISR.pth] [--train-steps 300]
                                       [--image ../shared/data/Set5/LR_bicubic/X2/butterflyx2.png]
                                       [--save trained.pth]
                                       [--tiles 32 64 96] [--threads 1]

OmniSR's receptive field is the whole image (the squeeze-excite gates average over it, grid
attention mixes pixels across it, ESA resizes a pooled map to the input size), so a tile's
output depends on the tile itself, not only on an overlap. This prints, for a network:

- the context ``measure_context`` finds (what ``save_model``/``sr models convert`` store) and
  how long the probe took;
- for each tile size, at the measured context and at a short one (``--short-context``, 32: the
  overlap SwinIR and RRDBNet start from), the largest
  difference between tiled and untiled output in 8-bit levels and the share of output values
  that differ by more than one level.

Weights: ``--weights`` (an OmniSR checkpoint, upstream keys); without it a small OmniSR x2
(32 features, 2 groups, window 8) is trained here for ``--train-steps`` L1 steps on T91 patches
from ../shared (seeded): trained-like weights rather than random ones, not a published model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def _read(path: Path) -> torch.Tensor:
    import imageio.v3 as iio

    a = np.asarray(iio.imread(path))[..., :3].astype(np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def _train(steps: int, scale: int = 2, seed: int = 0):
    from sr_cli.archs import build
    from sr_cli.degrade.resize import imresize

    torch.manual_seed(seed)
    net, desc = build("omnisr", num_feat=32, res_num=2, block_num=1, window_size=8,
                      up_scale=scale)
    files = sorted((SHARED / "data" / "train" / "t91").glob("*.png"))
    if not files:
        sys.exit("no ../shared/data/train/t91 images: pass --weights")
    images = [_read(f) for f in files]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    hr_size, batch = 32 * scale, 8
    t0 = time.perf_counter()
    for step in range(steps):
        crops = []
        for _ in range(batch):
            img = images[int(torch.randint(len(images), (1,), generator=g))]
            h, w = img.shape[-2:]
            y = int(torch.randint(h - hr_size + 1, (1,), generator=g))
            x = int(torch.randint(w - hr_size + 1, (1,), generator=g))
            crops.append(img[..., y:y + hr_size, x:x + hr_size])
        hr = torch.cat(crops)
        lr = imresize(hr, 1 / scale).clamp(0, 1)
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"train step {step}: L1 {loss.item():.4f}", file=sys.stderr)
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return net.eval(), desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--image", type=Path,
                    default=SHARED / "data" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png")
    ap.add_argument("--tiles", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--short-context", type=int, default=32)
    ap.add_argument("--save", type=Path, help="write the trained network here (.pth, upstream "
                    "keys) to reuse it with --weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sr_cli import zoo
    from sr_cli.infer.context import measure_context
    from sr_cli.infer.engine import InferenceOptions, Upscaler

    if args.weights:
        lm = zoo.load_model(str(args.weights))
        net, desc = lm.net, lm.desc
    else:
        net, desc = _train(args.train_steps)
        if args.save:
            torch.save(net.state_dict(), args.save)
    for p in net.parameters():
        p.requires_grad_(False)
    if desc.arch != "omnisr":
        sys.exit(f"{args.weights}: not an OmniSR model ({desc.arch})")
    t0 = time.perf_counter()
    measured = measure_context(net, desc)
    print(f"measured context: {measured} px (probe {time.perf_counter() - t0:.1f} s); "
          f"before a measurement {desc.context} px; window {desc.size_multiple}")
    x = _read(args.image)
    if x.shape[1] != desc.in_channels:
        x = x.mean(1, keepdim=True)
    print(f"image: {args.image.name} {x.shape[-1]}x{x.shape[-2]}, threads {args.threads}")
    base = zoo.LoadedModel(name="omnisr", net=net, desc=desc, metadata={}, source=None)
    whole = Upscaler(base, InferenceOptions(device="cpu", tile=0)).run(x)
    print("| context | tile | tiles max diff (8-bit levels) | values off by > 1 level |")
    print("|---|---|---|---|")
    for ctx in dict.fromkeys((measured, args.short_context)):
        model = dataclasses.replace(base, desc=dataclasses.replace(desc, context=ctx),
                                    metadata={"context": str(ctx)})
        for tile in args.tiles:
            out = Upscaler(model, InferenceOptions(device="cpu", tile=tile)).run(x)
            diff = ((out * 255).round() - (whole * 255).round()).abs()
            print(f"| {ctx} | {tile} | {int(diff.max())} | "
                  f"{float((diff > 1).float().mean()) * 100:.2f}% |")


if __name__ == "__main__":
    main()
