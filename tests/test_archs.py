"""Architectures: every registered spec gets the same forward/backward/round-trip/detect tests
(timm-style, by iterating the registry), plus per-architecture facts (parameter counts, scales,
receptive fields, SRCNN's Y-channel handling)."""

from __future__ import annotations

import math

import pytest
import torch

from sr_cli import zoo
from sr_cli.archs import all_specs, arch_names, build, get_arch
from sr_cli.archs.base import ArchSpec
from sr_cli.archs.srcnn import rgb_to_ycbcr, ycbcr_to_rgb
from sr_cli.degrade.resize import imresize
from sr_cli.errors import ModelError

SPECS = all_specs()
LEARNED = [s for s in SPECS if s.extra.get("learned", True)]


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _input(spec: ArchSpec, hp: dict, h: int = 12, w: int = 8, seed: int = 0) -> torch.Tensor:
    desc = spec.describe(hp)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, desc.in_channels, h, w, generator=g)


def _tiny(spec: ArchSpec) -> dict:
    return spec.hparams(**spec.extra["tiny"])


def _randomize(net: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter and BN buffer non-trivial values (so round trips test something).
    Other buffers (DAT's ``rpe_biases`` offset grid, which records the window shape) keep
    their values."""
    g = torch.Generator().manual_seed(seed)
    params = {name for name, _ in net.named_parameters()}
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point() and (name in params or ".running_" in name):
                noise = torch.rand(t.shape, generator=g)
                t.copy_(noise + 0.5 if "running_var" in name else (noise - 0.5) * 0.2)


def test_registry_lists_every_architecture():
    assert set(arch_names()) >= {"srcnn", "srresnet", "rrdbnet", "srvgg", "span", "swinir",
                                 "realcugan", "bicubic", "lanczos", "nearest"}
    with pytest.raises(ModelError, match="unknown architecture"):
        get_arch("edsr")
    with pytest.raises(ModelError, match="unknown hyperparameter"):
        build("srvgg", num_blocks=3)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_forward_shape_and_finite(spec: ArchSpec):
    hp = _tiny(spec)
    net = spec.factory(**hp).eval()
    desc = spec.describe(hp)
    x = _input(spec, hp)
    with torch.no_grad():
        y = net(x)
    s = desc.scale or hp["scale"]
    assert y.shape == (2, x.shape[1], math.ceil(12 * s), math.ceil(8 * s))
    assert torch.isfinite(y).all()
    assert desc.arch == spec.name
    assert desc.context >= 1 and desc.size_multiple >= 1
    assert desc.learned == spec.extra.get("learned", True)


@pytest.mark.parametrize("spec", LEARNED, ids=lambda s: s.name)
def test_backward_reaches_every_parameter(spec: ArchSpec):
    hp = _tiny(spec)
    net = spec.factory(**hp).train()
    x = _input(spec, hp)
    y = net(x)
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("spec", LEARNED, ids=lambda s: s.name)
def test_safetensors_round_trip_and_detect(spec: ArchSpec, tmp_path):
    hp = _tiny(spec)
    net, desc = build(spec.name, **hp)
    _randomize(net)
    net.eval()
    x = _input(spec, hp)
    with torch.no_grad():
        ref = net(x)
    path = tmp_path / f"{spec.name}.safetensors"
    zoo.save_model(path, net, desc, {"name": "tiny", "recipe": "test"})
    loaded = zoo.load_model(str(path))
    if desc.exact_context:
        assert loaded.desc == desc
    else:  # deep networks carry the context measured from their weights
        import dataclasses

        assert loaded.desc == dataclasses.replace(desc, context=int(loaded.metadata["context"]))
    assert loaded.metadata["recipe"] == "test" and loaded.metadata["arch"] == spec.name
    assert not loaded.net.training
    with torch.no_grad():
        assert torch.equal(loaded.net(x), ref)
    # Without metadata, the architecture and every hyperparameter come from the tensors.
    sd, _ = zoo.read_weights(path)
    arch, found = zoo.detect_arch(sd)
    assert arch == spec.name
    if spec.extra.get("scale_in_weights", True):
        assert found == hp
    else:  # SRCNN: the factor is not in the weights
        assert {k: v for k, v in found.items() if k != "scale"} == {
            k: v for k, v in hp.items() if k != "scale"}


@pytest.mark.parametrize("spec", LEARNED, ids=lambda s: s.name)
def test_detect_rejects_other_architectures(spec: ArchSpec):
    for other in LEARNED:
        if other.name == spec.name:
            continue
        sd = other.build(**other.extra["tiny"]).state_dict()
        assert spec.detect(spec.canonical_keys(sd)) is None, (spec.name, other.name)


@pytest.mark.parametrize(
    ("hp", "count"),
    [({}, 16_697_987), ({"num_block": 6}, 4_467_779), ({"scale": 2}, 16_703_171)],
)
def test_rrdbnet_parameter_counts(hp, count):
    with torch.device("meta"):
        net = get_arch("rrdbnet").build(**hp)
    assert _params(net) == count


@pytest.mark.parametrize(("num_conv", "count"), [(16, 621_424), (32, 1_213_296)])
def test_srvgg_parameter_counts(num_conv, count):
    assert _params(get_arch("srvgg").build(num_conv=num_conv)) == count


def test_srvgg_keys_and_prelu_at_odd_indices():
    sd = get_arch("srvgg").build(num_feat=4, num_conv=3, upscale=2).state_dict()
    assert f"body.{2 * 3 + 2}.weight" in sd and f"body.{2 * 3 + 3}.weight" not in sd
    assert all(sd[f"body.{i}.weight"].shape == (4,) for i in (1, 3, 5, 7))


def test_srvgg_output_is_residual_on_nearest_upsample():
    net = get_arch("srvgg").build(num_feat=4, num_conv=1, upscale=3)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    x = torch.rand(1, 3, 5, 4)
    assert torch.equal(net(x), x.repeat_interleave(3, 2).repeat_interleave(3, 3))


@pytest.mark.parametrize("act", ["prelu", "relu", "leakyrelu"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srvgg_training_init_bases(act, scale):
    """nearest: the network is its nearest base; bilinear: away from the 1-pixel LR border it
    is F.interpolate bilinear (align_corners=False), whatever the other channels hold."""
    net = get_arch("srvgg").build(num_feat=8, num_conv=3, upscale=scale, act_type=act)
    x = torch.rand(1, 3, 9, 11)
    net.init_for_training()
    assert torch.equal(net(x), x.repeat_interleave(scale, 2).repeat_interleave(scale, 3))
    net.init_for_training(base="bilinear")
    want = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear",
                                           align_corners=False)
    s = scale
    assert torch.allclose(net(x)[..., s:-s, s:-s], want[..., s:-s, s:-s], atol=2e-6)
    with pytest.raises(ValueError):
        net.init_for_training(base="bicubic")


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_scales_and_size_multiple(scale):
    hp = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": scale}
    net, desc = build("rrdbnet", **hp)
    u = {4: 1, 2: 2, 1: 4}[scale]
    assert desc.size_multiple == u
    assert net.conv_first.in_channels == 3 * u * u
    assert desc.context % u == 0 and desc.context <= 32
    y = net(torch.rand(1, 3, 8, 12))
    assert y.shape == (1, 3, 8 * scale, 12 * scale)
    assert zoo.detect_arch(net.state_dict())[1]["scale"] == scale


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("norm", [True, False])
def test_srresnet_scales_norm_and_detect(scale, norm):
    hp = {"num_feat": 4, "num_block": 1, "scale": scale, "norm": norm}
    net, desc = build("srresnet", **hp)
    assert net(torch.rand(1, 3, 5, 6)).shape == (1, 3, 5 * scale, 6 * scale)
    assert any("bn" in k for k in net.state_dict()) == norm
    assert zoo.detect_arch(net.state_dict()) == ("srresnet", get_arch("srresnet").hparams(**hp))


def test_srresnet_paper_layout():
    net = get_arch("srresnet").build()
    assert net.conv_first.kernel_size == (9, 9) and net.conv_last.kernel_size == (9, 9)
    assert len(net.body) == 16 and net.conv_first.out_channels == 64
    assert isinstance(net.body[0].bn1, torch.nn.BatchNorm2d)
    assert [m.shuffle.upscale_factor for m in net.upsample] == [2, 2]


@pytest.mark.parametrize("arch", ["srcnn", "srresnet", "srvgg", "span"])
def test_context_bounds_the_receptive_field(arch):
    """Exact contexts: no input pixel farther than ``context`` influences an output pixel."""
    spec = get_arch(arch)
    hp = _tiny(spec)
    net = spec.factory(**hp).eval()
    _randomize(net, seed=3)
    net.double()  # float64: saturated units (SPAN's x255 input) must not underflow gradients
    desc = spec.describe(hp)
    s, n = desc.scale, 2 * desc.context + 9
    c = n // 2
    for phase in range(s):  # every sub-pixel position of the output pixel
        x = torch.rand(1, desc.in_channels, n, n, dtype=torch.float64, requires_grad=True)
        net(x)[0, :, c * s + phase, c * s + phase].sum().backward()
        assert x.grad is not None
        hit = x.grad.abs().sum(dim=(0, 1)) > 0
        iy, ix = torch.nonzero(hit, as_tuple=True)
        reach = max((iy - c).abs().max().item(), (ix - c).abs().max().item())
        assert reach <= desc.context, phase
        if phase in (0, s - 1):
            assert reach >= desc.context - 1, phase  # and the bound is tight


def test_ycbcr_matlab_convention_and_inverse():
    white = torch.ones(1, 3, 1, 1)
    black = torch.zeros(1, 3, 1, 1)
    assert rgb_to_ycbcr(white)[0, :, 0, 0].mul(255).tolist() == pytest.approx([235, 128, 128])
    assert rgb_to_ycbcr(black)[0, :, 0, 0].mul(255).tolist() == pytest.approx([16, 128, 128])
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)


def test_srcnn_on_rgb_works_on_y_and_upsamples_chroma_bicubically():
    net = get_arch("srcnn").build(scale=3, n1=8, n2=4)
    _randomize(net)
    x = torch.rand(1, 3, 7, 6, dtype=torch.float64)
    net = net.double().eval()
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, 21, 18)
    up = imresize(x, scale=3.0)
    ycc_out, ycc_up = rgb_to_ycbcr(y), rgb_to_ycbcr(up)
    assert torch.allclose(ycc_out[:, 1:], ycc_up[:, 1:], atol=1e-10)  # chroma: plain bicubic
    with torch.no_grad():
        assert torch.allclose(ycc_out[:, :1], net._net(ycc_up[:, :1]), atol=1e-10)
    rgb_net = get_arch("srcnn").build(in_channels=3, n1=8, n2=4)
    assert rgb_net(torch.rand(1, 3, 5, 5)).shape == (1, 3, 15, 15)
    assert get_arch("srcnn").describe(get_arch("srcnn").hparams()).accepts_rgb


def test_srcnn_paper_shapes():
    net = get_arch("srcnn").build()
    assert [tuple(c.weight.shape) for c in (net.conv1, net.conv2, net.conv3)] == [
        (64, 1, 9, 9), (32, 64, 5, 5), (1, 32, 5, 5)]


@pytest.mark.parametrize(("name", "kernel"),
                         [("bicubic", "cubic"), ("lanczos", "lanczos3"), ("nearest", "nearest")])
@pytest.mark.parametrize("scale", [0.5, 2.0, 2.5])
def test_baselines_are_matlab_imresize(name, kernel, scale):
    net, desc = build(name, scale=scale)
    assert desc.scale == 0 and not desc.learned and _params(net) == 0
    x = torch.rand(1, 4, 9, 10)  # any channel count
    assert torch.equal(net(x), imresize(x, scale=scale, kernel=kernel))
    assert net(x).shape[-2:] == (math.ceil(9 * scale), math.ceil(10 * scale))
