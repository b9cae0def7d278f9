"""Discriminators for adversarial training (not entries of the generator registry).

- :class:`VGGStyleDiscriminator`: the SRGAN / ESRGAN discriminator ("VGG128" in BasicSR):
  ten conv layers (3x3 stride 1 and 4x4 stride 2 alternating, BatchNorm, LeakyReLU 0.2) that
  halve the patch five times, then ``Linear(nf*8*(P/32)^2, 100)`` -> LeakyReLU ->
  ``Linear(100, 1)``.
  The published network expects 128x128 patches; here any patch size divisible by 32 works
  (``input_size`` fixes it at build time, so the linear layer has a definite shape).
- :class:`UNetDiscriminatorSN`: Real-ESRGAN's U-Net discriminator with spectral normalisation;
  4,376,897 parameters at ``num_feat=64``. Outputs a per-pixel realness map ``(B, 1, H, W)``.

Tensor contract: input ``(B, C, H, W)`` float images in [0, 1]; output raw logits (no sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from sr_cli.errors import UsageError

__all__ = ["DISCRIMINATORS", "UNetDiscriminatorSN", "VGGStyleDiscriminator", "build_discriminator"]


class VGGStyleDiscriminator(nn.Module):
    """SRGAN/ESRGAN VGG-style discriminator; ``forward(x: (B,C,P,P)) -> (B, 1)`` logits."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise UsageError(
                f"the VGG-style discriminator needs a patch size divisible by 32, got {input_size}"
            )
        self.input_size = input_size
        nf = num_feat
        chans = [(num_in_ch, nf), (nf, nf * 2), (nf * 2, nf * 4), (nf * 4, nf * 8),
                 (nf * 8, nf * 8)]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(chans):
            # conv i_0: 3x3 stride 1 (first one with bias and no BN), conv i_1: 4x4 stride 2.
            layers.append(nn.Conv2d(cin, cout, 3, 1, 1, bias=(i == 0)))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            layers.append(nn.Conv2d(cout, cout, 4, 2, 1, bias=False))
            layers.append(nn.BatchNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.linear1 = nn.Linear(nf * 8 * side * side, 100)
        self.linear2 = nn.Linear(100, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise UsageError(
                f"VGG-style discriminator built for {self.input_size}x{self.input_size} patches, "
                f"got {tuple(x.shape[-2:])}"
            )
        feat = self.features(x).flatten(1)
        return self.linear2(F.leaky_relu(self.linear1(feat), 0.2))


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN U-Net discriminator with spectral norm; ``(B,C,H,W) -> (B,1,H,W)`` logits.

    H and W must be multiples of 8 (three stride-2 downsamplings, bilinear upsampling back).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        nf = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise UsageError(
                f"U-Net discriminator needs sides divisible by 8, got {tuple(x.shape)}"
            )

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)


DISCRIMINATORS = ("vgg", "unet")


def build_discriminator(kind: str, num_in_ch: int, num_feat: int, patch_size: int) -> nn.Module:
    """Build a discriminator by kind: "vgg" (SRGAN/ESRGAN) or "unet" (Real-ESRGAN)."""
    if kind == "vgg":
        return VGGStyleDiscriminator(num_in_ch, num_feat, input_size=patch_size)
    if kind == "unet":
        if patch_size % 8:
            raise UsageError(
                f"the U-Net discriminator needs a patch size divisible by 8, got {patch_size}"
            )
        return UNetDiscriminatorSN(num_in_ch, num_feat)
    raise UsageError(f"unknown discriminator {kind!r} (known: {', '.join(DISCRIMINATORS)})")
