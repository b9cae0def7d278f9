"""MATLAB imresize: closed-form properties and the benchmark LR_bicubic images."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sr_cli.degrade.resize import imresize, resize, resize_weights
from sr_cli.errors import UsageError


def _load(path: Path) -> np.ndarray:
    arr = iio.imread(path)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _lr_pairs(shared: Path, dataset: str, s: int):
    for hr_path in sorted((shared / "data" / dataset / "HR").glob("*.png")):
        hr = _load(hr_path)
        h, w = hr.shape[:2]
        hr = hr[: h - h % s, : w - w % s]
        ref = _load(shared / "data" / dataset / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png")
        yield hr_path.stem, hr, ref


@pytest.mark.shared
@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("s", [2, 3, 4])
def test_imresize_reproduces_lr_bicubic(shared_dir: Path, dataset: str, s: int) -> None:
    for name, hr, ref in _lr_pairs(shared_dir, dataset, s):
        x = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)
        exact = imresize(x, 1 / s, quantize=255).permute(1, 2, 0).numpy().astype(np.int64)
        assert exact.shape == ref.shape, name
        assert np.array_equal(exact, ref.astype(np.int64)), name  # bit exact (uint8 semantics)
        plain = torch.floor(imresize(x, 1 / s) + 0.5).clamp(0, 255).permute(1, 2, 0).numpy()
        diff = np.abs(plain.astype(np.int64) - ref.astype(np.int64))
        # float64 without intermediate rounding: clipped overshoot (ppt3) differs a little more
        assert (diff <= 1).mean() > 0.98, (name, diff.max())


@pytest.mark.shared
def test_imresize_x4_set5_float_within_one_level(shared_dir: Path) -> None:
    for name, hr, ref in _lr_pairs(shared_dir, "Set5", 4):
        x = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)[None]
        y = imresize(x, 0.25, quantize=255)[0].permute(1, 2, 0).numpy()
        assert np.abs(y - ref).max() <= 1, name


def test_weights_rows_sum_to_one_and_shapes() -> None:
    for n, m in [(10, 3), (7, 21), (33, 11), (5, 5)]:
        w = resize_weights(n, m, m / n, dtype=torch.float64)
        assert w.shape == (m, n)
        torch.testing.assert_close(w.sum(1), torch.ones(m, dtype=torch.float64))


def test_output_size_is_ceil_and_dtype_device_kept() -> None:
    x = torch.rand(2, 3, 17, 23, dtype=torch.float32)
    y = imresize(x, 0.25)
    assert y.shape == (2, 3, 5, 6) and y.dtype == torch.float32
    assert imresize(x[0], 2.0).shape == (3, 34, 46)
    assert imresize(x, size=(8, 9)).shape == (2, 3, 8, 9)
    assert imresize(x.double(), 0.5).dtype == torch.float64


def test_constant_image_stays_constant_all_kernels() -> None:
    x = torch.full((1, 1, 20, 20), 0.37, dtype=torch.float64)
    for k in ["cubic", "lanczos2", "lanczos3", "box", "triangle", "nearest"]:
        for s in [0.25, 0.5, 1.7, 3.0]:
            torch.testing.assert_close(imresize(x, s, kernel=k), torch.full_like(
                imresize(x, s, kernel=k), 0.37))


def test_box_downscale_is_block_mean_and_nearest_upscale_repeats() -> None:
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    y = imresize(x, 0.5, kernel="box")
    torch.testing.assert_close(y, torch.nn.functional.avg_pool2d(x, 2))
    z = imresize(x, 2.0, kernel="nearest")
    torch.testing.assert_close(z, x.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_linear_ramp_preserved_in_interior_by_cubic_upscale() -> None:
    # Keys cubic reproduces linear functions exactly (away from the mirrored border).
    x = torch.arange(32, dtype=torch.float64).reshape(1, 1, 1, 32).expand(1, 1, 4, 32)
    y = imresize(x, size=(4, 64))
    u = torch.arange(1, 65, dtype=torch.float64) / 2 + 0.25 - 1  # 0-based source coordinate
    torch.testing.assert_close(y[0, 0, 0, 4:-4], u[4:-4])


def test_differentiable() -> None:
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))


def test_bad_arguments() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(UsageError):
        imresize(x, 0.5, kernel="mitchell")
    with pytest.raises(UsageError):
        imresize(x)
    with pytest.raises(UsageError):
        imresize(x.to(torch.uint8), 0.5)
    with pytest.raises(UsageError):
        resize(x, (4, 4), "spline")


def test_torch_modes_shapes() -> None:
    x = torch.rand(2, 3, 16, 16)
    for mode in ["area", "bilinear", "bicubic", "matlab", "nearest"]:
        assert resize(x, (5, 7), mode).shape == (2, 3, 5, 7)
