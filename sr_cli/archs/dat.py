"""DAT, the Dual Aggregation Transformer (Chen et al., "Dual Aggregation Transformer for Image
Super-Resolution", ICCV 2023; DAT, DAT-S, DAT-2, DAT-light). Upstream code:
github.com/zhengchen1999/DAT (``basicsr/archs/dat_arch.py``, Apache-2.0); the community loader
spandrel (``spandrel/architectures/DAT``) detects the same keys. Written here from the paper and
those sources, not copied.

Layout and keys (identical to the official checkpoints)::

    conv_first                  3x3 conv in -> embed_dim (on (x - mean) * img_range)
    before_RG.1                 LayerNorm on the tokens
    layers.i.blocks.j           DATB: x + attn(norm1(x)), then x + ffn(norm2(x)); even j spatial
                                (DSTB), odd j channel (DCTB) attention:
      attn (spatial)            qkv; half the channels attend in split_size[0] x split_size[1]
                                windows, half in the transposed windows (attns.0 / attns.1, each
                                with a dynamic position bias attns.k.pos.{pos_proj, pos1, pos2,
                                pos3} fed by the attns.k.rpe_biases grid); some blocks shift the
                                windows by half (mask); dwconv on v (3x3 depthwise, BN, GELU);
                                the adaptive interaction: channel_interaction (avgpool, 1x1, BN,
                                GELU, 1x1) of the conv branch gates the attention, and
                                spatial_interaction (1x1, BN, GELU, 1x1) of the attention gates
                                the conv; proj of their sum
      attn (channel)            temperature, qkv; attention between channels over all tokens
                                (L2-normalised q, k); the same dwconv / interactions, the gates
                                swapped; proj
      ffn                       SGFN: fc1, GELU, sg (half the channels gate the other half after
                                sg.norm + sg.conv, 3x3 depthwise), fc2
    layers.i.conv               "1conv" (3x3) or "3conv" (3x3 -> 1x1 -> 3x3 at dim/4), + input
    norm                        LayerNorm
    conv_after_body             like a group's conv, plus conv_first's output
    "pixelshuffle"              conv_before_upsample.0, upsample.{0,2,..} (x2 stages or one x3;
                                none for x1), conv_last
    "pixelshuffledirect"        upsample.0 (one conv + PixelShuffle; DAT-light)

The output is ``out / img_range + mean`` (DIV2K mean for RGB, 0 for gray).

Differences from upstream, none of which changes the computed function:

- ``attns.k.relative_position_index`` (derived) and ``attn.attn_mask_0/1`` (the shift masks
  for the training patch size) are dropped by :func:`canonical_keys` and computed for the
  actual input size, as upstream does for any other size. ``attns.k.rpe_biases`` is kept: it
  is where the weights record the window shape; :func:`detect` checks that it is the grid
  upstream builds.
- Any input size works as upstream: each spatial attention zero-pads q, k and v to multiples
  of the longer window side and crops back (padded tokens take part in attention, as there).
- ``img_range`` is not in the weights; 1 is assumed (every released model), as spandrel does.

Receptive field: the channel attention and the interaction gates pool over the whole image,
so no finite tiling overlap is exact (see :func:`sr_cli.archs.facts.describe_dat`).
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

from sr_cli.archs.base import ArchSpec, StateDict, count_indexed, fits, inferred_state, mismatch
from sr_cli.archs.facts import DAT_DEFAULTS, DESCRIPTIONS, describe_dat
from sr_cli.archs.hat import float_ratio
from sr_cli.archs.swinir import RGB_MEAN, init_linear, pixelshuffle_upsample, resi_conv
from sr_cli.errors import ModelError

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
RESI = ("1conv", "3conv")
MASK_VALUE = -100.0
DEFAULTS = DAT_DEFAULTS
describe = describe_dat


def rpe_grid(hs: int, ws: int) -> torch.Tensor:
    """``((2hs-1)(2ws-1), 2)`` relative offsets ``(dy, dx)``, dy major: the dynamic position
    bias input (upstream's ``rpe_biases``)."""
    cpu = torch.device("cpu")
    dy, dx = torch.meshgrid(torch.arange(1 - hs, hs, device=cpu),
                            torch.arange(1 - ws, ws, device=cpu), indexing="ij")
    return torch.stack([dy.flatten(), dx.flatten()], 1).float()


@functools.lru_cache(maxsize=16)
def rect_position_index(hs: int, ws: int) -> torch.Tensor:
    """``(hs*ws, hs*ws)`` row of :func:`rpe_grid` for each token pair of an ``hs x ws``
    window: ``(yi - yj + hs - 1) * (2ws - 1) + (xi - xj + ws - 1)``."""
    cpu = torch.device("cpu")
    ys, xs = torch.meshgrid(torch.arange(hs, device=cpu), torch.arange(ws, device=cpu),
                            indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :] + hs - 1) * (2 * ws - 1) + (xs[:, None] - xs[None, :]
                                                                  + ws - 1)


def rect_shift_mask(h: int, w: int, hs: int, ws: int, sh: int, sw: int,
                    device: torch.device) -> torch.Tensor:
    """``(nW, hs*ws, hs*ws)`` additive mask for ``hs x ws`` windows shifted by ``(sh, sw)``
    on an ``h x w`` map (Swin's nine regions; tokens of different regions do not attend)."""
    region = torch.zeros(h, w, device=device)
    label = 0
    for y0, y1 in ((0, -hs), (-hs, -sh), (-sh, None)):
        for x0, x1 in ((0, -ws), (-ws, -sw), (-sw, None)):
            region[slice(y0, y1), slice(x0, x1)] = label
            label += 1
    win = region.view(h // hs, hs, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, hs * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0)


def _interaction_convs(dim: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    dwconv = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim),
                           nn.GELU())
    channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 8, 1),
                            nn.BatchNorm2d(dim // 8), nn.GELU(), nn.Conv2d(dim // 8, dim, 1))
    spatial = nn.Sequential(nn.Conv2d(dim, dim // 16, 1), nn.BatchNorm2d(dim // 16), nn.GELU(),
                            nn.Conv2d(dim // 16, 1, 1))
    return dwconv, channel, spatial


class DynamicPosBias(nn.Module):
    """MLP from relative offsets to per-head biases (CrossFormer's, non-residual form)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        p = dim // 4
        self.pos_proj = nn.Linear(2, p)
        self.pos1 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, p))
        self.pos2 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, p))
        self.pos3 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, num_heads))

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))  # type: ignore[no-any-return]


class WindowBranch(nn.Module):
    """Self-attention of ``(B, H, W, C)`` q/k/v in ``hs x ws`` windows with a dynamic relative
    position bias (one of the two halves of a spatial block)."""

    def __init__(self, dim: int, hs: int, ws: int, num_heads: int) -> None:
        super().__init__()
        self.hs, self.ws, self.num_heads = hs, ws, num_heads
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.register_buffer("rpe_biases", rpe_grid(hs, ws))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = q.shape
        hs, ws, nh = self.hs, self.ws, self.num_heads
        n = hs * ws

        def win(t: torch.Tensor) -> torch.Tensor:  # (B*nW, heads, n, d)
            t = t.reshape(b, h // hs, hs, w // ws, ws, nh, c // nh).permute(0, 1, 3, 5, 2, 4, 6)
            return t.reshape(-1, nh, n, c // nh)

        rpi = rect_position_index(hs, ws).to(q.device)
        bias = self.pos(self.rpe_biases)[rpi.view(-1)].view(n, n, nh).permute(2, 0, 1)
        attn_mask = bias.to(q.dtype).unsqueeze(0)
        qw, kw, vw = win(q), win(k), win(v)
        if mask is not None:
            nw = mask.shape[0]
            attn_mask = attn_mask + mask.to(q.dtype)[:, None]  # (nW, heads, n, n)
            qw, kw, vw = (t.view(-1, nw, nh, n, c // nh) for t in (qw, kw, vw))
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask)
        out = out.reshape(b, h // hs, w // ws, nh, hs, ws, c // nh).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, h, w, c)


class SpatialAttention(nn.Module):
    """Adaptive spatial self-attention (upstream's ``Adaptive_Spatial_Attention``)."""

    def __init__(self, dim: int, num_heads: int, split: tuple[int, int], shifted: bool,
                 qkv_bias: bool) -> None:
        super().__init__()
        self.split, self.shifted = split, shifted
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        s0, s1 = split
        self.attns = nn.ModuleList([WindowBranch(dim // 2, s0, s1, num_heads // 2),
                                    WindowBranch(dim // 2, s1, s0, num_heads // 2)])
        self.dwconv, self.channel_interaction, self.spatial_interaction = (
            _interaction_convs(dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, h, w, 3, c)
        v_img = qkv[..., 2, :].permute(0, 3, 1, 2)
        m = max(self.split)
        ph, pw = (-h) % m, (-w) % m
        qkv = F.pad(qkv, (0, 0, 0, 0, 0, pw, 0, ph))  # zeros after the projection (upstream)
        hp, wp = h + ph, w + pw
        s0, s1 = self.split
        halves = []
        for i, (t_hs, t_ws) in enumerate(((s0, s1), (s1, s0))):
            part = qkv[..., i * (c // 2):(i + 1) * (c // 2)]
            mask = None
            if self.shifted:
                sh, sw = t_hs // 2, t_ws // 2
                part = torch.roll(part, (-sh, -sw), dims=(1, 2))
                mask = rect_shift_mask(hp, wp, t_hs, t_ws, sh, sw, x.device)
            y = self.attns[i](part[..., 0, :], part[..., 1, :], part[..., 2, :], mask)
            if self.shifted:
                y = torch.roll(y, (t_hs // 2, t_ws // 2), dims=(1, 2))
            halves.append(y[:, :h, :w])
        attended = torch.cat(halves, -1).reshape(b, n, c)
        conv = self.dwconv(v_img)
        channel_map = self.channel_interaction(conv).view(b, 1, c)
        spatial_map = self.spatial_interaction(attended.transpose(1, 2).reshape(b, c, h, w))
        attended = attended * torch.sigmoid(channel_map)
        conv = (torch.sigmoid(spatial_map) * conv).flatten(2).transpose(1, 2)
        return self.proj(attended + conv)  # type: ignore[no-any-return]


class ChannelAttention(nn.Module):
    """Adaptive channel self-attention (upstream's ``Adaptive_Channel_Attention``, after
    XCiT): per head, attention between channels over all tokens."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwconv, self.channel_interaction, self.spatial_interaction = (
            _interaction_convs(dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        nh = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, nh, c // nh).permute(2, 0, 3, 4, 1).unbind(0)
        v_img = v.reshape(b, c, h, w)  # (b, heads, d, n): channel = head * d + j
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature.to(q.dtype)).softmax(-1)
        attended = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        conv = self.dwconv(v_img)
        channel_map = self.channel_interaction(attended.transpose(1, 2).reshape(b, c, h, w))
        spatial_map = self.spatial_interaction(conv).flatten(2).transpose(1, 2)  # (b, n, 1)
        attended = attended * torch.sigmoid(spatial_map)
        conv = (conv * torch.sigmoid(channel_map)).flatten(2).transpose(1, 2)
        return self.proj(attended + conv)  # type: ignore[no-any-return]


class SpatialGate(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        b, n, c = x2.shape
        x2 = self.conv(self.norm(x2).transpose(1, 2).reshape(b, c, h, w))
        return x1 * x2.flatten(2).transpose(1, 2)  # type: ignore[no-any-return]


class SGFN(nn.Module):
    """Spatial-gate feed-forward network."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.sg(F.gelu(self.fc1(x)), h, w))  # type: ignore[no-any-return]


def shifted_block(group: int, block: int) -> bool:
    """Upstream's schedule of shifted spatial windows: blocks 2, 6, 10, ... of even groups and
    0, 4, 8, ... of odd groups (spatial blocks are the even ones)."""
    if group % 2 == 0:
        return block > 0 and (block - 2) % 4 == 0
    return block % 4 == 0


class DATB(nn.Module):
    def __init__(self, dim: int, num_heads: int, split: tuple[int, int], expansion: float,
                 qkv_bias: bool, group: int, block: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn: nn.Module
        if block % 2 == 0:
            self.attn = SpatialAttention(dim, num_heads, split, shifted_block(group, block),
                                         qkv_bias)
        else:
            self.attn = ChannelAttention(dim, num_heads, qkv_bias)
        self.ffn = SGFN(dim, int(dim * expansion))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)  # type: ignore[no-any-return]


class ResidualGroup(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, split: tuple[int, int],
                 expansion: float, qkv_bias: bool, resi_connection: str, group: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DATB(dim, num_heads, split, expansion, qkv_bias, group, j) for j in range(depth))
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = x
        for blk in self.blocks:
            y = blk(y, h, w)
        b, _, c = y.shape
        return self.conv(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2) + x


class Tokens(nn.Module):
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` (upstream's einops ``Rearrange``; no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class DAT(nn.Module):
    """``forward(x)``: ``(B, in_chans, h, w)`` in [0, 1] -> ``(B, in_chans, h*s, w*s)``."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 180,
        split_size: Sequence[int] = (8, 32),
        depth: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        expansion_factor: float = 4.0,
        qkv_bias: bool = True,
        upscale: int = 4,
        img_range: float = 1.0,
        resi_connection: str = "1conv",
        upsampler: str = "pixelshuffle",
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"DAT upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        if resi_connection not in RESI:
            raise ValueError(f"DAT resi_connection must be one of {RESI}, got "
                             f"{resi_connection!r}")
        if len(depth) != len(num_heads) or not depth:
            raise ValueError("DAT depth and num_heads must be non-empty and of equal length")
        split = tuple(int(s) for s in split_size)
        if len(split) != 2 or min(split) < 2:
            raise ValueError(f"DAT split_size must be two window sides >= 2, got "
                             f"{list(split_size)}")
        d = int(embed_dim)
        for nh in num_heads:
            if nh < 2 or d % nh or (d // 2) % (nh // 2):
                raise ValueError(f"DAT embed_dim {d} does not split into {nh} heads (and "
                                 f"{nh // 2} per spatial half)")
        if d // 2 // 4 // 4 < 1:
            raise ValueError(f"DAT embed_dim must be at least 32, got {d}")
        if upsampler == "pixelshuffle" and upscale != 3 and upscale & (upscale - 1):
            raise ValueError(f"DAT pixelshuffle supports upscale 1, 2^n and 3, got {upscale}")
        self.upscale, self.upsampler = int(upscale), upsampler
        self.img_range = float(img_range)
        self._mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.conv_first = nn.Conv2d(in_chans, d, 3, 1, 1)
        self.before_RG = nn.Sequential(Tokens(), nn.LayerNorm(d))
        s2: tuple[int, int] = (split[0], split[1])
        self.layers = nn.ModuleList(
            ResidualGroup(d, int(dep), int(nh), s2, float(expansion_factor), bool(qkv_bias),
                          resi_connection, i)
            for i, (dep, nh) in enumerate(zip(depth, num_heads, strict=True)))
        self.norm = nn.LayerNorm(d)
        self.conv_after_body = resi_conv(d, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = pixelshuffle_upsample(num_feat, upscale)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        else:
            self.upsample = nn.Sequential(nn.Conv2d(d, upscale * upscale * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        self.apply(init_linear)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.before_RG(x)
        for layer in self.layers:
            t = layer(t, h, w)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self._mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)
        res = self.conv_after_body(self.features(feat)) + feat
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(res)))
        else:
            out = self.upsample(res)
        return out / self.img_range + mean  # type: ignore[no-any-return]


def _factory(**hp: Any) -> DAT:
    return DAT(**hp)


MARKER = "before_RG.1.weight"


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Drop upstream's derived ``relative_position_index`` and ``attn_mask_0/1`` buffers."""
    if MARKER not in sd or "layers.0.blocks.0.attn.attns.0.rpe_biases" not in sd:
        return dict(sd)
    return {k: v for k, v in sd.items()
            if not (k.endswith((".attn_mask_0", ".attn_mask_1"))
                    or (".attns." in k and k.endswith(".relative_position_index")))}


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise DAT keys (``before_RG.1`` and a spatial block's ``rpe_biases``) and read every
    hyperparameter from the weights: channels and embed_dim from ``conv_first``, the window
    (split_size) from the last ``rpe_biases`` row (``(hs - 1, ws - 1)``, as spandrel reads
    it; the whole grid must be upstream's), depths from block counts, heads from the channel
    blocks' ``temperature`` (or twice the spatial bias MLP's output for one-block groups),
    expansion_factor from ``ffn.fc1``, qkv_bias, resi_connection, upsampler and scale from the
    keys. Keys that do not then equal the inferred network's raise a ModelError naming them."""
    rpe_key = "layers.0.blocks.0.attn.attns.0.rpe_biases"
    if MARKER not in sd or rpe_key not in sd or "conv_first.weight" not in sd:
        return None
    cf = sd["conv_first.weight"]
    dim, in_ch = int(cf.shape[0]), int(cf.shape[1])
    try:
        rpe = sd[rpe_key]
        if rpe.ndim != 2 or rpe.shape[1] != 2 or rpe.shape[0] < 1:
            raise ModelError(f"DAT {rpe_key} has shape {tuple(rpe.shape)}, not (n, 2)")
        split = [int(round(float(v))) + 1 for v in rpe[-1]]
        if min(split) < 2 or max(split) > 1024 or not torch.equal(
                rpe.float().cpu(), rpe_grid(split[0], split[1])):
            raise ModelError(f"DAT {rpe_key} is not a window offset grid")
        n_layers = count_indexed(sd, "layers")
        depth = [count_indexed(sd, f"layers.{i}.blocks") for i in range(n_layers)]
        heads = []
        for i, dep in enumerate(depth):
            if dep >= 2:
                heads.append(int(sd[f"layers.{i}.blocks.1.attn.temperature"].shape[0]))
            else:
                heads.append(2 * int(sd[f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"]
                                     .shape[0]))
        hidden = int(sd["layers.0.blocks.0.ffn.fc1.weight"].shape[0])
    except KeyError as exc:
        raise ModelError(f"these weights look like DAT but lack {exc}") from None
    num_feat = int(DEFAULTS["num_feat"])
    if "conv_last.weight" in sd:
        upsampler = "pixelshuffle"
        num_feat = int(sd["conv_last.weight"].shape[1])
        convs = sum(1 for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k))
        upscale = 1
        if convs:
            upscale = 3 if convs == 1 and int(sd["upsample.0.weight"].shape[0]) == 9 * num_feat \
                else 2 ** convs
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
        ratio, rem = divmod(int(sd["upsample.0.weight"].shape[0]), in_ch)
        upscale = math.isqrt(ratio)
        if rem or upscale * upscale != ratio:
            raise ModelError("DAT upsample.0 does not give a square scale factor")
    else:
        raise ModelError("these weights look like DAT but have no upsampler (conv_last or "
                         "upsample.0)")
    hp: dict[str, Any] = {
        "in_chans": in_ch, "embed_dim": dim, "split_size": split, "depth": depth,
        "num_heads": heads, "expansion_factor": float_ratio(hidden, dim),
        "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in sd, "upscale": upscale,
        "img_range": DEFAULTS["img_range"],
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv",
        "upsampler": upsampler, "num_feat": num_feat,
    }
    expected = inferred_state(DAT, hp, "DAT")
    assert expected is not None
    if not fits(expected, sd):
        raise mismatch("DAT", expected, sd)
    return hp


SPEC = ArchSpec(
    name="dat",
    defaults=DEFAULTS,
    factory=_factory,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description=DESCRIPTIONS["dat"],
    extra={"tiny": {"embed_dim": 32, "split_size": [2, 4], "depth": [2], "num_heads": [2],
                    "expansion_factor": 1.0, "upscale": 2, "num_feat": 8},
           "scales": (1, 2, 3, 4, 8)},
)
