"""RRDBNet, the ESRGAN / Real-ESRGAN generator (Wang et al., 2018), BasicSR layout and keys.

``conv_first`` -> ``num_block`` Residual-in-Residual Dense Blocks (three 5-conv dense blocks
each, growth ``num_grow_ch``, LeakyReLU 0.2, residual scaling 0.2) -> ``conv_body`` (+ skip) ->
two nearest x2 up-samplings each followed by a 3x3 conv (``conv_up1``, ``conv_up2``) ->
``conv_hr`` -> ``conv_last``. Scale 2 and 1 networks pixel-unshuffle the input first (by 2 or 4,
so ``conv_first`` sees 4x or 16x the channels), as Real-ESRGAN does; the internal x4 then gives
x2 / x1. Dense-block convolutions are initialised with Kaiming-normal weights times 0.1.

Three key schemes load (see :func:`canonical_keys`): BasicSR / Real-ESRGAN (canonical), the
original ESRGAN repository (``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconv1``, ``HRconv``)
and the old ESRGAN ``model.N`` layout (``model.1.sub.N.RDBK.convJ.0``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, Descriptor, StateDict

UNSHUFFLE = {4: 1, 2: 2, 1: 4}
"""Pixel-unshuffle factor applied to the input, per network scale."""

PRACTICAL_CONTEXT = 32
"""Placeholder tiling overlap for RRDBNet (input pixels). The theoretical receptive radius is
hundreds of pixels, but the influence of far pixels decays at a rate set by the trained weights, so
the engine measures the real one (:func:`sr_cli.infer.context.measure_context`, stored in the
file's ``context`` metadata) and uses this only as a description before a measurement."""


@torch.no_grad()
def default_init_weights(module: nn.Module, scale: float = 1.0) -> None:
    """BasicSR's init: Kaiming-normal conv weights times ``scale``, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.mul_(scale)
            if m.bias is not None:
                m.bias.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; ``out = x + 0.2 * conv5([x, x1..x4])``."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: ``out = x + 0.2 * rdb3(rdb2(rdb1(x)))``."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """``forward(x)``: ``(B, num_in_ch, h, w)`` in [0, 1] -> ``(B, num_out_ch, h*s, w*s)``.

    For scale 2 (1) ``h`` and ``w`` must be multiples of 2 (4): the input is pixel-unshuffled.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in UNSHUFFLE:
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


DEFAULTS: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64,
                            "num_block": 23, "num_grow_ch": 32}


def receptive_radius(hp: Mapping[str, Any]) -> int:
    """Theoretical receptive radius in input pixels (zero-padded 3x3 convs everywhere).

    Backwards from an output pixel: conv_last, conv_hr, conv_up2 (radius 3 at 4x), nearest x2
    (``ceil(R/2)``), conv_up1, nearest x2, conv_body + 15 convs per RRDB + conv_first, then the
    pixel unshuffle by ``u`` (``u*R + u - 1`` input pixels).
    """
    u = UNSHUFFLE[int(hp["scale"])]
    r = 3
    r = -(-r // 2) + 1
    r = -(-r // 2) + 1 + 15 * int(hp["num_block"]) + 1
    return u * r + u - 1


def describe(hp: Mapping[str, Any]) -> Descriptor:
    """Context: the theoretical radius when small, else :data:`PRACTICAL_CONTEXT` (a placeholder:
    ``exact_context`` is False, the engine measures the weights' own radius)."""
    u = UNSHUFFLE[int(hp["scale"])]
    ctx = min(receptive_radius(hp), PRACTICAL_CONTEXT)
    ctx = -(-ctx // u) * u  # a multiple of the unshuffle factor
    return Descriptor(
        arch="rrdbnet",
        scale=int(hp["scale"]),
        in_channels=int(hp["num_in_ch"]),
        hparams=dict(hp),
        size_multiple=u,
        context=ctx,
        exact_context=ctx >= receptive_radius(hp),
        supports_half=True,
    )


_ORIG = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"),
     r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv1\.(weight|bias)$"), r"conv_up1.\1"),
    (re.compile(r"^upconv2\.(weight|bias)$"), r"conv_up2.\1"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
]
_OLD_SUB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}
_OLD = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Rename the original-ESRGAN and old ``model.N`` key schemes to BasicSR keys.

    Returns the input (as a dict) unchanged when it is in neither scheme.
    """
    keys = list(sd)
    if any(k.startswith("RRDB_trunk.") for k in keys):
        out: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            for pat, rep in _ORIG:
                if pat.match(k):
                    k = pat.sub(rep, k)
                    break
            out[k] = v
        return out
    if any(_OLD_SUB.match(k) for k in keys):
        out = {}
        for k, v in sd.items():
            if m := _OLD_SUB.match(k):
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            elif m := _OLD_BODY.match(k):
                out[f"conv_body.{m[2]}"] = v  # model.1.sub.<num_block>: the trunk conv
            elif (m := _OLD.match(k)) and m[1] in _OLD_TOP:
                out[f"{_OLD_TOP[m[1]]}.{m[2]}"] = v
            else:
                out[k] = v  # unknown: left as is, so loading reports it
        return out
    return dict(sd)


_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise canonical RRDBNet keys; scale from ``conv_first`` in/out-channel ratio."""
    need = ("conv_first.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
            "conv_hr.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    if not all(k in sd for k in need):
        return None
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    out_ch = int(last.shape[0])
    ratio, rem = divmod(int(first.shape[1]), out_ch)
    scales = {1: 4, 4: 2, 16: 1}
    if rem or ratio not in scales:
        return None
    blocks = [int(m.group(1)) for k in sd if (m := _BLOCK.match(k))]
    return {
        "num_in_ch": out_ch,
        "num_out_ch": out_ch,
        "scale": scales[ratio],
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(sd["body.0.rdb1.conv1.weight"].shape[0]),
    }


SPEC = ArchSpec(
    name="rrdbnet",
    defaults=DEFAULTS,
    factory=RRDBNet,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description="RRDBNet (ESRGAN / Real-ESRGAN generator), BasicSR layout, x1/x2/x4",
    extra={"tiny": {"num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 2},
           "scales": (1, 2, 4)},
)
