"""PSNR as the super-resolution literature reports it (MATLAB-compatible, float64)."""

from __future__ import annotations

import torch

from sr_cli.errors import InputError, UsageError


def crop_border(x: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels from each side of ``(..., H, W)``; raises when nothing is left."""
    if border < 0:
        raise UsageError(f"--crop-border must be >= 0, got {border}")
    if border == 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if h <= 2 * border or w <= 2 * border:
        raise InputError(f"a {w}x{h} image is too small for a border crop of {border}")
    return x[..., border:-border, border:-border]


def check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    """Validate two ``(B, C, H, W)`` tensors for a full-reference metric."""
    if sr.ndim != 4 or hr.ndim != 4:
        raise UsageError("expected (B, C, H, W) tensors")
    if sr.shape != hr.shape:
        raise InputError(
            f"size mismatch: SR is {sr.shape[-1]}x{sr.shape[-2]}x{sr.shape[1]}, "
            f"HR is {hr.shape[-1]}x{hr.shape[-2]}x{hr.shape[1]}"
        )
    for name, t in (("SR", sr), ("HR", hr)):
        if not torch.isfinite(t).all():
            raise InputError(f"{name} contains NaN or infinite values")


def psnr(sr: torch.Tensor, hr: torch.Tensor, *, data_range: float = 255.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image.

    Args:
        sr, hr: ``(B, C, H, W)`` tensors on the 0..``data_range`` scale (already converted to
            Y or RGB and border-cropped).
        data_range: peak value L (255 for the literature's 8-bit convention).

    Returns:
        ``(B,)`` float64: ``10 log10(L^2 / MSE)``, MSE over all pixels and channels in float64;
        ``inf`` for identical images.
    Example: ``psnr(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))`` is ``48.13`` dB.
    """
    check_pair(sr, hr)
    diff = sr.to(torch.float64) - hr.to(torch.float64)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)
