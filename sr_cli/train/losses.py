"""Training losses: pixel (L1/MSE, optionally on Y), VGG perceptual, and GAN losses.

All take float tensors ``(B, C, H, W)`` with images in [0, 1] and return a scalar tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.vgg import VGGFeatureExtractor
from sr_cli.errors import UsageError

__all__ = ["PerceptualLoss", "gan_d_fake", "gan_d_real", "gan_g_loss", "pixel_loss", "y_channel"]

_Y = (65.481, 128.553, 24.966)


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma as MATLAB ``rgb2ycbcr`` in [0, 1] units: ``(16 + 65.481 R + 128.553 G +
    24.966 B) / 255`` for ``(B, 3, H, W)`` RGB in [0, 1]; ``(B, 1, H, W)`` passes through."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise UsageError(f"Y channel needs 1 or 3 channels, got {x.shape[1]}")
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (16.0 + _Y[0] * r + _Y[1] * g + _Y[2] * b) / 255.0


def _criterion(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name == "l1":
        return F.l1_loss(a, b)
    if name == "mse":
        return F.mse_loss(a, b)
    raise UsageError(f"unknown criterion {name!r} (l1, mse)")


def pixel_loss(
    sr: torch.Tensor, gt: torch.Tensor, kind: str, *, on_y: bool = False
) -> torch.Tensor:
    """Mean ``|sr - gt|`` (l1) or ``(sr - gt)^2`` (mse), on RGB or on Y (``on_y``)."""
    if on_y:
        sr, gt = y_channel(sr), y_channel(gt)
    return _criterion(kind, sr, gt)


def gradient_loss(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean ``|d(sr) - d(gt)|`` over horizontal and vertical neighbour differences.

    Penalises steps the target does not have, e.g. the flat ``s x s`` blocks a young
    pixel-shuffle student draws at its phase boundaries, more directly than pixel L1.
    """
    dx = (sr[..., :, 1:] - sr[..., :, :-1]) - (gt[..., :, 1:] - gt[..., :, :-1])
    dy = (sr[..., 1:, :] - sr[..., :-1, :]) - (gt[..., 1:, :] - gt[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


class PerceptualLoss(nn.Module):
    """``sum_l w_l * crit(phi_l(sr), phi_l(gt))`` over VGG19 layers ``l`` (gt features detached)."""

    def __init__(self, vgg: VGGFeatureExtractor, layer_weights: dict[str, float],
                 criterion: str = "l1") -> None:
        super().__init__()
        self.vgg = vgg
        self.layer_weights = dict(layer_weights)
        self.criterion = criterion

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        f_sr = self.vgg(sr)
        with torch.no_grad():
            f_gt = self.vgg(gt.detach())
        total = sr.new_zeros(())
        for name, w in self.layer_weights.items():
            total = total + w * _criterion(self.criterion, f_sr[name], f_gt[name].detach())
        return total


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def gan_g_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """Generator adversarial loss (unweighted) from discriminator logits.

    vanilla: ``BCE(D(G(z)), 1)``; ragan (ESRGAN): ``(BCE(D(x_r) - E[D(x_f)], 0) +
    BCE(D(x_f) - E[D(x_r)], 1)) / 2`` with the real logits detached.
    """
    if kind == "vanilla":
        return _bce(fake, 1.0)
    if kind == "ragan":
        if real is None:
            raise UsageError("ragan needs the real logits")
        real = real.detach()
        return 0.5 * (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0))
    raise UsageError(f"unknown gan_type {kind!r} (vanilla, ragan)")


def gan_d_real(kind: str, real: torch.Tensor, fake_ref: torch.Tensor | None = None) -> torch.Tensor:
    """Discriminator loss on real logits: vanilla ``BCE(D(x_r), 1)``; ragan
    ``BCE(D(x_r) - E[D(x_f)], 1) / 2`` with ``fake_ref`` = detached fake logits."""
    if kind == "vanilla":
        return _bce(real, 1.0)
    if kind == "ragan":
        if fake_ref is None:
            raise UsageError("ragan needs the fake logits")
        return 0.5 * _bce(real - fake_ref.detach().mean(), 1.0)
    raise UsageError(f"unknown gan_type {kind!r} (vanilla, ragan)")


def gan_d_fake(kind: str, fake: torch.Tensor, real_ref: torch.Tensor | None = None) -> torch.Tensor:
    """Discriminator loss on logits of (detached) generated images: vanilla ``BCE(D(x_f), 0)``;
    ragan ``BCE(D(x_f) - E[D(x_r)], 0) / 2`` with ``real_ref`` = detached real logits."""
    if kind == "vanilla":
        return _bce(fake, 0.0)
    if kind == "ragan":
        if real_ref is None:
            raise UsageError("ragan needs the real logits")
        return 0.5 * _bce(fake - real_ref.detach().mean(), 0.0)
    raise UsageError(f"unknown gan_type {kind!r} (vanilla, ragan)")
