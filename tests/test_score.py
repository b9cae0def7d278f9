"""`sr score` through the CLI: metric selection, pairing, outputs, gates, errors, fit-niqe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sr_cli.cli import app


def _noisy(img: np.ndarray, seed: int, amp: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(int) + rng.integers(-amp, amp + 1, img.shape), 0, 255).astype(
        np.uint8)


@pytest.fixture
def pair_dirs(tmp_path, make_image, write_png):
    for k, name in enumerate(("a", "b")):
        hr = make_image(120, 130, 3, seed=k)
        write_png(f"hr/{name}.png", hr)
        write_png(f"sr/{name}_out.png", _noisy(hr, k))
    return tmp_path / "sr", tmp_path / "hr"


def test_help_has_example(runner):
    res = runner.invoke(app, ["score", "--help"])
    assert res.exit_code == 0, res.output
    assert "Example: sr score" in res.output and "fit-niqe" in res.output


def test_default_psnr_ssim_table(runner, tmp_path, make_image, write_png):
    hr = make_image(64, 64, 3, seed=1)
    a = write_png("sr.png", _noisy(hr, 1))
    b = write_png("hr.png", hr)
    res = runner.invoke(app, ["score", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "PSNR" in res.output and "SSIM" in res.output and "NIQE" not in res.output
    assert "crop_border=0" in res.output


def test_json_structure_and_strip_suffix(runner, pair_dirs):
    sr, hr = pair_dirs
    res = runner.invoke(app, ["score", "--json", "--scale", "4", "--strip-suffix", "_out",
                              str(sr), str(hr)])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert list(obj) == ["convention", "mean", "images"]
    assert obj["convention"]["crop_border"] == 4
    assert [i["name"] for i in obj["images"]] == ["a_out.png", "b_out.png"]
    assert set(obj["mean"]) == {"psnr", "ssim"}
    ps = [i["psnr"] for i in obj["images"]]
    assert obj["mean"]["psnr"] == pytest.approx(sum(ps) / 2)
    assert 30 < obj["mean"]["psnr"] < 45 and 0.5 < obj["mean"]["ssim"] < 1


def test_csv_and_rgb_channel(runner, pair_dirs):
    sr, hr = pair_dirs
    res = runner.invoke(app, ["score", "--csv", "--channel", "rgb", "--psnr",
                              "--strip-suffix", "_out", str(sr), str(hr)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "name,psnr" and lines[-1].startswith("mean,") and len(lines) == 4


def test_unpaired_files_exit_3(runner, pair_dirs):
    sr, hr = pair_dirs
    res = runner.invoke(app, ["score", str(sr), str(hr)])
    assert res.exit_code == 3, res.output
    assert "--strip-suffix" in res.output


def test_size_mismatch_exit_3(runner, make_image, write_png):
    a = write_png("a.png", make_image(40, 40, 3))
    b = write_png("b.png", make_image(40, 44, 3))
    res = runner.invoke(app, ["score", str(a), str(b)])
    assert res.exit_code == 3, res.output
    assert "size mismatch" in res.output


def test_gates_exit_5(runner, pair_dirs):
    sr, hr = pair_dirs
    base = ["score", "--strip-suffix", "_out", str(sr), str(hr)]
    ok = runner.invoke(app, [*base, "--fail-under", "psnr=20", "--fail-under", "ssim=0.1"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, [*base, "--fail-under", "psnr=60"])
    assert bad.exit_code == 5, bad.output
    assert "psnr" in bad.output and "PSNR" in bad.stdout  # the table still comes out
    usage = runner.invoke(app, [*base, "--fail-over", "niqe=6"])
    assert usage.exit_code == 2, usage.output


def test_niqe_default_params_fail_over_and_stdin(runner, make_image, write_png):
    img = write_png("x.png", make_image(200, 200, 3, seed=7))
    res = runner.invoke(app, ["score", "--json", str(img)])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["convention"]["niqe_params"].startswith("matlab")
    v = obj["images"][0]["niqe"]
    assert np.isfinite(v) and v > 0
    res2 = runner.invoke(app, ["score", "--json", "-"], input=img.read_bytes())
    assert res2.exit_code == 0, res2.output
    assert json.loads(res2.stdout)["mean"]["niqe"] == pytest.approx(v)
    gate = runner.invoke(app, ["score", "--fail-over", f"niqe={v - 0.01}", str(img)])
    assert gate.exit_code == 5, gate.output


def test_niqe_errors(runner, tmp_path, make_image, write_png):
    small = write_png("s.png", make_image(80, 200, 3))
    res = runner.invoke(app, ["score", "--niqe", str(small)])
    assert res.exit_code == 3 and "96x96" in res.output, res.output
    bad = tmp_path / "p.npz"
    bad.write_bytes(b"junk")
    img = write_png("x.png", make_image(100, 100, 3))
    res = runner.invoke(app, ["score", "--niqe-params", str(bad), str(img)])
    assert res.exit_code == 3, res.output


def test_ma_and_pi_need_model(runner, make_image, write_png, monkeypatch):
    monkeypatch.delenv("SR_MA_MODEL", raising=False)
    img = write_png("x.png", make_image(100, 100, 3))
    for flag in ("--ma", "--pi"):
        res = runner.invoke(app, ["score", flag, str(img)])
        assert res.exit_code == 2, res.output
        assert "model.mat" in res.output and "chaoma99/sr-metric" in res.output


def test_ma_pi_with_synthetic_model_via_env(runner, tmp_path, make_image, write_png,
                                           monkeypatch):
    pytest.importorskip("scipy.io")
    from tests.test_metrics_ma import _stump_forest, _write_model

    model = tmp_path / "model.mat"
    _write_model(model, [_stump_forest(1, 1e9, 4.0, 0.0), _stump_forest(1, 1e9, 2.0, 0.0),
                         _stump_forest(1, 1e9, 1.0, 0.0)], np.array([0.0, 1.0, 1.0, 1.0]))
    monkeypatch.setenv("SR_MA_MODEL", str(model))
    img = write_png("x.png", make_image(100, 100, 3, seed=2))
    res = runner.invoke(app, ["score", "--json", "--niqe", "--ma", "--pi", str(img)])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)["mean"]
    assert m["ma"] == pytest.approx(4.5 + 2.5 + 1.5)  # 2 trees each, leaves left + t, averaged
    assert m["pi"] == pytest.approx(((10 - m["ma"]) + m["niqe"]) / 2)


def test_usage_errors(runner, make_image, write_png):
    img = write_png("x.png", make_image(100, 100, 3))
    assert runner.invoke(app, ["score", "--psnr", str(img)]).exit_code == 2
    assert runner.invoke(app, ["score", "--json", "--csv", str(img)]).exit_code == 2
    assert runner.invoke(app, ["score", "--channel", "lab", str(img), str(img)]).exit_code == 2
    assert runner.invoke(app, ["score", "--fail-under", "psnr", str(img), str(img)]).exit_code == 2
    assert runner.invoke(app, ["score", "nope.png"]).exit_code == 3


def test_fit_niqe_cli_then_score(runner, tmp_path, make_image, write_png):
    for k in range(3):
        write_png(f"nat/n{k}.png", make_image(200, 200, 3, seed=20 + k))
    out = tmp_path / "p.npz"
    res = runner.invoke(app, ["score", "fit-niqe", str(tmp_path / "nat"), "-o", str(out),
                              "--sharpness-threshold", "0"])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["mu_pris_param"].shape == (1, 36) and z["cov_pris_param"].shape == (36, 36)
        assert int(z["n_patches"]) == 12 and "fit-niqe" in str(z["name"])
    img = write_png("x.png", make_image(200, 200, 3, seed=20))
    res = runner.invoke(app, ["score", "--json", "--niqe-params", str(out), str(img)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["convention"]["niqe_params"] == str(out)
    assert runner.invoke(app, ["score", "fit-niqe", str(tmp_path / "nat")]).exit_code == 2


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sr_cli", *args], capture_output=True,
                          text=True)


@pytest.mark.shared
@pytest.mark.parametrize("name,psnr_ref,ssim_ref", [("Set5", 28.43, 0.8113),
                                                    ("Set14", 26.09, 0.7050)])
def test_end_to_end_bicubic_cli(shared_dir: Path, tmp_path: Path, name, psnr_ref, ssim_ref):
    """Uses ../shared: the literature's bicubic x4 baseline through the three commands, as a
    user runs them: sr degrade --preset bicubic -> sr upscale -m bicubic -> sr score."""
    hr = shared_dir / "data" / name / "HR"
    lr, sr = tmp_path / "lr", tmp_path / "sr"
    r = _run("degrade", "--preset", "bicubic", "--scale", "4", str(hr), "-o", str(lr))
    assert r.returncode == 0, r.stderr
    r = _run("upscale", "-m", "bicubic", "-s", "4", "-q", str(lr), "-o", str(sr))
    assert r.returncode == 0, r.stderr
    r = _run("score", "--scale", "4", "--json", str(sr), str(hr))
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["mean"]
    assert abs(m["psnr"] - psnr_ref) <= 0.01 and abs(m["ssim"] - ssim_ref) <= 0.0005, m


def test_hr_mod_crop_with_scale(runner, tmp_path, make_image, write_png):
    """HR larger than SR only by its remainder modulo --scale is cropped (modcrop), else error."""
    hr = make_image(31, 32)
    sr = write_png("sr.png", hr[:30, :30])
    hr_path = write_png("hr.png", hr)
    r = runner.invoke(app, ["score", str(sr), str(hr_path), "--scale", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["images"][0]["psnr"] is None  # identical after the crop: infinite PSNR
    assert out["convention"]["hr_mod_crop"] == 3
    r = runner.invoke(app, ["score", str(sr), str(hr_path)])  # no --scale: no silent crop
    assert r.exit_code == 3 and "size mismatch" in r.output
    # x2: width 32 is already a multiple of 2, so HR 32 wide cannot belong to a 30-wide SR
    r = runner.invoke(app, ["score", str(sr), str(hr_path), "--scale", "2"])
    assert r.exit_code == 3
