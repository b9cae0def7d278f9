"""Alpha-channel helpers: colour bleeding under transparent pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bleed_transparent(rgb: torch.Tensor, alpha: torch.Tensor, iterations: int = 32) -> torch.Tensor:
    """Replace the colour of fully transparent pixels by that of nearby visible pixels.

    The colour under alpha = 0 is arbitrary (often black or white) and a network or a resize
    would smear it into the visible edge, making coloured fringes. Each iteration gives every
    still-transparent pixel the mean colour of its visible 3x3 neighbours; after
    ``iterations`` rounds the rest gets the mean visible colour.

    Args:
        rgb: ``(B, C, H, W)`` float colour channels.
        alpha: ``(B, 1, H, W)`` float alpha in [0, 1].
        iterations: dilation rounds (pixels of reach).

    Returns:
        ``(B, C, H, W)``: visible pixels unchanged, transparent ones filled.
    """
    known = (alpha > 0).to(rgb.dtype)
    if bool(known.all()) or not bool(known.any()):
        return rgb
    out = rgb * known
    kernel = torch.ones((1, 1, 3, 3), dtype=rgb.dtype, device=rgb.device)
    c = rgb.shape[1]
    for _ in range(iterations):
        if bool(known.all()):
            break
        csum = F.conv2d(out * known, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
        ksum = F.conv2d(known, kernel, padding=1)
        grow = (known == 0) & (ksum > 0)
        out = torch.where(grow, csum / ksum.clamp_min(1e-12), out)
        known = torch.where(grow, torch.ones_like(known), known)
    if not bool(known.all()):
        mask = alpha > 0
        for bi in range(rgb.shape[0]):
            m = mask[bi, 0]
            mean = rgb[bi][:, m].mean(dim=1) if bool(m.any()) else rgb.new_zeros(c)
            out[bi] = torch.where(known[bi].bool(), out[bi], mean[:, None, None])
    return out
