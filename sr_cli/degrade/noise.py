"""Additive noise: Gaussian and Poisson (shot) noise, colour or gray, with an explicit generator.

Both functions take ``x`` of shape ``(B, C, H, W)`` in [0, 1] and return ``clip(x + n, 0, 1)``.
Randomness comes only from the passed ``torch.Generator`` (its device is used to draw; the noise is
then moved to ``x``'s device, so results do not depend on where ``x`` lives).
"""

from __future__ import annotations

import math

import torch

from sr_cli.errors import UsageError

__all__ = ["gaussian_noise", "noise_batch", "poisson_levels", "poisson_noise", "rgb_to_gray"]

_GRAY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale, as BasicSR's Poisson noise


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)`` luma ``0.2989 R + 0.587 G + 0.114 B`` (1 ch: as is).

    The weights are torchvision's ``rgb_to_grayscale``, which BasicSR's gray Poisson noise uses.
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise UsageError(f"rgb_to_gray expects 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise UsageError(f"noise expects a float (B, C, H, W) tensor, got {tuple(x.shape)}")


def gaussian_noise(
    x: torch.Tensor, sigma: float, gen: torch.Generator, *, gray: bool = False, clip: bool = True
) -> torch.Tensor:
    """Add N(0, (sigma/255)^2) noise; ``gray`` draws one field for all channels.

    Args:
        x: ``(B, C, H, W)`` in [0, 1].
        sigma: standard deviation in 0..255 units (Real-ESRGAN draws it from U[1, 30]).
        gen: generator to draw from.
        gray: the same noise on every channel (luminance noise) instead of per channel.
        clip: clamp the result to [0, 1].
    """
    _check(x)
    if sigma < 0 or not math.isfinite(sigma):
        raise UsageError(f"noise sigma must be >= 0, got {sigma}")
    b, c, h, w = x.shape
    shape = (b, 1, h, w) if gray else (b, c, h, w)
    n = torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32)
    n = n.to(device=x.device, dtype=x.dtype) * (sigma / 255.0)
    out = x + n
    return out.clamp(0, 1) if clip else out


def poisson_noise(
    x: torch.Tensor, scale: float, gen: torch.Generator, *, gray: bool = False, clip: bool = True
) -> torch.Tensor:
    """Add scaled Poisson (shot) noise, as BasicSR's ``add_poisson_noise_pt``.

    The image (its luma when ``gray``) is quantized to 8 bits, ``v = 2^ceil(log2(#unique
    values))`` photon levels are used, ``n = Poisson(img * v) / v - img``, and
    ``x + scale * n`` is returned. The variance of ``n`` at level ``I`` is ``I / v``.
    """
    _check(x)
    if scale < 0 or not math.isfinite(scale):
        raise UsageError(f"poisson scale must be >= 0, got {scale}")
    src = rgb_to_gray(x) if gray and x.shape[1] == 3 else x
    img = torch.clamp(torch.round(src * 255.0), 0, 255) / 255.0
    noises = []
    for i in range(img.shape[0]):
        levels = torch.round(img[i] * 255.0).to(torch.int64).flatten()
        vals = int((torch.bincount(levels, minlength=256) > 0).sum())
        v = 2.0 ** math.ceil(math.log2(max(vals, 1))) if vals > 1 else 1.0
        lam = (img[i] * v).to(device=gen.device, dtype=torch.float32)
        out = torch.poisson(lam, generator=gen).to(device=x.device, dtype=x.dtype) / v
        noises.append(out - img[i])
    noise = torch.stack(noises)
    if noise.shape[1] != x.shape[1]:
        noise = noise.expand(-1, x.shape[1], -1, -1)
    out = x + noise * scale
    return out.clamp(0, 1) if clip else out


def poisson_levels(q: torch.Tensor) -> torch.Tensor:
    """Photon levels ``v = 2^ceil(log2(#unique values))`` (1 when at most one value) per image.

    ``q``: ``(B, C, H, W)`` integer-valued 8-bit levels (any dtype holding 0..255). Returns a
    ``(B,)`` float64 tensor. The unique values are counted with a bincount of the uint8 levels
    (as many non-zero bins as ``len(torch.unique(q[i]))``).
    """
    u8 = q.to(torch.uint8)
    vals = [int(torch.count_nonzero(torch.bincount(u8[i].flatten(), minlength=256)))
            for i in range(q.shape[0])]
    return torch.tensor(
        [2.0 ** math.ceil(math.log2(n)) if n > 1 else 1.0 for n in vals], dtype=torch.float64
    )


def noise_batch(
    x: torch.Tensor,
    kinds: list[str],
    amounts: list[float],
    grays: list[bool],
    gens: list[torch.Generator],
) -> torch.Tensor:
    """Per-image noise with one generator per image, batched except for the random draws.

    Image ``i`` of the result equals, bit for bit, ``gaussian_noise(x[i:i+1], amounts[i],
    gens[i], gray=grays[i])`` when ``kinds[i] == "gaussian"`` (``amounts`` = sigma in 0..255
    units) and ``poisson_noise(x[i:i+1], amounts[i], gens[i], gray=grays[i])`` when
    ``"poisson"`` (``amounts`` = scale): the same draws from the same generators, and the same
    float operations, only batched (``x + n * a`` with a per-image ``a``). Clipped to [0, 1].

    Args:
        x: ``(B, C, H, W)`` float in [0, 1].
        kinds, amounts, grays, gens: one entry per image.
    """
    _check(x)
    b, c, h, w = x.shape
    if not (len(kinds) == len(amounts) == len(grays) == len(gens) == b):
        raise UsageError(f"noise_batch: parameter lists do not match the batch of {b}")
    for kind, a in zip(kinds, amounts, strict=True):
        if kind not in ("gaussian", "poisson"):
            raise UsageError(f"unknown noise type {kind!r} (gaussian, poisson)")
        if a < 0 or not math.isfinite(a):
            raise UsageError(f"noise {'sigma' if kind == 'gaussian' else 'scale'} must be >= 0,"
                             f" got {a}")
    dev = gens[0].device if gens else torch.device("cpu")
    # the random fields, drawn on the generators' device in float32 (as the single functions)
    field = torch.empty(b, c, h, w, dtype=torch.float32, device=dev)
    pidx = [i for i, k in enumerate(kinds) if k == "poisson"]
    img = lam = v = None
    if pidx:
        src = x[pidx]
        gray_p = [grays[i] and c == 3 for i in pidx]
        if any(gray_p):
            luma = rgb_to_gray(src)
            if all(gray_p):
                src = luma
            else:
                g = torch.tensor(gray_p, device=x.device).view(-1, 1, 1, 1)
                src = torch.where(g, luma.expand_as(src), src)
        img = torch.clamp(torch.round(src * 255.0), 0, 255)
        v = poisson_levels(img)
        img = img / 255.0
        lam = (img * v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)).to(
            device=dev, dtype=torch.float32)
    pj = {i: j for j, i in enumerate(pidx)}
    for i, kind in enumerate(kinds):
        nc = 1 if grays[i] else c
        if kind == "gaussian":
            field[i, :nc].normal_(generator=gens[i])
        else:
            assert lam is not None
            field[i, :nc] = torch.poisson(lam[pj[i], :nc].contiguous(), generator=gens[i])
        if nc != c:
            field[i, nc:] = field[i, :1]
    field = field.to(device=x.device, dtype=x.dtype)
    if pidx:
        assert img is not None and v is not None
        vv = v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        sub = field[pidx].div_(vv).sub_(img)  # Poisson(img v) / v - img
        field[pidx] = sub if sub.shape[1] == c else sub.expand(-1, c, -1, -1)
    scale = [a / 255.0 if k == "gaussian" else a for k, a in zip(kinds, amounts, strict=True)]
    f = torch.tensor(scale, dtype=x.dtype, device=x.device).view(b, 1, 1, 1)
    return field.mul_(f).add_(x).clamp_(0, 1)
