"""Resizing: MATLAB-compatible ``imresize`` and the torch resize modes used by degradations.

:func:`imresize` reproduces MATLAB's ``imresize`` (bicubic with a = -0.5 by default, with
antialiasing when shrinking and symmetric boundary handling). It is implemented as two dense
weight-matrix multiplications, ``out = Wh @ x @ Ww^T``, so it is fast, differentiable with respect
to ``x``, batched and device-agnostic. :func:`resize` dispatches the degradation modes
("area", "bilinear", "bicubic" as in PyTorch's ``F.interpolate``, and "matlab").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import InputError, UsageError

__all__ = ["KERNELS", "RESIZE_MODES", "imresize", "resize", "resize_weights"]


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


def _box(x: np.ndarray) -> np.ndarray:
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


def _triangle(x: np.ndarray) -> np.ndarray:
    return (x + 1) * ((x >= -1) & (x < 0)) + (1 - x) * ((x >= 0) & (x <= 1))


def _lanczos(a: int) -> Callable[[np.ndarray], np.ndarray]:
    eps = np.finfo(np.float64).eps

    def k(x: np.ndarray) -> np.ndarray:
        num = np.sin(np.pi * x) * np.sin(np.pi * x / a) + eps
        den = (np.pi**2 * x * x / a) + eps
        return (num / den) * (np.abs(x) < a)

    return k


# name -> (kernel function, support width), exactly as MATLAB's imresize defines them.
KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "cubic": (_cubic, 4.0),
    "bicubic": (_cubic, 4.0),
    "box": (_box, 1.0),
    "nearest": (_box, 1.0),
    "triangle": (_triangle, 2.0),
    "bilinear": (_triangle, 2.0),
    "lanczos2": (_lanczos(2), 4.0),
    "lanczos3": (_lanczos(3), 6.0),
}

RESIZE_MODES = ("area", "bilinear", "bicubic", "matlab", "nearest")


@lru_cache(maxsize=256)
def _weights_np(
    in_len: int, out_len: int, scale: float, kernel: str, antialias: bool
) -> np.ndarray:
    """Dense (out_len, in_len) float64 weight matrix, MATLAB's ``contributions`` + symmetric pad."""
    fn, width = KERNELS[kernel]
    shrink_aa = scale < 1 and antialias

    def h(t: np.ndarray) -> np.ndarray:
        return scale * fn(scale * t) if shrink_aa else fn(t)

    kernel_width = width / scale if shrink_aa else width
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), p)
    np.add.at(mat, (rows, cols.reshape(-1)), w.reshape(-1))
    return mat


def resize_weights(
    in_len: int, out_len: int, scale: float, kernel: str = "cubic", antialias: bool = True,
    *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (out_len, in_len) matrix ``W`` such that ``W @ v`` is MATLAB's 1-D imresize of ``v``.

    Each row sums to 1. ``scale`` is the MATLAB scale factor (output/input) along this axis.
    """
    mat = _weights_np(int(in_len), int(out_len), float(scale), kernel, bool(antialias))
    return torch.from_numpy(mat).to(device=device, dtype=dtype)


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length ``ceil(in_len * scale)`` (with a 1e-9 guard against float noise);
    also the rule of every `sr upscale` output size."""
    return int(math.ceil(in_len * scale - 1e-9))


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    kernel: str = "cubic",
    antialias: bool = True,
    quantize: float | None = None,
) -> torch.Tensor:
    """MATLAB-compatible ``imresize`` on a float tensor.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)`` floating tensor, any value range (computed in its
            dtype and on its device; differentiable).
        scale: output/input factor for both axes; output size is ``ceil(H*scale), ceil(W*scale)``
            as in MATLAB. Exactly one of ``scale`` and ``size`` must be given.
        size: ``(H_out, W_out)``; the per-axis scale is then ``H_out/H`` and ``W_out/W``.
        kernel: "cubic" (Keys, a = -0.5), "lanczos2", "lanczos3", "box", "triangle" or
            "nearest" (box kernel without antialiasing, as MATLAB).
        antialias: when shrinking, widen the kernel by 1/scale (MATLAB's default).
        quantize: ``None`` (default) computes in floating point, no rounding or clamping. A
            number ``q`` (255 for 8-bit, 65535 for 16-bit data given as 0..q values) mimics MATLAB
            on integer images bit for bit: after each 1-D pass the result is rounded half away
            from zero and clipped to ``[0, q]`` (MATLAB keeps the intermediate in uint8). With
            ``quantize=255`` the Set5/Set14 ``LR_bicubic`` images are reproduced exactly; plain
            float differs from them by up to a few levels on a small fraction of pixels.
            Not differentiable when set.

    Returns:
        Tensor of the same rank, dtype and device, ``(..., H_out, W_out)``. No clamping.

    The formula per axis: ``u = x/s + 0.5(1 - 1/s)`` for output pixel ``x`` (1-based),
    weights ``h(u - j)`` over ``j = floor(u - w/2) + 0..ceil(w)+1`` normalized to sum 1, indices
    mirrored symmetrically at the borders; ``h(t) = s k(s t)`` when antialiasing a shrink.
    Example: ``imresize(torch.rand(1, 3, 64, 64), 0.25).shape == (1, 3, 16, 16)``
    """
    if kernel not in KERNELS:
        raise UsageError(f"unknown imresize kernel {kernel!r} (choose from {', '.join(KERNELS)})")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise UsageError("imresize expects a floating-point tensor")
    if x.ndim not in (3, 4):
        raise UsageError(f"imresize expects (C,H,W) or (B,C,H,W), got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise UsageError("imresize: give exactly one of scale and size")
    if kernel == "nearest":
        antialias = False
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if scale is not None:
        if not (scale > 0 and math.isfinite(scale)):
            raise UsageError(f"imresize: scale must be positive, got {scale}")
        sh = sw = float(scale)
        oh, ow = output_size(h, sh), output_size(w, sw)
    else:
        assert size is not None
        oh, ow = int(size[0]), int(size[1])
        if oh <= 0 or ow <= 0:
            raise UsageError(f"imresize: output size must be positive, got {size}")
        sh, sw = oh / h, ow / w
    if oh <= 0 or ow <= 0:
        raise InputError(f"imresize: {w}x{h} input is too small for scale {scale}")
    dtype = x.dtype
    out = x

    def q(t: torch.Tensor) -> torch.Tensor:
        if quantize is None:
            return t
        return torch.floor(t + 0.5).clamp_(0, float(quantize))

    # MATLAB resizes the dimension with the smallest scale first (rows first on ties).
    order = ("h", "w") if sh <= sw else ("w", "h")
    for axis in order:
        if axis == "h" and (oh != h or sh != 1.0):
            wh = resize_weights(h, oh, sh, kernel, antialias, dtype=dtype, device=x.device)
            out = q(torch.matmul(wh, out))
        elif axis == "w" and (ow != w or sw != 1.0):
            ww = resize_weights(w, ow, sw, kernel, antialias, dtype=dtype, device=x.device)
            out = q(torch.matmul(out, ww.t()))
    if out is x:
        out = q(x.clone())
    return out


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` float ``x`` to ``size`` with a degradation mode.

    Modes: "area", "bilinear", "bicubic" (PyTorch ``F.interpolate`` semantics, as BasicSR uses
    them: bilinear/bicubic with ``align_corners=False`` and no antialiasing), "nearest", and
    "matlab" (:func:`imresize` bicubic with antialiasing). Values are not clamped.
    """
    oh, ow = int(size[0]), int(size[1])
    if oh <= 0 or ow <= 0:
        raise InputError(f"resize: output size {ow}x{oh} is empty (image too small for the scale)")
    if mode == "matlab":
        return imresize(x, size=(oh, ow))
    if mode == "area":
        return F.interpolate(x, size=(oh, ow), mode="area")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(oh, ow), mode=mode, align_corners=False)
    if mode == "nearest":
        return F.interpolate(x, size=(oh, ow), mode="nearest")
    raise UsageError(f"unknown resize mode {mode!r} (choose from {', '.join(RESIZE_MODES)})")
