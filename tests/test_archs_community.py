"""Community architectures (SPAN, SwinIR, Real-CUGAN, OmniSR): upstream key names load,
detection of every hyperparameter, and the forward checked against straightforward
re-implementations written here from the papers/upstream code (no official weights can be
downloaded in this project)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sr_cli import zoo
from sr_cli.archs import build, get_arch
from sr_cli.archs.span import IMG_RANGE, RGB_MEAN
from sr_cli.errors import ModelError

pytestmark = pytest.mark.usefixtures("isolated_zoo")


def _randomized(name: str, seed: int = 5, **hp):
    net, desc = build(name, **hp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.4)
    return net.eval(), desc


def _x(c: int = 3, h: int = 9, w: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- SPAN


def _upstream_span_keys(sd: dict, norm: bool) -> dict:
    """Our state dict as an official SPAN checkpoint has it: plus ``eval_conv`` per Conv3XC
    (garbage here: upstream recomputes it before use) and ``no_norm`` without normalisation."""
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith(".sk.weight"):
            base = k[: -len("sk.weight")]
            out[base + "eval_conv.weight"] = torch.full((v.shape[0], v.shape[1], 3, 3), 9.0)
            out[base + "eval_conv.bias"] = torch.full((v.shape[0],), 9.0)
    if not norm:
        out["no_norm"] = torch.zeros(1)
    return out


def _conv3xc_unfolded(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Upstream's training form: 1x1 -> 3x3 (no padding) -> 1x1 on the zero-padded input, plus
    the 1x1 skip on the input (the first 1x1's bias lands on the padded ring too)."""
    w = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), w["conv.0.weight"], w["conv.0.bias"])
    y = F.conv2d(y, w["conv.1.weight"], w["conv.1.bias"])
    y = F.conv2d(y, w["conv.2.weight"], w["conv.2.bias"])
    return y + F.conv2d(x, w["sk.weight"], w["sk.bias"])


def _span_reference(sd: dict, x: torch.Tensor, scale: int, norm: bool) -> torch.Tensor:
    """SPAN's forward from the upstream description, layer by layer on the state dict."""
    if norm:
        x = (x - torch.tensor(RGB_MEAN).view(1, 3, 1, 1)) * IMG_RANGE
    feat = _conv3xc_unfolded(sd, "conv_1.", x)
    h, outs = feat, {}
    for i in range(1, 7):
        p = f"block_{i}."
        o1 = _conv3xc_unfolded(sd, p + "c1_r.", h)
        o2 = _conv3xc_unfolded(sd, p + "c2_r.", F.silu(o1))
        o3 = _conv3xc_unfolded(sd, p + "c3_r.", F.silu(o2))
        h = (o3 + h) * (torch.sigmoid(o3) - 0.5)
        outs[i] = (h, o1)
    b6 = _conv3xc_unfolded(sd, "conv_2.", outs[6][0])
    cat = torch.cat([feat, b6, outs[1][0], outs[6][1]], 1)
    out = F.conv2d(cat, sd["conv_cat.weight"], sd["conv_cat.bias"])
    out = F.conv2d(out, sd["upsampler.0.weight"], sd["upsampler.0.bias"], padding=1)
    return F.pixel_shuffle(out, scale)


@pytest.mark.parametrize("norm", [True, False])
def test_span_matches_layer_by_layer_reference(norm):
    net, _ = _randomized("span", feature_channels=6, upscale=3, norm=norm)
    net = net.double()
    sd = net.state_dict()
    x = _x().double()
    with torch.no_grad():
        ref = _span_reference(sd, x, 3, norm)
        # float64; the x255 input scaling and random weights make features large (1e4+), so
        # folding rounds at ~1e-8 relative; a wiring error would be O(1)
        assert (net(x) - ref).abs().max() <= 1e-6 * ref.abs().max()


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_span_upstream_keys_detect_and_load(norm, fmt, tmp_path):
    from safetensors.torch import save_file

    net, desc = _randomized("span", feature_channels=8, upscale=2, norm=norm)
    up = _upstream_span_keys(net.state_dict(), norm)
    assert "block_6.c3_r.eval_conv.weight" in up and ("no_norm" in up) != norm
    path = tmp_path / f"span.{fmt}"
    if fmt == "pth":
        torch.save({"params_ema": up}, path)
    else:
        save_file({k: v.contiguous() for k, v in up.items()}, str(path))
    sd, _ = zoo.read_weights(path)
    assert zoo.detect_arch(sd) == ("span", desc.hparams)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc
    with torch.no_grad():
        assert torch.equal(loaded.net(_x()), net(_x()))


def test_span_scales_channels_and_layout():
    spec = get_arch("span")
    for scale in (1, 2, 3, 4):
        net, desc = build("span", feature_channels=4, upscale=scale)
        assert net(_x(h=5, w=6)).shape == (1, 3, 5 * scale, 6 * scale) and desc.scale == scale
        assert zoo.detect_arch(net.state_dict())[1]["upscale"] == scale
    gray = spec.build(num_in_ch=1, num_out_ch=1, feature_channels=4, upscale=2)
    assert gray(_x(c=1, h=4, w=4)).shape == (1, 1, 8, 8)
    assert spec.detect(gray.state_dict())["num_in_ch"] == 1
    full = spec.build()
    assert full.conv_1.sk.weight.shape == (48, 3, 1, 1)
    assert full.upsampler[0].weight.shape == (48, 48, 3, 3)  # 3 * 4^2 output channels
    assert spec.describe(spec.hparams()).context == 21


# --------------------------------------------------------------------------- SwinIR


def _upstream_rpi(ws: int) -> torch.Tensor:
    """Relative position index the way Swin's code builds it (coordinate offsets, shifted and
    row-scaled), independent of the module's formula."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def _upstream_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    img = torch.zeros(1, h, w, 1, dtype=torch.float64)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in cuts:
        for wsl in cuts:
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = _partition(img, ws).view(-1, ws * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def _swin_block(sd: dict, p: str, x: torch.Tensor, h: int, w: int, ws: int, shift: int,
                heads: int) -> torch.Tensor:
    """One Swin block as upstream computes it: explicit softmax attention per window."""
    b, L, c = x.shape
    y = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"]).view(b, h, w, c)
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
    win = _partition(y, ws).view(-1, ws * ws, c)
    n = ws * ws
    qkv = F.linear(win, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
    qkv = qkv.reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[p + "attn.relative_position_bias_table"]
    attn = attn + table[_upstream_rpi(ws).view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if shift:
        mask = _upstream_mask(h, w, ws, shift)
        nw = mask.shape[0]
        attn = attn.view(-1, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    out = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out.reshape(b, L, c)
    z = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    z = F.linear(F.gelu(F.linear(z, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                 sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x + z


def _conv(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    wt = sd[p + "weight"]
    return F.conv2d(x, wt, sd[p + "bias"], padding=wt.shape[-1] // 2)


def _resi(sd: dict, p: str, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "1conv":
        return _conv(sd, p + ".", x)
    x = F.leaky_relu(_conv(sd, p + ".0.", x), 0.2)
    x = F.leaky_relu(_conv(sd, p + ".2.", x), 0.2)
    return _conv(sd, p + ".4.", x)


def _swinir_reference(sd: dict, hp: dict, x: torch.Tensor) -> torch.Tensor:
    """SwinIR's forward as upstream's ``network_swinir.py`` computes it (input sides multiples
    of the window), on the state dict with upstream keys."""
    ws, rng, up = hp["window_size"], hp["img_range"], hp["upscale"]
    mean = torch.tensor([0.4488, 0.4371, 0.4040], dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean) * rng
    first = _conv(sd, "conv_first.", x)
    b, c, h, w = first.shape
    t = first.flatten(2).transpose(1, 2)
    if hp["patch_norm"]:
        t = F.layer_norm(t, (c,), sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    for i, (depth, heads) in enumerate(zip(hp["depths"], hp["num_heads"], strict=True)):
        y = t
        for j in range(depth):
            y = _swin_block(sd, f"layers.{i}.residual_group.blocks.{j}.", y, h, w, ws,
                            0 if j % 2 == 0 else ws // 2, heads)
        y = _resi(sd, f"layers.{i}.conv", y.transpose(1, 2).reshape(b, c, h, w),
                  hp["resi_connection"])
        t = y.flatten(2).transpose(1, 2) + t
    t = F.layer_norm(t, (c,), sd["norm.weight"], sd["norm.bias"])
    res = _resi(sd, "conv_after_body", t.transpose(1, 2).reshape(b, c, h, w),
                hp["resi_connection"]) + first
    kind = hp["upsampler"]
    if kind == "pixelshuffle":
        y = F.leaky_relu(_conv(sd, "conv_before_upsample.0.", res), 0.01)
        stages = [(0, 3)] if up == 3 else [(2 * i, 2) for i in range(up.bit_length() - 1)]
        for idx, f in stages:
            y = F.pixel_shuffle(_conv(sd, f"upsample.{idx}.", y), f)
        out = _conv(sd, "conv_last.", y)
    elif kind == "pixelshuffledirect":
        out = F.pixel_shuffle(_conv(sd, "upsample.0.", res), up)
    elif kind == "nearest+conv":
        y = F.leaky_relu(_conv(sd, "conv_before_upsample.0.", res), 0.01)
        for i in range(1, up.bit_length()):
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = F.leaky_relu(_conv(sd, f"conv_up{i}.", y), 0.2)
        out = _conv(sd, "conv_last.", F.leaky_relu(_conv(sd, "conv_hr.", y), 0.2))
    else:
        out = x + _conv(sd, "conv_last.", res)
    return out / rng + mean


def _upstream_swinir_keys(sd: dict, hp: dict, img_size: int) -> dict:
    """Our state dict plus the derived buffers official checkpoints carry (relative position
    index per block; the shifted blocks' mask for the training patch size ``img_size``)."""
    out = dict(sd)
    ws = hp["window_size"]
    for i, depth in enumerate(hp["depths"]):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            out[p + "attn.relative_position_index"] = _upstream_rpi(ws)
            if j % 2:
                out[p + "attn_mask"] = _upstream_mask(img_size, img_size, ws, ws // 2).float()
    return out


SWIN_TINY = {"embed_dim": 8, "depths": [2, 3], "num_heads": [2, 4], "window_size": 4,
             "num_feat": 6, "mlp_ratio": 1.5}
SWIN_VARIANTS = [
    {"upsampler": "pixelshuffle", "upscale": 2},
    {"upsampler": "pixelshuffle", "upscale": 3, "resi_connection": "3conv"},
    {"upsampler": "pixelshuffledirect", "upscale": 4, "patch_norm": False},
    {"upsampler": "nearest+conv", "upscale": 4, "resi_connection": "3conv"},
    {"upsampler": "", "upscale": 1, "window_size": 7, "img_range": 255.0},
]


@pytest.mark.parametrize("variant", SWIN_VARIANTS, ids=lambda v: v["upsampler"] or "x1")
def test_swinir_matches_upstream_style_reference(variant):
    hp = get_arch("swinir").hparams(**{**SWIN_TINY, **variant})
    net, _ = _randomized("swinir", **hp)
    net = net.double()
    ws = hp["window_size"]
    x = _x(h=2 * ws, w=3 * ws).double()
    with torch.no_grad():
        ours = net(x)
        ref = _swinir_reference(net.state_dict(), hp, x)
    assert ours.shape == (1, 3, 2 * ws * hp["upscale"], 3 * ws * hp["upscale"])
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", SWIN_VARIANTS, ids=lambda v: v["upsampler"] or "x1")
def test_swinir_upstream_keys_detect_and_load(variant, tmp_path):
    hp = get_arch("swinir").hparams(**{**SWIN_TINY, **variant})
    if hp["upsampler"] in ("pixelshuffledirect", ""):
        hp["num_feat"] = 64  # unused by these layouts, so not in the weights: the default
    net, desc = _randomized("swinir", **hp)
    up = _upstream_swinir_keys(net.state_dict(), hp, img_size=4 * hp["window_size"])
    assert "layers.1.residual_group.blocks.1.attn_mask" in up
    path = tmp_path / "swinir.pth"
    torch.save({"params": up}, path)
    sd, _ = zoo.read_weights(path)
    assert zoo.detect_arch(sd) == ("swinir", hp)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc and desc.size_multiple == hp["window_size"]
    x = _x(h=hp["window_size"], w=2 * hp["window_size"])
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


def test_swinir_pads_to_the_window_and_rejects_other_layouts():
    net, desc = _randomized("swinir", **SWIN_TINY, upscale=2, upsampler="pixelshuffledirect")
    x = _x(h=10, w=6)  # not multiples of 4: reflect-padded inside, output cropped
    with torch.no_grad():
        y = net(x)
        padded = net(F.pad(x, (0, 2, 0, 2), mode="reflect"))
    assert y.shape == (1, 3, 20, 12)
    assert torch.equal(y, padded[..., :20, :12])
    assert desc.context == 32 and not desc.supports_half
    sd = net.state_dict()
    sd["absolute_pos_embed"] = torch.zeros(1, 16, 8)  # ape: not supported -> not detected
    assert get_arch("swinir").detect(sd) is None


@pytest.mark.parametrize(("scale", "count"), [(2, 910_152), (3, 918_267), (4, 929_628)])
def test_swinir_lightweight_parameter_counts(scale, count):
    """SwinIR-light (embed 60, 4 RSTBs of 6 blocks, 6 heads, window 8, mlp 2, pixelshuffledirect).
    Minus the relative-position bias tables (225 x 6 per block, 32,400) these are 877,752 /
    885,867 / 897,228: the paper's 878K / 886K / 897K."""
    with torch.device("meta"):
        net = get_arch("swinir").build(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4,
                                       upsampler="pixelshuffledirect", upscale=scale)
    assert sum(p.numel() for p in net.parameters()) == count
    tables = sum(p.numel() for n, p in net.named_parameters() if "bias_table" in n)
    assert tables == 32_400


@pytest.mark.parametrize("name", ["span", "swinir"])
def test_tiled_matches_untiled(name):
    """SPAN's context is exact: tiles equal the whole image up to float rounding. SwinIR's is a
    practical bound (attention reaches the whole image); on this tiny random network (two
    RSTBs) the tiled output stays within 2e-6 x its magnitude at that context - a check of
    the window-aligned tiling path, not a figure for trained 36-block models."""
    from sr_cli.infer.tiling import plan_tiles, run_tiled

    hp = ({"feature_channels": 8, "upscale": 2} if name == "span"
          else {**SWIN_TINY, "upscale": 2, "upsampler": "pixelshuffledirect"})
    net, desc = _randomized(name, **hp)
    x = _x(h=72, w=64, seed=2)
    with torch.no_grad():
        ref = net(x)
        tiles = plan_tiles(72, 64, 16, desc.context, desc.size_multiple)
        assert len(tiles) > 4
        tiled = run_tiled(net, x, 2, tiles)
    scale = ref.abs().max().item()
    torch.testing.assert_close(tiled, ref, atol=2e-6 * max(1.0, scale), rtol=0)


def test_engine_pads_swinir_to_the_window_and_tiles():
    from sr_cli.infer.engine import InferenceOptions, Upscaler

    net, desc = _randomized("swinir", **SWIN_TINY, upscale=2, upsampler="pixelshuffledirect")
    model = zoo.LoadedModel(name="t", net=net, desc=desc, metadata={}, source=None)
    x = _x(h=30, w=26, seed=4)  # not multiples of the window (4)
    whole = Upscaler(model, InferenceOptions(device="cpu", tile=0)).run(x)
    tiled = Upscaler(model, InferenceOptions(device="cpu", tile=12)).run(x)
    assert whole.shape == tiled.shape == (1, 3, 60, 52)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- Real-CUGAN


def _cugan_random(scale: int, pro: bool = False, seed: int = 3, channels: int = 3):
    """A Real-CUGAN with weights scaled per layer (uniform, variance ~1.4/fan-in) so that the
    activations stay O(1) through its ~20 layers and the SE gates vary with the content."""
    net, desc = build("realcugan", scale=scale, pro=pro, in_channels=channels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                k = m.kernel_size[0] * m.kernel_size[1]
                fan = (m.in_channels * k if isinstance(m, torch.nn.Conv2d)
                       else m.in_channels * k / (m.stride[0] * m.stride[1]))
                bound = (4.2 / fan) ** 0.5
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * 0.1)
    return net.eval(), desc


def _c(sd: dict, p: str, x: torch.Tensor, **kw) -> torch.Tensor:
    return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], **kw)


def _ct(sd: dict, p: str, x: torch.Tensor, **kw) -> torch.Tensor:
    return F.conv_transpose2d(x, sd[p + ".weight"], sd[p + ".bias"], **kw)


def _lr(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def _unet_conv(sd: dict, p: str, x: torch.Tensor, se: bool) -> torch.Tensor:
    x = _lr(_c(sd, p + ".conv.2", _lr(_c(sd, p + ".conv.0", x))))
    if se:
        m = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(_c(sd, p + ".seblock.conv2",
                                F.relu(_c(sd, p + ".seblock.conv1", m))))
        x = x * gate
    return x


def _ref_unet1(sd: dict, x: torch.Tensor, scale3: bool) -> torch.Tensor:
    x1 = _unet_conv(sd, "unet1.conv1", x, False)
    x2 = _lr(_c(sd, "unet1.conv1_down", x1, stride=2))
    x2 = _lr(_ct(sd, "unet1.conv2_up", _unet_conv(sd, "unet1.conv2", x2, True), stride=2))
    x3 = _lr(_c(sd, "unet1.conv3", x1[:, :, 4:-4, 4:-4] + x2))
    if scale3:
        return _ct(sd, "unet1.conv_bottom", x3, stride=3, padding=2)
    return _ct(sd, "unet1.conv_bottom", x3, stride=2, padding=3)


def _ref_unet2(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x1 = _unet_conv(sd, "unet2.conv1", x, False)
    x2 = _unet_conv(sd, "unet2.conv2", _lr(_c(sd, "unet2.conv1_down", x1, stride=2)), True)
    x3 = _unet_conv(sd, "unet2.conv3", _lr(_c(sd, "unet2.conv2_down", x2, stride=2)), True)
    x3 = _lr(_ct(sd, "unet2.conv3_up", x3, stride=2))
    x4 = _unet_conv(sd, "unet2.conv4", x2[:, :, 4:-4, 4:-4] + x3, True)
    x4 = _lr(_ct(sd, "unet2.conv4_up", x4, stride=2))
    x5 = _lr(_c(sd, "unet2.conv5", x1[:, :, 16:-16, 16:-16] + x4))
    return _c(sd, "unet2.conv_bottom", x5)


def _cugan_reference(sd: dict, x: torch.Tensor, scale: int, pro: bool) -> torch.Tensor:
    """Upstream's untiled UpCunet forward (``tile_mode=0``, alpha 1) with its pro input/output
    mapping (``np2tensor`` / ``tensor2np``), on the state dict with upstream keys."""
    if pro:
        x = x * 0.7 + 0.15
    _, _, h0, w0 = x.shape
    step, pad = {2: (2, 18), 3: (4, 14), 4: (2, 19)}[scale]
    ph, pw = ((h0 - 1) // step + 1) * step, ((w0 - 1) // step + 1) * step
    y = F.pad(x, (pad, pad + pw - w0, pad, pad + ph - h0), "reflect")
    y = _ref_unet1(sd, y, scale == 3)
    y = _ref_unet2(sd, y) + y[:, :, 20:-20, 20:-20]
    if scale == 4:
        y = F.pixel_shuffle(_c(sd, "conv_final", y)[:, :, 1:-1, 1:-1], 2)
    y = y[:, :, : h0 * scale, : w0 * scale]
    if scale == 4:
        y = y + F.interpolate(x, scale_factor=4, mode="nearest")
    return (y - 0.15) / 0.7 if pro else y


@pytest.mark.parametrize(("scale", "pro"), [(2, True), (3, False), (4, False)],
                         ids=lambda v: str(v))
def test_realcugan_matches_upstream_style_reference(scale, pro):
    """Float64, against the functional re-implementation above: both unet1 outputs (4x4 and
    5x5 transposed convs), unet2, the SE gates, x4's tail and the pro mapping."""
    net, desc = _cugan_random(scale, pro)
    net = net.double()
    x = _x(h=22, w=21, seed=1).double()  # odd: upstream's own padding to the multiple
    with torch.no_grad():
        ours = net(x)
        ref = _cugan_reference(net.state_dict(), x, scale, pro)
    assert ours.shape == (1, 3, 22 * scale, 21 * scale) == ref.shape
    assert ref.abs().max() > 0.1  # a live network, not one that saturated to constants
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize(("scale", "pro"), [(2, False), (3, True), (4, False)],
                         ids=lambda v: str(v))
def test_realcugan_upstream_keys_detect_and_load(scale, pro, fmt, tmp_path):
    from safetensors.torch import save_file

    net, desc = _cugan_random(scale, pro, seed=scale)
    sd = net.state_dict()
    assert ("pro" in sd) == pro
    path = tmp_path / f"up{scale}x.{fmt}"
    if fmt == "pth":  # the official files: a bare state dict; pro marked by a plain value
        torch.save({**sd, "pro": True} if pro else dict(sd), path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    found, _ = zoo.read_weights(path)
    hp = {"in_channels": 3, "scale": scale, "pro": pro}
    assert zoo.detect_arch(found) == ("realcugan", hp)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc and desc.scale == scale and desc.supports_half
    assert desc.size_multiple == {2: 2, 3: 4, 4: 2}[scale] and not desc.exact_context
    x = _x(h=20, w=24, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


def test_realcugan_parameter_counts_layout_and_refusals():
    from sr_cli.archs.realcugan import parameter_count

    spec = get_arch("realcugan")
    # upstream publishes no counts: checked against a hand count of its layer list
    for scale, count in ((2, 1_284_598), (3, 1_286_326), (4, 1_406_812)):
        with torch.device("meta"):
            net = spec.build(scale=scale)
        assert sum(p.numel() for p in net.parameters()) == count == parameter_count(3, scale)
        sd = net.state_dict()
        assert ("conv_final.weight" in sd) == (scale == 4)
        assert sd["unet1.conv_bottom.weight"].shape[-1] == (5 if scale == 3 else 4)
        assert sd["unet2.conv3.seblock.conv1.weight"].shape == (16, 128, 1, 1)
    gray = spec.build(in_channels=1, scale=4)
    assert spec.detect(gray.state_dict()) == {"in_channels": 1, "scale": 4, "pro": False}
    assert gray(_x(c=1, h=6, w=5)).shape == (1, 1, 24, 20)  # tiny: replicate-padded
    sd = dict(spec.build(scale=4).state_dict())
    # UpCunet2x_fast: a 12-channel (pixel-unshuffled) unet1 with conv_final - not supported
    sd["unet1.conv1.conv.0.weight"] = torch.zeros(32, 12, 3, 3)
    assert spec.detect(sd) is None
    with pytest.raises(Exception, match="scales 2, 3 and 4"):
        spec.build(scale=8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_realcugan_tiles_need_shared_se_statistics(scale):
    """The convolutions reach ``context`` input pixels: with the SE gates given the whole
    image's means, tiles at that context equal the untiled output (float rounding). With each
    tile's own means (what the engine's tiler does) the output differs: the SE gates see the
    whole image. (The radii themselves were measured from gradient supports, see facts.py.)"""
    from sr_cli.archs.realcugan import shared_se_statistics
    from sr_cli.infer.tiling import plan_tiles, run_tiled

    net, desc = _cugan_random(scale)
    m, ctx = desc.size_multiple, desc.context
    assert ctx == {2: 20, 3: 16, 4: 20}[scale]
    x = _x(h=64, w=16, seed=5)  # two tiles cut across the middle, each missing 12+ rows
    with torch.no_grad():
        ref = net(x)
        tiles = plan_tiles(64, 16, 32, ctx, m)
        assert len(tiles) == 2 and tiles[0].py1 < 64 and tiles[1].py0 > 0
        own = run_tiled(net, x, scale, tiles)
        with shared_se_statistics(net, x):
            shared = run_tiled(net, x, scale, tiles)
    top = ref.abs().max().item()
    torch.testing.assert_close(shared, ref, atol=2e-6 * top, rtol=0)
    assert (own - ref).abs().max() > 1e-4 * top  # 50x the float noise above


def test_realcugan_through_the_engine_alpha_gray_and_half():
    """RGBA and gray images go through the engine (alpha upscaled separately, gray as RGB);
    bf16/fp16 forwards (SE means taken in float32) stay close to fp32."""
    import numpy as np

    from sr_cli.infer.engine import InferenceOptions, Upscaler

    net, desc = _cugan_random(2)
    model = zoo.LoadedModel(name="t", net=net, desc=desc, metadata={"context": "20"},
                            source=None)
    up = Upscaler(model, InferenceOptions(device="cpu", tile=0))
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (21, 14, 4), dtype=np.uint8)  # odd: padded to the multiple
    out = up.upscale_array(rgba)
    assert out.shape == (42, 28, 4) and out.dtype == np.uint8
    gray = rng.integers(0, 256, (21, 14), dtype=np.uint8)
    assert up.upscale_array(gray).shape == (42, 28)
    x = _x(h=8, w=8, seed=7)
    with torch.no_grad():
        ref = net(x)
        for dt in (torch.bfloat16, torch.float16):
            low = net.to(dt)(x.to(dt)).float()
            assert (low - ref).abs().max() < 0.05 * ref.abs().max()
    net.float()


def test_realcugan_models_info_convert_and_interp(runner, tmp_path, monkeypatch):
    """`sr models info/convert` and `sr interp` on pro x2 files. The context probe that
    convert/interp run on networks without an exact context is replaced by a recording stub
    (on these strongly random weights it runs the probe to its cap, ~20 s per file here)."""
    import json

    from safetensors.torch import load_file

    from sr_cli.cli import app
    from sr_cli.infer import context

    probed = []
    monkeypatch.setattr(context, "measure_context",
                        lambda net, desc, **kw: probed.append(desc.arch) or 24)

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    net_a, _ = _cugan_random(2, pro=True, seed=1)
    net_b, _ = _cugan_random(2, pro=True, seed=2)
    torch.save(net_a.state_dict(), a)
    torch.save(net_b.state_dict(), b)
    info = runner.invoke(app, ["models", "info", str(a), "--json"])
    assert info.exit_code == 0, info.output
    facts = json.loads(info.stdout)
    assert facts["arch"] == "realcugan" and facts["scale"] == 2
    out = tmp_path / "a.safetensors"
    res = runner.invoke(app, ["models", "convert", str(a), str(out)])
    assert res.exit_code == 0, res.output
    loaded = zoo.load_model(str(out))
    assert loaded.desc.hparams["pro"] and loaded.desc.context == 24
    mix = tmp_path / "mix.safetensors"
    res = runner.invoke(app, ["interp", str(out), str(b), "--alpha", "0.5", "-o", str(mix)])
    assert res.exit_code == 0, res.output
    t = load_file(str(mix))
    k = "unet2.conv3.conv.0.weight"
    torch.testing.assert_close(t[k], (net_a.state_dict()[k] + net_b.state_dict()[k]) / 2)
    assert "pro" in t and probed == ["realcugan", "realcugan"]


# --------------------------------------------------------------------------- OmniSR


def _ln_pixel(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm of each pixel over channels, (B, C, H, W), written out."""
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def _conv_sd(sd: dict, p: str, x: torch.Tensor, groups: int = 1, stride: int = 1,
             pad: int | None = None) -> torch.Tensor:
    wt = sd[p + "weight"]
    return F.conv2d(x, wt, sd.get(p + "bias"), stride=stride,
                    padding=wt.shape[-1] // 2 if pad is None else pad, groups=groups)


def _omni_attention(sd: dict, p: str, x: torch.Tensor, ws: int, grid: bool) -> torch.Tensor:
    """PreNormResidual(Attention) of upstream's OSA block, one window at a time, picked by
    slicing: block windows are ws x ws squares, grid windows the pixels ``x::H/ws``."""
    b, c, h, w = x.shape
    y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), sd[p + "norm.weight"], sd[p + "norm.bias"])
    y = y.permute(0, 3, 1, 2)
    out = torch.zeros_like(x)
    heads, d = 4, c // 4
    table = sd.get(p + "fn.rel_pos_bias.weight")
    nx, ny = h // ws, w // ws
    for i in range(nx):
        for j in range(ny):
            sl = ((slice(i, None, nx), slice(j, None, ny)) if grid else
                  (slice(i * ws, (i + 1) * ws), slice(j * ws, (j + 1) * ws)))
            tok = y[:, :, sl[0], sl[1]].reshape(b, c, ws * ws).transpose(1, 2)  # (b, n, c)
            q, k, v = F.linear(tok, sd[p + "fn.to_qkv.weight"]).chunk(3, dim=-1)
            q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
            sim = torch.einsum("bhid,bhjd->bhij", q * d ** -0.5, k)
            if table is not None:
                sim = sim + table[_upstream_rpi(ws).view(-1)].view(ws * ws, ws * ws, -1
                                                                   ).permute(2, 0, 1)
            o = torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v)
            o = F.linear(o.transpose(1, 2).reshape(b, -1, c), sd[p + "fn.to_out.0.weight"])
            out[:, :, sl[0], sl[1]] = o.transpose(1, 2).reshape(b, c, ws, ws)
    return x + out


def _omni_channel_attention(sd: dict, p: str, x: torch.Tensor, ws: int,
                            grid: bool) -> torch.Tensor:
    """Conv_PreNormResidual(Channel_Attention[_grid]): per window (or per phase of the grid),
    channels attend to channels over that group's pixels."""
    b, c, h, w = x.shape
    y = _ln_pixel(x, sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
    qkv = _conv_sd(sd, p + "fn.qkv_dwconv.", _conv_sd(sd, p + "fn.qkv.", y), groups=3 * c)
    mixed = torch.zeros_like(x)
    groups = ([(slice(a, None, ws), slice(e, None, ws)) for a in range(ws) for e in range(ws)]
              if grid else [(slice(a, a + ws), slice(e, e + ws))
                            for a in range(0, h, ws) for e in range(0, w, ws)])
    temp = sd[p + "fn.temperature"].view(4, 1, 1)
    for rows, cols in groups:
        q, k, v = (t[:, :, rows, cols] for t in qkv.chunk(3, dim=1))
        shape = q.shape
        q, k, v = (t.reshape(b, 4, c // 4, -1) for t in (q, k, v))
        q, k = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12), k / k.norm(
            dim=-1, keepdim=True).clamp_min(1e-12)
        attn = (q @ k.transpose(-2, -1) * temp).softmax(-1)
        mixed[:, :, rows, cols] = (attn @ v).reshape(shape)
    return x + _conv_sd(sd, p + "fn.project_out.", mixed)


def _omni_gffn(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    y = _ln_pixel(x, sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
    y = _conv_sd(sd, p + "fn.dwconv.", _conv_sd(sd, p + "fn.project_in.", y), groups=2 * c)
    return x + _conv_sd(sd, p + "fn.project_out.", F.gelu(y[:, :c]) * y[:, c:])


def _omni_block(sd: dict, p: str, x: torch.Tensor, ws: int) -> torch.Tensor:
    c = x.shape[1]
    y = F.gelu(_conv_sd(sd, p + "0.fn.0.", x))
    y = F.gelu(_conv_sd(sd, p + "0.fn.2.", y, groups=c))
    gate = torch.sigmoid(F.linear(F.silu(F.linear(y.mean((2, 3)), sd[p + "0.fn.4.gate.1.weight"])),
                                  sd[p + "0.fn.4.gate.3.weight"]))
    x = x + _conv_sd(sd, p + "0.fn.5.", y * gate[:, :, None, None])
    x = _omni_attention(sd, p + "2.", x, ws, grid=False)
    x = _omni_gffn(sd, p + "4.", x)
    x = _omni_channel_attention(sd, p + "5.", x, ws, grid=False)
    x = _omni_gffn(sd, p + "6.", x)
    x = _omni_attention(sd, p + "8.", x, ws, grid=True)
    x = _omni_gffn(sd, p + "10.", x)
    x = _omni_channel_attention(sd, p + "11.", x, ws, grid=True)
    return _omni_gffn(sd, p + "12.", x)


def _omnisr_reference(sd: dict, hp: dict, x: torch.Tensor) -> torch.Tensor:
    """OmniSR's forward as upstream's components/OmniSR.py, ops/OSAG.py, ops/OSA.py and
    ops/esa.py compute it (input sides multiples of the window, >= 16), on upstream keys."""
    ws = hp["window_size"]
    feat = _conv_sd(sd, "input.", x)
    out = feat
    for g in range(hp["res_num"]):
        p = f"residual_layer.{g}."
        y = out
        for j in range(hp["block_num"]):
            y = _omni_block(sd, f"{p}residual_layer.{j}.layer.", y, ws)
        y = _conv_sd(sd, f"{p}residual_layer.{hp['block_num']}.", y) + out
        e = p + "esa."
        c1_ = _conv_sd(sd, e + "conv1.", y)
        c3 = _conv_sd(sd, e + "conv3.", F.max_pool2d(
            _conv_sd(sd, e + "conv2.", c1_, stride=2, pad=0), 7, 3))
        c3 = F.interpolate(c3, y.shape[-2:], mode="bilinear", align_corners=False)
        out = y * torch.sigmoid(_conv_sd(sd, e + "conv4.", c3 + _conv_sd(sd, e + "conv_f.", c1_)))
    out = _conv_sd(sd, "output.", out) + feat
    return F.pixel_shuffle(_conv_sd(sd, "up.0.", out), hp["up_scale"])


OMNI_TINY = {"num_feat": 8, "window_size": 4, "res_num": 2, "block_num": 2}
OMNI_VARIANTS = [
    {"up_scale": 2},
    {"up_scale": 3, "pe": False, "bias": False},
    {"up_scale": 1, "num_in_ch": 1, "num_out_ch": 1, "window_size": 8, "res_num": 1,
     "block_num": 1},
]


@pytest.mark.parametrize("variant", OMNI_VARIANTS, ids=["x2", "x3-nope-nobias", "x1-gray-w8"])
def test_omnisr_matches_upstream_style_reference(variant):
    hp = get_arch("omnisr").hparams(**{**OMNI_TINY, **variant})
    net, _ = _randomized("omnisr", **hp)
    net = net.double()
    ws = hp["window_size"]
    side = max(16, 2 * ws)
    x = _x(c=hp["num_in_ch"], h=side, w=side + ws).double()
    with torch.no_grad():
        ours = net(x)
        ref = _omnisr_reference(net.state_dict(), hp, x)
    s = hp["up_scale"]
    assert ours.shape == (1, hp["num_out_ch"], side * s, (side + ws) * s)
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9)


def _upstream_omnisr_keys(sd: dict) -> dict:
    """Our state dict as checkpoints profiled with thop carry it: a ``total_ops`` and a
    ``total_params`` counter in every module."""
    out = dict(sd)
    prefixes = {k.rsplit(".", 1)[0] for k in sd} | {""}
    for p in prefixes:
        for name in ("total_ops", "total_params"):
            out[f"{p}.{name}" if p else name] = torch.zeros(1, dtype=torch.float64)
    return out


@pytest.mark.parametrize("variant", OMNI_VARIANTS, ids=["x2", "x3-nope-nobias", "x1-gray-w8"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_omnisr_upstream_keys_detect_and_load(variant, fmt, tmp_path):
    from safetensors.torch import save_file

    hp = get_arch("omnisr").hparams(**{**OMNI_TINY, **variant})
    if not hp["pe"]:
        hp["window_size"] = 8  # not in the weights without the bias table: the default
    net, desc = _randomized("omnisr", **hp)
    up = _upstream_omnisr_keys(net.state_dict())
    path = tmp_path / f"omnisr.{fmt}"
    if fmt == "pth":
        torch.save({"params": up}, path)
    else:
        save_file({k: v.contiguous() for k, v in up.items()}, str(path))
    sd, _ = zoo.read_weights(path)
    assert zoo.detect_arch(sd) == ("omnisr", hp)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc and desc.size_multiple == hp["window_size"]
    assert not desc.exact_context and desc.supports_half
    x = _x(c=hp["num_in_ch"], h=16, w=24)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


def test_omnisr_key_set_must_match():
    net, _ = _randomized("omnisr", **OMNI_TINY)
    sd = net.state_dict()
    spec = get_arch("omnisr")
    assert spec.detect(sd) == spec.hparams(**OMNI_TINY)
    for broken in (
        {k: v for k, v in sd.items() if not k.endswith("esa.conv3.weight")},   # missing
        {**sd, "residual_layer.0.residual_layer.0.layer.3.weight": torch.zeros(1)},  # extra
        {**sd, "output.weight": torch.zeros(8, 8, 1, 1)},                       # shape
        {**sd, "up.0.weight": torch.zeros(5, 8, 3, 3)},                         # no scale
    ):
        assert spec.detect(broken) is None
        with pytest.raises(ModelError, match="no known architecture"):
            zoo.detect_arch(broken)


def test_omnisr_pads_small_and_odd_inputs():
    """Upstream zero-pads to the window (and ESA needs 15 pixels): any size runs, the output
    is the padded input's output, cropped."""
    net, desc = _randomized("omnisr", **OMNI_TINY, up_scale=2)
    x = _x(h=5, w=18)
    with torch.no_grad():
        y = net(x)
        padded = net(F.pad(x, (0, 2, 0, 11)))  # to 16 x 20
    assert y.shape == (1, 3, 10, 36)
    assert torch.equal(y, padded[..., :10, :36])


@pytest.mark.parametrize(("scale", "count", "paper"), [(2, 784_604, 772), (3, 793_259, 780),
                                                        (4, 805_376, 792)])
def test_omnisr_parameter_counts(scale, count, paper):
    """The published OmniSR (64 features, 5 OSAGs of 1 block, window 8, pe): the paper's
    772K/780K/792K are thop's counts, which skip nn.Embedding (the bias tables, 9,000),
    parameters of custom modules (LayerNorm2d, 3,840) and the channel-attention temperatures
    (40): 12,880 in all."""
    from sr_cli.archs.base import meta_build

    with meta_build():
        net = get_arch("omnisr").build(up_scale=scale)
    assert sum(p.numel() for p in net.parameters()) == count
    skipped = sum(p.numel() for n, p in net.named_parameters()
                  if "rel_pos_bias" in n or n.endswith("temperature")
                  or (".norm." in n and n.split(".layer.")[1].split(".")[0] not in ("2", "8")))
    assert skipped == 12_880
    assert round((count - skipped) / 1000) == paper


def _local_omnisr(seed: int = 5):
    """A tiny OmniSR with its global paths silenced (squeeze-excite linears, grid attention
    and grid channel attention outputs, ESA's pooled branch set to 0): what is left is local
    and window-aligned, so tiles at an overlap past its radius must equal the whole image."""
    net, desc = _randomized("omnisr", seed, num_feat=8, window_size=4, res_num=1, up_scale=2)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if (".gate." in name or ".layer.8.fn.to_out" in name
                    or ".layer.11.fn.project_out" in name or "esa.conv3" in name):
                p.zero_()
    return net, desc


def test_omnisr_tiling():
    """The window-aligned tiling path is exact where OmniSR is local (global paths silenced);
    with them, tiles differ from the whole image (not exact by design: the descriptor says so
    and the engine measures the context from the weights)."""
    from sr_cli.infer.tiling import plan_tiles, run_tiled

    x = _x(h=48, w=44, seed=2)
    local, desc = _local_omnisr()
    full, _ = _randomized("omnisr", 5, num_feat=8, window_size=4, res_num=1, up_scale=2)
    tiles = plan_tiles(48, 44, 16, 24, desc.size_multiple)
    assert len(tiles) > 4
    with torch.no_grad():
        ref = local(x)
        torch.testing.assert_close(run_tiled(local, x, 2, tiles), ref, atol=1e-5, rtol=0)
        gap = (run_tiled(full, x, 2, tiles) - full(x)).abs().max()
    assert gap > 1e-4


def test_omnisr_through_the_cli(runner, tmp_path, write_png, make_image):
    """An upstream-keyed .pth goes through info, convert (context measured into the file),
    upscale of gray and RGBA images, and interp with a second OmniSR."""
    import json

    import imageio.v3 as iio
    import numpy as np

    from sr_cli.cli import app

    hp = {"num_feat": 8, "window_size": 4, "res_num": 1, "up_scale": 2}
    paths = []
    for seed in (1, 2):
        net, _ = _randomized("omnisr", seed, **hp)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.mul_(0.1 if "weight" in n else 0.0)  # near-identity residuals: sane images
        paths.append(tmp_path / f"o{seed}.pth")
        torch.save({"params_ema": _upstream_omnisr_keys(net.state_dict())}, paths[-1])
    res = runner.invoke(app, ["models", "info", str(paths[0]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["arch"] == "omnisr" and info["size_multiple"] == 4 and info["supports_half"]
    out = tmp_path / "o1.safetensors"
    res = runner.invoke(app, ["models", "convert", str(paths[0]), str(out)])
    assert res.exit_code == 0, res.output
    _, meta = zoo.read_weights(out)
    assert meta["arch"] == "omnisr" and int(meta["context"]) % 4 == 0
    rgba = make_image(18, 14, c=4)
    gray = make_image(18, 14, c=1)
    for name, img, shape in (("a.png", rgba, (36, 28, 4)), ("g.png", gray, (36, 28))):
        src = write_png(name, img)
        res = runner.invoke(app, ["upscale", str(src), str(tmp_path / f"up-{name}"), "-m",
                                  str(out), "-q"])
        assert res.exit_code == 0, res.output
        assert iio.imread(tmp_path / f"up-{name}").shape == shape
    blend = tmp_path / "blend.safetensors"
    res = runner.invoke(app, ["interp", str(paths[0]), str(paths[1]), "--alpha", "0.5", "-o",
                              str(blend)])
    assert res.exit_code == 0, res.output
    a, b = zoo.read_weights(paths[0])[0], zoo.read_weights(paths[1])[0]
    got, _ = zoo.read_weights(blend)
    key = "residual_layer.0.residual_layer.0.layer.5.fn.qkv.weight"
    assert torch.equal(got[key], ((a[key].double() + b[key].double()) / 2).float())
    assert np.isfinite(got["input.weight"].numpy()).all()


def test_omnisr_half_precision_is_close():
    """bf16/fp16 (marked supported) stay close to fp32 on a tiny network's output."""
    net, _ = _randomized("omnisr", **OMNI_TINY, up_scale=2)
    x = _x(h=16, w=16)
    with torch.no_grad():
        ref = net(x)
        for dt in (torch.bfloat16, torch.float16):
            y = net.to(dt)(x.to(dt)).float()
            assert torch.isfinite(y).all()
            assert (y - ref).abs().max() <= 0.02 * max(1.0, ref.abs().max().item()), dt
