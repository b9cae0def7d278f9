"""Alternative CPU implementations of stride-1 3x3 convolutions for inference.

:func:`prepare_for_cpu` swaps every eligible ``nn.Conv2d`` (3x3, stride 1, zero padding 1,
no dilation or groups, float32) of a network for one of:

``winograd4`` / ``winograd2``
    Winograd F(4x4,3x3) / F(2x2,3x3) written with PyTorch GEMMs on channels-last data: the
    padded input is cut into overlapping (m+2)x(m+2) tiles, transformed by one GEMM with
    ``kron(B^T, B^T)``, multiplied per frequency by the weights (transformed once, at
    preparation) with ``torch.bmm``, and transformed back by one GEMM with ``kron(A^T, A^T)``;
    the bias rides on the frequency whose output transform is all ones.
``nnpack``
    NNPACK's Winograd F(6x6,3x3) kernels bundled with PyTorch (contiguous NCHW).
``onednn``
    Leave the network alone: PyTorch's own oneDNN convolution (channels-last when the engine
    asks for it).

``auto`` is oneDNN. NNPACK measured faster per layer on one thread (64->64 1.26-1.47x, 192->64
1.53-1.64x), so ``auto`` used to give it SRVGGNetCompact's layers on AVX2 CPUs; measured again on
the whole network (quiet machine, ``SR_CPU_CONV=auto`` vs ``onednn``, ``benchmarks/upscale.py
--nets srvgg --threads 1,2``, 320x320) it was 1.0x at one thread and 0.54x at two (NNPACK does
not use the second thread well). The PyTorch Winograd versions
lost to oneDNN on every layer shape measured (their transforms are memory-bound passes), so
they and NNPACK are opt-in only, to measure on other CPUs.
Set ``SR_CPU_CONV`` to choose a mode for the whole process (``onednn`` turns this off).

:func:`prepare_inference` (applied to every CPU network after :func:`prepare_for_cpu`) swaps
SRVGGNetCompact for :class:`SRVGGInference`, the same network with its output tail in one pass
and its activations in two kept buffers (float rounding; bit-identical at most shapes).

All modes keep the convolution's exact semantics (zero padding 1 at the image borders), so a
tile gives the same output as the whole image up to float rounding.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.errors import UsageError

if TYPE_CHECKING:
    from sr_cli.archs.srresnet import SRResNet
    from sr_cli.archs.srvgg import SRVGGNetCompact

MODES = ("auto", "onednn", "winograd4", "winograd2", "nnpack")
ENV_VAR = "SR_CPU_CONV"


@cache
def _nnpack_ok() -> bool:
    return bool(torch._nnpack_available())  # type: ignore[attr-defined]


@cache
def winograd_matrices(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B^T, G, A^T)`` of Winograd F(m x m, 3x3) in float64 (Lavin & Gray's points 0, +-1,
    +-2 for m = 4; 0, +-1 for m = 2). Tile size ``a = m + 2``; shapes ``(a, a), (a, 3), (m, a)``.
    """
    if m == 2:
        bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        g = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
        at = [[1, 1, 1, 0], [0, 1, -1, -1]]
    elif m == 4:
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    else:
        raise ValueError(f"Winograd output tile must be 2 or 4, got {m}")
    return tuple(torch.tensor(v, dtype=torch.float64) for v in (bt, g, at))  # type: ignore[return-value]


def eligible(conv: nn.Module) -> bool:
    """A plain 3x3 / stride 1 / zero-padding 1 / ungrouped, undilated float32 ``nn.Conv2d``."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.weight.dtype == torch.float32
    )


class WinogradConv2d(nn.Module):
    """Winograd F(m x m, 3x3) replacement for a 3x3/stride-1/padding-1 ``nn.Conv2d``.

    ``forward(x)``: ``(N, C, H, W)`` float32 (channels-last memory avoids a copy) ->
    ``(N, K, H, W)`` in channels-last memory. Weights are transformed once, here.
    """

    u: torch.Tensor
    bk: torch.Tensor
    ak: torch.Tensor
    bias: torch.Tensor

    def __init__(self, conv: nn.Conv2d, m: int = 4) -> None:
        super().__init__()
        bt, g, at = winograd_matrices(m)
        w = conv.weight.detach().double()
        a = m + 2
        u = torch.einsum("ij,kcjl,ml->imck", g, w, g).reshape(a * a, w.shape[1], w.shape[0])
        dt = conv.weight.dtype
        self.m = m
        self.in_channels, self.out_channels = int(w.shape[1]), int(w.shape[0])
        self.register_buffer("u", u.to(dt).contiguous())
        self.register_buffer("bk", torch.kron(bt, bt).to(dt))
        self.register_buffer("ak", torch.kron(at, at).to(dt))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("bias", bias.to(dt).clone())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F({self.m}x{self.m},3x3)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, a, k = self.m, self.m + 2, self.out_channels
        xn = x.permute(0, 2, 3, 1)  # NHWC view; contiguous when x is channels-last
        th, tw = -(-h // m), -(-w // m)
        hp, wp = m * th + 2, m * tw + 2
        xp = x.new_zeros(n, hp, wp, c)
        xp[:, 1 : h + 1, 1 : w + 1] = xn
        p = n * th * tw
        tiles = xp.as_strided(
            (a, a, n, th, tw, c), (wp * c, c, hp * wp * c, m * wp * c, m * c, 1)
        )
        d = x.new_empty(a * a, p * c)
        d.view(a, a, n, th, tw, c).copy_(tiles)
        v = torch.mm(self.bk, d).view(a * a, p, c)
        mm = torch.bmm(v, self.u)  # (a*a, P, K)
        mm[a + 1].add_(self.bias)  # A^T e1 e1^T A is all ones: the bias of every output
        y = torch.mm(self.ak, mm.view(a * a, p * k))
        out = x.new_empty(n, th, m, tw, m, k)
        out.copy_(y.view(m, m, n, th, tw, k).permute(2, 3, 0, 4, 1, 5))
        res = out.view(n, th * m, tw * m, k)
        if th * m != h or tw * m != w:
            res = res[:, :h, :w].contiguous()
        return res.permute(0, 3, 1, 2)


class NNPACKConv2d(nn.Module):
    """NNPACK (bundled with PyTorch) replacement for a 3x3/stride-1/padding-1 ``nn.Conv2d``.

    ``forward(x)``: ``(N, C, H, W)`` float32 -> ``(N, K, H, W)`` contiguous (NCHW).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        # _nnpack_available() also initialises NNPACK; without it every call fails
        if not torch._nnpack_available():  # type: ignore[attr-defined]
            raise UsageError(f"{ENV_VAR}=nnpack: this PyTorch build has no NNPACK")
        self.weight = nn.Parameter(conv.weight.detach().contiguous(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._nnpack_spatial_convolution(  # type: ignore[attr-defined]
            x.contiguous(), self.weight, self.bias, [1, 1]
        )


def resolve_mode(mode: str | None = None) -> str:
    """``mode`` or ``$SR_CPU_CONV`` or ``auto``, checked. Raises UsageError when unknown."""
    s = (mode or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if s not in MODES:
        raise UsageError(f"unknown {ENV_VAR}={s!r} ({', '.join(MODES)})")
    if s == "nnpack" and not torch._nnpack_available():  # type: ignore[attr-defined]
        raise UsageError(f"{ENV_VAR}=nnpack: this PyTorch build has no NNPACK")
    return s


def _replacement(conv: nn.Conv2d, mode: str, dtype: torch.dtype) -> nn.Module | None:
    if not eligible(conv):
        return None
    if mode == "winograd4":
        return WinogradConv2d(conv, 4)
    if mode == "winograd2":
        return WinogradConv2d(conv, 2)
    if mode == "nnpack":
        return NNPACKConv2d(conv)
    return None


def prepare_for_cpu(model: nn.Module, dtype: torch.dtype, mode: str | None = None) -> nn.Module:
    """Swap eligible convolutions of an inference network for the chosen CPU implementation.

    Args:
        model: a network already on the CPU at ``dtype`` (modified in place and returned).
        dtype: its precision; only float32 layers are ever swapped.
        mode: one of :data:`MODES`; ``None`` = ``$SR_CPU_CONV`` or ``auto`` (= ``onednn``).

    Returns:
        ``model``, with zero or more ``nn.Conv2d`` children replaced. The output equals the
        original network's to float32 rounding (Winograd F(4x4) loses a few bits more; see
        tests/test_fastconv.py for the pinned tolerances).
    """
    chosen = resolve_mode(mode)
    if chosen in ("auto", "onednn") or dtype != torch.float32:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                new = _replacement(child, chosen, dtype)
                if new is not None:
                    setattr(parent, name, new)
    if any(isinstance(m, NNPACKConv2d) for m in model.modules()):
        # NNPACK works on NCHW: keep the other layers there too (no layout flips between)
        model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return model


def _shuffled_view(y: torch.Tensor, r: int, keep: int | None = None) -> torch.Tensor:
    """``pixel_shuffle(y[:, :keep], r)`` as a ``(n, h, r, w, r, c)`` view in NHWC order:
    channel ``c*r*r + i*r + j`` is the output pixel ``(h*r + i, w*r + j)`` of plane ``c``. A
    view (no copy) when ``y`` is channels-last."""
    n, cr, h, w = y.shape
    cr = keep if keep is not None else cr
    c = cr // (r * r)
    return y.permute(0, 2, 3, 1)[..., :cr].reshape(n, h, w, c, r, r).permute(0, 1, 4, 2, 5, 3)


_CHUNK = 1 << 18  # elements per in-place activation chunk (1 MiB in float32)


def prelu_inplace(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.prelu(y, weight)`` written back into ``y``, a few rows at a time: the same kernel
    (bit-identical), without a new full-size tensor per layer. Fresh full-size outputs were
    what made SRVGGNetCompact's per-channel PReLU cost 3x its arithmetic: every one lands on
    new pages (page faults; see sr_cli/infer/cpumem.py)."""
    n, c, h, w = y.shape
    rows = max(1, _CHUNK // max(1, n * c * w))
    for r in range(0, h, rows):
        part = y[:, :, r : r + rows]
        part.copy_(F.prelu(part, weight))
    return y


class Workspace:
    """Flat buffers kept between calls, handed out as channels-last views: one network's
    activations land on the same pages pass after pass instead of fresh ones (``sr upscale``
    maps every block of 1 MB and more on its own pages, so each fresh activation took page
    faults; see docs/engines.md). One caller at a time: :meth:`take` is a non-blocking lock,
    and a caller that does not get it allocates as usual."""

    def __init__(self) -> None:
        self._flat: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> Workspace:
        return Workspace()  # a copy of a network gets buffers (and a lock) of its own

    def take(self) -> bool:
        return self._lock.acquire(blocking=False)

    def give(self) -> None:
        self._lock.release()

    def view(self, name: str, n: int, c: int, h: int, w: int, dtype: torch.dtype
             ) -> torch.Tensor:
        """An ``(n, c, h, w)`` channels-last tensor over buffer ``name`` (grown as needed;
        its contents are whatever the last user left)."""
        need = n * c * h * w
        flat = self._flat.get((name, dtype))
        if flat is None or flat.numel() < need:
            self._flat.pop((name, dtype), None)  # free the old one before taking the new one
            flat = self._flat[(name, dtype)] = torch.empty(need, dtype=dtype)
        return flat[:need].view(n, h, w, c).permute(0, 3, 1, 2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._flat.values())

    def clear(self) -> None:
        """Free the buffers (views handed out keep theirs alive until dropped)."""
        self._flat.clear()


def _clear_after_trunk(body: nn.Module, _args: Any, _out: Any) -> None:
    """Forward hook on RRDBNet's ``body``: free its blocks' workspace (found through the
    blocks, so a deep copy of the network frees its own)."""
    for m in body.modules():
        if isinstance(m, RDBInference) and m.workspace is not None:
            m.workspace.clear()
            return


def release_workspace(net: nn.Module) -> None:
    """Free the :class:`Workspace` of a network from :func:`prepare_inference`, if it has one:
    the engine calls this when a staged trunk is done, so the kept buffers (sized like one
    stage tile's activations, which the memory plan counts for the trunk) are not held beside
    the tail's; the whole forward frees them after its trunk (a hook on ``body``)."""
    ws = getattr(net, "sr_workspace", None)
    if isinstance(ws, Workspace):
        ws.clear()


def _workspace_ok(x: torch.Tensor) -> bool:
    """Whether ``x`` can run on kept buffers: a 4-D channels-last CPU tensor, not traced."""
    return (x.device.type == "cpu" and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling())


def _sum_fits(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` can be written into a kept buffer
    (:func:`_conv_into_view`): float32 on kept buffers, and the op exists here."""
    return x.dtype == torch.float32 and _workspace_ok(x) and _sum_ok()


def _conv_into_view(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                    pad: int) -> torch.Tensor:
    """``conv2d(x, w, b, padding=pad)`` (stride 1) written into the channels-last tensor
    ``y``: ``y`` is zeroed and oneDNN adds the convolution to it
    (``torch.ops.mkldnn._convolution_pointwise_.binary``, "add"), the one fused op that writes
    into a given tensor. 0 + v is exact, but oneDNN may pick another kernel for the fused op
    than for ``conv2d`` (float rounding: 2.5e-6 at 13x17, bit-identical at 320x320). The
    zeroing costs about what the page faults did when glibc served fresh pages (one 64->64
    layer at 320x320: 125 ms fresh with faults, 113 ms without, 125 ms here)."""
    torch.ops.mkldnn._convolution_pointwise_.binary(
        y.zero_(), x, w, b, [pad, pad], [1, 1], [1, 1], 1, "add", 1.0, None, [], None)
    return y


def _probe(name: str, check: Callable[[Any, Any], Any]) -> bool:
    """Whether ``torch.ops.mkldnn.<name>`` exists here and ``check(op, cl)`` holds
    (``cl``: a channels-last float32 tensor of a shape); False on a build without the op or
    with another schema."""
    op = getattr(torch.ops.mkldnn, name, None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False

    def cl(*shape: int) -> torch.Tensor:
        return torch.rand(*shape).contiguous(memory_format=torch.channels_last)

    try:
        return bool(check(op, cl))
    except (RuntimeError, TypeError, AttributeError):
        return False


def _sum_check(op: Any, cl: Any) -> bool:
    x, w, y = cl(1, 2, 3, 3), cl(3, 2, 3, 3), cl(1, 3, 3, 3).zero_()
    op.binary(y, x, w, None, [1, 1], [1, 1], [1, 1], 1, "add", 1.0, None, [], None)
    return torch.allclose(y, F.conv2d(x, w, None, padding=1), atol=1e-5)


@cache
def _sum_ok() -> bool:
    """Whether oneDNN's in-place convolution + add op runs here and computes the convolution
    (float32)."""
    return _probe("_convolution_pointwise_", _sum_check)


class SRVGGInference(nn.Module):
    """SRVGGNetCompact for inference: its body, then the pixel shuffle and the
    nearest-upsampled input added in one strided pass straight into a channels-last output.

    The network's own forward allocates the shuffled output, the upsampled input and their
    sum (three full-resolution passes; 71 ms of a 1.2-1.9 s 320x320 forward on one thread,
    against 31 ms here): same additions in the same precision. A non-native ``out_scale``
    runs the network's own forward.

    The body's activations live in two buffers of a :class:`Workspace` kept between calls
    (float32 CPU channels-last input; :func:`_conv_into_view`): each convolution writes into
    the buffer its input is not in,
    and each PReLU runs in place (:func:`prelu_inplace`). A fresh output per layer lands on new
    pages whenever glibc maps it (activations over 32 MB, or after the encoder thread's frees):
    5 us a page, 1.26 M page faults in an 800x800 x4 ``sr upscale`` on one thread. The buffers
    are used by one call at a time; a concurrent call (another thread) runs the same kernels
    in a workspace of its own.
    """

    def __init__(self, net: SRVGGNetCompact) -> None:
        super().__init__()
        self.net = net
        self.workspace = Workspace()
        # PyTorch's own convolutions (not SR_CPU_CONV's replacements) and activations only
        self._plain = all(
            isinstance(m, (nn.PReLU, nn.ReLU, nn.LeakyReLU)) or (
                type(m) is nn.Conv2d and m.padding_mode == "zeros" and m.groups == 1
                and isinstance(m.padding, tuple) and m.padding[0] == m.padding[1]
                and tuple(m.stride) == (1, 1) and tuple(m.dilation) == (1, 1))
            for m in net.body)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.net.body:
            if isinstance(layer, nn.PReLU) and out is not x:
                out = prelu_inplace(out, layer.weight)
            else:
                out = layer(out)
        return out

    def _body_buffered(self, x: torch.Tensor, ws: Workspace) -> torch.Tensor:
        n, _, h, w = x.shape
        out, k = x, 0
        for layer in self.net.body:
            if isinstance(layer, nn.Conv2d):  # into the buffer its input is not in
                y = ws.view("ab"[k % 2], n, int(layer.out_channels), h, w, x.dtype)
                out = _conv_into_view(y, out, layer.weight, layer.bias, int(layer.padding[0]))
                k += 1
            elif isinstance(layer, nn.PReLU):
                out = prelu_inplace(out, layer.weight)
            elif isinstance(layer, nn.LeakyReLU):
                out = F.leaky_relu_(out, layer.negative_slope)
            elif isinstance(layer, nn.ReLU):
                out = F.relu_(out)
            else:
                out = layer(out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        r = int(net.upscale)
        if net.out_scale != r:
            return net(x)
        if not (self._plain and _sum_fits(x)):
            return self._tail(x, self._body(x), r)
        ws = self.workspace
        if ws.take():
            try:
                return self._tail(x, self._body_buffered(x, ws), r)
            finally:
                ws.give()
        return self._tail(x, self._body_buffered(x, Workspace()), r)  # another thread has it

    @staticmethod
    def _tail(x: torch.Tensor, out: torch.Tensor, r: int) -> torch.Tensor:
        n, c, h, w = x.shape
        body = _shuffled_view(out, r)
        base = x.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
        y = torch.empty((n, h, r, w, r, c), dtype=out.dtype, device=out.device)
        torch.add(body, base, out=y)
        return y.view(n, h * r, w * r, c).permute(0, 3, 1, 2)


def _fused_check(op: Any, cl: Any) -> bool:
    x, w = cl(1, 2, 3, 3), cl(2, 2, 3, 3)
    y = op(x, w, None, [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.5], "")
    return torch.allclose(y, F.leaky_relu(F.conv2d(x, w, None, padding=1), 0.5), atol=1e-5)


@cache
def _fused_ok() -> bool:
    """Whether oneDNN's fused convolution + activation op runs here (float32)."""
    return _probe("_convolution_pointwise", _fused_check)


def conv_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int,
             slope: float | torch.Tensor | None) -> torch.Tensor:
    """``conv2d(x, w, b, padding=pad)`` then (``slope`` not None) leaky ReLU / PReLU, in one
    oneDNN call for float32 CPU tensors and a scalar slope, else in place on the result."""
    if isinstance(slope, float) and x.dtype == torch.float32 and x.device.type == "cpu" \
            and _fused_ok():
        return torch.ops.mkldnn._convolution_pointwise(  # type: ignore[no-any-return]
            x, w, b, [pad, pad], [1, 1], [1, 1], 1, "leaky_relu", [slope], "")
    y = F.conv2d(x, w, b, padding=pad)
    if isinstance(slope, float):
        return F.leaky_relu_(y, slope)
    if slope is not None:
        return F.prelu(y, slope)
    return y


def shuffle_cl(y: torch.Tensor, r: int, keep: int | None = None) -> torch.Tensor:
    """``pixel_shuffle(y[:, :keep], r)`` as one strided copy into a channels-last result
    (PyTorch's own pixel shuffle of channels-last data is several times slower)."""
    v = _shuffled_view(y, r, keep)
    n, h, _, w, _, c = v.shape
    out = torch.empty(v.shape, dtype=y.dtype, device=y.device)
    out.copy_(v)
    return out.view(n, h * r, w * r, c).permute(0, 3, 1, 2)


def merge_into_shuffle(weight: torch.Tensor, bias: torch.Tensor | None, r: int
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A stride-1 ``k x k`` convolution (zero padding ``k // 2``) applied after
    ``pixel_shuffle(., r)``, as a convolution on the tensor before the shuffle whose output is
    shuffled instead: ``conv(shuffle(y)) == shuffle(conv'(y))``.

    Output phase ``(a, b)`` of output channel ``o`` is channel ``o*r*r + a*r + b`` of conv';
    input phase ``(i, j)`` of channel ``c`` is ``c*r*r + i*r + j`` (PyTorch's shuffle order).
    Computed in float64; returns ``(weight', bias', padding')``. The zero padding matches
    exactly: padded positions of the shuffled grid are the padded positions of this one.
    """
    w = weight.detach().double()
    o, c, k, k2 = w.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"square odd kernels only, got {k}x{k2}")
    p = k // 2
    lo, hi = (-p) // r, (r - 1 + p) // r
    kk = hi - lo + 1
    out = torch.zeros(o * r * r, c * r * r, kk, kk, dtype=torch.float64)
    for a in range(r):
        for i in range(r):
            for ky in range(kk):
                dy = (ky + lo) * r + i - a
                if not -p <= dy <= p:
                    continue
                for b_ in range(r):
                    for j in range(r):
                        for kx in range(kk):
                            dx = (kx + lo) * r + j - b_
                            if -p <= dx <= p:
                                out[a * r + b_::r * r, i * r + j::r * r, ky, kx] = \
                                    w[:, :, dy + p, dx + p]
    bb = (bias.detach().double() if bias is not None else torch.zeros(o, dtype=torch.float64))
    return out, bb.repeat_interleave(r * r), -lo


def _padded_out(n: int) -> int:
    """oneDNN runs these convolutions faster with output channels in multiples of 16 (12 ->
    16: 1.4x, 27 -> 32: 1.2x; measured, one thread); up to 8 stays as it is."""
    return n if n <= 8 or n % 16 == 0 else n + 16 - n % 16


class SRResNetInference(nn.Module):
    """SRResNet for inference, the same function computed with fewer passes:

    - batch norm folded into the convolutions before it (float64);
    - each PReLU (one slope: a leaky ReLU) fused into its convolution by oneDNN (float32;
      in place otherwise), residual additions in place;
    - the pixel shuffles as one strided channels-last copy each, and the last stage's
      shuffle merged into ``conv_last`` (:func:`merge_into_shuffle`): its 9x9 convolution of
      64 to 3 channels at the output resolution runs as a 5x5 one of 256 to 12 (padded to 16)
      channels before the shuffle, and only the 3-channel result is shuffled.

    The output equals the network's to float rounding (tests/test_cpumem.py pins it against
    the float64 forward); measured on one thread, a 160x160 x4 forward: see docs/engines.md.
    """

    def __init__(self, net: SRResNet) -> None:
        super().__init__()
        from sr_cli.infer.ncnn_export import fold_bn

        dt = net.conv_first.weight.dtype
        cl = torch.channels_last

        def put(name: str, w: torch.Tensor, b: torch.Tensor | None) -> None:
            self.register_buffer(f"{name}_w", w.to(dt).contiguous(memory_format=cl))
            self.register_buffer(f"{name}_b", None if b is None else b.to(dt).contiguous())

        def slope(act: nn.PReLU, repeat: int = 1) -> float | torch.Tensor:
            a = act.weight.detach()
            return float(a) if a.numel() == 1 else a.to(dt).repeat_interleave(repeat)

        self.slopes: dict[str, float | torch.Tensor] = {}
        put("first", net.conv_first.weight.detach(), net.conv_first.bias)
        self.first_pad = int(net.conv_first.padding[0])
        self.slopes["first"] = slope(net.act_first)
        blocks: list[Any] = list(net.body)  # _ResBlock / _UpStage (typed loosely: nn.Module
        stages: list[Any] = list(net.upsample)  # attributes read as Tensor | Module)
        self.nblocks = len(blocks)
        for i, blk in enumerate(blocks):
            put(f"b{i}c1", *fold_bn(blk.conv1, blk.bn1))
            put(f"b{i}c2", *fold_bn(blk.conv2, blk.bn2))
            self.slopes[f"b{i}"] = slope(blk.act)
        put("body", *fold_bn(net.conv_body, net.bn_body))
        self.factors = [int(st.shuffle.upscale_factor) for st in stages]
        for k, st in enumerate(stages):
            put(f"up{k}", st.conv.weight.detach(), st.conv.bias)
            # the activation after the shuffle, applied before it: slope per pre-shuffle channel
            self.slopes[f"up{k}"] = slope(st.act, self.factors[k] ** 2)
        r = self.factors[-1]
        w, b, self.last_pad = merge_into_shuffle(net.conv_last.weight, net.conv_last.bias, r)
        self.last_keep = int(w.shape[0])
        extra = _padded_out(self.last_keep) - self.last_keep
        if extra:
            w = torch.cat([w, w.new_zeros(extra, *w.shape[1:])])
            b = torch.cat([b, b.new_zeros(extra)])
        put("last", w, b)

    def _w(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return getattr(self, f"{name}_w"), getattr(self, f"{name}_b")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slopes
        first = conv_act(x, *self._w("first"), self.first_pad, s["first"])
        h = first
        for i in range(self.nblocks):
            y = conv_act(h, *self._w(f"b{i}c1"), 1, s[f"b{i}"])
            y = conv_act(y, *self._w(f"b{i}c2"), 1, None)
            h = y.add_(h)
        h = conv_act(h, *self._w("body"), 1, None).add_(first)
        for k, r in enumerate(self.factors):
            y = conv_act(h, *self._w(f"up{k}"), 1, s[f"up{k}"])
            if k < len(self.factors) - 1:
                h = shuffle_cl(y, r)
            else:
                z = conv_act(y, *self._w("last"), self.last_pad, None)
                return shuffle_cl(z, r, self.last_keep)
        raise AssertionError("SRResNet has at least one upsampling stage")


class RDBInference(nn.Module):
    """RRDBNet's Residual Dense Block for inference: ``x + 0.2 * conv5([x, x1..x4])`` with
    each LeakyReLU fused into its convolution (:func:`conv_act`), the 0.2 folded into
    conv5's weights (float64) and the residual added in place. Same function to float
    rounding; one module for one, so the whole forward and the staged trunk both run it.

    With a :class:`Workspace` (one per network, shared by its blocks, freed after the
    trunk), the four dense concatenations are written into one kept buffer
    (``torch.cat(..., out=)``: the same copy) and conv1-4 into four more (float32:
    :func:`_conv_into_view`: a zeroed buffer + oneDNN's in-place convolution + add, then the
    LeakyReLU in place, since oneDNN fuses no activation but ReLU after an add). Fresh, they
    were 55% (concatenations) and most of the rest of the page faults of an ``sr upscale``
    with the default RRDBNet: 1.46 M -> 0.53 M faults and 20.3 -> 15.9 s for a 400x400 x4 on
    one thread, peak unchanged."""

    def __init__(self, rdb: nn.Module, workspace: Workspace | None = None) -> None:
        super().__init__()
        convs: list[Any] = [getattr(rdb, f"conv{k}") for k in range(1, 6)]
        dt = convs[0].weight.dtype
        self.slope = float(rdb.lrelu.negative_slope)  # type: ignore[union-attr, arg-type]
        self.workspace = workspace
        for k, conv in enumerate(convs, 1):
            w = conv.weight.detach().double()
            b = conv.bias.detach().double() if conv.bias is not None else None
            if k == 5:
                w, b = w * 0.2, (b * 0.2 if b is not None else None)
            self.register_buffer(f"w{k}", w.to(dt).contiguous(memory_format=torch.channels_last))
            self.register_buffer(f"b{k}", None if b is None else b.to(dt))

    w5: torch.Tensor
    b5: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ws = self.workspace
        if ws is not None and _workspace_ok(x) and ws.take():
            try:
                return self._forward(x, ws)
            finally:
                ws.give()
        return self._forward(x, None)

    def _forward(self, x: torch.Tensor, ws: Workspace | None) -> torch.Tensor:
        n, _, h, w = x.shape

        def cat(feats: list[torch.Tensor]) -> torch.Tensor:
            if ws is None:
                return torch.cat(feats, 1)
            c = sum(int(f.shape[1]) for f in feats)
            return torch.cat(feats, 1, out=ws.view("cat", n, c, h, w, x.dtype))

        into = ws if ws is not None and _sum_fits(x) else None  # conv1-4 into kept buffers
        feats = [x]
        for k in range(1, 5):
            inp = cat(feats) if k > 1 else x
            wk, bk = getattr(self, f"w{k}"), getattr(self, f"b{k}")
            if into is not None:
                y = into.view(f"x{k}", n, int(wk.shape[0]), h, w, x.dtype)
                feats.append(F.leaky_relu_(_conv_into_view(y, inp, wk, bk, 1), self.slope))
            else:
                feats.append(conv_act(inp, wk, bk, 1, self.slope))
        return conv_act(cat(feats), self.w5, self.b5, 1, None).add_(x)


def prepare_inference(model: nn.Module) -> nn.Module:
    """Architecture-specific inference forms with the same output up to float rounding:
    SRVGGNetCompact -> :class:`SRVGGInference` (float rounding), SRResNet in eval mode ->
    :class:`SRResNetInference`, RRDBNet in eval mode: its dense blocks -> :class:`RDBInference`
    (in place: the network keeps its type and staged form); any other network is returned as
    it is."""
    from sr_cli.archs.rrdbnet import RRDB, RRDBNet
    from sr_cli.archs.srresnet import SRResNet
    from sr_cli.archs.srvgg import SRVGGNetCompact

    if type(model) is SRVGGNetCompact:
        return SRVGGInference(model)
    if type(model) is SRResNet and not model.training:
        return SRResNetInference(model)
    if type(model) is RRDBNet and not model.training:
        ws = Workspace()  # one per network: its blocks run one after another
        for block in model.body:
            if isinstance(block, RRDB):
                for name in ("rdb1", "rdb2", "rdb3"):
                    setattr(block, name, RDBInference(getattr(block, name), ws))
        model.sr_workspace = ws  # type: ignore[assignment]
        model.body.register_forward_hook(_clear_after_trunk)
    return model


def reference_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The float64 reference of ``conv(x)`` (tests and accuracy benchmarks)."""
    b = conv.bias.double() if conv.bias is not None else None
    return F.conv2d(x.double(), conv.weight.double(), b, padding=1)
