"""The project's networks written as ncnn graphs (``.param`` text + fp32 ``.bin`` weights).

:func:`export` turns a loaded network into an :class:`Export`: the ncnn graph of its
convolutional core and the PyTorch steps around it (``wrap``). Layer semantics follow ncnn's
``src/layer/*.cpp`` and ``docs/developer-guide/operation-param-weight-table.md``:

``Convolution``  ``0`` outputs, ``1``/``11`` kernel w/h, ``4`` zero padding (all sides),
                 ``5`` bias, ``6`` weight count, ``9=2 -23310=1,slope`` a fused LeakyReLU;
                 weights are a tagged blob (tag ``0``: raw fp32) in OIHW order, then the bias.
``PReLU``        ``0`` slopes (1 = one shared slope), raw fp32 slopes.
``Padding``      ``0..3`` top/bottom/left/right, ``4=1`` replicate (SRCNN's padding mode).
``Interp``       ``0=1`` nearest with ``1``/``2`` height/width scale (source row
                 ``int(y / scale)``: exact for the integer factors used here).
``PixelShuffle`` ``0`` factor, mode 0 = PyTorch's channel order.
``Eltwise``      ``0=1`` sum with ``-23301`` coefficients; ``BinaryOp 0=0`` add.
``Split``        one input, several outputs: every blob read by more than one layer goes
                 through one (ncnn frees a blob after its consumer runs).

What runs in PyTorch instead, because the result must equal sr's own forward exactly:
RRDBNet's pixel-unshuffle for x2/x1 (a permutation), SRCNN's MATLAB-bicubic pre-upsampling and
YCbCr conversion, SRVGGNetCompact's final bicubic resize when ``out_scale`` differs. Batch norm
(SRResNet) is folded into the preceding convolution in float64.

Architectures not listed in :data:`EXPORTERS` return ``None`` (the torch engine runs them).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAGIC = 7767517
INPUT, OUTPUT = "data", "output"
Body = Callable[[Tensor], Tensor]
"""The ncnn graph as a function: ``(B, C, H, W)`` float32 -> its output."""


@dataclass
class _Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: str = ""


@dataclass
class Graph:
    """An ncnn graph under construction: layers in order, weights appended in the same order.

    Each ``conv``/``prelu``/... call adds one layer reading the named blobs and returns the
    name of the blob it writes. :meth:`param` inserts the ``Split`` layers ncnn needs.
    """

    layers: list[_Layer] = field(default_factory=list)
    weights: list[bytes] = field(default_factory=list)
    _n: int = 0

    def _add(self, type_: str, inputs: list[str], params: str = "", out: str | None = None
             ) -> str:
        self._n += 1
        name = out or f"b{self._n}"
        self.layers.append(_Layer(type_, f"{type_.lower()}_{self._n}", list(inputs), [name],
                                  params))
        return name

    def rename(self, blob: str, name: str) -> None:
        """Give the blob written last the name ``name`` (e.g. :data:`OUTPUT`)."""
        ly = self.layers[-1]
        if ly.outputs != [blob]:
            raise ValueError("only the last layer's blob can be renamed")
        ly.outputs = [name]

    def input(self) -> str:
        return self._add("Input", [], out=INPUT)

    def conv(self, x: str, weight: Tensor, bias: Tensor | None, *, pad: int | None = None,
             leaky: float | None = None, out: str | None = None) -> str:
        """``Convolution`` (stride 1, zero padding ``pad``, default ``k // 2``), weights OIHW."""
        o, _, kh, kw = weight.shape
        if kh != kw:
            raise ValueError("square kernels only")
        p = kw // 2 if pad is None else pad
        params = f"0={o} 1={kw} 4={p} 5={int(bias is not None)} 6={weight.numel()}"
        if leaky is not None:
            params += f" 9=2 -23310=1,{leaky:.9e}"
        self.weights.append(struct.pack("<I", 0) + _f32(weight))
        if bias is not None:
            self.weights.append(_f32(bias))
        return self._add("Convolution", [x], params, out)

    def prelu(self, x: str, slope: Tensor) -> str:
        self.weights.append(_f32(slope))
        return self._add("PReLU", [x], f"0={slope.numel()}")

    def leaky(self, x: str, slope: float) -> str:
        return self._add("ReLU", [x], f"0={slope:.9e}" if slope else "")

    def replicate_pad(self, x: str, p: int) -> str:
        return self._add("Padding", [x], f"0={p} 1={p} 2={p} 3={p} 4=1")

    def nearest(self, x: str, factor: int) -> str:
        return self._add("Interp", [x], f"0=1 1={float(factor):.6e} 2={float(factor):.6e}")

    def shuffle(self, x: str, factor: int) -> str:
        return self._add("PixelShuffle", [x], f"0={factor}")

    def concat(self, xs: list[str]) -> str:
        return self._add("Concat", xs, "0=0")

    def axpby(self, a: str, ca: float, b: str, cb: float = 1.0, out: str | None = None) -> str:
        """``ca * a + cb * b`` (``Eltwise`` sum with coefficients)."""
        return self._add("Eltwise", [a, b], f"0=1 -23301=2,{ca:.9e},{cb:.9e}", out)

    def add(self, a: str, b: str, out: str | None = None) -> str:
        return self._add("BinaryOp", [a, b], "0=0", out)

    def param(self) -> str:
        """The ``.param`` text, with a ``Split`` after every blob read more than once."""
        readers: dict[str, int] = {}
        for ly in self.layers:
            for b in ly.inputs:
                readers[b] = readers.get(b, 0) + 1
        lines: list[_Layer] = []
        taken: dict[str, int] = {}
        for ly in self.layers:
            ins = []
            for b in ly.inputs:
                if readers[b] > 1:
                    k = taken.get(b, 0)
                    taken[b] = k + 1
                    b = f"{b}_s{k}"
                ins.append(b)
            lines.append(_Layer(ly.type, ly.name, ins, ly.outputs, ly.params))
            for b in ly.outputs:
                if readers.get(b, 0) > 1:
                    lines.append(_Layer("Split", f"split_{b}", [b],
                                        [f"{b}_s{k}" for k in range(readers[b])]))
        blobs = {b for ly in lines for b in ly.outputs}
        text = [str(MAGIC), f"{len(lines)} {len(blobs)}"]
        for ly in lines:
            text.append(f"{ly.type} {ly.name} {len(ly.inputs)} {len(ly.outputs)} "
                        f"{' '.join(ly.inputs + ly.outputs)} {ly.params}".rstrip())
        return "\n".join(text) + "\n"

    def blob(self) -> bytes:
        """The ``.bin`` weights (fp32)."""
        return b"".join(self.weights)


def _f32(t: Tensor) -> bytes:
    return np.ascontiguousarray(t.detach().cpu().double().numpy(), dtype="<f4").tobytes()


@dataclass(frozen=True)
class Export:
    """An exported network: the ncnn graph, and ``wrap(x, body)``, the network's forward with
    the graph called as ``body`` (PyTorch steps before/after it, see the module docstring)."""

    param: str
    weights: bytes
    wrap: Callable[[Tensor, Body], Tensor]


def _plain(x: Tensor, body: Body) -> Tensor:
    return body(x)


# --------------------------------------------------------------------------- architectures


def _srvgg(net: Any) -> Export | None:
    g = Graph()
    x = g.input()
    y = x
    for layer in net.body:
        if isinstance(layer, nn.Conv2d):
            y = g.conv(y, layer.weight, layer.bias)
        elif isinstance(layer, nn.PReLU):
            y = g.prelu(y, layer.weight)
        elif isinstance(layer, nn.LeakyReLU):
            y = g.leaky(y, float(layer.negative_slope))
        elif isinstance(layer, nn.ReLU):
            y = g.leaky(y, 0.0)
        else:
            return None
    s = int(net.upscale)
    g.add(g.shuffle(y, s), g.nearest(x, s), out=OUTPUT)
    if net.out_scale == net.upscale:
        return Export(g.param(), g.blob(), _plain)
    out_scale = int(net.out_scale)

    def wrap(x: Tensor, body: Body) -> Tensor:
        size = (x.shape[-2] * out_scale, x.shape[-1] * out_scale)
        return F.interpolate(body(x), size=size, mode="bicubic", align_corners=False)

    return Export(g.param(), g.blob(), wrap)


def _rrdbnet(net: Any) -> Export | None:
    g = Graph()
    slope = float(net.lrelu.negative_slope)
    first = g.conv(g.input(), net.conv_first.weight, net.conv_first.bias)
    feat = first
    for rrdb in net.body:
        trunk = feat
        for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3):
            xs = [feat]
            for j in range(1, 5):
                conv = getattr(rdb, f"conv{j}")
                xs.append(g.conv(xs[0] if j == 1 else g.concat(xs), conv.weight, conv.bias,
                                 leaky=slope))
            x5 = g.conv(g.concat(xs), rdb.conv5.weight, rdb.conv5.bias)
            feat = g.axpby(x5, 0.2, feat)
        feat = g.axpby(feat, 0.2, trunk)
    feat = g.add(first, g.conv(feat, net.conv_body.weight, net.conv_body.bias))
    for k in range(1, net.stages + 1):
        conv = getattr(net, f"conv_up{k}")
        feat = g.conv(g.nearest(feat, 2), conv.weight, conv.bias, leaky=slope)
    feat = g.conv(feat, net.conv_hr.weight, net.conv_hr.bias, leaky=slope)
    g.conv(feat, net.conv_last.weight, net.conv_last.bias, out=OUTPUT)
    r = int(net.unshuffle)
    if r == 1:
        return Export(g.param(), g.blob(), _plain)

    def wrap(x: Tensor, body: Body) -> Tensor:
        return body(F.pixel_unshuffle(x, r))

    return Export(g.param(), g.blob(), wrap)


def fold_bn(conv: nn.Conv2d, bn: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``conv`` followed by eval-mode ``bn`` (or ``nn.Identity``) as one convolution's
    ``(weight, bias)``, computed in float64."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else None
    if isinstance(bn, nn.Identity):
        return w, b
    if (not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None
            or bn.running_mean is None):
        raise ValueError("only eval-mode BatchNorm2d with running statistics folds")
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b
    b = (b - bn.running_mean.double()) * scale
    if bn.bias is not None:
        b = b + bn.bias.double()
    return w * scale.view(-1, 1, 1, 1), b


def _srresnet(net: Any) -> Export | None:
    g = Graph()
    first = g.prelu(g.conv(g.input(), net.conv_first.weight, net.conv_first.bias),
                    net.act_first.weight)
    feat = first
    for blk in net.body:
        y = g.conv(feat, *fold_bn(blk.conv1, blk.bn1))
        y = g.prelu(y, blk.act.weight)
        feat = g.add(feat, g.conv(y, *fold_bn(blk.conv2, blk.bn2)))
    feat = g.add(first, g.conv(feat, *fold_bn(net.conv_body, net.bn_body)))
    for stage in net.upsample:
        y = g.shuffle(g.conv(feat, stage.conv.weight, stage.conv.bias),
                      int(stage.shuffle.upscale_factor))
        feat = g.prelu(y, stage.act.weight)
    g.rename(feat, OUTPUT)
    # conv_last (9x9, 64 -> 3 at the output resolution) stays in PyTorch: ncnn runs a 9x9
    # kernel as im2col + GEMM, an 81x copy of the 64-channel HR features (1.3 GB for a 256x256
    # output), several times slower than oneDNN's direct convolution
    last = copy.deepcopy(net.conv_last).to(memory_format=torch.channels_last)

    def wrap(x: Tensor, body: Body) -> Tensor:
        return last(body(x).contiguous(memory_format=torch.channels_last)).contiguous()

    return Export(g.param(), g.blob(), wrap)


def _srcnn(net: Any) -> Export | None:
    g = Graph()
    y = g.input()
    for k, conv in enumerate((net.conv1, net.conv2, net.conv3)):
        p = conv.kernel_size[0] // 2
        if conv.padding_mode == "replicate":
            y = g.replicate_pad(y, p)
            p = 0
        elif conv.padding_mode != "zeros":
            return None
        y = g.conv(y, conv.weight, conv.bias, pad=p, out=OUTPUT if k == 2 else None)
        if k < 2:
            y = g.leaky(y, 0.0)
    return Export(g.param(), g.blob(), net.forward_with)


def _exporters() -> dict[type, Callable[[Any], Export | None]]:
    from sr_cli.archs.rrdbnet import RRDBNet
    from sr_cli.archs.srcnn import SRCNN
    from sr_cli.archs.srresnet import SRResNet
    from sr_cli.archs.srvgg import SRVGGNetCompact

    return {SRVGGNetCompact: _srvgg, RRDBNet: _rrdbnet, SRResNet: _srresnet, SRCNN: _srcnn}


EXPORTABLE = ("srvgg", "rrdbnet", "srresnet", "srcnn")
"""Registry names of the architectures :func:`export` writes (the rest run on torch)."""


def exportable(net: nn.Module) -> bool:
    """Whether :func:`export` knows ``net``'s class (exact class, not subclasses)."""
    return type(net) in _exporters()


@torch.no_grad()
def export(net: nn.Module) -> Export | None:
    """The ncnn graph of ``net`` (float32 weights), or ``None`` when its architecture or a
    layer in it has no ncnn form here."""
    fn = _exporters().get(type(net))
    if fn is None:
        return None
    try:
        return fn(net)
    except (AttributeError, ValueError, TypeError):  # a variant the exporter does not know
        return None
