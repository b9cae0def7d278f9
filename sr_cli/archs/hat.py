"""HAT, the Hybrid Attention Transformer (Chen et al., "Activating More Pixels in Image
Super-Resolution Transformer", CVPR 2023; HAT-S/HAT/HAT-L and Real-HAT-GAN). Upstream code:
github.com/XPixelGroup/HAT (``hat/archs/hat_arch.py``, Apache-2.0, built on SwinIR); the
community loader spandrel (``spandrel/architectures/HAT``) detects the same keys. Written here
from the paper and those sources, not copied; the Swin pieces are shared with
:mod:`sr_cli.archs.swinir`.

Layout and keys (identical to the official checkpoints)::

    conv_first                      3x3 conv in -> embed_dim (on (x - mean) * img_range)
    patch_embed.norm                LayerNorm on the tokens (patch_norm)
    layers.i                        RHAG: residual_group.blocks.j (HAB), residual_group.overlap_attn
                                    (OCAB), then conv (3x3, "1conv"; none for "identity") on the
                                    un-embedded map, plus the RHAG input
      HAB                           norm1; (shifted) window attention attn.{qkv, proj,
                                    relative_position_bias_table} (odd j shifted by ws // 2);
                                    CAB conv_block.cab.{0: 3x3 C -> C/compress, GELU, 2: 3x3 back,
                                    3: channel attention .attention.{1, 3}: avgpool, 1x1 C ->
                                    C/squeeze, ReLU, 1x1 back, sigmoid}; out = x + attn +
                                    conv_scale * CAB, then + mlp.{fc1, fc2}(norm2)
      OCAB                          norm1, qkv; queries in ws x ws windows attend to keys/values in
                                    overlapping ows x ows windows (ows = ws + int(ws *
                                    overlap_ratio), zero-padded at the border), with its own
                                    relative_position_bias_table; proj + input, then + mlp(norm2)
    norm                            LayerNorm
    conv_after_body                 3x3 ("1conv"; none for "identity"), plus conv_first's output
    conv_before_upsample.0, upsample.{0,2,..} (x2 stages, or one x3; none for x1), conv_last

The output is ``out / img_range + mean`` (DIV2K mean for RGB, 0 for gray).

Differences from upstream, none of which changes the computed function:

- ``relative_position_index_SA`` / ``relative_position_index_OCA`` are derived buffers in
  upstream checkpoints; :func:`canonical_keys` drops them and they are recomputed. Upstream's
  OCA index starts at ``ws - ows + 1`` (not 0), so part of it is negative and wraps around
  the bias table (Python indexing); :func:`oca_position_index` reproduces that mapping.
- Inputs are reflect-padded to multiples of ``window_size`` inside ``forward`` (upstream's test
  script does this around the network; the engine pads by ``size_multiple`` already).
- ``conv_scale`` (0.01 in every released model) and ``img_range`` (1) are not in the weights;
  the defaults are assumed, as spandrel does. ``ape`` and ``qkv_bias=False`` are unsupported:
  such files fail with a ModelError naming the keys that do not fit.

Receptive field: shifted and overlapping windows chain across the whole image and the CAB's
channel attention pools over all of it, so no finite tiling overlap is exact (see
:func:`sr_cli.archs.facts.window_transformer_context`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import (
    ArchSpec,
    StateDict,
    count_indexed,
    fits,
    inferred_state,
    mismatch,
)
from sr_cli.archs.facts import DESCRIPTIONS, HAT_DEFAULTS, describe_hat
from sr_cli.archs.swinir import (
    RGB_MEAN,
    Mlp,
    PatchNorm,
    SwinBody,
    WindowAttention,
    from_windows,
    init_linear,
    pixelshuffle_upsample,
    to_windows,
)
from sr_cli.errors import ModelError

RESI = ("1conv", "identity")
DEFAULTS = HAT_DEFAULTS
describe = describe_hat


def overlap_window(ws: int, overlap_ratio: float) -> int:
    """Side of OCAB's key/value windows: ``ws + int(ws * overlap_ratio)`` (as upstream)."""
    return ws + int(ws * overlap_ratio)


@functools.lru_cache(maxsize=8)
def oca_position_index(ws: int, ows: int) -> torch.Tensor:
    """``(ws*ws, ows*ows)`` index into OCAB's ``(ws + ows - 1)^2`` bias table.

    For a query at ``(yq, xq)`` of the ws-window and a key at ``(yk, xk)`` of the ows-window:
    ``(yk - yq + ws - ows + 1) * (ws + ows - 1) + (xk - xq + ws - ows + 1)``, taken modulo the
    table size (upstream's offset makes some entries negative; indexing wraps them)."""
    cpu = torch.device("cpu")
    q = torch.arange(ws, device=cpu)
    k = torch.arange(ows, device=cpu)
    qy, qx = (t.flatten() for t in torch.meshgrid(q, q, indexing="ij"))
    ky, kx = (t.flatten() for t in torch.meshgrid(k, k, indexing="ij"))
    off = ws - ows + 1
    dy = ky[None, :] - qy[:, None] + off
    dx = kx[None, :] - qx[:, None] + off
    side = ws + ows - 1
    return (dy * side + dx) % (side * side)


class ChannelAttention(nn.Module):
    """RCAN-style channel attention: global average pool, 1x1 squeeze, ReLU, 1x1, sigmoid."""

    def __init__(self, dim: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // squeeze_factor, 1), nn.ReLU(),
            nn.Conv2d(dim // squeeze_factor, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3x3 compress, GELU, 3x3 expand, channel attention."""

    def __init__(self, dim: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        mid = dim // compress_ratio
        self.cab = nn.Sequential(nn.Conv2d(dim, mid, 3, 1, 1), nn.GELU(),
                                 nn.Conv2d(mid, dim, 3, 1, 1),
                                 ChannelAttention(dim, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)  # type: ignore[no-any-return]


class HAB(nn.Module):
    """Hybrid attention block on ``(B, H*W, C)`` tokens: (shifted) window attention plus a
    scaled CAB in parallel, then an MLP; both residual, pre-norm."""

    def __init__(self, dim: int, num_heads: int, ws: int, shift: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float) -> None:
        super().__init__()
        self.ws, self.shift, self.conv_scale = ws, shift, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                mask: torch.Tensor | None) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        conv = self.conv_block(y.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(to_windows(y, self.ws), mask if self.shift else None)
        y = from_windows(y, self.ws, b, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c) + conv * self.conv_scale
        return x + self.mlp(self.norm2(x))


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries from ``ws x ws`` windows, keys and values
    from the ``ows x ows`` windows centred on them (zero outside the image)."""

    def __init__(self, dim: int, ws: int, ows: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ws, self.ows, self.num_heads = ws, ows, num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((ws + ows - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        ws, ows, nh = self.ws, self.ows, self.num_heads
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c)
        q = to_windows(qkv[..., 0, :], ws)  # (b*nW, ws*ws, c)
        kv = qkv[..., 1:, :].reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (b, 2c, h, w)
        kv = F.unfold(kv, ows, stride=ws, padding=(ows - ws) // 2)  # (b, 2c*ows*ows, nW)
        nw = kv.shape[-1]
        kv = kv.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw,
                                                                            ows * ows, c)
        d = c // nh
        qh = q.view(-1, ws * ws, nh, d).transpose(1, 2)
        kh, vh = (t.view(-1, ows * ows, nh, d).transpose(1, 2) for t in kv.unbind(0))
        rpi = oca_position_index(ws, ows).to(x.device)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ows * ows, nh)
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=bias.permute(2, 0, 1).unsqueeze(0).to(qh.dtype))
        out = out.transpose(1, 2).reshape(-1, ws * ws, c)
        x = self.proj(from_windows(out, ws, b, h, w).reshape(b, h * w, c)) + x
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, ws: int, ows: int,
                 compress_ratio: int, squeeze_factor: int, conv_scale: float,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            HAB(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, compress_ratio,
                squeeze_factor, conv_scale, mlp_ratio) for i in range(depth))
        self.overlap_attn = OCAB(dim, ws, ows, num_heads, mlp_ratio)


class RHAG(nn.Module):
    """Residual hybrid attention group: HABs, an OCAB, a conv on the map, + input."""

    def __init__(self, dim: int, depth: int, num_heads: int, ws: int, ows: int,
                 compress_ratio: int, squeeze_factor: int, conv_scale: float, mlp_ratio: float,
                 resi_connection: str) -> None:
        super().__init__()
        self.residual_group = AttenBlocks(dim, depth, num_heads, ws, ows, compress_ratio,
                                          squeeze_factor, conv_scale, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == "1conv" else None

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                mask: torch.Tensor | None) -> torch.Tensor:
        y = x
        for blk in self.residual_group.blocks:
            y = blk(y, size, mask)
        y = self.residual_group.overlap_attn(y, size)
        if self.conv is not None:
            b, _, c = y.shape
            y = self.conv(y.transpose(1, 2).reshape(b, c, *size)).flatten(2).transpose(1, 2)
        return y + x


class HAT(SwinBody):
    """``forward(x)``: ``(B, in_chans, h, w)`` in [0, 1] -> ``(B, in_chans, h*s, w*s)``."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        upscale: int = 4,
        img_range: float = 1.0,
        resi_connection: str = "1conv",
        num_feat: int = 64,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        if resi_connection not in RESI:
            raise ValueError(f"HAT resi_connection must be one of {RESI}, got "
                             f"{resi_connection!r}")
        if len(depths) != len(num_heads) or not depths:
            raise ValueError("HAT depths and num_heads must be non-empty and of equal length")
        if any(embed_dim % int(h) for h in num_heads):
            raise ValueError(f"HAT embed_dim {embed_dim} is not divisible by every head count "
                             f"{list(num_heads)}")
        if embed_dim // compress_ratio < 1 or embed_dim // squeeze_factor < 1:
            raise ValueError("HAT compress_ratio and squeeze_factor must be at most embed_dim")
        if upscale != 3 and upscale & (upscale - 1):
            raise ValueError(f"HAT supports upscale 1, 2^n and 3, got {upscale}")
        ws = int(window_size)
        ows = overlap_window(ws, overlap_ratio)
        if (ows - ws) % 2:
            raise ValueError(f"HAT overlap windows of {ows} around windows of {ws} are not "
                             "centred (upstream needs an even difference)")
        self.ws, self.ows, self.upscale = ws, ows, int(upscale)
        self.img_range = float(img_range)
        self._mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        d = embed_dim
        self.conv_first = nn.Conv2d(in_chans, d, 3, 1, 1)
        self.patch_embed = PatchNorm(d) if patch_norm else None
        self.layers = nn.ModuleList(
            RHAG(d, int(dep), int(nh), ws, ows, int(compress_ratio), int(squeeze_factor),
                 float(conv_scale), float(mlp_ratio), resi_connection)
            for dep, nh in zip(depths, num_heads, strict=True))
        self.norm = nn.LayerNorm(d)
        self.conv_after_body = nn.Conv2d(d, d, 3, 1, 1) if resi_connection == "1conv" else None
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, num_feat, 3, 1, 1),
                                                  nn.LeakyReLU(inplace=True))
        self.upsample = pixelshuffle_upsample(num_feat, upscale)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.apply(init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.ws, (-w) % self.ws
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        mean = torch.tensor(self._mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)
        deep = self.features(feat)
        if self.conv_after_body is not None:
            deep = self.conv_after_body(deep)
        out = self.conv_last(self.upsample(self.conv_before_upsample(deep + feat)))
        out = out / self.img_range + mean
        return out[..., : h * self.upscale, : w * self.upscale]


def _factory(**hp: Any) -> HAT:
    return HAT(**hp)


DERIVED = ("relative_position_index_SA", "relative_position_index_OCA")
"""Upstream's buffers computed from the window sizes (dropped by :func:`canonical_keys`)."""

MARKER = "layers.0.residual_group.overlap_attn.relative_position_bias_table"


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Drop upstream's derived relative position indices (recomputed by the network)."""
    if MARKER not in sd:
        return dict(sd)
    return {k: v for k, v in sd.items() if k not in DERIVED}


def _int_ratio(dim: int, channels: int) -> int | None:
    """An integer ``r`` with ``dim // r == channels`` (upstream's channel division), exact
    divisors first; None when there is none."""
    if channels < 1 or channels > dim:
        return None
    if dim % channels == 0:
        return dim // channels
    r = dim // channels
    return r if dim // r == channels else None


def float_ratio(num: int, den: int) -> float:
    """A ratio ``r`` with ``int(den * r) == num`` (upstream's ``int(dim * ratio)``)."""
    r = num / den
    return r if int(den * r) == num else (num + 0.5) / den


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise HAT keys (the OCAB bias table of the first group) and read every
    hyperparameter from shapes: channels and embed_dim from ``conv_first``, window size from
    the HAB bias table ((2ws-1)^2 rows), the overlap window from OCAB's ((ws+ows-1)^2 rows),
    heads from the table columns, depths from the block counts, compress/squeeze factors from
    the CAB convs, mlp_ratio from ``fc1``, scale and num_feat from the upsampler. ``conv_scale``
    and ``img_range`` are not in the weights (0.01 and 1, as in every released model). Keys
    that do not then equal the inferred network's raise a ModelError naming them."""
    first = "layers.0.residual_group.blocks.0."
    if MARKER not in sd or "conv_first.weight" not in sd:
        return None
    cf = sd["conv_first.weight"]
    dim, in_ch = int(cf.shape[0]), int(cf.shape[1])
    try:
        rows = int(sd[first + "attn.relative_position_bias_table"].shape[0])
        side = math.isqrt(rows)
        if side * side != rows or side % 2 == 0:
            raise ModelError(f"HAT window bias table of {rows} rows is not (2 * window - 1)^2")
        ws = (side + 1) // 2
        orows = int(sd[MARKER].shape[0])
        oside = math.isqrt(orows)
        ows = oside + 1 - ws
        if oside * oside != orows or ows < ws:
            raise ModelError(f"HAT overlap bias table of {orows} rows does not fit window {ws}")
        n_layers = count_indexed(sd, "layers")
        depths = [count_indexed(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)]
        heads = [int(sd[f"layers.{i}.residual_group.overlap_attn.relative_position_bias_table"]
                     .shape[1]) for i in range(n_layers)]
        compress = _int_ratio(dim, int(sd[first + "conv_block.cab.0.weight"].shape[0]))
        squeeze = _int_ratio(dim, int(sd[first + "conv_block.cab.3.attention.1.weight"]
                                      .shape[0]))
        if compress is None or squeeze is None:
            raise ModelError("HAT channel attention widths are not embed_dim // an integer")
        hidden = int(sd[first + "mlp.fc1.weight"].shape[0])
        num_feat = int(sd["conv_before_upsample.0.weight"].shape[0])
    except KeyError as exc:
        raise ModelError(f"these weights look like HAT but lack {exc}") from None
    convs = sum(1 for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k))
    upscale = 1
    if convs:
        upscale = 3 if convs == 1 and int(sd["upsample.0.weight"].shape[0]) == 9 * num_feat \
            else 2 ** convs
    hp: dict[str, Any] = {
        "in_chans": in_ch, "embed_dim": dim, "depths": depths, "num_heads": heads,
        "window_size": ws, "compress_ratio": compress, "squeeze_factor": squeeze,
        "conv_scale": DEFAULTS["conv_scale"], "overlap_ratio": float_ratio(ows - ws, ws),
        "mlp_ratio": float_ratio(hidden, dim), "upscale": upscale,
        "img_range": DEFAULTS["img_range"],
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "identity",
        "num_feat": num_feat, "patch_norm": "patch_embed.norm.weight" in sd,
    }
    expected = inferred_state(HAT, hp, "HAT")
    assert expected is not None
    if not fits(expected, sd):
        raise mismatch("HAT", expected, sd)
    return hp


SPEC = ArchSpec(
    name="hat",
    defaults=DEFAULTS,
    factory=_factory,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description=DESCRIPTIONS["hat"],
    extra={"tiny": {"embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
                    "compress_ratio": 2, "squeeze_factor": 4, "upscale": 2, "num_feat": 8},
           "scales": (1, 2, 3, 4, 8)},
)
