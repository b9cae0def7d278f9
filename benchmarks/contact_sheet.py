"""Draw the zoo's contact sheet: a few Set14 crops, every model side by side, labelled.

    python benchmarks/contact_sheet.py [--shared ../shared] [-o docs/zoo-contact-sheet.png]

Each row is one crop of a Set14 HR image; each column one model of models/ (plus the MATLAB
bicubic baseline and the HR original), applied to the Set14 LR_bicubic input at the model's
own scale and cropped at the same place, so x2/x3/x4 models line up. Nothing is resized after
the network. Needs ../shared (Set14); says so and exits 2 without.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import sr_cli
from sr_cli import zoo
from sr_cli.io.atomic import atomic_write_bytes, make_parent

REPO = Path(__file__).resolve().parent.parent
# (image, top, left) in HR pixels; multiples of 12 so every scale's LR grid lines up.
CROPS = [("baboon", 252, 24), ("zebra", 96, 312), ("ppt3", 120, 228), ("comic", 48, 12)]
SIZE = 120
ORDER = ["srcnn-x2", "srcnn-x3", "srcnn-x4", "srresnet-x4", "srgan-x4", "esrgan-psnr-x4",
         "esrgan-x4", "realesrnet-x4", "realesrgan-x4", "realesrnet-x2", "realesrgan-x2"]


def _models() -> list[tuple[str, int]]:
    found = {e.name: int(e.scale) for e in zoo.list_models()
             if e.learned and e.file is not None and e.file.parent == REPO / "models"}
    names = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return [(n, found[n]) for n in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "docs" / "zoo-contact-sheet.png")
    a = ap.parse_args()
    set14 = a.shared / "data" / "Set14"
    if not set14.is_dir():
        print(f"needs {set14}", file=sys.stderr)
        sys.exit(2)
    columns = [("HR", 0), ("bicubic x4", 4), *_models()]
    pad, label_h = 4, 16
    w = len(columns) * (SIZE + pad) + pad
    h = label_h + len(CROPS) * (SIZE + pad) + pad
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, (name, _) in enumerate(columns):
        draw.text((pad + c * (SIZE + pad) + 2, 2), name, fill=(0, 0, 0), font=font)
    for r, (img, top, left) in enumerate(CROPS):
        hr = iio.imread(set14 / "HR" / f"{img}.png")
        if hr.ndim == 2:
            hr = np.stack([hr] * 3, axis=-1)
        for c, (name, s) in enumerate(columns):
            if name == "HR":
                out = hr
            else:
                model = "bicubic" if name.startswith("bicubic") else name
                lr = iio.imread(set14 / "LR_bicubic" / f"X{s}" / f"{img}x{s}.png")
                if lr.ndim == 2:
                    lr = np.stack([lr] * 3, axis=-1)
                out = sr_cli.upscale(lr, model, scale=s, tile=0, device="cpu")
            crop = out[top:top + SIZE, left:left + SIZE, :3]
            sheet.paste(Image.fromarray(np.ascontiguousarray(crop)),
                        (pad + c * (SIZE + pad), label_h + pad + r * (SIZE + pad)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    make_parent(a.out)
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"{a.out} {w}x{h}, columns: {', '.join(n for n, _ in columns)}")


if __name__ == "__main__":
    main()
