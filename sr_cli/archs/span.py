"""SPAN, the Swift Parameter-free Attention Network (Wan et al., "Swift Parameter-free Attention
Network for Efficient Super-Resolution", CVPR 2024 workshops; NTIRE 2024 efficient-SR winner).
Upstream code: github.com/hongyuanyu/SPAN (``basicsr/archs/span_arch.py``); the community loader
spandrel (``spandrel/architectures/SPAN``) uses the same keys. Written here from the paper and
those sources, not copied.

Layout and keys (identical to the official checkpoints)::

    conv_1                    Conv3XC(in -> F)
    block_1 .. block_6        SPAB: c1_r, c2_r, c3_r (Conv3XC F -> F), SiLU after the first two,
                              out = (c3 + x) * (sigmoid(c3) - 0.5)   (the parameter-free attention)
    conv_2                    Conv3XC(F -> F) on block_6's output
    conv_cat                  1x1 conv of [conv_1 out, conv_2 out, block_1 out, block_6's c1_r out]
    upsampler.0               3x3 conv F -> out * s^2, then PixelShuffle(s)

Conv3XC is a re-parameterisable 3x3 convolution: a 1x1 skip ``sk`` plus ``conv`` = 1x1 (C -> 2C),
3x3 (2C -> 2C'), 1x1 (2C' -> C'). Upstream's inference path folds these into one 3x3 kernel
(``eval_conv``, recomputed from ``sk``/``conv`` on every forward) applied with zero padding 1;
this module does the same fold, differentiably, so training and inference compute the same
function. The stored ``eval_conv.*`` tensors are derived data: :func:`canonical_keys` drops them
(upstream overwrites them before use too), and files written here do not carry them.

Input normalisation (``norm``, the default): ``(x - rgb_mean) * 255`` with DIV2K's mean
``(0.4488, 0.4371, 0.4040)``; the output is not de-normalised (the network learns [0, 1]
directly, as upstream). A checkpoint trained without it carries a ``no_norm`` buffer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, Descriptor, StateDict

RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""DIV2K mean subtracted before the network (not in the weights)."""

IMG_RANGE = 255.0
"""Input scaling after mean subtraction (not in the weights)."""

NUM_BLOCKS = 6
"""SPAN has six SPABs (fixed in the architecture, not a hyperparameter upstream)."""


class Conv3XC(nn.Module):
    """A 3x3 convolution trained as ``sk(x) + conv(x)`` and run folded into one kernel.

    ``forward`` folds ``1x1 -> 3x3 -> 1x1`` (and the 1x1 skip, centred in a 3x3 kernel) into a
    single 3x3 kernel and bias, then convolves ``x`` with zero padding 1.
    """

    def __init__(self, c_in: int, c_out: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),
            nn.Conv2d(c_out * gain, c_out, 1),
        )

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent 3x3 kernel ``(c_out, c_in, 3, 3)`` and bias ``(c_out,)``."""
        c1, c2, c3 = self.conv[0], self.conv[1], self.conv[2]
        assert isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d)
        assert isinstance(c3, nn.Conv2d)
        w1 = c1.weight.flatten(1).contiguous()  # (m, i)
        w2 = c2.weight.contiguous()  # (n, m, 3, 3)
        w3 = c3.weight.flatten(1).contiguous()  # (o, n)
        assert c1.bias is not None and c2.bias is not None and c3.bias is not None
        # out[o] = sum_n w3[o,n] (sum_{m,k} w2[n,m,k] (sum_i w1[m,i] x[i] + b1[m]) + b2[n]) + b3[o]
        n, m = w2.shape[:2]
        w32 = (w3 @ w2.view(n, m * 9)).view(-1, m, 3, 3)  # (o, m, 3, 3)
        weight = (w32.permute(0, 2, 3, 1).contiguous() @ w1).permute(0, 3, 1, 2)  # (o, i, 3, 3)
        # biases as multiply-and-sum, not matrix-vector products: BLAS gemv may round
        # differently for tensors at other addresses, which breaks bit-exact reloads
        inner = (w2.sum(dim=(2, 3)) * c1.bias).sum(dim=1) + c2.bias  # (n,)
        bias = (w3 * inner).sum(dim=1) + c3.bias
        assert self.sk.bias is not None
        weight = weight + F.pad(self.sk.weight, (1, 1, 1, 1))
        return weight, bias + self.sk.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded()
        return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1)


class SPAB(nn.Module):
    """Swift parameter-free attention block; returns (output, first conv's pre-activation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(F.silu(self.c2_r(F.silu(out1))))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    """``forward(x)``: ``(B, num_in_ch, h, w)`` in [0, 1] -> ``(B, num_out_ch, h*s, w*s)``.

    A 1-channel input is normalised with the mean of :data:`RGB_MEAN`.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        feature_channels: int = 48,
        upscale: int = 4,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if upscale < 1:
            raise ValueError(f"SPAN upscale must be >= 1, got {upscale}")
        self.norm = bool(norm)
        if not self.norm:
            self.register_buffer("no_norm", torch.zeros(1))  # upstream's marker key
        mean = RGB_MEAN if num_in_ch == 3 else (sum(RGB_MEAN) / 3,) * num_in_ch
        self._mean = mean
        f = feature_channels
        self.conv_1 = Conv3XC(num_in_ch, f)
        self.block_1 = SPAB(f)
        self.block_2 = SPAB(f)
        self.block_3 = SPAB(f)
        self.block_4 = SPAB(f)
        self.block_5 = SPAB(f)
        self.block_6 = SPAB(f)
        self.conv_cat = nn.Conv2d(4 * f, f, 1)
        self.conv_2 = Conv3XC(f, f)
        self.upsampler = nn.Sequential(nn.Conv2d(f, num_out_ch * upscale * upscale, 3, 1, 1),
                                       nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm:
            mean = torch.tensor(self._mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) * IMG_RANGE
        feat = self.conv_1(x)
        b1, _ = self.block_1(feat)
        b = b1
        for block in (self.block_2, self.block_3, self.block_4, self.block_5):
            b, _ = block(b)
        b6, b6_first = self.block_6(b)
        out = self.conv_cat(torch.cat([feat, self.conv_2(b6), b1, b6_first], 1))
        return self.upsampler(out)


DEFAULTS: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 48,
                            "upscale": 4, "norm": True}


def receptive_radius() -> int:
    """Input pixels on each side that reach an output pixel: conv_1, 6 blocks x 3 and conv_2
    are 3x3 (radius 1 each), conv_cat 1x1, the upsampling conv 3x3 at input resolution."""
    return 1 + 3 * NUM_BLOCKS + 1 + 1


def describe(hp: Mapping[str, Any]) -> Descriptor:
    """Context: exact (every layer is a 3x3 or 1x1 convolution or pixel-wise)."""
    return Descriptor(
        arch="span",
        scale=int(hp["upscale"]),
        in_channels=int(hp["num_in_ch"]),
        hparams=dict(hp),
        context=receptive_radius(),
        supports_half=True,
    )


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Drop upstream's derived ``*.eval_conv.*`` tensors (the folded kernels, recomputed)."""
    if "conv_1.sk.weight" not in sd:
        return dict(sd)
    return {k: v for k, v in sd.items() if ".eval_conv." not in k}


def _scale_and_out(channels: int, in_ch: int) -> tuple[int, int] | None:
    for out_ch in dict.fromkeys((in_ch, 3, 1)):
        ratio, rem = divmod(channels, out_ch)
        s = math.isqrt(ratio)
        if not rem and s >= 1 and s * s == ratio:
            return s, out_ch
    return None


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise SPAN keys; channels from ``conv_1.sk``, scale and output channels from the
    upsampling conv, ``norm`` from the ``no_norm`` marker."""
    need = ["conv_1.sk.weight", "conv_cat.weight", "conv_2.sk.weight", "upsampler.0.weight"]
    need += [f"block_{i}.c{j}_r.sk.weight" for i in range(1, NUM_BLOCKS + 1) for j in (1, 2, 3)]
    if not all(k in sd for k in need) or "block_7.c1_r.sk.weight" in sd:
        return None
    sk = sd["conv_1.sk.weight"]
    f, in_ch = int(sk.shape[0]), int(sk.shape[1])
    if tuple(sd["conv_cat.weight"].shape) != (f, 4 * f, 1, 1):
        return None
    found = _scale_and_out(int(sd["upsampler.0.weight"].shape[0]), in_ch)
    if found is None:
        return None
    return {"num_in_ch": in_ch, "num_out_ch": found[1], "feature_channels": f,
            "upscale": found[0], "norm": "no_norm" not in sd}


SPEC = ArchSpec(
    name="span",
    defaults=DEFAULTS,
    factory=SPAN,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description="SPAN (Swift Parameter-free Attention Network, NTIRE 2024 efficient SR)",
    extra={"tiny": {"feature_channels": 8, "upscale": 2}, "scales": (1, 2, 3, 4)},
)
