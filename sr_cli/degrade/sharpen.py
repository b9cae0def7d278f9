"""Unsharp-mask (USM) sharpening, as Real-ESRGAN sharpens its ground truth.

``B = G * I`` (Gaussian blur, separable, reflect padding), ``R = I - B``,
``K = clip(I + weight R, 0, 1)``, mask ``M = [|R| * 255 > threshold]`` softened by the same blur,
``out = M_s K + (1 - M_s) I``. The Gaussian is ``radius`` (odd; even is bumped by 1) taps with
OpenCV's default ``sigma = 0.3 ((radius - 1)/2 - 1) + 0.8`` (8.0 for 51 taps).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sr_cli.errors import InputError, UsageError

__all__ = ["gaussian_taps", "reflect_filter_matrix", "usm_sharp"]


@lru_cache(maxsize=16)
def _taps(size: int, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax * ax) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_taps(size: int, sigma: float = 0.0) -> torch.Tensor:
    """1-D Gaussian of ``size`` taps (cv2.getGaussianKernel semantics, sigma <= 0: from size)."""
    if size < 1 or size % 2 == 0:
        raise UsageError(f"Gaussian size must be odd and positive, got {size}")
    return _taps(int(size), float(sigma)).clone()


def reflect_filter_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` matrix ``M`` with ``M @ v`` = 1-D correlation of ``v`` with ``taps`` under
    reflect-101 padding (cv2's default border, torch's "reflect"). Needs ``n > len(taps)//2``."""
    k = taps.numel()
    p = k // 2
    idx = torch.arange(n)[:, None] + torch.arange(-p, p + 1)[None, :]
    idx = idx.abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, idx, taps.to(torch.float64).expand(n, k).contiguous())
    return m


def _sep_blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    # Separable blur as two matrix products (much faster than a depthwise conv on CPU).
    h, w = x.shape[-2:]
    mh = reflect_filter_matrix(h, taps).to(device=x.device, dtype=x.dtype)
    mw = mh if w == h else reflect_filter_matrix(w, taps).to(device=x.device, dtype=x.dtype)
    return mh @ x @ mw.t()


def usm_sharp(
    x: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0,
    sigma: float = 0.0,
) -> torch.Tensor:
    """Sharpen ``(B, C, H, W)`` in [0, 1] by unsharp masking (see the module docstring).

    Defaults are Real-ESRGAN's (radius 50 -> 51 taps, sigma 8, weight 0.5, threshold 10).
    Raises :class:`InputError` when the image is not larger than ``radius // 2`` pixels.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise UsageError(f"usm_sharp expects a float (B, C, H, W) tensor, got {tuple(x.shape)}")
    size = radius + 1 if radius % 2 == 0 else radius
    taps = gaussian_taps(size, sigma)
    if min(x.shape[-2:]) <= size // 2:
        raise InputError(
            f"image {x.shape[-1]}x{x.shape[-2]} is too small for USM sharpening "
            f"({size}-tap blur needs more than {size // 2} pixels per side)"
        )
    blur = _sep_blur(x, taps)
    residual = x - blur
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = _sep_blur(mask, taps)
    k = torch.clamp(x + weight * residual, 0, 1)
    return soft * k + (1 - soft) * x
