"""Ma et al.'s metric: the model.mat reader and forest prediction (synthetic forests in the
authors' randomforest-matlab format), and the feature extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.errors import InputError
from sr_cli.metrics.ma import (
    build_sf_pyr,
    gama_gen_gauss,
    load_ma_model,
    ma_features,
    ma_score,
)

scipy_io = pytest.importorskip("scipy.io")


def _stump_forest(feature: int, threshold: float, left: float, right: float, ntree: int = 2,
                  nrnodes: int = 5) -> dict:
    """A regRF_train-style struct: each tree splits feature `feature` (1-based) at
    `threshold`; leaves hold `left`/`right` (+ the tree index, to test averaging)."""
    shape = (nrnodes, ntree)
    ldau = np.zeros(shape, np.int32)
    rdau = np.zeros(shape, np.int32)
    status = np.zeros(shape, np.int32)
    upper = np.zeros(shape)
    avnode = np.zeros(shape)
    mbest = np.zeros(shape, np.int32)
    for t in range(ntree):
        ldau[0, t], rdau[0, t], status[0, t] = 2, 3, -3  # -3: internal node (randomForest)
        upper[0, t], mbest[0, t] = threshold, feature
        status[1, t] = status[2, t] = -1
        avnode[1, t], avnode[2, t] = left + t, right + t
    return {"lDau": ldau, "rDau": rdau, "nodestatus": status, "nrnodes": nrnodes,
            "upper": upper, "avnode": avnode, "mbest": mbest, "ndtree": np.full(ntree, 3),
            "ntree": ntree}


def _write_model(path: Path, forests: list[dict], linear: np.ndarray) -> None:
    rf = np.empty((3, 1), dtype=object)
    for i, f in enumerate(forests):
        rf[i, 0] = f
    scipy_io.savemat(path, {"model": {"rf": rf, "linear": linear.reshape(4, 1)}})


def test_forest_reader_and_prediction(tmp_path: Path):
    forests = [_stump_forest(1, 0.5, 1.0, 2.0), _stump_forest(3, 10.0, 5.0, 7.0, ntree=3),
               _stump_forest(2, -1.0, 0.0, 4.0, ntree=1)]
    path = tmp_path / "model.mat"
    _write_model(path, forests, np.array([0.5, 1.0, 2.0, -1.0]))
    model = load_ma_model(path)
    f0 = model.forests[0]
    assert f0.ntree == 2 and f0.ldau.shape == (5, 2)
    x = np.array([[0.4, 0.0, 11.0], [0.6, -2.0, 9.0]])
    # tree t leaf = left/right + t; the forest averages its trees
    assert np.allclose(f0.predict(x), [1.5, 2.5])
    assert np.allclose(model.forests[1].predict(x), [8.0, 6.0])
    assert np.allclose(model.forests[2].predict(x), [4.0, 0.0])  # single tree (squeezed)


def test_ma_score_combines_forests_linearly(tmp_path: Path, make_image):
    # Forests on feature 1 of each group with thresholds no image reaches / always reaches.
    forests = [_stump_forest(1, 1e9, 3.0, 0.0), _stump_forest(1, -1e9, 0.0, 2.0),
               _stump_forest(1, 1e9, 1.0, 0.0, ntree=1)]
    path = tmp_path / "model.mat"
    lin = np.array([1.0, 0.5, 0.25, 2.0])
    _write_model(path, forests, lin)
    y = torch.from_numpy(make_image(96, 96, 1, seed=3)[:, :, 0].astype(np.float64))[None, None]
    got = ma_score(y, load_ma_model(path)).item()
    # forest means: (3 + 4) / 2, (2 + 3) / 2, 1
    assert got == pytest.approx(1.0 + 0.5 * 3.5 + 0.25 * 2.5 + 2.0 * 1.0)


def test_model_errors(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        load_ma_model(tmp_path / "nope.mat")
    other = tmp_path / "other.mat"
    scipy_io.savemat(other, {"x": np.zeros(3)})
    with pytest.raises(InputError, match="model"):
        load_ma_model(other)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(InputError):
        load_ma_model(junk)


def test_gama_gen_gauss_recovers_shapes():
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(200_000, generator=g, dtype=torch.float64)
    lap = torch.distributions.Laplace(0.0, 1.0).sample((200_000,)).double()
    assert gama_gen_gauss(normal).item() == pytest.approx(2.0, abs=0.05)
    assert gama_gen_gauss(lap).item() == pytest.approx(1.0, abs=0.05)
    assert gama_gen_gauss(torch.zeros(10, dtype=torch.float64)).item() == 11.0


def test_steerable_pyramid_layout_and_tight_frame(make_image):
    im = make_image(64, 80, 1, seed=1)[:, :, 0].astype(np.float64)
    bands = build_sf_pyr(im, 2, 5)
    assert len(bands) == 14
    assert bands[0].shape == (64, 80) and bands[1].shape == (64, 80)
    assert bands[7].shape == (32, 40) and bands[13].shape == (16, 20)
    # The real steerable pyramid is a tight frame: the filters' squared responses sum to 1,
    # so the high-pass residual + first-scale bands + the rest preserve the image's energy
    # up to the subsampling; at least the high-pass + scale-1 bands cannot exceed it.
    e = float(((im - im.mean()) ** 2).sum())
    e_hi = sum(float((b**2).sum()) for b in bands[:7])
    assert 0 < e_hi < e


def test_ma_features_sizes_and_errors(make_image):
    y = torch.from_numpy(make_image(96, 112, 1, seed=2)[:, :, 0].astype(np.float64))
    f1, f2, f3 = ma_features(y)
    assert f1.shape == (18,) and f2.shape == (45,) and f3.shape == (75,)
    assert np.isfinite(f1).all() and np.isfinite(f2).all() and np.isfinite(f3).all()
    assert np.all(np.diff(f3[:25]) <= 1e-9)  # singular values, descending
    with pytest.raises(InputError, match="64x64"):
        ma_features(torch.zeros(50, 200, dtype=torch.float64))
