"""SRResNet, the generator of SRGAN (Ledig et al., 2017).

Layout (the paper's Figure 4): ``conv_first`` 9x9 + PReLU; ``num_block`` residual blocks
(conv3x3 - BN - PReLU - conv3x3 - BN, identity skip); ``conv_body`` 3x3 + BN, added to the
``conv_first`` features; sub-pixel up-sampling stages (conv3x3 to 4*nf channels - PixelShuffle(2) -
PReLU; one 9*nf / PixelShuffle(3) stage for x3); ``conv_last`` 9x9 to the output channels.

Batch normalisation follows the paper and is on by default (``norm=True``); ``norm=False``
drops every BN layer (the EDSR/MSRResNet observation that BN hurts PSNR-oriented SR). In eval mode
BN is a fixed per-channel affine map, so inference and tiling are unaffected. Each PReLU has one
learned slope (``nn.PReLU()``), as in the common reimplementations.

Keys: ``conv_first``, ``act_first``, ``body.N.{conv1,bn1,act,conv2,bn2}``, ``conv_body``,
``bn_body``, ``upsample.K.{conv,act}``, ``conv_last``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict
from sr_cli.archs.facts import DESCRIPTIONS
from sr_cli.archs.facts import SRRESNET_DEFAULTS as DEFAULTS
from sr_cli.archs.facts import describe_srresnet as describe
from sr_cli.archs.facts import upsample_factors_srresnet as upsample_factors


def _bn(nf: int, norm: bool) -> nn.Module:
    return nn.BatchNorm2d(nf) if norm else nn.Identity()


class _ResBlock(nn.Module):
    def __init__(self, nf: int, norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.bn1 = _bn(nf, norm)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.bn2 = _bn(nf, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class _UpStage(nn.Module):
    def __init__(self, nf: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nf, nf * factor * factor, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """``forward(x)``: ``(B, in_channels, h, w)`` in [0, 1] -> ``(B, out_channels, h*s, w*s)``."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        scale: int = 4,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(in_channels, num_feat, 9, 1, 4)
        self.act_first = nn.PReLU()
        self.body = nn.Sequential(*[_ResBlock(num_feat, norm) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn_body = _bn(num_feat, norm)
        self.upsample = nn.Sequential(*[_UpStage(num_feat, f) for f in upsample_factors(scale)])
        self.conv_last = nn.Conv2d(num_feat, out_channels, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.act_first(self.conv_first(x))
        feat = feat + self.bn_body(self.conv_body(self.body(feat)))
        return self.conv_last(self.upsample(feat))


_BLOCK = re.compile(r"^body\.(\d+)\.conv1\.weight$")


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise SRResNet keys; block count, width, norm and scale come from the tensors."""
    need = ("conv_first.weight", "conv_body.weight", "conv_last.weight", "act_first.weight")
    if not all(k in sd for k in need) or "upsample.0.conv.weight" not in sd:
        return None
    blocks = [int(m.group(1)) for k in sd if (m := _BLOCK.match(k))]
    nf = int(sd["conv_first.weight"].shape[0])
    scale = 1
    k = 0
    while f"upsample.{k}.conv.weight" in sd:
        ratio = int(sd[f"upsample.{k}.conv.weight"].shape[0]) // nf
        factor = math.isqrt(ratio)
        if factor * factor != ratio or factor not in (2, 3):
            return None
        scale *= factor
        k += 1
    try:
        upsample_factors(scale)
    except ValueError:
        return None
    return {
        "in_channels": int(sd["conv_first.weight"].shape[1]),
        "out_channels": int(sd["conv_last.weight"].shape[0]),
        "num_feat": nf,
        "num_block": (max(blocks) + 1) if blocks else 0,
        "scale": scale,
        "norm": "bn_body.weight" in sd,
    }


SPEC = ArchSpec(
    name="srresnet",
    defaults=DEFAULTS,
    factory=SRResNet,
    describe=describe,
    detect=detect,
    description=DESCRIPTIONS["srresnet"],
    extra={"tiny": {"num_feat": 8, "num_block": 2, "scale": 2}, "scales": (2, 3, 4, 8)},
)
