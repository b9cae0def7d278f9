"""The inference engine: measured context on trained weights, band streaming, bounded memory,
the folder pipeline and the GPU benchmark's dry run."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.errors import UsageError
from sr_cli.infer.context import measure_context
from sr_cli.infer.engine import InferenceOptions, Upscaler, min_tile_for_overhead
from sr_cli.infer.pipeline import JobsSpec, parse_jobs, prefetched, run_pipeline
from sr_cli.io import images, png16
from sr_cli.io.images import from_tensor, to_tensor

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RRDB = ROOT / "models" / "esrgan-psnr-x4.safetensors"


def _meta(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {})


def _tiny_srvgg(scale: int = 2) -> zoo.LoadedModel:
    torch.manual_seed(3)
    net, desc = build("srvgg", num_feat=8, num_conv=3, upscale=scale)
    return zoo.LoadedModel("tiny", net.eval(), desc)


# ---------------------------------------------------------------- 1. context from the weights


@pytest.mark.skipif(not SHIPPED_RRDB.is_file(), reason="shipped model missing")
def test_shipped_rrdb_context_is_measured_and_cached():
    lm = zoo.load_model(str(SHIPPED_RRDB))
    assert not lm.desc.exact_context
    cached = int(_meta(SHIPPED_RRDB)["context"])
    assert lm.desc.context == cached
    assert measure_context(lm.net, lm.desc) == cached  # the probe is deterministic


@pytest.fixture(scope="module")
def rrdb_whole():
    from tests.conftest import synthetic_image

    lm = zoo.load_model(str(SHIPPED_RRDB))
    img = synthetic_image(100, 112)
    return lm, img, Upscaler(lm, InferenceOptions(device="cpu", tile=0)).upscale_array(img)


@pytest.mark.skipif(not SHIPPED_RRDB.is_file(), reason="shipped model missing")
@pytest.mark.parametrize("tile", [32, 64, 96])
def test_trained_rrdb_tiles_within_one_level(tile, rrdb_whole):
    """Trained RRDBNet (6 blocks, 32 features): tiled output within 1 level of untiled at
    the measured context, on a photo-like image large enough for several tiles."""
    lm, img, whole = rrdb_whole
    tiled = Upscaler(lm, InferenceOptions(device="cpu", tile=tile)).upscale_array(img)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 1, (tile, diff.max())


X4PLUS = os.environ.get("SR_X4PLUS", "")


@pytest.mark.skipif(not X4PLUS, reason="opt-in: set SR_X4PLUS to a converted RealESRGAN x4plus "
                    "(third-party weights, never shipped); measures its context (minutes)")
def test_x4plus_tile_border_on_a_photo_within_half_a_level(shared_dir):
    """Official RRDBNet-23 weights on a real photo (Set14 baboon, whose fur carries influence
    furthest): one tile border at the measured context changes the output by under half a
    level, so a tile corner (two borders) stays within 1 level after rounding."""
    from sr_cli.infer.context import _profile

    lm = zoo.load_model(X4PLUS)
    ctx = Upscaler(lm, InferenceOptions(device="cpu")).context  # measured from the weights
    px = images.read_image(shared_dir / "data/Set14/LR_bicubic/X2/baboonx2.png").pixels
    r, w = 16, ctx + 24
    y0, x0 = (px.shape[0] - 40) // 2, (px.shape[1] - w) // 2
    strip = torch.from_numpy(np.ascontiguousarray(px[y0 : y0 + 40, x0 : x0 + w, :3]))
    with torch.no_grad():
        prof = _profile(lm.net.float().eval(), strip.permute(2, 0, 1)[None].float() / 255, r,
                        lm.desc.scale)
    assert float(prof[ctx:].max()) * 255 <= 0.5, (ctx, (prof * 255).tolist())


def test_save_model_writes_the_measured_context(tmp_path):
    torch.manual_seed(0)
    net, desc = build("rrdbnet", num_block=3, num_feat=8, num_grow_ch=4, scale=4)
    assert not desc.exact_context
    path = tmp_path / "r.safetensors"
    zoo.save_model(path, net, desc, {"context": "999"})  # a copied value is not trusted
    ctx = int(_meta(path)["context"])
    assert ctx == measure_context(net, desc) and ctx != 999
    assert zoo.load_model(str(path)).desc.context == ctx
    # exact-context architectures do not get the key
    net2, desc2 = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    zoo.save_model(tmp_path / "v.safetensors", net2, desc2)
    assert "context" not in _meta(tmp_path / "v.safetensors")


def test_probe_finds_a_known_radius():
    """A network whose output depends on pixels exactly r away: the probe sees r."""

    class Shift(torch.nn.Module):
        def __init__(self, r: int) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.r = r

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            k = 2 * self.r + 1
            return torch.nn.functional.avg_pool2d(x, k, 1, self.r, count_include_pad=True)

    _net, desc = build("rrdbnet", num_block=1, num_feat=8, num_grow_ch=4, scale=4)
    import dataclasses

    desc1 = dataclasses.replace(desc, scale=1, size_multiple=1)
    for r in (3, 7):
        ctx = measure_context(Shift(r), desc1, theoretical=64)
        assert r <= ctx <= r * 1.25 + 1, (r, ctx)


def test_auto_tile_keeps_overhead_bounded():
    assert min_tile_for_overhead(10) >= 2 * 10 / (1.15**0.5 - 1)
    t = min_tile_for_overhead(18)
    assert ((t + 36) / t) ** 2 <= 1.15 + 1e-9


# ---------------------------------------------------------------- 2. band streaming


@pytest.mark.parametrize("tile", [0, 8, 13])
def test_stream_equals_whole_image_bit_for_bit(tile, make_image):
    """Exact-context network: banded, tiled output == the untiled float path rounded."""
    lm = _tiny_srvgg(2)
    img = make_image(37, 45)
    with torch.no_grad():
        ref = from_tensor(lm.net(to_tensor(img)).clamp(0, 1))
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=tile))
    st = up.stream(img)
    bands = list(st)
    assert (len(bands) > 1) == (tile != 0)
    assert np.array_equal(np.concatenate(bands), ref)


@pytest.mark.parametrize("alpha", ["model", "bicubic"])
@pytest.mark.parametrize("scale", [None, 3.0, 1.5])
def test_stream_alpha_gray_resize_match_tensor_path(alpha, scale, make_image):
    lm = _tiny_srvgg(2)
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=9, alpha=alpha))
    rgba = make_image(30, 34, 4)
    rgba[:5, :7, 3] = 0
    gray = make_image(30, 34, 1)
    for img in (rgba, gray):
        got = up.upscale_array(img, scale)
        ref = from_tensor(up.upscale_tensor(to_tensor(img), scale))
        assert got.shape == ref.shape
        # band-wise resize sums the same taps in another order: at most 1 level
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= (0 if scale is None else 1)


def test_read_only_arrays_are_upscaled_without_warnings(make_image):
    """Decoders may hand over read-only arrays (RGBA with transparent pixels, float input):
    torch's non-writable-array warning must not reach the user."""
    import warnings

    up = Upscaler(_tiny_srvgg(2), InferenceOptions(device="cpu", tile=0))
    rgba = make_image(20, 18, 4)
    rgba[:4, :4, 3] = 0
    for img in (rgba, rgba[:, :, :3].astype(np.float32) / 255):
        img.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = up.upscale_array(img)
        assert out.shape[:2] == (40, 36)


def test_baseline_band_resize_matches_imresize(make_image):
    img = make_image(41, 29, 4)
    for name in ("bicubic", "nearest", "lanczos"):
        for s in (2.5, 0.4):
            up = Upscaler(zoo.load_model(name, scale=s), InferenceOptions(device="cpu"))
            got = up.upscale_array(img, s)
            ref = from_tensor(up.upscale_tensor(to_tensor(img), s))
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, (name, s)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_streamed_file_equals_array(tmp_path, ext, dtype, make_image):
    lm = _tiny_srvgg(2)
    img = make_image(33, 26, 4)
    if dtype == np.uint16:
        img = img.astype(np.uint16) * 257 + 3
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=8))
    ref = up.upscale_array(img)
    out = tmp_path / f"o{ext}"
    meta = images.Image(img[:0, :0], icc=b"\x00" * 16, info={"dpi": (300.0, 300.0)})
    images.write_image_stream(out, up.stream(img), meta, fmt=ext[1:])
    back = images.read_image(out)
    assert back.pixels.dtype == dtype
    assert np.array_equal(back.pixels, ref)
    assert back.icc == b"\x00" * 16
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_png_stream_encoder_matches_whole_encoder():
    rng = np.random.default_rng(0)
    a = (rng.random((50, 17, 3)) * 255).astype(np.uint8)
    chunks: list[bytes] = []
    enc = png16.StreamEncoder(chunks.append, 50, 17, 3, np.uint8)
    for y in (0, 7, 8, 30):
        enc.write_rows(a[y : {0: 7, 7: 8, 8: 30, 30: 50}[y]])
    enc.close()
    assert np.array_equal(png16.decode(b"".join(chunks)).pixels, a)
    with pytest.raises(png16.PNGError):
        png16.StreamEncoder(chunks.append, 5, 5, 3, np.uint8).close()


def test_tiff_stream_any_band_heights(tmp_path):
    """Bands of any height (shorter and longer than the 64-row TIFF tiles) give the image."""
    rng = np.random.default_rng(1)
    for k, hs in enumerate(([5, 200, 3, 70, 1, 64, 128], [64, 64], [300], [63, 1, 65])):
        a = rng.integers(0, 65535, (sum(hs), 530, 2), dtype=np.uint16)
        edges = np.cumsum([0, *hs])
        bands = (a[y0:y1].copy() for y0, y1 in zip(edges[:-1], edges[1:], strict=True))
        out = tmp_path / f"t{k}.tif"
        images.write_image_stream(out, images.PixelStream(a.shape[0], 530, 2, a.dtype, bands),
                                  images.Image(a[:0, :0]), fmt="tiff")
        assert np.array_equal(images.read_image(out).pixels, a), hs


MEMORY_SCRIPT = """
import resource, sys, numpy as np, torch
from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.infer.device import limit_heap_fragmentation
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.io import images
limit_heap_fragmentation()  # as sr upscale does
torch.manual_seed(0)
net, desc = build("srvgg", num_feat=8, num_conv=3, upscale=4)
up = Upscaler(zoo.LoadedModel("m", net.eval(), desc), InferenceOptions(device="cpu", tile=100))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = peak()
for n in (200, 900):  # the same width, 4.5x the height
    img = np.random.default_rng(0).integers(0, 256, (n, 900, 3), dtype=np.uint8)
    images.write_image_stream(sys.argv[1], up.stream(img), images.Image(img[:0, :0]),
                              fmt=sys.argv[2])
    print(peak() - base)
"""


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_streaming_memory_is_bounded_by_bands_not_output(tmp_path, fmt):
    """Upscaling x4 in 100 px tiles to PNG / TIFF, first 900x200 then 900x900 (a 3600x3600
    output: 39 MB as uint8, 155 MB as float32, which the old path held several times): 4.5x
    the output height adds almost nothing to the peak (memory is O(bands x width),
    independent of the height), and the whole peak stays under the float32 output alone."""
    out = tmp_path / f"big.{fmt}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(out), fmt], env=env,
                         capture_output=True, text=True, check=True)
    small, large = (int(v) for v in res.stdout.split()[-2:])
    float_output = 3600 * 3600 * 3 * 4
    assert large < float_output, (small, large, float_output)
    assert large - small < float_output / 8, (small, large, float_output)
    assert images.read_image(out).pixels.shape == (3600, 3600, 3)


# ---------------------------------------------------------------- 3. pipeline / GPU logic


def test_parse_jobs():
    assert parse_jobs(None) == JobsSpec()
    assert parse_jobs("2:3:4") == JobsSpec(2, 3, 4)
    assert parse_jobs("3") == JobsSpec(1, 3, 2)
    for bad in ("a", "1:2", "0:1:1", "1:1:1:1"):
        with pytest.raises(UsageError):
            parse_jobs(bad)


def test_prefetched_overlaps_keeps_order_and_bounds_the_lead():
    """prefetched: items in order, made on another thread while the consumer works on the
    previous one, and never more than depth + 1 beyond the one the consumer holds (one in
    the queue, one made and waiting to be queued)."""
    made: list[int] = []
    threads: set[str] = set()

    def producer():
        for i in range(6):
            threads.add(threading.current_thread().name)
            made.append(i)
            yield i

    got, leads = [], []
    for v in prefetched(producer(), 1):
        time.sleep(0.02)  # the consumer's work (an encoder)
        leads.append(len(made) - len(got))
        got.append(v)
    assert got == list(range(6))
    assert threads == {"sr-prefetch"}
    assert max(leads) == 3  # the held one + depth + 1: it worked ahead, and no further


def test_prefetched_raises_the_producers_error_and_stops_it_when_the_consumer_stops():
    def failing():
        yield 1
        raise ValueError("net failed")

    it = prefetched(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="net failed"):
        next(it)

    closed = threading.Event()
    count = [0]

    def endless():
        try:
            while True:
                count[0] += 1
                yield count[0]
        finally:
            closed.set()  # the generator is closed on the producer thread, before the join

    gen = prefetched(endless(), 1)
    assert next(gen) == 1
    gen.close()  # the consumer stops early (an error or an interrupt in the writer)
    assert closed.is_set()
    assert count[0] <= 3
    assert not any(t.name == "sr-prefetch" for t in threading.enumerate())


def test_pipeline_overlaps_stages_and_isolates_errors():
    items = list(range(8))
    active = {"load": 0, "save": 0}
    peak = {"load": 0, "save": 0}
    lock = threading.Lock()

    def enter(k: str) -> None:
        with lock:
            active[k] += 1
            peak[k] = max(peak[k], active[k])

    def leave(k: str) -> None:
        with lock:
            active[k] -= 1

    def load(i: int) -> int:
        enter("load")
        time.sleep(0.01)
        leave("load")
        if i == 3:
            raise ValueError("bad input 3")
        return i * 10

    def process(i: int, v: int):
        if i == 5:
            raise RuntimeError("net failed 5")
        return None, iter([v, v + 1, v + 2])

    def save(i: int, v: int, _h, bands):
        enter("save")
        got = list(bands)
        time.sleep(0.02)
        leave("save")
        if i == 6:
            raise OSError("disk 6")
        return got

    out = {i: (r, e) for i, r, e in run_pipeline(items, load, process, save, JobsSpec(2, 1, 3))}
    assert sorted(out) == items
    for i in items:
        r, e = out[i]
        if i in (3, 5, 6):
            assert e is not None and str(i) in str(e)
        else:
            assert e is None and r == [i * 10, i * 10 + 1, i * 10 + 2]
    assert peak["save"] >= 2 and peak["load"] >= 2  # stages ran concurrently


def test_pipeline_band_error_reaches_the_saver():
    def bands():
        yield 1
        raise RuntimeError("mid-image")

    out = list(run_pipeline([0], lambda i: i, lambda i, v: (None, bands()),
                            lambda i, v, h, b: list(b), JobsSpec(1, 1, 1)))
    assert len(out) == 1 and "mid-image" in str(out[0][2])


def test_folder_with_jobs_equals_single_images(runner, tmp_path, write_png, make_image):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        write_png(f"in/p{i}.png", make_image(20 + i, 18, 3 if i % 2 else 4, seed=i))
    (d / "broken.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["upscale", str(d), str(tmp_path / "out"), "-m", "bicubic", "-s",
                            "2", "-j", "2:1:2", "--tile", "8"])
    assert r.exit_code == 3, r.stderr  # the broken file fails alone
    for i in range(4):
        single = tmp_path / f"s{i}.png"
        r1 = runner.invoke(app, ["upscale", str(d / f"p{i}.png"), str(single), "-m", "bicubic",
                                 "-s", "2"])
        assert r1.exit_code == 0, r1.stderr
        a = images.read_image(tmp_path / "out" / f"p{i}.png").pixels
        assert np.array_equal(a, images.read_image(single).pixels)
    assert not list((tmp_path / "out").glob("broken*"))


def test_half_precision_nan_tile_redone_in_fp32_one_sync_per_band(make_image):
    lm = _tiny_srvgg(2)
    net = lm.net

    class NaNInHalf(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            y = self.inner(t)
            return y * float("nan") if t.dtype != torch.float32 else y

    img = make_image(20, 22)
    ref = Upscaler(lm, InferenceOptions(device="cpu", tile=8)).upscale_array(img)
    warnings: list[str] = []
    m2 = zoo.LoadedModel("n", NaNInHalf(), lm.desc)
    up = Upscaler(m2, InferenceOptions(device="cpu", precision="bf16", tile=8),
                  on_warning=warnings.append)
    syncs = []
    orig_cat = torch.cat

    def counting_cat(ts, *a, **k):
        out = orig_cat(ts, *a, **k)
        if out.dtype == torch.bool:
            syncs.append(1)
        return out

    torch.cat = counting_cat  # type: ignore[assignment]
    try:
        out = up.upscale_array(img)
    finally:
        torch.cat = orig_cat  # type: ignore[assignment]
    assert np.array_equal(out, ref)
    assert len(warnings) == 1 and "fp32" in warnings[0]
    assert len(syncs) == 3  # one NaN/Inf check per band (3 bands of 8, 8, 4 rows)


def test_gpu_benchmark_dry_run():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu  # type: ignore[import-not-found]

        gpu.main(["--dry"])
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


# ---------------------------------------------------------------- 4. small things


def test_terminal_stdout_refused_before_loading(runner, tmp_path, write_png, make_image,
                                                monkeypatch):
    src = write_png("a.png", make_image(8, 8))
    called = []
    monkeypatch.setattr(images, "stdout_is_terminal", lambda: True)
    monkeypatch.setattr(zoo, "load_model", lambda *a, **k: called.append(1))
    r = runner.invoke(app, ["upscale", str(src), "-m", "bicubic"])
    assert r.exit_code == 2 and "terminal" in r.stderr
    assert not called


def test_threads_option(runner, tmp_path, write_png, make_image):
    src = write_png("a.png", make_image(8, 8))
    before = torch.get_num_threads()
    try:
        r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-m", "bicubic",
                                "--threads", "1"])
        assert r.exit_code == 0, r.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_progress_counts_tiles_of_one_image(make_image):
    lm = _tiny_srvgg(2)
    seen: list[tuple[int, int]] = []
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=10, tile_batch=1))
    up.upscale_array(make_image(30, 30), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 9) for i in range(1, 10)]


def test_precision_auto():
    """--precision auto: fp16 on CUDA where the network allows half, else fp32 (CPU: fp32,
    no fp16)."""
    from sr_cli.infer.device import resolve_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_precision("auto", cuda, True) == "fp16"
    assert resolve_precision("auto", cuda, False) == "fp32"
    assert resolve_precision("auto", cpu, True) == "fp32"
    with pytest.raises(UsageError):
        resolve_precision("fp16", cpu)
