"""HAT and DAT: upstream key names load from .pth and .safetensors, every hyperparameter is
detected, and the forward is checked in float64 against re-implementations written here in
upstream's style (explicit softmax attention, upstream's index/mask/unfold constructions,
window loops) on the state dict. No official weights can be downloaded in this project; the
paper configurations' parameter counts are checked against the published figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_cli import zoo
from sr_cli.archs import build, get_arch
from sr_cli.archs.base import _skip_init
from sr_cli.errors import ModelError

pytestmark = pytest.mark.usefixtures("isolated_zoo")

MEAN = (0.4488, 0.4371, 0.4040)


def _randomized(name: str, seed: int = 5, **hp):
    """A network with random parameters (and BatchNorm statistics), in eval mode."""
    net, desc = build(name, **hp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.4)
        for n, b in net.named_buffers():
            if n.endswith("running_mean"):
                b.copy_((torch.rand(b.shape, generator=g) - 0.5) * 0.2)
            elif n.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return net.eval(), desc


def _x(c: int = 3, h: int = 9, w: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(seed))


def _conv(sd: dict, p: str, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    wt = sd[p + "weight"]
    return F.conv2d(x, wt, sd[p + "bias"], padding=wt.shape[-1] // 2, groups=groups)


def _ln(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"])


def _lin(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, sd[p + "weight"], sd.get(p + "bias"))


def _partition(x: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    """Upstream's window_partition for (b, h, w, c) -> (b*nW, hs, ws, c)."""
    b, h, w, c = x.shape
    x = x.view(b, h // hs, hs, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, hs, ws, c)


def _upstream_mask(h: int, w: int, hs: int, ws: int, sh: int, sw: int) -> torch.Tensor:
    """Swin's shifted-window mask as upstream builds it (img_mask regions, partition, diff)."""
    img = torch.zeros(1, h, w, 1, dtype=torch.float64)
    cnt = 0
    for hsl in (slice(0, -hs), slice(-hs, -sh), slice(-sh, None)):
        for wsl in (slice(0, -ws), slice(-ws, -sw), slice(-sw, None)):
            img[:, hsl, wsl, :] = cnt
            cnt += 1
    win = _partition(img, hs, ws).view(-1, hs * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def _rpi(hs: int, ws: int) -> torch.Tensor:
    """Swin's relative position index for an hs x ws window, built from coordinates."""
    coords = torch.stack(torch.meshgrid(torch.arange(hs), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += hs - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _upsample(sd: dict, res: torch.Tensor, up: int) -> torch.Tensor:
    y = F.leaky_relu(_conv(sd, "conv_before_upsample.0.", res), 0.01)
    stages = [(0, 3)] if up == 3 else [(2 * i, 2) for i in range(up.bit_length() - 1)]
    for idx, f in stages:
        y = F.pixel_shuffle(_conv(sd, f"upsample.{idx}.", y), f)
    return _conv(sd, "conv_last.", y)


# --------------------------------------------------------------------------- HAT


def _upstream_rpi_oca(ws: int, ows: int) -> torch.Tensor:
    """HAT's ``calculate_rpi_oca``: offsets shifted by ``ws - ows + 1`` (partly negative)."""
    ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    ext = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij"))
    rel = ext.flatten(1)[:, None, :] - ori.flatten(1)[:, :, None]
    rel = rel.permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - ows + 1
    rel[:, :, 1] += ws - ows + 1
    rel[:, :, 0] *= ws + ows - 1
    return rel.sum(-1)


def _hab(sd: dict, p: str, x: torch.Tensor, h: int, w: int, ws: int, shift: int, heads: int,
         conv_scale: float) -> torch.Tensor:
    b, L, c = x.shape
    y = _ln(sd, p + "norm1.", x).view(b, h, w, c)
    # CAB on the normalised map
    z = F.gelu(_conv(sd, p + "conv_block.cab.0.", y.permute(0, 3, 1, 2)))
    z = _conv(sd, p + "conv_block.cab.2.", z)
    a = F.relu(_conv(sd, p + "conv_block.cab.3.attention.1.", z.mean((2, 3), keepdim=True)))
    z = z * torch.sigmoid(_conv(sd, p + "conv_block.cab.3.attention.3.", a))
    conv = z.permute(0, 2, 3, 1).reshape(b, L, c)
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
    n = ws * ws
    win = _partition(y, ws, ws).view(-1, n, c)
    qkv = _lin(sd, p + "attn.qkv.", win).reshape(-1, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    table = sd[p + "attn.relative_position_bias_table"]
    attn = attn + table[_rpi(ws, ws).view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if shift:
        mask = _upstream_mask(h, w, ws, ws, shift, shift)
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = _lin(sd, p + "attn.proj.", out)
    out = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out.reshape(b, L, c) + conv * conv_scale
    z = _lin(sd, p + "mlp.fc2.", F.gelu(_lin(sd, p + "mlp.fc1.", _ln(sd, p + "norm2.", x))))
    return x + z


def _ocab(sd: dict, p: str, x: torch.Tensor, h: int, w: int, ws: int, ows: int,
          heads: int) -> torch.Tensor:
    """OCAB window by window: each ws x ws query window attends to the ows x ows crop of the
    zero-padded key/value maps around it."""
    b, L, c = x.shape
    d = c // heads
    qkv = _lin(sd, p + "qkv.", _ln(sd, p + "norm1.", x)).view(b, h, w, 3 * c)
    q = qkv[..., :c]
    pad = (ows - ws) // 2
    k = F.pad(qkv[..., c:2 * c].permute(0, 3, 1, 2), (pad,) * 4)
    v = F.pad(qkv[..., 2 * c:].permute(0, 3, 1, 2), (pad,) * 4)
    table = sd[p + "relative_position_bias_table"]
    bias = table[_upstream_rpi_oca(ws, ows).view(-1)].view(ws * ws, ows * ows, heads)
    bias = bias.permute(2, 0, 1)
    out = torch.zeros(b, h, w, c, dtype=x.dtype)
    for i in range(h // ws):
        for j in range(w // ws):
            qw = q[:, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws].reshape(b, -1, heads, d)
            kw = k[:, :, i * ws:i * ws + ows, j * ws:j * ws + ows].flatten(2).transpose(1, 2)
            vw = v[:, :, i * ws:i * ws + ows, j * ws:j * ws + ows].flatten(2).transpose(1, 2)
            kw, vw = kw.reshape(b, -1, heads, d), vw.reshape(b, -1, heads, d)
            attn = torch.einsum("bqhd,bkhd->bhqk", qw * d ** -0.5, kw) + bias
            o = torch.einsum("bhqk,bkhd->bqhd", attn.softmax(-1), vw).reshape(b, ws, ws, c)
            out[:, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws] = o
    x = _lin(sd, p + "proj.", out.reshape(b, L, c)) + x
    z = _lin(sd, p + "mlp.fc2.", F.gelu(_lin(sd, p + "mlp.fc1.", _ln(sd, p + "norm2.", x))))
    return x + z


def _hat_reference(sd: dict, hp: dict, x: torch.Tensor) -> torch.Tensor:
    """HAT's forward as upstream's ``hat_arch.py`` computes it (input sides multiples of the
    window), on the state dict with upstream keys."""
    ws, rng, up = hp["window_size"], hp["img_range"], hp["upscale"]
    ows = ws + int(ws * hp["overlap_ratio"])
    c_in = hp["in_chans"]
    mean = (torch.tensor(MEAN, dtype=x.dtype) if c_in == 3 else torch.zeros(1, dtype=x.dtype))
    mean = mean.view(1, -1, 1, 1)
    x = (x - mean) * rng
    first = _conv(sd, "conv_first.", x)
    b, c, h, w = first.shape
    t = first.flatten(2).transpose(1, 2)
    if hp["patch_norm"]:
        t = _ln(sd, "patch_embed.norm.", t)
    for i, (depth, heads) in enumerate(zip(hp["depths"], hp["num_heads"], strict=True)):
        y = t
        for j in range(depth):
            y = _hab(sd, f"layers.{i}.residual_group.blocks.{j}.", y, h, w, ws,
                     0 if j % 2 == 0 else ws // 2, heads, hp["conv_scale"])
        y = _ocab(sd, f"layers.{i}.residual_group.overlap_attn.", y, h, w, ws, ows, heads)
        if hp["resi_connection"] == "1conv":
            y = _conv(sd, f"layers.{i}.conv.", y.transpose(1, 2).reshape(b, c, h, w))
            y = y.flatten(2).transpose(1, 2)
        t = y + t
    deep = _ln(sd, "norm.", t).transpose(1, 2).reshape(b, c, h, w)
    if hp["resi_connection"] == "1conv":
        deep = _conv(sd, "conv_after_body.", deep)
    return _upsample(sd, deep + first, up) / rng + mean


def _upstream_hat_keys(sd: dict, hp: dict) -> dict:
    """Our state dict plus the derived index buffers official HAT checkpoints carry."""
    ws = hp["window_size"]
    ows = ws + int(ws * hp["overlap_ratio"])
    return {**sd, "relative_position_index_SA": _rpi(ws, ws),
            "relative_position_index_OCA": _upstream_rpi_oca(ws, ows)}


HAT_TINY = {"embed_dim": 8, "depths": [2, 3], "num_heads": [2, 4], "window_size": 4,
            "compress_ratio": 2, "squeeze_factor": 4, "mlp_ratio": 1.5, "num_feat": 6}
HAT_VARIANTS = [
    {"upscale": 2},
    {"upscale": 3, "resi_connection": "identity", "patch_norm": False},
    {"upscale": 4, "compress_ratio": 8, "overlap_ratio": 1.0},
    {"upscale": 1, "in_chans": 1},
]
_ids = ["x2-pth", "x3-identity-safetensors", "x4-overlap1-pth", "x1-gray-safetensors"]
FORMATS = ["pth", "safetensors", "pth", "safetensors"]


def test_hat_oca_index_is_upstreams_modulo_the_table():
    from sr_cli.archs.hat import oca_position_index

    for ws, ows in ((4, 6), (16, 24), (8, 16)):
        up = _upstream_rpi_oca(ws, ows)
        assert int(up.min()) < 0  # upstream's offset: negative entries wrap around the table
        ours = oca_position_index(ws, ows)
        rows = (ws + ows - 1) ** 2
        table = torch.randn(rows, 3)
        assert torch.equal(table[ours.view(-1)], table[up.view(-1)])
        assert int(ours.min()) >= 0 and int(ours.max()) < rows


@pytest.mark.parametrize("variant", HAT_VARIANTS, ids=_ids)
def test_hat_matches_upstream_style_reference(variant):
    hp = get_arch("hat").hparams(**{**HAT_TINY, **variant})
    net, _ = _randomized("hat", **hp)
    net = net.double()
    ws = hp["window_size"]
    x = _x(c=hp["in_chans"], h=2 * ws, w=3 * ws).double()
    with torch.no_grad():
        ours = net(x)
        ref = _hat_reference(net.state_dict(), hp, x)
    assert ours.shape == (1, hp["in_chans"], 2 * ws * hp["upscale"], 3 * ws * hp["upscale"])
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("variant", "fmt"), zip(HAT_VARIANTS, FORMATS, strict=True), ids=_ids)
def test_hat_upstream_keys_detect_and_load(variant, fmt, tmp_path):
    from safetensors.torch import save_file

    hp = get_arch("hat").hparams(**{**HAT_TINY, **variant})
    net, desc = _randomized("hat", **hp)
    up = _upstream_hat_keys(net.state_dict(), hp)
    path = tmp_path / f"hat.{fmt}"
    if fmt == "pth":
        torch.save({"params_ema": up}, path)
    else:
        save_file({k: v.contiguous() for k, v in up.items()}, str(path))
    sd, _ = zoo.read_weights(path)
    assert zoo.detect_arch(sd) == ("hat", hp)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc and desc.size_multiple == hp["window_size"]
    x = _x(c=hp["in_chans"], h=10, w=7)  # padded to the window inside, output cropped
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    assert loaded.net(x).shape[-2:] == (10 * hp["upscale"], 7 * hp["upscale"])


def test_hat_misfit_keys_are_a_model_error(tmp_path):
    net, _ = _randomized("hat", **HAT_TINY, upscale=2)
    sd = net.state_dict()
    sd["absolute_pos_embed"] = torch.zeros(1, 64, 8)  # ape: not supported
    with pytest.raises(ModelError, match="absolute_pos_embed"):
        zoo.detect_arch(sd)
    sd = net.state_dict()
    del sd["layers.1.residual_group.blocks.2.mlp.fc2.bias"]
    path = tmp_path / "cut.pth"
    torch.save(sd, path)
    with pytest.raises(ModelError, match=r"look like HAT.*1 missing \(e\.g\. layers\.1\."):
        zoo.load_model(str(path))


@pytest.mark.parametrize(
    ("hp", "count", "paper"),
    [({}, 20_772_507, "HAT x4: 20.8M"),
     ({"upscale": 2}, 20_624_795, "HAT x2: 20.6M"),
     ({"embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24}, 9_621_183,
      "HAT-S x4: 9.6M"),
     ({"depths": [6] * 12, "num_heads": [6] * 12}, 40_846_575, "HAT-L x4: 40.8M")],
    ids=lambda v: v if isinstance(v, str) else "")
def test_hat_paper_parameter_counts(hp, count, paper):
    """The published configurations (options/test/*.yml upstream) have the published sizes."""
    spec = get_arch("hat")
    with torch.device("meta"), _skip_init():
        net = spec.factory(**spec.hparams(**hp))
    assert sum(p.numel() for p in net.parameters()) == count, paper


# --------------------------------------------------------------------------- DAT


def _dat_rpe(hs: int, ws: int) -> torch.Tensor:
    """DAT's ``rpe_biases`` as upstream builds it."""
    biases = torch.stack(torch.meshgrid(torch.arange(1 - hs, hs), torch.arange(1 - ws, ws),
                                        indexing="ij"))
    return biases.flatten(1).transpose(0, 1).contiguous().float()


def _bn(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"],
                        sd[p + "bias"], False, 0.0, 1e-5)


def _dpb(sd: dict, p: str, biases: torch.Tensor) -> torch.Tensor:
    pos = _lin(sd, p + "pos_proj.", biases)
    for k in ("pos1", "pos2", "pos3"):
        pos = _lin(sd, f"{p}{k}.2.", F.relu(_ln(sd, f"{p}{k}.0.", pos)))
    return pos


def _img2windows(img: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    b, c, h, w = img.shape
    img = img.view(b, c, h // hs, hs, w // ws, ws)
    return img.permute(0, 2, 4, 3, 5, 1).contiguous().reshape(-1, hs * ws, c)


def _windows2img(x: torch.Tensor, hs: int, ws: int, h: int, w: int) -> torch.Tensor:
    b = int(x.shape[0] / (h * w / hs / ws))
    x = x.view(b, h // hs, w // ws, hs, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def _dat_window_attn(sd: dict, p: str, qkv: torch.Tensor, h: int, w: int, hs: int, ws: int,
                     heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Upstream's ``Spatial_Attention``: qkv (3, B, L, C) -> (B, H, W, C)."""
    q, k, v = qkv[0], qkv[1], qkv[2]
    b, L, c = q.shape
    n = hs * ws

    def im2win(t):
        t = _img2windows(t.transpose(-2, -1).contiguous().view(b, c, h, w), hs, ws)
        return t.reshape(-1, n, heads, c // heads).permute(0, 2, 1, 3).contiguous()

    q, k, v = im2win(q), im2win(k), im2win(v)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    pos = _dpb(sd, p + "pos.", sd[p + "rpe_biases"].to(q.dtype))
    bias = pos[_rpi(hs, ws).view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    return _windows2img(x, hs, ws, h, w)


def _aim(sd: dict, p: str, att: torch.Tensor, v_img: torch.Tensor, spatial: bool):
    """The adaptive interaction of both attention kinds (gates swapped between them)."""
    b, L, c = att.shape
    h, w = v_img.shape[-2:]
    conv = F.gelu(_bn(sd, p + "dwconv.1.", _conv(sd, p + "dwconv.0.", v_img, groups=c)))
    att_img = att.transpose(-2, -1).contiguous().view(b, c, h, w)

    def ci(t):
        t = _conv(sd, p + "channel_interaction.1.", t.mean((2, 3), keepdim=True))
        return _conv(sd, p + "channel_interaction.4.",
                     F.gelu(_bn(sd, p + "channel_interaction.2.", t)))

    def si(t):
        t = F.gelu(_bn(sd, p + "spatial_interaction.1.",
                       _conv(sd, p + "spatial_interaction.0.", t)))
        return _conv(sd, p + "spatial_interaction.3.", t)

    if spatial:
        cmap = ci(conv).permute(0, 2, 3, 1).contiguous().view(b, 1, c)
        att = att * torch.sigmoid(cmap)
        conv = torch.sigmoid(si(att_img)) * conv
    else:
        cmap = ci(att_img)
        smap = si(conv).permute(0, 2, 3, 1).contiguous().view(b, L, 1)
        att = att * torch.sigmoid(smap)
        conv = conv * torch.sigmoid(cmap)
    conv = conv.permute(0, 2, 3, 1).contiguous().view(b, L, c)
    return _lin(sd, p + "proj.", att + conv)


def _dat_spatial(sd: dict, p: str, x: torch.Tensor, h: int, w: int, split: list[int],
                 heads: int, shifted: bool) -> torch.Tensor:
    b, L, c = x.shape
    qkv = _lin(sd, p + "qkv.", x).reshape(b, -1, 3, c).permute(2, 0, 1, 3)
    v = qkv[2].transpose(-2, -1).contiguous().view(b, c, h, w)
    m = max(split)
    pad_r, pad_b = (m - w % m) % m, (m - h % m) % m
    qkv = qkv.reshape(3 * b, h, w, c).permute(0, 3, 1, 2)
    qkv = F.pad(qkv, (0, pad_r, 0, pad_b)).reshape(3, b, c, -1).transpose(-2, -1)
    hh, ww = h + pad_b, w + pad_r
    s0, s1 = split
    sh0, sh1 = s0 // 2, s1 // 2
    if shifted:
        qkv = qkv.reshape(3, b, hh, ww, c)
        q0 = torch.roll(qkv[..., : c // 2], (-sh0, -sh1), (2, 3)).reshape(3, b, -1, c // 2)
        q1 = torch.roll(qkv[..., c // 2:], (-sh1, -sh0), (2, 3)).reshape(3, b, -1, c // 2)
        m0 = _upstream_mask(hh, ww, s0, s1, sh0, sh1)
        m1 = _upstream_mask(hh, ww, s1, s0, sh1, sh0)
        x1 = _dat_window_attn(sd, p + "attns.0.", q0, hh, ww, s0, s1, heads // 2, m0)
        x2 = _dat_window_attn(sd, p + "attns.1.", q1, hh, ww, s1, s0, heads // 2, m1)
        x1 = torch.roll(x1, (sh0, sh1), (1, 2))
        x2 = torch.roll(x2, (sh1, sh0), (1, 2))
    else:
        x1 = _dat_window_attn(sd, p + "attns.0.", qkv[..., : c // 2], hh, ww, s0, s1,
                              heads // 2, None)
        x2 = _dat_window_attn(sd, p + "attns.1.", qkv[..., c // 2:], hh, ww, s1, s0,
                              heads // 2, None)
    x1 = x1[:, :h, :w].reshape(b, L, c // 2)
    x2 = x2[:, :h, :w].reshape(b, L, c // 2)
    return _aim(sd, p, torch.cat([x1, x2], 2), v, spatial=True)


def _dat_channel(sd: dict, p: str, x: torch.Tensor, h: int, w: int,
                 heads: int) -> torch.Tensor:
    b, n, c = x.shape
    qkv = _lin(sd, p + "qkv.", x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = (t.transpose(-2, -1) for t in (qkv[0], qkv[1], qkv[2]))
    v_img = v.reshape(b, c, n).contiguous().view(b, c, h, w)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * sd[p + "temperature"]).softmax(-1)
    att = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
    return _aim(sd, p, att, v_img, spatial=False)


def _sgfn(sd: dict, p: str, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = F.gelu(_lin(sd, p + "fc1.", x))
    x1, x2 = x.chunk(2, dim=-1)
    b, n, c = x2.shape
    x2 = _ln(sd, p + "sg.norm.", x2).transpose(1, 2).contiguous().view(b, c, h, w)
    x2 = _conv(sd, p + "sg.conv.", x2, groups=c).flatten(2).transpose(-1, -2)
    return _lin(sd, p + "fc2.", x1 * x2)


def _resi(sd: dict, p: str, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "1conv":
        return _conv(sd, p + ".", x)
    x = F.leaky_relu(_conv(sd, p + ".0.", x), 0.2)
    x = F.leaky_relu(_conv(sd, p + ".2.", x), 0.2)
    return _conv(sd, p + ".4.", x)


def _dat_reference(sd: dict, hp: dict, x: torch.Tensor) -> torch.Tensor:
    """DAT's forward as upstream's ``dat_arch.py`` computes it, on the state dict with
    upstream keys (any input size: the spatial attention pads itself)."""
    rng, up, c_in = hp["img_range"], hp["upscale"], hp["in_chans"]
    mean = (torch.tensor(MEAN, dtype=x.dtype) if c_in == 3 else torch.zeros(1, dtype=x.dtype))
    mean = mean.view(1, -1, 1, 1)
    x = (x - mean) * rng
    first = _conv(sd, "conv_first.", x)
    b, c, h, w = first.shape
    t = _ln(sd, "before_RG.1.", first.flatten(2).transpose(1, 2))
    for i, (depth, heads) in enumerate(zip(hp["depth"], hp["num_heads"], strict=True)):
        res = t
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            y = _ln(sd, p + "norm1.", t)
            if j % 2 == 0:
                shifted = ((i % 2 == 0 and j > 0 and (j - 2) % 4 == 0)
                           or (i % 2 != 0 and j % 4 == 0))
                t = t + _dat_spatial(sd, p + "attn.", y, h, w, hp["split_size"], heads, shifted)
            else:
                t = t + _dat_channel(sd, p + "attn.", y, h, w, heads)
            t = t + _sgfn(sd, p + "ffn.", _ln(sd, p + "norm2.", t), h, w)
        y = _resi(sd, f"layers.{i}.conv", t.transpose(1, 2).reshape(b, c, h, w),
                  hp["resi_connection"])
        t = res + y.flatten(2).transpose(1, 2)
    deep = _ln(sd, "norm.", t).transpose(1, 2).reshape(b, c, h, w)
    res = _resi(sd, "conv_after_body", deep, hp["resi_connection"]) + first
    if hp["upsampler"] == "pixelshuffle":
        out = _upsample(sd, res, up)
    else:
        out = F.pixel_shuffle(_conv(sd, "upsample.0.", res), up)
    return out / rng + mean


def _upstream_dat_keys(sd: dict, hp: dict, img_size: int) -> dict:
    """Our state dict plus the derived buffers official DAT checkpoints carry: each window
    attention's relative position index, and the shifted blocks' masks for the training patch
    size ``img_size``."""
    out = dict(sd)
    s0, s1 = hp["split_size"]
    for i, depth in enumerate(hp["depth"]):
        for j in range(0, depth, 2):
            p = f"layers.{i}.blocks.{j}.attn."
            out[p + "attns.0.relative_position_index"] = _rpi(s0, s1)
            out[p + "attns.1.relative_position_index"] = _rpi(s1, s0)
            if (i % 2 == 0 and j > 0 and (j - 2) % 4 == 0) or (i % 2 != 0 and j % 4 == 0):
                out[p + "attn_mask_0"] = _upstream_mask(img_size, img_size, s0, s1, s0 // 2,
                                                        s1 // 2).float()
                out[p + "attn_mask_1"] = _upstream_mask(img_size, img_size, s1, s0, s1 // 2,
                                                        s0 // 2).float()
    return out


DAT_TINY = {"embed_dim": 32, "split_size": [2, 4], "depth": [3, 4], "num_heads": [2, 4],
            "expansion_factor": 1.5, "num_feat": 6}
DAT_VARIANTS = [
    {"upscale": 2},
    {"upscale": 3, "resi_connection": "3conv", "qkv_bias": False},
    {"upscale": 4, "upsampler": "pixelshuffledirect", "depth": [1], "num_heads": [4]},
    {"upscale": 1, "in_chans": 1, "split_size": [4, 2]},
]
_dids = ["x2-pth", "x3-3conv-nobias-safetensors", "x4-direct-1block-pth", "x1-gray-safetensors"]


def test_dat_position_grid_and_index_are_upstreams():
    from sr_cli.archs.dat import rect_position_index, rpe_grid

    for hs, ws in ((2, 4), (8, 32), (32, 8), (8, 16)):
        assert torch.equal(rpe_grid(hs, ws), _dat_rpe(hs, ws))
        assert torch.equal(rect_position_index(hs, ws), _rpi(hs, ws))


@pytest.mark.parametrize("variant", DAT_VARIANTS, ids=_dids)
def test_dat_matches_upstream_style_reference(variant):
    hp = get_arch("dat").hparams(**{**DAT_TINY, **variant})
    net, _ = _randomized("dat", **hp)
    net = net.double()
    x = _x(c=hp["in_chans"], h=9, w=7).double()  # not multiples of the windows: padded inside
    with torch.no_grad():
        ours = net(x)
        ref = _dat_reference(net.state_dict(), hp, x)
    assert ours.shape == (1, hp["in_chans"], 9 * hp["upscale"], 7 * hp["upscale"])
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("variant", "fmt"), zip(DAT_VARIANTS, FORMATS, strict=True), ids=_dids)
def test_dat_upstream_keys_detect_and_load(variant, fmt, tmp_path):
    from safetensors.torch import save_file

    hp = get_arch("dat").hparams(**{**DAT_TINY, **variant})
    if hp["upsampler"] == "pixelshuffledirect":
        hp["num_feat"] = 64  # unused by this layout, so not in the weights: the default
    net, desc = _randomized("dat", **hp)
    up = _upstream_dat_keys(net.state_dict(), hp, img_size=8)
    assert any(k.endswith("attn_mask_0") for k in up) == (len(hp["depth"]) > 1)
    path = tmp_path / f"dat.{fmt}"
    if fmt == "pth":
        torch.save({"params": up}, path)
    else:
        save_file({k: v.contiguous() for k, v in up.items()}, str(path))
    sd, _ = zoo.read_weights(path)
    assert zoo.detect_arch(sd) == ("dat", hp)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc and desc.size_multiple == max(hp["split_size"])
    x = _x(c=hp["in_chans"], h=11, w=6)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


def test_dat_misfit_weights_are_model_errors():
    net, _ = _randomized("dat", **DAT_TINY, upscale=2)
    sd = net.state_dict()
    del sd["layers.1.blocks.3.ffn.sg.conv.bias"]
    with pytest.raises(ModelError, match=r"look like DAT.*1 missing"):
        zoo.detect_arch(sd)
    sd = net.state_dict()
    sd["layers.0.blocks.0.attn.attns.0.rpe_biases"] = torch.rand(15, 2)
    with pytest.raises(ModelError, match="not a window offset grid"):
        zoo.detect_arch(sd)


@pytest.mark.parametrize(
    ("hp", "count", "paper"),
    [({}, 14_802_051, "DAT x4: 14.8M"),
     ({"split_size": [8, 16], "expansion_factor": 2.0}, 11_212_131, "DAT-S x4: 11.21M"),
     ({"expansion_factor": 2.0}, 11_212_131, "DAT-2 x4: 11.21M"),
     ({"embed_dim": 60, "depth": [18], "num_heads": [6], "expansion_factor": 2.0,
       "resi_connection": "3conv", "upsampler": "pixelshuffledirect"}, 572_766,
      "DAT-light x4: 573K")],
    ids=lambda v: v if isinstance(v, str) else "")
def test_dat_paper_parameter_counts(hp, count, paper):
    """The published configurations (options/Test/*.yml upstream) have the published sizes."""
    spec = get_arch("dat")
    with torch.device("meta"), _skip_init():
        net = spec.factory(**spec.hparams(**hp))
    assert sum(p.numel() for p in net.parameters()) == count, paper


# --------------------------------------------------------------------------- every sr path


def _tiny(name: str, **extra):
    base = ({**HAT_TINY, "depths": [2], "num_heads": [2], "upscale": 2} if name == "hat"
            else {**DAT_TINY, "depth": [3], "num_heads": [2], "upscale": 2})
    return _randomized(name, **{**base, **extra})


@pytest.mark.parametrize("name", ["hat", "dat"])
def test_tiled_matches_untiled(name):
    """The context is a practical bound, not exact: window chains, HAT's CAB channel attention
    and DAT's channel self-attention see the whole image. On these tiny random networks the
    tiled output stays within :data:`TILE_BOUND` x its magnitude at the descriptor's context
    (tiles aligned to the window grid by ``size_multiple``) - a check of the tiling path, not
    a figure for trained models."""
    from sr_cli.infer.tiling import plan_tiles, run_tiled

    net, desc = _tiny(name)
    x = _x(h=64, w=56, seed=2)
    with torch.no_grad():
        ref = net(x)
        tiles = plan_tiles(64, 56, 16, desc.context, desc.size_multiple)
        assert len(tiles) == 16 and min(t.py1 - t.py0 for t in tiles) < 64  # cut tiles
        tiled = run_tiled(net, x, 2, tiles)
    err = (tiled - ref).abs().max().item() / max(1.0, ref.abs().max().item())
    assert 0 < err <= TILE_BOUND[name], err


TILE_BOUND = {"hat": 2e-6, "dat": 1e-4}
"""Measured here: 4e-7 (HAT) and 6e-6 (DAT) x the output magnitude (1e-2 and 6e-2 with a
context of 4 pixels); within 1/255 by orders of magnitude."""


@pytest.mark.parametrize("name", ["hat", "dat"])
def test_engine_alpha_gray_and_tiles(name, make_image):
    """Through the engine: sizes that are not window multiples, RGBA and gray images."""
    from sr_cli.infer.engine import InferenceOptions, Upscaler

    net, desc = _tiny(name)
    model = zoo.LoadedModel(name="t", net=net, desc=desc, metadata={}, source=None)
    x = _x(h=30, w=26, seed=4)
    whole = Upscaler(model, InferenceOptions(device="cpu", tile=0)).run(x)
    tiled = Upscaler(model, InferenceOptions(device="cpu", tile=12)).run(x)
    assert whole.shape == tiled.shape == (1, 3, 60, 52)
    assert (tiled - whole).abs().max() <= TILE_BOUND[name] * max(1.0, whole.abs().max())
    up = Upscaler(model, InferenceOptions(device="cpu", tile=16))
    rgba = make_image(21, 18, 4)
    rgba[:4, :5, 3] = 0
    for img in (rgba, make_image(21, 18, 1)):
        out = up.upscale_array(img)
        assert out.shape == (42, 36, *img.shape[2:]) and out.dtype == np.uint8


def test_bf16_forward_runs_close_to_fp32():
    """bf16 is an explicit opt-in for these networks (fp16 is off in the descriptor): the
    layers run in bf16 on the CPU and stay near the fp32 output on tiny random nets."""
    for name in ("hat", "dat"):
        net, desc = _tiny(name)
        assert not desc.supports_half
        x = _x(h=16, w=16)
        with torch.no_grad():
            ref = net(x)
            low = net.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
        assert torch.isfinite(low).all()
        assert (low - ref).abs().max() <= 0.1 * max(1.0, ref.abs().max().item()), name


@pytest.mark.parametrize("name", ["hat", "dat"])
def test_models_info_convert_and_interp_cli(name, runner, tmp_path):
    from sr_cli.cli import app

    a, desc = _tiny(name, seed=1)
    b, _ = _tiny(name, seed=2)
    keys = (_upstream_hat_keys if name == "hat" else
            lambda sd, hp: _upstream_dat_keys(sd, hp, img_size=8))
    for net, stem in ((a, "a"), (b, "b")):
        torch.save({"params_ema": keys(net.state_dict(), desc.hparams)}, tmp_path / f"{stem}.pth")
    # info and convert read the upstream .pth; interp blends the converted A with B's .pth
    info = runner.invoke(app, ["models", "info", str(tmp_path / "a.pth"), "--json"])
    assert info.exit_code == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["arch"] == name and facts["scale"] == 2 and facts["hparams"] == desc.hparams
    assert facts["size_multiple"] == desc.size_multiple and facts["supports_half"] is False
    assert facts["description"].startswith(name.upper())
    conv = runner.invoke(app, ["models", "convert", str(tmp_path / "a.pth"),
                               str(tmp_path / "a.safetensors")])
    assert conv.exit_code == 0, conv.stderr
    header = runner.invoke(app, ["models", "info", str(tmp_path / "a.safetensors"), "--header",
                                 "--json"])
    assert header.exit_code == 0, header.stderr
    assert json.loads(header.stdout)["hparams"] == desc.hparams
    mix = runner.invoke(app, ["interp", str(tmp_path / "a.safetensors"),
                              str(tmp_path / "b.pth"), "--alpha", "0.5", "-o",
                              str(tmp_path / "mix.safetensors")])
    assert mix.exit_code == 0, mix.stderr
    blended = zoo.load_model(str(tmp_path / "mix.safetensors"))
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in blended.net.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, (sa[k].double() / 2 + sb[k].double() / 2).float()), k
