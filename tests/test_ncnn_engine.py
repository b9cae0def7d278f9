"""The ncnn CPU engine: export correctness per architecture against a float64 PyTorch forward,
tiled == untiled, engine selection (``--engine auto|torch|ncnn``) and the fallback when the ncnn
package is missing. Networks are small random ones generated here; tests that run ncnn skip
visibly without the package."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.errors import UsageError
from sr_cli.infer import ncnn_backend
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.infer.ncnn_backend import resolve_engine
from sr_cli.infer.ncnn_export import export, exportable
from sr_cli.zoo import LoadedModel, save_model

needs_ncnn = pytest.mark.skipif(ncnn_backend.ncnn_module() is None,
                                reason="the ncnn package is not installed (pip install ncnn)")
CPU = torch.device("cpu")

# (arch, hparams, input channels, input (h, w)); odd sizes, and 32/16 features so ncnn takes its
# packed and Winograd 3x3 paths
CASES = [
    ("srvgg", {"num_feat": 32, "num_conv": 3, "upscale": 4}, 3, (19, 23)),
    ("srvgg", {"num_feat": 16, "num_conv": 2, "upscale": 2, "act_type": "leakyrelu"}, 3,
     (17, 21)),
    ("srvgg", {"num_feat": 8, "num_conv": 2, "upscale": 3, "act_type": "relu"}, 3, (37, 41)),
    ("srvgg", {"num_feat": 16, "num_conv": 2, "upscale": 4, "out_scale": 3}, 3, (13, 15)),
    ("rrdbnet", {"num_feat": 16, "num_block": 2, "num_grow_ch": 8, "scale": 4}, 3, (15, 19)),
    ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8, "scale": 2}, 3, (14, 18)),
    ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8, "scale": 1}, 3, (16, 20)),
    ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8, "scale": 2,
                 "upsample_stages": 1}, 3, (13, 17)),
    ("srresnet", {"num_feat": 16, "num_block": 2, "scale": 4}, 3, (13, 19)),
    ("srresnet", {"num_feat": 16, "num_block": 1, "scale": 3, "norm": False}, 3, (11, 14)),
    ("srcnn", {"in_channels": 1, "scale": 3, "n1": 16, "n2": 8}, 3, (11, 13)),
    ("srcnn", {"in_channels": 3, "scale": 2, "n1": 16, "n2": 8}, 3, (12, 15)),
]
# Tolerances against the float64 forward of the same weights (outputs of order 1): ncnn's fp32
# kernels (Winograd transforms included) measured max 2e-7, mean 3e-8 on these networks; the
# bounds leave a margin of 50x / 30x and stay far below one 8-bit level (3.9e-3).
MAX_ERR = {"srvgg": 1e-5, "rrdbnet": 1e-5, "srresnet": 2e-5, "srcnn": 1e-5}
MEAN_ERR = 1e-6


def _net(arch: str, hp: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net, _ = build(arch, **hp)
    net.eval().requires_grad_(False)
    with torch.no_grad():
        for m in net.modules():  # batch norm with non-trivial statistics, to test the folding
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net


@needs_ncnn
@pytest.mark.parametrize(("arch", "hp", "c", "hw"), CASES,
                         ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in h.items())}"
                              for a, h, _, _ in CASES])
def test_export_matches_float64_forward(arch, hp, c, hw):
    net = _net(arch, hp)
    assert exportable(net)
    ncnn_net = ncnn_backend.NcnnNetwork(export(net))
    x = torch.rand(2, c, *hw, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
        out = ncnn_net(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = (out.double() - ref).abs()
    print(f"{arch} {hp}: max {err.max():.2e} mean {err.mean():.2e}")
    assert float(err.max()) <= MAX_ERR[arch]
    assert float(err.mean()) <= MEAN_ERR


def test_graph_text_has_splits_and_counts():
    """Every blob read twice goes through a Split; the header counts match the body."""
    g = export(_net("rrdbnet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4}))
    assert g is not None
    lines = g.param.splitlines()
    assert lines[0] == "7767517"
    n_layers, n_blobs = map(int, lines[1].split())
    body = [ln.split() for ln in lines[2:]]
    assert len(body) == n_layers
    outs = [b for ln in body for b in ln[4 + int(ln[2]):4 + int(ln[2]) + int(ln[3])]]
    ins = [b for ln in body for b in ln[4:4 + int(ln[2])]]
    assert len(outs) == n_blobs == len(set(outs))
    assert len(ins) == len(set(ins))  # each blob is read once (Splits fan out)
    assert set(ins) <= set(outs)
    # weights: per conv a 4-byte tag + weights + bias, as fp32
    convs = [ln for ln in body if ln[0] == "Convolution"]
    size = sum(4 + 4 * int(dict(p.split("=") for p in ln if p[:2] == "6=")["6"])
               + 4 * int(dict(p.split("=") for p in ln if p[:2] == "0=")["0"]) for ln in convs)
    assert len(g.weights) == size


def test_unknown_architectures_are_not_exported():
    net, _ = build("swinir", **build_tiny("swinir"))
    assert not exportable(net) and export(net) is None


def build_tiny(arch: str) -> dict:
    from sr_cli.archs import get_arch

    return dict(get_arch(arch).extra["tiny"])


def _loaded(arch: str, hp: dict) -> LoadedModel:
    _, desc = build(arch, **hp)
    net = _net(arch, hp)
    return LoadedModel(name=arch, net=net, desc=desc, metadata={}, source=None)


@needs_ncnn
@pytest.mark.parametrize(("arch", "hp"), [
    ("srvgg", {"num_feat": 16, "num_conv": 2, "upscale": 2}),
    ("rrdbnet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 2}),
])
def test_tiled_equals_untiled_and_torch(arch, hp, make_image):
    """uint8 outputs: ncnn tiled vs whole image, and ncnn vs torch, within one level."""
    model = _loaded(arch, hp)
    img = make_image(29, 35)
    outs = {}
    for engine, tile in (("ncnn", 0), ("ncnn", 12), ("torch", 0)):
        up = Upscaler(model, InferenceOptions(device="cpu", tile=tile, engine=engine))
        assert up.engine == engine
        outs[(engine, tile)] = up.upscale_array(img).astype(int)
    whole = outs[("ncnn", 0)]
    assert whole.shape == (58, 70, 3)
    assert np.abs(outs[("ncnn", 12)] - whole).max() <= 1
    assert np.abs(outs[("torch", 0)] - whole).max() <= 1


class _FakeNcnn:
    __version__ = "test"


@pytest.mark.parametrize(("requested", "device", "precision", "arch", "compile_", "want"), [
    ("auto", "cpu", "fp32", "srvgg", False, "torch"),  # ncnn measured slower here (AUTO_NETS)
    ("auto", "cpu", "fp32", "rrdbnet", False, "torch"),
    ("auto", "cpu", "bf16", "srvgg", False, "torch"),
    ("auto", "cuda", "fp16", "srvgg", False, "torch"),
    ("auto", "cpu", "fp32", "srvgg", True, "torch"),
    ("auto", "cpu", "fp32", "swinir", False, "torch"),
    ("auto", "cpu", "fp32", "srresnet", False, "torch"),  # measured about even: torch
    ("auto", "cpu", "fp32", "srcnn", False, "torch"),  # measured slower in ncnn
    ("torch", "cpu", "fp32", "srvgg", False, "torch"),
    ("ncnn", "cpu", "fp32", "srresnet", False, "ncnn"),
    ("ncnn", "cpu", "fp32", "srcnn", False, "ncnn"),
    ("NCNN", "cpu", "fp32", "rrdbnet", False, "ncnn"),
])
def test_engine_selection(monkeypatch, requested, device, precision, arch, compile_, want):
    monkeypatch.setattr(ncnn_backend, "ncnn_module", lambda: _FakeNcnn)
    net, _ = build(arch, **build_tiny(arch))
    got = resolve_engine(requested, torch.device(device), precision, net, compile=compile_)
    assert got == want


def test_auto_gives_ncnn_the_networks_listed_as_faster(monkeypatch):
    """``auto`` picks ncnn only for networks in AUTO_NETS (empty on the measured machine)."""
    monkeypatch.setattr(ncnn_backend, "ncnn_module", lambda: _FakeNcnn)
    monkeypatch.setattr(ncnn_backend, "AUTO_NETS", ("SRVGGNetCompact",))
    vgg, _ = build("srvgg", **build_tiny("srvgg"))
    rrdb, _ = build("rrdbnet", **build_tiny("rrdbnet"))
    cpu = torch.device("cpu")
    assert resolve_engine("auto", cpu, "fp32", vgg) == "ncnn"
    assert resolve_engine("auto", cpu, "bf16", vgg) == "torch"
    assert resolve_engine("auto", cpu, "fp32", rrdb) == "torch"


@pytest.mark.parametrize(("device", "precision", "arch", "compile_", "why"), [
    ("cuda", "fp16", "srvgg", False, "CPU"),
    ("cpu", "bf16", "srvgg", False, "fp32"),
    ("cpu", "fp32", "srvgg", True, "--compile"),
    ("cpu", "fp32", "swinir", False, "no ncnn export"),
])
def test_engine_ncnn_refused_with_reason(monkeypatch, device, precision, arch, compile_, why):
    monkeypatch.setattr(ncnn_backend, "ncnn_module", lambda: _FakeNcnn)
    net, _ = build(arch, **build_tiny(arch))
    with pytest.raises(UsageError, match=why):
        resolve_engine("ncnn", torch.device(device), precision, net, compile=compile_)
    with pytest.raises(UsageError, match="unknown --engine"):
        resolve_engine("tensorrt", CPU, "fp32", net)


@pytest.fixture
def no_ncnn(monkeypatch):
    """The ncnn package made unimportable (``import ncnn`` raises ImportError)."""
    ncnn_backend.ncnn_module.cache_clear()
    monkeypatch.setitem(sys.modules, "ncnn", None)
    yield
    ncnn_backend.ncnn_module.cache_clear()


def test_fallback_without_ncnn(no_ncnn, make_image, runner, tmp_path):
    assert ncnn_backend.ncnn_module() is None
    hp = {"num_feat": 8, "num_conv": 2, "upscale": 2}
    model = _loaded("srvgg", hp)
    up = Upscaler(model, InferenceOptions(device="cpu"))
    assert up.engine == "torch"
    assert up.upscale_array(make_image(10, 12)).shape == (20, 24, 3)
    with pytest.raises(UsageError, match="not installed"):
        Upscaler(model, InferenceOptions(device="cpu", engine="ncnn"))
    # through the CLI: a usage error (exit 2) with the reason, on one line
    path = tmp_path / "m.safetensors"
    save_model(path, model.net, model.desc, {"name": "m"})
    src = tmp_path / "in.png"
    import imageio.v3 as iio

    iio.imwrite(src, make_image(10, 12))
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-m", str(path),
                            "--engine", "ncnn"])
    assert r.exit_code == 2, r.output
    assert "pip install ncnn" in r.output
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-m", str(path),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["engine"] == "torch"


@needs_ncnn
def test_cli_summary_names_engine_and_export_is_cached(runner, tmp_path, make_image):
    import imageio.v3 as iio

    model = _loaded("srvgg", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    path = tmp_path / "m.safetensors"
    save_model(path, model.net, model.desc, {"name": "m"})
    src = tmp_path / "in.png"
    iio.imwrite(src, make_image(10, 12))
    outs = {}
    for engine in ("ncnn", "auto", "torch"):
        dst = tmp_path / f"o_{engine}.png"
        r = runner.invoke(app, ["upscale", str(src), str(dst), "-m", str(path), "--json",
                                "--engine", engine, "--threads", "1"])
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        assert summary["engine"] == ("ncnn" if engine == "ncnn" else "torch")
        outs[engine] = iio.imread(dst).astype(int)
    assert np.abs(outs["ncnn"] - outs["torch"]).max() <= 1
    assert np.array_equal(outs["auto"], outs["torch"])
    # one export per network object per process, again only when its weights change
    a = ncnn_backend.ncnn_network(model.net)
    assert ncnn_backend.ncnn_network(model.net) is a
    x = torch.rand(1, 3, 6, 7)
    before = a(x)
    with torch.no_grad():
        model.net.body[-1].bias.add_(0.25)
    b = ncnn_backend.ncnn_network(model.net)
    assert b is not a
    assert torch.allclose(b(x), before + 0.25, atol=1e-5)


def test_engine_option_documented(runner):
    r = runner.invoke(app, ["upscale", "--help"])
    assert "--engine" in r.output
    assert "ncnn" in Path(__file__).resolve().parents[1].joinpath("docs", "engines.md").read_text()
