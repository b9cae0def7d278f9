"""The fast paths of the degradation pipeline equal their plain definitions.

Batched noise must be bit-identical to the per-image functions (same draws, same float ops);
the banded USM blur, the grouped direct-conv blur and the in-place block DCT of the torch JPEG
must equal straightforward reference implementations up to float rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sr_cli.degrade.config import RealESRGANConfig
from sr_cli.degrade.jpeg import _RGB2YCC, _YCC2RGB, jpeg_torch, quality_tables
from sr_cli.degrade.kernels import (
    circular_lowpass_kernel,
    filter2d,
    gaussian_kernel,
    kernel_from_params,
    sample_blur,
)
from sr_cli.degrade.noise import gaussian_noise, noise_batch, poisson_levels, poisson_noise
from sr_cli.degrade.pipeline import (
    _blur_each,
    _blur_groups,
    apply_realesrgan,
    realesrgan_batch,
)
from sr_cli.degrade.sharpen import _sep_blur, gaussian_taps, reflect_filter_matrix, usm_sharp
from sr_cli.errors import UsageError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_batch_bit_identical_to_per_image_functions(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    x = torch.rand(6, 3, 37, 41, dtype=dtype)
    x[2] = 0.5  # a single level: v = 1
    x[4] = torch.round(x[4] * 12) / 255  # few levels
    kinds = ["gaussian", "poisson", "poisson", "gaussian", "poisson", "gaussian"]
    grays = [False, True, False, True, True, False]
    amounts = [13.0, 2.5, 0.3, 7.7, 1.1, 25.0]
    seeds = [11, 22, 33, 44, 55, 66]
    got = noise_batch(x, kinds, amounts, grays, [torch.Generator().manual_seed(s) for s in seeds])
    assert got.dtype == dtype and got.shape == x.shape
    for i in range(6):
        fn = gaussian_noise if kinds[i] == "gaussian" else poisson_noise
        ref = fn(x[i : i + 1], amounts[i], torch.Generator().manual_seed(seeds[i]), gray=grays[i])
        assert torch.equal(got[i], ref[0]), i
    # gray noise is the same field on every channel
    d = got[1] - x[1]
    assert torch.equal(d[0], d[2]) or bool(((got[1] == 0) | (got[1] == 1)).any())
    with pytest.raises(UsageError):
        noise_batch(x[:1], ["speckle"], [1.0], [False], [torch.Generator()])
    with pytest.raises(UsageError):
        noise_batch(x[:2], ["gaussian"], [1.0], [False], [torch.Generator()])


def test_poisson_levels_counts_unique_values() -> None:
    q = torch.zeros(4, 3, 10, 10)
    q[1, 0, 0, 0] = 255  # 2 values -> 2
    q[2] = torch.arange(300).view(3, 10, 10) % 5  # 5 values -> 8
    q[3] = torch.arange(300).view(3, 10, 10) % 256  # 256 values -> 256
    v = poisson_levels(q)
    assert v.tolist() == [1.0, 2.0, 8.0, 256.0]
    for i in range(4):
        n = len(torch.unique(q[i]))
        assert v[i] == (2.0 ** math.ceil(math.log2(n)) if n > 1 else 1.0)


def test_banded_usm_blur_equals_dense_reflect_product() -> None:
    taps = gaussian_taps(51)
    for h, w in ((30, 200), (130, 77), (64, 64)):
        x = torch.rand(2, 3, h, w, dtype=torch.float64)
        dense = reflect_filter_matrix(h, taps) @ x @ reflect_filter_matrix(w, taps).t()
        torch.testing.assert_close(_sep_blur(x, taps), dense, atol=1e-13, rtol=0)
    # usm_sharp = the formula of its docstring, computed plainly
    x = torch.rand(2, 3, 60, 70, dtype=torch.float64)
    mh, mw = reflect_filter_matrix(60, taps), reflect_filter_matrix(70, taps)
    blur = mh @ x @ mw.t()
    r = x - blur
    soft = mh @ (r.abs() * 255 > 10).to(x.dtype) @ mw.t()
    k = torch.clamp(x + 0.5 * r, 0, 1)
    torch.testing.assert_close(usm_sharp(x), soft * k + (1 - soft) * x, atol=1e-12, rtol=0)


def _conv_reference(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    p = ks.shape[-1] // 2
    xp = F.pad(x, (p, p, p, p), mode="reflect")
    return torch.cat([F.conv2d(xp[i].unsqueeze(1), ks[i][None, None]).transpose(0, 1)
                      for i in range(x.shape[0])])


def test_filter2d_fft_path_and_tiny_taps() -> None:
    x = torch.rand(2, 3, 40, 45, dtype=torch.float64)
    ks = torch.stack([gaussian_kernel(31, 4.0, 2.0, 0.3), circular_lowpass_kernel(0.9, 31)])
    torch.testing.assert_close(filter2d(x, ks), _conv_reference(x, ks), atol=1e-10, rtol=0)
    # a narrow Gaussian's tails underflow to float32 denormals; flushing them changes nothing
    narrow = gaussian_kernel(21, 0.25).unsqueeze(0)
    assert float(narrow[narrow > 0].min()) < 1e-30
    xf = torch.rand(1, 3, 50, 50)
    ref = _conv_reference(xf.double(), narrow).float()
    torch.testing.assert_close(filter2d(xf, narrow), ref, atol=1e-6, rtol=0)


def test_blur_groups_partition_and_grouped_blur_matches_per_image() -> None:
    sizes = [9, 21, 7, 21, 13, 15, 11, 21, 19, 7, 9, 17, 21, 13, 15, 11]
    groups = _blur_groups(sizes, 3, 400 * 400)
    assert sorted(i for g in groups for i in g) == list(range(16))
    assert len(groups) > 1  # mixing 7- and 21-tap kernels in one call would waste work
    assert _blur_groups([21], 3, 100) == [[0]]
    gen = torch.Generator().manual_seed(4)
    cfg = RealESRGANConfig().stage2.blur  # prob 0.8: some images are not blurred
    params = [sample_blur(cfg, gen) for _ in range(12)]
    assert any(not p["apply"] for p in params) and len({p.get("size") for p in params}) > 2
    x = torch.rand(12, 3, 48, 52)
    out = _blur_each(x, params)
    for i, p in enumerate(params):
        k = kernel_from_params(p)
        if k is None:
            assert torch.equal(out[i], x[i])
        else:
            torch.testing.assert_close(out[i : i + 1], filter2d(x[i : i + 1], k), atol=2e-6,
                                       rtol=0)


def _jpeg_reference(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Plain float64 JPEG model: blocks gathered explicitly, 2-D DCT per block (as documented)."""
    b, _, h, w = x.shape
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    qy, qc = quality_tables(q)
    img = x.clamp(0, 1) * 255
    ycc = torch.round(torch.einsum("ij,bjhw->bihw", torch.tensor(_RGB2YCC, dtype=x.dtype), img))
    c = torch.round(F.avg_pool2d(ycc[:, 1:], 2)) + 128

    def code(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        bb, hh, ww = p.shape
        blocks = (p - 128).view(bb, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4)
        coef = d @ blocks @ d.t()
        tt = t.view(bb, 1, 1, 8, 8)
        rec = d.t() @ (torch.round(coef / tt) * tt) @ d
        return torch.round(rec.permute(0, 1, 3, 2, 4).reshape(bb, hh, ww) + 128).clamp(0, 255)

    y = code(ycc[:, 0], qy)
    ch = torch.stack([code(c[:, 0], qc), code(c[:, 1], qc)], 1) - 128
    ch = F.interpolate(ch, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("ij,bjhw->bihw", torch.tensor(_YCC2RGB, dtype=x.dtype),
                       torch.cat([y[:, None], ch], 1))
    return rgb.clamp(0, 255) / 255


def test_torch_jpeg_equals_blockwise_reference() -> None:
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(3, 3, 66, 82, dtype=torch.float64), 3, 1, 1)
    x = F.pad(x, (0, 14, 0, 14), mode="replicate")  # 80 x 96: a multiple of 16
    q = torch.tensor([35.0, 62.5, 91.0], dtype=torch.float64)
    got, ref = jpeg_torch(x, q), _jpeg_reference(x, q)
    diff = (got - ref).abs() * 255
    # identical except where a float rounding tie of a coefficient flips (rare)
    assert float((diff > 1e-6).double().mean()) < 0.01, float((diff > 1e-6).double().mean())
    assert float(diff.mean()) < 0.02


def test_batched_pipeline_replays_bit_exactly_and_matches_single_images() -> None:
    torch.manual_seed(2)
    hr = F.avg_pool2d(torch.rand(6, 3, 96, 96), 3, 1, 1)
    cfg = RealESRGANConfig()
    for shared in (True, False):
        lr, hr_usm, recs = realesrgan_batch(hr, 4, cfg, torch.Generator().manual_seed(9),
                                            shared_resize=shared)
        lr2, hr_usm2 = apply_realesrgan(hr, recs, 4, cfg)
        assert torch.equal(lr, lr2) and torch.equal(hr_usm, hr_usm2)
        # an image alone (the CLI path) gives its batched result; exact on the machines tried,
        # but blur/JPEG/BLAS kernels may round differently elsewhere, hence the tolerance
        for i in range(6):
            one, _ = apply_realesrgan(hr[i : i + 1], [recs[i]], 4, cfg)
            assert one.shape == (1, 3, 24, 24)
            assert float(((one[0] - lr[i]).abs() * 255).mean()) < 0.5
