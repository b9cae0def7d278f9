"""Video in `sr upscale`: round trip of a generated clip (frames, timing, audio, subtitles),
resume after an interrupted run, VFR, frames folders, and clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sr_cli.archs.registry import build
from sr_cli.errors import InputError, UsageError
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.video import VideoOptions, mkvpipe, upscale_videos
from sr_cli.video.ffmpeg import ffmpeg_exe
from sr_cli.video.pipeline import parse_time
from sr_cli.video.probe import parse_ffmpeg_info, probe
from sr_cli.video.segments import work_dir_for
from sr_cli.zoo import LoadedModel, save_model

SRT = "1\n00:00:00,200 --> 00:00:00,900\nHello\n\n2\n00:00:01,000 --> 00:00:01,800\nWorld\n"
W, H, FPS, SECONDS = 33, 25, 10, 2


def ff(*args: str) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                         capture_output=True, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return res


def packets(path: Path, spec: str) -> list[str]:
    """Packet lines (timestamps, duration, size, md5) of the streams ``spec``, copied as is."""
    out = ff("-i", str(path), "-map", spec, "-c", "copy", "-f", "framemd5", "-").stdout.decode()
    return [ln for ln in out.splitlines() if ln and not ln.startswith("#")]


def frame_seconds(path: Path) -> list[float]:
    """Timestamps (s) of the decoded video frames, in display order."""
    out = ff("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-enc_time_base",
             "demux", "-f", "framecrc", "-").stdout.decode()
    tb = Fraction(1)
    ts = []
    for ln in out.splitlines():
        if ln.startswith("#tb 0:"):
            tb = Fraction(ln.split(":", 1)[1].strip())
        elif ln and not ln.startswith("#"):
            ts.append(float(int(ln.split(",")[2]) * tb))
    return ts


def decode_rgb(path: Path, w: int, h: int) -> np.ndarray:
    raw = ff("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-").stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 33x25, 10 fps H.264 (4:4:4, B-frames) + AAC audio + SRT subtitles, in mkv."""
    d = tmp_path_factory.mktemp("clip")
    (d / "s.srt").write_text(SRT)
    src = d / "src.mkv"
    ff("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}", "-f", "lavfi", "-i",
       "sine=frequency=440:sample_rate=8000", "-i", str(d / "s.srt"), "-t", str(SECONDS),
       "-map", "0:v", "-map", "1:a", "-map", "2:s", "-c:v", "libx264", "-pix_fmt", "yuv444p",
       "-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709",
       "-color_trc", "bt709", "-c:a", "aac", "-c:s", "srt", str(src))
    return src


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    torch.manual_seed(0)
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    return Upscaler(LoadedModel("tiny-srvgg", net.eval(), desc), InferenceOptions(device="cpu"))


def run(src: Path, dst: Path | str, up: Upscaler, **kw: object) -> dict:
    hooks = {k: kw.pop(k) for k in ("on_segment", "progress") if k in kw}
    s = upscale_videos([str(src)], str(dst), up, None, VideoOptions(**kw), **hooks)  # type: ignore[arg-type]
    assert not s.pop("_failures")
    return s


# -- the done-when round trip ------------------------------------------------------------------
def test_roundtrip_lossless_keeps_frames_timing_audio_subtitles(clip, upscaler, tmp_path):
    out = tmp_path / "out.mkv"
    seen: list[tuple[int, int]] = []
    s = run(clip, out, upscaler, codec="ffv1", segment_frames=8,
            progress=lambda d, t: seen.append((d, t)))
    rec = s["files"][0]
    assert rec["status"] == "ok" and rec["frames"] == FPS * SECONDS and rec["segments"] == 3
    assert rec["out_size"] == [2 * W, 2 * H]
    assert seen[-1] == (20, 20)
    # same frame count, same timestamps, same video duration
    assert frame_seconds(out) == pytest.approx(frame_seconds(clip), abs=1e-6)
    assert len(frame_seconds(out)) == FPS * SECONDS
    vin, vout = probe(clip), probe(out)
    assert vout.duration == pytest.approx(vin.duration, abs=0.011)
    # audio and subtitle packets byte-identical (data, timestamps, durations)
    assert packets(out, "0:a") == packets(clip, "0:a") and len(packets(clip, "0:a")) > 10
    assert packets(out, "0:s") == packets(clip, "0:s") and len(packets(clip, "0:s")) >= 2
    # each frame equals upscaling that frame as an image (independent decode through PNGs)
    ff("-i", str(clip), "-map", "0:v:0", "-fps_mode", "passthrough", str(tmp_path / "f%03d.png"))
    got = decode_rgb(out, 2 * W, 2 * H)
    assert got.shape[0] == FPS * SECONDS
    for i in (0, 1, 7, 8, 15, 16, 19):  # across segment boundaries
        img = iio.imread(tmp_path / f"f{i + 1:03d}.png")
        np.testing.assert_array_equal(got[i], upscaler.upscale_array(img))
    assert not work_dir_for(out).exists()


def test_resume_after_killed_run_matches_uninterrupted(clip, upscaler, tmp_path):
    full = tmp_path / "full.mkv"
    run(clip, full, upscaler, codec="ffv1", segment_frames=5)

    out = tmp_path / "out.mkv"

    def die_after_two(k: int) -> None:
        if k == 2:
            raise KeyboardInterrupt  # a killed run

    with pytest.raises(KeyboardInterrupt):
        run(clip, out, upscaler, codec="ffv1", segment_frames=5, on_segment=die_after_two)
    assert not out.exists()  # the final file appears only when complete
    work = work_dir_for(out)
    assert sorted(p.name for p in work.glob("seg_*.nut")) == ["seg_00000.nut", "seg_00001.nut"]

    done: list[int] = []
    s = run(clip, out, upscaler, codec="ffv1", segment_frames=5, resume=True,
            on_segment=done.append)
    assert s["files"][0]["resumed_segments"] == 2 and done == [3, 4]
    for spec in ("0:v", "0:a", "0:s"):
        assert packets(out, spec) == packets(full, spec)
    assert not work.exists()


def test_without_resume_an_old_work_folder_is_started_over(clip, upscaler, tmp_path):
    out = tmp_path / "out.mkv"

    def die(k: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(clip, out, upscaler, codec="ffv1", segment_frames=2, duration="0.5", on_segment=die)
    assert work_dir_for(out).is_dir()
    s = run(clip, out, upscaler, codec="ffv1", segment_frames=2, duration="0.5")
    assert s["files"][0]["resumed_segments"] == 0 and out.exists()


def test_mp4_libx264_keeps_colour_tags_and_mov_text(clip, upscaler, tmp_path):
    src = tmp_path / "src.mp4"
    ff("-i", str(clip), "-map", "0", "-c", "copy", "-c:s", "mov_text", str(src))
    out = tmp_path / "out.mp4"
    s = run(src, out, upscaler, crf=30, preset="ultrafast")
    rec = s["files"][0]
    assert rec["codec"] == "libx264" and rec["pix_fmt"] == "yuv420p"
    v = probe(out).video
    assert (v.color_range, v.colorspace) == ("tv", "bt709")
    assert v.codec == "h264" and (v.width, v.height) == (2 * W, 2 * H)
    assert packets(out, "0:a") == packets(src, "0:a")
    assert packets(out, "0:s") == packets(src, "0:s")
    assert frame_seconds(out) == pytest.approx(frame_seconds(src), abs=1e-6)


def test_srt_into_mp4_is_converted_and_noted(clip, upscaler, tmp_path):
    notes: list[str] = []
    s = upscale_videos([str(clip)], str(tmp_path / "o.mp4"), upscaler, None,
                       VideoOptions(preset="ultrafast", audio=False), on_note=notes.append)
    assert "subtitle:2:mov_text" in s["files"][0]["streams_copied"]
    assert any("converted to mov_text" in n for n in notes)
    kinds = [st.kind for st in probe(tmp_path / "o.mp4").streams]
    assert kinds == ["video", "subtitle"]  # --no-audio


def test_variable_frame_rate_is_preserved(upscaler, tmp_path):
    ts_ms = [0, 40, 60, 200, 210, 400, 433, 700]
    data = mkvpipe.header(W, H)
    rng = np.random.default_rng(0)
    for i, t in enumerate(ts_ms):
        dur = (ts_ms[i + 1] if i + 1 < len(ts_ms) else 800) - t
        data += mkvpipe.frame(rng.integers(0, 255, (H, W, 3), np.uint8).tobytes(),
                              t * 1_000_000, dur * 1_000_000)
    src = tmp_path / "vfr.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "matroska", "-i", "pipe:0",
                    "-fps_mode", "passthrough", "-enc_time_base", "1/1000", "-c:v", "ffv1",
                    str(src)], input=data, check=True)
    out = tmp_path / "out.mp4"
    run(src, out, upscaler, preset="ultrafast", segment_frames=3)
    assert frame_seconds(out) == pytest.approx([t / 1000 for t in ts_ms], abs=1e-6)


def test_start_and_duration_select_a_part(clip, upscaler, tmp_path):
    out = tmp_path / "part.mkv"
    s = run(clip, out, upscaler, codec="ffv1", start="0.5", duration="0.6", audio=False)
    assert s["files"][0]["frames"] == 6
    # the part starts at 0; subtitles that began before --start are dropped, not shifted
    assert frame_seconds(out) == pytest.approx([i / 10 for i in range(6)], abs=1e-3)
    subs = packets(out, "0:s")
    assert len(subs) >= 1 and int(subs[0].split(",")[2]) >= 0
    assert probe(out).of_kind("audio") == []


def test_fps_forces_a_constant_rate(clip, upscaler, tmp_path):
    out = tmp_path / "f.mkv"
    s = run(clip, out, upscaler, codec="ffv1", fps=5, audio=False, subtitles=False)
    assert s["files"][0]["frames"] == 10
    assert frame_seconds(out) == pytest.approx([i / 5 for i in range(10)], abs=1e-3)


def test_frames_folders_in_and_out(clip, upscaler, tmp_path):
    frames = tmp_path / "frames"
    run(clip, frames, upscaler, start="0", duration="0.5")
    files = sorted(frames.glob("frame_*.png"))
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(1, 6)]
    assert iio.imread(files[0]).shape == (2 * H, 2 * W, 3)

    back = tmp_path / "back.mkv"
    s = run(frames, back, upscaler, codec="ffv1", fps=5)
    assert s["files"][0]["frames"] == 5
    assert frame_seconds(back) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8], abs=1e-3)
    got = decode_rgb(back, 4 * W, 4 * H)
    np.testing.assert_array_equal(got[2], upscaler.upscale_array(iio.imread(files[2])))


# -- bad input: clear errors, no partial output -------------------------------------------------
def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not work_dir_for(out).exists() or not any(work_dir_for(out).glob("seg_*"))


def test_non_video_file_is_an_input_error(upscaler, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match="not a readable video"):
        run(bad, out, upscaler)
    _no_output(out)


def test_missing_video_stream_and_zero_frames(clip, upscaler, tmp_path):
    audio_only = tmp_path / "a.mkv"
    ff("-i", str(clip), "-map", "0:a", "-c", "copy", str(audio_only))
    with pytest.raises(InputError, match="no video stream"):
        run(audio_only, tmp_path / "o.mkv", upscaler)
    with pytest.raises(InputError, match="no frames"):
        run(clip, tmp_path / "o2.mkv", upscaler, start="30")
    _no_output(tmp_path / "o.mkv")
    _no_output(tmp_path / "o2.mkv")


def test_unknown_codec_and_existing_output(clip, upscaler, tmp_path):
    with pytest.raises(UsageError, match="unknown video codec"):
        run(clip, tmp_path / "o.mkv", upscaler, codec="nosuchcodec")
    _no_output(tmp_path / "o.mkv")
    (tmp_path / "x.mkv").write_bytes(b"keep")
    with pytest.raises(UsageError, match="exists"):
        run(clip, tmp_path / "x.mkv", upscaler)
    assert (tmp_path / "x.mkv").read_bytes() == b"keep"


def test_truncated_video_is_an_error_without_output(clip, upscaler, tmp_path):
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[:300])
    out = tmp_path / "o.mkv"
    with pytest.raises(InputError):
        run(cut, out, upscaler)
    _no_output(out)


# -- units ---------------------------------------------------------------------------------------
def test_parse_time():
    assert parse_time("12.5", "start") == 12.5
    assert parse_time("01:02", "start") == 62
    assert parse_time("1:00:01.5", "start") == 3601.5
    with pytest.raises(UsageError):
        parse_time("abc", "start")


def test_parse_ffmpeg_info_stream_line():
    text = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':\n"
        "  Duration: 00:00:02.00, start: 0.000000, bitrate: 52 kb/s\n"
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), "
        "yuv420p(tv, bt709/bt470bg/smpte170m, progressive), 1920x1080 [SAR 1:1 DAR 16:9], "
        "14 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)\n"
        "  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo\n"
        "  Stream #0:2[0x3](und): Video: mjpeg (Baseline), yuvj420p(pc), 300x300, 90k tbn "
        "(attached pic)\n"
    )
    info = parse_ffmpeg_info(text, Path("x.mp4"))
    assert info.format.startswith("mov") and info.duration == 2.0
    v = info.video
    assert (v.index, v.codec, v.width, v.height, v.pix_fmt) == (0, "h264", 1920, 1080, "yuv420p")
    assert (v.color_range, v.colorspace, v.color_primaries, v.color_trc) == (
        "tv", "bt709", "bt470bg", "smpte170m")
    assert v.fps == pytest.approx(29.97)
    assert [s.kind for s in info.streams] == ["video", "audio", "video"]
    assert info.streams[2].attached_pic


# -- through the CLI -----------------------------------------------------------------------------
def test_cli_upscale_video_json(clip, upscaler, runner, tmp_path):
    from sr_cli.cli import app

    model = tmp_path / "tiny.safetensors"
    save_model(model, upscaler.model.net, upscaler.model.desc, {})
    out = tmp_path / "cli.mkv"
    r = runner.invoke(app, ["upscale", str(clip), str(out), "-m", str(model), "--codec", "ffv1",
                            "--no-subtitles", "--json", "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["files"][0]["frames"] == 20 and summary["ok"] == 1
    # one JSON type per field across commands: scale fields are floats for video as for images
    assert type(summary["scale"]) is float and type(summary["native_scale"]) is float
    assert [s.kind for s in probe(out).streams] == ["video", "audio"]

    bad = tmp_path / "bad.mkv"
    bad.write_text("nope")
    r = runner.invoke(app, ["upscale", str(bad), str(tmp_path / "o.mkv"), "-m", str(model)])
    assert r.exit_code == 3, r.output
    assert "not a readable video" in r.output


def test_rotated_anamorphic_video_is_upright_with_its_aspect(upscaler, tmp_path):
    plain, rot = tmp_path / "p.mp4", tmp_path / "rot.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=40x24:rate=10", "-t", "0.5", "-c:v", "libx264",
       "-vf", "setsar=4/3", str(plain))
    ff("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rot))
    out = tmp_path / "o.mp4"
    s = run(rot, out, upscaler, preset="ultrafast")
    assert s["files"][0]["in_size"] == [24, 40]  # decoded upright
    v = probe(out).video
    assert (v.width, v.height) == (48, 80)
    assert "SAR 3:4" in v.line


def test_folder_of_videos_collects_failures(clip, upscaler, tmp_path):
    vids = tmp_path / "vids"
    vids.mkdir()
    ff("-i", str(clip), "-t", "0.3", "-c", "copy", str(vids / "a.mkv"))
    (vids / "b.mkv").write_bytes(b"garbage" * 100)
    out = tmp_path / "out"
    s = upscale_videos([str(vids)], str(out), upscaler, None,
                       VideoOptions(codec="ffv1", suffix="_x2"))
    failures = s.pop("_failures")
    assert (s["ok"], s["failed"]) == (1, 1) and len(failures) == 1
    assert isinstance(failures[0], InputError)
    assert (out / "a_x2.mkv").is_file() and not (out / "b_x2.mkv").exists()
    assert [f["status"] for f in s["files"]] == ["ok", "failed"]


@pytest.mark.parametrize("flags", [["--preset", "nosuch"], ["--crf", "-5"],
                                   ["--pix-fmt", "bogus"], ["--ffmpeg-args=-nosuchoption 1"]])
def test_encoder_settings_rejected_up_front(clip: Path, tmp_path: Path, runner,
                                            flags: list[str]) -> None:
    """Options the encoder rejects are a usage error before any frame is upscaled: exit 2,
    one line naming the encoder's complaint, no output and no work folder left behind."""
    from sr_cli.cli import app

    out = tmp_path / "out" / "o.mp4"
    r = runner.invoke(app, ["upscale", str(clip), str(out), "-m", "nearest", "-s", "2",
                                 *flags])
    assert r.exit_code == 2, r.output
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("sr: error:")]
    assert len(errs) == 1 and "rejects these settings" in errs[0] and " @ 0x" not in errs[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_baseline_without_scale_uses_its_own_factor(clip: Path, tmp_path: Path, runner) -> None:
    """`-m bicubic` with no -s upscales x4 (the baseline's default), as for images."""
    from sr_cli.cli import app
    from sr_cli.video.probe import probe

    out = tmp_path / "o.mkv"
    r = runner.invoke(app, ["upscale", str(clip), str(out), "-m", "nearest", "--codec", "ffv1"])
    assert r.exit_code == 0, r.output
    v = probe(out).video
    assert (v.width, v.height) == (33 * 4, 25 * 4)


# -- batched frames --------------------------------------------------------------------------
def _no_float_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a frame goes through the whole-image float path (float32 copies)."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a frame went through the float32 whole-image path")

    monkeypatch.setattr(Upscaler, "upscale_tensor", boom)
    monkeypatch.setattr(Upscaler, "run", boom)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    assert d.max() <= 1 and (d > 0).mean() <= 1e-3, (d.max(), (d > 0).mean())


@pytest.mark.parametrize("arch", ["srvgg", "rrdbnet-x2"])
def test_batched_frames_equal_single_frames_in_uint8(arch, monkeypatch):
    """Several frames per forward (the CUDA default, forced here): the same tiles of every
    frame go through the network together (srvgg; staged RRDBNet runs frame by frame), bands
    in uint8, never upscale_tensor/run; equal to each frame alone (odd sizes, native and
    non-native scale) up to the float rounding of a forward of another batch size (PyTorch's
    convolutions differ by 1 ulp between batch sizes): at most 1 level in at most 0.1% of
    the samples (identical in 8 bits on the development machine)."""
    from sr_cli.video.pipeline import upscale_frames

    torch.manual_seed(0)
    if arch == "srvgg":
        net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    else:
        net, desc = build("rrdbnet", num_block=1, num_feat=8, num_grow_ch=4, scale=2)
    lm = LoadedModel("tiny", net.eval(), desc, metadata={"context": "8"})
    up = Upscaler(lm, InferenceOptions(device="cpu", tile=12))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (27, 35, 3), dtype=np.uint8) for _ in range(3)]
    single = {s: [up.stream(f, s).collect() for f in frames] for s in (None, 3.0)}
    forwards: list[int] = []
    fwd = up._forward_prec
    monkeypatch.setattr(up, "_forward_prec",
                        lambda x, prec: forwards.append(x.shape[0]) or fwd(x, prec))
    _no_float_path(monkeypatch)
    for s in (None, 3.0):
        got = upscale_frames(up, frames, s)
        assert got.dtype == np.uint8 and got.shape == (3, *single[s][0].shape)
        for i in range(3):
            _close(got[i], single[s][i])
    if arch == "srvgg":  # tiles of all three frames per forward
        assert forwards and all(n % 3 == 0 for n in forwards), forwards
        for c in (3, 2):  # 16-bit RGB (batched), gray + alpha (frame by frame)
            deep = [(f.astype(np.uint16) * 257)[:, :, :c] for f in frames]
            got = up.upscale_frames(deep)
            for i in range(3):
                _close(got[i], up.stream(deep[i]).collect())
    else:
        assert up.staged_layout(28, 36) is not None and not forwards


def test_video_with_frame_batches_equals_single_frames(clip, upscaler, tmp_path, monkeypatch):
    """A lossless video with 3 frames per forward pass: frames equal to batch 1 (up to the
    float rounding of another forward batch size, as above)."""
    one, three = tmp_path / "one.mkv", tmp_path / "three.mkv"
    run(clip, one, upscaler, codec="ffv1", audio=False, subtitles=False)
    _no_float_path(monkeypatch)
    run(clip, three, upscaler, codec="ffv1", audio=False, subtitles=False, batch=3)
    _close(decode_rgb(three, 2 * W, 2 * H), decode_rgb(one, 2 * W, 2 * H))
