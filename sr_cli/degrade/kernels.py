"""Blur kernels (Gaussian, generalized Gaussian, plateau, sinc) and 2-D filtering.

Every kernel is a float64 ``(k, k)`` tensor (odd ``k``) that sums to 1, centred on
``(k//2, k//2)``, on the grid ``x, y in {-k//2 .. k//2}`` (``x`` along columns). The formulas are
those of Real-ESRGAN / BasicSR (``basicsr/data/degradations.py``):

- covariance ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T`` and ``q = [x y] Sigma^-1 [x y]^T``
- Gaussian: ``exp(-q/2)``; generalized Gaussian: ``exp(-q^beta / 2)``; plateau:
  ``1 / (1 + q^beta)``; all normalized to sum 1 ("iso" variants use ``sy = sx``, ``theta = 0``)
- sinc (circular low-pass with cutoff ``wc`` in radians/pixel, pi = Nyquist):
  ``wc J1(wc r) / (2 pi r)``, ``wc^2 / (4 pi)`` at ``r = 0``, normalized; its truncation rings.

:func:`filter2d` applies one kernel per image to a ``(B, C, H, W)`` batch with reflect padding
(cv2/BasicSR ``filter2D`` semantics: correlation, no flip). :func:`sample_blur` draws the
parameters of a random kernel from a :class:`~sr_cli.degrade.config.BlurConfig` with an explicit
``torch.Generator``; :func:`kernel_from_params` rebuilds the kernel from those parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sr_cli.errors import InputError, UsageError

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)

__all__ = [
    "KERNEL_TYPES",
    "circular_lowpass_kernel",
    "filter2d",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "kernel_from_params",
    "plateau_kernel",
    "sample_blur",
    "uniform",
]


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise UsageError(f"kernel size must be a positive odd integer, got {size!r}")


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``q(x, y) = [x y] Sigma^-1 [x y]^T`` on the centred ``size x size`` grid (float64)."""
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise UsageError(f"kernel sigmas must be > 0, got {sigma_x}, {sigma_y}")
    ax = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    # Sigma^-1 = R diag(1/sx^2, 1/sy^2) R^T
    a = c * c / sigma_x**2 + s * s / sigma_y**2
    b = c * s * (1 / sigma_x**2 - 1 / sigma_y**2)
    d = s * s / sigma_x**2 + c * c / sigma_y**2
    return a * xx * xx + 2 * b * xx * yy + d * yy * yy


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> torch.Tensor:
    """Anisotropic (or, with ``sigma_y=None``, isotropic) Gaussian kernel ``exp(-q/2)``, sum 1.

    ``theta`` rotates the ``sigma_x`` axis counter-clockwise from the column axis (radians).
    Example: ``gaussian_kernel(21, 2.0, 1.0, 0.5).sum() == 1``
    """
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q)
    return k / k.sum()


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    """Generalized Gaussian ``exp(-q^beta / 2)`` (beta = 1 is the Gaussian), sum 1."""
    if beta <= 0:
        raise UsageError(f"beta must be > 0, got {beta}")
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q.pow(beta))
    return k / k.sum()


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    """Plateau-shaped kernel ``1 / (1 + q^beta)``, sum 1."""
    if beta <= 0:
        raise UsageError(f"beta must be > 0, got {beta}")
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = 1.0 / (1.0 + q.pow(beta))
    return k / k.sum()


def circular_lowpass_kernel(cutoff: float, size: int, pad_to: int = 0) -> torch.Tensor:
    """2-D sinc (ideal circular low-pass) kernel truncated to ``size x size``, sum 1.

    ``h(r) = wc J1(wc r) / (2 pi r)`` with ``h(0) = wc^2 / (4 pi)``; ``cutoff`` = ``wc`` in
    radians per pixel, (0, pi]. Zero-padded to ``pad_to`` when larger. Truncation makes it ring.
    """
    _check_size(size)
    if not (0 < cutoff <= math.pi + 1e-12):
        raise UsageError(f"sinc cutoff must be in (0, pi], got {cutoff}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    r = torch.sqrt(xx * xx + yy * yy)
    rs = torch.where(r == 0, torch.ones_like(r), r)
    k = cutoff * torch.special.bessel_j1(cutoff * rs) / (2 * math.pi * rs)
    k = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), k)
    k = k / k.sum()
    if pad_to > size:
        p = (pad_to - size) // 2
        k = F.pad(k, (p, p, p, p))
    return k


def kernel_from_params(p: dict[str, Any]) -> torch.Tensor | None:
    """Rebuild a kernel from sampled parameters (see :func:`sample_blur`); ``None`` = no blur."""
    if not p.get("apply", True):
        return None
    kind = p.get("type")
    if kind != "sinc" and kind not in KERNEL_TYPES:
        raise UsageError(
            f"unknown kernel type {kind!r} (choose from {', '.join(KERNEL_TYPES)}, sinc)"
        )
    try:
        size = int(p["size"])
        if kind == "sinc":
            return circular_lowpass_kernel(float(p["cutoff"]), size)
        sx = float(p["sigma_x"])
        sy = float(p.get("sigma_y", sx))
        th = float(p.get("theta", 0.0))
        if kind in ("iso", "aniso"):
            return gaussian_kernel(size, sx, sy, th)
        if kind in ("generalized_iso", "generalized_aniso"):
            return generalized_gaussian_kernel(size, sx, sy, th, float(p["beta"]))
        return plateau_kernel(size, sx, sy, th, float(p["beta"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"incomplete {kind} kernel parameters: missing {exc}") from None


def uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    """One draw from U[lo, hi) with ``gen`` (float64 precision)."""
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    return lo + (hi - lo) * u


def choice(gen: torch.Generator, items: list[Any] | tuple[Any, ...],
           probs: list[float] | tuple[float, ...] | None = None) -> Any:
    """One item of ``items`` drawn with ``probs`` (uniform when ``None``)."""
    if probs is None:
        idx = int(torch.randint(len(items), (), generator=gen))
        return items[idx]
    u = uniform(gen, 0.0, 1.0)
    acc = 0.0
    total = float(sum(probs))
    for item, p in zip(items, probs, strict=True):
        acc += p / total
        if u < acc:
            return item
    return items[-1]


def _beta(gen: torch.Generator, lo: float, hi: float) -> float:
    # BasicSR: U(lo, 1) with probability 0.5, else U(1, hi)
    if uniform(gen, 0.0, 1.0) < 0.5:
        return uniform(gen, lo, 1.0)
    return uniform(gen, 1.0, hi)


def sample_blur(cfg: Any, gen: torch.Generator) -> dict[str, Any]:
    """Draw the parameters of one random blur kernel (JSON-serializable dict).

    ``cfg`` is a :class:`~sr_cli.degrade.config.BlurConfig`: the size is uniform over
    ``cfg.sizes``; with probability ``cfg.sinc_prob`` a sinc kernel with cutoff
    U[pi/3, pi] (size < 13) or U[pi/5, pi]; otherwise a type from ``cfg.kernel_types`` /
    ``cfg.kernel_probs`` with sigmas U[cfg.sigma], rotation U[cfg.rotation] (aniso types), and
    beta from ``cfg.beta_g`` / ``cfg.beta_p`` as in BasicSR. With probability ``1 - cfg.prob``
    returns ``{"apply": False}``.
    """
    if cfg.prob < 1.0 and uniform(gen, 0.0, 1.0) >= cfg.prob:
        return {"apply": False}
    size = int(choice(gen, list(cfg.sizes)))
    if cfg.sinc_prob > 0 and uniform(gen, 0.0, 1.0) < cfg.sinc_prob:
        lo = cfg.sinc_cutoff_small[0] if size < 13 else cfg.sinc_cutoff_large[0]
        hi = cfg.sinc_cutoff_small[1] if size < 13 else cfg.sinc_cutoff_large[1]
        return {"apply": True, "type": "sinc", "size": size, "cutoff": uniform(gen, lo, hi)}
    kind = str(choice(gen, list(cfg.kernel_types), list(cfg.kernel_probs)))
    sx = uniform(gen, *cfg.sigma)
    out: dict[str, Any] = {"apply": True, "type": kind, "size": size, "sigma_x": sx}
    if kind.endswith("aniso"):
        out["sigma_y"] = uniform(gen, *cfg.sigma)
        out["theta"] = uniform(gen, *cfg.rotation)
    else:
        out["sigma_y"] = sx
        out["theta"] = 0.0
    if kind.startswith("generalized"):
        out["beta"] = _beta(gen, *cfg.beta_g)
    elif kind.startswith("plateau"):
        out["beta"] = _beta(gen, *cfg.beta_p)
    return out


# From this size on, FFT correlation beats a depthwise (grouped) conv on CPU; measured on a
# 2-core CPU for 48 planes of 400x400 (float32): direct 7/13/21 taps 23/56/131 ms, FFT ~200 ms.
_FFT_MIN_SIZE = 31


def _fft_correlate(xp: torch.Tensor, kern: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Correlate a reflect-padded batch with per-image kernels by FFT; crop the valid part."""
    b, c, ph, pw = xp.shape
    k = kern.shape[-1]
    kk = kern if kern.ndim == 3 else kern.unsqueeze(0)
    work = torch.float64 if xp.dtype == torch.float64 else torch.float32
    # y[n] = sum_i xp[n + i] K[i] (i in [0, k)) is a circular correlation; no wrap for n < h
    kpad = torch.zeros(kk.shape[0], ph, pw, dtype=work, device=xp.device)
    kpad[:, :k, :k] = kk.to(work)
    kf = torch.fft.rfft2(kpad).conj().unsqueeze(1)
    y = torch.fft.irfft2(torch.fft.rfft2(xp.to(work)) * kf, s=(ph, pw))
    return y[:, :, :h, :w].to(xp.dtype).contiguous()


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image of ``x`` with its kernel, reflect-padded (cv2 ``filter2D``).

    Args:
        x: ``(B, C, H, W)`` float tensor.
        kernel: ``(k, k)`` (one kernel for all) or ``(B, k, k)`` (one per image), odd ``k``.
    Returns:
        ``(B, C, H, W)`` in the dtype/device of ``x``. Kernels of 31 taps and more are applied
        by FFT, smaller ones by a depthwise conv (same result up to float rounding). Raises
        :class:`InputError` when ``H`` or ``W`` is not larger than ``k // 2`` (reflect padding
        impossible).
    """
    if x.ndim != 4:
        raise UsageError(f"filter2d expects (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    k = int(kernel.shape[-1])
    if k % 2 == 0 or kernel.shape[-2] != k:
        raise UsageError(f"filter2d needs square odd kernels, got {tuple(kernel.shape)}")
    p = k // 2
    if h <= p or w <= p:
        raise InputError(f"image {w}x{h} is too small for a {k}x{k} blur kernel")
    kern = kernel.to(device=x.device, dtype=x.dtype)
    # Taps below 1e-20 of the kernel's largest one (a narrow Gaussian's tails, down to float
    # denormals) change no output at float precision but make the direct conv up to ~6x slower
    # (denormal arithmetic on x86); they are set to zero.
    peak = kern.abs().amax(dim=(-2, -1), keepdim=True)
    kern = kern.masked_fill(kern.abs() < peak * 1e-20, 0.0)
    xp = F.pad(x, (p, p, p, p), mode="reflect")
    if k >= _FFT_MIN_SIZE:
        return _fft_correlate(xp, kern, h, w)
    # depthwise conv (groups = planes): one kernel per output plane; far faster on CPU than a
    # single-channel conv over B*C images
    if kern.ndim == 2:
        weight = kern.view(1, 1, k, k).expand(c, 1, k, k).contiguous()
        return F.conv2d(xp, weight, groups=c)
    if kern.shape[0] != b:
        raise UsageError(f"filter2d: {kern.shape[0]} kernels for a batch of {b}")
    weight = kern.view(b, 1, k, k).repeat_interleave(c, dim=0)
    out = F.conv2d(xp.reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c)
    return out.view(b, c, h, w)
