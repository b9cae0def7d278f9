"""The inference engine: a model on a device at a precision, tiled, for arrays and tensors.

``Upscaler.run`` applies the network at its native scale to a float batch; ``upscale_array``
handles a whole image: gray/RGB/alpha channels, 8/16-bit, and a final high-quality resize
(MATLAB bicubic, antialiased when shrinking) from the network's native scale to the requested
one. Instances are safe to share between threads: the tiler is stateless and per-precision
network copies are created once under a lock.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import ModelError, RuntimeFailure, UsageError
from sr_cli.infer.alpha import bleed_transparent
from sr_cli.infer.cpumem import attach as keep_freed_memory_in
from sr_cli.infer.cpumem import forward_scope
from sr_cli.infer.device import DTYPES, free_memory_bytes, resolve_device, resolve_precision
from sr_cli.infer.fastconv import prepare_for_cpu, prepare_inference, release_workspace
from sr_cli.infer.resample import RowResampler
from sr_cli.infer.tiling import Tile, plan_tiles, run_tiled, splits
from sr_cli.io.images import PixelStream

if TYPE_CHECKING:
    from sr_cli.infer.staged import StagedNet
    from sr_cli.zoo import LoadedModel

ALPHA_MODES = ("model", "bicubic")
# BT.601 luma, used to return a gray image from a 3-channel network.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16`` (not on CPU).
        tile: core tile size in input pixels; ``None`` = auto (sized to free memory),
            ``0`` = whole image.
        tile_batch: tiles of equal shape per forward pass.
        channels_last: use the channels-last memory format (faster convolutions).
        alpha: ``model`` (alpha through the network) or ``bicubic``.
        memory_fraction: share of free device memory the auto tile size may use.
        tta: x8 self-ensemble (flips and 90-degree rotations, outputs averaged; 8x the
            compute), see :mod:`sr_cli.infer.tta`.
        compile: run the network through ``torch.compile`` (helps on CUDA for long runs).
        engine: ``auto``, ``torch`` or ``ncnn``: who runs fp32 CPU inference
            (see :mod:`sr_cli.infer.ncnn_backend`; ``auto`` = ncnn when it can).
    """

    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    tile_batch: int = 4
    channels_last: bool = True
    alpha: str = "model"
    memory_fraction: float = 0.5
    tta: bool = False
    compile: bool = False
    engine: str = "auto"


def check_output_size(
    height: int, width: int, planes: int, scale: float, bytes_per_sample: int = 12
) -> tuple[int, int]:
    """The output size ``(ceil(H*scale), ceil(W*scale))`` of an upscale (MATLAB's imresize
    rule, so baselines and network + resize agree), checked.

    Raises UsageError when the factor leaves no pixel (e.g. ``--scale 1e-9``), and
    RuntimeFailure when the output of ``planes`` channels at ``bytes_per_sample`` (default:
    float32 times 3 working copies; the streaming path holds at most the final 8/16-bit
    output) would not fit in the free memory, instead of letting the OS kill the process.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise UsageError(f"--scale must be a positive number, got {scale:g}")
    from sr_cli.degrade.resize import output_size

    oh, ow = output_size(height, scale), output_size(width, scale)
    if min(height, width) * scale < 0.5:  # ceil would still give 1 px, from a vast kernel
        raise UsageError(
            f"--scale {scale:g} leaves no pixels of a {width}x{height} image "
            f"({ow}x{oh}); use a larger factor"
        )
    need = bytes_per_sample * planes * oh * ow
    free = free_memory_bytes(torch.device("cpu"))
    if need > free:
        raise RuntimeFailure(
            f"a {ow}x{oh} output needs about {need / 2**30:.1f} GiB of memory, "
            f"{free / 2**30:.1f} GiB is free; use a smaller --scale"
        )
    return oh, ow


def _bytes_per_input_pixel(model: LoadedModel, dtype_bytes: int) -> int:
    """A conservative estimate of peak activation memory per input pixel at inference."""
    hp = model.desc.hparams
    s = max(1, model.desc.scale)
    feat = int(hp.get("num_feat", hp.get("n1", hp.get("num_features", 64))))
    arch = model.desc.arch
    if arch == "srvgg":  # LR features, then 3*s*s channels shuffled to the output resolution
        return dtype_bytes * (4 * feat + 3 * 3 * s * s) + 64
    if arch == "realcugan":  # U-Nets of 64-256 channels at the output resolution (x4: at x2);
        u = 2 if s == 4 else s  # peak RSS measured on CPU: ~520-580 floats per pixel there
        return dtype_bytes * (600 * u * u + 3 * s * s) + 64
    hr_ch = feat  # channels at the output resolution
    lr_ch = feat * 6 if arch == "rrdbnet" else feat * 3
    if arch == "span":  # the 4-way concat plus a block's 2x-wide re-parameterised convs
        lr_ch = int(hp["feature_channels"]) * 8
    elif arch == "swinir":  # tokens, qkv, MLP, and per-window attention maps + shift mask
        ws = int(hp["window_size"])
        lr_ch = int(hp["embed_dim"]) * 8 + (2 * max(hp["num_heads"]) + 1) * ws * ws
    elif arch == "omnisr":  # qkv (3C) + gated FFN (2C) maps, and 4-head window attention maps
        lr_ch = feat * 8 + 4 * int(hp["window_size"]) ** 2
    elif arch == "hat":  # as SwinIR, plus the CAB, OCAB's unfolded k/v and its attention maps
        ws, dim, heads = int(hp["window_size"]), int(hp["embed_dim"]), max(hp["num_heads"])
        ows = ws + int(ws * float(hp["overlap_ratio"]))
        lr_ch = (dim * 10 + (2 * heads + 1) * ws * ws + 2 * heads * ows * ows
                 + 3 * dim * math.ceil((ows / ws) ** 2))
    elif arch == "dat":  # tokens, the SGFN's hidden width, both window halves' attention maps
        n = int(hp["split_size"][0]) * int(hp["split_size"][1])
        dim = int(hp["embed_dim"])
        lr_ch = int(dim * (8 + 2 * float(hp["expansion_factor"]))) + 2 * max(hp["num_heads"]) * n
    return dtype_bytes * (lr_ch + 3 * hr_ch * s * s) + 64


MAX_TILE_OVERHEAD = 0.15
"""Auto tiling: computed pixels beyond the image's own, at most (when memory allows)."""
LEAN_BUDGET_CPU = 384 * 1024**2
"""Auto tiling on the CPU: activation memory aimed at (more only when the context needs larger
tiles to keep the overhead under :data:`MAX_TILE_OVERHEAD`), so memory stays bounded."""


def min_tile_for_overhead(context: int, overhead: float = MAX_TILE_OVERHEAD) -> int:
    """Smallest square tile whose padded area ``(t + 2c)^2`` is within ``1 + overhead`` of
    ``t^2`` (interior tiles; border tiles have less padding)."""
    if context <= 0:
        return 1
    return math.ceil(2 * context / (math.sqrt(1 + overhead) - 1))


STAGED_PER = "rdb"
"""Granularity of RRDBNet's staged trunk: per Residual Dense Block (radius 5 feature px,
two maps held: the running map and the RRDB's snapshot) rather than per RRDB (radius 15, one
map): a third of the overlap for twice the memory (``benchmarks/tiles.py --staged`` measures
both)."""


class _Counter:
    """``progress(done, total)`` over work units (tiles, stage tiles), never past total."""

    def __init__(self, progress: Callable[[int, int], None] | None) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0

    def tick(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.progress:
            self.progress(self.done, self.total)


@dataclass(frozen=True)
class StagedLayout:
    """How an image is run staged (see :mod:`sr_cli.infer.staged`).

    Attributes:
        strips: ``(y0, y1, p0, p1)`` input rows: the strip's own rows and the rows its maps
            are computed over (the strip grown by the measured context, clamped); one strip
            ``(0, H, 0, H)`` when the whole image's feature maps fit the memory budget.
        stride: input pixels per feature pixel.
        rows, cols: stage tile core in feature pixels.
        radii: the stages' radii (feature px).
        tail_tile: tail tile core in input pixels (0 = a strip at once).
        tail_context: the tail's exact radius in input pixels.
        width: input width (pixels).
    """

    strips: list[tuple[int, int, int, int]]
    stride: int
    rows: int
    cols: int
    radii: tuple[int, ...]
    tail_tile: int
    tail_context: int
    width: int

    def tail_tiles(self, strip: tuple[int, int, int, int], width: int, m: int) -> list[Tile]:
        """Tail tiles of a strip: cores partition its own rows, padding clamped to its maps."""
        y0, y1, p0, p1 = strip
        ctx = -(-self.tail_context // m) * m
        return [Tile(t.y0 + y0, t.y1 + y0, t.x0, t.x1, max(p0, t.y0 + y0 - ctx),
                     min(p1, t.y1 + y0 + ctx), t.px0, t.px1)
                for t in plan_tiles(y1 - y0, width, self.tail_tile, self.tail_context, m)]

    def work(self, passes: int = 1) -> int:
        """Progress units: stage tiles of every strip and pass, then tail tiles."""
        from sr_cli.infer.staged import stage_tiles

        u, n = self.stride, 0
        for y0, y1, p0, p1 in self.strips:
            hf, wf = (p1 - p0) // u, self.width // u
            n += passes * sum(stage_tiles(hf, wf, self.rows, self.cols, r) for r in self.radii)
            n += len(plan_tiles(y1 - y0, self.width, self.tail_tile, self.tail_context))
        return n

    def overhead(self) -> float:
        """Computed pixels beyond the image's own, over every stage and strip (the trunk)."""
        from sr_cli.infer.staged import computed_pixels

        u = self.stride
        wf = self.width // u
        own = sum((y1 - y0) // u for y0, y1, _, _ in self.strips) * wf * len(self.radii)
        done = sum(computed_pixels((p1 - p0) // u, wf, self.rows, self.cols, r)
                   for _, _, p0, p1 in self.strips for r in self.radii)
        return done / max(1, own) - 1


class Upscaler:
    """Run a loaded model on images.

    Args:
        model: from :func:`sr_cli.zoo.load_model`.
        options: see :class:`InferenceOptions`.
        on_warning: called with one-line warnings (e.g. half-precision fallback).
    """

    def __init__(
        self,
        model: LoadedModel,
        options: InferenceOptions | None = None,
        *,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.options = options or InferenceOptions()
        if self.options.alpha not in ALPHA_MODES:
            raise UsageError(f"unknown --alpha {self.options.alpha!r} (model, bicubic)")
        if self.options.tile is not None and self.options.tile < 0:
            raise UsageError("--tile must be >= 0")
        self.device = resolve_device(self.options.device)
        self.precision = resolve_precision(
            self.options.precision, self.device, model.desc.supports_half
        )
        from sr_cli.infer.ncnn_backend import resolve_engine

        self.engine = resolve_engine(self.options.engine, self.device, self.precision,
                                     model.net, compile=self.options.compile)
        self.on_warning = on_warning
        self._nets: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()
        self._context_lock = threading.Lock()
        self._context: int | None = None
        self._warned_fallback = False
        self._warned_overflow = False
        self._staged_nets: dict[str, Any] = {}

    # -- network ---------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        """Native integer scale of the network (0 for the any-scale baselines)."""
        return int(self.model.desc.scale)

    def _memory_format(self) -> torch.memory_format:
        if self.options.channels_last and self.engine != "ncnn":
            return torch.channels_last
        return torch.contiguous_format

    def _net(self, precision: str) -> torch.nn.Module:
        with self._lock:
            net = self._nets.get(precision)
            if net is None and self.engine == "ncnn" and precision == "fp32":
                from sr_cli.infer.ncnn_backend import ncnn_network

                net = ncnn_network(self.model.net)  # exported once per process
            elif net is None:
                net = copy.deepcopy(self.model.net).eval()
                net = net.to(device=self.device, dtype=DTYPES[precision])
                net = net.to(memory_format=self._memory_format())  # type: ignore[call-overload]
                if self.device.type == "cpu":  # $SR_CPU_CONV: alternative 3x3 convolutions
                    net = prepare_for_cpu(net, DTYPES[precision])
                    net = prepare_inference(net)  # same functions, fewer passes over memory
                    if not self.options.compile:  # (hooks would break compiled graphs)
                        keep_freed_memory_in(net)  # $SR_CPU_MALLOC: no fresh pages per pass
                for p in net.parameters():
                    p.requires_grad_(False)
                if self.options.compile:
                    net = torch.compile(net, dynamic=True)  # type: ignore[assignment]
            if precision not in self._nets:
                if self.options.tta:
                    from sr_cli.infer.tta import SelfEnsemble

                    net = SelfEnsemble(net)
                self._nets[precision] = net
            return net

    @property
    def context(self) -> int:
        """Tiling overlap in input pixels: the architecture's exact receptive radius, or for
        deep networks (RRDBNet) the radius measured from these weights (file metadata, else
        measured once now, see :mod:`sr_cli.infer.context`)."""
        desc = self.model.desc
        if desc.exact_context or "context" in (self.model.metadata or {}):
            return int(desc.context)
        with self._context_lock:
            if self._context is None:
                from sr_cli.infer.context import measure_context

                net = copy.deepcopy(self.model.net).float().to(self.device).eval()
                self._context = measure_context(net, desc)
            return self._context

    def _warn_fp32_redo(self, prec: str) -> None:
        """Warn (once per Upscaler) that a half-precision tile was redone in fp32."""
        if self.on_warning and not self._warned_fallback:
            self.on_warning(f"{prec} produced NaN/Inf on a tile; recomputed it in fp32")
            self._warned_fallback = True

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network forward of a float32 batch; half-precision non-finite output -> fp32 redo."""
        prec = self.precision
        with torch.no_grad(), forward_scope(self._scope_elements(x)):
            xd = x.to(self.device, DTYPES[prec]).contiguous(memory_format=self._memory_format())
            y = self._net(prec)(xd)
            if prec != "fp32" and not bool(torch.isfinite(y).all()):
                self._warn_fp32_redo(prec)
                xd = x.to(self.device, torch.float32).contiguous(
                    memory_format=self._memory_format()
                )
                y = self._net("fp32")(xd)
            return y.float().contiguous()

    def _staged(self, prec: str) -> StagedNet:
        """The network at ``prec`` as exact stages (call only when :meth:`staged_layout` is
        not None)."""
        with self._context_lock:
            snet = self._staged_nets.get(prec)
            if snet is None:
                snet = self._net(prec).staged(STAGED_PER)  # type: ignore[operator]
                self._staged_nets[prec] = snet
            return snet  # type: ignore[no-any-return]

    def stages_exactly(self) -> bool:
        """Whether this network runs staged (exact tiles): it exposes ``staged()`` and runs
        through PyTorch without ``--tta`` or ``--compile`` (those keep the one-pass tiles)."""
        return (self.engine != "ncnn" and not self.options.tta and not self.options.compile
                and self.scale > 0 and callable(getattr(self.model.net, "staged", None)))

    def _budget(self) -> float:
        """Memory for activations and maps: ``memory_fraction`` of the free memory, at most
        8 GiB on the CPU."""
        budget = free_memory_bytes(self.device) * self.options.memory_fraction
        return min(budget, 8 * 1024**3) if self.device.type == "cpu" else budget

    def staged_layout(self, height: int, width: int, passes: int = 1, *,
                      tile: int | None = -1) -> StagedLayout | None:
        """How an ``height x width`` input (multiples of the size multiple) runs staged, or
        None: not a staged network (:meth:`stages_exactly`), ``--tile 0``, or the feature
        maps of a strip at least as tall as the measured context do not fit the memory.

        ``--tile N`` (N > 0) sets the stage tiles (N input px square) and the tail tiles;
        auto: stage tiles sized to the working budget (:data:`LEAN_BUDGET_CPU` on the CPU, a
        quarter of the budget on CUDA), as full-width bands or squares, whichever computes
        less; the maps of the whole image when they fit the rest of the budget :meth:`auto_tile`
        uses (``memory_fraction`` of free memory, at most 8 GiB on the CPU), else full-width
        strips with the measured context (:attr:`context`) on each side, unless the one-pass
        tiles plan fewer computed pixels (both are inexact then). ``passes``: 2 when
        alpha runs through the network too (both sets of maps are held). ``tile``: overrides
        ``options.tile`` (None = auto; the default -1 = the options').
        """
        t = self.options.tile if tile == -1 else tile
        if t == 0 or not self.stages_exactly():
            return None
        from sr_cli.infer.staged import computed_pixels, map_bytes_per_pixel

        snet = self._staged(self.precision)
        db = torch.finfo(DTYPES[self.precision]).bits // 8
        u = snet.stride
        hf, wf = height // u, width // u
        radii = tuple(st.radius for st in snet.stages)
        rmax = max(radii, default=0)
        budget = self._budget()
        work_budget = LEAN_BUDGET_CPU if self.device.type == "cpu" else budget / 4
        if t:
            rows = cols = max(1, t // u)
        else:
            area = max(1, int(work_budget // (snet.work_channels * db)))
            side = max(1, math.isqrt(area))
            band = (max(rmax, area // max(1, wf)), wf)
            square = (side, side)
            rows, cols = min(
                (band, square),
                key=lambda rc: computed_pixels(hf, wf, rc[0], rc[1], rmax),
            )
        per_row = map_bytes_per_pixel(snet, db) * passes * wf
        fit_rows = int(max(0.0, budget - work_budget) // max(1, per_row))
        if fit_rows >= hf:
            strips = [(0, height, 0, height)]
        else:
            m = max(1, self.model.desc.size_multiple)
            cf = -(-self.context // m) * m // u  # feature rows of context per side
            core = fit_rows - 2 * cf
            if core < max(cf, 1):
                return None
            strips = []
            for a, b in splits(hf, core):
                strips.append((a * u, b * u, max(0, a - cf) * u, min(hf, b + cf) * u))
        per_px = _bytes_per_input_pixel(self.model, db)
        tail_ctx = snet.tail_radius * u
        if t:
            tail_tile = t
        else:
            side = math.isqrt(int(work_budget // per_px))
            tail_tile = max(32, side, min_tile_for_overhead(tail_ctx))
            if max(b - a for a, b, _, _ in strips) <= tail_tile and width <= tail_tile:
                tail_tile = 0
        layout = StagedLayout(strips, u, rows, cols, radii, tail_tile, tail_ctx, width)
        if len(strips) > 1:  # both inexact now: the one-pass tiles when they compute less
            m = max(1, self.model.desc.size_multiple)
            t1 = self.auto_tile(height, width) if t is None else t
            plan = plan_tiles(height, width, t1, self.context if t1 else 0, m)
            one_pass = sum((p.py1 - p.py0) * (p.px1 - p.px0) for p in plan) / (height * width)
            if one_pass - 1 <= layout.overhead():
                return None
        return layout

    def _staged_tail(self, maps: tuple[torch.Tensor, torch.Tensor], p0: int, u: int, prec: str,
                     boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
        """The staged network's tail on input boxes ``(y0, y1, x0, x1)`` (same shape) of maps
        (input, trunk features) that start at input row ``p0``, as float32
        ``(N, C_out, h*s, w*s)``."""
        x, tr = maps
        dt = DTYPES[prec]
        fmt = self._memory_format()
        cut = [(slice(None), slice(None), slice((b[0] - p0) // u, (b[1] - p0) // u),
                slice(b[2] // u, b[3] // u)) for b in boxes]
        a = torch.cat([x[:, :, b[0] - p0 : b[1] - p0, b[2] : b[3]] for b in boxes])
        a = a.to(dt).contiguous(memory_format=fmt)
        t = torch.cat([tr[c] for c in cut]).to(dt).contiguous(memory_format=fmt)
        with torch.no_grad(), forward_scope(self._scope_elements(a)):
            return self._staged(prec).tail(a, t).float()

    def _run_staged(self, x: torch.Tensor, layout: StagedLayout,
                    progress: Callable[[int, int], None] | None) -> torch.Tensor:
        """:meth:`run` staged: ``x`` ``(B, C, H, W)`` float on the CPU, H and W multiples of
        the size multiple -> float32 ``(B, C_out, H*s, W*s)`` on the CPU (unclamped)."""
        b_, _, h, w = x.shape
        s, m = self.scale, max(1, self.model.desc.size_multiple)
        counter = _Counter(progress)
        counter.total = b_ * layout.work()
        out: torch.Tensor | None = None
        for i in range(b_):
            def fetch(box: tuple[int, ...], i: int = i) -> torch.Tensor:
                return x[i : i + 1, :, box[0] : box[1], box[2] : box[3]].to(self.device)

            for strip in layout.strips:
                maps = self._staged_maps(fetch, (strip[2], strip[3], 0, w), layout, counter)
                for t in layout.tail_tiles(strip, w, m):
                    box = [(t.py0, t.py1, t.px0, t.px1)]
                    y = self._staged_tail(maps, strip[2], layout.stride, self.precision, box)
                    if self.precision != "fp32" and not bool(torch.isfinite(y).all()):
                        self._warn_fp32_redo(self.precision)
                        y = self._staged_tail(maps, strip[2], layout.stride, "fp32", box)
                    if out is None:
                        out = torch.empty((b_, y.shape[1], h * s, w * s))
                    oy, ox = (t.y0 - t.py0) * s, (t.x0 - t.px0) * s
                    out[i, :, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] = y[
                        0, :, oy : oy + (t.y1 - t.y0) * s, ox : ox + (t.x1 - t.x0) * s].cpu()
                    counter.tick()
                del maps
        assert out is not None  # noqa: S101 - B >= 1 and a strip has tiles
        return out

    def _staged_maps(self, fetch: Callable[[tuple[int, ...]], torch.Tensor],
                     box: tuple[int, ...], layout: StagedLayout, counter: _Counter
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The input and trunk feature maps of an input box, staged; half-precision overflow
        that fp32 tiles cannot fix -> the box again in fp32 (maps in fp32)."""
        from sr_cli.infer.staged import HalfOverflow, run_head_and_trunk

        x = fetch(box)
        prec = self.precision
        fmt = self._memory_format()

        def redo() -> None:
            self._warn_fp32_redo(prec)

        # the trunk's blocks run on inputs below cpumem's size threshold: the whole strip
        # runs in one scope (a no-op unless SR_CPU_MALLOC=keep)
        try:
            with forward_scope(self._scope_elements(x)):
                return run_head_and_trunk(
                    self._staged(prec), lambda: self._staged("fp32"), x, dtype=DTYPES[prec],
                    rows=layout.rows, cols=layout.cols, memory_format=fmt, tick=counter.tick,
                    on_redo=redo)
        except HalfOverflow:
            release_workspace(self._net(prec))
            if self.on_warning and not self._warned_overflow:
                self.on_warning(f"{prec} overflowed in the network's feature maps; "
                                "recomputed the image in fp32")
                self._warned_overflow = True
            try:
                return run_head_and_trunk(
                    self._staged("fp32"), lambda: self._staged("fp32"), x, dtype=torch.float32,
                    rows=layout.rows, cols=layout.cols, memory_format=fmt, tick=counter.tick)
            finally:
                release_workspace(self._net("fp32"))
        finally:  # the trunk's kept buffers, before the tail runs
            release_workspace(self._net(prec))

    def auto_tile(self, height: int, width: int) -> int:
        """The tile size used when none is given (0 = whole image).

        On the CPU: tiles sized to a lean activation budget (:data:`LEAN_BUDGET_CPU`), but at
        least the size that keeps the overlap overhead within :data:`MAX_TILE_OVERHEAD` for
        this network's context; on CUDA the largest tile that fits ``memory_fraction`` of the
        free memory. Never more than the memory allows (then the overhead can exceed 15%).
        """
        dtype_bytes = torch.finfo(DTYPES[self.precision]).bits // 8
        per_px = _bytes_per_input_pixel(self.model, dtype_bytes)
        budget = self._budget()
        max_side = max(32, int(math.sqrt(max(1, budget // per_px))))
        if self.device.type == "cpu":
            lean = int(math.sqrt(LEAN_BUDGET_CPU // per_px))
            need = self.context if height * width > lean * lean else 0
            side = min(max_side, max(lean, min_tile_for_overhead(need)))
        else:
            side = max_side
        if height <= side and width <= side:
            return 0
        return max(32, side)

    def run(
        self,
        x: torch.Tensor,
        *,
        tile: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Network at native scale.

        Args:
            x: ``(B, C, H, W)`` float in [0, 1] (any device), C matching the network.
            tile: overrides ``options.tile`` (None = options / auto).
            progress: ``progress(done_tiles, total_tiles)``.

        Returns:
            ``(B, C_out, H*s, W*s)`` float32 on the CPU, clamped to [0, 1].
        """
        if x.ndim != 4:
            raise UsageError("expected a (B, C, H, W) tensor")
        desc = self.model.desc
        s = self.scale
        if s == 0:
            raise UsageError("any-scale baseline models are run through upscale_array")
        h, w = x.shape[-2:]
        m = max(1, desc.size_multiple)
        ph, pw = (-h) % m, (-w) % m
        x = x.float().cpu()
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        t = self.options.tile if tile is None else tile
        layout = self.staged_layout(*x.shape[-2:], tile=t)
        if layout is not None:
            out = self._run_staged(x, layout, progress)
        else:
            if t is None:
                t = self.auto_tile(*x.shape[-2:])
            tiles = plan_tiles(x.shape[-2], x.shape[-1], t, self.context if t else 0, m)
            out = run_tiled(
                self._forward, x, s, tiles, batch=self.options.tile_batch, progress=progress
            )
        if ph or pw:
            out = out[:, :, : h * s, : w * s]
        return out.clamp_(0, 1)

    @property
    def default_scale(self) -> float:
        """The factor used when none is asked: the native one, or the baseline's own."""
        return float(self.scale or self.model.desc.hparams.get("scale") or 4.0)

    def output_size(
        self, height: int, width: int, out_scale: float | None = None, planes: int = 3
    ) -> tuple[int, int]:
        """``(H', W')`` that :meth:`upscale_tensor` returns for an ``H x W`` input (checked)."""
        target = float(out_scale) if out_scale else self.default_scale
        return check_output_size(height, width, planes, target)

    # -- whole images ----------------------------------------------------------------------
    def _network_rgb_or_gray(
        self, x: torch.Tensor, progress: Callable[[int, int], None] | None
    ) -> torch.Tensor:
        """Run colour channels (1 or 3) through the network, adapting gray <-> RGB."""
        desc = self.model.desc
        c = x.shape[1]
        if c == desc.in_channels or (c == 3 and desc.in_channels == 1 and desc.accepts_rgb):
            return self.run(x, progress=progress)
        if c == 1 and desc.in_channels == 3:
            y = self.run(x.expand(-1, 3, -1, -1), progress=progress)
            luma = torch.tensor(_LUMA, dtype=y.dtype).view(1, 3, 1, 1)
            return (y * luma).sum(dim=1, keepdim=True)
        raise ModelError(
            f"model {self.model.name!r} takes {desc.in_channels}-channel images, "
            f"the image has {c} colour channel(s)"
        )

    def upscale_tensor(
        self,
        x: torch.Tensor,
        out_scale: float | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Upscale a float ``(B, C, H, W)`` batch in [0, 1], C in 1..4 (alpha last).

        The network runs at its native scale; when ``out_scale`` differs, a MATLAB-bicubic
        resize (antialiased when shrinking) brings the result to ``ceil(H*out_scale)``.
        """
        from sr_cli.degrade.resize import imresize

        b, c, h, w = x.shape
        native = self.scale
        # no factor asked: the native one, or an any-scale baseline's own (x4 by default)
        target = float(out_scale) if out_scale else self.default_scale
        oh, ow = self.output_size(h, w, target, planes=c * b)
        has_alpha = c in (2, 4)
        color = x[:, : c - 1] if has_alpha else x
        if has_alpha:
            color = bleed_transparent(color, x[:, c - 1 :])
        if native == 0:
            up = self._baseline(color, target)
        else:
            up = self._network_rgb_or_gray(color, progress)
            if up.shape[-2:] != (oh, ow):
                up = imresize(up, size=(oh, ow), kernel="cubic", antialias=True)
        if has_alpha:
            a = x[:, c - 1 :]
            if self.options.alpha == "model" and native != 0:
                na = self._network_rgb_or_gray(
                    a.expand(-1, self.model.desc.in_channels, -1, -1), None
                ).mean(dim=1, keepdim=True)
                if na.shape[-2:] != (oh, ow):
                    na = imresize(na, size=(oh, ow), kernel="cubic", antialias=True)
            else:
                na = imresize(a.float(), size=(oh, ow), kernel="cubic", antialias=True)
            up = torch.cat([up, na], dim=1)
        if not bool(torch.isfinite(up).all()):
            hint = "" if self.precision == "fp32" else "; try --precision fp32"
            raise ModelError(
                f"model {self.model.name!r} produced NaN or infinite values{hint}"
            )
        return up.clamp_(0, 1)

    def _baseline(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """An any-scale baseline (MATLAB imresize with the network's kernel) at ``scale``."""
        from sr_cli.degrade.resize import imresize

        kernel = getattr(self.model.net, "kernel", "cubic")
        with torch.no_grad():
            return imresize(x.double(), scale=scale, kernel=kernel, antialias=True).float()

    def upscale_array(
        self,
        pixels: np.ndarray,
        out_scale: float | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Upscale an ``(H, W)`` or ``(H, W, C)`` uint8/uint16 (or float in [0, 1]) array.

        Returns an array of the same dtype and channel count. Integer arrays go through
        :meth:`stream` (the same pixels as writing the stream to a file); float arrays keep
        their precision through :meth:`upscale_tensor`, which holds the float32 output whole
        (so for large images pass uint8/uint16).
        """
        arr = np.asarray(pixels)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
            raise UsageError(f"expected an HxW or HxWxC image array (C 1..4), got {arr.shape}")
        if arr.dtype in (np.uint8, np.uint16):
            out = self.stream(arr, out_scale, progress=progress).collect()
        elif np.issubdtype(arr.dtype, np.floating):
            x = torch.from_numpy(np.require(arr, np.float32, ["C", "W"]))
            y = self.upscale_tensor(x.permute(2, 0, 1).unsqueeze(0), out_scale, progress=progress)
            out = y[0].permute(1, 2, 0).numpy().astype(arr.dtype)
        else:
            raise UsageError(f"unsupported array dtype {arr.dtype}")
        return out[:, :, 0] if squeeze else out

    # -- streaming ---------------------------------------------------------------------------
    def stream(
        self,
        pixels: np.ndarray,
        out_scale: float | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> PixelStream:
        """Upscale an ``(H, W, C)`` uint8/uint16 image as a stream of output row bands.

        Tiles are run in raster bands (a row of tiles); each band's output is converted to
        the final dtype on the device and handed over, so no full-resolution float copy
        exists: memory is the model, the input, and a few bands. A non-native ``out_scale``
        resizes band by band (:class:`~sr_cli.infer.resample.RowResampler`); alpha and
        gray go band-wise too. Input tiles travel to the device as 8/16-bit integers and are
        converted there. Non-finite output raises ModelError (checked once per band, so the
        device is not synchronised per tile); a half-precision tile with NaN/Inf is redone
        in fp32. ``progress(done, total)`` counts tiles (staged networks: stage tiles and
        tail tiles, so it advances inside an image that is one tile). Validation (sizes,
        memory) happens here, before any work.
        """
        arr, oh, ow, target = self._checked(pixels, out_scale)
        c = arr.shape[2]
        has_alpha = c in (2, 4)
        cc = c - 1 if has_alpha else c
        bands = self._bands(arr, oh, ow, cc, has_alpha, target, progress)
        return PixelStream(oh, ow, c, arr.dtype, bands)

    def _checked(self, pixels: np.ndarray, out_scale: float | None
                 ) -> tuple[np.ndarray, int, int, float]:
        """:meth:`stream`'s validation: ``(H, W, C)`` array, output size, target scale."""
        arr = np.asarray(pixels)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
            raise UsageError(f"expected an HxW or HxWxC image array (C 1..4), got {arr.shape}")
        if arr.dtype not in (np.uint8, np.uint16):
            raise UsageError(f"stream() takes uint8/uint16 arrays, got {arr.dtype}")
        h, w, c = arr.shape
        target = float(out_scale) if out_scale else self.default_scale
        oh, ow = check_output_size(h, w, c, target, bytes_per_sample=arr.dtype.itemsize)
        cc = c - 1 if c in (2, 4) else c
        desc = self.model.desc
        if self.scale and not (
            cc == desc.in_channels or (cc == 3 and desc.in_channels == 1 and desc.accepts_rgb)
            or (cc == 1 and desc.in_channels == 3)
        ):
            raise ModelError(
                f"model {self.model.name!r} takes {desc.in_channels}-channel images, "
                f"the image has {cc} colour channel(s)"
            )
        return arr, oh, ow, target

    def upscale_frames(self, frames: Sequence[np.ndarray], out_scale: float | None = None,
                       *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Upscale frames of one shape (``(H, W, C)`` uint8/uint16) -> ``(B, H', W', C)``.

        The frames' tiles go through the network together: each forward pass takes the same
        tile of every frame (``tile_batch`` is divided among the frames, so a forward holds
        about as much as a single image's), and the output is written band by band in the
        final dtype as :meth:`stream` does; no float copy of a frame exists. The same pixels
        as :meth:`stream` per frame up to float rounding (a convolution over another batch
        size can differ in the last bit: rarely one output level). Frames with alpha,
        the any-scale baselines and staged networks (:meth:`staged_layout`, whose stage
        tiles are large already) run one frame after the other through :meth:`stream`, still
        into the one output array.
        """
        if not frames:
            raise UsageError("upscale_frames() needs at least one frame")
        arrs = [self._checked(f, out_scale) for f in frames]
        arr, oh, ow, target = arrs[0]
        if any(a.shape != arr.shape or a.dtype != arr.dtype for a, *_ in arrs):
            raise UsageError("upscale_frames() takes frames of one shape and dtype")
        n = len(frames)
        h, w, c = arr.shape
        out = np.empty((n, oh, ow, c), dtype=arr.dtype)
        m = max(1, self.model.desc.size_multiple)
        hp, wp = h + (-h) % m, w + (-w) % m
        has_alpha = c in (2, 4)
        if n == 1 or has_alpha or self.scale == 0 or self.staged_layout(hp, wp) is not None:
            for i, (a, *_) in enumerate(arrs):
                y = 0
                for band in self._bands(a, oh, ow, c - has_alpha, has_alpha, target, progress):
                    out[i, y : y + band.shape[0]] = band
                    y += band.shape[0]
            return out
        stack = np.stack([a for a, *_ in arrs])  # the inputs once more, in their dtype
        maxv = 65535.0 if arr.dtype == np.uint16 else 255.0
        tiles_gen = self._tile_stream(stack, None, c, False, progress)
        if (oh, ow) == (h * self.scale, w * self.scale):
            bands: Iterator[np.ndarray] = self._quantized_bands(tiles_gen, oh, ow, arr.dtype,
                                                                maxv, batched=True)
        else:
            rows = self._resampled(self._float_bands(tiles_gen, h * self.scale,
                                                     w * self.scale),
                                   h * self.scale, w * self.scale, oh, ow)
            bands = (self._to_host(b.unflatten(0, (n, -1)), arr.dtype, maxv) for b in rows)
        y = 0
        for band in bands:  # (n, rows, W, C)
            out[:, y : y + band.shape[1]] = band
            y += band.shape[1]
        return out

    def _bands(self, arr: np.ndarray, oh: int, ow: int, cc: int, has_alpha: bool, target: float,
               progress: Callable[[int, int], None] | None) -> Iterator[np.ndarray]:
        h, w, _ = arr.shape
        maxv = 65535.0 if arr.dtype == np.uint16 else 255.0
        color_f: torch.Tensor | None = None  # float colour, only when transparent pixels bleed
        if has_alpha:
            a = arr[:, :, cc:]
            if bool((a == 0).any()) and bool((a != 0).any()):
                # torch warns on read-only arrays (decoders may return them): copy those
                x = torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(2, 0, 1)
                xf = x[None].float() / maxv
                color_f = bleed_transparent(xf[:, :cc], xf[:, cc:])
        s = self.scale
        if s == 0:
            yield from self._baseline_bands(arr, color_f, cc, has_alpha, oh, ow, maxv, target)
            return
        native = (oh, ow) == (h * s, w * s)
        alpha_net = has_alpha and self.options.alpha == "model"
        tiles_gen = self._tile_stream(arr, color_f, cc, alpha_net, progress)
        if native and (alpha_net or not has_alpha):
            yield from self._quantized_bands(tiles_gen, h * s, w * s, arr.dtype, maxv)
            return
        color_rows = self._resampled(self._float_bands(tiles_gen, h * s, w * s), h * s, w * s,
                                     oh, ow)
        if has_alpha and not alpha_net:
            alpha_in = self._input_rows(arr, None, cc, cc + 1, maxv, torch.float32)
            alpha_rows = self._resampled(alpha_in, h, w, oh, ow)
            rows = _zip_rows(color_rows, alpha_rows)
        else:
            rows = color_rows
        for band in rows:
            yield self._to_host(band, arr.dtype, maxv)

    # tiles ----------------------------------------------------------------------------------
    def _fetch(self, src: np.ndarray | torch.Tensor, c0: int, c1: int, box: tuple[int, ...],
               maxv: float) -> torch.Tensor:
        """Input box ``(y0, y1, x0, x1)``, channels ``[c0, c1)``, as float ``(1, C, h, w)`` on
        the device (``(N, C, h, w)`` from a stack of frames ``(N, H, W, C)``): integer pixels
        are transferred as they are and converted there."""
        y0, y1, x0, x1 = box
        if isinstance(src, torch.Tensor):
            return src[:, c0:c1, y0:y1, x0:x1].to(self.device)
        stack = src if src.ndim == 4 else src[None]
        t = torch.from_numpy(np.array(stack[:, y0:y1, x0:x1, c0:c1], order="C"))  # a copy
        if t.dtype == torch.uint16:
            t = t.to(torch.int32)  # uint16 arithmetic is not supported by every kernel
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t.permute(0, 3, 1, 2).float().div_(maxv)

    def _tile_stream(self, arr: np.ndarray, color_f: torch.Tensor | None, cc: int,
                     alpha_net: bool, progress: Callable[[int, int], None] | None
                     ) -> Iterator[tuple[str, Any]]:
        """Run the network over tiles in raster bands. Yields ``("tile", (tile, out))`` with
        ``out`` the core's float output ``(1, C_out, h*s, w*s)`` on the device (colour, gray
        from luma, then alpha), and ``("band", (y0, y1))`` when a band is complete (tiles
        redone in fp32 are yielded again before it). ``arr`` may be a stack of N frames
        ``(N, H, W, C)`` (not staged, no alpha): ``out`` is then ``(N, C_out, h*s, w*s)``.

        Networks with exact stages (RRDBNet) are run staged when :meth:`staged_layout` says
        so: per strip of the image, head and trunk stage by stage into stored feature maps,
        then the tail over tiles of the maps; progress counts stage tiles and tail tiles."""
        desc = self.model.desc
        h, w, _ = arr.shape[-3:]
        n = arr.shape[0] if arr.ndim == 4 else 1
        m = max(1, desc.size_multiple)
        ph, pw = (-h) % m, (-w) % m
        src: np.ndarray | torch.Tensor = arr
        if ph or pw:
            mode: Literal["reflect", "edge"] = "reflect" if h > ph and w > pw else "edge"
            src = np.pad(arr, ((0, 0),) * (arr.ndim - 3) + ((0, ph), (0, pw), (0, 0)),
                         mode=mode)
            if color_f is not None:
                color_f = F.pad(color_f, (0, pw, 0, ph),
                                mode="reflect" if mode == "reflect" else "replicate")
        hp, wp = h + ph, w + pw
        maxv = 65535.0 if arr.dtype == np.uint16 else 255.0
        gray_in = cc == 1 and desc.in_channels == 3

        def fetch_color(box: tuple[int, ...]) -> torch.Tensor:
            x = self._fetch(color_f if color_f is not None else src, 0, cc, box, maxv)
            return x.expand(-1, 3, -1, -1) if gray_in else x

        def fetch_alpha(box: tuple[int, ...]) -> torch.Tensor:
            return self._fetch(src, cc, cc + 1, box, maxv).expand(-1, desc.in_channels, -1, -1)

        fetches = [fetch_color, fetch_alpha] if alpha_net else [fetch_color]
        layout = None if n > 1 else self.staged_layout(hp, wp, passes=len(fetches))
        counter = _Counter(progress)
        if layout is None:
            t = self.options.tile
            if t is None:
                t = self.auto_tile(hp, wp)
            tiles = plan_tiles(hp, wp, t, self.context if t else 0, m)
            counter.total = len(tiles) * n

            def forward(prec: str, boxes: list[tuple[int, int, int, int]], k: int
                        ) -> torch.Tensor:
                return self._forward_prec(torch.cat([fetches[k](b) for b in boxes]), prec)

            yield from self._band_loop(tiles, forward, gray_in, alpha_net, counter, n)
            return
        counter.total = layout.work(len(fetches))
        for strip in layout.strips:
            p0 = strip[2]
            maps = [self._staged_maps(f, (strip[2], strip[3], 0, wp), layout, counter)
                    for f in fetches]

            def tail(prec: str, boxes: list[tuple[int, int, int, int]], k: int,
                     maps: list[tuple[torch.Tensor, torch.Tensor]] = maps, p0: int = p0
                     ) -> torch.Tensor:
                return self._staged_tail(maps[k], p0, layout.stride, prec, boxes)

            yield from self._band_loop(layout.tail_tiles(strip, wp, m), tail, gray_in,
                                       alpha_net, counter)
            del maps, tail

    def _band_loop(self, tiles: list[Tile],
                   forward: Callable[[str, list[tuple[int, int, int, int]], int], torch.Tensor],
                   gray_in: bool, alpha_net: bool, counter: _Counter, n: int = 1
                   ) -> Iterator[tuple[str, Any]]:
        """Tiles in raster bands through ``forward(prec, boxes, k)`` (k = 0 colour, 1 alpha),
        as :meth:`_tile_stream` describes; ``n`` frames per box (box-major in a batch)."""
        s = self.scale
        luma = torch.tensor(_LUMA, device=self.device).view(1, 3, 1, 1)

        def run(prec: str, chunk: list[Tile]) -> tuple[torch.Tensor, torch.Tensor]:
            boxes = [(t.py0, t.py1, t.px0, t.px1) for t in chunk]
            # clamped per tile as run() does (NaN stays NaN for the check below)
            y = forward(prec, boxes, 0).clamp_(0, 1)
            if gray_in:
                y = (y * luma).sum(dim=1, keepdim=True)
            if alpha_net:
                ya = forward(prec, boxes, 1)
                y = torch.cat([y, ya.clamp_(0, 1).mean(dim=1, keepdim=True)], dim=1)
            # clamped, so only NaN is left to find: a max per sample propagates it, without
            # a full-size mask or a copy of the channels-last output
            ok = torch.isnan(y.amax(dim=(1, 2, 3))).view(len(chunk), n).any(dim=1).logical_not_()
            return y, ok

        def cores(chunk: list[Tile], y: torch.Tensor) -> Iterator[tuple[str, Any]]:
            for k, t in enumerate(chunk):
                oy, ox = (t.y0 - t.py0) * s, (t.x0 - t.px0) * s
                core = y[k * n : (k + 1) * n, :, oy : oy + (t.y1 - t.y0) * s,
                         ox : ox + (t.x1 - t.x0) * s]
                yield "tile", (t, core)

        bands: dict[tuple[int, int], list[Tile]] = {}
        for t_ in tiles:
            bands.setdefault((t_.y0, t_.y1), []).append(t_)
        batch = max(1, self._tile_batch(tiles) // n)  # tiles x frames per forward
        for (y0, y1), row in bands.items():
            groups: dict[tuple[int, int], list[Tile]] = {}
            for t_ in row:
                groups.setdefault(t_.padded_shape, []).append(t_)
            checks: list[tuple[list[Tile], torch.Tensor]] = []
            for group in groups.values():
                for i in range(0, len(group), batch):
                    chunk = group[i : i + batch]
                    y, ok = run(self.precision, chunk)
                    checks.append((chunk, ok))
                    yield from cores(chunk, y)
                    counter.tick(len(chunk) * n)
            # one host synchronisation per band: which tiles had NaN/Inf
            flags = torch.cat([ok for _, ok in checks]).cpu()
            if not bool(flags.all()):
                done_tiles = [t_ for chunk, _ in checks for t_ in chunk]
                bad = [t_ for t_, f in zip(done_tiles, flags.tolist(), strict=True) if not f]
                yield from self._redo(bad, run, cores)
            yield "band", (y0, y1)

    def _tile_batch(self, tiles: list[Tile]) -> int:
        """``tile_batch``, lowered so that one batch of the largest tiles stays within the
        activation budget :meth:`auto_tile` uses (always at least one tile)."""
        batch = max(1, self.options.tile_batch)
        if batch == 1 or len(tiles) == 1:
            return 1
        px = max((t.py1 - t.py0) * (t.px1 - t.px0) for t in tiles)
        per_px = _bytes_per_input_pixel(self.model, torch.finfo(DTYPES[self.precision]).bits // 8)
        budget = free_memory_bytes(self.device) * self.options.memory_fraction
        if self.device.type == "cpu":
            budget = min(budget, LEAN_BUDGET_CPU)
        return max(1, min(batch, int(budget // max(1, px * per_px))))

    def _redo(self, bad: list[Tile], run: Callable[[str, list[Tile]], Any],
              cores: Callable[[list[Tile], torch.Tensor], Iterator[tuple[str, Any]]]
              ) -> Iterator[tuple[str, Any]]:
        if self.precision == "fp32":
            hint = ""
        else:
            hint = "; try --precision fp32"
            self._warn_fp32_redo(self.precision)
            for t_ in bad:
                y, ok = run("fp32", [t_])
                if bool(ok.all()):
                    yield from cores([t_], y)
                    continue
                break
            else:
                if (self.options.precision == "auto" and self.precision == "fp16"
                        and self.device.type == "cuda" and torch.cuda.is_bf16_supported()):
                    self.precision = "bf16"  # fp16 overflows on this model: bf16 has range
                return
        raise ModelError(f"model {self.model.name!r} produced NaN or infinite values{hint}")

    def _scope_elements(self, x: torch.Tensor) -> int:
        """The size that decides whether a CPU network call runs in cpumem's forward scope:
        its output (the input times the scale squared), not its input: a 320x320 input to an
        x4 network is below the scope's threshold but its activations and output are far
        above it (0 on other devices: never in scope)."""
        return x.numel() * max(1, self.scale) ** 2 if self.device.type == "cpu" else 0

    def _forward_prec(self, x: torch.Tensor, prec: str) -> torch.Tensor:
        with torch.no_grad(), forward_scope(self._scope_elements(x)):
            xd = x.to(DTYPES[prec]).contiguous(memory_format=self._memory_format())
            return self._net(prec)(xd).float()

    def _quantized_bands(self, tiles_gen: Iterator[tuple[str, Any]], oh: int, ow: int,
                         dtype: np.dtype, maxv: float, *, batched: bool = False
                         ) -> Iterator[np.ndarray]:
        """Tiles -> output rows in the final dtype; a band buffer of that dtype on the device.
        ``batched``: tiles of N frames, bands ``(N, rows, W, C)``."""
        buf: torch.Tensor | None = None
        s = self.scale
        for kind, val in tiles_gen:
            if kind == "tile":
                t, core = val
                if buf is None:  # (N, rows, W, C): the host layout, no copy on the CPU
                    rows = (self._band_rows(t)) * s
                    buf = torch.empty((core.shape[0], rows, ow + self._pad_w(ow), core.shape[1]),
                                      dtype=_int_dtype(maxv), device=self.device)
                q = _quantize(core, maxv, inplace=True)  # core: a view of a spent output
                buf[:, : q.shape[2], t.x0 * s : t.x1 * s] = q.permute(0, 2, 3, 1)
                del q, core, val
            else:
                y0, y1 = val
                assert buf is not None  # noqa: S101 - a band has tiles
                r1 = min(y1 * s, oh)
                band = buf[:, : r1 - y0 * s, :ow].cpu().numpy()
                if not batched:
                    band = band[0]
                buf = None
                yield band if band.dtype == dtype else band.astype(dtype)
                del band

    def _band_rows(self, t: Tile) -> int:
        return t.y1 - t.y0

    def _pad_w(self, ow: int) -> int:
        m = max(1, self.model.desc.size_multiple)
        w = ow // max(1, self.scale)
        return ((-w) % m) * self.scale

    def _float_bands(self, tiles_gen: Iterator[tuple[str, Any]], nh: int, nw: int
                     ) -> Iterator[torch.Tensor]:
        """Tiles -> float rows ``(C, n, W*s)`` at the native scale, unclamped (for resizing);
        tiles of N frames: ``(N*C, n, W*s)``."""
        buf: torch.Tensor | None = None
        s = self.scale
        for kind, val in tiles_gen:
            if kind == "tile":
                t, core = val
                if buf is None:
                    buf = torch.empty((core.shape[0] * core.shape[1], (t.y1 - t.y0) * s,
                                       nw + self._pad_w(nw)), device=self.device)
                buf[:, : core.shape[2], t.x0 * s : t.x1 * s] = core.flatten(0, 1)
            else:
                y0, y1 = val
                assert buf is not None  # noqa: S101 - a band has tiles
                yield buf[:, : min(y1 * s, nh) - y0 * s, :nw]
                buf = None

    def _resampled(self, rows: Iterator[torch.Tensor], h: int, w: int, oh: int, ow: int,
                   *, kernel: str = "cubic", dtype: torch.dtype = torch.float32,
                   scale: float | None = None) -> Iterator[torch.Tensor]:
        if (h, w) == (oh, ow) and scale in (None, 1.0):
            yield from rows
            return
        rs = RowResampler(h, w, oh, ow, kernel=kernel, antialias=True, device=self.device,
                          dtype=dtype, scale=scale)
        for band in rows:
            yield from rs.push(band.to(dtype))

    def _input_rows(self, arr: np.ndarray, color_f: torch.Tensor | None, c0: int, c1: int,
                    maxv: float, dtype: torch.dtype, rows: int = 64) -> Iterator[torch.Tensor]:
        """Input channels ``[c0, c1)`` as float rows ``(C, n, W)`` on the device."""
        h = arr.shape[0]
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            if color_f is not None:
                yield color_f[0, c0:c1, y0:y1].to(self.device, dtype)
            else:
                yield self._fetch(arr, c0, c1, (y0, y1, 0, arr.shape[1]), maxv)[0].to(dtype)

    def _to_host(self, band: torch.Tensor, dtype: np.dtype, maxv: float) -> np.ndarray:
        if not bool(torch.isfinite(band).all()):
            hint = "" if self.precision == "fp32" else "; try --precision fp32"
            raise ModelError(
                f"model {self.model.name!r} produced NaN or infinite values{hint}"
            )
        return _host(_quantize(band, maxv), dtype)

    def _baseline_bands(self, arr: np.ndarray, color_f: torch.Tensor | None, cc: int,
                        has_alpha: bool, oh: int, ow: int, maxv: float, scale: float
                        ) -> Iterator[np.ndarray]:
        """An any-scale baseline (MATLAB imresize, the network's kernel), band by band, in
        float64 like the whole-image path."""
        h, w, c = arr.shape
        kernel = getattr(self.model.net, "kernel", "cubic")
        f64 = torch.float64
        rows = self._resampled(self._input_rows(arr, color_f, 0, cc, maxv, f64), h, w, oh, ow,
                               kernel=kernel, dtype=f64, scale=scale)
        if has_alpha:
            rows = _zip_rows(rows, self._resampled(
                self._input_rows(arr, None, cc, c, maxv, torch.float32), h, w, oh, ow))
        for band in rows:
            yield self._to_host(band.float(), arr.dtype, maxv)


def _int_dtype(maxv: float) -> torch.dtype:
    """Device integer type holding 0..maxv (uint16 arithmetic is patchy in torch: int32)."""
    return torch.uint8 if maxv <= 255 else torch.int32


def _quantize(x: torch.Tensor, maxv: float, *, inplace: bool = False) -> torch.Tensor:
    """float in [0, 1] -> integers ``round(clamp(x) * maxv)`` (NaN -> 0), as from_tensor;
    ``inplace``: ``x`` is overwritten instead of copied once."""
    y = torch.nan_to_num_(x, nan=0.0) if inplace else torch.nan_to_num(x, nan=0.0)
    return y.clamp_(0, 1).mul_(maxv).round_().to(_int_dtype(maxv))


def _host(q: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """``(C, n, W)`` integers on the device -> ``(n, W, C)`` numpy ``dtype``; ``(N, C, n, W)``
    -> ``(N, n, W, C)``."""
    q = q.movedim(-3, -1)
    return np.ascontiguousarray(q.cpu().numpy().astype(dtype))


def _zip_rows(a: Iterator[torch.Tensor], b: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Two row streams ``(Ca, n, W)`` and ``(Cb, m, W)`` of the same image -> ``(Ca+Cb, k, W)``
    chunks with equal rows."""
    pa: list[torch.Tensor] = []
    pb: list[torch.Tensor] = []
    na = nb = 0
    for xa in a:
        pa.append(xa)
        na += xa.shape[1]
        while nb < na:
            try:
                xb = next(b)
            except StopIteration:
                break
            pb.append(xb)
            nb += xb.shape[1]
        n = min(na, nb)
        if n:
            ca, cb = torch.cat(pa, dim=1), torch.cat(pb, dim=1)
            yield torch.cat([ca[:, :n], cb[:, :n].to(ca.dtype)], dim=0)
            pa, pb = [ca[:, n:]], [cb[:, n:]]
            na, nb = na - n, nb - n
