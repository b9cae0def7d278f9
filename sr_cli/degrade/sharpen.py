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


_BAND = 64  # output rows/columns per block of the banded products


def _banded_matrix(n: int, taps: torch.Tensor, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    key = (n, tuple(float(t) for t in taps.tolist()), dtype, str(device))
    m = _MATRICES.get(key)
    if m is None:
        m = reflect_filter_matrix(n, taps).to(device=device, dtype=dtype)
        if len(_MATRICES) >= 32:
            _MATRICES.pop(next(iter(_MATRICES)))
        _MATRICES[key] = m
    return m


_MATRICES: dict[tuple[object, ...], torch.Tensor] = {}


def _sep_blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable reflect-101 blur of ``(B, C, H, W)``: ``Mh @ x @ Mw^T`` with banded products.

    ``Mh``, ``Mw`` are :func:`reflect_filter_matrix` matrices; each block of ``_BAND`` output
    rows only multiplies the ``_BAND + len(taps) - 1`` input rows its band touches (the other
    entries are exact zeros), so this equals the dense product up to float summation order and
    costs about a third of it for 400-pixel sides and 51 taps.
    """
    b, c, h, w = x.shape
    p = taps.numel() // 2
    x = x.contiguous()
    mh = _banded_matrix(h, taps, x.dtype, x.device)
    mw = _banded_matrix(w, taps, x.dtype, x.device).t()
    tmp = torch.empty_like(x)
    x3, t3 = x.view(b * c, h, w), tmp.view(b * c, h, w)
    for r0 in range(0, h, _BAND):
        r1 = min(h, r0 + _BAND)
        c0, c1 = max(0, r0 - p), min(h, r1 + p)
        torch.matmul(mh[r0:r1, c0:c1], x3[:, c0:c1], out=t3[:, r0:r1])
    out = torch.empty_like(x)
    t2, o2 = tmp.view(-1, w), out.view(-1, w)
    for r0 in range(0, w, _BAND):
        r1 = min(w, r0 + _BAND)
        c0, c1 = max(0, r0 - p), min(w, r1 + p)
        torch.mm(t2[:, c0:c1], mw[c0:c1, r0:r1], out=o2[:, r0:r1])
    return out


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
    # in-place steps, each equal to the formula's operation (bit-identical to the plain form)
    residual = x - _sep_blur(x, taps)
    mask = residual.abs().mul_(255).gt_(threshold)  # 1.0 / 0.0 in x's dtype
    soft = _sep_blur(mask, taps)
    out = residual.mul_(weight).add_(x).clamp_(0, 1)  # K = clip(I + weight R, 0, 1)
    out.mul_(soft)  # M_s K
    return out.add_(soft.neg_().add_(1).mul_(x))  # + (1 - M_s) I
