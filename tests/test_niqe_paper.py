"""NIQE as papers report it: the MATLAB release's parameters by default, the project's set by
name, block cropping of odd sizes as computequality.m, and flat regions that do not depend on
the filter's summation order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_cli.cli import app
from sr_cli.metrics import niqe as niqe_mod
from sr_cli.metrics.niqe import load_niqe_params, niqe


def _y(path: Path) -> torch.Tensor:
    from sr_cli.io.images import read_image
    from sr_cli.metrics import rgb_to_y

    px = read_image(path).pixels[:, :, :3]
    t = torch.from_numpy(px.astype(np.float64)).permute(2, 0, 1)[None]
    return rgb_to_y(t, round_8bit=True)


def _gauss7_2d(x: torch.Tensor) -> torch.Tensor:
    """The same 7x7 Gaussian as one non-separable 2-D convolution: another summation order,
    as MATLAB's imfilter or scipy's convolve have."""
    taps = torch.tensor(niqe_mod._mscn_taps(), dtype=x.dtype)
    w = torch.outer(taps, taps)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), w, groups=x.shape[1])


def _flat_image() -> torch.Tensor:
    """192x288 gray: textured, with a saturated flat band and a flat grey square."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:192, 0:288].astype(np.float64)
    img = 120 + 50 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + rng.normal(0, 12, (192, 288))
    img[:60, :] = 235.0  # saturated sky
    img[100:170, 30:120] = 87.0  # flat grey
    return torch.from_numpy(np.clip(np.round(img), 16, 235))[None, None]


def test_flat_regions_do_not_depend_on_the_filter_summation_order(monkeypatch) -> None:
    img = _flat_image()
    p = load_niqe_params()
    structdis, _ = niqe_mod.mscn(img)
    assert int((structdis == 0).sum()) > 5000  # flat pixels are exactly 0
    ours = niqe(img, p).item()
    monkeypatch.setattr(niqe_mod, "_gauss7", _gauss7_2d)
    other = niqe(img, p).item()
    assert other == pytest.approx(ours, abs=1e-9)


def test_odd_sizes_are_cropped_from_the_top_left_like_computequality() -> None:
    """481x321 -> 480x288 (floor to multiples of 96); the second scale comes from the crop."""
    rng = np.random.default_rng(5)
    img = torch.from_numpy(np.round(rng.uniform(16, 235, (321, 481))))[None, None]
    p = load_niqe_params()
    whole = niqe(img, p).item()
    cropped = niqe(img[..., :288, :480].clone(), p).item()
    assert whole == cropped
    feats, _ = niqe_mod.niqe_features(img)
    assert feats.shape == (1, 3 * 5, 36)


def test_score_uses_matlab_parameters_by_default_and_sr_by_name(runner, make_image,
                                                                 write_png) -> None:
    img = write_png("x.png", make_image(200, 200, 3, seed=7))
    d = runner.invoke(app, ["score", "--niqe", "--json", str(img)])
    s = runner.invoke(app, ["score", "--niqe", "--json", "--niqe-params", "sr", str(img)])
    m = runner.invoke(app, ["score", "--niqe", "--json", "--niqe-params", "matlab", str(img)])
    for r in (d, s, m):
        assert r.exit_code == 0, r.output
    dj, sj, mj = (json.loads(r.stdout) for r in (d, s, m))
    assert dj["convention"]["niqe_params"].startswith("matlab")
    assert sj["convention"]["niqe_params"].startswith("sr")
    assert dj["mean"]["niqe"] == mj["mean"]["niqe"] != sj["mean"]["niqe"]
    bad = runner.invoke(app, ["score", "--niqe", "--niqe-params", "nosuch", str(img)])
    assert bad.exit_code == 3, bad.output


def test_shipped_matlab_parameters_are_the_reference_file(shared_dir: Path) -> None:
    ref = np.load(shared_dir / "reference" / "niqe_pris_params.npz")
    ours = np.load(niqe_mod.default_params_path("matlab"))
    for k in ("mu_pris_param", "cov_pris_param"):
        assert np.array_equal(ours[k], ref[k])
    notice = (niqe_mod.default_params_path().parent / "NOTICE").read_text()
    assert "niqe_release.zip" in notice and "niqe_pris_params.npz" in notice


def test_set14_baboon_default_is_the_papers_5_7296(runner, shared_dir: Path) -> None:
    r = runner.invoke(app, ["score", "--niqe", "--json",
                            str(shared_dir / "data" / "Set14" / "HR" / "baboon.png")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mean"]["niqe"] == pytest.approx(5.7296, abs=1e-4)


def test_bsds500_photo_with_sky_agrees_across_summation_orders(shared_dir: Path,
                                                               monkeypatch) -> None:
    """The 481x321 photo where the unsnapped values moved one block's AGGD shape by 0.05."""
    path = shared_dir / "data" / "train" / "bsds500" / "test" / "100039.jpg"
    if not path.exists():
        pytest.skip(f"{path} not present")
    y = _y(path)
    p = load_niqe_params()
    ours = niqe(y, p).item()
    monkeypatch.setattr(niqe_mod, "_gauss7", _gauss7_2d)
    assert niqe(y, p).item() == pytest.approx(ours, abs=1e-9)
