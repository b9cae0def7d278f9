"""`sr train distill`: the teacher cache (targets = teacher outputs, resumable, refused when
made from other settings) and a student trained from it."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from sr_cli.cli import app


@pytest.fixture
def hr_dir(tmp_path: Path, make_image, write_png) -> Path:
    for i in range(2):
        write_png(f"hr/img{i}.png", make_image(90, 84, seed=i))
    return tmp_path / "hr"


def _distill(runner, data: Path, out: Path, *extra: str, steps: int = 2):
    args = ["train", "distill", "--data", str(data), "--scale", "2", "--out", str(out),
            "--steps", str(steps), "-q",
            *[a for kv in ("teacher=srcnn-x2", "distill_pairs=10", "patch_size=24",
                           "batch_size=2", "degradation=bicubic", "arch_params.num_conv=2",
                           "arch_params.num_feat=8", "ckpt_every=1", "log_every=1", *extra)
              for a in ("--set", kv)]]
    return runner.invoke(app, args)


def test_cache_holds_teacher_outputs_and_the_student_trains(runner, hr_dir, tmp_path):
    out = tmp_path / "run"
    res = _distill(runner, hr_dir, out)
    assert res.exit_code == 0, res.output
    cache = out / "teacher_cache"
    lrs = sorted((cache / "lr").glob("*.png"))
    tgts = sorted((cache / "target").glob("*.png"))
    assert len(lrs) == len(tgts) == 10
    info = json.loads((cache / "info.json").read_text())
    assert info["teacher"] == "srcnn-x2" and info["degradation"] == "bicubic"
    import sr_cli

    for lp, tp in zip(lrs[:3], tgts[:3], strict=True):
        lr, tgt = iio.imread(lp), iio.imread(tp)
        assert lr.shape == (12, 12, 3) and tgt.shape == (24, 24, 3)
        teacher = sr_cli.upscale(lr, "srcnn-x2", tile=0, precision="fp32")
        assert np.abs(teacher.astype(int) - tgt.astype(int)).max() <= 1
    from sr_cli.zoo import read_weights

    _, meta = read_weights(out / "model.safetensors")
    assert meta["recipe"] == "distill" and meta["teacher"] == "srcnn-x2"


def test_interrupted_cache_resumes_and_other_settings_are_refused(runner, hr_dir, tmp_path):
    cache = tmp_path / "cache"
    res = _distill(runner, hr_dir, tmp_path / "a", f"teacher_cache={json.dumps(str(cache))}")
    assert res.exit_code == 0, res.output
    first = {p.name: p.read_bytes() for p in (cache / "target").glob("*.png")}
    (cache / "lr" / "000003.png").unlink()  # as if killed mid-build
    (cache / "target" / "000009.png").unlink()
    res = _distill(runner, hr_dir, tmp_path / "b", f"teacher_cache={json.dumps(str(cache))}")
    assert res.exit_code == 0, res.output
    again = {p.name: p.read_bytes() for p in (cache / "target").glob("*.png")}
    assert again == first  # the same pairs, bit for bit
    res = _distill(runner, hr_dir, tmp_path / "c", f"teacher_cache={json.dumps(str(cache))}",
                   "distill_hr_mix=0.5")
    assert res.exit_code == 2, res.output
    assert "other settings (hr_mix)" in res.output


def test_distill_needs_a_teacher_of_the_run_scale(runner, hr_dir, tmp_path):
    res = runner.invoke(app, ["train", "distill", "--data", str(hr_dir), "--scale", "2",
                              "--out", str(tmp_path / "r"), "--steps", "1"])
    assert res.exit_code == 2 and "teacher" in res.output
    res = _distill(runner, hr_dir, tmp_path / "r2", "teacher=srcnn-x3")
    assert res.exit_code == 2 and "x3" in res.output


def test_realesrgan_degraded_cache_is_seeded(runner, tmp_path, make_image, write_png):
    """The real-photo path: Real-ESRGAN-degraded crops, the same bytes for the same seed."""
    for i in range(2):
        write_png(f"hr4/img{i}.png", make_image(100, 96, seed=i))
    outs = []
    for run in ("a", "b"):
        res = runner.invoke(app, [
            "train", "distill", "--data", str(tmp_path / "hr4"), "--scale", "4", "--out",
            str(tmp_path / run), "--steps", "1", "-q",
            *[a for kv in ("teacher=srcnn-x4", "distill_pairs=2", "patch_size=80",
                           "batch_size=2", "arch_params.num_conv=2", "arch_params.num_feat=8")
              for a in ("--set", kv)]])
        assert res.exit_code == 0, res.output
        outs.append([p.read_bytes() for p in sorted((tmp_path / run / "teacher_cache" / "lr")
                                                    .glob("*.png"))])
    assert len(outs[0]) == 2 and outs[0] == outs[1]
    assert iio.imread(tmp_path / "a" / "teacher_cache" / "lr" / "000000.png").shape == (20, 20, 3)
