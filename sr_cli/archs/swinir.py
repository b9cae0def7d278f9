"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV workshops
2021). Upstream code: github.com/JingyunLiang/SwinIR (``models/network_swinir.py``, Apache-2.0;
its Swin blocks follow Liu et al.'s Swin Transformer); the community loader spandrel
(``spandrel/architectures/SwinIR``) detects the same keys. Written here from the paper and those
sources, not copied.

Layout and keys (identical to the official checkpoints)::

    conv_first                       3x3 conv in -> embed_dim (on (x - mean) * img_range)
    patch_embed.norm                 LayerNorm on the tokens (patch_norm)
    layers.i                         RSTB: residual_group.blocks.j (Swin blocks: norm1, attn.qkv,
                                     attn.relative_position_bias_table, attn.proj, norm2,
                                     mlp.fc1, mlp.fc2; odd j use windows shifted by ws // 2),
                                     then conv (1conv: 3x3; 3conv: 3x3 -> 1x1 -> 3x3 at dim/4),
                                     plus the RSTB input
    norm                             LayerNorm
    conv_after_body                  like an RSTB's conv, plus conv_first's output
    upsampler "pixelshuffle"         conv_before_upsample.0, upsample.{0,2,..} (x2 stages, or one
                                     x3), conv_last                       (classical SR)
    upsampler "pixelshuffledirect"   upsample.0 (one conv + PixelShuffle)  (lightweight SR)
    upsampler "nearest+conv"         conv_before_upsample.0, conv_up1[, conv_up2], conv_hr,
                                     conv_last (nearest x2 stages)         (real-world SR)
    upsampler ""                     conv_last, added to the input        (x1 restoration)

The output is ``out / img_range + mean`` (DIV2K mean for RGB, 0 for gray).

Differences from upstream, none of which changes the computed function for inputs whose sides
are multiples of ``window_size``:

- ``attn.relative_position_index`` and ``attn_mask`` are derived buffers in upstream checkpoints
  (the mask for the training patch size); :func:`canonical_keys` drops them and the network
  computes both for the actual input size (as upstream does for any other size).
- Inputs are reflect-padded to multiples of ``window_size`` inside ``forward`` and the output
  cropped (as upstream's later ``check_image_size`` does); the engine pads by ``size_multiple``
  already, so that only matters for direct calls.
- ``img_size`` / ``ape`` (absolute position embedding, never used by the released SR models) and
  spandrel's ``start_unshuffle`` extension are not supported: such files fail detection.

Receptive field: shifted windows chain across the whole image (each block reaches up to a
window further), so no finite tiling overlap is exact; :func:`describe` gives a practical bound.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, Descriptor, StateDict, count_indexed, fits, inferred_state

RGB_MEAN = (0.4488, 0.4371, 0.4040)
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
RESI = ("1conv", "3conv")
MASK_VALUE = -100.0
"""Upstream's additive attention mask between tokens of different regions in a shifted window."""


def resi_conv(dim: int, kind: str) -> nn.Module:
    """The convolution after the body: ``1conv`` or upstream's bottlenecked ``3conv``."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        q = dim // 4
        return nn.Sequential(nn.Conv2d(dim, q, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(q, q, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(q, dim, 3, 1, 1))
    raise ValueError(f"resi_connection must be one of {RESI}, got {kind!r}")


@functools.lru_cache(maxsize=8)
def relative_position_index(ws: int) -> torch.Tensor:
    """``(ws*ws, ws*ws)`` index into the ``(2ws-1)^2`` bias table for each token pair."""
    cpu = torch.device("cpu")  # also when called under a meta default device
    r = torch.arange(ws, device=cpu)
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """``(nW, ws*ws, ws*ws)`` additive mask for shifted windows of an ``h x w`` map: tokens that
    came from different image regions (wrapped around by the cyclic shift) do not attend."""
    region = torch.zeros(h, w, device=device)
    bounds = ((0, -ws), (-ws, -shift), (-shift, None))
    label = 0
    for y0, y1 in bounds:
        for x0, x1 in bounds:
            region[slice(y0, y1), slice(x0, x1)] = label
            label += 1
    win = region.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0)


def to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws*ws, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def from_windows(x: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`."""
    x = x.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``ws x ws`` windows with a learned relative position
    bias per head (Swin)."""

    def __init__(self, dim: int, ws: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinIR embed_dim {dim} is not divisible by {num_heads} heads")
        self.ws, self.num_heads = ws, num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (bw, heads, n, d)
        rpi = relative_position_index(self.ws).to(x.device)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn_mask = bias.to(q.dtype).unsqueeze(0)  # (1, heads, n, n)
        if mask is not None:  # shifted windows: (nW, n, n), windows ordered batch-major
            nw = mask.shape[0]
            attn_mask = attn_mask + mask.to(q.dtype)[:, None]  # (nW, heads, n, n)
            q, k, v = (t.view(bw // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.reshape(bw, self.num_heads, n, -1)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, both residual, on ``(B, H*W, C)`` tokens."""

    def __init__(self, dim: int, num_heads: int, ws: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                mask: torch.Tensor | None) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(to_windows(y, self.ws), mask if self.shift else None)
        y = from_windows(y, self.ws, b, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class ResidualGroup(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, ws: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
            for i in range(depth))


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks, a conv on the un-embedded map, + input."""

    def __init__(self, dim: int, depth: int, num_heads: int, ws: int, mlp_ratio: float,
                 resi_connection: str) -> None:
        super().__init__()
        self.residual_group = ResidualGroup(dim, depth, num_heads, ws, mlp_ratio)
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                mask: torch.Tensor | None) -> torch.Tensor:
        y = x
        for blk in self.residual_group.blocks:
            y = blk(y, size, mask)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *size))
        return y.flatten(2).transpose(1, 2) + x


class PatchNorm(nn.Module):
    """Holds upstream's ``patch_embed.norm`` (patch size 1: embedding is a reshape + norm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)


def init_linear(m: nn.Module) -> None:
    """Upstream's initialisation of the transformer's linear layers (``self.apply`` it)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def pixelshuffle_upsample(num_feat: int, upscale: int) -> nn.Sequential:
    """Upstream's ``Upsample``: conv + PixelShuffle(2) per factor 2, or one x3 stage."""
    ups: list[nn.Module] = []
    if upscale == 3:
        ups += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        for _ in range(int(math.log2(upscale))):
            ups += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    return nn.Sequential(*ups)


class SwinBody(nn.Module):
    """What SwinIR and HAT share: the deep features over window-attention groups. Subclasses
    set ``ws``, ``patch_embed`` (:class:`PatchNorm` or None), ``layers`` (called as
    ``layer(tokens, (h, w), mask)``) and ``norm``."""

    ws: int
    patch_embed: PatchNorm | None
    layers: nn.ModuleList
    norm: nn.LayerNorm

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features on the tokens of ``x`` (B, C, H, W; H, W multiples of ws)."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        if self.patch_embed is not None:
            t = self.patch_embed.norm(t)
        ws = self.ws
        mask = shift_mask(h, w, ws, ws // 2, x.device) if ws // 2 else None
        for layer in self.layers:
            t = layer(t, (h, w), mask)
        t = self.norm(t)
        return t.transpose(1, 2).reshape(b, c, h, w)


class SwinIR(SwinBody):
    """``forward(x)``: ``(B, in_chans, h, w)`` in [0, 1] -> ``(B, in_chans, h*s, w*s)``."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upscale: int = 4,
        img_range: float = 1.0,
        upsampler: str = "pixelshuffle",
        resi_connection: str = "1conv",
        num_feat: int = 64,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"SwinIR upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        if len(depths) != len(num_heads) or not depths:
            raise ValueError("SwinIR depths and num_heads must be non-empty and of equal length")
        if upsampler == "" and upscale != 1:
            raise ValueError("SwinIR without an upsampler is x1 (upscale 1)")
        if upsampler == "nearest+conv" and upscale not in (2, 4):
            raise ValueError("SwinIR nearest+conv supports upscale 2 and 4")
        pow2 = upscale >= 2 and not upscale & (upscale - 1)
        if upsampler == "pixelshuffle" and upscale != 3 and not pow2:
            raise ValueError("SwinIR pixelshuffle supports upscale 2^n and 3")
        self.ws, self.upscale, self.upsampler = int(window_size), int(upscale), upsampler
        self.img_range = float(img_range)
        self._mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        d = embed_dim
        self.conv_first = nn.Conv2d(in_chans, d, 3, 1, 1)
        self.patch_embed = PatchNorm(d) if patch_norm else None
        self.layers = nn.ModuleList(
            RSTB(d, int(dep), int(nh), self.ws, float(mlp_ratio), resi_connection)
            for dep, nh in zip(depths, num_heads, strict=True))
        self.norm = nn.LayerNorm(d)
        self.conv_after_body = resi_conv(d, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = pixelshuffle_upsample(num_feat, upscale)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(d, upscale * upscale * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        elif upsampler == "nearest+conv":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            if upscale == 4:
                self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        else:
            self.conv_last = nn.Conv2d(d, in_chans, 3, 1, 1)
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
        res = self.conv_after_body(self.features(feat)) + feat
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(res)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(res)
        elif self.upsampler == "nearest+conv":
            y = self.conv_before_upsample(res)
            for i in range(1, int(math.log2(self.upscale)) + 1):
                up = getattr(self, f"conv_up{i}")
                y = F.leaky_relu(up(F.interpolate(y, scale_factor=2.0, mode="nearest")), 0.2)
            out = self.conv_last(F.leaky_relu(self.conv_hr(y), 0.2))
        else:
            out = x + self.conv_last(res)
        out = out / self.img_range + mean
        return out[..., : h * self.upscale, : w * self.upscale]


DEFAULTS: dict[str, Any] = {
    "in_chans": 3, "embed_dim": 180, "depths": [6, 6, 6, 6, 6, 6],
    "num_heads": [6, 6, 6, 6, 6, 6], "window_size": 8, "mlp_ratio": 2.0, "upscale": 4,
    "img_range": 1.0, "upsampler": "pixelshuffle", "resi_connection": "1conv", "num_feat": 64,
    "patch_norm": True,
}
"""Classical SwinIR x4 (``001_classicalSR_DF2K_s64w8_SwinIR-M_x4``)."""


def _factory(**hp: Any) -> SwinIR:
    return SwinIR(**hp)


def practical_context(window_size: int) -> int:
    """Tiling overlap (input pixels per side): ``max(32, 4 * window_size)``, a multiple of the
    window. Upstream's own tiled test overlaps tiles by 32 pixels in all."""
    return max(32, 4 * int(window_size))


def describe(hp: Mapping[str, Any]) -> Descriptor:
    """Context: a practical bound, not exact (attention through shifted windows reaches the whole
    image). fp16 is marked unsupported, as spandrel does for SwinIR."""
    ws = int(hp["window_size"])
    return Descriptor(
        arch="swinir",
        scale=int(hp["upscale"]),
        in_channels=int(hp["in_chans"]),
        hparams=dict(hp),
        size_multiple=ws,
        context=practical_context(ws),
        supports_half=False,
    )


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Drop upstream's derived buffers (``attn.relative_position_index``, ``attn_mask``)."""
    if "layers.0.residual_group.blocks.0.attn.relative_position_bias_table" not in sd:
        return dict(sd)
    return {k: v for k, v in sd.items()
            if not k.endswith((".attn.relative_position_index", ".attn_mask"))}


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise SwinIR keys and read every hyperparameter from shapes: embed_dim and channels
    from ``conv_first``, window size from the bias table ((2ws-1)^2 rows), heads from its
    columns, depths from the block count, mlp_ratio from ``fc1``, upsampler and scale from the
    reconstruction keys. ``img_range`` is not in the weights: 255 for window size 7 (the official
    JPEG-artifact models), else 1, as spandrel assumes. The key set must then equal the one the
    inferred network has."""
    first = "layers.0.residual_group.blocks.0."
    if (first + "attn.relative_position_bias_table" not in sd or "conv_first.weight" not in sd
            or first + "mlp.fc1.weight" not in sd):
        return None
    cf = sd["conv_first.weight"]
    dim, in_ch = int(cf.shape[0]), int(cf.shape[1])
    rows = int(sd[first + "attn.relative_position_bias_table"].shape[0])
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        return None
    ws = (side + 1) // 2
    n_layers = count_indexed(sd, "layers")
    depths = [count_indexed(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)]
    heads = [int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
                 .shape[1]) for i in range(n_layers)]
    mlp_ratio = float(sd[first + "mlp.fc1.weight"].shape[0]) / dim
    num_feat = 64
    if "conv_before_upsample.0.weight" in sd:
        num_feat = int(sd["conv_before_upsample.0.weight"].shape[0])
        if "conv_up1.weight" in sd:
            upsampler = "nearest+conv"
            upscale = 4 if "conv_up2.weight" in sd else 2
        else:
            upsampler = "pixelshuffle"
            convs = sum(1 for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k))
            out0 = int(sd["upsample.0.weight"].shape[0])
            upscale = 3 if convs == 1 and out0 == 9 * num_feat else 2 ** convs
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
        ratio, rem = divmod(int(sd["upsample.0.weight"].shape[0]), in_ch)
        upscale = math.isqrt(ratio)
        if rem or upscale * upscale != ratio:
            return None
    else:
        upsampler, upscale = "", 1
    hp: dict[str, Any] = {
        "in_chans": in_ch, "embed_dim": dim, "depths": depths, "num_heads": heads,
        "window_size": ws, "mlp_ratio": mlp_ratio, "upscale": upscale,
        "img_range": 255.0 if ws == 7 else 1.0, "upsampler": upsampler,
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv",
        "num_feat": num_feat, "patch_norm": "patch_embed.norm.weight" in sd,
    }
    expected = inferred_state(SwinIR, hp)
    return hp if expected is not None and fits(expected, sd) else None


SPEC = ArchSpec(
    name="swinir",
    defaults=DEFAULTS,
    factory=_factory,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description="SwinIR (Swin Transformer image restoration: classical, lightweight, real-world "
                "SR)",
    extra={"tiny": {"embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4,
                    "upscale": 2, "num_feat": 8, "upsampler": "pixelshuffle"},
           "scales": (1, 2, 3, 4, 8)},
)
