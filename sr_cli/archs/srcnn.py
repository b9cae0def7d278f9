"""SRCNN (Dong et al., 2014/2016): three convolutions on a bicubic-upsampled image.

The 9-5-5 network with 64/32 filters: patch extraction (``conv1``, f1 x f1, n1 filters),
non-linear mapping (``conv2``, f2 x f2, n2 filters) and reconstruction (``conv3``, f3 x f3).

Differences from the paper, on purpose:

- The paper used *valid* convolutions (the output shrinks by f1+f2+f3-3 pixels) and compared
  only the centre. Here every convolution is padded (replicate padding, which keeps the image
  borders plausible), so the output has exactly ``h*s x w*s`` pixels like every other network.
- ``forward`` does the bicubic pre-upsampling itself (MATLAB ``imresize`` bicubic through
  :func:`sr_cli.degrade.resize.imresize`), so the network follows the common tensor contract
  (LR in, HR out).
- A 1-channel model (the paper's Y-channel SRCNN) given an RGB image converts it to BT.601
  YCbCr with MATLAB's ``rgb2ycbcr`` convention (Y in 16..235, Cb/Cr in 16..240, divided by 255),
  runs the network on Y, upsamples Cb/Cr bicubically and converts back to RGB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict
from sr_cli.archs.facts import DESCRIPTIONS
from sr_cli.archs.facts import SRCNN_DEFAULTS as DEFAULTS
from sr_cli.archs.facts import describe_srcnn as describe
from sr_cli.degrade.resize import imresize
from sr_cli.errors import InputError

# MATLAB rgb2ycbcr for RGB in [0, 1]: ycbcr = (OFFSET + M @ rgb) / 255, each in [0, 1].
_M = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
)
_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """BT.601 YCbCr as MATLAB's ``rgb2ycbcr``, on ``(B, 3, H, W)`` RGB in [0, 1].

    Returns ``(B, 3, H, W)``: Y in [16/255, 235/255], Cb/Cr in [16/255, 240/255].
    Formula: ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (and Cb/Cr likewise).
    """
    m = (_M / 255.0).to(x)
    off = (_OFFSET / 255.0).to(x)
    return torch.einsum("ij,bjhw->bihw", m, x) + off.view(1, 3, 1, 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: ``(B, 3, H, W)`` YCbCr -> RGB (not clamped)."""
    minv = torch.linalg.inv(_M / 255.0).to(x)
    off = (_OFFSET / 255.0).to(x)
    return torch.einsum("ij,bjhw->bihw", minv, x - off.view(1, 3, 1, 1))


class SRCNN(nn.Module):
    """SRCNN: ``forward(x)`` maps ``(B, C, h, w)`` in [0, 1] to ``(B, C, h*s, w*s)``.

    ``C`` must equal ``in_channels``, except that a 1-channel model also accepts ``C = 3`` (RGB),
    processed on the Y channel as described in the module docstring.
    """

    def __init__(
        self,
        in_channels: int = 1,
        scale: int = 3,
        n1: int = 64,
        n2: int = 32,
        f1: int = 9,
        f2: int = 5,
        f3: int = 5,
    ) -> None:
        super().__init__()
        for f in (f1, f2, f3):
            if f % 2 != 1:
                raise ValueError(f"SRCNN filter sizes must be odd, got {f}")
        self.in_channels = in_channels
        self.scale = scale
        self.conv1 = nn.Conv2d(in_channels, n1, f1, padding=f1 // 2, padding_mode="replicate")
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2, padding_mode="replicate")
        self.conv3 = nn.Conv2d(n2, in_channels, f3, padding=f3 // 2, padding_mode="replicate")
        self.relu = nn.ReLU(inplace=True)

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.conv3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, self._net)

    def forward_with(
        self, x: torch.Tensor, body: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``forward`` with ``body`` in place of the three convolutions (e.g. their ncnn
        graph, :mod:`sr_cli.infer.ncnn_export`): the upsampling and YCbCr steps stay here."""
        c = x.shape[1]
        up = imresize(x, scale=float(self.scale), kernel="cubic")
        if c == self.in_channels:
            return body(up)
        if self.in_channels == 1 and c == 3:
            ycc = rgb_to_ycbcr(up)
            y = body(ycc[:, :1])
            return ycbcr_to_rgb(torch.cat([y, ycc[:, 1:]], dim=1))
        raise InputError(f"SRCNN with {self.in_channels} channel(s) cannot take {c}-channel input")


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise ``conv1/conv2/conv3`` keys; filter sizes and widths come from the shapes.

    The scale is not stored in SRCNN's weights: it is 3 (the paper's usual factor) unless the
    file's metadata says otherwise.
    """
    keys = {"conv1.weight", "conv2.weight", "conv3.weight"}
    if not keys <= set(sd) or len([k for k in sd if k.endswith(".weight")]) != 3:
        return None
    w1, w2, w3 = sd["conv1.weight"], sd["conv2.weight"], sd["conv3.weight"]
    if any(w.ndim != 4 for w in (w1, w2, w3)):
        return None
    return {
        "in_channels": int(w1.shape[1]),
        "scale": DEFAULTS["scale"],
        "n1": int(w1.shape[0]),
        "n2": int(w2.shape[0]),
        "f1": int(w1.shape[-1]),
        "f2": int(w2.shape[-1]),
        "f3": int(w3.shape[-1]),
    }


SPEC = ArchSpec(
    name="srcnn",
    defaults=DEFAULTS,
    factory=SRCNN,
    describe=describe,
    detect=detect,
    description=DESCRIPTIONS["srcnn"],
    extra={"tiny": {"in_channels": 1, "scale": 2, "n1": 8, "n2": 4, "f1": 5, "f2": 3, "f3": 3},
           "scales": (2, 3, 4), "scale_in_weights": False},
)
