"""Staged ("depth-wise") exact tiling for networks built of exact-radius stages (RRDBNet).

A deep network's receptive field is the sum of its layers': RRDBNet-23 sees ~350 input pixels
around each output pixel, so tiling the whole network at once needs a measured (inexact)
context of ~90 px and large tiles to keep the overlap cheap. Each of its stages, however, has
a small exact radius: a Residual Dense Block (five 3x3 convolutions) 5 feature pixels, an RRDB
15. Running the trunk *stage by stage* over the whole image (or a large strip of it), each stage
tiled with its own exact radius and the feature maps stored between stages, gives the untiled
output up to float rounding at a few percent of extra compute, whatever the tile size.

A network opts in by a ``staged()`` method returning a :class:`StagedNet`: ``head`` (input ->
features, run over the whole region at once), ``stages`` (feature -> feature, each with its
exact radius; a stage may snapshot the running map first and end with a scaled residual onto
that snapshot, which is how RRDB's ``x + 0.2 * rdb3(rdb2(rdb1(x)))`` is written without
holding a block's three outputs), and ``tail`` (``(input, trunk features) -> output``, exact
radius ``tail_radius`` feature pixels), which the engine streams band by band like a plain
network. The tail gets the *input* pixels of its tile rather than the head's features: it
recomputes the head there (RRDBNet's ``conv_first``, 3x3 from a few input channels: cheap), so
the head's output is not held as a third full feature map beside the running map and the
snapshot (``tail_radius`` covers the head's radius too).

A stage that is one tile (the whole map) is a plain call that returns a new map, as the
network's own forward does. Otherwise it is computed in place on the running map: band by band
(raster order), each band's output held until the next band has been computed (which still
reads the band's old rows as context), then written back. Memory: the input (in the maps'
dtype), the running map, the snapshot (when a stage saves one) and one pending band (or the
stage's new map), in the network's dtype; see :func:`map_bytes_per_pixel`.

Half precision: every stage tile is checked for NaN/Inf (one device synchronisation per band);
a bad tile is recomputed in float32 from the same input; when even that result does not fit
the map's dtype, :class:`HalfOverflow` is raised so that the caller recomputes the region in
float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sr_cli.infer.tiling import splits

__all__ = ["HalfOverflow", "Stage", "StagedNet", "map_bytes_per_pixel", "run_head_and_trunk",
           "stage_tiles"]


@dataclass(frozen=True)
class Stage:
    """One exact stage of a trunk.

    Attributes:
        fn: ``(N, C, h, w) -> (N, C, h, w)`` on feature maps (must not modify its input).
        radius: exact receptive radius in feature pixels (zero-padded convolutions).
        save: copy the running map to the snapshot before this stage.
        residual: after this stage, ``map = map * residual + snapshot`` (pointwise).
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    radius: int
    save: bool = False
    residual: float | None = None


@dataclass(frozen=True)
class StagedNet:
    """A network written as head -> exact stages -> tail (see the module docstring).

    Attributes:
        stride: input pixels per feature pixel (the head's pixel-unshuffle factor).
        channels: feature channels of the maps.
        head: input ``(N, C_in, H, W)`` -> features ``(N, channels, H/stride, W/stride)``.
        stages: the trunk.
        tail: ``(input, trunk features)`` -> output ``(N, C_out, H*s, W*s)``: the input
            region ``(N, C_in, h*stride, w*stride)`` of the trunk features ``(N, channels, h,
            w)`` (the head is recomputed from it).
        tail_radius: the tail's exact receptive radius in feature pixels (head included).
        work_channels: peak floats per feature pixel while one stage tile runs (memory plan).
        in_channels: input floats per feature pixel (``C_in * stride**2``), held for the tail.
    """

    stride: int
    channels: int
    head: Callable[[torch.Tensor], torch.Tensor]
    stages: Sequence[Stage]
    tail: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    tail_radius: int
    work_channels: int
    in_channels: int = 0

    @property
    def saves(self) -> bool:
        return any(s.save for s in self.stages)

    @property
    def maps(self) -> int:
        """Feature maps held at once: the running map and (when a stage saves one) the
        snapshot; the input is counted apart (:attr:`in_channels`)."""
        return 2 if self.saves else 1


class HalfOverflow(Exception):  # noqa: N818 - a control-flow signal, caught by the engine
    """A half-precision stage produced values that even float32 cannot bring into the map's
    dtype: the region must be recomputed in float32."""


def map_bytes_per_pixel(net: StagedNet, dtype_bytes: int) -> int:
    """Bytes of stored feature maps and input per feature pixel (plus a pending band, not
    counted)."""
    return (net.maps * net.channels + net.in_channels) * dtype_bytes


def stage_tiles(height: int, width: int, rows: int, cols: int, radius: int) -> int:
    """Tiles one stage runs over a ``height x width`` feature map."""
    return len(splits(height, max(rows, radius, 1))) * len(splits(width, cols))


def computed_pixels(height: int, width: int, rows: int, cols: int, radius: int) -> int:
    """Feature pixels one stage computes (padded tiles) over a ``height x width`` map."""
    ys = splits(height, max(rows, radius, 1))
    xs = splits(width, cols)
    ph = sum(min(height, b + radius) - max(0, a - radius) for a, b in ys)
    pw = sum(min(width, b + radius) - max(0, a - radius) for a, b in xs)
    return ph * pw


@torch.no_grad()
def run_head_and_trunk(
    net: StagedNet,
    net32: Callable[[], StagedNet],
    x: torch.Tensor,
    *,
    dtype: torch.dtype,
    rows: int,
    cols: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    tick: Callable[[int], None] | None = None,
    on_redo: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head and trunk of ``net`` over a whole input region.

    Args:
        net: the staged network in ``dtype``.
        net32: returns its float32 twin (called only when a half-precision tile is redone).
        x: input ``(1, C_in, H, W)`` (float, any dtype; cast to ``dtype``), H and W multiples
            of ``net.stride``.
        rows, cols: stage tile core size in feature pixels (rows raised to each radius).
        memory_format: layout of the maps and of each tile handed to a stage.
        tick: ``tick(n)`` after every ``n`` stage tiles.
        on_redo: called when a half-precision stage tile is redone in float32.

    Returns:
        ``(input, trunk features)``: ``x`` in ``dtype`` (what the tail reads) and
        ``(1, channels, H/stride, W/stride)``.

    Raises:
        HalfOverflow: a half-precision stage (or the head) overflows even when redone in fp32.
    """
    half = dtype != torch.float32
    x = x.to(dtype).contiguous(memory_format=memory_format)
    cur = net.head(x)  # not kept: the tail recomputes the head from the input
    if half and not bool(torch.isfinite(cur).all()):
        raise HalfOverflow
    cur = cur.contiguous(memory_format=memory_format)
    saved: torch.Tensor | None = None
    for k, stage in enumerate(net.stages):
        s32 = _nth_stage(net32, k) if half else None
        if stage.save:
            saved = cur  # stages never write into their input map but in place (below)
        if _one_tile(cur, stage, rows, cols):  # a new map, as the plain forward makes
            cur = _whole_stage(stage, s32, cur, on_redo)
            if tick:
                tick(1)
        else:  # in place, band by band: the snapshot and the input must stay as they are
            if cur is saved or _aliases(cur, x):
                cur = cur.clone(memory_format=memory_format)
            _run_stage(stage, s32, cur, rows, cols, memory_format, tick, on_redo)
        if stage.residual is not None:
            assert saved is not None  # noqa: S101 - a residual needs a snapshot
            cur.mul_(stage.residual).add_(saved)  # cur is this stage's own map here
            saved = None
    return x, cur


def _aliases(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` shares memory with ``b`` (a head may return a view of its input)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _one_tile(cur: torch.Tensor, stage: Stage, rows: int, cols: int) -> bool:
    h, w = cur.shape[-2:]
    return max(rows, stage.radius, 1) >= h and cols >= w


def _whole_stage(stage: Stage, stage32: Callable[[], Stage] | None, cur: torch.Tensor,
                 on_redo: Callable[[], None] | None) -> torch.Tensor:
    """A stage whose one tile is the whole map: plain ``fn(map)``, redone in fp32 on NaN/Inf."""
    y = stage.fn(cur)
    if stage32 is not None and not bool(torch.isfinite(y).all()):
        if on_redo:
            on_redo()
        y = stage32().fn(cur.float()).to(cur.dtype)
        if not bool(torch.isfinite(y).all()):
            raise HalfOverflow
    return y


def _nth_stage(net32: Callable[[], StagedNet], k: int) -> Callable[[], Stage]:
    return lambda: net32().stages[k]


def _run_stage(stage: Stage, stage32: Callable[[], Stage] | None, cur: torch.Tensor,
               rows: int, cols: int, fmt: torch.memory_format,
               tick: Callable[[int], None] | None,
               on_redo: Callable[[], None] | None = None) -> None:
    """``cur = stage.fn(cur)`` in place, tile by tile in raster bands (see the module doc)."""
    _, c, h, w = cur.shape
    r = stage.radius
    pending: tuple[int, int, torch.Tensor] | None = None
    xs = splits(w, cols)
    for a, b in splits(h, max(rows, r, 1)):  # band height >= r: the rolling write is safe
        pa, pb = max(0, a - r), min(h, b + r)
        out = torch.empty((1, c, b - a, w), dtype=cur.dtype, device=cur.device)
        out = out.contiguous(memory_format=fmt)
        oks: list[torch.Tensor] = []
        boxes: list[tuple[int, int, int, int]] = []
        for x0, x1 in xs:
            qa, qb = max(0, x0 - r), min(w, x1 + r)
            inp = cur[:, :, pa:pb, qa:qb].contiguous(memory_format=fmt)
            y = stage.fn(inp)
            out[:, :, :, x0:x1] = y[:, :, a - pa : b - pa, x0 - qa : x1 - qa]
            del y, inp
            if stage32 is not None:
                oks.append(torch.isfinite(out[:, :, :, x0:x1]).all())
                boxes.append((qa, qb, x0, x1))
        if oks:  # one host synchronisation per band
            flags = torch.stack(oks).cpu().tolist()
            for ok, (qa, qb, x0, x1) in zip(flags, boxes, strict=True):
                if ok:
                    continue
                assert stage32 is not None  # noqa: S101 - oks only in half precision
                if on_redo:
                    on_redo()
                inp32 = cur[:, :, pa:pb, qa:qb].float().contiguous(memory_format=fmt)
                y = stage32().fn(inp32)[:, :, a - pa : b - pa, x0 - qa : x1 - qa].to(cur.dtype)
                if not bool(torch.isfinite(y).all()):
                    raise HalfOverflow
                out[:, :, :, x0:x1] = y
        if pending is not None:  # the previous band is no longer anyone's context
            pa_, pb_, band = pending
            cur[:, :, pa_:pb_] = band
        pending = (a, b, out)
        if tick:
            tick(len(xs))
    if pending is not None:
        pa_, pb_, band = pending
        cur[:, :, pa_:pb_] = band
