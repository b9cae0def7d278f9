"""JPEG compression: batched torch models of baseline JPEG, and the real encoder (Pillow).

:func:`jpeg_torch` simulates baseline JPEG on ``(B, 3, H, W)`` images in [0, 1] with one quality
per image, on any device. Two models:

``model="diffjpeg"``: Real-ESRGAN's training JPEG, BasicSR's ``DiffJPEG(differentiable=False)``
(``basicsr/utils/diffjpeg.py``) step for step: zero-pad to a multiple of 16, RGB*255 -> YCbCr
in float (no integer samples), 4:2:0 by 2x2 averaging (float), 8x8 orthonormal DCT of
``block - 128``, ``round(F / Q) Q`` with CONTINUOUS tables ``Q = T f``, ``f = (5000/q)/100``
(q < 50) else ``(200 - 2q)/100`` (fractional q; no flooring, no clamping to 1..255; the
luminance table used TRANSPOSED, as DiffJPEG ships it), inverse DCT + 128 (no rounding, no
clamping of samples), chroma upsampled by pixel repetition, YCbCr -> RGB, clamp to [0, 255],
/255, crop. ``torch.round`` as with ``differentiable=False`` (Real-ESRGAN's setting).

``model="libjpeg"``: a model of the real codec (libjpeg / Pillow):

1. pad to a multiple of 16 by edge replication (as libjpeg does for partial MCUs);
2. RGB*255 -> YCbCr (JFIF/BT.601 full range), rounded to integer samples, Cb/Cr +128;
3. 4:2:0 chroma subsampling by 2x2 averaging (rounded);
4. 8x8 blocks, level shift -128, orthonormal 2-D DCT-II (= JPEG's FDCT);
5. quantization ``round(F / Q)`` with the standard luminance / chrominance tables (ITU T.81
   Annex K) scaled by quality as libjpeg: ``s = 5000/q`` (q < 50) else ``200 - 2q``,
   ``Q = clip(floor((T s + 50) / 100), 1, 255)``;
6. dequantize, inverse DCT, +128, rounded and clamped to 0..255, chroma upsampled by 2
   (triangle filter = libjpeg's "fancy" upsampling, or nearest), YCbCr -> RGB, clamp to
   [0, 255], /255, crop.

The output is not rounded to 8 bits unless ``round_output`` (Real-ESRGAN's DiffJPEG does not).
Against Pillow at the same quality the libjpeg model is within ~1 level; DiffJPEG is lossier
(0.1-0.3 dB lower PSNR at quality 30-60 on 400x400 crops, 1-4.5 dB at quality 95, much
lower on the zero-padded border blocks).
:func:`jpeg_real` round-trips through Pillow's libjpeg encoder and decoder (integer quality).
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import UsageError

__all__ = [
    "C_TABLE",
    "JPEG_MODELS",
    "Y_TABLE",
    "diffjpeg_tables",
    "jpeg_real",
    "jpeg_torch",
    "quality_tables",
]

JPEG_MODELS = ("diffjpeg", "libjpeg")

Y_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
C_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

_RGB2YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC2RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


@lru_cache(maxsize=4)
def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d  # rows are basis vectors: coeffs = D @ block @ D^T


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled quantization tables for each quality: two ``(B, 8, 8)`` float64 tensors.

    ``quality`` is a ``(B,)`` tensor in [1, 100] (fractional values are allowed; the table
    entries are integers as libjpeg makes them).
    """
    q = quality.to(torch.float64).clamp(1, 100)
    s = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).view(-1, 1, 1)
    ty = torch.tensor(Y_TABLE, dtype=torch.float64, device=q.device)
    tc = torch.tensor(C_TABLE, dtype=torch.float64, device=q.device)
    qy = torch.floor((ty * s + 50) / 100).clamp(1, 255)
    qc = torch.floor((tc * s + 50) / 100).clamp(1, 255)
    return qy, qc


def diffjpeg_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffJPEG's tables for each quality: two ``(B, 8, 8)`` float64 tensors ``T^t f``, ``C f``.

    ``f = (5000 / q) / 100`` for ``q < 50`` else ``(200 - 2 q) / 100`` (continuous in ``q``, no
    rounding or clamping); the luminance table is the standard one transposed (indexed
    [vertical frequency, horizontal frequency] it holds ``T[v][u]``), as in BasicSR's
    ``diffjpeg.py`` (the chrominance table is symmetric).
    """
    q = quality.to(torch.float64).clamp(1, 100)
    f = (torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q) / 100.0).view(-1, 1, 1)
    ty = torch.tensor(Y_TABLE, dtype=torch.float64, device=q.device).t()
    tc = torch.tensor(C_TABLE, dtype=torch.float64, device=q.device).t()
    return ty * f, tc * f


def _code_planes(p: torch.Tensor, table: torch.Tensor, d: torch.Tensor,
                 decoder_round: bool = True) -> torch.Tensor:
    """Quantize/dequantize ``(B, P, H, W)`` planes (H, W multiples of 8) through the 8x8 DCT.

    ``d`` is the 8x8 orthonormal DCT-II matrix and ``table`` the ``(B, 8, 8)`` quantization
    tables (one per image, shared by its ``P`` planes). The block DCT ``D V D^T`` of every 8x8
    block ``V`` is computed in place of the block (no reordering into blocks): ``D`` on row
    groups of 8, ``D^T`` on column groups of 8. Then ``round(F / Q) Q``, the inverse DCT
    ``D^T F D``, +128, and (``decoder_round``) the decoder's rounding and clamping to integer
    samples 0..255 (DiffJPEG keeps float samples).
    """
    b, n, h, w = p.shape
    dt = d.t()
    x = (p - 128.0).view(b * n * h // 8, 8, w)
    c = torch.matmul(d, x).view(b * n, h, w // 8, 8)  # D V (columns of each block)
    c = torch.matmul(c, dt).view(b, n, h // 8, 8, w // 8, 8)  # (D V) D^T
    t = table.to(p.dtype).view(b, 1, 1, 8, 1, 8)
    c = torch.round(c / t).mul_(t)
    r = torch.matmul(c.view(b * n, h, w // 8, 8), d).view(b * n * h // 8, 8, w)  # F D
    r = torch.matmul(dt, r)  # D^T (F D)
    r = r.view(b, n, h, w).add_(128.0)
    # the decoder's inverse DCT yields clamped integer samples
    return r.round_().clamp_(0, 255) if decoder_round else r


def jpeg_torch(
    x: torch.Tensor,
    quality: torch.Tensor | float,
    *,
    model: str = "libjpeg",
    upsampling: str | None = None,
    round_output: bool = False,
) -> torch.Tensor:
    """Batched baseline-JPEG simulation (see the module docstring for the steps).

    Args:
        x: ``(B, 3, H, W)`` float in [0, 1] (values outside are clamped first).
        quality: a number or a ``(B,)`` tensor of qualities in [1, 100] (fractional allowed).
        model: "libjpeg" (model of the real codec) or "diffjpeg" (Real-ESRGAN's DiffJPEG).
        upsampling: chroma upsampling, "fancy" (triangle, libjpeg's default) or "nearest"
            (DiffJPEG's); default: the model's own.
        round_output: round the result to 8-bit levels.
    Returns:
        ``(B, 3, H, W)`` in [0, 1], same dtype and device. Not differentiable through the
        rounding (straight-through use is up to the caller).
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise UsageError(f"jpeg_torch expects a float (B, 3, H, W) tensor, got {tuple(x.shape)}")
    if model not in JPEG_MODELS:
        raise UsageError(f"unknown JPEG model {model!r} ({', '.join(JPEG_MODELS)})")
    diff = model == "diffjpeg"
    if upsampling is None:
        upsampling = "nearest" if diff else "fancy"
    if upsampling not in ("fancy", "nearest"):
        raise UsageError(f"unknown chroma upsampling {upsampling!r} (fancy, nearest)")
    b, _, h, w = x.shape
    q = torch.as_tensor(quality, dtype=torch.float64).reshape(-1)
    if q.numel() == 1:
        q = q.expand(b)
    if q.numel() != b:
        raise UsageError(f"jpeg_torch: {q.numel()} qualities for a batch of {b}")
    if bool(((q < 1) | (q > 100)).any()):
        raise UsageError("JPEG quality must be in [1, 100]")
    qy, qc = (diffjpeg_tables if diff else quality_tables)(q.to(x.device))
    dtype = x.dtype
    d = _dct_matrix().to(device=x.device, dtype=dtype)
    ph, pw = (-h) % 16, (-w) % 16
    img = x.clamp(0, 1).mul_(255.0)
    if ph or pw:
        # libjpeg replicates the edge into partial MCUs; DiffJPEG pads with zeros (black)
        img = F.pad(img, (0, pw, 0, ph), mode="constant" if diff else "replicate")
    hh, ww = img.shape[-2:]
    m = torch.tensor(_RGB2YCC, dtype=dtype, device=x.device)
    ycc = torch.matmul(m, img.view(b, 3, hh * ww)).view(b, 3, hh, ww)
    if not diff:  # the real encoder works on integer samples (conversion and averaging round)
        ycc = ycc.round_()
    cc = ycc[:, 1:]
    c = cc[..., ::2, ::2] + cc[..., 1::2, ::2] + cc[..., ::2, 1::2] + cc[..., 1::2, 1::2]
    c = c.mul_(0.25)
    if not diff:
        c = c.round_()
    c = c.add_(128.0)
    out = torch.empty(b, 3, hh, ww, dtype=dtype, device=x.device)
    out[:, :1] = _code_planes(ycc[:, :1], qy, d, decoder_round=not diff)
    chroma = _code_planes(c, qc, d, decoder_round=not diff).sub_(128.0)
    if upsampling == "fancy":
        out[:, 1:] = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    else:
        out[:, 1:] = F.interpolate(chroma, scale_factor=2, mode="nearest")
    mi = torch.tensor(_YCC2RGB, dtype=dtype, device=x.device)
    rgb = torch.matmul(mi, out.view(b, 3, hh * ww)).view(b, 3, hh, ww).clamp_(0, 255)
    if round_output:
        rgb = rgb.round_()
    rgb = rgb.div_(255.0)
    return rgb if not (ph or pw) else rgb[:, :, :h, :w]


def jpeg_real(x: torch.Tensor, quality: int | float | list[int]) -> torch.Tensor:
    """Round-trip each image through Pillow's JPEG encoder/decoder (4:2:0, integer quality).

    ``x``: ``(B, 3, H, W)`` or ``(B, 1, H, W)`` float in [0, 1]; it is rounded to 8 bits first
    (as OpenCV's ``imencode`` of a float image). Returns the decoded images in [0, 1], same dtype
    and device.
    """
    from PIL import Image as PILImage

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UsageError(f"jpeg_real expects (B, 1|3, H, W), got {tuple(x.shape)}")
    qs = list(quality) if isinstance(quality, list | tuple) else [quality] * x.shape[0]
    outs = []
    arr = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    for i in range(arr.shape[0]):
        a = arr[i].transpose(1, 2, 0)
        mode = "L" if a.shape[2] == 1 else "RGB"
        im = PILImage.fromarray(a[:, :, 0] if mode == "L" else a, mode=mode)
        buf = io.BytesIO()
        qi = int(qs[i])
        if not 1 <= qi <= 100:
            raise UsageError(f"JPEG quality must be in [1, 100], got {qi}")
        im.save(buf, format="JPEG", quality=qi, subsampling=2)
        dec = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert(mode))
        if dec.ndim == 2:
            dec = dec[:, :, None]
        outs.append(torch.from_numpy(dec.transpose(2, 0, 1).copy()))
    return (torch.stack(outs).to(device=x.device, dtype=x.dtype)) / 255.0
