"""Non-learned baselines: ``bicubic``, ``lanczos`` and ``nearest`` interpolation.

Each is MATLAB's ``imresize`` (:func:`sr_cli.degrade.resize.imresize`): ``bicubic`` is the Keys
cubic (a = -0.5) with antialiasing when shrinking, ``lanczos`` is Lanczos-3 (antialiased when
shrinking), ``nearest`` is nearest neighbour. They take any channel count and any factor
``scale > 0`` (``hparams["scale"]``, a float; the output is ``ceil(h*scale) x ceil(w*scale)``).
Their :class:`~sr_cli.archs.base.Descriptor` has ``scale = 0`` ("any") and ``learned = False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sr_cli.archs.base import ArchSpec, Descriptor
from sr_cli.archs.facts import (
    BASELINE_DEFAULT_SCALE,
    BASELINE_KERNEL_OF,
    DESCRIPTIONS,
    describe_baseline,
)
from sr_cli.degrade.resize import imresize

DEFAULT_SCALE = BASELINE_DEFAULT_SCALE
KERNEL_OF = BASELINE_KERNEL_OF  # baseline id -> imresize kernel name


class Interpolate(nn.Module):
    """``forward(x)``: ``(B, C, h, w)`` float -> ``(B, C, ceil(h*scale), ceil(w*scale))``.

    Values are not clamped (cubic and Lanczos overshoot slightly near edges).
    """

    def __init__(self, scale: float = DEFAULT_SCALE, kernel: str = "cubic") -> None:
        super().__init__()
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale, kernel=self.kernel, antialias=True)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, kernel={self.kernel!r}"


def _make(name: str, description: str) -> ArchSpec:
    kernel = KERNEL_OF[name]

    def factory(scale: float = DEFAULT_SCALE) -> nn.Module:
        return Interpolate(float(scale), kernel)

    def describe(hp: Mapping[str, Any]) -> Descriptor:
        return describe_baseline(name, hp)

    return ArchSpec(
        name=name,
        defaults={"scale": DEFAULT_SCALE},
        factory=factory,
        describe=describe,
        description=description,
        extra={"tiny": {"scale": 2.0}, "scales": (0.5, 1.5, 2.0, 3.0), "learned": False},
    )


SPECS = [
    _make("bicubic", DESCRIPTIONS["bicubic"]),
    _make("lanczos", DESCRIPTIONS["lanczos"]),
    _make("nearest", DESCRIPTIONS["nearest"]),
]
