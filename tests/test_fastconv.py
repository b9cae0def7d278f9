"""The alternative CPU convolutions (sr_cli/infer/fastconv.py): accuracy against a float64
reference per mode, tile = whole-image exactness, whole networks, and the mode switch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs import build
from sr_cli.errors import UsageError
from sr_cli.infer.fastconv import (
    NNPACKConv2d,
    WinogradConv2d,
    eligible,
    prepare_for_cpu,
    reference_conv,
    resolve_mode,
)

# Max |error| relative to the reference's max |value|, per implementation (float32 data).
# Measured on these cases: F(2x2) <= 2.4e-7, F(4x4) <= 3.0e-6, NNPACK F(6x6) <= 5.2e-6.
REL_TOL = {"winograd2": 2e-6, "winograd4": 2e-5, "nnpack": 5e-5}
MODULES = {
    "winograd2": lambda c: WinogradConv2d(c, 2),
    "winograd4": lambda c: WinogradConv2d(c, 4),
    "nnpack": NNPACKConv2d,
}


def _conv(cin: int, cout: int, seed: int = 0) -> nn.Conv2d:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (3 * cin**0.5))
        conv.bias.copy_(torch.randn(cout, generator=g) * 0.1)
    return conv.eval().requires_grad_(False)


def _input(n: int, c: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("mode", sorted(MODULES))
@pytest.mark.parametrize(("cin", "cout", "h", "w"), [(16, 8, 13, 10), (24, 16, 8, 8), (3, 5, 7, 9)])
def test_matches_float64_reference(mode: str, cin: int, cout: int, h: int, w: int) -> None:
    """Odd sizes (partial tiles), tiny channel counts; error vs float64 within the pinned
    tolerance, and no worse than a small multiple of torch's own float32 error."""
    if mode == "nnpack" and not torch._nnpack_available():
        pytest.skip("this PyTorch has no NNPACK")
    conv = _conv(cin, cout)
    x = _input(2, cin, h, w)
    ref = reference_conv(x, conv)
    with torch.no_grad():
        got = MODULES[mode](conv)(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    err = (got.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"{mode} {cin}->{cout} {h}x{w}: max err {err:.2e} (rel {err / scale:.2e})")
    assert err <= REL_TOL[mode] * scale


@pytest.mark.parametrize("mode", ["winograd2", "winograd4"])
def test_tile_equals_whole_image(mode: str) -> None:
    """A crop of the input convolved = the same crop of the whole-image output, inside and at
    the borders (zero padding 1 at image borders, real pixels inside), up to float rounding."""
    conv = _conv(16, 16, seed=3)
    x = _input(1, 16, 21, 19)
    mod = MODULES[mode](conv)
    with torch.no_grad():
        whole = mod(x)
        for y0, y1, x0, x1 in [(0, 11, 0, 9), (5, 21, 3, 19), (2, 15, 6, 13)]:
            tile = mod(x[:, :, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last))
            # rows/cols next to a tile's cut edge see zeros instead of pixels: compare inside
            iy0, iy1 = (0 if y0 == 0 else 1), (y1 - y0 if y1 == 21 else y1 - y0 - 1)
            ix0, ix1 = (0 if x0 == 0 else 1), (x1 - x0 if x1 == 19 else x1 - x0 - 1)
            a = tile[:, :, iy0:iy1, ix0:ix1]
            b = whole[:, :, y0 + iy0 : y0 + iy1, x0 + ix0 : x0 + ix1]
            tol = REL_TOL[mode] * whole.abs().max().item()
            assert (a - b).abs().max().item() <= tol


def test_eligibility() -> None:
    assert eligible(nn.Conv2d(4, 4, 3, 1, 1))
    assert not eligible(nn.Conv2d(4, 4, 3, 2, 1))  # stride
    assert not eligible(nn.Conv2d(4, 4, 1))  # 1x1
    assert not eligible(nn.Conv2d(4, 4, 3, 1, 1, groups=2))
    assert not eligible(nn.Conv2d(4, 4, 3, 1, 2, dilation=2))
    assert not eligible(nn.Conv2d(4, 4, 3, 1, 1, padding_mode="reflect"))
    assert not eligible(nn.Conv2d(4, 4, 3, 1, 1).to(torch.bfloat16))


@pytest.mark.parametrize("arch", ["srvgg", "rrdbnet", "srresnet"])
@pytest.mark.parametrize("mode", ["winograd4", "nnpack"])
def test_whole_network(arch: str, mode: str) -> None:
    """Every eligible conv of the registry's tiny network swapped; output within float32
    noise of the float64 forward (8-bit levels)."""
    if mode == "nnpack" and not torch._nnpack_available():
        pytest.skip("this PyTorch has no NNPACK")
    from sr_cli.archs.registry import get_arch

    torch.manual_seed(0)
    net, _ = build(arch, **get_arch(arch).extra.get("tiny", {}))
    net.eval().requires_grad_(False)
    x = torch.rand(1, 3, 16, 12).contiguous(memory_format=torch.channels_last)
    fast = prepare_for_cpu(copy.deepcopy(net).to(memory_format=torch.channels_last),
                           torch.float32, mode)
    n_conv = sum(eligible(m) for m in net.modules())
    swapped = sum(isinstance(m, WinogradConv2d | NNPACKConv2d) for m in fast.modules())
    assert swapped == n_conv > 0
    assert not any(eligible(m) for m in fast.modules())
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
        got = fast(x).double()
    err = (got - ref).abs() * 255
    print(f"{arch} {mode}: max {err.max():.2e} mean {err.mean():.2e} levels")
    assert err.max().item() < 0.01


def test_modes_and_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU())
    monkeypatch.delenv("SR_CPU_CONV", raising=False)
    assert resolve_mode() == "auto"
    # auto keeps oneDNN for small layers; bf16 is never swapped
    assert isinstance(prepare_for_cpu(copy.deepcopy(net), torch.float32)[0], nn.Conv2d)
    assert isinstance(prepare_for_cpu(copy.deepcopy(net).bfloat16(), torch.bfloat16,
                                      "winograd4")[0], nn.Conv2d)
    monkeypatch.setenv("SR_CPU_CONV", "winograd2")
    assert isinstance(prepare_for_cpu(copy.deepcopy(net), torch.float32)[0], WinogradConv2d)
    monkeypatch.setenv("SR_CPU_CONV", "onednn")
    assert isinstance(prepare_for_cpu(copy.deepcopy(net), torch.float32)[0], nn.Conv2d)
    monkeypatch.setenv("SR_CPU_CONV", "fft")
    with pytest.raises(UsageError, match="SR_CPU_CONV"):
        prepare_for_cpu(copy.deepcopy(net), torch.float32)


def test_winograd_matches_torch_conv_in_float64() -> None:
    """The transforms are exact algebra: in float64 they reproduce conv2d to ~1e-12."""
    conv = _conv(8, 8).double()
    mod = WinogradConv2d(conv, 4)
    x = _input(1, 8, 9, 11).double()
    with torch.no_grad():
        got = mod(x)
        ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert (got - ref).abs().max().item() < 1e-12


def test_auto_keeps_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: oneDNN for every layer (NNPACK lost whole-network at two threads); NNPACK only by
    name."""
    monkeypatch.delenv("SR_CPU_CONV", raising=False)
    vgg, _ = build("srvgg", num_feat=64, num_conv=16, upscale=2)
    rrdb, _ = build("rrdbnet", num_feat=64, num_block=1, num_grow_ch=32, scale=4)
    for net in (vgg, rrdb):
        out = prepare_for_cpu(net.eval(), torch.float32)
        assert not any(isinstance(m, NNPACKConv2d) for m in out.modules())
    if torch._nnpack_available():
        vgg2, _ = build("srvgg", num_feat=64, num_conv=16, upscale=2)
        assert any(isinstance(m, NNPACKConv2d)
                   for m in prepare_for_cpu(vgg2, torch.float32, "nnpack").modules())


@pytest.mark.parametrize("mode", ["nnpack", "winograd4"])
def test_engine_tiled_equals_whole(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through sr's engine, with the opt-in convolutions on an SRVGGNetCompact: a tiled run with
    the exact context equals the whole-image run up to float rounding."""
    from sr_cli.infer.engine import InferenceOptions, Upscaler
    from sr_cli.zoo import LoadedModel

    if mode == "nnpack" and not torch._nnpack_available():
        pytest.skip("this PyTorch has no NNPACK")
    monkeypatch.setenv("SR_CPU_CONV", mode)
    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=64, num_conv=8, upscale=2)  # 8 of 10 convs 64->64
    model = LoadedModel(name="v", net=net.eval(), desc=desc, metadata={}, source=None)
    x = torch.rand(1, 3, 30, 26)
    whole = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0)).run(x)
    tiled = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=12)).run(x)
    with torch.no_grad():
        ref = net.double()(x.double()).clamp(0, 1)
    assert (tiled - whole).abs().max().item() < 1e-5
    assert (whole.double() - ref).abs().max().item() * 255 < 0.01
