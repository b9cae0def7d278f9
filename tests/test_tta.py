"""x8 self-ensemble (`--tta`): the transforms, exact inverse, tiling, CLI and API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sr_cli.cli import app
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.infer.tta import TRANSFORMS, SelfEnsemble, _forward_t, _inverse_t
from sr_cli.zoo import load_model


def test_transforms_are_the_eight_symmetries_and_invert():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    images = {tuple(_forward_t(x, k, f).flatten().tolist()) for k, f in TRANSFORMS}
    assert len(TRANSFORMS) == 8 and len(images) == 8  # all distinct
    for k, f in TRANSFORMS:
        assert torch.equal(_inverse_t(_forward_t(x, k, f), k, f), x)


def test_equivariant_network_is_unchanged():
    """Nearest x2 upsampling commutes with every flip/rotation: the ensemble equals it."""
    net = nn.Upsample(scale_factor=2, mode="nearest")
    x = torch.rand(1, 3, 6, 9)
    assert torch.allclose(SelfEnsemble(net)(x), net(x), atol=1e-7)


def test_ensemble_is_the_mean_of_back_transformed_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).eval()
    x = torch.rand(1, 3, 7, 5)
    with torch.no_grad():
        ref = sum(_inverse_t(net(_forward_t(x, k, f)), k, f) for k, f in TRANSFORMS) / 8
        got = SelfEnsemble(net)(x)
    assert got.shape == (1, 3, 14, 10)
    assert torch.allclose(got, ref, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(got, net(x), atol=1e-3)  # it does change a non-equivariant net


@pytest.mark.parametrize("tile", [16, 24])
def test_tiled_tta_equals_untiled_tta_on_a_trained_model(tile, make_image):
    """Shipped trained SRResNet (exact context): tiled ensembles equal the untiled one."""
    model = load_model("srresnet-x4")
    img = make_image(40, 36)
    whole = Upscaler(model, InferenceOptions(tile=0, tta=True)).upscale_array(img)
    tiled = Upscaler(model, InferenceOptions(tile=tile, tta=True)).upscale_array(img)
    plain = Upscaler(model, InferenceOptions(tile=0)).upscale_array(img)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    assert np.abs(whole.astype(int) - plain.astype(int)).max() > 1  # TTA did something


def test_cli_tta_flag_and_json(runner, tmp_path, write_png, make_image):
    src = write_png("in.png", make_image(20, 18))
    dst = tmp_path / "out.png"
    res = runner.invoke(app, ["upscale", str(src), str(dst), "-m", "srcnn-x2", "--tta",
                              "--json", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["tta"] is True
    import imageio.v3 as iio

    from sr_cli import upscale as api_upscale

    assert np.array_equal(iio.imread(dst), api_upscale(make_image(20, 18), "srcnn-x2",
                                                       tta=True))
