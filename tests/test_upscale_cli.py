"""`sr upscale` through the real interface: pipes, files, folders, formats, channels, tiling,
scales, precision, errors and exit codes. Models are tiny random networks the tests make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.errors import UsageError
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel, load_model, save_model


def png_bytes(arr: np.ndarray) -> bytes:
    return bytes(iio.imwrite("<bytes>", arr, extension=".png"))


def decode(data: bytes) -> np.ndarray:
    return np.asarray(iio.imread(data))


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A random SRVGGNetCompact x2 (exact receptive field, so tiling must be exact)."""
    torch.manual_seed(1)
    net, desc = build("srvgg", num_feat=8, num_conv=3, upscale=2)
    for p in net.parameters():
        p.data.mul_(0.5)
    path = tmp_path / "tiny-x2.safetensors"
    save_model(path, net, desc, {"name": "tiny-x2"})
    return path


def test_pipe_stdin_stdout(runner, make_image):
    img = make_image(20, 24)
    r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2"], input=png_bytes(img))
    assert r.exit_code == 0, r.stderr
    out = decode(r.stdout_bytes)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    r = runner.invoke(app, ["upscale", "-", "-", "-m", "nearest", "-s", "3", "-f", "bmp"],
                      input=png_bytes(img))
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes[:2] == b"BM"
    assert (decode(r.stdout_bytes) == np.repeat(np.repeat(img, 3, 0), 3, 1)).all()


def test_real_subprocess_pipeline(tmp_path, make_image):
    src = tmp_path / "a.png"
    iio.imwrite(src, make_image(16, 16))
    cmd = f"cat {src} | {sys.executable} -m sr_cli upscale -m bicubic -s 2 > {tmp_path}/b.png"
    subprocess.run(cmd, shell=True, check=True)
    assert iio.imread(tmp_path / "b.png").shape == (32, 32, 3)


def test_file_to_file_and_native_scale(runner, tmp_path, write_png, make_image, tiny_model):
    a = write_png("a.png", make_image(18, 22))
    r = runner.invoke(app, ["upscale", str(a), str(tmp_path / "b.jpg"), "-m", str(tiny_model)])
    assert r.exit_code == 0, r.stderr
    assert iio.imread(tmp_path / "b.jpg").shape == (36, 44, 3)
    # any factor: network x2 then a resize to x3
    r = runner.invoke(app, ["upscale", str(a), str(tmp_path / "c.png"), "-m", str(tiny_model),
                            "-s", "3"])
    assert r.exit_code == 0, r.stderr
    assert iio.imread(tmp_path / "c.png").shape == (54, 66, 3)


def test_tiled_equals_untiled(runner, tmp_path, write_png, make_image, tiny_model):
    a = write_png("a.png", make_image(45, 70))
    outs = []
    for t in ("0", "32", "8"):
        dst = tmp_path / f"t{t}.png"
        r = runner.invoke(app, ["upscale", str(a), str(dst), "-m", str(tiny_model),
                                "--tile", t])
        assert r.exit_code == 0, r.stderr
        outs.append(iio.imread(dst).astype(int))
    assert np.abs(outs[0] - outs[1]).max() == 0
    assert np.abs(outs[0] - outs[2]).max() == 0


def test_folders_suffix_skip_overwrite(runner, tmp_path, write_png, make_image):
    write_png("in/a.png", make_image(8, 8, seed=1))
    write_png("in/sub/b.png", make_image(8, 10, seed=2))
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "in"), str(out), "-m", "bicubic", "-s", "2", "-r",
            "--suffix", "_x2", "--ext", "png"]
    r = runner.invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] == 2 and summary["model"] == "bicubic"
    assert (out / "a_x2.png").is_file() and (out / "sub" / "b_x2.png").is_file()
    before = (out / "a_x2.png").stat().st_mtime_ns
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.stderr  # exists, no --overwrite: refused before any work
    assert "exists (and 1 more)" in r.stderr and r.stderr.count("\n") == 1
    assert (out / "a_x2.png").stat().st_mtime_ns == before
    r = runner.invoke(app, args + ["--skip-existing", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == 2
    r = runner.invoke(app, args + ["--overwrite"])
    assert r.exit_code == 0, r.stderr


def test_bad_file_does_not_stop_batch(runner, tmp_path, write_png, make_image):
    write_png("in/a.png", make_image(8, 8))
    (tmp_path / "in" / "broken.png").write_bytes(png_bytes(make_image(8, 8))[:40])
    write_png("in/c.png", make_image(8, 8))
    r = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"),
                            "-m", "bicubic", "-s", "2"])
    assert r.exit_code == 3, r.stderr
    assert "broken.png" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_channels_kept(runner, tmp_path, write_png, make_image, tiny_model, channels):
    img = make_image(12, 14, c=channels)
    a = write_png("a.png", img)
    for extra in ([], ["--alpha", "bicubic"]):
        r = runner.invoke(app, ["upscale", str(a), str(tmp_path / "b.png"), "-m",
                                str(tiny_model), "--overwrite", *extra])
        assert r.exit_code == 0, r.stderr
        out = iio.imread(tmp_path / "b.png")
        assert (out.shape[2] if out.ndim == 3 else 1) == channels
        assert out.shape[:2] == (24, 28)


def test_no_colour_fringes_from_transparent_pixels(make_image):
    """Red hidden under alpha 0 must not bleed into the visible blue half."""
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 0)  # invisible red
    rgba[:, 8:] = (0, 0, 255, 255)  # visible blue
    model = load_model("bicubic", scale=4)
    out = Upscaler(model, InferenceOptions(device="cpu")).upscale_array(rgba, 4)
    visible = out[..., 3] > 0
    assert out[..., 0][visible].max() <= 1


def test_sixteen_bit_kept(runner, tmp_path, make_image):
    img = make_image(10, 12, dtype=np.uint16)
    from sr_cli.io.images import Image, write_image

    write_image(tmp_path / "a.png", Image(img))
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                            "-m", "nearest", "-s", "2"])
    assert r.exit_code == 0, r.stderr
    from sr_cli.io.images import read_image

    out = read_image(tmp_path / "b.png").pixels
    assert out.dtype == np.uint16
    assert (out[::2, ::2] == img).all()


def test_errors_and_exit_codes(runner, tmp_path, write_png, make_image, tiny_model):
    a = write_png("a.png", make_image(8, 8))
    cases = [
        (["upscale", str(a), str(tmp_path / "o.png"), "-m", "no-such-model"], 4),
        (["upscale", str(a), str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2",
          "--precision", "fp16", "--device", "cpu"], 2),
        (["upscale", str(a), str(tmp_path / "o.png"), "-m", "bicubic", "-s", "0"], 2),
        (["upscale", str(a), str(a), "-m", "bicubic", "-s", "2"], 2),
        (["upscale", str(a), str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2",
          "--max-pixels", "10"], 3),
        (["upscale", str(tmp_path / "missing.png"), str(tmp_path / "o.png")], 3),
        (["upscale", str(a), str(tmp_path / "o.png"), "-m", "bicubic", "-s", "2",
          "--alpha", "magic"], 2),
    ]
    if not torch.cuda.is_available():
        cases.append((["upscale", str(a), str(tmp_path / "o.png"), "--device", "cuda"], 2))
    for args, code in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == code, (args, r.stderr)
        assert r.stderr.startswith("sr: error:") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert not (tmp_path / "o.png").exists()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = runner.invoke(app, ["upscale", str(bad), str(tmp_path / "o.png"), "-m", "bicubic"])
    assert r.exit_code == 3 and not (tmp_path / "o.png").exists()
    # a 1-channel network cannot take an RGB image
    torch.manual_seed(0)
    net, desc = build("srvgg", num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2)
    gray_model = tmp_path / "gray.safetensors"
    save_model(gray_model, net, desc, {})
    r = runner.invoke(app, ["upscale", str(a), str(tmp_path / "o.png"), "-m", str(gray_model)])
    assert r.exit_code == 4 and "channel" in r.stderr
    r = runner.invoke(app, ["--traceback", "upscale", str(a), str(tmp_path / "o.png"),
                            "-m", "nope"])
    assert r.exit_code == 4 and "Traceback" in r.stderr


def test_unwritable_output(runner, tmp_path, write_png, make_image):
    """An output folder that cannot be made (a file stands in its place): exit 1, one line,
    nothing written. (Permission bits are not enforced for root, so this works everywhere.)"""
    a = write_png("a.png", make_image(8, 8))
    blocker = tmp_path / "file_not_folder"
    blocker.write_bytes(b"x")
    r = runner.invoke(app, ["upscale", str(a), str(blocker / "o.png"), "-m", "bicubic", "-s",
                            "2"])
    assert r.exit_code == 1, r.stderr
    assert r.stderr.startswith("sr: error:") and r.stderr.count("\n") == 1
    assert "file is in the way" in r.stderr and blocker.read_bytes() == b"x"


def test_refuses_binary_to_terminal(monkeypatch):
    from sr_cli.io import images

    monkeypatch.setattr(images, "stdout_is_terminal", lambda: True)
    with pytest.raises(UsageError, match="terminal"):
        images.write_stdout_bytes(b"\x89PNG")


def test_precision_bf16_and_nan_fallback(make_image):
    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    model = LoadedModel(name="t", net=net, desc=desc, metadata={}, source=None)
    x = torch.from_numpy(make_image(16, 16).astype(np.float32) / 255).permute(2, 0, 1)[None]
    ref = Upscaler(model, InferenceOptions(device="cpu", precision="fp32")).run(x)
    bf = Upscaler(model, InferenceOptions(device="cpu", precision="bf16")).run(x)
    assert (bf - ref).abs().max() < 0.05

    class NaNInHalf(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            y = self.inner(t)
            return y * float("nan") if t.dtype != torch.float32 else y

    warnings: list[str] = []
    m2 = LoadedModel(name="n", net=NaNInHalf(), desc=desc, metadata={}, source=None)
    out = Upscaler(m2, InferenceOptions(device="cpu", precision="bf16"),
                   on_warning=warnings.append).run(x)
    torch.testing.assert_close(out, ref)
    assert len(warnings) == 1 and "fp32" in warnings[0]


def test_python_api(make_image):
    import sr_cli

    img = make_image(10, 10)
    out = sr_cli.upscale(img, model="bicubic", scale=2)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    gray = sr_cli.upscale(img[:, :, 0], model="lanczos", scale=1.5)
    assert gray.shape == (15, 15)


def test_help_shows_network_vs_resize(runner):
    r = runner.invoke(app, ["upscale", "--help"])
    assert r.exit_code == 0
    assert "native scale" in r.stdout and "resize" in r.stdout


@pytest.mark.shared
def test_official_animevideov3_matches_reference(runner, shared_dir, tmp_path):
    """Uses ../shared: realesr-animevideov3.pth on Set14 LR_bicubic/X4 equals Real-ESRGAN's own
    inference (tile 0, fp32) within 1 level, untiled and with --tile 32. The reference is an
    independent transcription of Real-ESRGAN's SRVGGNetCompact forward and RealESRGANer's
    pre/post-processing (float32 /255, clamp, round)."""
    import torch.nn.functional as F
    from torch import nn

    weights = shared_dir / "weights" / "realesr-animevideov3.pth"
    sd = torch.load(weights, map_location="cpu", weights_only=True)["params"]
    body = nn.ModuleList([nn.Conv2d(3, 64, 3, 1, 1), nn.PReLU(64)])
    for _ in range(16):
        body.extend([nn.Conv2d(64, 64, 3, 1, 1), nn.PReLU(64)])
    body.append(nn.Conv2d(64, 48, 3, 1, 1))
    ref_net = nn.Module()
    ref_net.body = body
    ref_net.load_state_dict(sd)

    def reference(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            o = x
            for m in body:
                o = m(o)
            o = F.pixel_shuffle(o, 4) + F.interpolate(x, scale_factor=4, mode="nearest")
        return np.round(o.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    lr_dir = shared_dir / "data" / "Set14" / "LR_bicubic" / "X4"
    files = sorted(lr_dir.glob("*.png"))
    assert len(files) == 14
    model = load_model(str(weights))
    for tile in (0, 32):
        up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile))
        for f in files if tile == 0 else [f for f in files if f.stem in ("baboonx4", "pppx4")]:
            lr = iio.imread(f)
            if lr.ndim == 2:
                lr = np.stack([lr] * 3, -1)
            ours = up.upscale_array(lr[:, :, :3])
            diff = np.abs(ours.astype(int) - reference(lr[:, :, :3]).astype(int)).max()
            assert diff <= 1, (f.name, tile, diff)
    # and through the CLI, on the image the README names
    r = runner.invoke(app, ["upscale", str(lr_dir / "comicx4.png"), str(tmp_path / "c.png"),
                            "-m", str(weights), "--tile", "32"])
    assert r.exit_code == 0, r.stderr
    out = iio.imread(tmp_path / "c.png")
    assert out.shape == (360, 248, 3)
    assert np.abs(out.astype(int) - reference(iio.imread(lr_dir / "comicx4.png"))).max() <= 1


def test_metadata_orientation_and_palette_through_upscale(runner, tmp_path, make_image):
    """ICC and EXIF survive `sr upscale`; EXIF orientation is applied; palette PNGs work."""
    from PIL import Image as PILImage

    img = make_image(10, 16)
    icc = b"\x00\x00\x02\x0cfake-icc-profile-bytes" * 4
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x010F] = "sr-test-camera"
    src = tmp_path / "a.jpg"
    PILImage.fromarray(img).save(src, quality=95, icc_profile=icc, exif=exif.tobytes())
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "b.png"), "-m", "nearest",
                            "-s", "2"])
    assert r.exit_code == 0, r.stderr
    with PILImage.open(tmp_path / "b.png") as out:
        assert out.size == (20, 32)  # stored 16 wide x 10 high, upright 10x16, then x2
        assert out.info.get("icc_profile") == icc
        ex = out.getexif()
        assert ex.get(0x0112, 1) == 1 and ex.get(0x010F) == "sr-test-camera"
    pal = PILImage.fromarray(img).convert("P", palette=PILImage.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), str(tmp_path / "q.png"),
                            "-m", "nearest", "-s", "2"])
    assert r.exit_code == 0, r.stderr
    q = iio.imread(tmp_path / "q.png")
    assert q.shape == (20, 32, 3)
    assert (q[::2, ::2] == np.asarray(pal.convert("RGB"))).all()


def test_progress_goes_to_stderr_only(runner, tmp_path, make_image):
    img = make_image(12, 12)
    r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", "--tile", "4"],
                      input=png_bytes(img), env={"SR_PROGRESS": "1"})
    assert r.exit_code == 0, r.stderr
    assert decode(r.stdout_bytes).shape == (24, 24, 3)  # stdout is exactly one PNG
    r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", "-q"], input=png_bytes(img),
                      env={"SR_PROGRESS": "1"})
    assert r.exit_code == 0 and r.stderr == ""


@pytest.mark.parametrize("model", ["bicubic", "lanczos"])
def test_non_integer_scale_one_size_rule(model, tmp_path, make_image):
    """Colour and alpha, baselines and network+resize all use MATLAB's ceil(H*s) size rule."""
    import sr_cli

    rgba = make_image(15, 17, c=4)
    assert sr_cli.upscale(rgba, model=model, scale=1.5).shape == (23, 26, 4)
    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
    path = tmp_path / "m.safetensors"
    save_model(path, net, desc, {})
    up = Upscaler(load_model(str(path)), InferenceOptions(device="cpu"))
    assert up.upscale_array(rgba, 1.5).shape == (23, 26, 4)
    assert up.output_size(15, 17, 1.5) == (23, 26)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_warns(runner, tmp_path, tiny_model, make_image,
                                               monkeypatch, native):
    """--precision bf16 on a CPU without AVX512-BF16/AMX says once that it is the slow
    precision there (oneDNN emulates it); with native bf16, or in fp32, nothing is said."""
    from sr_cli.infer import device

    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    iio.imwrite(tmp_path / "a.png", make_image(12, 10))
    for prec, warned in (("bf16", not native), ("fp32", False)):
        r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), str(tmp_path / f"{prec}.png"),
                                "-m", str(tiny_model), "--precision", prec, "-q"])
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / f"{prec}.png").is_file()
        assert r.stderr.count("no native bf16") == int(warned), r.stderr
    assert device.emulated_bf16_warning(torch.device("cuda"), "bf16") is None
