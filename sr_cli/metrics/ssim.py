"""SSIM as Wang et al.'s MATLAB ``ssim_index`` (and BasicSR's ``calculate_ssim``) compute it."""

from __future__ import annotations

import torch

from sr_cli.errors import InputError
from sr_cli.metrics.psnr import check_pair

K1, K2 = 0.01, 0.03


def gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1-D float64 taps whose outer product is MATLAB ``fspecial('gaussian', size, sigma)``."""
    r = (size - 1) / 2.0
    ax = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-(ax**2) / (2.0 * sigma * sigma))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)``: ``(size, size)`` normalised to sum 1."""
    g = gaussian_taps(size, sigma)
    w = g[:, None] * g[None, :]
    w[w < torch.finfo(torch.float64).eps * w.max()] = 0
    return (w / w.sum()).to(dtype=dtype, device=device)


def _band(length: int, taps: torch.Tensor) -> torch.Tensor:
    """``(length - n + 1, length)`` banded matrix ``T`` with ``T[i, i + j] = taps[j]``."""
    n = taps.numel()
    out = length - n + 1
    t = torch.zeros(out, length, dtype=taps.dtype, device=taps.device)
    rows = torch.arange(out, device=taps.device)
    for j in range(n):
        t[rows, rows + j] = taps[j]
    return t


def filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``filter2(taps' * taps, x, 'valid')`` on ``(..., H, W)``.

    Separable, as two products with banded matrices (``Th @ x @ Tw^T``): exact in float64 and
    far faster on CPU than a float64 conv2d, which has no optimised kernel.
    """
    k = taps.to(dtype=x.dtype, device=x.device)
    h, w = x.shape[-2], x.shape[-1]
    if h < k.numel() or w < k.numel():
        raise InputError(f"a {w}x{h} image is smaller than the {k.numel()}-tap filter")
    return _band(h, k) @ x @ _band(w, k).T


def ssim_maps(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 255.0,
              taps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps (valid window) of ``(B, C, H, W)`` float64 inputs.

    Returns ``(ssim_map, cs_map)``, each ``(B, C, H-10, W-10)`` for the 11x11 window:
    ``ssim = ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``,
    ``cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2)``, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``.
    ``taps``: 1-D Gaussian taps (default: 11 taps, sigma 1.5).
    """
    if taps is None:
        taps = gaussian_taps()
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    stats = filter_valid(torch.stack([x, y, x * x, y * y, x * y]), taps)
    mu1, mu2 = stats[0], stats[1]
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = stats[2] - mu1_sq
    s2 = stats[3] - mu2_sq
    s12 = stats[4] - mu12
    cs = (2 * s12 + c2) / (s1 + s2 + c2)
    ssim_map = ((2 * mu12 + c1) / (mu1_sq + mu2_sq + c1)) * cs
    return ssim_map, cs


def ssim(sr: torch.Tensor, hr: torch.Tensor, *, data_range: float = 255.0) -> torch.Tensor:
    """Structural similarity per image (mean over the valid SSIM map, then over channels).

    Args:
        sr, hr: ``(B, C, H, W)`` on the 0..``data_range`` scale (Y or RGB, border-cropped);
            H and W must be at least 11.

    Returns:
        ``(B,)`` float64 in [-1, 1]. Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03,
        ``filter2(..., 'valid')`` statistics, float64, as the SSIM paper's MATLAB code.
    Example: ``ssim(x, x)`` is 1 for any image ``x`` of at least 11x11 pixels.
    """
    check_pair(sr, hr)
    if sr.shape[-1] < 11 or sr.shape[-2] < 11:
        raise InputError(
            f"SSIM needs at least 11x11 pixels after the border crop, got "
            f"{sr.shape[-1]}x{sr.shape[-2]}"
        )
    m, _ = ssim_maps(sr, hr, data_range=data_range)
    return m.mean(dim=(2, 3)).mean(dim=1)


__all__ = ["filter_valid", "gaussian_taps", "gaussian_window", "ssim", "ssim_maps"]
