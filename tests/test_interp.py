"""`sr interp`: network interpolation through the CLI (exactness at alpha 0, 1 and 0.5, several
alphas, preview contact sheet, pixel interpolation, metadata, error cases) and unit tests of the
pure functions in sr_cli.interp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.errors import InputError, ModelError, UsageError
from sr_cli.interp import (
    alpha_tag,
    blend_images,
    blend_models,
    contact_sheet,
    interpolate_state_dicts,
    output_stem,
    parse_alphas,
    render_label,
)

TINY_SRVGG = {"num_feat": 8, "num_conv": 2, "upscale": 2}
TINY_RRDB = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 2}


def _random_net(arch: str, hp: dict, seed: int):
    net, desc = build(arch, **hp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net, desc


def _save(path: Path, arch: str, hp: dict, seed: int) -> Path:
    net, desc = _random_net(arch, hp, seed)
    zoo.save_model(path, net, desc, {"name": path.stem})
    return path


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "m"
    d.mkdir()
    return {
        "a": _save(d / "psnr.safetensors", "srvgg", TINY_SRVGG, 1),
        "b": _save(d / "gan.safetensors", "srvgg", TINY_SRVGG, 2),
        "wide": _save(d / "wide.safetensors", "srvgg", {**TINY_SRVGG, "num_feat": 12}, 3),
        "rrdb": _save(d / "rrdb.safetensors", "rrdbnet", TINY_RRDB, 4),
        "rrdb2": _save(d / "rrdb2.safetensors", "rrdbnet", TINY_RRDB, 5),
    }


def _run(runner, args: list[str]):
    return runner.invoke(app, args)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# ------------------------------------------------------------------------------------ the CLI


def test_alpha_0_and_1_reproduce_parents_exactly(runner, models, tmp_path):
    ta, tb = _tensors(models["a"]), _tensors(models["b"])
    for alpha, want in (("0", ta), ("1", tb)):
        out = tmp_path / f"o{alpha}.safetensors"
        r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "--alpha", alpha,
                          "-o", str(out)])
        assert r.exit_code == 0, r.output
        got = _tensors(out)
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), k


def test_alpha_half_is_exact_mean(runner, models, tmp_path):
    out = tmp_path / "mid.safetensors"
    r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "--alpha", "0.5",
                      "-o", str(out)])
    assert r.exit_code == 0, r.output
    ta, tb, got = _tensors(models["a"]), _tensors(models["b"]), _tensors(out)
    for k in ta:
        mean = ((ta[k].double() + tb[k].double()) / 2).float()
        assert torch.equal(got[k], mean), k
        assert not torch.equal(got[k], ta[k])


def test_rrdbnet_blend_matches_formula(runner, models, tmp_path):
    out = tmp_path / "r.safetensors"
    r = _run(runner, ["interp", str(models["rrdb"]), str(models["rrdb2"]), "-a", "0.8",
                      "-o", str(out)])
    assert r.exit_code == 0, r.output
    ta, tb, got = _tensors(models["rrdb"]), _tensors(models["rrdb2"]), _tensors(out)
    for k in ta:
        want = ((1 - 0.8) * ta[k].double() + 0.8 * tb[k].double()).float()
        assert torch.equal(got[k], want), k


def test_metadata_records_parents_and_alpha_and_loads(runner, models, tmp_path):
    out = tmp_path / "blend.safetensors"
    r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "--alpha", "0.3",
                      "-o", str(out)])
    assert r.exit_code == 0, r.output
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["recipe"] == "interp"
    assert float(meta["alpha"]) == pytest.approx(0.3)
    assert meta["parent_a"] == "psnr" and meta["parent_b"] == "gan"
    parents = json.loads(meta["parents"])
    assert [p["name"] for p in parents] == ["psnr", "gan"]
    assert parents[0]["weight"] == pytest.approx(0.7) and parents[1]["weight"] == pytest.approx(0.3)
    assert Path(parents[0]["source"]).name == "psnr.safetensors"
    assert meta["arch"] == "srvgg" and json.loads(meta["hparams"])["num_feat"] == 8
    loaded = zoo.load_model(str(out))
    assert loaded.desc.arch == "srvgg" and loaded.desc.scale == 2
    y = loaded.net(torch.rand(1, 3, 5, 4))
    assert y.shape == (1, 3, 10, 8)


def test_several_alphas_write_one_model_each(runner, models, tmp_path):
    out = tmp_path / "sweep"
    r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "--alpha", "0,0.2,...,1",
                      "-o", str(out) + "/"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"psnr_gan_a{v}.safetensors" for v in
                     ("0.00", "0.20", "0.40", "0.60", "0.80", "1.00")]
    ta, tb = _tensors(models["a"]), _tensors(models["b"])
    got = _tensors(out / "psnr_gan_a0.40.safetensors")
    k = next(iter(ta))
    assert torch.equal(got[k], ((1 - 0.4) * ta[k].double() + 0.4 * tb[k].double()).float())
    assert torch.equal(_tensors(out / "psnr_gan_a0.00.safetensors")[k], ta[k])
    assert torch.equal(_tensors(out / "psnr_gan_a1.00.safetensors")[k], tb[k])


def test_preview_writes_images_and_labelled_sheet(runner, models, tmp_path, write_png,
                                                  make_image):
    from sr_cli.infer.engine import InferenceOptions, Upscaler

    img = make_image(12, 10, 3, seed=3)
    src = write_png("in.png", img)
    out = tmp_path / "pv"
    r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "--alpha", "0:1:0.5",
                      "--preview", str(src), "-o", str(out), "--sheet-tile", "64"])
    assert r.exit_code == 0, r.output
    import imageio.v3 as iio

    for tag in ("a0.00", "a0.50", "a1.00"):
        assert (out / f"psnr_gan_{tag}.safetensors").is_file()
        assert iio.imread(out / f"psnr_gan_{tag}.png").shape == (24, 20, 3)
    # The alpha-0 preview is exactly what model A gives on its own.
    want = Upscaler(zoo.load_model(str(models["a"])), InferenceOptions(device="cpu")) \
        .upscale_array(img)
    assert np.array_equal(iio.imread(out / "psnr_gan_a0.00.png"), want)
    sheet = iio.imread(out / "psnr_gan_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    # Three 48x40 pictures (24x20 enlarged x2) plus label strips fit, and the labels are drawn
    # (pure white pixels appear only in the label text on the dark background).
    assert sheet.shape[0] > 48 and sheet.shape[1] >= 3 * 40
    assert (sheet == 255).all(axis=2).sum() > 50


def test_images_mode_blends_pixels(runner, tmp_path, write_png, make_image):
    a = make_image(20, 16, 3, seed=1)
    b = make_image(20, 16, 3, seed=2)
    pa, pb = write_png("a.png", a), write_png("b.png", b)
    out = tmp_path / "mix.png"
    r = _run(runner, ["interp", str(pa), str(pb), "--images", "--alpha", "0.25", "-o", str(out)])
    assert r.exit_code == 0, r.output
    import imageio.v3 as iio

    want = np.rint(0.75 * a.astype(np.float64) + 0.25 * b).astype(np.uint8)
    assert np.array_equal(iio.imread(out), want)
    # Several alphas: one image each plus a sheet; the ends are the inputs.
    d = tmp_path / "mixes"
    r = _run(runner, ["interp", str(pa), str(pb), "--images", "--alpha", "0,0.5,1", "-o", str(d)])
    assert r.exit_code == 0, r.output
    assert np.array_equal(iio.imread(d / "a_b_a0.00.png"), a)
    assert np.array_equal(iio.imread(d / "a_b_a1.00.png"), b)
    assert (d / "a_b_sheet.png").is_file()


def test_images_mode_to_stdout(runner, write_png, make_image):
    a = make_image(8, 8, 3, seed=1)
    b = make_image(8, 8, 3, seed=2)
    pa, pb = write_png("a.png", a), write_png("b.png", b)
    r = _run(runner, ["interp", str(pa), str(pb), "--images", "--alpha", "0.5", "-o", "-"])
    assert r.exit_code == 0, r.output
    import imageio.v3 as iio

    got = iio.imread(r.stdout_bytes, extension=".png")
    assert np.array_equal(got, blend_images(a, b, 0.5))


def test_pth_parent_with_params_wrapper(runner, models, tmp_path):
    """An official-style .pth (key ``params``) blends with a .safetensors model."""
    net, _ = _random_net("srvgg", TINY_SRVGG, 7)
    pth = tmp_path / "official.pth"
    torch.save({"params": net.state_dict()}, pth)
    out = tmp_path / "o.safetensors"
    r = _run(runner, ["interp", str(pth), str(models["b"]), "--alpha", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    got = _tensors(out)
    for k, v in net.state_dict().items():
        assert torch.equal(got[k], v), k


def test_extrapolate(runner, models, tmp_path):
    out = tmp_path / "x.safetensors"
    args = ["interp", str(models["a"]), str(models["b"]), "--alpha", "1.5", "-o", str(out)]
    r = _run(runner, args)
    assert r.exit_code == 2, r.output
    assert "--extrapolate" in r.output
    assert not out.exists()
    r = _run(runner, [*args, "--extrapolate"])
    assert r.exit_code == 0, r.output
    ta, tb, got = _tensors(models["a"]), _tensors(models["b"]), _tensors(out)
    k = next(iter(ta))
    assert torch.equal(got[k], ((1 - 1.5) * ta[k].double() + 1.5 * tb[k].double()).float())


@pytest.mark.parametrize(
    ("a", "b", "extra", "code", "needle"),
    [
        ("a", "rrdb", [], 4, "different architectures"),
        ("a", "wide", [], 4, "num_feat"),
        ("a", "a", [], 2, "itself"),
        ("a", "b", ["--alpha", "-0.1"], 2, "outside [0, 1]"),
        ("a", "b", ["--alpha", "abc"], 2, "not a number"),
        ("a", "nosuch-model", [], 4, "unknown model"),
        ("a", "b", ["--images", "--preview", "x.png"], 2, "--images"),
    ],
)
def test_errors(runner, models, tmp_path, a, b, extra, code, needle):
    def arg(x: str) -> str:
        return str(models[x]) if x in models else x

    out = tmp_path / "never.safetensors"
    r = _run(runner, ["interp", arg(a), arg(b), "-o", str(out), *extra])
    assert r.exit_code == code, r.output
    assert needle in r.output
    assert not out.exists()


def test_identical_weights_in_two_files_is_an_error(runner, models, tmp_path):
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(models["a"].read_bytes())
    r = _run(runner, ["interp", str(models["a"]), str(copy), "-o", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 2, r.output
    assert "identical weights" in r.output


def test_missing_output_and_bad_extension(runner, models, tmp_path):
    r = _run(runner, ["interp", str(models["a"]), str(models["b"])])
    assert r.exit_code == 2, r.output
    r = _run(runner, ["interp", str(models["a"]), str(models["b"]), "-o", str(tmp_path / "o.pth")])
    assert r.exit_code == 2, r.output
    assert ".safetensors" in r.output


def test_images_of_different_sizes(runner, tmp_path, write_png, make_image):
    pa = write_png("a.png", make_image(8, 8, 3))
    pb = write_png("b.png", make_image(8, 10, 3))
    r = _run(runner, ["interp", str(pa), str(pb), "--images", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 3, r.output
    assert "different sizes" in r.output


def test_help_has_example(runner):
    r = _run(runner, ["interp", "--help"])
    assert r.exit_code == 0, r.output
    assert "Example: sr interp" in r.output


# ----------------------------------------------------------------------------- pure functions


def test_parse_alphas():
    assert parse_alphas("0.8") == [0.8]
    assert parse_alphas("0, 0.5,1") == [0.0, 0.5, 1.0]
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0,0.2,...,1") == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert parse_alphas("0:1:0.3") == [0.0, 0.3, 0.6, 0.9, 1.0]  # stop always included
    assert parse_alphas("0.5,0.5") == [0.5]
    assert parse_alphas("-1:2:1.5", extrapolate=True) == [-1.0, 0.5, 2.0]
    for bad in ("", "x", "0:1", "1:0:0.5", "0:1:0", "...,1", "0,...,1", "nan", "2"):
        with pytest.raises(UsageError):
            parse_alphas(bad)


def test_alpha_tag_and_stem():
    assert alpha_tag(0.8) == "a0.80"
    assert alpha_tag(0.0) == "a0.00"
    assert alpha_tag(0.125) == "a0.125"
    assert alpha_tag(-0.25) == "a-0.25"
    assert output_stem("models/RRDB_PSNR_x4.pth", "RRDB ESRGAN") == "RRDB_PSNR_x4_RRDB-ESRGAN"


def test_interpolate_state_dicts_exactness():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(64, generator=g), "n": torch.tensor(3)}
    b = {"w": torch.randn(64, generator=g) * 1e3, "n": torch.tensor(3)}
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state_dicts(a, b, 1.0)["w"], b["w"])
    mean = ((a["w"].double() + b["w"].double()) / 2).float()
    assert torch.equal(interpolate_state_dicts(a, b, 0.5)["w"], mean)
    assert interpolate_state_dicts(a, b, 0.3)["n"].item() == 3
    half = {"w": a["w"].half()}
    assert interpolate_state_dicts(half, {"w": b["w"].half()}, 0.5)["w"].dtype == torch.float16
    with pytest.raises(ModelError, match="shape"):
        interpolate_state_dicts(a, {"w": torch.zeros(3), "n": torch.tensor(3)}, 0.5)
    with pytest.raises(ModelError, match="different layers"):
        interpolate_state_dicts(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ModelError, match="non-float"):
        interpolate_state_dicts(a, {"w": b["w"], "n": torch.tensor(4)}, 0.5)


def test_blend_models_for_upscale_mix(models):
    """The function `sr upscale -m A -m B --mix` uses: a LoadedModel with blended weights."""
    a = zoo.load_model(str(models["a"]))
    b = zoo.load_model(str(models["b"]))
    m = blend_models(a, b, 0.25)
    assert isinstance(m, zoo.LoadedModel)
    assert m.desc == a.desc
    assert m.metadata["alpha"] == "0.25" and m.metadata["parent_b"] == "gan"
    sa, sb, sm = a.net.state_dict(), b.net.state_dict(), m.net.state_dict()
    for k in sa:
        assert torch.equal(sm[k], ((1 - 0.25) * sa[k].double() + 0.25 * sb[k].double()).float())
    assert not m.net.training
    x = torch.rand(1, 3, 6, 6)
    assert m.net(x).shape == (1, 3, 12, 12)
    # Parents untouched.
    assert torch.equal(a.net.state_dict()[next(iter(sa))], sa[next(iter(sa))])
    with pytest.raises(UsageError):
        blend_models(a, a, 0.5)
    with pytest.raises(ModelError):
        blend_models(a, zoo.load_model(str(models["rrdb"])), 0.5)


def test_blend_images_clips_and_checks():
    a = np.zeros((2, 2, 3), np.uint16)
    b = np.full((2, 2, 3), 65535, np.uint16)
    assert blend_images(a, b, 0.5).dtype == np.uint16
    assert blend_images(a, b, 1.5).max() == 65535  # extrapolation clipped to the range
    with pytest.raises(InputError):
        blend_images(a, b.astype(np.uint8), 0.5)


def test_contact_sheet_layout():
    tiles = [(f"a={v:.2f}", np.full((30, 20, 3), 100, np.uint8)) for v in (0, 0.5, 1)]
    sheet = contact_sheet(tiles, columns=3, max_tile_side=30, gap=4)
    label_h = render_label("a=0.00").shape[0]
    assert sheet.shape == (4 + label_h + 8 + 30 + 4, 4 + 3 * (max(20, 6 * 6 * 2 + 8) + 4), 3)
    assert (sheet == 100).all(axis=2).sum() == 3 * 30 * 20
    big = [("a", np.zeros((1000, 500, 3), np.uint8))]
    assert contact_sheet(big, max_tile_side=100).shape[0] < 200
    gray16 = [("B", np.zeros((4, 4, 1), np.uint16))]
    assert contact_sheet(gray16).dtype == np.uint8
    with pytest.raises(UsageError):
        contact_sheet([])
