"""Knowledge distillation: a teacher model's outputs, computed once, as training targets.

``sr train distill --set teacher=MODEL`` trains a (fast) student to reproduce any model that
``sr`` can load. Before training, a *teacher cache* of ``distill_pairs`` pairs is built in
``RUN_DIR/teacher_cache`` (or the folder ``teacher_cache`` names, to share it between runs):

- pair ``i`` takes an HR crop of ``patch_size`` pixels from a training image (image and
  position drawn from ``numpy.random.default_rng([seed, 71, i])``),
- degrades it to the LR input: the Real-ESRGAN second-order pipeline (``degradation =
  "realesrgan"``, for real-photo models; randomness from ``torch.Generator`` seeded with
  ``(seed, i)``) or MATLAB bicubic (``"bicubic"``, for fidelity models),
- runs the teacher on the LR crop (fp32, whole crop) and stores ``lr/NNNNNN.png`` and the
  target ``target/NNNNNN.png`` = ``(1 - distill_hr_mix) * teacher + distill_hr_mix * HR``,
  rounded to 8 bits.

Every file is written atomically, so an interrupted cache build resumes at the missing pairs;
``info.json`` records what the cache was made from, and a cache made by another teacher or
other settings is refused instead of silently mixed. Training then reads the cache as an
ordinary paired data set (random sub-crops are the whole pair, plus flips and rotations).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_cli.errors import UsageError

__all__ = ["build_teacher_cache", "cache_identity"]

_BATCH = 8  # pairs degraded and run through the teacher together


def cache_identity(cfg: Any, teacher: str, n_images: int, data: Path) -> dict[str, Any]:
    """What a teacher cache depends on: any difference means it must be rebuilt."""
    return {
        "teacher": teacher,
        "degradation": cfg.degradation,
        "scale": cfg.scale,
        "patch_size": cfg.patch_size,
        "hr_mix": cfg.distill_hr_mix,
        "seed": cfg.seed,
        "data": str(data.resolve()),
        "images": n_images,
        "format": 1,
    }


def _pair_seed(seed: int, i: int) -> int:
    return zlib.crc32(f"distill:{seed}:{i}".encode()) & 0x7FFFFFFF


def _crops(source: Any, first: int, count: int, seed: int, patch: int) -> torch.Tensor:
    """HR crops ``(count, 3, P, P)`` float32 in [0, 1] for pairs ``first .. first+count-1``."""
    out = []
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, 71, i])
        hr, _ = source.get(int(rng.integers(0, source.count)))
        y = int(rng.integers(0, hr.shape[0] - patch + 1))
        x = int(rng.integers(0, hr.shape[1] - patch + 1))
        crop = np.ascontiguousarray(hr[y: y + patch, x: x + patch])
        out.append(torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out)


def _degrade(hr: torch.Tensor, cfg: Any, first: int) -> torch.Tensor:
    """LR inputs (8-bit levels, float32) of an HR batch."""
    if cfg.degradation == "realesrgan":
        from sr_cli.degrade.config import RealESRGANConfig, UsmConfig
        from sr_cli.degrade.pipeline import realesrgan_batch

        g = torch.Generator().manual_seed(_pair_seed(cfg.seed, first))
        lr, _, _ = realesrgan_batch(hr, cfg.scale, RealESRGANConfig(usm=UsmConfig(apply=False)),
                                    g)
    else:
        from sr_cli.degrade.resize import imresize

        lr = imresize(hr.double(), 1.0 / cfg.scale).float()
    return (lr.clamp(0, 1) * 255.0).round() / 255.0


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def build_teacher_cache(
    cfg: Any,
    data: Path,
    cache_dir: Path,
    *,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    """Make (or complete) the teacher cache; returns ``(target_dir, lr_dir)``.

    The teacher is loaded (and its scale checked) and the images decoded only when pairs are
    missing.

    Args:
        cfg: the run's TrainConfig (``teacher``, ``distill_pairs``, ``distill_hr_mix``,
            ``degradation``, ``scale``, ``patch_size``, ``seed``).
        data: the HR training folder.
        cache_dir: where the cache lives.
        device: the teacher's device.
        progress: ``progress(done_pairs, total_pairs)``.
        notify: one-line notes.

    Raises:
        UsageError: no teacher, or a cache made from something else.
        ModelError: the teacher cannot be loaded; InputError: bad training images.
    """
    from sr_cli import zoo
    from sr_cli.infer.engine import InferenceOptions, Upscaler
    from sr_cli.io.atomic import atomic_write_bytes
    from sr_cli.io.images import Image, encode_image
    from sr_cli.train.data import PairSource, list_images

    say = notify or (lambda msg: None)
    ident = cache_identity(cfg, cfg.teacher, len(list_images(data, "--data")), data)
    lr_dir, tgt_dir = cache_dir / "lr", cache_dir / "target"
    info_path = cache_dir / "info.json"
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != ident:
            diff = sorted(k for k in ident if not isinstance(old, dict) or old.get(k) != ident[k])
            raise UsageError(
                f"teacher cache {cache_dir} was made with other settings ({', '.join(diff)}); "
                "remove it or set teacher_cache to another folder"
            )
    lr_dir.mkdir(parents=True, exist_ok=True)
    tgt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(info_path, (json.dumps(ident, indent=1) + "\n").encode())

    total = int(cfg.distill_pairs)
    name = "{:06d}.png".format
    todo = [b for b in range(0, total, _BATCH)
            if not all((tgt_dir / name(i)).exists() and (lr_dir / name(i)).exists()
                       for i in range(b, min(total, b + _BATCH)))]
    if not todo:
        return tgt_dir, lr_dir
    teacher = zoo.load_model(cfg.teacher)
    if teacher.desc.scale != cfg.scale:
        raise UsageError(f"teacher {cfg.teacher!r} is x{teacher.desc.scale}, the run is "
                         f"x{cfg.scale}")
    up = Upscaler(teacher, InferenceOptions(device=device, precision="fp32", tile=0))
    # the images are decoded only when pairs are missing: HR crops, whose LR is made below
    source = PairSource.build(data, None, scale=cfg.scale, patch_size=cfg.patch_size,
                              degradation="realesrgan", cache_mb=cfg.cache_mb, lazy=True)
    done = total - sum(min(_BATCH, total - b) for b in todo)
    say(f"teacher cache: {done} of {total} pairs present; computing the rest with "
        f"{teacher.name} (once; an interrupted build resumes)")
    for b in todo:
        n = min(_BATCH, total - b)
        hr = _crops(source, b, n, cfg.seed, cfg.patch_size)
        lr = _degrade(hr, cfg, b)
        with torch.no_grad():
            t_out = up.run(lr, tile=0)
        target = t_out if cfg.distill_hr_mix == 0 else (
            (1.0 - cfg.distill_hr_mix) * t_out + cfg.distill_hr_mix * hr)
        for j in range(n):
            # target first, LR last: a pair counts as present only when its LR exists
            atomic_write_bytes(tgt_dir / name(b + j),
                               encode_image(Image(_to_u8(target[j])), "png"))
            atomic_write_bytes(lr_dir / name(b + j), encode_image(Image(_to_u8(lr[j])), "png"))
        done += n
        if progress is not None:
            progress(done, total)
    return tgt_dir, lr_dir
