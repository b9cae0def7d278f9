"""Unit tests of sr_cli.metrics: PSNR, SSIM, colour, NIQE, the Ma forest reader, PI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_cli.errors import InputError
from sr_cli.metrics.color import rgb_to_y, to_channels
from sr_cli.metrics.niqe import (
    _gamma_tables,
    _nearest,
    fit_niqe_params,
    load_niqe_params,
    niqe,
    niqe_features,
)
from sr_cli.metrics.pi import perceptual_index
from sr_cli.metrics.psnr import crop_border, psnr
from sr_cli.metrics.ssim import gaussian_window, ssim


def _t(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1)[None]


def test_psnr_known_values():
    a = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    b = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    v = psnr(a, b)
    assert v.shape == (2,)
    assert v[0].item() == pytest.approx(20 * math.log10(255), abs=1e-12)  # 48.1308
    assert math.isinf(psnr(a, a)[0].item())


def test_psnr_rejects_mismatch_and_nan():
    with pytest.raises(InputError, match="size mismatch"):
        psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    bad = torch.zeros(1, 1, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        psnr(bad, torch.zeros(1, 1, 8, 8))


def _ssim_direct(x: torch.Tensor, y: torch.Tensor) -> float:
    """Straightforward 2-D float64 conv2d SSIM, as the paper's MATLAB code."""
    w = gaussian_window()[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = F.conv2d(x, w), F.conv2d(y, w)
    s1 = F.conv2d(x * x, w) - mu1**2
    s2 = F.conv2d(y * y, w) - mu2**2
    s12 = F.conv2d(x * y, w) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(m.mean())


def test_ssim_matches_direct_formula(make_image):
    a = _t(make_image(40, 36, 1, seed=1))
    b = _t(make_image(40, 36, 1, seed=2))
    assert ssim(a, a)[0].item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b)[0].item() == pytest.approx(_ssim_direct(a, b), abs=1e-12)
    assert ssim(a, b)[0].item() < 0.9


def test_ssim_rgb_is_mean_of_channels(make_image):
    a = _t(make_image(30, 30, 3, seed=3))
    b = _t(make_image(30, 30, 3, seed=4))
    per = [ssim(a[:, i : i + 1], b[:, i : i + 1])[0].item() for i in range(3)]
    assert ssim(a, b)[0].item() == pytest.approx(sum(per) / 3, abs=1e-12)


def test_gaussian_window_is_fspecial():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-15)
    assert float(w[5, 5]) == pytest.approx(0.07076223776916, rel=1e-9)  # MATLAB value


def test_rgb_to_y_matlab_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], dtype=np.uint8)
    y = to_channels(px, "y")[0, 0, 0]
    assert y[0].item() == pytest.approx(16.0)
    assert y[1].item() == pytest.approx(235.0)
    assert y[2].item() == pytest.approx(16 + 65.481)
    r = to_channels(px, "y", round_8bit=True)[0, 0, 0]
    assert r[2].item() == 81.0 and r[3].item() == round(16 + (65.481 * 10 + 128.553 * 200
                                                               + 24.966 * 30) / 255)
    gray = np.full((2, 2, 1), 100, np.uint8)  # gray counts as R = G = B
    assert to_channels(gray, "y")[0, 0, 0, 0].item() == pytest.approx(16 + 219 * 100 / 255)
    assert rgb_to_y(_t(px)).shape == (1, 1, 1, 4)


def test_crop_border():
    x = torch.zeros(1, 1, 10, 12)
    assert crop_border(x, 2).shape == (1, 1, 6, 8)
    with pytest.raises(InputError):
        crop_border(x, 5)


def test_nearest_equals_matlab_min():
    gam, _, r = _gamma_tables("cpu")
    x = torch.tensor([0.01, 0.2, 0.5, 0.7, 0.9, float(r[123])], dtype=torch.float64)
    expect = torch.argmin((r[None] - x[:, None]) ** 2, dim=1)
    assert torch.equal(_nearest(r, x), expect)


def test_niqe_rejects_small_and_nan():
    p = load_niqe_params()
    with pytest.raises(InputError, match="96x96"):
        niqe(torch.zeros(1, 1, 95, 200, dtype=torch.float64), p)
    bad = torch.rand(1, 1, 96, 96, dtype=torch.float64)
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        niqe(bad, p)


def test_niqe_features_shape_and_blur_monotonic(make_image):
    img = _t(make_image(200, 300, 1, seed=5))
    f, s = niqe_features(img)
    assert f.shape == (1, 6, 36) and s.shape == (1, 6)
    p = load_niqe_params("sr")  # the synthetic image is far from MATLAB's pristine set
    sharp = niqe(img, p).item()
    from sr_cli.degrade.resize import imresize

    blurred = imresize(imresize(img, 0.25), size=(200, 300))
    assert niqe(blurred, p).item() > sharp  # blur is less natural


def test_default_niqe_params_are_shipped_and_named():
    p = load_niqe_params()
    assert p.mu.shape == (36,) and p.cov.shape == (36, 36)
    assert np.allclose(p.cov, p.cov.T)
    assert p.name.startswith("matlab")
    sr = load_niqe_params("sr")
    assert sr.name.startswith("sr") and not np.allclose(sr.mu, p.mu)


def test_niqe_params_errors(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        load_niqe_params(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="readable"):
        load_niqe_params(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu_pris_param=np.zeros(5), cov_pris_param=np.eye(5))
    with pytest.raises(InputError, match="36"):
        load_niqe_params(wrong)


def test_niqe_params_from_mat(tmp_path: Path):
    scipy_io = pytest.importorskip("scipy.io")
    ref = load_niqe_params()
    m = tmp_path / "modelparameters.mat"
    scipy_io.savemat(m, {"mu_prisparam": ref.mu[None], "cov_prisparam": ref.cov})
    p = load_niqe_params(m)
    assert np.array_equal(p.mu, ref.mu) and np.array_equal(p.cov, ref.cov)
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(InputError):
        load_niqe_params(bad)


def test_fit_niqe_params_selects_sharp_patches(make_image):
    imgs = [(f"i{k}", _t(make_image(200, 200, 1, seed=10 + k))) for k in range(4)]
    imgs.append(("small", _t(make_image(50, 50, 1, seed=99))))
    mu, cov, stats = fit_niqe_params(imgs, threshold=0.0)
    assert stats["images"] == 4 and stats["skipped_small"] == 1
    assert stats["patches"] == 4 * 4
    f, _ = niqe_features(torch.cat([im for _, im in imgs[:4]]))
    assert np.allclose(mu, f.reshape(-1, 36).mean(0).numpy())
    assert cov.shape == (36, 36) and np.isfinite(cov).all()
    _, _, strict = fit_niqe_params(imgs[:4], threshold=0.999)
    assert strict["patches"] == 4  # only each image's sharpest block


@pytest.mark.shared
def test_niqe_matches_matlab_release_on_set14(shared_dir: Path):
    """README values: MATLAB NIQE with the release's parameters, Y, no crop."""
    from sr_cli.io.images import read_image

    p = load_niqe_params(shared_dir / "reference" / "niqe_pris_params.npz")
    ref = {"baboon": 5.7296, "barbara": 4.5838, "bridge": 2.4864, "coastguard": 5.3512}
    for name, want in ref.items():
        px = read_image(shared_dir / "data" / "Set14" / "HR" / f"{name}.png").pixels
        got = niqe(to_channels(px, "y", round_8bit=True), p).item()
        assert abs(got - want) < 1e-3, (name, got, want)


@pytest.mark.shared
def test_bicubic_round_trip_reproduces_literature(shared_dir: Path):
    """MATLAB bicubic x4 down (8-bit) then up (8-bit); PSNR-Y/SSIM-Y with a 4-pixel border."""
    from sr_cli.degrade.resize import imresize
    from sr_cli.io.images import read_image

    def run(folder: str) -> tuple[float, float]:  # Set14: see test_bicubic_round_trip_set14
        ps, ss = [], []
        for f in sorted((shared_dir / "data" / folder / "HR").glob("*.png")):
            px = read_image(f).pixels
            h, w = px.shape[0] // 4 * 4, px.shape[1] // 4 * 4
            px = np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px[:, :, :3]
            px = px[:h, :w]
            t = _t(px)
            sr = imresize(imresize(t, 0.25, quantize=255), 4.0, quantize=255)
            srpx = sr[0].permute(1, 2, 0).numpy().astype(np.uint8)
            a = crop_border(to_channels(srpx, "y"), 4)
            b = crop_border(to_channels(px, "y"), 4)
            ps.append(psnr(a, b).item())
            ss.append(ssim(a, b).item())
        return float(np.mean(ps)), float(np.mean(ss))

    p5, s5 = run("Set5")
    assert abs(p5 - 28.43) <= 0.01 and abs(s5 - 0.8113) <= 0.0005, (p5, s5)


@pytest.mark.shared
@pytest.mark.slow
def test_bicubic_round_trip_set14(shared_dir: Path):
    """Set14 counterpart (26.09 / 0.7050); opt-in because it takes ~10 s."""
    from sr_cli.degrade.resize import imresize
    from sr_cli.io.images import read_image

    ps, ss = [], []
    for f in sorted((shared_dir / "data" / "Set14" / "HR").glob("*.png")):
        px = read_image(f).pixels
        h, w = px.shape[0] // 4 * 4, px.shape[1] // 4 * 4
        px = (np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px[:, :, :3])[:h, :w]
        sr = imresize(imresize(_t(px), 0.25, quantize=255), 4.0, quantize=255)
        srpx = sr[0].permute(1, 2, 0).numpy().astype(np.uint8)
        a = crop_border(to_channels(srpx, "y"), 4)
        b = crop_border(to_channels(px, "y"), 4)
        ps.append(psnr(a, b).item())
        ss.append(ssim(a, b).item())
    assert abs(np.mean(ps) - 26.09) <= 0.01 and abs(np.mean(ss) - 0.7050) <= 0.0005


def test_perceptual_index():
    assert perceptual_index(torch.tensor([8.0]), torch.tensor([3.0])).item() == 2.5
