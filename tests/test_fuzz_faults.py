"""Adversarial audit, second round (issue 12): data loss, partial output, hangs, resource
blow-ups and misleading messages. Each test pins one class of fault at the shared layer
(sr_cli/io/atomic.py output policy, sr_cli/io/stdio.py, sr_cli/io/images.py + png16.py,
sr_cli/video/ffmpeg.py, sr_cli/archs/base.py, the CLI guard); docs/errors.md states the rules.

Fault injection uses what CI has: monkeypatched os.fsync / os.replace / os.write, FIFOs,
/dev/full, signals to a subprocess, a held flock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from sr_cli.archs.registry import build
from sr_cli.cli import app
from sr_cli.errors import ModelError, RuntimeFailure, UsageError
from sr_cli.io import atomic, images, png16

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # tests choose it
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def _errors(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("sr: error:")]


def _one_error(res, code: int) -> str:
    assert res.exit_code == code, res.output
    errs = _errors(res.stderr)
    assert len(errs) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return errs[0]


def _png(path: Path, arr: np.ndarray) -> Path:
    PILImage.fromarray(arr).save(path)
    return path


@pytest.fixture
def img(tmp_path: Path, make_image) -> Path:
    return _png(tmp_path / "in.png", make_image(24, 20, 3))


# ------------------------------------------------------------------ data loss: output policy


def test_record_onto_the_input_is_refused(runner: CliRunner, img: Path, tmp_path: Path) -> None:
    before = img.read_bytes()
    res = runner.invoke(app, ["degrade", str(img), "-o", str(tmp_path / "out.png"),
                              "--record", str(img), "--overwrite", "-s", "2"])
    assert "input of this run" in _one_error(res, 2)
    assert img.read_bytes() == before
    assert not (tmp_path / "out.png").exists()  # refused before any work


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_outputs_through_links_to_an_input_are_refused(runner: CliRunner, img: Path,
                                                         tmp_path: Path, how: str) -> None:
    link = tmp_path / "link.png"
    (os.symlink if how == "symlink" else os.link)(img, link)
    before = img.read_bytes()
    res = runner.invoke(app, ["degrade", str(img), "-o", str(tmp_path / "o.png"), "-s", "2",
                              "--record", str(link), "--overwrite"])
    _one_error(res, 2)
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(img), str(link),
                              "--overwrite"])
    _one_error(res, 2)
    assert img.read_bytes() == before


def test_pairs_and_weights_outputs_follow_the_same_policy(runner: CliRunner, img: Path,
                                                          tmp_path: Path) -> None:
    hr = tmp_path / "pairs" / "HR"
    hr.mkdir(parents=True)
    os.link(img, hr / "in.png")  # --pairs would write its HR copy over the input
    before = img.read_bytes()
    res = runner.invoke(app, ["degrade", str(img), "--pairs", str(tmp_path / "pairs"), "-s", "2",
                              "--overwrite"])
    _one_error(res, 2)
    assert img.read_bytes() == before
    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    from sr_cli.zoo import save_model

    w = tmp_path / "w.safetensors"
    save_model(w, net, desc)
    res = runner.invoke(app, ["models", "convert", str(w), str(tmp_path / "w2.safetensors")])
    assert res.exit_code == 0, res.output
    os.unlink(tmp_path / "w2.safetensors")
    os.symlink(w, tmp_path / "w2.safetensors")
    res = runner.invoke(app, ["models", "convert", str(w), str(tmp_path / "w2.safetensors"),
                              "--overwrite"])
    _one_error(res, 2)


def test_outputs_are_only_regular_files(runner: CliRunner, img: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(img), str(fifo),
                              "--overwrite"])
    assert "FIFO" in _one_error(res, 2)
    assert fifo.is_fifo()  # not replaced by a PNG
    sock_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    sock_path = sock_dir / f"sr-test-{os.getpid()}.png"
    srv = socket.socket(socket.AF_UNIX)
    try:
        srv.bind(str(sock_path))
        with pytest.raises(UsageError, match="socket"):
            atomic.atomic_write_bytes(sock_path, b"x")
    finally:
        srv.close()
        sock_path.unlink(missing_ok=True)
    with pytest.raises(UsageError, match="folder"):
        atomic.refuse_existing([tmp_path], overwrite=True)


def test_device_input_is_refused_and_streams_are_capped(runner: CliRunner, tmp_path: Path,
                                                        monkeypatch, make_image) -> None:
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "/dev/zero", str(tmp_path / "o.png")])
    assert "device" in _one_error(res, 3)
    monkeypatch.setattr(images, "MAX_STREAM_BYTES", 4096)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh, contextlib.suppress(BrokenPipeError):
            fh.write(b"\x89PNG" + b"\0" * 100_000)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    res = runner.invoke(app, ["upscale", "-m", "bicubic", str(fifo), str(tmp_path / "o.png")])
    t.join(timeout=10)
    assert "4096 bytes" in _one_error(res, 3)
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-", str(tmp_path / "o.png")],
                        input=b"\0" * 10_000)
    assert "4096 bytes" in _one_error(res, 3)


# ------------------------------------------------------------------ partial output: stdout


def test_stdout_short_writes_lose_nothing(tmp_path: Path, make_image) -> None:
    """A non-blocking stdout pipe with a slow reader (writes return short or EAGAIN) under
    PYTHONUNBUFFERED=1: every byte arrives and the PNG decodes."""
    src = _png(tmp_path / "noise.png",
               np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    r, w = os.pipe()
    os.set_blocking(w, False)
    proc = subprocess.Popen([sys.executable, "-m", "sr_cli", "upscale", "-m", "nearest", "-s",
                             "2", str(src), "-"], stdout=w, stderr=subprocess.PIPE,
                            env=_env(PYTHONUNBUFFERED="1"))
    os.close(w)
    chunks = []
    while True:
        time.sleep(0.002)
        b = os.read(r, 8192)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    data = b"".join(chunks)
    assert images.read_image(data).pixels.shape == (320, 320, 3)


def test_write_all_loops_over_short_writes(monkeypatch) -> None:
    from sr_cli.io import stdio

    r, w = os.pipe()
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: real(fd, bytes(b)[:7]))
    stdio.write_all(w, b"0123456789" * 30)
    os.close(w)
    got = b""
    while chunk := os.read(r, 4096):
        got += chunk
    os.close(r)
    assert got == b"0123456789" * 30


def test_closed_stdout_is_one_line(img: Path) -> None:
    res = subprocess.run(["bash", "-c", f'"{sys.executable}" -m sr_cli upscale -m bicubic '
                          f'-s 2 "{img}" - >&-'], capture_output=True, env=_env(), timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert len(_errors(err)) == 1 and "stdout is closed" in err, err
    assert "internal error" not in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_json_to_a_full_device(img: Path, unbuffered: str) -> None:
    with open("/dev/full", "wb") as full:
        res = subprocess.run([sys.executable, "-m", "sr_cli", "score", str(img), str(img),
                              "--psnr", "--json"], stdout=full, stderr=subprocess.PIPE,
                             env=_env(PYTHONUNBUFFERED=unbuffered), timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert len(_errors(err)) == 1 and "no space left" in err, err
    assert "Exception ignored" not in err and "Traceback" not in err


# ---------------------------------------------------------- partial output: atomic writes


@pytest.mark.parametrize("fault", ["fsync", "replace"])
def test_fsync_or_rename_error_fails_the_file(tmp_path: Path, monkeypatch, fault: str) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    code = errno.EIO if fault == "fsync" else errno.EXDEV  # any errno fails the file

    def boom(*_a, **_k):
        raise OSError(code, os.strerror(code), str(tmp_path / ".out.bin.sr-1-x.part"))

    monkeypatch.setattr(os, fault, boom)
    with pytest.raises(RuntimeFailure) as exc:
        atomic.atomic_write_bytes(target, b"new data")
    monkeypatch.undo()
    assert "out.bin" in exc.value.message and ".part" not in exc.value.message
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left


_SLOW_WRITE = """
import os, sys, time
from sr_cli.io import atomic
real = os.fsync
marker = sys.argv[1]
def slow(fd):
    open(marker, "w").close()  # the temporary file exists now
    time.sleep(60)
    real(fd)
atomic.os.fsync = slow
sys.argv = ["sr", *sys.argv[2:]]
from sr_cli.cli import main
main()
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Wait until ``path`` exists (the child reached the point under test); fail with the
    child's stderr if it ended first."""
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if not path.exists():
        err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
        raise AssertionError(f"{path.name} never appeared; stderr: {err}")


def test_sigterm_mid_write_exits_130_without_temp_files(img: Path, tmp_path: Path) -> None:
    marker = tmp_path / "writing"
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(marker), "upscale", "-m",
                             "bicubic", "-s", "2", str(img), str(out / "o.png")],
                            stderr=subprocess.PIPE, env=_env())
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert rc == 130, err
    assert "sr: interrupted" in err
    assert list(out.iterdir()) == []  # neither the output nor its .part


_SLOW_TILES = """
import sys, time
from sr_cli.infer import engine
real = engine.Upscaler._forward_prec
calls = sys.argv[1]
def slow(self, x, prec):
    with open(calls, "a") as f:
        f.write("t\\n")
    time.sleep(0.3)
    return real(self, x, prec)
engine.Upscaler._forward_prec = slow
sys.argv = ["sr", *sys.argv[2:]]
from sr_cli.cli import main
main()
"""


def test_sigterm_mid_image_stops_at_the_next_tile(tmp_path: Path, make_image) -> None:
    """A lone image's bands are computed on a prefetch thread beside the encoder; an interrupt
    stops that computation at its next tile, not at the end of the band (here one band of
    6 tiles, 0.3 s each), and leaves no output."""
    from sr_cli.zoo import save_model

    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    w = tmp_path / "w.safetensors"
    save_model(w, net, desc)
    src = _png(tmp_path / "wide.png", make_image(32, 640, 3))
    calls = tmp_path / "calls"
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_TILES, str(calls), "upscale", "-m",
                             str(w), "--tile", "32", str(src), str(out / "o.png")],
                            stderr=subprocess.PIPE, env=_env())
    _wait_for(calls, proc)
    proc.send_signal(signal.SIGTERM)
    at_signal = len(calls.read_text().splitlines())
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert rc == 130, err
    assert "sr: interrupted" in err and "Traceback" not in err
    assert len(calls.read_text().splitlines()) <= at_signal + 2  # of 6 in the band (6 without)
    assert list(out.iterdir()) == []


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".o.png.sr-{dead.pid}-{atomic._HOST}-1a2b3c4d.part"
    stale.write_bytes(b"half")
    live = tmp_path / f".p.png.sr-{os.getpid()}-{atomic._HOST}-99aa.part"
    live.write_bytes(b"mine, in progress")
    old = tmp_path / ".q.png.sr-1-000000-abcd.part"  # another host, two hours old
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    foreign = tmp_path / ".r.png.part"  # not ours: never touched
    foreign.write_bytes(b"y")
    atomic.atomic_write_bytes(tmp_path / "new.bin", b"data")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["new.bin", live.name, foreign.name])


# ------------------------------------------------------------------------ truncated inputs


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(
        ">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _bad_crc(data: bytes, ctype: bytes) -> bytes:
    i = data.index(ctype)
    length = struct.unpack(">I", data[i - 4:i])[0]
    end = i + 4 + length
    return data[:end] + bytes([data[end] ^ 0xFF]) + data[end + 1:]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_bad_crc_is_refused_at_every_depth(runner: CliRunner, tmp_path: Path, make_image,
                                               dtype) -> None:
    data = images.encode_image(images.Image(make_image(16, 16, 3, dtype=dtype)), "png")
    p = tmp_path / "crc.png"
    p.write_bytes(_bad_crc(data, b"IDAT"))
    res = runner.invoke(app, ["upscale", "-m", "bicubic", str(p), str(tmp_path / "o.png")])
    assert "CRC" in _one_error(res, 3)


@functools.lru_cache(maxsize=1)
def _bomb() -> bytes:
    """24 MiB of zeros deflated to ~24 KB: over the 8 MiB cap of one ancillary chunk."""
    return zlib.compress(b"\0" * (24 << 20), 9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("ctype", [b"zTXt", b"iCCP", b"iTXt"])
def test_png_ancillary_bombs_are_refused(runner: CliRunner, tmp_path: Path, make_image,
                                         dtype, ctype: bytes) -> None:
    data = images.encode_image(images.Image(make_image(16, 16, 3, dtype=dtype)), "png")
    bomb = _bomb()
    body = {b"zTXt": b"k\0\0" + bomb, b"iCCP": b"icc\0\0" + bomb,
            b"iTXt": b"k\0\1\0\0\0" + bomb}[ctype]
    at = data.index(b"IDAT") - 4
    p = tmp_path / "bomb.png"
    p.write_bytes(data[:at] + _chunk(ctype, body) + data[at:])
    res = runner.invoke(app, ["upscale", "-m", "bicubic", str(p), str(tmp_path / "o.png")])
    assert "MiB" in _one_error(res, 3)


def _faststart_mp4(path: Path) -> Path:
    from sr_cli.video import ffmpeg

    res = ffmpeg.run(["-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2", "-c:v", "libx264",
                      "-g", "10", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-y",
                      str(path)])
    assert res.returncode == 0, res.stderr
    return path


def test_truncated_video_with_index_at_front_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    full = _faststart_mp4(tmp_path / "full.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    res = runner.invoke(app, ["upscale", "-m", "nearest", "-s", "1", str(cut),
                              str(tmp_path / "o.mp4")])
    assert "ends early" in _one_error(res, 3)
    assert not (tmp_path / "o.mp4").exists()
    assert " @ 0x" not in res.stderr


def test_animated_gif_to_one_image_file_is_its_first_frame(runner: CliRunner,
                                                           tmp_path: Path) -> None:
    frames = [PILImage.new("RGB", (12, 10), c) for c in ("red", "blue", "green")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    out = tmp_path / "still.png"
    res = runner.invoke(app, ["upscale", "-m", "nearest", "-s", "2", str(gif), str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()  # a file, never a folder of frames named like the file
    assert "first frame" in res.stderr and "3 frames" in res.stderr
    px = images.read_image(out).pixels
    assert px.shape == (20, 24, 3) and tuple(px[0, 0]) == (255, 0, 0)
    video = _faststart_mp4(tmp_path / "v.mp4")
    res = runner.invoke(app, ["upscale", "-m", "nearest", "-s", "1", str(video),
                              str(tmp_path / "frame.png")])
    assert "folder" in _one_error(res, 2)
    assert not (tmp_path / "frame.png").exists()


def test_second_train_into_a_locked_run_folder_exits_2(runner: CliRunner, tmp_path: Path,
                                                       make_image) -> None:
    data = tmp_path / "hr"
    data.mkdir()
    for i in range(2):
        _png(data / f"i{i}.png", make_image(48, 48, seed=i))
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".sr-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a first `sr train --out run` holds
    try:
        res = runner.invoke(app, ["train", "srcnn", "--data", str(data), "--scale", "2",
                                  "--out", str(out), "--steps", "1", "--set", "patch_size=16",
                                  "--set", "batch_size=1", "--set", "arch_params.n1=4",
                                  "--set", "arch_params.n2=4"])
    finally:
        os.close(fd)
    assert "locked" in _one_error(res, 2)
    assert sorted(p.name for p in out.iterdir()) == [".sr-lock"]


# --------------------------------------------------------------- hangs and resource blow-ups


def test_ffmpeg_runs_are_bounded() -> None:
    from sr_cli.video import ffmpeg

    t0 = time.perf_counter()
    with pytest.raises(RuntimeFailure, match="did not finish"):
        ffmpeg.run(["-re", "-f", "lavfi", "-i", "color=c=gray:s=16x16:r=25", "-f", "null", "-"],
                   timeout=1)
    assert time.perf_counter() - t0 < 30


def test_trial_encode_with_an_extra_output_does_not_hang(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    from fractions import Fraction

    from sr_cli.video import encode

    enc = encode.EncodeSettings("libx264", "yuv420p", Fraction(1, 25),
                                ["-f", "null", "-y", "/dev/null"])
    t0 = time.perf_counter()
    encode.check_encoder(enc, 32, 32)  # used to run forever (the extra output had no end)
    assert time.perf_counter() - t0 < 60


def test_default_max_pixels_refuses_a_huge_header(runner: CliRunner, tmp_path: Path) -> None:
    """A 12000x12000 header (144 M pixels, ~6 GB of work) is refused by default before any
    decoding; --max-pixels 0 lifts the guard (then the tiny file is simply truncated)."""
    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
    p = tmp_path / "huge.png"
    p.write_bytes(png16.SIGNATURE + _chunk(b"IHDR", ihdr)
                  + _chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _chunk(b"IEND", b""))
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "0.01", str(p),
                              str(tmp_path / "o.png")])
    assert "--max-pixels" in _one_error(res, 3)
    assert images.DEFAULT_MAX_PIXELS <= 100_000_000
    res = runner.invoke(app, ["upscale", "--help"])
    assert "GB" in res.output


def _crafted_weights(path: Path, **hp) -> Path:
    from safetensors.torch import save

    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"arch": "srvgg", "hparams": json.dumps({**desc.hparams, **hp}), "scale": "2"}
    path.write_bytes(save(tensors, metadata=meta))
    return path


def test_crafted_metadata_is_refused_before_allocating(runner: CliRunner, img: Path,
                                                       tmp_path: Path) -> None:
    w = _crafted_weights(tmp_path / "huge.safetensors", num_feat=2 ** 20)
    res = runner.invoke(app, ["upscale", "-m", str(w), str(img), str(tmp_path / "o.png")])
    assert "parameters" in _one_error(res, 4)
    with pytest.raises(ModelError):
        build("rrdbnet", num_feat=2 ** 16, num_block=64)


# ------------------------------------------------------------------ exit codes and messages


def test_negative_model_scale_is_a_model_error(runner: CliRunner, img: Path,
                                               tmp_path: Path) -> None:
    w = _crafted_weights(tmp_path / "neg.safetensors", upscale=-2)
    res = runner.invoke(app, ["upscale", "-m", str(w), str(img), str(tmp_path / "o.png")])
    _one_error(res, 4)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_scale_is_a_usage_error(runner: CliRunner, img: Path, tmp_path: Path,
                                           value: str) -> None:
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", value, str(img),
                              str(tmp_path / "o.png")])
    _one_error(res, 2)


def test_recursive_rerun_does_not_eat_its_own_outputs(runner: CliRunner, tmp_path: Path,
                                                      make_image) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _png(src / "a.png", make_image(8, 8))
    _png(src / "sub" / "b.png", make_image(8, 8, seed=1))
    out = src / "out"
    args = ["upscale", "-m", "nearest", "-s", "2", "-r", str(src), str(out) + "/"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, [*args, "--skip-existing", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert len(summary["files"]) == 2 and summary["skipped"] == 2
    assert not (out / "out").exists()


def test_degrade_folder_with_one_bad_file_writes_the_others(runner: CliRunner, tmp_path: Path,
                                                            make_image) -> None:
    src = tmp_path / "hr"
    src.mkdir()
    _png(src / "a.png", make_image(16, 16))
    (src / "b.png").write_bytes(b"not an image")
    _png(src / "c.png", make_image(16, 16, seed=2))
    res = runner.invoke(app, ["degrade", str(src), "-o", str(tmp_path / "lr"), "-s", "2"])
    err = _one_error(res, 3)
    assert "1 of 3" in err and "b.png" in err
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["a.png", "c.png"]


def test_messages_show_no_library_reprs(tmp_path: Path) -> None:
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((8, 8), np.uint16))
    data = buf.getvalue()
    p = tmp_path / "bad.tif"
    p.write_bytes(data[:4] + b"\xff\xff\x00\x00" + data[8:])  # first-IFD offset past the end
    # a real process: in-process, pytest's own log capture would hide the raw record
    res = subprocess.run([sys.executable, "-m", "sr_cli", "upscale", "-m", "bicubic", str(p),
                          str(tmp_path / "o.png")], capture_output=True, env=_env(), timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 3 and len(_errors(err)) == 1, err
    assert "<tifffile" not in err and " @" not in err, err
    assert all(ln.startswith("sr: ") for ln in err.splitlines() if ln.strip()), err


def test_control_characters_in_paths_cannot_forge_lines(runner: CliRunner,
                                                        tmp_path: Path) -> None:
    evil = tmp_path / "x\nsr: error: forged\x1b[2J.png"
    evil.write_bytes(b"garbage")
    res = runner.invoke(app, ["upscale", "-m", "bicubic", str(evil), str(tmp_path / "o.png")])
    _one_error(res, 3)
    assert "\x1b" not in res.stderr and "\\n" in res.stderr
    res = runner.invoke(app, ["degrade", str(tmp_path), "-o", str(tmp_path / "lr"), "-s", "2"])
    assert res.exit_code == 3, res.output
    assert len(_errors(res.stderr)) == 1 and "\x1b" not in res.stderr


def test_errors_name_the_users_path_not_the_temp_file(runner: CliRunner, img: Path,
                                                      tmp_path: Path, monkeypatch) -> None:
    def deny(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", src)

    monkeypatch.setattr(os, "replace", deny)
    res = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(img),
                              str(tmp_path / "out.png")])
    err = _one_error(res, 1)
    assert "out.png" in err and ".part" not in err and ".sr-" not in err


def test_hparams_must_be_sane_integers() -> None:
    for bad in ({"num_feat": 0}, {"num_feat": 2.5}, {"upscale": -2}, {"num_conv": "4"}):
        with pytest.raises(ModelError):
            build("srvgg", **bad)
    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2.0)  # integral float: fine
    assert isinstance(net, torch.nn.Module) and desc.scale == 2
