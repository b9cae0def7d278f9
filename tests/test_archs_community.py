"""Community architectures (SPAN, SwinIR): upstream key names load, detection of every
hyperparameter, and the forward checked against straightforward re-implementations written
here from the papers/upstream code (no official weights can be downloaded in this project)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sr_cli import zoo
from sr_cli.archs import build, get_arch
from sr_cli.archs.span import IMG_RANGE, RGB_MEAN

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
