"""Adversarial bad-input audit: every command fails with one `sr: error:` line on stderr, the
documented exit code, no traceback, and no partial or clobbered output.

Exit codes: 1 runtime, 2 usage, 3 bad input data, 4 model/weights, 5 threshold, 130 interrupted.
See docs/errors.md for the table these tests pin down.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sr_cli.archs.registry import build
from sr_cli.cli import app
from sr_cli.io import atomic, images
from sr_cli.zoo import save_model


def _err_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def _one_error(result, code: int) -> str:
    """Assert exit ``code``, exactly one `sr: error:` line, nothing on stdout, no traceback."""
    assert result.exit_code == code, result.output
    errs = [ln for ln in _err_lines(result) if ln.startswith("sr: error:")]
    assert len(errs) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Usage:" not in result.stderr
    assert " at 0x" not in result.stderr  # no Python object reprs in messages
    assert result.stdout == ""
    return errs[0]


@pytest.fixture
def files(tmp_path: Path, make_image) -> dict[str, Path]:
    """Good and bad inputs: images, weights, folders."""
    from PIL import Image

    d = tmp_path
    ok = d / "ok.png"
    Image.fromarray(make_image(16, 16, 3)).save(ok)
    data = ok.read_bytes()
    (d / "zero.png").write_bytes(b"")
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    (d / "text.png").write_text("hello, not an image\n")
    (d / "folder.png").mkdir()
    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    save_model(d / "a.safetensors", net, desc, {"name": "a"})
    torch.manual_seed(1)
    net_b, _ = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    save_model(d / "b.safetensors", net_b, desc, {"name": "b"})
    raw = (d / "a.safetensors").read_bytes()
    (d / "trunc.safetensors").write_bytes(raw[:-40])
    (d / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (d / "garbage.pth").write_bytes(b"garbage" * 10)
    net_nan, _ = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    with torch.no_grad():
        next(iter(net_nan.parameters())).fill_(float("nan"))
    save_model(d / "nan.safetensors", net_nan, desc)
    from safetensors.torch import save

    (d / "unknown.safetensors").write_bytes(save({"foo": torch.zeros(3)}))
    return {p.name: p for p in d.iterdir()} | {"dir": d}


@pytest.fixture
def evil_pth(tmp_path: Path) -> tuple[Path, Path]:
    """A .pth whose unpickling would create a marker file (a __reduce__ payload)."""
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"params": Payload()}, path)
    return path, marker


# --------------------------------------------------------------------------- usage (exit 2)


@pytest.mark.parametrize("args", [
    ["upscale", "x.png", "--quality", "500"],
    ["upscale", "x.png", "--no-such-option"],
    ["score"],
    ["degrade", "x.png", "--threads", "0"],
    ["nosuchcommand"],
    ["models", "nosuch"],
])
def test_click_usage_errors_are_one_line(runner: CliRunner, args: list[str]) -> None:
    line = _one_error(runner.invoke(app, args), 2)
    assert "--help" in line


@pytest.mark.parametrize("args,needle", [
    (["upscale", "{ok}", "-o", "{dir}/o.png", "-s", "1e-9"], "leaves no pixels"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "-s", "nan"], "--scale"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "--device", "tpu"], "tpu"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "--precision", "fp8"], "fp8"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "--format", "gif"], "gif"),
    (["upscale", "{ok}", "-o", "{dir}/o.xyz"], "--format"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "--alpha", "weird"], "weird"),
    (["upscale", "{ok}", "-o", "{dir}/o.png", "--tile", "-5"], "--tile"),
    (["upscale", "{ok}", "-o", "{ok}", "--overwrite"], "overwrite an input"),
    (["score", "{ok}", "{ok}", "--psnr", "--fail-under", "psnr=nan"], "NaN"),
    (["score", "{ok}", "{ok}", "--psnr", "--fail-under", "psnr=abc"], "not a number"),
    (["score", "{ok}", "{ok}", "--psnr", "--channel", "q"], "channel"),
    (["interp", "{a}", "{b}", "-a", "nan", "-o", "{dir}/i.safetensors"], "not a number"),
    (["interp", "{a}", "{b}", "-a", "1.5", "-o", "{dir}/i.safetensors"], "--extrapolate"),
    (["train", "srcnn", "--set", "lr=nan", "--print-config"], "finite"),
    (["train", "srcnn", "--set", "lr=-1", "--print-config"], "> 0"),
    (["train", "srcnn", "--set", "betas=[0.9]", "--print-config"], "betas"),
    (["train", "nosuchrecipe", "--print-config"], "unknown recipe"),
    (["models", "convert", "{a}", "{dir}/c.safetensors", "--scale", "0"], "scale"),
])
def test_bad_option_values_exit_2(runner: CliRunner, files, args: list[str],
                                  needle: str) -> None:
    fmt = {k.split(".")[0]: str(v) for k, v in files.items()}
    line = _one_error(runner.invoke(app, [a.format(**fmt) for a in args]), 2)
    assert needle in line
    assert not (files["dir"] / "o.png").exists()


def test_device_names_print_verbatim(runner: CliRunner, files) -> None:
    # rich turned "cuda:x:" into an emoji before the console was created with emoji=False
    res = runner.invoke(app, ["upscale", str(files["ok.png"]), "-o",
                              str(files["dir"] / "o.png"), "--device", "cuda:x"])
    assert res.exit_code == 2, res.output
    assert "cuda:x" in res.stderr and "\u274c" not in res.stderr


# --------------------------------------------------------------------------- bad data (exit 3)


@pytest.mark.parametrize("bad", ["zero.png", "trunc.png", "text.png", "missing.png"])
@pytest.mark.parametrize("cmd", ["upscale", "score", "degrade"])
def test_bad_images_exit_3(runner: CliRunner, files, bad: str, cmd: str) -> None:
    d = files["dir"]
    src = str(d / bad)
    args = {
        "upscale": ["upscale", src, "-o", str(d / "o.png")],
        "score": ["score", src, str(files["ok.png"]), "--psnr"],
        "degrade": ["degrade", src, "-o", str(d / "o.png")],
    }[cmd]
    line = _one_error(runner.invoke(app, args), 3)
    assert bad in line
    assert not (d / "o.png").exists()


def test_unknown_format_message_is_clean(runner: CliRunner, files) -> None:
    line = _one_error(runner.invoke(app, ["upscale", str(files["text.png"]), "-o",
                                          str(files["dir"] / "o.png")]), 3)
    assert "unknown format" in line


@pytest.mark.parametrize("stdin", [b"", b"not an image at all"])
def test_bad_stdin_exit_3(runner: CliRunner, files, stdin: bytes) -> None:
    res = runner.invoke(app, ["upscale", "-", "-o", str(files["dir"] / "o.png")], input=stdin)
    assert "<stdin>" in _one_error(res, 3)


def test_size_mismatch_exit_3(runner: CliRunner, files, make_image) -> None:
    from PIL import Image

    hr = files["dir"] / "hr.png"
    Image.fromarray(make_image(20, 16, 3)).save(hr)
    line = _one_error(runner.invoke(app, ["score", str(files["ok.png"]), str(hr), "--psnr"]), 3)
    assert "size mismatch" in line


def test_failed_run_keeps_existing_output(runner: CliRunner, files) -> None:
    out = files["dir"] / "o.png"
    out.write_bytes(b"precious")
    _one_error(runner.invoke(app, ["upscale", str(files["trunc.png"]), "-o", str(out),
                                   "--overwrite"]), 3)
    assert out.read_bytes() == b"precious"


# --------------------------------------------------------------------------- weights (exit 4)


@pytest.mark.parametrize("weights,needle", [
    ("nosuchmodel", "unknown model"),
    ("garbage.safetensors", "corrupt or truncated"),
    ("trunc.safetensors", "corrupt or truncated"),
    ("garbage.pth", "not a readable PyTorch checkpoint"),
    ("nan.safetensors", "NaN"),
    ("unknown.safetensors", "no known architecture"),
])
def test_bad_weights_exit_4(runner: CliRunner, files, weights: str, needle: str) -> None:
    w = str(files.get(weights, weights))
    for args in (["upscale", str(files["ok.png"]), "-o", str(files["dir"] / "o.png"), "-m", w],
                 ["models", "info", w]):
        assert needle in _one_error(runner.invoke(app, args), 4)
    assert not (files["dir"] / "o.png").exists()


def test_unsafe_pickle_is_refused_never_executed(runner: CliRunner, files, evil_pth) -> None:
    evil, marker = evil_pth
    d = files["dir"]
    for args in (["upscale", str(files["ok.png"]), "-o", str(d / "o.png"), "-m", str(evil)],
                 ["models", "info", str(evil)],
                 ["models", "convert", str(evil), str(d / "c.safetensors")],
                 ["interp", str(files["a.safetensors"]), str(evil), "-a", "0.5", "-o",
                  str(d / "i.safetensors")]):
        line = _one_error(runner.invoke(app, args), 4)
        assert "unsafe pickle" in line and "system" in line
    assert not marker.exists()
    assert not (d / "c.safetensors").exists() and not (d / "i.safetensors").exists()


def test_architecture_mismatch_exit_4(runner: CliRunner, files) -> None:
    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=4)
    save_model(files["dir"] / "x4.safetensors", net, desc)
    line = _one_error(runner.invoke(app, ["interp", str(files["a.safetensors"]),
                                          str(files["dir"] / "x4.safetensors"), "-a", "0.5",
                                          "-o", str(files["dir"] / "i.safetensors")]), 4)
    assert "upscale" in line


def test_library_warnings_are_one_line(runner: CliRunner, files) -> None:
    """A torch UserWarning shows as `sr: warning: ...`, without file/line noise."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(files["a.safetensors"]), "pt") as f:
        meta = dict(f.metadata())
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    hp = _json.loads(meta["hparams"])
    hp["num_feat"] = 0  # builds zero-element convolutions: torch warns
    meta["hparams"] = _json.dumps(hp)
    bad = files["dir"] / "zero_feat.safetensors"
    bad.write_bytes(save(sd, metadata=meta))
    res = runner.invoke(app, ["models", "info", str(bad)])
    assert res.exit_code == 4, res.output
    assert "UserWarning" not in res.stderr and ".py:" not in res.stderr


# --------------------------------------------------------------------------- runtime (exit 1)


def test_huge_scale_is_refused_not_killed(runner: CliRunner, files) -> None:
    out = files["dir"] / "o.png"
    line = _one_error(runner.invoke(app, ["upscale", str(files["ok.png"]), "-o", str(out),
                                          "-m", "bicubic", "-s", "1e6"]), 1)
    assert "GiB" in line
    assert not out.exists()


def test_unwritable_output_folder_exit_1(runner: CliRunner, files, tmp_path: Path) -> None:
    blocker = tmp_path / "file_not_folder"
    blocker.write_bytes(b"x")
    line = _one_error(runner.invoke(app, ["interp", str(files["a.safetensors"]),
                                          str(files["b.safetensors"]), "-a", "0.5", "-o",
                                          str(blocker / "i.safetensors")]), 1)
    assert "file_not_folder" in line


def _disk_full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("cmd", ["upscale", "degrade", "interp", "convert"])
def test_disk_full_exit_1_and_nothing_clobbered(runner: CliRunner, files, cmd: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    d = files["dir"]
    out = d / ("o.safetensors" if cmd in ("interp", "convert") else "o.png")
    out.write_bytes(b"precious")
    before = sorted(os.listdir(d))
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    args = {
        "upscale": ["upscale", str(files["ok.png"]), "-o", str(out), "--overwrite"],
        "degrade": ["degrade", str(files["ok.png"]), "-o", str(out), "-s", "2", "--overwrite"],
        "interp": ["interp", str(files["a.safetensors"]), str(files["b.safetensors"]),
                   "-a", "0.5", "-o", str(out), "--overwrite"],
        "convert": ["models", "convert", str(files["a.safetensors"]), str(out), "--overwrite"],
    }[cmd]
    line = _one_error(runner.invoke(app, args), 1)
    assert "no space left on device" in line and str(out) in line
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(d)) == before  # no temporary files left behind


def test_ctrl_c_exit_130_no_partial_output(runner: CliRunner, files,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from sr_cli.infer import engine, staged

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    # interrupted inside the network, while the streamed output file is open (the one-pass
    # tiles' forward, or the staged trunk of the default RRDBNet)
    monkeypatch.setattr(engine.Upscaler, "_forward_prec", interrupted)
    monkeypatch.setattr(staged, "run_head_and_trunk", interrupted)
    d = files["dir"]
    out = d / "o.png"
    res = runner.invoke(app, ["upscale", str(files["ok.png"]), "-o", str(out)])
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(d) if p.endswith(".part")]


def test_ctrl_c_during_write_keeps_old_file(runner: CliRunner, files,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    out = files["dir"] / "o.png"
    out.write_bytes(b"precious")
    monkeypatch.setattr(atomic.os, "replace", interrupted)
    res = runner.invoke(app, ["upscale", str(files["ok.png"]), "-o", str(out), "--overwrite"])
    assert res.exit_code == 130, res.output
    assert out.read_bytes() == b"precious"


def test_broken_pipe_is_quiet(runner: CliRunner, files,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(_data: bytes) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(images, "write_stdout_bytes", gone)
    res = runner.invoke(app, ["upscale", str(files["ok.png"]), "-o", "-"])
    assert res.exit_code == 1
    assert res.stderr.strip() == ""


def test_broken_pipe_real_process(tmp_path: Path) -> None:
    """`sr upscale ... -o - | head -c 10`: no traceback, no 'Exception ignored' at exit."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")  # x4 bicubic: ~600 kB, >> a pipe
    harness = (
        "import sys, sr_cli.io.images as im\n"
        "def w(data):\n"
        "    s = sys.stdout.buffer\n"
        "    for i in range(0, len(data), 4096):\n"
        "        s.write(data[i:i + 4096]); s.flush()\n"
        "im.write_stdout_bytes = w\n"  # chunked like a slow writer, so EPIPE surely happens
        "from sr_cli.cli import main\nmain()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", harness, "upscale", str(tmp_path / "noise.png"), "-o", "-",
         "-m", "bicubic"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10)[:4] == b"\x89PNG"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "Exception ignored" not in err


def test_image_bytes_never_to_a_terminal(runner: CliRunner, files,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "stdout_is_terminal", lambda: True)
    for args in (["upscale", str(files["ok.png"]), "-o", "-"],
                 ["models", "convert", str(files["a.safetensors"]), "-"]):
        assert "terminal" in _one_error(runner.invoke(app, args), 2)


def test_train_plot_to_stdout(runner: CliRunner, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    res = runner.invoke(app, ["train", "plot", str(run), "-o", "-"])
    assert res.exit_code == 0, res.output
    assert res.stdout_bytes.startswith(b"\x89PNG")
    assert not (Path.cwd() / "-").exists()


def test_interp_bad_preview_options_write_nothing(runner: CliRunner, files) -> None:
    out = files["dir"] / "blend"
    res = runner.invoke(app, ["interp", str(files["a.safetensors"]),
                              str(files["b.safetensors"]), "-a", "0.5", "-o", str(out),
                              "--preview", str(files["ok.png"]), "--tile", "-3"])
    _one_error(res, 2)
    assert not any(out.glob("*.safetensors")) if out.exists() else True


# --------------------------------------------------------------------------- --json


def test_json_outputs_parse(runner: CliRunner, files) -> None:
    d = files["dir"]
    res = runner.invoke(app, ["upscale", str(files["ok.png"]), str(files["zero.png"]), "-o",
                              str(d / "out"), "--json", "-m", "nearest"])
    assert res.exit_code == 3, res.output  # one failed item, bad data
    summary = json.loads(res.stdout)
    assert [f["status"] for f in summary["files"]] == ["ok", "failed"]
    assert summary["scale"] == 4.0  # a baseline reports its real factor, not 0
    assert sum("zero.png" in ln for ln in res.stderr.splitlines()
               if ln.startswith("sr: warning")) == 1
    assert "zero.png: zero.png" not in res.stderr
    for args in (["score", str(files["ok.png"]), str(files["ok.png"]), "--psnr", "--json"],
                 ["models", "list", "--json"],
                 ["models", "info", str(files["a.safetensors"]), "--json"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        json.loads(r.stdout)
    r = runner.invoke(app, ["score", str(files["ok.png"]), str(files["ok.png"]), "--psnr",
                            "--json"])
    assert json.loads(r.stdout)["mean"]["psnr"] is None  # identical images: inf -> null


def test_threshold_exit_5(runner: CliRunner, files) -> None:
    res = runner.invoke(app, ["score", str(files["ok.png"]), str(files["ok.png"]), "--psnr",
                              "--fail-over", "psnr=40"])
    assert res.exit_code == 5, res.output
    assert res.stdout  # the scores still go to stdout


def test_nan_output_is_refused(runner: CliRunner, files, monkeypatch) -> None:
    """A network that yields NaN (e.g. fp16 overflow) is an error, not a garbage image."""
    from sr_cli.infer import engine

    monkeypatch.setattr(engine.Upscaler, "_forward_prec",
                        lambda self, x, prec: torch.full(
                            (x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2),
                            float("nan")))
    out = files["dir"] / "o.png"
    line = _one_error(runner.invoke(app, ["upscale", str(files["ok.png"]), "-o", str(out),
                                          "-m", str(files["a.safetensors"])]), 4)
    assert "NaN" in line
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["upscale", "degrade", "interp", "interp-images", "convert"])
def test_existing_output_needs_overwrite(runner: CliRunner, files, cmd: str) -> None:
    """One rule for every command: an existing output is replaced only with --overwrite, and
    the refusal comes before any work (exit 2, file untouched)."""
    d = files["dir"]
    out = d / ("o.safetensors" if cmd in ("interp", "convert") else "o.png")
    out.write_bytes(b"precious")
    args = {
        "upscale": ["upscale", str(files["ok.png"]), "-o", str(out), "-m", "nearest", "-s", "2"],
        "degrade": ["degrade", str(files["ok.png"]), "-o", str(out), "-s", "2"],
        "interp": ["interp", str(files["a.safetensors"]), str(files["b.safetensors"]),
                   "-a", "0.5", "-o", str(out)],
        "interp-images": ["interp", "--images", str(files["ok.png"]), str(files["ok.png"]),
                          "-a", "0.5", "-o", str(out)],
        "convert": ["models", "convert", str(files["a.safetensors"]), str(out)],
    }[cmd]
    line = _one_error(runner.invoke(app, args), 2)
    assert "exists" in line and "--overwrite" in line
    assert out.read_bytes() == b"precious"
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != b"precious"
