"""Degradation operators against closed forms: kernels, filtering, noise, JPEG, USM, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_cli.degrade.config import BlurConfig
from sr_cli.degrade.jpeg import jpeg_real, jpeg_torch, quality_tables
from sr_cli.degrade.kernels import (
    circular_lowpass_kernel,
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_from_params,
    plateau_kernel,
    sample_blur,
)
from sr_cli.degrade.noise import gaussian_noise, poisson_noise
from sr_cli.degrade.sharpen import gaussian_taps, usm_sharp
from sr_cli.errors import InputError, UsageError


def _moments(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[-1]
    ax = torch.arange(n, dtype=torch.float64) - n // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return torch.tensor([[float((k * xx * xx).sum()), float((k * xx * yy).sum())],
                         [float((k * xx * yy).sum()), float((k * yy * yy).sum())]],
                        dtype=torch.float64)


@pytest.mark.parametrize("size", [7, 13, 21])
def test_every_kernel_sums_to_one(size: int) -> None:
    ks = [
        gaussian_kernel(size, 1.3),
        gaussian_kernel(size, 2.5, 0.7, 1.1),
        generalized_gaussian_kernel(size, 1.5, 0.8, -0.4, beta=0.6),
        generalized_gaussian_kernel(size, 1.5, beta=3.5),
        plateau_kernel(size, 1.2, 2.0, 0.3, beta=1.7),
        plateau_kernel(size, 2.0, beta=1.0),
        circular_lowpass_kernel(math.pi / 4, size),
    ]
    for k in ks:
        assert k.shape == (size, size)
        assert abs(float(k.sum()) - 1.0) < 1e-12


def test_gaussian_covariance_from_second_moments() -> None:
    sx, sy, th = 2.0, 1.0, 0.5
    k = gaussian_kernel(41, sx, sy, th)
    c, s = math.cos(th), math.sin(th)
    r = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    sigma = r @ torch.diag(torch.tensor([sx * sx, sy * sy], dtype=torch.float64)) @ r.t()
    torch.testing.assert_close(_moments(k), sigma, atol=1e-6, rtol=1e-6)
    # mean at the centre, and isotropic variant = sigma^2 I
    torch.testing.assert_close(_moments(gaussian_kernel(41, 1.7)),
                               torch.eye(2, dtype=torch.float64) * 1.7**2, atol=1e-6, rtol=1e-6)


def test_generalized_gaussian_beta_one_is_gaussian_and_shapes_differ() -> None:
    g = gaussian_kernel(21, 2.0, 1.0, 0.3)
    torch.testing.assert_close(generalized_gaussian_kernel(21, 2.0, 1.0, 0.3, beta=1.0), g)
    heavy = generalized_gaussian_kernel(21, 2.0, beta=0.5)
    flat = generalized_gaussian_kernel(21, 2.0, beta=4.0)
    # smaller beta = heavier tails = larger second moment
    assert _moments(heavy)[0, 0] > _moments(gaussian_kernel(21, 2.0))[0, 0] > _moments(flat)[0, 0]


def test_sinc_cutoff_in_frequency_domain() -> None:
    wc = math.pi / 3
    k = circular_lowpass_kernel(wc, 21)
    n = 256
    spec = torch.fft.fft2(F.pad(k, (0, n - 21, 0, n - 21))).abs()
    f = torch.fft.fftfreq(n, dtype=torch.float64) * 2 * math.pi
    wy, wx = torch.meshgrid(f, f, indexing="ij")
    rad = torch.sqrt(wx * wx + wy * wy)
    assert float(spec[rad < 0.6 * wc].min()) > 0.85 and float(spec[rad < 0.6 * wc].max()) < 1.15
    assert float(spec[(rad > 1.4 * wc) & (rad < math.pi)].max()) < 0.15
    # half amplitude crossing close to the cutoff
    band = spec[(rad > 0.9 * wc) & (rad < 1.1 * wc)]
    assert float(band.min()) < 0.5 < float(band.max())
    # ringing: a truncated sinc has negative lobes (overshoot when filtering an edge)
    assert float(k.min()) < 0
    edge = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    edge[..., 20:] = 1.0
    assert float(filter2d(edge, k).max()) > 1.02


def test_pad_to_and_kernel_params_round_trip() -> None:
    k = circular_lowpass_kernel(1.0, 7, pad_to=21)
    assert k.shape == (21, 21) and float(k[:7].abs().sum()) == 0.0
    p = {"apply": True, "type": "plateau_aniso", "size": 9, "sigma_x": 1.0, "sigma_y": 2.0,
         "theta": 0.2, "beta": 1.5}
    torch.testing.assert_close(kernel_from_params(p), plateau_kernel(9, 1.0, 2.0, 0.2, 1.5))
    assert kernel_from_params({"apply": False}) is None
    with pytest.raises(UsageError):
        kernel_from_params({"type": "box", "size": 3})


def test_filter2d_fft_matches_direct_conv_and_identity() -> None:
    x = torch.rand(2, 3, 30, 27, dtype=torch.float64)
    ks = torch.stack([gaussian_kernel(15, 2.0, 1.0, 0.4), circular_lowpass_kernel(1.2, 15)])
    xp = F.pad(x, (7, 7, 7, 7), mode="reflect")
    ref = torch.cat([F.conv2d(xp[i].unsqueeze(1), ks[i].view(1, 1, 15, 15)).transpose(0, 1)
                     for i in range(2)])
    torch.testing.assert_close(filter2d(x, ks), ref, atol=1e-10, rtol=0)
    delta = torch.zeros(5, 5, dtype=torch.float64)
    delta[2, 2] = 1
    torch.testing.assert_close(filter2d(x, delta), x)
    with pytest.raises(InputError):
        filter2d(torch.rand(1, 3, 8, 8), gaussian_kernel(21, 1.0))


def test_sample_blur_respects_config() -> None:
    gen = torch.Generator().manual_seed(3)
    cfg = BlurConfig()
    seen = set()
    for _ in range(300):
        p = sample_blur(cfg, gen)
        seen.add(p["type"])
        assert p["size"] in cfg.sizes
        if p["type"] == "sinc":
            lo = math.pi / 3 if p["size"] < 13 else math.pi / 5
            assert lo <= p["cutoff"] <= math.pi
        else:
            assert 0.2 <= p["sigma_x"] <= 3.0 and 0.2 <= p["sigma_y"] <= 3.0
            if "beta" in p:
                lo, hi = (0.5, 4.0) if p["type"].startswith("generalized") else (1.0, 2.0)
                assert lo <= p["beta"] <= hi
    assert {"iso", "aniso", "sinc", "plateau_iso", "generalized_iso"} <= seen


def test_gaussian_noise_statistics_colour_and_gray() -> None:
    x = torch.full((1, 3, 200, 200), 0.5)
    gen = torch.Generator().manual_seed(0)
    n = (gaussian_noise(x, 20.0, gen) - x) * 255
    assert abs(float(n.std()) - 20.0) < 0.4 and abs(float(n.mean())) < 0.3
    # independent channels
    assert abs(float(torch.corrcoef(n[0].reshape(3, -1))[0, 1])) < 0.02
    g = gaussian_noise(x, 20.0, gen, gray=True) - x
    torch.testing.assert_close(g[:, 0], g[:, 1])
    torch.testing.assert_close(g[:, 1], g[:, 2])
    # same generator state, same noise
    a = gaussian_noise(x, 5.0, torch.Generator().manual_seed(1))
    b = gaussian_noise(x, 5.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_poisson_noise_statistics() -> None:
    levels = torch.arange(256, dtype=torch.float64) / 255
    x = levels.repeat(3, 400, 1).reshape(1, 3, 400, 256)  # every 8-bit level, 1200 times each
    gen = torch.Generator().manual_seed(0)
    n = poisson_noise(x, 1.0, gen, clip=False) - x
    # 256 distinct values -> v = 256 photon levels; Var = I / v, mean 0
    assert abs(float(n.mean())) < 2e-4
    var_per_level = n[0].permute(0, 1, 2).reshape(3 * 400, 256).var(dim=0)
    expected = levels / 256
    rel = (var_per_level[64:] / expected[64:]).mean()
    assert abs(float(rel) - 1.0) < 0.03
    half = poisson_noise(x, 0.5, torch.Generator().manual_seed(0), clip=False) - x
    torch.testing.assert_close(half, n * 0.5)
    g = poisson_noise(x, 1.0, gen, gray=True) - x
    torch.testing.assert_close(g[:, 0], g[:, 2])


def test_quality_tables_match_libjpeg_scaling() -> None:
    qy, qc = quality_tables(torch.tensor([50.0, 75.0, 10.0, 100.0]))
    assert float(qy[0, 0, 0]) == 16 and float(qc[0, 0, 0]) == 17  # q50 = standard tables
    assert float(qy[1, 0, 0]) == 8  # (16*50+50)//100
    assert float(qy[2, 0, 0]) == 80  # scale 500
    assert float(qy[3].max()) == 1


def test_torch_jpeg_close_to_real_encoder(make_image) -> None:
    img = make_image(96, 80, seed=5)
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    for q in (30, 60, 90):
        real = jpeg_real(x, q)
        sim = jpeg_torch(x, q, round_output=True)
        err_sim = float((sim - real).abs().mean()) * 255
        err_codec = float((x - real).abs().mean()) * 255
        assert err_sim < 1.5, (q, err_sim)
        assert err_sim < 0.5 * err_codec, (q, err_sim, err_codec)
    # batched per-image qualities = one at a time; sizes not multiple of 16 are fine
    xb = torch.cat([x, x.flip(-1)])[:, :, :45, :37]
    both = jpeg_torch(xb, torch.tensor([40.0, 80.0]))
    torch.testing.assert_close(both[1:], jpeg_torch(xb[1:], 80.0))
    assert both.shape == xb.shape
    with pytest.raises(UsageError):
        jpeg_torch(x, 0.0)


def test_usm_sharpening_closed_form() -> None:
    taps = gaussian_taps(51)
    # sigma = 0.3 * ((51 - 1) / 2 - 1) + 0.8 = 8 (OpenCV rule): g(8) / g(0) = exp(-1/2)
    assert abs(float(taps[33] / taps[25]) - math.exp(-0.5)) < 1e-12
    assert abs(float(taps.sum()) - 1.0) < 1e-12
    flat = torch.full((1, 3, 64, 64), 0.4)
    torch.testing.assert_close(usm_sharp(flat), flat)  # nothing to sharpen
    edge = torch.zeros(1, 1, 64, 64)
    edge[..., 32:] = 0.8
    edge += 0.1
    out = usm_sharp(edge)
    assert float(out[0, 0, 10, 31]) < 0.1 and float(out[0, 0, 10, 32]) > 0.9  # overshoot
    assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    with pytest.raises(InputError):
        usm_sharp(torch.rand(1, 3, 20, 20))
