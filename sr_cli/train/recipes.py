"""The training recipes: published settings of SRCNN, SRResNet/SRGAN, ESRGAN and Real-ESRGAN.

A recipe is a name, a one-line summary and the :class:`~sr_cli.train.config.TrainConfig`
values that differ from the dataclass defaults. Sources: Dong et al. 2014/2016 (SRCNN),
Ledig et al. 2017 (SRResNet, SRGAN), Wang et al. 2018 (ESRGAN; BasicSR's train_ESRGAN
options), Wang et al. 2021 (Real-ESRGAN; train_realesrnet_x4plus / train_realesrgan_x4plus).
Every value is overridable with ``--config FILE.toml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sr_cli.errors import UsageError
from sr_cli.train.config import TrainConfig

__all__ = ["RECIPES", "Recipe", "get_recipe", "recipe_config"]


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    settings: Callable[[int], dict[str, Any]]  # scale -> overrides of TrainConfig defaults
    default_scale: int = 4


def _srcnn(scale: int) -> dict[str, Any]:
    return {
        "arch": "srcnn",
        # 33x33 sub-images, rounded down to a multiple of the scale.
        "patch_size": 33 - 33 % scale,
        "batch_size": 16,
        "pixel_loss": "mse",
        "pixel_on_y": True,
        # Adam replaces the paper's SGD (1e-4, 1e-5 on the last layer): same minimum, far
        # fewer steps.
        "lr": 1e-3,
        "steps": 100_000,
        "val_every": 1000,
        "ckpt_every": 1000,
    }


def _srresnet(scale: int) -> dict[str, Any]:
    return {
        "arch": "srresnet",
        "arch_params": {"num_block": 16, "num_feat": 64},
        "patch_size": 96,
        "batch_size": 16,
        "pixel_loss": "mse",
        "lr": 1e-4,
        "steps": 1_000_000,
    }


def _srgan(scale: int) -> dict[str, Any]:
    s = _srresnet(scale)
    s.update({
        "steps": 200_000,
        "milestones": [100_000],
        "gamma": 0.1,
        "pixel_loss": "none",
        # phi_5,4: the 4th conv before the 5th max-pool, after activation; the paper rescales
        # the VGG features by 1/12.75, i.e. the feature MSE by 1/12.75^2.
        "perceptual_layers": {"relu5_4": 1.0},
        "perceptual_criterion": "mse",
        "perceptual_weight": 1.0 / 12.75**2,
        "gan_type": "vanilla",
        "gan_weight": 1e-3,
        "discriminator": "vgg",
        "lr_d": 1e-4,
        "milestones_d": [100_000],
        "init_from": "srresnet",
        "val_niqe": True,
    })
    return s


def _esrgan_psnr(scale: int) -> dict[str, Any]:
    return {
        "arch": "rrdbnet",
        "arch_params": {"num_block": 23, "num_feat": 64, "num_grow_ch": 32},
        "patch_size": 128,
        "batch_size": 16,
        "pixel_loss": "l1",
        "lr": 2e-4,
        "betas": [0.9, 0.99],
        "steps": 1_000_000,
        "milestones": [200_000, 400_000, 600_000, 800_000],
        "gamma": 0.5,
    }


def _esrgan(scale: int) -> dict[str, Any]:
    s = _esrgan_psnr(scale)
    s.update({
        "lr": 1e-4,
        "steps": 400_000,
        "milestones": [50_000, 100_000, 200_000, 300_000],
        "pixel_weight": 0.01,
        "perceptual_layers": {"conv5_4": 1.0},
        "perceptual_criterion": "l1",
        "perceptual_weight": 1.0,
        "gan_type": "ragan",
        "gan_weight": 0.005,
        "discriminator": "vgg",
        "lr_d": 1e-4,
        "betas_d": [0.9, 0.99],
        "milestones_d": [50_000, 100_000, 200_000, 300_000],
        "ema": 0.999,
        "init_from": "esrgan-psnr",
        "val_niqe": True,
    })
    return s


def _realesrnet(scale: int, compact: bool = False) -> dict[str, Any]:
    s = _esrgan_psnr(scale)
    s.update({
        "patch_size": 256,
        "batch_size": 12,
        "degradation": "realesrgan",
        "usm_gt": True,
        "pool_size": 180,
        "steps": 1_000_000,
        "milestones": [1_000_000],
        "ema": 0.999,
    })
    if compact:
        s.update({"arch": "srvgg", "arch_params": {"num_feat": 64, "num_conv": 32}})
    return s


def _realesrgan(scale: int, compact: bool = False) -> dict[str, Any]:
    s = _realesrnet(scale, compact)
    s.update({
        "lr": 1e-4,
        "steps": 400_000,
        "milestones": [400_000],
        "pixel_weight": 1.0,
        "perceptual_layers": {
            "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0,
        },
        "perceptual_criterion": "l1",
        "perceptual_weight": 1.0,
        "gan_type": "vanilla",
        "gan_weight": 0.1,
        "discriminator": "unet",
        "lr_d": 1e-4,
        "betas_d": [0.9, 0.99],
        "milestones_d": [400_000],
        "init_from": "realesrnet-compact" if compact else "realesrnet",
        "val_niqe": True,
    })
    return s


def _distill(scale: int) -> dict[str, Any]:
    """A compact student (SRVGGNetCompact, 16 convs: realesr-general-x4v3's size) trained
    with L1 on a teacher's outputs for Real-ESRGAN-degraded crops (see sr_cli.train.distill).
    """
    return {
        "arch": "srvgg",
        "arch_params": {"num_feat": 64, "num_conv": 16},
        "patch_size": 128,
        "batch_size": 16,
        "degradation": "realesrgan",
        "distill_pairs": 2000,
        "pixel_loss": "l1",
        "lr": 5e-4,
        "betas": [0.9, 0.99],
        "steps": 20_000,
        "milestones": [10_000, 15_000],
        "ema": 0.999,
        "ema_warmup": True,
    }


_LIST = [
    Recipe("srcnn", "SRCNN 9-5-5 (64/32 filters), Y channel, MSE, bicubic-upsampled input",
           _srcnn, default_scale=3),
    Recipe("srresnet", "SRResNet 16 residual blocks, 64 ch, MSE", _srresnet),
    Recipe("srgan", "SRGAN: SRResNet + VGG19 phi_5,4 content loss + 1e-3 GAN (init srresnet)",
           _srgan),
    Recipe("esrgan-psnr", "ESRGAN PSNR stage: RRDBNet 23 blocks, L1, lr 2e-4", _esrgan_psnr),
    Recipe("esrgan", "ESRGAN: VGG conv5_4 + L1 0.01 + RaGAN 0.005, EMA (init esrgan-psnr)",
           _esrgan),
    Recipe("realesrnet", "Real-ESRNet: RRDBNet, L1, on-the-fly high-order degradation, USM GT",
           _realesrnet),
    Recipe("realesrgan", "Real-ESRGAN: L1 + 5-layer perceptual + GAN 0.1, U-Net D (init "
           "realesrnet)", _realesrgan),
    Recipe("realesrnet-compact", "Real-ESRNet with SRVGGNetCompact (num_conv, num_feat settable)",
           lambda s: _realesrnet(s, compact=True)),
    Recipe("realesrgan-compact", "Real-ESRGAN with SRVGGNetCompact (init realesrnet-compact)",
           lambda s: _realesrgan(s, compact=True)),
    Recipe("distill", "Distillation: a compact student learns a teacher's outputs "
           "(--set teacher=MODEL; cached once)", _distill),
]

RECIPES: dict[str, Recipe] = {r.name: r for r in _LIST}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise UsageError(
            f"unknown recipe {name!r} (known: {', '.join(RECIPES)}; see `sr train --list`)"
        ) from None


def recipe_config(name: str, scale: int | None = None) -> TrainConfig:
    """The published settings of recipe ``name`` at ``scale`` (recipe default when None)."""
    recipe = get_recipe(name)
    s = recipe.default_scale if scale is None else int(scale)
    if s < 1:
        raise UsageError(f"--scale must be >= 1, got {s}")
    values = recipe.settings(s)
    return dataclasses.replace(TrainConfig(), recipe=recipe.name, scale=s, **values)
