"""A stateless tiler: plan overlapping tiles, run a function on them, stitch the result.

Each tile has a *core* (the part of the output it owns) and a *padded* input box: the core
grown by ``context`` pixels on every side and clamped to the image. The network sees real image
pixels as context and the same zero padding as an untiled run at the true image borders, so a
``context`` at least as large as the network's receptive radius gives exactly the untiled output
(and a smaller one, within floating-point noise on trained weights whose influence decays). No
blending is needed and no seams can appear: every output pixel comes from exactly one tile.

Nothing here keeps state between calls, so one plan may be used from many threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sr_cli.errors import UsageError


@dataclass(frozen=True)
class Tile:
    """Core box ``[y0, y1) x [x0, x1)`` and padded input box ``[py0, py1) x [px0, px1)``."""

    y0: int
    y1: int
    x0: int
    x1: int
    py0: int
    py1: int
    px0: int
    px1: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return (self.py1 - self.py0, self.px1 - self.px0)


def splits(length: int, tile: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into near-equal chunks of at most ``tile`` (>= 1), on
    ``multiple``s."""
    n = max(1, math.ceil(length / max(1, tile)))
    size = max(1, math.ceil(length / n / multiple) * multiple)
    edges = list(range(0, length, size)) + [length]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]


def plan_tiles(
    height: int, width: int, tile: int, context: int, multiple: int = 1
) -> list[Tile]:
    """Plan tiles covering a ``height`` x ``width`` input.

    Args:
        height, width: input size; must be multiples of ``multiple``.
        tile: largest core size in pixels; ``0`` (or a size covering the image) = one tile.
        context: extra input pixels on each side of a core (overlap), >= 0.
        multiple: all boxes start and end on multiples of this (pixel-unshuffle networks).

    Returns:
        Tiles in raster order; their cores partition the image.
    """
    if height <= 0 or width <= 0:
        raise UsageError("cannot tile an empty image")
    if tile < 0 or context < 0 or multiple < 1:
        raise UsageError("--tile and context must be >= 0")
    if height % multiple or width % multiple:
        raise UsageError(f"input size must be a multiple of {multiple} before tiling")
    if tile == 0 or (tile >= height and tile >= width):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    tile = max(multiple, (tile // multiple) * multiple)
    ctx = math.ceil(context / multiple) * multiple
    tiles = []
    for y0, y1 in splits(height, tile, multiple):
        for x0, x1 in splits(width, tile, multiple):
            tiles.append(
                Tile(
                    y0, y1, x0, x1,
                    max(0, y0 - ctx), min(height, y1 + ctx),
                    max(0, x0 - ctx), min(width, x1 + ctx),
                )
            )
    return tiles


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    tiles: Sequence[Tile],
    *,
    batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Apply ``fn`` tile by tile and stitch.

    Args:
        fn: maps ``(N, C, h, w)`` to ``(N, C_out, h*scale, w*scale)``.
        x: input ``(B, C, H, W)``.
        scale: integer upscaling factor of ``fn``.
        tiles: from :func:`plan_tiles` for ``(H, W)``.
        batch: how many tiles of equal padded shape go through ``fn`` together.
        progress: ``progress(done_tiles, total_tiles)``.

    Returns:
        ``(B, C_out, H*scale, W*scale)`` on the device/dtype ``fn`` returns.
    """
    b = x.shape[0]
    if len(tiles) == 1 and tiles[0].padded_shape == tuple(x.shape[-2:]):
        whole = fn(x)
        if progress:
            progress(1, 1)
        return whole
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault(t.padded_shape, []).append(t)
    out: torch.Tensor | None = None
    done = 0
    s = scale
    for group in groups.values():
        for i in range(0, len(group), max(1, batch)):
            chunk = group[i : i + max(1, batch)]
            inp = torch.cat([x[:, :, t.py0 : t.py1, t.px0 : t.px1] for t in chunk], dim=0)
            res = fn(inp)
            if out is None:
                out = res.new_empty((b, res.shape[1], x.shape[2] * s, x.shape[3] * s))
            for k, t in enumerate(chunk):
                piece = res[k * b : (k + 1) * b]
                oy, ox = (t.y0 - t.py0) * s, (t.x0 - t.px0) * s
                out[:, :, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] = piece[
                    :, :, oy : oy + (t.y1 - t.y0) * s, ox : ox + (t.x1 - t.x0) * s
                ]
            done += len(chunk)
            if progress:
                progress(done, len(tiles))
    assert out is not None  # noqa: S101 - tiles is non-empty by construction
    return out
