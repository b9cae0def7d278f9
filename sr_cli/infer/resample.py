"""MATLAB-bicubic resizing of an image that arrives in row bands, in bounded memory.

:func:`sr_cli.degrade.resize.imresize` multiplies by dense ``(out, in)`` weight matrices: exact
and fast for training crops, but a 4000 -> 16000 resize would need 512 MB per matrix and
``out * in`` work per column. Here each output pixel sums only its kernel taps (the same
weights and symmetric border mirroring as MATLAB's ``contributions``), and rows are consumed as
they arrive: an output row is produced as soon as the input rows under its kernel are in, and
input rows no later output row needs are dropped. Memory: a few input rows plus one output
chunk. Results equal ``imresize`` up to floating-point summation order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sr_cli.degrade.resize import KERNELS

CHUNK_BYTES = 16 * 1024**2
"""Largest output chunk computed at once (bounds the temporary of a pass)."""


def taps(
    in_len: int, out_len: int, scale: float, kernel: str = "cubic", antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)`` arrays ``(out_len, p)``: 0-based mirrored input indices and their
    normalized weights for MATLAB's 1-D imresize (``W @ v`` of ``resize_weights``)."""
    fn, width = KERNELS[kernel]
    if kernel == "nearest":
        antialias = False
    shrink_aa = scale < 1 and antialias
    kernel_width = width / scale if shrink_aa else width
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]
    t = u[:, None] - idx
    w = scale * fn(scale * t) if shrink_aa else fn(t)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # drop tap columns that are zero for every output
    return cols[:, keep], w[:, keep]


class RowResampler:
    """Resize ``(C, H, W)`` float rows pushed top to bottom to ``(C, out_h, out_w)``, as
    ``imresize(x, size=(out_h, out_w))`` (or ``imresize(x, scale=scale)`` when given).

    ``push(rows)`` returns the output rows that became computable (a list of ``(C, k, out_w)``
    tensors, in order); after the last input row every output row has been returned. The
    dimension with the smaller scale is resized first, as MATLAB does.
    """

    def __init__(
        self, in_h: int, in_w: int, out_h: int, out_w: int, *, kernel: str = "cubic",
        antialias: bool = True, device: torch.device | None = None,
        dtype: torch.dtype = torch.float32, scale: float | None = None,
    ) -> None:
        self.in_h, self.in_w, self.out_h, self.out_w = in_h, in_w, out_h, out_w
        # imresize(size=...) uses out/in per axis; imresize(scale=...) the factor itself
        sh, sw = (out_h / in_h, out_w / in_w) if scale is None else (scale, scale)
        self.w_first = sw < sh
        self.same_h = out_h == in_h and sh == 1.0
        self.same_w = out_w == in_w and sw == 1.0
        ih, wh = taps(in_h, out_h, sh, kernel, antialias)
        iw, ww = taps(in_w, out_w, sw, kernel, antialias)
        self.ih, self.wh = torch.from_numpy(ih), torch.from_numpy(wh).to(device, dtype)
        self.iw = torch.from_numpy(iw).to(device)
        self.ww = torch.from_numpy(ww).to(device, dtype)
        self.need_hi = np.maximum.accumulate(ih.max(axis=1))  # rows needed by outputs <= r
        self.keep_lo = np.minimum.accumulate(ih.min(axis=1)[::-1])[::-1]  # rows needed >= r
        self.buf: torch.Tensor | None = None
        self.lo = 0  # input row index of buf[:, 0]
        self.hi = 0  # input rows received
        self.next = 0  # next output row

    def _wpass(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_w:
            return x
        acc = x[..., self.iw[:, 0]] * self.ww[:, 0]
        for k in range(1, self.iw.shape[1]):
            acc += x[..., self.iw[:, k]] * self.ww[:, k]
        return acc

    def push(self, rows: torch.Tensor) -> list[torch.Tensor]:
        if self.w_first:
            rows = self._wpass(rows)
        self.buf = rows if self.buf is None else torch.cat([self.buf, rows], dim=1)
        self.hi += rows.shape[1]
        out: list[torch.Tensor] = []
        c, _, width = self.buf.shape
        per_row = c * (self.out_w if self.w_first or self.same_w else width) * 8
        chunk = max(1, CHUNK_BYTES // max(1, per_row))
        if self.same_h:
            for r0 in range(self.next, self.hi, chunk):
                r1 = min(self.hi, r0 + chunk)
                part = self.buf[:, r0 - self.lo : r1 - self.lo]
                out.append(part if self.w_first else self._wpass(part))
            self.next = self.hi
        else:
            while self.next < self.out_h and self.need_hi[self.next] < self.hi:
                r0 = self.next
                r1 = r0 + 1
                while r1 < self.out_h and r1 - r0 < chunk and self.need_hi[r1] < self.hi:
                    r1 += 1
                idx = self.ih[r0:r1] - self.lo
                w = self.wh[r0:r1]
                acc = self.buf[:, idx[:, 0]] * w[:, 0, None]
                for k in range(1, idx.shape[1]):
                    acc += self.buf[:, idx[:, k]] * w[:, k, None]
                out.append(acc if self.w_first else self._wpass(acc))
                self.next = r1
        # drop input rows no later output row reads
        if self.next >= self.out_h:
            drop = self.hi - self.lo
        elif self.same_h:
            drop = self.next - self.lo
        else:
            drop = int(self.keep_lo[self.next]) - self.lo
        if drop > 0:
            self.buf = self.buf[:, drop:]
            self.lo += drop
        return out
