"""`sr train` on a CPU out of the box: sized defaults with a note, no loss before there is
one, speed/ETA notes, Ctrl-C within a step with a usable model.safetensors, and
`sr train --resume RUN_DIR` alone."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import tomllib
import torch

from sr_cli.cli import app


@pytest.fixture
def data_dir(tmp_path: Path, make_image, write_png) -> Path:
    for i in range(3):
        write_png(f"hr/img{i}.png", make_image(96, 88, seed=i))
    return tmp_path / "hr"


TINY = ["--set", "arch_params.num_feat=8", "--set", "arch_params.num_block=1",
        "--set", "patch_size=32", "--set", "batch_size=2", "--set", "log_every=1",
        "--set", "ckpt_every=100000", "--set", "cache_mb=64"]


def _config(runner, *args: str) -> tuple[dict, str]:
    r = runner.invoke(app, ["train", "realesrnet", "--scale", "4", "--device", "cpu",
                            "--print-config", *args])
    assert r.exit_code == 0, r.output
    return tomllib.loads(r.stdout), r.stderr


def test_cpu_defaults_fit_memory_and_say_how_to_get_the_published_ones(runner) -> None:
    cfg, err = _config(runner)
    assert (cfg["batch_size"], cfg["patch_size"], cfg["pool_size"], cfg["cache_mb"]) == (
        4, 128, 60, 512)
    assert "batch_size 12 -> 4" in err and "patch_size 256 -> 128" in err
    assert "4 GB" in err and "--published" in err
    pub, err = _config(runner, "--published")
    assert (pub["batch_size"], pub["patch_size"], pub["pool_size"], pub["cache_mb"]) == (
        12, 256, 180, 2048)
    assert "training on a CPU" not in err
    mine, err = _config(runner, "--set", "batch_size=6")  # a setting you chose stays
    assert mine["batch_size"] == 6 and mine["patch_size"] == 128 and mine["pool_size"] == 180
    assert "batch_size" not in err


def test_progress_shows_no_loss_before_the_first_step(runner, data_dir, tmp_path,
                                                      monkeypatch) -> None:
    from rich.console import Console

    from sr_cli.commands import train as train_cmd

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    monkeypatch.setattr(train_cmd, "stderr_console", lambda: console)
    monkeypatch.setattr(train_cmd, "show_progress", lambda: True)
    r = runner.invoke(app, ["train", "srresnet", "--data", str(data_dir), "--scale", "2", "-o",
                            str(tmp_path / "run"), "--steps", "2", *TINY])
    assert r.exit_code == 0, r.output
    shown = buf.getvalue()
    assert "preparing data and the first step" in shown
    assert "nan" not in shown.lower()


def _interrupt_when(run: Path, lines: int, deadline_s: float = 120.0) -> threading.Thread:
    """SIGINT this process once RUN/metrics.jsonl has ``lines`` records (or at the deadline)."""

    def wait_and_kill() -> None:
        t0 = time.monotonic()
        log = run / "metrics.jsonl"
        while time.monotonic() - t0 < deadline_s:
            if log.exists() and len(log.read_text().splitlines()) >= lines:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=wait_and_kill, daemon=True)
    t.start()
    return t


def test_ctrl_c_stops_with_a_usable_model_and_resume_needs_only_the_folder(
        runner, data_dir, tmp_path, make_image, write_png) -> None:
    run = tmp_path / "run"
    args = ["train", "srresnet", "--data", str(data_dir), "--scale", "2", "-o", str(run),
            "--steps", "50000000", *TINY]
    killer = _interrupt_when(run, 5)
    r = runner.invoke(app, args)
    killer.join()
    assert r.exit_code == 130, r.output
    out = r.output
    assert "speed:" in out and "ETA" in out
    assert "would take about" in out and "--steps N" in out  # 5e7 steps: days on any CPU
    assert "nan" not in out.lower()
    assert "sr train --resume" in out
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 5
    # the stopped run folder is a model
    src = write_png("in.png", make_image(12, 10, seed=3))
    up = runner.invoke(app, ["upscale", str(src), str(tmp_path / "up.png"), "-m", str(run)])
    assert up.exit_code == 0, up.output
    # `--resume RUN_DIR` alone (data paths from the checkpoint), --steps extends
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(step + 2)])
    assert r.exit_code == 0, r.output
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == step + 2
    assert state["options"]["data"] == str(data_dir.resolve())
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == list(range(1, step + 3))
    # the old form still works: RECIPE ... --resume -o RUN_DIR with the same settings
    r = runner.invoke(app, [*args[:-len(TINY) - 2], "--steps", str(step + 3), *TINY,
                            "--resume"])
    assert r.exit_code == 0, r.output
    # flags that would change the run are refused, each difference listed
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(step + 9),
                            "--set", "lr=0.5", "--data", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "lr 0.0001 -> 0.5" in r.output and "--data" in r.output
    r = runner.invoke(app, ["train", "esrgan", "--resume", str(run)])
    assert r.exit_code == 2 and "recipe srresnet -> esrgan" in r.output, r.output
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "nothing to resume" in r.output, r.output


def test_stop_during_backward_saves_the_last_completed_step(
        runner, data_dir, tmp_path, make_image, write_png, monkeypatch) -> None:
    """A stop request that arrives while backward runs is acted on inside the pass (at a
    parameter's gradient hook), not after it; the checkpoint holds the last completed step and
    model.safetensors, written without the tiling-context probe, still upscales."""
    from sr_cli.train import loop

    n: dict[str, int] = {}
    calls: list[int] = []
    original = loop._signals_during_backward

    def counting(net):
        n["params"] = sum(1 for p in net.parameters() if p.requires_grad)
        return original(net)

    def point(param) -> None:
        calls.append(1)
        if len(calls) == 2 * n["params"] + n["params"] // 2:  # half-way through step 3
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "_signals_during_backward", counting)
    monkeypatch.setattr(loop, "_signal_point", point)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "esrgan-psnr", "--data", str(data_dir), "--scale", "2",
                            "-o", str(run), "--steps", "10", *TINY,
                            "--set", "arch_params.num_block=3", "--set",
                            "arch_params.num_grow_ch=4"])
    assert r.exit_code == 130, r.output
    assert len(calls) == 2 * n["params"] + n["params"] // 2  # step 3's backward went no further
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    from sr_cli.zoo import read_weights

    assert "context" not in read_weights(run / "model.safetensors")[1]  # measured on load
    src = write_png("in.png", make_image(12, 10, seed=3))
    up = runner.invoke(app, ["upscale", str(src), str(tmp_path / "up.png"), "-m", str(run)])
    assert up.exit_code == 0, up.output


def test_pool_changes_only_when_the_step_commits() -> None:
    """A step stopped before its update leaves the Real-ESRGAN pair pool untouched."""
    from sr_cli.train.loop import _Pool

    pool = _Pool(4)
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        pool(torch.full((2, 3, 2, 2), float(k)), torch.full((2, 3, 4, 4), float(k)), g)
        pool.commit()
    before = pool.state()
    out_lq, _ = pool(torch.full((2, 3, 2, 2), 9.0), torch.full((2, 3, 4, 4), 9.0), g)
    assert out_lq.shape == (2, 3, 2, 2) and not (out_lq == 9.0).all()
    after = pool.state()  # staged, not committed: the stored pool is the old one
    assert after["filled"] == before["filled"] == 4
    assert torch.equal(after["lq"], before["lq"]) and torch.equal(after["gt"], before["gt"])
    pool.commit()
    assert (pool.state()["lq"] == 9.0).any()
