"""The stateless tiler: plans partition the image; tiled == untiled when context >= receptive
radius; thread safety; size multiples."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from sr_cli.errors import UsageError
from sr_cli.infer.tiling import plan_tiles, run_tiled


def _covered(tiles, h, w):
    cover = torch.zeros(h, w, dtype=torch.int32)
    for t in tiles:
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert t.py0 <= t.y0 < t.y1 <= t.py1
        assert t.px0 <= t.x0 < t.x1 <= t.px1
    return cover


@pytest.mark.parametrize("h,w,tile,ctx,m", [(37, 53, 16, 5, 1), (64, 64, 32, 8, 2),
                                            (40, 24, 8, 3, 4), (10, 10, 0, 4, 1),
                                            (10, 10, 100, 4, 1)])
def test_cores_partition_image(h, w, tile, ctx, m):
    tiles = plan_tiles(h, w, tile, ctx, m)
    assert (_covered(tiles, h, w) == 1).all()
    for t in tiles:
        for v in (t.y0, t.y1, t.x0, t.x1, t.py0, t.py1, t.px0, t.px1):
            assert v % m == 0 or v in (h, w)


def test_bad_plans():
    with pytest.raises(UsageError):
        plan_tiles(0, 5, 4, 1)
    with pytest.raises(UsageError):
        plan_tiles(6, 6, -1, 1)
    with pytest.raises(UsageError):
        plan_tiles(6, 5, 4, 1, multiple=2)


def _net(layers: int, scale: int) -> nn.Module:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(layers - 2):
        mods += [nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, padding=1)]
    mods += [nn.LeakyReLU(0.2), nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
             nn.PixelShuffle(scale)]
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("tile,batch", [(8, 1), (12, 3), (16, 4)])
def test_tiled_equals_untiled_with_full_context(tile, batch):
    net = _net(5, 2)  # receptive radius 5
    x = torch.rand(2, 3, 29, 35)
    with torch.no_grad():
        ref = net(x)
        out = run_tiled(net, x, 2, plan_tiles(29, 35, tile, 5), batch=batch)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_too_little_context_differs():
    """The check above can fail: with no overlap the seams show."""
    net = _net(5, 2)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        out = run_tiled(net, x, 2, plan_tiles(32, 32, 8, 0))
    assert (out - ref).abs().max() > 1e-3


def test_progress_and_threads():
    net = _net(3, 1)
    x = torch.rand(1, 3, 20, 20)
    tiles = plan_tiles(20, 20, 6, 3)
    seen = []
    with torch.no_grad():
        ref = net(x)
        run_tiled(net, x, 1, tiles, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(tiles), len(tiles))
    results: list[torch.Tensor] = []

    def work() -> None:
        with torch.no_grad():
            results.append(run_tiled(net, x, 1, tiles, batch=2))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        torch.testing.assert_close(r, ref, atol=1e-5, rtol=0)
