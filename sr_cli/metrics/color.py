"""MATLAB-compatible colour conversion for metrics (``rgb2ycbcr`` luma, ``rgb2gray``)."""

from __future__ import annotations

import numpy as np
import torch

from sr_cli.errors import InputError, UsageError

# MATLAB rgb2ycbcr (BT.601, "studio swing" 16..235): Y = 16 + (65.481 R + 128.553 G + 24.966 B)
# with R, G, B in [0, 1].
_Y_COEF = (65.481, 128.553, 24.966)
# MATLAB rgb2gray: the luma row of rgb2ntsc's inverse, as MATLAB computes it.
_GRAY_COEF = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def _check(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.ndim != 4:
        raise UsageError(f"expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[1] not in (1, 3):
        raise InputError(f"expected 1 or 3 channels, got {x.shape[1]}")


def rgb_to_y(x: torch.Tensor, *, round_8bit: bool = False) -> torch.Tensor:
    """Luma Y of MATLAB's ``rgb2ycbcr`` on the 0..255 scale.

    Args:
        x: ``(B, 3, H, W)`` float RGB in [0, 255] (``(B, 1, H, W)`` gray passes through).
        round_8bit: round to integers as MATLAB does for ``uint8`` input (it returns uint8).

    Returns:
        ``(B, 1, H, W)`` float64, ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` in 16..235.
    """
    _check(x)
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 16.0 + (_Y_COEF[0] * r + _Y_COEF[1] * g + _Y_COEF[2] * b) / 255.0
    if round_8bit:
        y = torch.floor(y + 0.5)  # MATLAB rounds half away from zero; values are positive
    return y


def rgb_to_gray(x: torch.Tensor, *, round_8bit: bool = False) -> torch.Tensor:
    """MATLAB ``rgb2gray`` on the 0..255 scale: ``(B, 3, H, W)`` -> ``(B, 1, H, W)`` float64."""
    _check(x)
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x
    g = _GRAY_COEF[0] * x[:, 0:1] + _GRAY_COEF[1] * x[:, 1:2] + _GRAY_COEF[2] * x[:, 2:3]
    if round_8bit:
        g = torch.floor(g + 0.5)
    return g


def to_channels(pixels: np.ndarray, channel: str, *, round_8bit: bool = False) -> torch.Tensor:
    """``(H, W, C)`` uint8/uint16 pixels -> ``(1, C', H, W)`` float64 on the 0..255 scale.

    ``channel="y"``: MATLAB ``rgb2ycbcr`` luma in float64. ``round_8bit=True`` rounds it for
    8-bit input exactly as MATLAB returns uint8 (the NIQE / Ma convention); the default keeps
    the float luma (the PSNR/SSIM convention of BasicSR-style evaluations, which reproduces
    the literature's bicubic figures); gray input counts as R = G = B, so its Y is
    ``16 + 219/255 * gray``.
    ``channel="rgb"``: the colour channels (gray replicated to three).
    ``channel="gray"``: MATLAB ``rgb2gray``. Alpha channels are dropped. 16-bit input is scaled
    to 0..255 (not rounded).
    """
    if pixels.ndim != 3:
        raise InputError(f"unsupported image layout {pixels.shape}")
    eight_bit = pixels.dtype == np.uint8
    scale = 1.0 if eight_bit else 255.0 / 65535.0
    c = pixels.shape[2]
    if c in (1, 2):
        # Gray is treated as R = G = B (what MATLAB/BasicSR evaluations see after loading a
        # gray PNG as colour): Y = 16 + 219/255 * gray.
        arr = np.repeat(pixels[:, :, :1], 3, axis=2).astype(np.float64) * scale
    else:
        arr = pixels[:, :, :3].astype(np.float64) * scale
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    if channel == "rgb":
        return t
    if channel == "y":
        return rgb_to_y(t, round_8bit=round_8bit and eight_bit)
    if channel == "gray":
        return rgb_to_gray(t, round_8bit=round_8bit and eight_bit)
    raise UsageError(f"unknown channel {channel!r} (y, rgb)")
