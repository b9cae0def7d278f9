"""ncnn models (``.param`` + ``.bin``, as realesrgan-ncnn-vulkan and upscayl ship them) mapped onto
the project's architectures.

Reading. The ``.param`` file is ncnn's graph, in one of two forms:

- text (``Net::load_param``): the magic ``7767517``, ``layer_count blob_count``, then one line
  per layer: ``Type name n_in n_out in... out... key=value...`` (a key ``-23300-k`` holds the
  array ``n,v1,...,vn`` of parameter ``k``; a value with ``.``/``e`` is a float);
- binary ``model.param.bin`` (``Net::load_param_bin``, written by ncnn2mem): little-endian
  int32 magic, layer and blob counts, then per layer its type index (ncnn's built-in layer
  registry order, :data:`LAYER_TYPES`), input/output counts and blob indices, and its
  parameters (``ParamDict::load_param_bin``): ``id`` then a raw 4-byte value, or
  ``-23300-id``, a length and that many 4-byte values, up to the end marker ``-233``. A raw
  value is read as an integer or a float by the layer that uses it, as ncnn does.

The ``.bin`` file holds the weights of the layers in ``.param`` order, each blob as ncnn's
``ModelBinFromDataReader::load`` reads it (src/modelbin.cpp): a Convolution's weight is a
*tagged* blob (4-byte tag ``0x01306B47`` -> fp16 data padded to 4 bytes; tag ``0`` or
``0x0002C056`` -> raw fp32), its bias (``5=1``) and a PReLU's slopes are raw fp32 without a tag.
int8-quantised models (ncnn2int8: int8 weight tag ``0x000D4B38``, convolutions with
``8=int8_scale_term``, Quantize/Dequantize/Requantize layers) and 8-bit quantised-table weights
are refused.

Mapping. Only the graphs of RRDBNet (ESRGAN / Real-ESRGAN x4plus, x4plus-anime, and x2plus / x1
whose input pixel-unshuffle is exported as Reshape/Permute layers) and SRVGGNetCompact
(realesr-animevideov3, realesr-general) map: the convolutions, in file order, become the
canonical state dict of the architecture their count and shapes match (RRDBNet:
``15 * num_block + 4`` 3x3 convs plus one per upsampling stage - 2 for x4, 0/1/3 for the
original ESRGAN x1/x2/x8 layout; SRVGG: conv, PReLU/ReLU pairs, a last conv to
``c * upscale^2`` channels and a PixelShuffle). Reshape/Permute layers are accepted only
between the input and the first convolution, and only when they compute a pixel-unshuffle by
the factor the first convolution's input channels imply (2 for 4x the image channels, 4 for
16x): checked by running them on index probes of two sizes against ``pixel_unshuffle``.
The mapping is then *verified*: a small reference interpreter runs the ncnn graph itself
(every layer as ncnn defines it) on a fixed random probe, and the mapped network must give the
same output (and the same output size, which yields SRVGG's ``out_scale`` for the x2/x3 graphs
that end with a bicubic resize). Anything else - another layer type, another layer order,
shapes that fit no architecture, or a probe mismatch - raises
:class:`~sr_cli.errors.ModelError` naming what did not map.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.archs.facts import RRDBNET_UNSHUFFLE
from sr_cli.errors import ModelError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
PROBE_HW = (4, 6)
"""Probe input size (h, w) for verifying a mapping: not square, so transposes show (times the
unshuffle factor for graphs that pixel-unshuffle their input)."""
END_OF_PARAMS = -233
"""Marker ending one layer's parameters in a binary ``.param.bin``."""

LAYER_TYPES = (
    "AbsVal", "ArgMax", "BatchNorm", "Bias", "BNLL", "Concat", "Convolution", "Crop",
    "Deconvolution", "Dropout", "Eltwise", "ELU", "Embed", "Exp", "Flatten", "InnerProduct",
    "Input", "Log", "LRN", "MemoryData", "MVN", "Pooling", "Power", "PReLU", "Proposal",
    "Reduction", "ReLU", "Reshape", "ROIPooling", "Scale", "Sigmoid", "Slice", "Softmax",
    "Split", "SPP", "TanH", "Threshold", "Tile", "RNN", "LSTM", "BinaryOp", "UnaryOp",
    "ConvolutionDepthWise", "Padding", "Squeeze", "ExpandDims", "Normalize", "Permute",
    "PriorBox", "DetectionOutput", "Interp", "DeconvolutionDepthWise", "ShuffleChannel",
    "InstanceNorm", "Clip", "Reorg", "YoloDetectionOutput", "Quantize", "Dequantize",
    "Yolov3DetectionOutput", "PSROIPooling", "ROIAlign", "Packing", "Requantize", "Cast",
    "HardSigmoid", "SELU", "HardSwish", "Noop", "PixelShuffle", "DeepCopy", "Mish",
    "StatisticsPooling", "Swish", "Gemm", "GroupNorm", "LayerNorm", "Softplus", "GRU",
    "MultiHeadAttention", "GELU", "Convolution1D", "Pooling1D", "ConvolutionDepthWise1D",
    "Convolution3D", "ConvolutionDepthWise3D", "Pooling3D", "MatMul", "Deconvolution1D",
    "DeconvolutionDepthWise1D", "Deconvolution3D", "DeconvolutionDepthWise3D", "Einsum",
    "DeformableConv2D", "GLU", "Fold", "Unfold", "GridSample", "CumulativeSum", "CopyTo",
    "Erf", "Diag", "CELU", "Shrink", "RMSNorm", "Spectrogram", "InverseSpectrogram", "Flip",
    "SDPA", "RotaryEmbed",
)
"""ncnn's built-in layer types by type index (the ``ncnn_add_layer`` order of its
src/CMakeLists.txt, as ``ncnn.layer_to_index`` reports it): how ``.param.bin`` names types."""

QUANTISED_LAYERS = {"Quantize", "Dequantize", "Requantize"}


class Raw:
    """A binary ``.param.bin`` value: 4 bytes that the layer reads as int32 or float32
    (ncnn's ``ParamDict`` union); ``int()``, ``float()`` and truth tests work on it."""

    __slots__ = ("bits",)

    def __init__(self, bits: bytes) -> None:
        self.bits = bits

    def __int__(self) -> int:
        return int(struct.unpack("<i", self.bits)[0])

    __index__ = __int__

    def __float__(self) -> float:
        return float(struct.unpack("<f", self.bits)[0])

    def __bool__(self) -> bool:
        return self.bits != b"\0\0\0\0"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Raw):
            return self.bits == other.bits
        if isinstance(other, bool | int):
            return int(self) == int(other)
        if isinstance(other, float):
            return float(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.bits)

    def __repr__(self) -> str:
        return f"Raw(int={int(self)}, float={float(self):g})"


@dataclass
class Layer:
    """One ``.param`` line: type, name, input and output blob names, parameters, weights."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Any]
    weights: dict[str, Tensor] = field(default_factory=dict)

    def get(self, key: int, default: Any) -> Any:
        return self.params.get(key, default)


# --------------------------------------------------------------------------- reading


def _value(text: str, where: str) -> int | float:
    try:
        if any(c in text for c in ".eE"):
            return float(text)
        return int(text)
    except ValueError:
        raise ModelError(f"{where}: bad parameter value {text!r}") from None


def parse_param(text: str, where: str = "model.param") -> list[Layer]:
    """Parse ncnn's text ``.param`` into layers (weights not read)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise ModelError(f"{where}: not an ncnn text .param file (magic {MAGIC} missing)")
    try:
        n_layers, _n_blobs = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise ModelError(f"{where}: bad layer/blob count line") from None
    body = lines[2:]
    if len(body) != n_layers:
        raise ModelError(f"{where}: declares {n_layers} layers but has {len(body)}")
    layers = []
    for i, line in enumerate(body, start=3):
        parts = line.split()
        loc = f"{where}:{i}"
        try:
            typ, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise ModelError(f"{loc}: malformed layer line") from None
        io = parts[4:4 + n_in + n_out]
        if len(io) != n_in + n_out:
            raise ModelError(f"{loc}: {name}: missing blob names")
        params: dict[int, Any] = {}
        for item in parts[4 + n_in + n_out:]:
            key_s, sep, val = item.partition("=")
            try:
                key = int(key_s)
            except ValueError:
                key = None
            if not sep or key is None:
                raise ModelError(f"{loc}: {name}: bad parameter {item!r}")
            if key <= -23300:
                vals = val.split(",")
                params[-23300 - key] = [_value(v, loc) for v in vals[1:]]
            else:
                params[key] = _value(val, loc)
        layers.append(Layer(typ, name, io[:n_in], io[n_in:], params))
    return layers


def parse_param_bin(data: bytes, where: str = "model.param.bin") -> list[Layer]:
    """Parse ncnn's binary ``.param.bin`` (``Net::load_param_bin``) into layers. Layers are
    named ``layer<i>`` and blobs by their index (the binary form carries no names); parameter
    values are :class:`Raw`."""
    pos = 0

    def ints(n: int, what: str) -> tuple[int, ...]:
        nonlocal pos
        if n < 0 or pos + 4 * n > len(data):
            raise ModelError(f"{where}: truncated binary .param (reading {what} at offset "
                             f"{pos})")
        out = struct.unpack_from(f"<{n}i", data, pos)
        pos += 4 * n
        return out

    def raws(n: int, what: str) -> list[Raw]:
        nonlocal pos
        if n < 0 or pos + 4 * n > len(data):
            raise ModelError(f"{where}: truncated binary .param (reading {what} at offset "
                             f"{pos})")
        out = [Raw(data[pos + 4 * i: pos + 4 * i + 4]) for i in range(n)]
        pos += 4 * n
        return out

    magic, n_layers, n_blobs = ints(3, "the header")
    if magic != MAGIC:
        raise ModelError(f"{where}: not an ncnn .param file (magic {MAGIC} missing)")
    if not 0 < n_layers <= 1 << 20 or not 0 < n_blobs <= 1 << 20:
        raise ModelError(f"{where}: bad layer/blob counts ({n_layers}, {n_blobs})")
    layers = []
    for i in range(n_layers):
        typeindex, n_in, n_out = ints(3, f"layer {i}")
        if not 0 <= typeindex < len(LAYER_TYPES):
            raise ModelError(f"{where}: layer {i}: layer type index {typeindex} is not an ncnn "
                             "built-in layer (custom layers are not supported)")
        if not 0 <= n_in <= 1024 or not 0 <= n_out <= 1024:
            raise ModelError(f"{where}: layer {i}: bad blob counts ({n_in}, {n_out})")
        blobs = ints(n_in + n_out, f"layer {i}'s blobs")
        if any(not 0 <= b < n_blobs for b in blobs):
            raise ModelError(f"{where}: layer {i}: blob index out of range")
        params: dict[int, Any] = {}
        (key,) = ints(1, f"layer {i}'s parameters")
        while key != END_OF_PARAMS:
            if key <= -23300:
                (n,) = ints(1, f"layer {i}'s array length")
                params[-23300 - key] = raws(n, f"layer {i}'s array")
            elif 0 <= key < 32:
                params[key] = raws(1, f"layer {i}'s parameter {key}")[0]
            else:
                raise ModelError(f"{where}: layer {i}: bad parameter id {key}")
            (key,) = ints(1, f"layer {i}'s parameters")
        names = [str(b) for b in blobs]
        layers.append(Layer(LAYER_TYPES[typeindex], f"layer{i}", names[:n_in], names[n_in:],
                            params))
    if pos != len(data):
        raise ModelError(f"{where}: {len(data) - pos} unread bytes after the last layer")
    return layers


class _Bin:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelError(f"{self.where}: truncated (needs {n} more bytes for {what} at "
                             f"offset {self.pos}, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def raw(self, n: int, what: str) -> Tensor:
        """``load(n, 1)``: n raw little-endian fp32 values."""
        return torch.from_numpy(np.frombuffer(self._take(4 * n, what), "<f4").copy())

    def tagged(self, n: int, what: str) -> tuple[Tensor, str]:
        """``load(n, 0)``: a 4-byte tag, then fp16 (padded to 4 bytes) or raw fp32 data."""
        (tag,) = struct.unpack("<I", self._take(4, what))
        if tag == TAG_FP16:
            size = 2 * n + (-2 * n) % 4
            half = np.frombuffer(self._take(size, what)[: 2 * n], "<f2")
            return torch.from_numpy(half.astype(np.float32)), "fp16"
        if tag in (0, TAG_FP32_SCALED):
            return self.raw(n, what), "fp32"
        if tag == TAG_INT8:
            raise ModelError(f"{self.where}: {what}: int8-quantised weights (ncnn2int8) are not "
                             "supported; use the fp16/fp32 model")
        raise ModelError(f"{self.where}: {what}: 8-bit quantised-table weights (tag "
                         f"0x{tag:08X}) are not supported")


def read_bin(layers: list[Layer], data: bytes, where: str = "model.bin") -> set[str]:
    """Fill ``layer.weights`` from the ``.bin`` bytes; returns the storage kinds seen."""
    src = _Bin(data, where)
    kinds: set[str] = set()
    for ly in layers:
        if ly.type == "Convolution":
            if ly.get(19, 0):
                raise ModelError(f"{where}: {ly.name}: dynamic-weight convolutions are not "
                                 "supported")
            if ly.get(8, 0):
                raise ModelError(f"{where}: {ly.name}: int8-quantised convolution (ncnn2int8, "
                                 "8=int8_scale_term) is not supported; use the fp16/fp32 model")
            out, kw = int(ly.get(0, 0)), int(ly.get(1, 0))
            kh, size = int(ly.get(11, kw)), int(ly.get(6, 0))
            if out <= 0 or kw <= 0 or kh <= 0 or size <= 0 or size % (out * kw * kh):
                raise ModelError(f"{where}: {ly.name}: inconsistent convolution parameters "
                                 f"(0={out} 1={kw} 11={kh} 6={size})")
            w, kind = src.tagged(size, f"{ly.name} weight")
            kinds.add(kind)
            ly.weights["weight"] = w.reshape(out, size // (out * kw * kh), kh, kw)
            if ly.get(5, 0):
                ly.weights["bias"] = src.raw(out, f"{ly.name} bias")
        elif ly.type == "PReLU":
            ly.weights["slope"] = src.raw(int(ly.get(0, 0)), f"{ly.name} slopes")
        elif ly.type in QUANTISED_LAYERS:
            raise ModelError(f"{where}: layer {ly.name}: {ly.type}: int8-quantised models "
                             "(ncnn2int8) are not supported; use the fp16/fp32 model")
        elif ly.type not in _WEIGHTLESS:
            raise ModelError(f"{where}: layer {ly.name}: ncnn layer type {ly.type!r} is not "
                             f"supported (supported: {', '.join(sorted(_SUPPORTED))})")
    if src.pos != len(data):
        raise ModelError(f"{where}: {len(data) - src.pos} unread bytes after the last layer's "
                         "weights (the .bin does not belong to this .param?)")
    return kinds


def is_param_bin(path: Path) -> bool:
    """``model.param.bin``: ncnn's binary graph (not weights)."""
    return path.name.lower().endswith(".param.bin")


def bin_path(param: Path) -> Path:
    """The weights beside a graph: ``model.bin`` for ``model.param`` and for the binary
    ``model.param.bin``."""
    if is_param_bin(param):
        return param.with_name(param.name[: -len(".param.bin")] + ".bin")
    return param.with_suffix(".bin")


def read_ncnn(param: Path, weights: Path | None = None) -> tuple[list[Layer], set[str]]:
    """Read ``.param`` (text or binary) + ``.bin``: the layers with their weights, and the
    storage kinds."""
    weights = weights or bin_path(param)
    try:
        raw = param.read_bytes()
    except OSError as exc:
        raise ModelError(f"{param}: cannot read ({exc.strerror})") from None
    if raw[:4] == struct.pack("<i", MAGIC):
        layers = parse_param_bin(raw, str(param))
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{param}: not an ncnn .param file (neither text nor binary "
                             "form)") from None
        layers = parse_param(text, str(param))
    if not weights.is_file():
        raise ModelError(f"{param}: the weights file {weights.name} is missing beside it "
                         "(an ncnn model is a .param and a .bin)")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise ModelError(f"{weights}: cannot read ({exc.strerror})") from None
    return layers, read_bin(layers, data, str(weights))


# --------------------------------------------------------------------------- reference interpreter

_WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
               "ReLU", "Noop", "Reshape", "Permute"}
_LAYOUT = {"Reshape", "Permute"}
_SUPPORTED = _WEIGHTLESS | {"Convolution", "PReLU"}


def _act(x: Tensor, kind: int, params: list[float], name: str) -> Tensor:
    if kind == 0:
        return x
    if kind == 1:
        return F.relu(x)
    if kind == 2:
        return F.leaky_relu(x, float(params[0]) if params else 0.0)
    raise ModelError(f"{name}: fused activation type {kind} is not supported")


def _conv(ly: Layer, x: Tensor) -> Tensor:
    dil, stride = int(ly.get(2, 1)), int(ly.get(3, 1))
    if int(ly.get(12, dil)) != dil or int(ly.get(13, stride)) != stride:
        raise ModelError(f"{ly.name}: anisotropic dilation/stride is not supported")
    left = int(ly.get(4, 0))
    right, top = int(ly.get(15, left)), int(ly.get(14, left))
    bottom = int(ly.get(16, top))
    if min(left, right, top, bottom) < 0:
        raise ModelError(f"{ly.name}: automatic ('same') padding is not supported")
    if float(ly.get(18, 0.0)) != 0.0:
        raise ModelError(f"{ly.name}: non-zero pad value is not supported")
    x = F.pad(x, (left, right, top, bottom))
    y = F.conv2d(x, ly.weights["weight"], ly.weights.get("bias"), stride, 0, dil)
    return _act(y, int(ly.get(9, 0)), list(ly.get(10, [])), ly.name)


def _interp(ly: Layer, x: Tensor) -> Tensor:
    kind = int(ly.get(0, 0))
    modes = {1: "nearest", 2: "bilinear", 3: "bicubic"}
    if kind not in modes or ly.get(5, 0) or ly.get(6, 0):
        raise ModelError(f"{ly.name}: Interp type {kind} (dynamic size/align corners) is not "
                         "supported")
    h, w = x.shape[-2:]
    oh, ow = int(ly.get(3, 0)), int(ly.get(4, 0))
    if oh == 0 or ow == 0:
        oh, ow = int(h * float(ly.get(1, 1.0))), int(w * float(ly.get(2, 1.0)))
    if kind == 1:
        return F.interpolate(x, size=(oh, ow), mode="nearest")
    return F.interpolate(x, size=(oh, ow), mode=modes[kind], align_corners=False)


def _ncnn_dims(x: Tensor, name: str) -> dict[str, int]:
    """ncnn's ``w, h, d, c`` of a blob held as ``(1, *dims)`` (1 for the dims it lacks)."""
    shape = [int(v) for v in x.shape[1:]]
    if not 1 <= len(shape) <= 4:
        raise ModelError(f"{name}: a {len(shape)}-D blob (ncnn has 1-4)")
    if len(shape) == 3:  # c, h, w: d is 1
        shape = [shape[0], 1, shape[1], shape[2]]
    c, d, h, w = [1] * (4 - len(shape)) + shape  # 1-D: w; 2-D: h, w; 4-D: c, d, h, w
    return {"w": w, "h": h, "d": d, "c": c}


def _reshape(ly: Layer, x: Tensor) -> Tensor:
    """ncnn Reshape: ``0=w 1=h 11=d 2=c``; a missing key lowers the rank, ``0`` copies the
    input's dimension of that name, ``-1`` is inferred from the element count."""
    if any(k in ly.params for k in (6, 12, 13)):
        raise ModelError(f"{ly.name}: Reshape with a shape expression or batch axes is not "
                         "supported")
    want = {n: int(ly.get(k, -233)) for n, k in (("w", 0), ("h", 1), ("d", 11), ("c", 2))}
    rank = next((r for r, n in ((4, "d"), (3, "c"), (2, "h"), (1, "w")) if want[n] != -233), 0)
    names = {1: ["w"], 2: ["h", "w"], 3: ["c", "h", "w"], 4: ["c", "d", "h", "w"]}.get(rank)
    if names is None:
        raise ModelError(f"{ly.name}: Reshape without a target shape")
    bottom = _ncnn_dims(x, ly.name)
    dims = [bottom[n] if want[n] == 0 else want[n] for n in names]
    total = x[0].numel()
    if dims.count(-1) > 1 or any(v < -1 or v == 0 for v in dims):
        raise ModelError(f"{ly.name}: Reshape to {dims} is not supported")
    known = math.prod(v for v in dims if v != -1)
    if -1 in dims and known and total % known == 0:
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise ModelError(f"layer {ly.name} (Reshape) cannot run on its inputs: {total} "
                         f"values into {dims}")
    return x.reshape(x.shape[0], *dims)


def _permute(ly: Layer, x: Tensor) -> Tensor:
    """ncnn Permute: ``0=order_type`` indexes the permutations of the blob's axes in
    lexicographic order (outermost axis first: ``c, d, h, w``), as ncnn's tables list them."""
    rank = x.ndim - 1
    orders = list(itertools.permutations(range(rank)))
    order = int(ly.get(0, 0))
    if rank < 2 or not 0 <= order < len(orders):
        raise ModelError(f"{ly.name}: Permute order {order} of a {rank}-D blob is not supported")
    return x.permute(0, *(i + 1 for i in orders[order]))


def _binary(ly: Layer, xs: list[Tensor]) -> Tensor:
    op = int(ly.get(0, 0))
    ops: dict[int, Callable[[Tensor, Any], Tensor]] = {
        0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div}
    if op not in ops:
        raise ModelError(f"{ly.name}: BinaryOp type {op} is not supported")
    if int(ly.get(1, 0)):
        return ops[op](xs[0], float(ly.get(2, 0.0)))
    return ops[op](xs[0], xs[1])


def _eltwise(ly: Layer, xs: list[Tensor]) -> Tensor:
    op = int(ly.get(0, 1))
    coeffs = [float(c) for c in ly.get(1, [])] or [1.0] * len(xs)
    if op == 1:
        out = xs[0] * coeffs[0]
        for c, x in zip(coeffs[1:], xs[1:], strict=True):
            out = out + x * c
        return out
    if op == 0:
        return torch.stack(xs).prod(0)
    if op == 2:
        return torch.stack(xs).amax(0)
    raise ModelError(f"{ly.name}: Eltwise type {op} is not supported")


@torch.no_grad()
def run_graph(layers: list[Layer], x: Tensor) -> Tensor:
    """Run the ncnn graph on ``x`` (``(B, C, H, W)``, ncnn's channel axis is dim 1), as ncnn
    defines each layer; returns the blob no layer consumes (the output)."""
    blobs: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for ly in layers:
        try:
            xs = [blobs[b] for b in ly.inputs]
        except KeyError as exc:
            raise ModelError(f"{ly.name}: input blob {exc.args[0]} is not produced before it "
                             "(layers out of order?)") from None
        consumed.update(ly.inputs)
        try:
            outs = _run_layer(ly, xs, x)
        except RuntimeError as exc:  # shapes that do not fit (torch's message)
            raise ModelError(f"layer {ly.name} ({ly.type}) cannot run on its inputs: "
                             f"{str(exc).splitlines()[0][:160]}") from None
        for name, val in zip(ly.outputs, outs, strict=True):
            blobs[name] = val
    final = [b for ly in layers for b in ly.outputs if b not in consumed]
    if len(final) != 1:
        raise ModelError(f"the graph has {len(final)} outputs ({', '.join(final[:4])}); "
                         "one is expected")
    return blobs[final[0]]


def _run_layer(ly: Layer, xs: list[Tensor], x: Tensor) -> list[Tensor]:
    t = ly.type
    if t == "Input":
        outs = [x]
    elif t in ("Split", "Noop"):
        outs = [xs[0]] * len(ly.outputs)
    elif t == "Convolution":
        outs = [_conv(ly, xs[0])]
    elif t == "PReLU":
        slope = ly.weights["slope"]
        s = slope.view(1, -1, 1, 1) if slope.numel() > 1 else slope
        outs = [torch.where(xs[0] > 0, xs[0], xs[0] * s)]
    elif t == "ReLU":
        outs = [F.leaky_relu(xs[0], float(ly.get(0, 0.0)))]
    elif t == "Concat":
        if int(ly.get(0, 0)) not in (0, -3):
            raise ModelError(f"{ly.name}: Concat on axis {ly.get(0, 0)} is not supported")
        outs = [torch.cat(xs, 1)]
    elif t == "Eltwise":
        outs = [_eltwise(ly, xs)]
    elif t == "BinaryOp":
        outs = [_binary(ly, xs)]
    elif t == "Interp":
        outs = [_interp(ly, xs[0])]
    elif t == "Reshape":
        outs = [_reshape(ly, xs[0])]
    elif t == "Permute":
        outs = [_permute(ly, xs[0])]
    elif t == "PixelShuffle":
        if int(ly.get(1, 0)):
            raise ModelError(f"{ly.name}: PixelShuffle mode {ly.get(1, 0)} is not supported")
        outs = [F.pixel_shuffle(xs[0], int(ly.get(0, 1)))]
    else:
        raise ModelError(f"layer {ly.name}: ncnn layer type {t!r} is not supported")
    return outs


# --------------------------------------------------------------------------- mapping


def _convs(layers: list[Layer]) -> list[Layer]:
    return [ly for ly in layers if ly.type == "Convolution"]


def _in_channels(layers: list[Layer]) -> int:
    convs = _convs(layers)
    if not convs:
        raise ModelError("no convolution layers: not a super-resolution network")
    return int(convs[0].weights["weight"].shape[1])


def _index_probe(c: int, h: int, w: int) -> Tensor:
    """``(1, c, h, w)`` holding each element's index: a permutation of it is unambiguous."""
    return torch.arange(c * h * w, dtype=torch.float32).view(1, c, h, w)


def input_unshuffle(layers: list[Layer], where: str = "model.param") -> int:
    """The pixel-unshuffle factor of the graph's input: 1 without Reshape/Permute layers; 2 or 4
    when the layers between the input and the first convolution are Reshape/Permute that
    compute ``pixel_unshuffle`` by that factor (RRDBNet x2 / x1 exported to ncnn), verified on
    index probes of two sizes. ModelError for any other use of Reshape/Permute."""
    if not any(ly.type in _LAYOUT for ly in layers):
        return 1
    first = next((i for i, ly in enumerate(layers) if ly.type == "Convolution"), None)
    if first is None:
        raise ModelError(f"{where}: no convolution layers: not a super-resolution network")
    late = [ly.name for ly in layers[first:] if ly.type in _LAYOUT]
    if late:
        raise ModelError(f"{where}: Reshape/Permute layer {late[0]} after the first "
                         "convolution: only an input pixel-unshuffle is supported")
    prefix = layers[:first]
    odd = [f"{ly.name} ({ly.type})" for ly in prefix if ly.type not in {"Input", "Noop", *_LAYOUT}]
    if odd:
        raise ModelError(f"{where}: layer {odd[0]} between the input and the first convolution "
                         "is not part of a pixel-unshuffle")
    cin = int(layers[first].weights["weight"].shape[1])
    for u in (2, 4):
        c, rem = divmod(cin, u * u)
        if rem or c not in (1, 3):
            continue
        matches = True
        for h, w in ((3 * u, 5 * u), (5 * u, 2 * u)):
            x = _index_probe(c, h, w)
            try:
                out = run_graph(prefix, x)
            except ModelError:
                matches = False
                break
            want = F.pixel_unshuffle(x, u)
            if out.shape != want.shape or not torch.equal(out, want):
                matches = False
                break
        if matches:
            return u
    raise ModelError(f"{where}: the Reshape/Permute layers before the first convolution are not "
                     f"a pixel-unshuffle by 2 or 4 of a 1- or 3-channel image at every size "
                     f"(the first convolution takes {cin} channels)")


def _map_rrdbnet(layers: list[Layer]) -> tuple[str, dict[str, Tensor]] | None:
    """Convs in file order -> BasicSR RRDBNet keys, when count and shapes fit."""
    convs = _convs(layers)
    n = len(convs)
    # 15 per block + conv_first, conv_body, conv_hr, conv_last + one per upsampling stage
    stages = next((s for s in (2, 0, 1, 3) if n - 4 - s >= 15 and (n - 4 - s) % 15 == 0), None)
    if stages is None:
        return None
    nb = (n - 4 - stages) // 15
    names = ["conv_first"]
    for b in range(nb):
        for r in range(1, 4):
            names += [f"body.{b}.rdb{r}.conv{j}" for j in range(1, 6)]
    names += ["conv_body", *[f"conv_up{k}" for k in range(1, stages + 1)], "conv_hr",
              "conv_last"]
    sd: dict[str, Tensor] = {}
    for key, ly in zip(names, convs, strict=True):
        if "bias" not in ly.weights:
            return None
        sd[f"{key}.weight"] = ly.weights["weight"]
        sd[f"{key}.bias"] = ly.weights["bias"]
    from sr_cli.archs.rrdbnet import detect

    return ("rrdbnet", sd) if detect(sd) is not None else None


def _map_srvgg(layers: list[Layer]) -> tuple[str, dict[str, Tensor]] | None:
    """conv, activation, ..., conv -> SRVGGNetCompact ``body.N`` keys."""
    convs = _convs(layers)
    prelus = [ly for ly in layers if ly.type == "PReLU"]
    if len(convs) < 3 or not any(ly.type == "PixelShuffle" for ly in layers):
        return None
    if prelus and len(prelus) != len(convs) - 1:
        return None
    sd: dict[str, Tensor] = {}
    for i, ly in enumerate(convs):
        if "bias" not in ly.weights:
            return None
        sd[f"body.{2 * i}.weight"] = ly.weights["weight"]
        sd[f"body.{2 * i}.bias"] = ly.weights["bias"]
    for i, ly in enumerate(prelus):
        sd[f"body.{2 * i + 1}.weight"] = ly.weights["slope"]
    return "srvgg", sd


def _srvgg_act(layers: list[Layer]) -> str:
    if any(ly.type == "PReLU" for ly in layers):
        return "prelu"
    slopes = {float(ly.get(0, 0.0)) for ly in layers if ly.type == "ReLU"}
    slopes |= {float((ly.get(10, [0.0]) or [0.0])[0]) if int(ly.get(9, 0)) == 2 else 0.0
               for ly in _convs(layers)[:-1]}
    if slopes == {0.1}:
        return "leakyrelu"
    return "relu"


def to_state_dict(layers: list[Layer], where: str = "model.param"
                  ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Map the graph onto an architecture and verify it: ``(state_dict, metadata)`` with
    metadata ``arch``/``hparams`` so :func:`sr_cli.zoo.build_loaded` builds it directly."""
    from sr_cli.archs import get_arch
    from sr_cli.zoo import instantiate

    u = input_unshuffle(layers, where)
    in_ch = _in_channels(layers) // (u * u)
    g = torch.Generator().manual_seed(0)
    probe = torch.rand(1, in_ch, PROBE_HW[0] * u, PROBE_HW[1] * u, generator=g)
    ref = run_graph(layers, probe)
    tried = []
    for mapper in (_map_rrdbnet, _map_srvgg) if u == 1 else (_map_rrdbnet,):
        mapped = mapper(layers)
        if mapped is None:
            continue
        arch, sd = mapped
        spec = get_arch(arch)
        hp = spec.detect(sd)
        if hp is None:
            tried.append(f"{arch}: shapes do not fit")
            continue
        if u > 1 and (hp.get("upsample_stages") is not None
                      or RRDBNET_UNSHUFFLE.get(int(hp["scale"])) != u):
            tried.append(f"{arch}: the graph unshuffles by {u}, the weights fit another layout")
            continue
        if arch == "srvgg":
            hp["act_type"] = _srvgg_act(layers)
            ratio = ref.shape[-1] / PROBE_HW[1]
            if ratio != hp["upscale"] and ratio.is_integer():
                hp["out_scale"] = int(ratio)
        hp = spec.hparams(**hp)
        try:
            net = instantiate(spec.factory, hp, sd)
        except (RuntimeError, ValueError, TypeError) as exc:
            tried.append(f"{arch}: {str(exc).splitlines()[0][:120]}")
            continue
        with torch.no_grad():
            out = net.eval()(probe)
        if out.shape != ref.shape:
            tried.append(f"{arch}: output {tuple(out.shape[-2:])} != graph's "
                         f"{tuple(ref.shape[-2:])}")
            continue
        err = float((out - ref).abs().max())
        tol = 1e-4 * (1.0 + float(ref.abs().max()))
        if not math.isfinite(err) or err > tol:
            tried.append(f"{arch}: probe output differs from the graph's by {err:.3g}")
            continue
        meta = {"arch": arch, "hparams": json.dumps(hp, sort_keys=True)}
        return sd, meta
    why = "; ".join(tried) if tried else (
        f"{len(_convs(layers))} convolutions in no RRDBNet/SRVGGNetCompact layout")
    raise ModelError(f"{where}: the ncnn graph does not map onto a known architecture ({why})")


def read_ncnn_weights(param: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of an ncnn model, for :func:`sr_cli.zoo.read_weights`.

    Metadata: ``arch``, ``hparams`` (mapped and verified), ``ncnn_storage`` (``fp16``/``fp32``)
    and ``converted_from`` (the ``.param`` name).
    """
    layers, kinds = read_ncnn(param)
    sd, meta = to_state_dict(layers, str(param))
    meta["ncnn_storage"] = "+".join(sorted(kinds)) or "none"
    meta["converted_from"] = param.name
    return sd, meta
