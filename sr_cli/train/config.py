"""Training settings: one dataclass, filled with a recipe's published defaults, then overridden
by a TOML file (``--config``) and by command-line flags.

Every field is a setting a user may override; unknown keys raise :class:`UsageError`.
A TOML file is flat ``key = value`` pairs plus optional tables ``[arch_params]`` (generator
hyperparameters, passed to ``sr_cli.archs.build``) and ``[perceptual_layers]``
(VGG19 layer name -> weight).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from sr_cli.errors import UsageError

__all__ = ["TrainConfig", "apply_overrides", "config_to_toml", "load_toml"]


@dataclass
class TrainConfig:
    """All settings of one training run (see docs/train.md for each recipe's values)."""

    # -- what is trained
    recipe: str = ""
    arch: str = "rrdbnet"
    arch_params: dict[str, Any] = field(default_factory=dict)
    scale: int = 4
    # -- data
    patch_size: int = 128  # HR crop side (LR crop = patch_size / scale)
    batch_size: int = 16
    flip: bool = True  # random horizontal/vertical flips
    rot90: bool = True  # random 90-degree rotations
    degradation: str = "bicubic"  # "bicubic" (MATLAB imresize) or "realesrgan" (on the fly)
    usm_gt: bool = False  # USM-sharpen the target for pixel and perceptual losses
    pool_size: int = 0  # Real-ESRGAN training pair pool (0 = off); multiple of batch_size
    workers: int = 0  # DataLoader worker processes
    cache_mb: int = 2048  # decode the images once and keep them when they fit in this budget
    # -- optimisation
    steps: int = 100_000
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=list)  # MultiStepLR
    gamma: float = 0.5
    ema: float = 0.0  # EMA decay of the generator (0 = off)
    # EMA warm-up: step t uses min(ema, (1 + t) / (10 + t)), so a short run's average tracks
    # the network instead of staying near its initial weights (off: the papers' plain EMA)
    ema_warmup: bool = False
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    # -- losses
    pixel_loss: str = "l1"  # "l1", "mse" or "none"
    pixel_weight: float = 1.0
    grad_weight: float = 0.0  # L1 of neighbour differences (sr_cli.train.losses.gradient_loss)
    pixel_on_y: bool = False  # compute the pixel loss on BT.601 Y (SRCNN)
    perceptual_layers: dict[str, float] = field(default_factory=dict)  # empty = no perceptual
    perceptual_weight: float = 1.0
    perceptual_criterion: str = "l1"  # "l1" or "mse"
    gan_type: str = "none"  # "none", "vanilla" or "ragan" (relativistic average)
    gan_weight: float = 0.0
    discriminator: str = "vgg"  # "vgg" (SRGAN/ESRGAN VGG128-style) or "unet" (U-Net + SN)
    d_features: int = 64
    lr_d: float = 1e-4
    betas_d: list[float] = field(default_factory=lambda: [0.9, 0.999])
    milestones_d: list[int] = field(default_factory=list)
    # how a fresh SRVGGNetCompact starts: "nearest" (last layer zeroed) or "bilinear"
    # (starts as bilinear upscaling, no s x s blocks; see SRVGGNetCompact.init_for_training)
    init_base: str = "nearest"
    init_from: str = ""  # the recipe whose weights should initialise this one (advice only)
    # -- distillation (recipe distill; see sr_cli.train.distill)
    teacher: str = ""  # model whose outputs are the targets (zoo name or weights file)
    distill_pairs: int = 2000  # pairs in the teacher cache
    distill_hr_mix: float = 0.0  # target = (1 - mix) * teacher + mix * HR
    teacher_cache: str = ""  # cache folder ("" = RUN_DIR/teacher_cache)
    # -- run mechanics
    seed: int = 0
    amp: str = "none"  # "none", "bf16" (CUDA or CPU) or "fp16" (CUDA only)
    channels_last: bool = True  # on CUDA
    log_every: int = 100
    val_every: int = 5000
    ckpt_every: int = 5000
    val_niqe: bool = False  # add NIQE to validation (perceptual recipes)
    best_metric: str = "psnr"  # validation score that selects model_best: "psnr" or "niqe"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`UsageError` for inconsistent values."""
        choices = {
            "degradation": ("bicubic", "realesrgan"),
            "pixel_loss": ("l1", "mse", "none"),
            "perceptual_criterion": ("l1", "mse"),
            "gan_type": ("none", "vanilla", "ragan"),
            "discriminator": ("vgg", "unet"),
            "amp": ("none", "bf16", "fp16"),
            "best_metric": ("psnr", "niqe"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UsageError(
                    f"setting {key} = {getattr(self, key)!r}: expected one of {', '.join(allowed)}"
                )
        positive = ("scale", "patch_size", "batch_size", "steps", "log_every", "val_every",
                    "ckpt_every")
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise UsageError(f"setting {key} must be >= 1, got {getattr(self, key)}")
        if self.patch_size % self.scale:
            raise UsageError(
                f"patch_size {self.patch_size} must be a multiple of the scale {self.scale}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            numbers = value if isinstance(value, list) else (
                list(value.values()) if isinstance(value, dict) else [value])
            for v in numbers:
                if isinstance(v, float) and not math.isfinite(v):
                    raise UsageError(f"setting {f.name} must be a finite number, got {v}")
        for key in ("lr", "lr_d", "gamma"):
            if not getattr(self, key) > 0:
                raise UsageError(f"setting {key} must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "grad_clip", "pixel_weight", "grad_weight", "perceptual_weight",
                    "gan_weight", "workers", "pool_size", "cache_mb"):
            if getattr(self, key) < 0:
                raise UsageError(f"setting {key} must be >= 0, got {getattr(self, key)}")
        for key in ("betas", "betas_d"):
            betas = getattr(self, key)
            if len(betas) != 2 or any(isinstance(b, bool) or not isinstance(b, int | float)
                                      or not 0.0 <= b < 1.0 for b in betas):
                raise UsageError(f"setting {key} takes two numbers in [0, 1), got {betas}")
        if not 0.0 <= self.distill_hr_mix <= 1.0:
            raise UsageError(f"setting distill_hr_mix must be in [0, 1], got "
                             f"{self.distill_hr_mix}")
        if self.teacher and self.distill_pairs < 1:
            raise UsageError(f"setting distill_pairs must be >= 1, got {self.distill_pairs}")
        if self.init_base not in ("nearest", "bilinear"):
            raise UsageError(f"setting init_base must be nearest or bilinear, got "
                             f"{self.init_base!r}")
        if not 0.0 <= self.ema < 1.0:
            raise UsageError(f"setting ema must be in [0, 1), got {self.ema}")
        if self.pool_size and self.pool_size % self.batch_size:
            raise UsageError(
                f"pool_size {self.pool_size} must be a multiple of batch_size {self.batch_size}"
            )
        if self.pixel_loss == "none" and not self.perceptual_layers and self.gan_type == "none":
            raise UsageError("no loss left: set pixel_loss, perceptual_layers or gan_type")
        if len(self.betas) != 2 or len(self.betas_d) != 2:
            raise UsageError("betas and betas_d take two numbers, e.g. [0.9, 0.99]")

    @property
    def uses_perceptual(self) -> bool:
        return bool(self.perceptual_layers) and self.perceptual_weight > 0

    @property
    def uses_gan(self) -> bool:
        return self.gan_type != "none" and self.gan_weight > 0


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, current: Any) -> Any:
    """Check a TOML value's type against the field's current value."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UsageError(f"setting {key} takes true or false, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"setting {key} takes an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"setting {key} takes a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise UsageError(f"setting {key} takes a string, got {value!r}")
        return value
    if isinstance(current, list):
        if not isinstance(value, list):
            raise UsageError(f"setting {key} takes a list, got {value!r}")
        return list(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise UsageError(f"setting {key} takes a table, got {value!r}")
        return dict(value)
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    """Return ``cfg`` with ``overrides`` applied; unknown keys or wrong types -> UsageError."""
    unknown = sorted(set(overrides) - set(_FIELDS) - {"recipe"})
    if unknown:
        raise UsageError(
            f"{source}: unknown setting(s) {', '.join(unknown)} "
            f"(see `sr train {cfg.recipe or 'RECIPE'} --print-config`)"
        )
    if "recipe" in overrides and overrides["recipe"] != cfg.recipe:
        raise UsageError(
            f"{source}: recipe = {overrides['recipe']!r} does not match the command's "
            f"{cfg.recipe!r}"
        )
    changes = {}
    for key, value in overrides.items():
        if key == "recipe":
            continue
        current = getattr(cfg, key)
        if key == "arch_params" and isinstance(value, dict):
            merged = dict(current)
            merged.update(value)
            value = merged
        changes[key] = _coerce(key, value, current)
    return dataclasses.replace(cfg, **changes)


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML settings file into a dict of settings."""
    p = Path(path)
    try:
        from sr_cli.io.atomic import note_input

        note_input(p)
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {str(p)!r}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {str(p)!r}: not valid TOML ({exc})") from None
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def config_to_toml(cfg: TrainConfig) -> str:
    """Render every setting as TOML that ``--config`` reads back."""
    lines = []
    tables: dict[str, dict[str, Any]] = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
