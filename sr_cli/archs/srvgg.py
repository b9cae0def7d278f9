"""SRVGGNetCompact (Real-ESRGAN's compact VGG-style network, e.g. realesr-animevideov3).

``body`` is a flat ``nn.ModuleList``: ``body.0`` conv3x3 (in -> nf), then activation; ``num_conv``
times conv3x3 (nf -> nf) + activation; the last conv3x3 (nf -> out * upscale^2) is
``body.(2*num_conv+2)``. PReLU activations (one slope per channel) carry weights at the odd
indices. ``out = PixelShuffle(upscale)(body(x)) + nearest_upsample(x, upscale)``.

``out_scale`` (default: ``upscale``) resizes that output bicubically to ``out_scale`` times the
input, as the ncnn graphs of realesr-animevideov3-x2/x3 do (the x4 network followed by an
``Interp`` bicubic 0.5 / 0.75); it is not stored in the weights, so only metadata carries it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict
from sr_cli.archs.facts import DESCRIPTIONS
from sr_cli.archs.facts import SRVGG_DEFAULTS as DEFAULTS
from sr_cli.archs.facts import describe_srvgg as describe

ACT_TYPES = ("prelu", "relu", "leakyrelu")


def _act(act_type: str, nf: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=nf)
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    raise ValueError(f"SRVGGNetCompact act_type must be one of {ACT_TYPES}, got {act_type!r}")


class SRVGGNetCompact(nn.Module):
    """``forward(x)``: ``(B, num_in_ch, h, w)`` in [0, 1] -> ``(B, num_out_ch, h*s, w*s)``.

    The nearest-upsampled input is added to the output, so ``num_in_ch`` must equal
    ``num_out_ch``.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
        out_scale: int | None = None,
    ) -> None:
        super().__init__()
        if out_scale is not None and not 1 <= int(out_scale) <= upscale:
            raise ValueError(f"SRVGGNetCompact out_scale must be 1..{upscale}, got {out_scale}")
        self.out_scale = upscale if out_scale is None else int(out_scale)
        if num_in_ch != num_out_ch:
            raise ValueError("SRVGGNetCompact needs num_in_ch == num_out_ch (residual on input)")
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1),
                                   _act(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _act(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def init_for_training(self, base: str = "nearest") -> None:
        """Prepare a fresh network for training: it starts as a fixed upscale.

        ``"nearest"``: the last convolution is zeroed, so the network *is* its
        nearest-upsampled base (from a random last layer, a short schedule leaves the base's
        flat ``s x s`` blocks visible: the 4x4 pattern of the first shipped compact models).

        ``"bilinear"``: as nearest, and the first ``num_in_ch`` feature channels of every
        layer carry the input through unchanged (centre-tap identity, activation slope 1),
        from which the last convolution adds ``bilinear - nearest`` per output phase. The
        network then starts as bilinear upscaling (``align_corners=False``; zero padding at
        the image border), without the nearest base's blocks, and the key names and shapes
        stay the official ones (a plain SRVGGNetCompact file).
        """
        if base not in ("nearest", "bilinear"):
            raise ValueError(f"init base must be nearest or bilinear, got {base!r}")
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        last = convs[-1]
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
            if base == "nearest":
                return
            c, r = last.out_channels // self.upscale**2, self.upscale
            for conv in convs[:-1]:
                conv.weight[:c].zero_()
                for k in range(c):
                    conv.weight[k, k, 1, 1] = 1.0
                if conv.bias is not None:
                    conv.bias[:c].zero_()
            for act in self.body:
                if isinstance(act, nn.PReLU) and act.weight.numel() > 1:
                    act.weight[:c] = 1.0
            taps = []
            for i in range(r):  # 1-D bilinear weights over (left, centre, right) for phase i
                d = (i + 0.5) / r - 0.5
                taps.append(torch.tensor([max(-d, 0.0), 1.0 - abs(d), max(d, 0.0)]))
            for k in range(c):
                for i in range(r):
                    for j in range(r):
                        kern = torch.outer(taps[i], taps[j])
                        kern[1, 1] -= 1.0  # the nearest base is added by forward()
                        last.weight[k * r * r + i * r + j, k] = kern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        out = out + F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")
        if self.out_scale != self.upscale:
            size = (x.shape[-2] * self.out_scale, x.shape[-1] * self.out_scale)
            out = F.interpolate(out, size=size, mode="bicubic", align_corners=False)
        return out


_KEY = re.compile(r"^body\.(\d+)\.weight$")


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise ``body.N`` keys with convs at even indices.

    The activation is ``prelu`` when odd indices carry weights; otherwise it cannot be told
    apart from the weights and ``relu`` is assumed (metadata should say).
    """
    idx = sorted(int(m.group(1)) for k in sd if (m := _KEY.match(k)))
    if not idx or idx[0] != 0 or any(not k.startswith("body.") for k in sd):
        return None
    last = idx[-1]
    if last % 2 or last < 2:
        return None
    convs = range(0, last + 1, 2)
    if any(f"body.{i}.weight" not in sd or sd[f"body.{i}.weight"].ndim != 4 for i in convs):
        return None
    first, final = sd["body.0.weight"], sd[f"body.{last}.weight"]
    in_ch = int(first.shape[1])
    ratio, rem = divmod(int(final.shape[0]), in_ch)
    up = math.isqrt(ratio)
    if rem or up * up != ratio or up < 1:
        return None
    return {
        "num_in_ch": in_ch,
        "num_out_ch": in_ch,
        "num_feat": int(first.shape[0]),
        "num_conv": (last - 2) // 2,
        "upscale": up,
        "act_type": "prelu" if "body.1.weight" in sd else "relu",
    }


SPEC = ArchSpec(
    name="srvgg",
    defaults=DEFAULTS,
    factory=SRVGGNetCompact,
    describe=describe,
    detect=detect,
    description=DESCRIPTIONS["srvgg"],
    extra={"tiny": {"num_feat": 8, "num_conv": 2, "upscale": 2}, "scales": (1, 2, 3, 4)},
)
