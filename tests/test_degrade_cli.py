"""`sr degrade` through the CLI: presets, reproducibility, record/replay, I/O modes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sr_cli.cli import app
from sr_cli.degrade.config import RealESRGANConfig
from sr_cli.degrade.pipeline import apply_realesrgan, derive_seed, realesrgan_batch


def _read(p: Path) -> np.ndarray:
    a = iio.imread(p)
    return a[:, :, None] if a.ndim == 2 else a


@pytest.mark.shared
@pytest.mark.parametrize("s", [2, 3, 4])
def test_bicubic_preset_reproduces_lr_bicubic(runner, shared_dir: Path, tmp_path: Path,
                                              s: int) -> None:
    for ds in ("Set5", "Set14"):
        out = tmp_path / ds / f"x{s}"
        r = runner.invoke(app, ["degrade", str(shared_dir / "data" / ds / "HR"), "-o", str(out),
                                "--scale", str(s), "-q"])
        assert r.exit_code == 0, r.output
        for p in sorted(out.iterdir()):
            ref = _read(shared_dir / "data" / ds / "LR_bicubic" / f"X{s}" / f"{p.stem}x{s}.png")
            got = _read(p)
            assert got.shape == ref.shape, p.name
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, p.name


def test_stdin_to_stdout_realesrgan_seeded_bytes(runner, make_image, write_png) -> None:
    src = write_png("a.png", make_image(96, 112, seed=1))
    data = src.read_bytes()
    args = ["degrade", "--order", "2", "--seed", "7", "-q"]
    r1 = runner.invoke(app, args, input=data)
    r2 = runner.invoke(app, args, input=data)
    assert r1.exit_code == 0, r1.output
    assert r1.stdout_bytes == r2.stdout_bytes
    lr = iio.imread(r1.stdout_bytes)
    assert lr.shape == (24, 28, 3)
    r3 = runner.invoke(app, ["degrade", "--order", "2", "--seed", "8", "-q"], input=data)
    assert r3.stdout_bytes != r1.stdout_bytes


def test_folder_order_independence_and_record_replay(runner, make_image, write_png,
                                                     tmp_path: Path) -> None:
    names = ["b.png", "a.png", "c.png"]
    for i, n in enumerate(names):
        write_png(f"in/{n}", make_image(96, 96, seed=10 + i))
    out = tmp_path / "out"
    rec = tmp_path / "rec.jsonl"
    r = runner.invoke(app, ["degrade", str(tmp_path / "in"), "-o", str(out), "--preset",
                            "realesrgan", "--seed", "3", "--record", str(rec), "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    # one file alone (different processing order / batch) gives the same bytes
    single = tmp_path / "single.png"
    r = runner.invoke(app, ["degrade", str(tmp_path / "in" / "c.png"), "-o", str(single),
                            "--preset", "realesrgan", "--seed", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert single.read_bytes() == (out / "c.png").read_bytes()
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert len(lines) == 3
    st = lines[0]["params"]["stages"][0]
    assert {"blur", "resize", "noise", "jpeg"} <= set(st)
    assert "order" in lines[0]["params"]["final"]
    assert lines[0]["seed"] == derive_seed(3, lines[0]["name"], 0)
    # replay with another seed reproduces exactly
    out2 = tmp_path / "out2"
    r = runner.invoke(app, ["degrade", str(tmp_path / "in"), "-o", str(out2), "--preset",
                            "realesrgan", "--seed", "999", "--replay", str(rec), "-q"])
    assert r.exit_code == 0, r.output
    for n in names:
        assert (out2 / n).read_bytes() == (out / n).read_bytes()


def test_pairs_and_repeat(runner, make_image, write_png, tmp_path: Path) -> None:
    src = write_png("p.png", make_image(99, 101, seed=2))
    pairs = tmp_path / "pairs"
    r = runner.invoke(app, ["degrade", str(src), "--pairs", str(pairs), "--preset", "classical",
                            "--repeat", "2", "--seed", "1", "-q"])
    assert r.exit_code == 0, r.output
    hr0, lr0 = _read(pairs / "HR" / "p_0.png"), _read(pairs / "LR" / "p_0.png")
    assert hr0.shape == (96, 100, 3) and lr0.shape == (24, 25, 3)
    assert not np.array_equal(lr0, _read(pairs / "LR" / "p_1.png"))


def test_gray_and_alpha_images(runner, make_image, write_png, tmp_path: Path) -> None:
    gray = write_png("g.png", make_image(64, 64, c=1, seed=3))
    rgba = write_png("r.png", make_image(64, 64, c=4, seed=4))
    for src, c in ((gray, 1), (rgba, 4)):
        for preset in ("bicubic", "classical"):
            dst = tmp_path / f"{src.stem}_{preset}.png"
            r = runner.invoke(app, ["degrade", str(src), "-o", str(dst), "--preset", preset,
                                    "-s", "2", "-q"])
            assert r.exit_code == 0, r.output
            assert _read(dst).shape == (32, 32, c)


def test_config_file_print_config_and_set(runner, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('preset = "realesrgan"\nscale = 2\n[realesrgan.stage1.noise]\n'
                   'sigma = [1.0, 10.0]\n')
    r = runner.invoke(app, ["degrade", "--config", str(cfg), "--set",
                            "realesrgan.final.sinc_prob=0.5", "--print-config"])
    assert r.exit_code == 0, r.output
    eff = json.loads(r.stdout)
    assert eff["preset"] == "realesrgan" and eff["scale"] == 2
    assert eff["realesrgan"]["stage1"]["noise"]["sigma"] == [1.0, 10.0]
    assert eff["realesrgan"]["final"]["sinc_prob"] == 0.5
    assert eff["realesrgan"]["stage2"]["blur"]["prob"] == 0.8
    jcfg = tmp_path / "c.json"
    jcfg.write_text(json.dumps({"realesrgan": {"order": 3}}))
    r = runner.invoke(app, ["degrade", "--config", str(jcfg), "--print-config"])
    assert json.loads(r.stdout)["realesrgan"]["order"] == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--scale", "5"],
        ["--preset", "fancy"],
        ["--set", "realesrgan.stage1.noise.sigma=[30,1]"],
        ["--set", "realesrgan.stage1.resize.probs=[0.5,0.5,0.5]"],
        ["--set", "realesrgan.stage2.blur.prob=1.5"],
        ["--set", "realesrgan.stage1.blur.kernel_types=[\"iso\",\"boxy\"]"],
        ["--set", "realesrgan.stage1.blur.kernel_probs=[1]"],
        ["--set", "nonsense.key=1"],
        ["--set", "realesrgan.stage1.blur.sizes=[8]"],
        ["--order", "2", "--preset", "bicubic"],
    ],
)
def test_bad_options_exit_2_and_write_nothing(runner, make_image, write_png, tmp_path: Path,
                                              args: list[str]) -> None:
    src = write_png("x.png", make_image(64, 64))
    dst = tmp_path / "out.png"
    r = runner.invoke(app, ["degrade", str(src), "-o", str(dst), *args])
    assert r.exit_code == 2, r.output
    assert not dst.exists()


def test_non_integer_scale_is_usage_error(runner, make_image, write_png, tmp_path) -> None:
    src = write_png("x.png", make_image(64, 64))
    r = runner.invoke(app, ["degrade", str(src), "-o", str(tmp_path / "o.png"), "-s", "2.5"])
    assert r.exit_code == 2, r.output


def test_too_small_images_exit_3(runner, make_image, write_png, tmp_path: Path) -> None:
    write_png("in/big.png", make_image(128, 128))
    write_png("in/tiny.png", make_image(20, 20))
    out = tmp_path / "out"
    r = runner.invoke(app, ["degrade", str(tmp_path / "in"), "-o", str(out), "--order", "2"])
    assert r.exit_code == 3, r.output
    assert "too small" in r.output
    # a folder is a batch: the bad file is named, the others are written (like sr upscale)
    assert "1 of 2 file(s) failed" in r.output and "tiny.png" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["big.png"]
    write_png("tiny6.png", make_image(6, 6))
    r = runner.invoke(app, ["degrade", str(tmp_path / "tiny6.png"), "-o",
                            str(tmp_path / "t.png"), "-s", "8", "--preset", "classical"])
    assert r.exit_code == 3, r.output
    assert not (tmp_path / "t.png").exists()


def test_batch_api_replay_and_shapes(make_image) -> None:
    imgs = [make_image(96, 96, seed=s) for s in range(3)]
    hr = torch.stack([torch.from_numpy(i.astype(np.float32) / 255).permute(2, 0, 1)
                      for i in imgs])
    cfg = RealESRGANConfig()
    gen = torch.Generator().manual_seed(0)
    lr, hr_usm, records = realesrgan_batch(hr, 4, cfg, gen)
    assert lr.shape == (3, 3, 24, 24) and hr_usm.shape == hr.shape
    assert torch.equal(torch.round(lr * 255) / 255, lr)  # 8-bit levels
    assert len({json.dumps(r["stages"][0]["resize"]) for r in records}) == 1  # shared resize
    lr2, _ = apply_realesrgan(hr, records, 4, cfg)
    assert torch.equal(lr, lr2)
    # one image replayed alone = the same as in the batch
    lr1, _ = apply_realesrgan(hr[1:2], records[1:2], 4, cfg)
    assert float((lr1 - lr[1:2]).abs().max()) <= 1 / 255 + 1e-6
    lr_mix, _, rec_mix = realesrgan_batch(hr, 4, cfg, gen, shared_resize=False)
    assert lr_mix.shape == lr.shape and len(rec_mix) == 3
