"""Staged exact tiling (sr_cli/infer/staged.py): RRDBNet's trunk stage by stage with each
stage's exact radius, so tiled output equals untiled up to float rounding at any tile size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.infer import engine as engine_mod
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.infer.staged import (
    HalfOverflow,
    Stage,
    StagedNet,
    map_bytes_per_pixel,
    run_head_and_trunk,
)
from tests.conftest import synthetic_image

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RRDB = ROOT / "models" / "esrgan-psnr-x4.safetensors"
LAYOUTS = {"x4": {"scale": 4}, "x2": {"scale": 2}, "x1": {"scale": 1},
           "x8-old": {"scale": 8, "upsample_stages": 3},
           "x1-old": {"scale": 1, "upsample_stages": 0}}


def _tiny(layout: str = "x4", blocks: int = 2) -> zoo.LoadedModel:
    torch.manual_seed(1)
    net, desc = build("rrdbnet", num_block=blocks, num_feat=8, num_grow_ch=4, **LAYOUTS[layout])
    return zoo.LoadedModel("tiny", net.eval(), desc, metadata={"context": "16"})


@pytest.fixture(scope="module")
def shipped() -> zoo.LoadedModel:
    if not SHIPPED_RRDB.is_file():
        pytest.skip("shipped model missing")
    return zoo.load_model(str(SHIPPED_RRDB))


def _quantized(y: torch.Tensor) -> np.ndarray:
    return (y[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_staged_float_output_equals_untiled_network(layout):
    """Every RRDBNet layout, odd tile sizes down to below a stage's radius: the staged run
    equals one forward pass of the network to float rounding (1e-5)."""
    lm = _tiny(layout)
    x = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = lm.net(x).clamp(0, 1)
    for tile in (8, 20, 32, None):
        up = Upscaler(lm, InferenceOptions(device="cpu", tile=tile))
        assert up.staged_layout(36, 44, tile=tile) is not None
        y = up.run(x, tile=tile)
        assert float((y - ref).abs().max()) <= 1e-5, (layout, tile)


@pytest.mark.parametrize("tile", [32, 64, 96])
def test_shipped_rrdb_staged_tiles_equal_untiled(shipped, tile):
    """The trained esrgan-psnr-x4 (RRDBNet 6x32) on an odd-sized photo-like image: float
    output within 1e-5 of one forward pass, and the streamed 8-bit output identical to the
    untiled one in all but at most 0.1% of samples, none by more than 1 level."""
    img = synthetic_image(101, 123)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = shipped.net.float()(x).clamp(0, 1)
    up = Upscaler(shipped, InferenceOptions(device="cpu", tile=tile))
    assert float((up.run(x) - ref).abs().max()) <= 1e-5
    out = up.upscale_array(img)
    diff = np.abs(out.astype(int) - _quantized(ref).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("layout", ["x2", "x1"])
def test_streamed_bands_equal_whole_image_with_alpha_and_gray(layout):
    """Pixel-unshuffle layouts through the band-streaming path: RGBA (alpha through the
    network: two sets of maps) and gray images of odd sizes, tiled vs --tile 0."""
    lm = _tiny(layout)
    rgba = synthetic_image(51, 61, c=4, seed=2)  # odd: padded to the unshuffle multiple
    rgba[:, :, 3] = np.linspace(0, 255, 61).astype(np.uint8)[None, :]
    gray = synthetic_image(51, 61, c=1, seed=3)[:, :, 0]
    for img in (rgba, gray):
        whole = Upscaler(lm, InferenceOptions(device="cpu", tile=0)).upscale_array(img)
        tiled = Upscaler(lm, InferenceOptions(device="cpu", tile=24)).upscale_array(img)
        diff = np.abs(whole.astype(int) - tiled.astype(int))
        assert whole.shape == tiled.shape and diff.max() <= 1 and (diff > 0).mean() <= 1e-3


def test_auto_layout_and_progress_inside_one_image():
    """Auto: the whole image's maps, full-width stage bands, one tail tile: the overhead is a
    few percent and progress still advances inside the image (stage tiles + tail tiles)."""
    lm = _tiny("x4", blocks=3)
    up = Upscaler(lm, InferenceOptions(device="cpu"))
    layout = up.staged_layout(64, 80)
    assert layout is not None and len(layout.strips) == 1 and layout.tail_tile == 0
    assert layout.cols == 80 and layout.overhead() == 0  # one band covers this small image
    big = up.staged_layout(2000, 3000)
    assert big is not None and big.overhead() < 0.15, big
    calls: list[tuple[int, int]] = []
    up.upscale_array(synthetic_image(64, 80), progress=lambda d, t: calls.append((d, t)))
    total = layout.work()
    assert total == 9 + 1  # 3 RRDBs x 3 dense blocks, one tile each, + the tail
    assert [d for d, _ in calls] == list(range(1, total + 1)) and {t for _, t in calls} == {total}


def test_tta_compile_and_tile_zero_keep_the_one_pass_path():
    lm = _tiny()
    assert Upscaler(lm, InferenceOptions(device="cpu", tta=True)).staged_layout(64, 64) is None
    assert not Upscaler(lm, InferenceOptions(device="cpu", compile=True)).stages_exactly()
    assert Upscaler(lm, InferenceOptions(device="cpu", tile=0)).staged_layout(64, 64) is None
    assert Upscaler(lm, InferenceOptions(device="cpu", tile=32)).stages_exactly()
    srvgg, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    plain = zoo.LoadedModel("v", srvgg.eval(), desc)
    assert Upscaler(plain, InferenceOptions(device="cpu", tile=32)).staged_layout(64, 64) is None


def test_strips_when_the_maps_do_not_fit(shipped, monkeypatch):
    """A tiny memory budget: full-width strips with the measured context, each run staged;
    the output stays within 1 level of untiled (the context's guarantee)."""
    img = synthetic_image(120, 72)
    whole = Upscaler(shipped, InferenceOptions(device="cpu", tile=0)).upscale_array(img)
    ctx = int(shipped.desc.context)
    # maps of ~(2*ctx + 24) feature rows fit: a few strips over 120 rows
    rows = 2 * ctx + 24
    monkeypatch.setattr(engine_mod, "LEAN_BUDGET_CPU", 2 * 1024**2)
    snet = shipped.net.staged(engine_mod.STAGED_PER)
    assert snet.maps == 2 and snet.in_channels == 3  # running map + snapshot; the input
    need = 2 * 1024**2 + map_bytes_per_pixel(snet, 4) * 72 * rows
    monkeypatch.setattr(engine_mod, "free_memory_bytes", lambda dev: need / 0.5)
    up = Upscaler(shipped, InferenceOptions(device="cpu"))
    layout = up.staged_layout(120, 72)
    assert layout is not None and len(layout.strips) >= 3, layout
    assert all(p1 - p0 <= rows for _, _, p0, p1 in layout.strips)
    diff = np.abs(up.upscale_array(img).astype(int) - whole.astype(int))
    assert diff.max() <= 1, diff.max()


def _poisoned(snet: StagedNet, k: int, fn) -> StagedNet:
    stages = list(snet.stages)
    stages[k] = dataclasses.replace(stages[k], fn=fn)
    return dataclasses.replace(snet, stages=stages)


def test_half_precision_nan_stage_tiles_are_redone_in_fp32():
    """bf16 (CPU): a stage that yields NaN on every tile is redone tile by tile in fp32;
    the output is finite, warned about once, and as close to fp32 as plain bf16 is."""
    lm = _tiny("x4", blocks=2)
    img = synthetic_image(40, 48)
    f32 = Upscaler(lm, InferenceOptions(device="cpu", tile=16)).upscale_array(img)
    plain = Upscaler(lm, InferenceOptions(device="cpu", tile=16, precision="bf16"))
    ref16 = plain.upscale_array(img)
    warnings: list[str] = []
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=16, precision="bf16"),
                  on_warning=warnings.append)
    snet = up._staged("bf16")
    up._staged_nets["bf16"] = _poisoned(snet, 2, lambda x: torch.full_like(x, float("nan")))
    out = up.upscale_array(img)
    assert len(warnings) == 1 and "fp32" in warnings[0]
    base = np.abs(ref16.astype(int) - f32.astype(int)).max()
    assert np.abs(out.astype(int) - f32.astype(int)).max() <= max(2, base)


def test_half_overflow_recomputes_the_region_in_fp32():
    """When even the fp32 redo of a tile does not fit the half-precision map, the region
    is computed again with float32 maps (here: the fp32 twin fails once, then works)."""
    lm = _tiny("x4", blocks=2)
    img = synthetic_image(40, 48)
    f32 = Upscaler(lm, InferenceOptions(device="cpu", tile=16)).upscale_array(img)
    warnings: list[str] = []
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=16, precision="bf16"),
                  on_warning=warnings.append)
    up._staged_nets["bf16"] = _poisoned(up._staged("bf16"), 1,
                                        lambda x: torch.full_like(x, float("inf")))
    real = up._staged("fp32").stages[1].fn
    fails = [1]

    def flaky(x: torch.Tensor) -> torch.Tensor:
        if fails:
            fails.pop()
            return torch.full_like(x, float("inf"))
        return real(x)

    up._staged_nets["fp32"] = _poisoned(up._staged("fp32"), 1, flaky)
    out = up.upscale_array(img)
    assert len(warnings) == 2 and "recomputed the image in fp32" in warnings[1], warnings
    assert np.abs(out.astype(int) - f32.astype(int)).max() <= 2  # bf16 tail on fp32 maps


def test_run_head_and_trunk_raises_half_overflow_in_fp16():
    """The stage runner itself: an fp16 stage tile whose fp32 redo is out of fp16's range."""
    def stage(x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))

    def stage32(x: torch.Tensor) -> torch.Tensor:
        return x * 1e6  # finite in fp32, inf in fp16

    def net(fn) -> StagedNet:
        return StagedNet(stride=1, channels=2, head=lambda x: x[:, :2], stages=[Stage(fn, 1)],
                         tail=lambda a, b: a + b, tail_radius=0, work_channels=4)

    x = torch.rand(1, 3, 12, 10) + 1
    with pytest.raises(HalfOverflow):
        run_head_and_trunk(net(stage), lambda: net(stage32), x, dtype=torch.float16,
                           rows=4, cols=4)
    f0, tr = run_head_and_trunk(net(stage), lambda: net(lambda y: y * 2), x,
                                dtype=torch.float16, rows=4, cols=4)
    assert torch.equal(tr, (x[:, :2] * 2).half()) and torch.equal(f0, x.half())
