"""Real-CUGAN (bilibili AI Lab, 2022): the ``UpCunet2x`` / ``UpCunet3x`` / ``UpCunet4x`` anime
upscalers, a cascade of two small U-Nets with squeeze-and-excitation (SE) gates. Upstream code:
github.com/bilibili/ailab (``Real-CUGAN/upcunet_v3.py``, MIT); the community loader spandrel
(``spandrel/architectures/RealCUGAN``) detects the same keys. Written here from those sources,
not copied.

Every official file of a scale has the same structure: "conservative", "no-denoise" and
"denoise1x/2x/3x" differ only in their weights. The "pro" releases (2x and 3x) have the same
layers plus a ``pro`` key; upstream then feeds the network ``0.7 * x + 0.15`` and maps its output
back with ``(y - 0.15) / 0.7``; here that happens inside ``forward`` (hyperparameter ``pro``; the
network carries a ``pro`` buffer so that files written here keep the marker).

Layout and keys (identical to the official checkpoints; all convolutions are *valid*, i.e. not
padded, so each stage shrinks its input and the network pads the image itself)::

    unet1   conv1 (c -> 32 -> 64, two 3x3), conv1_down (2x2 stride 2), conv2 (64 -> 128 -> 64,
            two 3x3, then an SE gate ``seblock``), conv2_up (2x2 transposed), conv3 (3x3) on
            conv1's output cropped by 4 plus the upsampled branch, conv_bottom (transposed:
            4x4 stride 2 for x2/x4, 5x5 stride 3 for x3) -> the image at the target scale
            (x4: 64 feature channels at x2)
    unet2   the same idea one level deeper at the output resolution: conv1, conv1_down, conv2
            (SE), conv2_down, conv3 (SE), conv3_up, conv4 (SE) on conv2's output cropped by 4
            plus the upsampled branch, conv4_up, conv5 on conv1's output cropped by 16 plus
            that, conv_bottom (3x3)
    output  unet2's output + unet1's output cropped by 20;
            x4 only: conv_final (3x3, 64 -> 4c), PixelShuffle(2), plus the nearest-x4 input

The network reflect-pads its input by 18 (x2), 14 (x3) or 19 (x4) pixels and to a multiple of
2 (x2, x4) or 4 (x3), as upstream's untiled mode does; the output is exactly ``(h*s, w*s)``.
Inputs too small to reflect that far (under about 20 pixels, where upstream fails) are
replicate-padded instead.
LeakyReLU slopes are 0.1 everywhere; an SE gate is
``x * sigmoid(conv2(relu(conv1(mean over the whole feature map of x))))``.

Upstream's ``alpha`` (a factor on unet2's conv4 output, "enhancement strength") is fixed at its
default 1. Upstream's other 2x file, ``UpCunet2x_fast`` (a pixel-unshuffled 12-channel input),
is not supported: it fails detection.

Tiling: the convolutions reach :func:`receptive_radius` input pixels, but each SE gate averages
its whole feature map, so the output depends on the whole image and no finite tiling context
is exact. Upstream's tiled modes compute the SE means over all tiles first ("cache mode");
the engine's tiler has no such pass, so :func:`describe` marks the context as not exact and the
engine measures the weights' practical context (see ``docs/models.md``).
:func:`shared_se_statistics` runs tiles with the SE means of a whole image (the tests use it to
check that :func:`receptive_radius` is the exact reach of the convolutions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict, fits, inferred_state
from sr_cli.archs.facts import (
    DESCRIPTIONS,
    REALCUGAN_DEFAULTS,
    REALCUGAN_GEOMETRY,
    describe_realcugan,
    receptive_radius_realcugan,
)

DEFAULTS = REALCUGAN_DEFAULTS
describe = describe_realcugan
receptive_radius = receptive_radius_realcugan

PRO_SCALE, PRO_SHIFT = 0.7, 0.15
"""The pro models' input range: ``x * 0.7 + 0.15`` in, ``(y - 0.15) / 0.7`` out."""

SLOPE = 0.1


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


def _crop(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[..., n:-n, n:-n]


class SEBlock(nn.Module):
    """Squeeze-and-excitation gate with biases (channel reduction 8).

    The mean is taken in float32 for fp16/bf16 input (as upstream does for fp16). When
    ``pinned`` holds a ``(B or 1, C, 1, 1)`` mean it is used instead of this input's own (see
    :func:`shared_se_statistics`); ``record`` keeps the last mean computed.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)
        self.pinned: torch.Tensor | None = None
        self.record = False
        self.recorded: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pinned is not None:
            mean = self.pinned.to(x.dtype)
        else:
            low = x.dtype in (torch.float16, torch.bfloat16)
            mean = x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32 if low else None)
            mean = mean.to(x.dtype)
            if self.record:
                self.recorded = mean.detach()
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(mean))))
        return x * gate


class UNetConv(nn.Module):
    """Two valid 3x3 convolutions with LeakyReLU, then an optional SE gate."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, se: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_mid, 3), nn.LeakyReLU(SLOPE),
                                  nn.Conv2d(c_mid, c_out, 3), nn.LeakyReLU(SLOPE))
        self.seblock = SEBlock(c_out) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        return self.seblock(z) if self.seblock is not None else z


class UNet1(nn.Module):
    """The shallow U-Net that upsamples: valid convs, one 2x level, a transposed-conv output
    (``kernel, stride, padding`` = 4, 2, 3 for a 2x step; 5, 3, 2 for 3x)."""

    def __init__(self, c_in: int, c_out: int, bottom: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = UNetConv(c_in, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2)
        self.conv2 = UNetConv(64, 128, 64, se=True)
        self.conv2_up = nn.ConvTranspose2d(64, 64, 2, 2)
        self.conv3 = nn.Conv2d(64, 64, 3)
        k, s, p = bottom
        self.conv_bottom = nn.ConvTranspose2d(64, c_out, k, s, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = _lrelu(self.conv2_up(self.conv2(_lrelu(self.conv1_down(x1)))))
        x3 = _lrelu(self.conv3(_crop(x1, 4) + x2))
        return self.conv_bottom(x3)  # type: ignore[no-any-return]


class UNet2(nn.Module):
    """The deeper U-Net at the output resolution (two 2x levels), a valid 3x3 output conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = UNetConv(c_in, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2)
        self.conv2 = UNetConv(64, 64, 128, se=True)
        self.conv2_down = nn.Conv2d(128, 128, 2, 2)
        self.conv3 = UNetConv(128, 256, 128, se=True)
        self.conv3_up = nn.ConvTranspose2d(128, 128, 2, 2)
        self.conv4 = UNetConv(128, 64, 64, se=True)
        self.conv4_up = nn.ConvTranspose2d(64, 64, 2, 2)
        self.conv5 = nn.Conv2d(64, 64, 3)
        self.conv_bottom = nn.Conv2d(64, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(_lrelu(self.conv1_down(x1)))
        x3 = _lrelu(self.conv3_up(self.conv3(_lrelu(self.conv2_down(x2)))))
        x4 = _lrelu(self.conv4_up(self.conv4(_crop(x2, 4) + x3)))
        x5 = _lrelu(self.conv5(_crop(x1, 16) + x4))
        return self.conv_bottom(x5)  # type: ignore[no-any-return]


class RealCUGAN(nn.Module):
    """``forward(x)``: ``(B, c, h, w)`` in [0, 1] -> ``(B, c, h*s, w*s)``, ``s`` in 2, 3, 4."""

    def __init__(self, in_channels: int = 3, scale: int = 2, pro: bool = False) -> None:
        super().__init__()
        if scale not in REALCUGAN_GEOMETRY:
            raise ValueError(f"Real-CUGAN has scales 2, 3 and 4, not {scale}")
        c = int(in_channels)
        self.scale = int(scale)
        self.pad, self.multiple = REALCUGAN_GEOMETRY[self.scale]
        self.is_pro = bool(pro)
        if self.is_pro:
            self.register_buffer("pro", torch.zeros(1))  # upstream's marker key
        if self.scale == 4:
            self.unet1 = UNet1(c, 64, (4, 2, 3))
            self.unet2 = UNet2(64, 64)
            self.conv_final = nn.Conv2d(64, 4 * c, 3)
        else:
            self.unet1 = UNet1(c, c, (4, 2, 3) if self.scale == 2 else (5, 3, 2))
            self.unet2 = UNet2(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.is_pro:
            x = x * PRO_SCALE + PRO_SHIFT
        m, p, s = self.multiple, self.pad, self.scale
        ph, pw = (-h) % m, (-w) % m
        if min(h, w) <= p + max(ph, pw):  # reflection needs more pixels than there are
            y = F.pad(x, (p, p + pw, p, p + ph), mode="replicate")
        else:
            y = F.pad(x, (p, p + pw, p, p + ph), mode="reflect")
        y1 = self.unet1(y)
        out = self.unet2(y1) + _crop(y1, 20)
        if s == 4:
            out = F.pixel_shuffle(_crop(self.conv_final(out), 1), 2)
        out = out[..., : h * s, : w * s]
        if s == 4:
            out = out + F.interpolate(x, scale_factor=4, mode="nearest")
        if self.is_pro:
            out = (out - PRO_SHIFT) / PRO_SCALE
        return out

    def se_blocks(self) -> list[SEBlock]:
        return [m for m in self.modules() if isinstance(m, SEBlock)]


@contextlib.contextmanager
def shared_se_statistics(net: RealCUGAN, x: torch.Tensor) -> Iterator[None]:
    """Within the block, every SE gate of ``net`` uses the means of a whole-image run on ``x``
    instead of its input's own, so tiles of ``x`` (cut on multiples of ``size_multiple`` with
    at least :func:`receptive_radius` of context) give the untiled output."""
    blocks = net.se_blocks()
    for b in blocks:
        b.record, b.pinned = True, None
    try:
        with torch.no_grad():
            net(x)
        for b in blocks:
            b.pinned, b.record = b.recorded, False
        yield
    finally:
        for b in blocks:
            b.pinned, b.record, b.recorded = None, False, None


def _factory(**hp: Any) -> RealCUGAN:
    return RealCUGAN(**hp)


_SE_KEYS = ("unet1.conv2", "unet2.conv2", "unet2.conv3", "unet2.conv4")


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Upstream's ``pro`` marker may hold any value: normalise it to this network's buffer."""
    if "pro" not in sd or "unet1.conv1.conv.0.weight" not in sd:
        return dict(sd)
    out = dict(sd)
    out["pro"] = torch.zeros(1)
    return out


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise Real-CUGAN keys. Channels from ``unet1.conv1``; x4 has ``conv_final``; x3's
    ``unet1.conv_bottom`` is a 5x5 transposed conv (x2: 4x4); pro from the ``pro`` marker. The
    key set and every shape must then equal the inferred network's (so ``UpCunet2x_fast``,
    whose unet1 takes 12 pixel-unshuffled channels, is refused)."""
    need = ["unet1.conv1.conv.0.weight", "unet1.conv_bottom.weight", "unet2.conv_bottom.weight",
            *(f"{k}.seblock.conv1.weight" for k in _SE_KEYS)]
    if not all(k in sd for k in need):
        return None
    c = int(sd["unet1.conv1.conv.0.weight"].shape[1])
    if "conv_final.weight" in sd:
        scale = 4
    else:
        scale = 3 if int(sd["unet1.conv_bottom.weight"].shape[-1]) == 5 else 2
    hp: dict[str, Any] = {"in_channels": c, "scale": scale, "pro": "pro" in sd}
    expected = inferred_state(RealCUGAN, hp)
    return hp if expected is not None and fits(expected, sd) else None


def parameter_count(in_channels: int = 3, scale: int = 2) -> int:
    """Parameters of the layer list in the module docstring, counted by hand (a check of the
    module's layer shapes independent of its code)."""

    def conv(ci: int, co: int, k: int) -> int:
        return ci * co * k * k + co

    def unetconv(ci: int, cm: int, co: int, se: bool) -> int:
        n = conv(ci, cm, 3) + conv(cm, co, 3)
        return n + (conv(co, co // 8, 1) + conv(co // 8, co, 1) if se else 0)

    def unet1(ci: int, co: int, k: int) -> int:
        return (unetconv(ci, 32, 64, False) + conv(64, 64, 2) + unetconv(64, 128, 64, True)
                + conv(64, 64, 2) + conv(64, 64, 3) + conv(64, co, k))

    def unet2(ci: int, co: int) -> int:
        return (unetconv(ci, 32, 64, False) + conv(64, 64, 2) + unetconv(64, 64, 128, True)
                + conv(128, 128, 2) + unetconv(128, 256, 128, True) + conv(128, 128, 2)
                + unetconv(128, 64, 64, True) + conv(64, 64, 2) + conv(64, 64, 3)
                + conv(64, co, 3))

    c = in_channels
    if scale == 4:
        return unet1(c, 64, 4) + unet2(64, 64) + conv(64, 4 * c, 3)
    return unet1(c, c, 4 if scale == 2 else 5) + unet2(c, c)


SPEC = ArchSpec(
    name="realcugan",
    defaults=DEFAULTS,
    factory=_factory,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description=DESCRIPTIONS["realcugan"],
    extra={"tiny": {"scale": 2}, "scales": (2, 3, 4)},
)
