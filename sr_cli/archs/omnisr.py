"""OmniSR, Omni Aggregation Networks (Wang et al., "Omni Aggregation Networks for Lightweight
Image Super-Resolution", CVPR 2023). Upstream code: github.com/Francis0625/Omni-SR
(``components/OmniSR.py``, ``ops/OSAG.py``, ``ops/OSA.py``, ``ops/esa.py``); the community
loader spandrel (``spandrel/architectures/OmniSR``, used by chaiNNer and OpenModelDB) detects
the same keys. Written here from the paper and those sources, not copied.

Layout and keys (identical to the official and community checkpoints)::

    input                          3x3 conv in -> F                        (bias: ``bias``)
    residual_layer.i               OSAG, i < res_num:
      .residual_layer.j            OSA block, j < block_num, ``layer.K`` with K =
         0  MBConv                 fn.0 1x1, GELU, fn.2 3x3 depthwise, GELU, fn.4 squeeze-excite
                                   (gate.1, gate.3: linear, no bias; on the global mean), fn.5 1x1;
                                   plus its input
         2  window attention       norm (LayerNorm), fn.to_qkv, fn.rel_pos_bias (when ``pe``),
                                   fn.to_out.0: 4 heads in ws x ws windows (block-like)
         4, 6, 10, 12  gated FFN   norm (LayerNorm2d), fn.project_in, fn.dwconv, fn.project_out
         5  channel attention      norm, fn.temperature, fn.qkv, fn.qkv_dwconv, fn.project_out:
                                   4 heads, channels attend to channels over each ws x ws window
         8  grid attention         as 2, on ws x ws tokens spread over the whole image
                                   (row ``w1 * H/ws + x``: a dilated, image-wide "window")
         11 channel attention grid as 5, over all pixels of one phase (mod ws) of the image
                                   (K = 1, 3, 7, 9 are upstream's parameter-free rearranges)
      .residual_layer.block_num    1x1 conv F -> F (bias: ``bias``), plus the OSAG input
      .esa                         ESA: conv1, conv2 (3x3 stride 2), max-pool 7/3, conv3,
                                   bilinear back, conv_f, conv4, sigmoid gate
    output                         3x3 conv, plus ``input``'s output
    up.0                           3x3 conv F -> out * s^2, then PixelShuffle(s)

No input normalisation. Every pre-norm block is residual (``x + fn(norm(x))``); LayerNorm2d
normalises each pixel over channels with eps 1e-6, the token LayerNorm with 1e-5.

Size: upstream zero-pads the input to multiples of ``window_size`` and crops the output; this
module does the same, and pads to at least 16 pixels too (ESA's stride-2 conv and 7x7 max-pool
need 15: upstream fails on smaller inputs). The engine pads by ``size_multiple`` (the window)
itself, by reflection, before that.

Receptive field: the whole image. The squeeze-excite gate averages over the image, grid
attention and grid channel attention mix pixels across it, so no tiling overlap is exact and
the output of a tile also depends on the tile's size. :func:`describe` marks the context as
not exact; the engine measures it from the weights (:func:`sr_cli.infer.context.measure_context`)
and ``save_model`` stores it in the file.

``window_size`` is only in the weights when ``pe`` (the relative position bias table, ``(2ws-1)^2``
rows); without it 8 is assumed (as spandrel does) unless metadata says otherwise. Checkpoints
written by profiling tools carry ``total_ops`` / ``total_params`` counters:
:func:`canonical_keys` drops them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict, count_indexed, fits, inferred_state
from sr_cli.archs.facts import DESCRIPTIONS, OMNISR_DEFAULTS, describe_omnisr
from sr_cli.archs.swinir import relative_position_index

HEADS = 4
"""Heads of every attention in an OSA block (upstream: ``dim_head = dim // 4``, ``heads=4``)."""

MIN_SIDE = 16
"""Smallest input side ``forward`` runs at (zero-padded up to it): ESA needs 15."""


class LayerNorm2d(nn.Module):
    """Per-pixel normalisation over channels of ``(B, C, H, W)`` (eps 1e-6), then affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _GlobalMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W2 silu(W1 mean_hw(x)))`` (linears without bias, hidden = C // 4)."""

    def __init__(self, dim: int, shrinkage: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * shrinkage)
        self.gate = nn.Sequential(_GlobalMean(), nn.Linear(dim, hidden, bias=False), nn.SiLU(),
                                  nn.Linear(hidden, dim, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class MBConv(nn.Module):
    """Inverted bottleneck of expansion 1: 1x1, GELU, 3x3 depthwise, GELU, SE, 1x1; + input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fn = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(),
                                nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.GELU(),
                                SqueezeExcitation(dim), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def _tokens(x: torch.Tensor, ws: int, grid: bool) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws*ws, C)``. Block: contiguous ws x ws windows. Grid:
    window ``(x, y)`` holds the pixels ``(w1 * H/ws + x, w2 * W/ws + y)``, w1, w2 < ws."""
    b, h, w, c = x.shape
    if grid:
        x = x.view(b, ws, h // ws, ws, w // ws, c).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _untokens(t: torch.Tensor, ws: int, b: int, h: int, w: int, grid: bool) -> torch.Tensor:
    """Inverse of :func:`_tokens`."""
    t = t.view(b, h // ws, w // ws, ws, ws, -1)
    t = t.permute(0, 3, 1, 4, 2, 5) if grid else t.permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h, w, -1)


class Attention(nn.Module):
    """Multi-head self-attention among ws*ws tokens, optional relative position bias."""

    def __init__(self, dim: int, ws: int, pe: bool) -> None:
        super().__init__()
        self.ws, self.heads = ws, HEADS
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))
        self.rel_pos_bias = nn.Embedding((2 * ws - 1) ** 2, HEADS) if pe else None

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        bw, n, c = t.shape
        q, k, v = self.to_qkv(t).view(bw, n, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)  # (bw, heads, n, d)
        mask = None
        if self.rel_pos_bias is not None:
            rpi = relative_position_index(self.ws).to(t.device)
            mask = self.rel_pos_bias.weight[rpi.view(-1)].view(n, n, -1).permute(2, 0, 1)
            mask = mask.to(q.dtype).unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(bw, n, c))


class AttentionResidual(nn.Module):
    """``x + attn(LayerNorm(x))`` on block (``grid`` False) or grid windows of ``(B,C,H,W)``."""

    def __init__(self, dim: int, ws: int, pe: bool, grid: bool) -> None:
        super().__init__()
        self.ws, self.grid = ws, grid
        self.norm = nn.LayerNorm(dim)
        self.fn = Attention(dim, ws, pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1)
        t = self.fn(_tokens(self.norm(y), self.ws, self.grid))
        return (y + _untokens(t, self.ws, b, h, w, self.grid)).permute(0, 3, 1, 2)


class GatedFeedForward(nn.Module):
    """1x1 to 2C, 3x3 depthwise, ``gelu(first half) * second half``, 1x1 back (no biases)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(dim, 2 * dim, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * dim, 2 * dim, 3, 1, 1, groups=2 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class ChannelAttention(nn.Module):
    """Channels attend to channels (cosine similarity x a learned temperature per head).

    ``grid`` False: the features of a channel are the ws*ws pixels of one window; True: all the
    pixels of one phase ``(i mod ws, j mod ws)`` of the image.
    """

    def __init__(self, dim: int, ws: int, grid: bool) -> None:
        super().__init__()
        self.ws, self.grid, self.heads = ws, grid, HEADS
        self.temperature = nn.Parameter(torch.ones(HEADS, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, 1, 1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        ws, nh = self.ws, self.heads
        t = t.view(b, nh, c // nh, h // ws, ws, w // ws, ws)
        if self.grid:  # -> (b, ws*ws phases, heads, d, h/ws * w/ws)
            t = t.permute(0, 4, 6, 1, 2, 3, 5)
            return t.reshape(b, ws * ws, nh, c // nh, -1)
        t = t.permute(0, 3, 5, 1, 2, 4, 6)  # -> (b, windows, heads, d, ws*ws)
        return t.reshape(b, -1, nh, c // nh, ws * ws)

    def _merge(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, nh, d, _ = t.shape
        ws = self.ws
        if self.grid:
            t = t.view(b, ws, ws, nh, d, h // ws, w // ws).permute(0, 3, 4, 5, 1, 6, 2)
        else:
            t = t.view(b, h // ws, w // ws, nh, d, ws, ws).permute(0, 3, 4, 1, 5, 2, 6)
        return t.reshape(b, nh * d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = (self._split(t) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out(self._merge(attn @ v, h, w))


class ConvResidual(nn.Module):
    """``x + fn(LayerNorm2d(x))``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.norm(x))


class OSABlock(nn.Module):
    """Omni self-attention block: MBConv, then block (local) and grid (global) spatial and
    channel attention, each followed by a gated feed-forward. ``layer`` keeps upstream's
    indices (its parameter-free rearranges are identities here)."""

    def __init__(self, dim: int, ws: int, pe: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([
            MBConv(dim), nn.Identity(),
            AttentionResidual(dim, ws, pe, grid=False), nn.Identity(),
            ConvResidual(dim, GatedFeedForward(dim)),
            ConvResidual(dim, ChannelAttention(dim, ws, grid=False)),
            ConvResidual(dim, GatedFeedForward(dim)), nn.Identity(),
            AttentionResidual(dim, ws, pe, grid=True), nn.Identity(),
            ConvResidual(dim, GatedFeedForward(dim)),
            ConvResidual(dim, ChannelAttention(dim, ws, grid=True)),
            ConvResidual(dim, GatedFeedForward(dim)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.layer:
            x = m(x)
        return x


class ESA(nn.Module):
    """Enhanced spatial attention (RFANet's, as OmniSR trims it): a sigmoid gate computed on a
    strided, max-pooled, bilinearly re-expanded map."""

    def __init__(self, esa_channels: int, n_feats: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, 2, 0)
        self.conv3 = nn.Conv2d(f, f, 3, 1, 1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c3 = self.conv3(F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class OSAG(nn.Module):
    """Omni-scale aggregation group: OSA blocks, a 1x1 conv, + input, then ESA."""

    def __init__(self, dim: int, block_num: int, ws: int, pe: bool, bias: bool) -> None:
        super().__init__()
        self.residual_layer = nn.Sequential(*[OSABlock(dim, ws, pe) for _ in range(block_num)],
                                            nn.Conv2d(dim, dim, 1, bias=bias))
        self.esa = ESA(max(dim // 4, 16), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.residual_layer(x) + x)


class OmniSR(nn.Module):
    """``forward(x)``: ``(B, num_in_ch, h, w)`` in [0, 1] -> ``(B, num_out_ch, h*s, w*s)``."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        block_num: int = 1,
        pe: bool = True,
        window_size: int = 8,
        res_num: int = 5,
        up_scale: int = 4,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_feat % HEADS:
            raise ValueError(f"OmniSR num_feat must be a multiple of {HEADS}, got {num_feat}")
        self.ws, self.up_scale = int(window_size), int(up_scale)
        f = num_feat
        self.input = nn.Conv2d(num_in_ch, f, 3, 1, 1, bias=bias)
        self.residual_layer = nn.Sequential(
            *[OSAG(f, block_num, self.ws, pe, bias) for _ in range(res_num)])
        self.output = nn.Conv2d(f, f, 3, 1, 1, bias=bias)
        self.up = nn.Sequential(nn.Conv2d(f, num_out_ch * up_scale * up_scale, 3, 1, 1,
                                          bias=bias), nn.PixelShuffle(up_scale))

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size ``forward`` runs at: multiples of the window, at least :data:`MIN_SIDE`."""
        ws = self.ws
        low = -(-MIN_SIDE // ws) * ws
        return max(low, -(-h // ws) * ws), max(low, -(-w // ws) * ws)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h))  # zeros, as upstream
        feat = self.input(x)
        out = self.up(self.output(self.residual_layer(feat)) + feat)
        return out[..., : h * self.up_scale, : w * self.up_scale]


DEFAULTS = OMNISR_DEFAULTS
describe = describe_omnisr


def _factory(**hp: Any) -> OmniSR:
    return OmniSR(**hp)


_FIRST = "residual_layer.0.residual_layer.0.layer."


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Drop the ``total_ops`` / ``total_params`` counters profiling tools (thop) leave."""
    if _FIRST + "0.fn.0.weight" not in sd:
        return dict(sd)
    return {k: v for k, v in sd.items() if not k.endswith(("total_ops", "total_params"))}


def _scale_and_out(channels: int, in_ch: int) -> tuple[int, int] | None:
    for out_ch in dict.fromkeys((in_ch, 3, 1)):
        ratio, rem = divmod(channels, out_ch)
        s = math.isqrt(ratio)
        if not rem and s >= 1 and s * s == ratio:
            return s, out_ch
    return None


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise OmniSR keys and read the hyperparameters from shapes: features and input
    channels from ``input``, scale and output channels from ``up.0``, ``res_num`` / ``block_num``
    from the group and block counts, ``pe`` and the window from the bias table, ``bias`` from
    ``input.bias``. The key set and every shape must then equal the inferred network's."""
    if not all(k in sd for k in ("input.weight", "up.0.weight", _FIRST + "0.fn.0.weight")):
        return None
    iw = sd["input.weight"]
    if iw.ndim != 4:
        return None
    f, in_ch = int(iw.shape[0]), int(iw.shape[1])
    found = _scale_and_out(int(sd["up.0.weight"].shape[0]), in_ch)
    if found is None:
        return None
    res_num = count_indexed(sd, "residual_layer")
    block_num = count_indexed(sd, "residual_layer.0.residual_layer") - 1
    table = sd.get(_FIRST + "2.fn.rel_pos_bias.weight")
    ws = int(DEFAULTS["window_size"])
    if table is not None:
        side = math.isqrt(int(table.shape[0]))
        if side * side != int(table.shape[0]) or side % 2 == 0:
            return None
        ws = (side + 1) // 2
    if res_num < 1 or block_num < 1:
        return None
    hp: dict[str, Any] = {"num_in_ch": in_ch, "num_out_ch": found[1], "num_feat": f,
                          "block_num": block_num, "pe": table is not None, "window_size": ws,
                          "res_num": res_num, "up_scale": found[0], "bias": "input.bias" in sd}
    expected = inferred_state(OmniSR, hp)
    return hp if expected is not None and fits(expected, sd) else None


SPEC = ArchSpec(
    name="omnisr",
    defaults=DEFAULTS,
    factory=_factory,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description=DESCRIPTIONS["omnisr"],
    extra={"tiny": {"num_feat": 8, "res_num": 1, "window_size": 4, "up_scale": 2},
           "scales": (1, 2, 3, 4)},
)
