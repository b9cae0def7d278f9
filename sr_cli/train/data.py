"""Training and validation data: image folders, random crops, flips/rot90, LR/HR pairs.

Three ways to get the low-resolution input of a training pair:

- ``paired``: LR images from ``--lr-data``, matched to HR images by name (``baby.png`` ->
  ``baby.png`` or ``babyx4.png``) with sizes checked (LR = HR // scale; HR is cropped to
  LR * scale).
- ``bicubic``: LR = MATLAB ``imresize(HR, 1/scale)`` of the whole (mod-cropped) image,
  rounded to 8 bits, as the benchmark sets were made.
- ``hr_only``: only HR crops; the training loop degrades them on the device (Real-ESRGAN).

Sampling is a pure function of ``(seed, rank, sample counter)``: sample ``k`` comes from image
``perm_epoch[k % n]`` (``epoch = k // n``, a seeded permutation) with a crop and flips drawn from
``numpy.random.default_rng([seed, rank, k])``. The loader state therefore reduces to the step
counter, which makes ``--resume`` exact and worker-count independent.

Images are decoded once and cached (uint8) when they fit in ``cache_mb``; otherwise each
sample decodes its file. With the loader in the training process (``workers = 0``, the default)
an image is decoded when a sample first needs it, so the first step waits for its own batch
only, not for the whole folder; with worker processes the cache is filled before they start
(they share it). Crops are returned as float32 ``(C, P, P)`` tensors in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sr_cli.errors import InputError
from sr_cli.io.images import IMAGE_EXTENSIONS, read_image

__all__ = ["PairSource", "TrainSet", "ValImage", "list_images", "load_val_set", "make_lr"]


def list_images(folder: str | os.PathLike[str], what: str = "--data") -> list[Path]:
    """All image files under ``folder`` (recursive, sorted); InputError when none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{what} {str(root)!r}: not a folder")
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"{what} {str(root)!r}: no images found (png, jpg, webp, bmp, tif)")
    return files


def load_rgb(path: Path) -> np.ndarray:
    """Decode to ``(H, W, 3)`` uint8 (gray repeated, alpha dropped, 16-bit reduced)."""
    px = read_image(path).pixels
    if px.dtype == np.uint16:
        px = np.round(px.astype(np.float32) / 257.0).astype(np.uint8)
    c = px.shape[2]
    if c in (1, 2):
        px = np.repeat(px[:, :, :1], 3, axis=2)
    elif c == 4:
        px = px[:, :, :3]
    return np.ascontiguousarray(px)


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic ``(H/s, W/s, 3)`` uint8 LR of a mod-cropped ``(H, W, 3)`` uint8 HR."""
    from sr_cli.degrade.resize import imresize

    t = torch.from_numpy(np.array(hr)).permute(2, 0, 1).to(torch.float64) / 255.0
    lr = imresize(t, 1.0 / scale)
    return (lr.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()


def _image_size(path: Path) -> tuple[int, int]:
    import imageio.v3 as iio

    try:
        shape = iio.improps(path).shape
    except Exception:  # noqa: BLE001 - fall back to a full decode (raises InputError if bad)
        shape = load_rgb(path).shape
    if len(shape) < 2:
        raise InputError(f"{path}: not a 2-D image")
    return int(shape[0]), int(shape[1])


def _match_lr(hr_paths: Sequence[Path], lr_dir: Path, scale: int) -> list[Path]:
    lr_files = list_images(lr_dir, "--lr-data")
    # Match by file name without extension (exact first, then NAMEx{scale}).
    by_stem: dict[str, Path] = {}
    suffix = f"x{scale}"
    for p in lr_files:
        by_stem.setdefault(p.stem, p)
    for p in lr_files:
        if p.stem.lower().endswith(suffix):
            by_stem.setdefault(p.stem[: -len(suffix)], p)
    out, missing = [], []
    for hp in hr_paths:
        match = by_stem.get(hp.stem)
        if match is None:
            missing.append(hp.name)
        else:
            out.append(match)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"--lr-data: no LR image named like {', '.join(missing[:3])}{more} "
            f"(expected NAME.ext or NAMEx{scale}.ext)"
        )
    return out


@dataclass
class PairSource:
    """Where the pairs come from; built and checked once before training."""

    hr_paths: list[Path]
    lr_paths: list[Path] | None  # paired mode
    mode: str  # "paired", "bicubic" or "hr_only"
    scale: int
    patch_size: int
    cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = None

    @property
    def count(self) -> int:
        return len(self.hr_paths)

    @classmethod
    def build(
        cls,
        data: str | os.PathLike[str],
        lr_data: str | os.PathLike[str] | None,
        *,
        scale: int,
        patch_size: int,
        degradation: str,
        cache_mb: int,
        lazy: bool = False,
    ) -> PairSource:
        """List, match and check the images (sizes vs patch and scale, from the file headers)
        before any training. When they fit in ``cache_mb`` they are cached: decoded here, or
        with ``lazy`` on first use (for a loader in this process: the first step does not
        wait for the whole folder)."""
        hr_paths = list_images(data, "--data")
        lr_paths = _match_lr(hr_paths, Path(lr_data), scale) if lr_data is not None else None
        if lr_paths is not None:
            mode = "paired"
        elif degradation == "realesrgan":
            mode = "hr_only"
        else:
            mode = "bicubic"
        sizes = [_image_size(p) for p in hr_paths]
        small = [p.name for p, (h, w) in zip(hr_paths, sizes, strict=True)
                 if h < patch_size or w < patch_size]
        if small:
            more = f" and {len(small) - 3} more" if len(small) > 3 else ""
            raise InputError(
                f"--data: image(s) smaller than the {patch_size}x{patch_size} patch: "
                f"{', '.join(small[:3])}{more} (remove them or lower patch_size)"
            )
        if lr_paths is not None:
            for hp, lp, (h, w) in zip(hr_paths, lr_paths, sizes, strict=True):
                lh, lw = _image_size(lp)
                if lh != h // scale or lw != w // scale:
                    raise InputError(
                        f"--lr-data: {lp.name} is {lw}x{lh}, but {hp.name} ({w}x{h}) at x{scale} "
                        f"needs {w // scale}x{h // scale}"
                    )
        src = cls(hr_paths, lr_paths, mode, scale, patch_size)
        need = sum(h * w * 3 for h, w in sizes) * (1 + 1 / scale**2)
        if need <= cache_mb * 2**20:
            src.cache = {}
            if not lazy:
                for i in range(src.count):
                    src.cache[i] = src._decode(i)
        return src

    def _decode(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        hr = load_rgb(self.hr_paths[i])
        s = self.scale
        if self.mode == "paired":
            assert self.lr_paths is not None
            lr = load_rgb(self.lr_paths[i])
            return hr[: lr.shape[0] * s, : lr.shape[1] * s], lr
        hr = hr[: hr.shape[0] - hr.shape[0] % s, : hr.shape[1] - hr.shape[1] % s]
        if self.mode == "bicubic":
            return hr, make_lr(hr, s)
        return hr, None

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.cache is None:
            return self._decode(i)
        pair = self.cache.get(i)
        if pair is None:
            pair = self.cache[i] = self._decode(i)
        return pair


def _augment(a: np.ndarray, hflip: bool, vflip: bool, rot: bool) -> np.ndarray:
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    if rot:
        a = a.transpose(1, 0, 2)
    return a


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).transpose(2, 0, 1).astype(np.float32) / 255.0)


class TrainSet(Dataset):
    """Map-style dataset indexed by the global sample counter ``k`` (see module docstring).

    ``ds[k]`` -> ``{"hr": (3, P, P)}`` plus ``"lr": (3, P/s, P/s)`` unless mode is hr_only.
    """

    def __init__(self, source: PairSource, *, seed: int, rank: int, flip: bool, rot90: bool):
        self.src = source
        self.seed = int(seed)
        self.rank = int(rank)
        self.flip = flip
        self.rot90 = rot90
        self._perm: dict[int, np.ndarray] = {}

    def __len__(self) -> int:  # virtual: the loop's sampler supplies the counters
        return 2**62

    def _image_index(self, k: int) -> int:
        n = self.src.count
        epoch = k // n
        perm = self._perm.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, self.rank, 0, epoch]).permutation(n)
            self._perm = {epoch: perm}
        return int(perm[k % n])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, 1, int(k)])
        hr, lr = self.src.get(self._image_index(int(k)))
        s, P = self.src.scale, self.src.patch_size
        p = P // s
        lh, lw = hr.shape[0] // s, hr.shape[1] // s
        y = int(rng.integers(0, lh - p + 1))
        x = int(rng.integers(0, lw - p + 1))
        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flip \
            else (False, False)
        rot = bool(rng.random() < 0.5) if self.rot90 else False
        hr_crop = hr[y * s: y * s + P, x * s: x * s + P]
        out = {"hr": _to_tensor(_augment(hr_crop, hflip, vflip, rot))}
        if lr is not None:
            out["lr"] = _to_tensor(_augment(lr[y: y + p, x: x + p], hflip, vflip, rot))
        return out


@dataclass
class ValImage:
    name: str
    hr: torch.Tensor  # (1, 3, H, W) float32 [0, 1], mod-cropped
    lr: torch.Tensor  # (1, 3, H/s, W/s) float32 [0, 1], 8-bit levels


def load_val_set(folder: str | os.PathLike[str], scale: int) -> list[ValImage]:
    """HR images of ``folder`` with their MATLAB-bicubic LR (rounded to 8 bits)."""
    out = []
    for p in list_images(folder, "--val"):
        hr = load_rgb(p)
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        if hr.shape[0] < scale or hr.shape[1] < scale:
            raise InputError(f"--val: {p.name} is smaller than the scale")
        lr = make_lr(hr, scale)
        out.append(ValImage(p.stem, _to_tensor(hr)[None], _to_tensor(lr)[None]))
    return out
