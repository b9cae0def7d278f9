"""Shared fixtures: generated test images, the CLI runner, and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

# The suite's tensors are tiny: one intra-op thread avoids OpenMP overhead and oversubscription
# (measured ~10x slower tiny-net tests with 2 threads on a busy 2-core machine). Tests that
# need a different count set it locally and restore it.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def synthetic_image(h: int = 48, w: int = 40, c: int = 3, seed: int = 0,
                    dtype: type = np.uint8) -> np.ndarray:
    """A deterministic natural-ish test image: smooth gradients, edges, texture and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        f1, f2 = rng.uniform(0.05, 0.3, size=2)
        base = 0.5 + 0.25 * np.sin(f1 * xx + k) * np.cos(f2 * yy - k)
        base += 0.2 * ((xx - w * rng.uniform(0.3, 0.7)) ** 2 + (yy - h * 0.5) ** 2 < (h / 4) ** 2)
        base += 0.05 * rng.standard_normal((h, w))
        chans.append(base)
    img = np.clip(np.stack(chans, axis=-1), 0, 1)
    maxv = 65535 if dtype == np.uint16 else 255
    return np.round(img * maxv).astype(dtype)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def make_image():
    return synthetic_image


@pytest.fixture
def write_png(tmp_path: Path):
    """write_png(name, array) -> path of a PNG written with imageio."""
    import imageio.v3 as iio

    def _write(name: str, arr: np.ndarray) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(p, arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
        return p

    return _write


@pytest.fixture
def shared_dir() -> Path:
    """Path to ../shared; skips (visibly) when the shared data is not present."""
    if not (SHARED / "data").is_dir():
        pytest.skip("needs ../shared/data (benchmark data beside the repo); not present")
    return SHARED


@pytest.fixture
def isolated_zoo(tmp_path, monkeypatch):
    """No user cache, no SR_MODELS_PATH and an empty repository models/ folder (returned)."""
    from sr_cli import zoo

    repo = tmp_path / "repo_models"
    repo.mkdir()
    monkeypatch.setenv("SR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SR_MODELS_PATH", raising=False)
    monkeypatch.setattr(zoo, "repo_models_dir", lambda: repo)
    return repo
