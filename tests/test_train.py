"""`sr train`: every recipe runs on CPU with tiny settings, resume equality, bad input, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import torch
from safetensors.torch import load_file

from sr_cli.archs import get_arch
from sr_cli.cli import app
from sr_cli.train.recipes import RECIPES, recipe_config

SCALE = 2


def _tiny(recipe: str) -> list[str]:
    """--set arguments that shrink a recipe to a few-millisecond step."""
    cfg = recipe_config(recipe, SCALE)
    spec = get_arch(cfg.arch)
    tiny = {k: v for k, v in spec.extra["tiny"].items() if k not in ("scale", "upscale")}
    args = [f"arch_params.{k}={json.dumps(v)}" for k, v in tiny.items()]
    patch = 80 if cfg.degradation == "realesrgan" else 32
    args += [f"patch_size={patch}", "batch_size=2", "d_features=4", "log_every=1",
             "val_every=2", "ckpt_every=2", "cache_mb=64"]
    if cfg.pool_size:
        args.append("pool_size=4")
    if cfg.recipe == "distill":  # a shipped x2 model as the teacher, a tiny cache
        args += ["teacher=srcnn-x2", "distill_pairs=4"]
    if cfg.perceptual_layers:  # a shallow layer: VGG19 to conv5_4 dominates CPU time
        args.append("perceptual_layers.conv2_2=1.0")
    return [a for item in args for a in ("--set", item)]


@pytest.fixture
def data_dir(tmp_path: Path, make_image, write_png) -> Path:
    for i in range(3):
        write_png(f"hr/img{i}.png", make_image(96, 88, seed=i))
    return tmp_path / "hr"


@pytest.fixture
def val_dir(tmp_path: Path, make_image, write_png) -> Path:
    write_png("val/v0.png", make_image(40, 36, seed=9))
    return tmp_path / "val"


def _train(runner, recipe: str, data: Path, out: Path, *extra: str, steps: int = 2):
    args = ["train", recipe, "--data", str(data), "--scale", str(SCALE), "--out", str(out),
            "--steps", str(steps), "--perceptual", "random", *_tiny(recipe), *extra]
    return runner.invoke(app, args)


# ---------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_trains_a_few_steps(runner, recipe, data_dir, val_dir, tmp_path):
    out = tmp_path / "run"
    steps = 3 if RECIPES[recipe].settings(SCALE).get("pool_size") else 2
    res = _train(runner, recipe, data_dir, out, "--val", str(val_dir), steps=steps)
    assert res.exit_code == 0, res.output
    from sr_cli.zoo import load_model, read_weights

    loaded = load_model(str(out / "model.safetensors"))
    cfg = recipe_config(recipe, SCALE)
    assert loaded.desc.arch == cfg.arch
    assert loaded.desc.scale == SCALE
    _, meta = read_weights(out / "model.safetensors")
    assert meta["recipe"] == recipe
    assert meta["trained_steps"] == str(steps)
    assert meta["data"] == "hr"
    # distill trains on its teacher cache: data_images counts the cached pairs
    assert meta["data_images"] == ("4" if recipe == "distill" else "3")
    assert meta["perceptual"] == ("random" if cfg.uses_perceptual else "none")
    assert "psnr_y" in json.loads(meta["scores"])
    assert (out / "model_best.safetensors").is_file()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == list(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    if cfg.uses_gan:
        assert "l_d" in losses[0] and "l_g_gan" in losses[0]
    if cfg.uses_perceptual:
        assert "l_percep" in losses[0]
    lr_img = torch.rand(1, 3, 12, 12)
    assert loaded.net(lr_img).shape == (1, 3, 24, 24)


def test_perceptual_recipe_needs_vgg_weights_or_random(runner, data_dir, tmp_path):
    args = ["train", "esrgan", "--data", str(data_dir), "--scale", "2",
            "--out", str(tmp_path / "r"), "--steps", "1", *_tiny("esrgan")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "--vgg-weights" in res.output and "--perceptual random" in res.output
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_vgg_weights_file_is_used_and_recorded(runner, data_dir, tmp_path):
    from safetensors.torch import save_file

    from sr_cli.archs.vgg import load_vgg19

    vgg = load_vgg19(["conv5_4"], None, random_seed=3)
    path = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(path))
    res = runner.invoke(app, ["train", "esrgan", "--data", str(data_dir), "--scale", "2",
                              "--out", str(tmp_path / "r"), "--steps", "1",
                              "--vgg-weights", str(path), *_tiny("esrgan")])
    assert res.exit_code == 0, res.output
    from sr_cli.zoo import read_weights

    assert read_weights(tmp_path / "r" / "model.safetensors")[1]["perceptual"] == "vgg19"


# ---------------------------------------------------------------------------------- resume


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.parametrize("recipe", ["esrgan", "realesrnet-compact"])
def test_resume_equals_uninterrupted(runner, recipe, data_dir, tmp_path):
    """N steps in one go == N/2 steps, then --resume to N (bitwise on CPU)."""
    n = 4
    full, half = tmp_path / "full", tmp_path / "half"
    res = _train(runner, recipe, data_dir, full, steps=n)
    assert res.exit_code == 0, res.output
    res = _train(runner, recipe, data_dir, half, steps=n // 2)
    assert res.exit_code == 0, res.output
    res = _train(runner, recipe, data_dir, half, "--resume", steps=n)
    assert res.exit_code == 0, res.output
    a, b = _tensors(full / "model.safetensors"), _tensors(half / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = torch.load(full / "checkpoint.pt", weights_only=True)
    cb = torch.load(half / "checkpoint.pt", weights_only=True)
    assert ca["step"] == cb["step"] == n
    for k in ca["net_g"]:
        assert torch.equal(ca["net_g"][k], cb["net_g"][k]), k
    if ca.get("net_d"):
        for k in ca["net_d"]:
            assert torch.equal(ca["net_d"][k], cb["net_d"][k]), k
    log = (half / "metrics.jsonl").read_text().splitlines()
    steps_logged = [json.loads(x)["step"] for x in log]
    assert steps_logged == list(range(1, n + 1))


def test_resume_refuses_changed_settings_and_missing_checkpoint(runner, data_dir, tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "srcnn", "--data", str(data_dir), "--scale", "2",
                              "--out", str(out), "--steps", "2", "--resume", *_tiny("srcnn")])
    assert res.exit_code == 2, res.output
    assert "nothing to resume" in res.output
    assert _train(runner, "srcnn", data_dir, out).exit_code == 0
    res = _train(runner, "srcnn", data_dir, out, steps=4)
    assert res.exit_code == 2 and "--resume" in res.output, res.output
    res = _train(runner, "srcnn", data_dir, out, "--resume", "--set", "lr=0.5", steps=4)
    assert res.exit_code == 2 and "lr" in res.output, res.output


def test_corrupt_checkpoint_is_reported_not_restarted(runner, data_dir, tmp_path):
    out = tmp_path / "r"
    assert _train(runner, "srcnn", data_dir, out).exit_code == 0
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = (out / "model.safetensors").read_bytes()
    res = _train(runner, "srcnn", data_dir, out, "--resume", steps=4)
    assert res.exit_code == 4, res.output
    assert "corrupt" in res.output and "not restarting" in res.output
    assert (out / "model.safetensors").read_bytes() == before


def test_ctrl_c_saves_a_checkpoint_first(data_dir, tmp_path):
    from sr_cli.train.config import apply_overrides
    from sr_cli.train.loop import RunOptions, run_training

    cfg = recipe_config("srresnet", SCALE)
    tiny = {"arch_params": {"num_feat": 8, "num_block": 2}, "patch_size": 32, "batch_size": 2,
            "steps": 6, "ckpt_every": 100}
    cfg = apply_overrides(cfg, tiny, "test")
    out = tmp_path / "r"

    def interrupt(done: int, total: int, info: dict) -> None:
        if done == 3:
            raise KeyboardInterrupt

    notes: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, RunOptions(data=data_dir, out=out), progress=interrupt,
                     notify=notes.append)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    assert any("interrupted" in n for n in notes)
    res = run_training(cfg, RunOptions(data=data_dir, out=out, resume=True))
    assert res.step == 6


def test_sigterm_saves_a_checkpoint_like_ctrl_c(data_dir, tmp_path):
    """`kill PID` (SIGTERM) of a background `sr train` saves a checkpoint and raises
    KeyboardInterrupt (which the CLI guard maps to exit 130); the handler is restored."""
    import os
    import signal

    from sr_cli.train.config import apply_overrides
    from sr_cli.train.loop import RunOptions, run_training

    cfg = recipe_config("srresnet", SCALE)
    tiny = {"arch_params": {"num_feat": 8, "num_block": 2}, "patch_size": 32, "batch_size": 2,
            "steps": 6, "ckpt_every": 100}
    cfg = apply_overrides(cfg, tiny, "test")
    out = tmp_path / "r"
    before = signal.getsignal(signal.SIGTERM)

    def terminate(done: int, total: int, info: dict) -> None:
        if done == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, RunOptions(data=data_dir, out=out), progress=terminate)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == before


# ---------------------------------------------------------------------------------- bad input


def test_bad_inputs_fail_before_training(runner, tmp_path, make_image, write_png, data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _train(runner, "srcnn", empty, tmp_path / "a")
    assert res.exit_code == 3 and "no images" in res.output, res.output

    write_png("small/s.png", make_image(20, 20))
    res = _train(runner, "srcnn", tmp_path / "small", tmp_path / "b")
    assert res.exit_code == 3 and "smaller than the 32x32 patch" in res.output, res.output

    res = runner.invoke(app, ["train", "nosuch", "--data", str(data_dir), "--out", "x"])
    assert res.exit_code == 2 and "unknown recipe" in res.output, res.output

    res = _train(runner, "srcnn", data_dir, tmp_path / "c", "--set", "learning_rate=1")
    assert res.exit_code == 2 and "unknown setting" in res.output, res.output

    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text("batch_size = 2\nwarmup = 3\n")
    res = _train(runner, "srcnn", data_dir, tmp_path / "d", "--config", str(cfg_file))
    assert res.exit_code == 2 and "warmup" in res.output, res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_paired_lr_data_matching(runner, tmp_path, make_image, write_png, data_dir):
    from sr_cli.train.data import load_rgb, make_lr

    for p in sorted(data_dir.iterdir()):
        hr = load_rgb(p)
        write_png(f"lr/{p.stem}x2.png", make_lr(hr, 2))
    res = _train(runner, "srcnn", data_dir, tmp_path / "ok", "--lr-data", str(tmp_path / "lr"))
    assert res.exit_code == 0, res.output

    write_png("lr_missing/img0.png", make_image(48, 44, seed=0))
    res = _train(runner, "srcnn", data_dir, tmp_path / "m", "--lr-data",
                 str(tmp_path / "lr_missing"))
    assert res.exit_code == 3 and "img1" in res.output, res.output

    for i in range(3):
        write_png(f"lr_size/img{i}.png", make_image(40, 44, seed=i))
    res = _train(runner, "srcnn", data_dir, tmp_path / "s", "--lr-data", str(tmp_path / "lr_size"))
    assert res.exit_code == 3 and "needs 44x48" in res.output, res.output


def test_init_of_wrong_architecture_is_refused(runner, data_dir, tmp_path):
    src = tmp_path / "src"
    assert _train(runner, "srcnn", data_dir, src).exit_code == 0
    res = _train(runner, "srresnet", data_dir, tmp_path / "x", "--init",
                 str(src / "model.safetensors"))
    assert res.exit_code == 4 and "srcnn" in res.output and "srresnet" in res.output, res.output
    res = _train(runner, "srcnn", data_dir, tmp_path / "y", "--init",
                 str(src / "model.safetensors"), "--set", "arch_params.n1=16")
    assert res.exit_code == 4 and "does not match" in res.output, res.output
    res = _train(runner, "srcnn", data_dir, tmp_path / "z", "--init",
                 str(src / "model.safetensors"))
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------------------- config


def test_list_and_print_config_round_trip(runner, tmp_path):
    res = runner.invoke(app, ["train", "--list"])
    assert res.exit_code == 0, res.output
    for name in RECIPES:
        assert name in res.output
    res = runner.invoke(app, ["train", "esrgan", "--print-config"])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.stdout)
    assert data["gan_type"] == "ragan" and data["gan_weight"] == 0.005
    assert data["pixel_weight"] == 0.01 and data["ema"] == 0.999
    assert data["perceptual_layers"] == {"conv5_4": 1.0}
    assert data["arch_params"]["num_block"] == 23
    path = tmp_path / "esrgan.toml"
    path.write_text(res.stdout)
    res2 = runner.invoke(app, ["train", "esrgan", "--config", str(path), "--print-config"])
    assert res2.exit_code == 0 and res2.stdout == res.stdout, res2.output
    res3 = runner.invoke(app, ["train", "realesrgan", "--print-config", "--set", "lr=3e-5"])
    cfg = tomllib.loads(res3.stdout)
    assert cfg["lr"] == 3e-5 and cfg["discriminator"] == "unet" and cfg["usm_gt"] is True
    assert cfg["perceptual_layers"]["conv1_2"] == 0.1
    res4 = runner.invoke(app, ["train", "srcnn", "--print-config"])
    assert tomllib.loads(res4.stdout)["scale"] == 3


def test_plot_needs_matplotlib_or_draws(runner, data_dir, tmp_path):
    out = tmp_path / "r"
    assert _train(runner, "srcnn", data_dir, out).exit_code == 0
    res = runner.invoke(app, ["train", "plot", str(out)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.exit_code == 1 and "matplotlib" in res.output, res.output
    else:
        assert res.exit_code == 0, res.output
        assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["train", "plot", str(tmp_path)])
    assert res.exit_code == 3 and "metrics.jsonl" in res.output, res.output


# ---------------------------------------------------------------------------------- init, amp


def test_init_from_another_scale_loads_the_matching_tensors(runner, data_dir, tmp_path):
    """An x4 RRDBNet starts an x2 run: everything but the pixel-unshuffle conv_first loads."""
    src = tmp_path / "x4"
    args = ["train", "esrgan-psnr", "--data", str(data_dir), "--steps", "1",
            *_tiny("esrgan-psnr")]
    res = runner.invoke(app, [*args, "--scale", "4", "--out", str(src)])
    assert res.exit_code == 0, res.output
    dst = tmp_path / "x2"
    res = runner.invoke(app, [*args, "--scale", "2", "--out", str(dst), "--init",
                              str(src / "model.safetensors"), "--set", "lr=1e-12"])
    assert res.exit_code == 0, res.output
    assert "is x4, this run x2" in res.output and "conv_first.weight start fresh" in res.output
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    assert a["conv_first.weight"].shape != b["conv_first.weight"].shape
    same = [k for k in a if k != "conv_first.weight"]
    # lr 1e-12: loaded, then (almost) not trained
    assert same and all(torch.allclose(a[k], b[k], atol=1e-9) for k in same)


def test_bf16_autocast_trains_on_cpu(runner, data_dir, tmp_path):
    out = tmp_path / "run"
    res = _train(runner, "srresnet", data_dir, out, "--set", "amp=bf16", steps=3)
    assert res.exit_code == 0, res.output
    assert "applies on CUDA only" not in res.output
    from sr_cli.infer.device import native_bf16_cpu  # emulated bf16 is the slow one: said once

    assert res.output.count("no native bf16") == (0 if native_bf16_cpu() else 1), res.output
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs and all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    w = load_file(out / "model.safetensors")
    floats = [t for t in w.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # fp32 master weights
    res = _train(runner, "srresnet", data_dir, tmp_path / "r16", "--set", "amp=fp16")
    assert res.exit_code == 0 and "applies on CUDA only" in res.output, res.output
