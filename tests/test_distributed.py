"""Scaling out (sr_cli.distributed): the split rule, ``--shard K/N`` and real torchrun runs.

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
sr_cli ...`` (gloo on CPU, one thread per rank) and compare its outputs and JSON with a
single-process run of the same command. Each costs a few seconds of start-up; they are kept to
one per command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from sr_cli import distributed
from sr_cli.cli import app
from sr_cli.distributed import Shard, merge_batch_summaries, parse_shard
from sr_cli.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node N -m sr_cli ARGS`` on this worktree's code."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", SR_PROGRESS="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), "-m", "sr_cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def without_timing(obj):
    """A summary with its wall-clock fields removed (they differ run to run)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in ("seconds", "fps")}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_torchrun(monkeypatch):
    for k in TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def photos(tmp_path: Path, make_image) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        iio.imwrite(folder / f"img{i}.png", make_image(28 + 2 * i, 24, seed=i))
    return folder


# ----------------------------------------------------------------------------- the split rule
def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1/0", "-1/2", "1", "a/b", "1/2/3"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_split_is_a_partition_balanced_and_independent_of_listing_order():
    names = [f"f{i:03d}.png" for i in range(23)]
    shuffled = list(np.random.default_rng(0).permutation(names))
    for n in (1, 2, 3, 7, 30):
        parts = [Shard(k, n).pick(names, key=str) for k in range(n)]
        assert sorted(x for p in parts for x in p) == names  # every item exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # counts differ by <= 1
        for k in range(n):  # same owner whatever the listing order; original order kept
            again = Shard(k, n).pick(shuffled, key=str)
            assert sorted(again) == sorted(parts[k])
            assert again == [x for x in shuffled if x in set(parts[k])]
    assert Shard(1, 4).pick_indices(10) == [1, 5, 9]


def test_environment_and_device(monkeypatch, no_torchrun):
    assert distributed.current() == Shard() and not Shard().split
    assert distributed.current("1/3") == Shard(1, 3)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.current() == Shard()  # no MASTER_ADDR: not torchrun (as sr train)
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    part = distributed.current()
    assert (part.index, part.count, part.local_rank, part.gathers) == (2, 4, 1, True)
    assert not part.reports and part.device("cuda") == "cuda:1"
    assert part.device("cuda:0") == "cuda:0" and part.device("cpu") == "cpu"
    assert Shard(0, 2).device("cuda") == "cuda"  # --shard leaves devices alone
    with pytest.raises(UsageError, match="drop --shard"):
        distributed.current("0/2")


def test_merge_batch_summaries_orders_files_and_sums():
    a = {"model": "m", "files": [{"output": "c", "status": "ok"}], "ok": 1, "skipped": 0,
         "failed": 0, "seconds": 2.0, "_failures": []}
    err = InputError("b: bad")
    b = {"model": "m", "files": [{"output": "b", "status": "failed"},
                                 {"output": "a", "status": "skipped"}],
         "ok": 0, "skipped": 1, "failed": 1, "seconds": 3.0, "_failures": [err]}
    m = merge_batch_summaries([a, b], ["a", "b", "c"])
    assert [f["output"] for f in m["files"]] == ["a", "b", "c"]
    assert (m["ok"], m["skipped"], m["failed"], m["seconds"]) == (1, 1, 1, 3.0)
    assert m["_failures"] == [err] and m["model"] == "m"


# ----------------------------------------------------------------------------- --shard by hand
def test_upscale_shards_cover_the_batch_once_and_skip_existing_resumes(
        runner, photos, tmp_path, no_torchrun):
    full, parts = tmp_path / "full", tmp_path / "parts"
    r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(photos), str(full)])
    assert r.exit_code == 0, r.output
    seen = []
    for k in range(3):
        r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(photos), str(parts),
                                "--shard", f"{k}/3", "--json", "-q"])
        assert r.exit_code == 0, r.output
        seen += [Path(f["output"]).name for f in json.loads(r.stdout)["files"]]
    assert sorted(seen) == sorted(files_of(full)) and len(seen) == 5  # each file once
    assert files_of(parts) == files_of(full)
    # a restarted shard with --skip-existing continues: nothing is redone
    r = runner.invoke(app, ["upscale", "-m", "bicubic", "-s", "2", str(photos), str(parts),
                            "--shard", "1/3", "--skip-existing", "--json", "-q"])
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and s["ok"] == 0 and s["skipped"] == len(s["files"]) == 2


def test_degrade_shards_equal_one_run_and_record_per_shard(runner, photos, tmp_path,
                                                           no_torchrun):
    args = ["degrade", str(photos), "--preset", "classical", "-s", "2", "--seed", "7", "-q"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "one"), "--record",
                            str(tmp_path / "one.jsonl")])
    assert r.exit_code == 0, r.output
    lines = []
    for k in range(2):
        r = runner.invoke(app, [*args, "-o", str(tmp_path / "two"), "--shard", f"{k}/2",
                                "--record", str(tmp_path / "two.jsonl")])
        assert r.exit_code == 0, r.output
        lines += (tmp_path / f"two.{k}-of-2.jsonl").read_text().splitlines()
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert sorted(lines) == sorted((tmp_path / "one.jsonl").read_text().splitlines())
    # --skip-existing: a rerun writes nothing new and succeeds
    (tmp_path / "two" / "img3.png").unlink()
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "two"), "--skip-existing"])
    assert r.exit_code == 0, r.output
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "two"), "--skip-existing",
                            "--record", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "--record" in r.output


def test_score_shard_reports_its_own_images(runner, photos, tmp_path, no_torchrun):
    r = runner.invoke(app, ["score", str(photos), str(photos), "--psnr", "--json",
                            "--shard", "1/2"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert [i["name"] for i in obj["images"]] == ["img1.png", "img3.png"]
    r = runner.invoke(app, ["score", str(photos), str(photos), "--psnr", "--json",
                            "--shard", "5/6", "--fail-under", "psnr=99"])
    assert r.exit_code == 0, r.output  # an empty part measures nothing, so gates nothing
    assert json.loads(r.stdout)["images"] == []


# ----------------------------------------------------------------------------- torchrun
def test_torchrun_upscale_equals_one_process_and_a_bad_file_fails_the_launcher(
        runner, photos, tmp_path, no_torchrun):
    (photos / "broken.png").write_bytes(b"not an image")
    args = ["upscale", "-m", "bicubic", "-s", "2", str(photos), str(tmp_path / "out"), "--json"]
    one = runner.invoke(app, args)
    assert one.exit_code == 3, one.output  # a batch whose failures are all bad input
    (tmp_path / "out").rename(tmp_path / "one")  # same output path for both runs
    res = torchrun(args, tmp_path)
    (tmp_path / "out").rename(tmp_path / "two")
    assert res.returncode != 0, res.stderr  # torchrun exits 1 when a rank fails
    assert "exitcode  : 3" in res.stderr  # rank 0 carries sr's own code for the batch
    assert "1 of 6 file(s) failed" in res.stderr
    assert without_timing(json.loads(res.stdout)) == without_timing(json.loads(one.stdout))
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert len(files_of(tmp_path / "two")) == 5


def test_torchrun_degrade_bytes_do_not_depend_on_the_rank_count(runner, photos, tmp_path,
                                                                no_torchrun):
    args = ["degrade", str(photos), "--preset", "classical", "-s", "2", "--seed", "3"]
    one = runner.invoke(app, [*args, "-o", str(tmp_path / "one"), "--record",
                              str(tmp_path / "one.jsonl")])
    assert one.exit_code == 0, one.output
    res = torchrun([*args, "-o", str(tmp_path / "two"), "--record",
                    str(tmp_path / "two.jsonl")], tmp_path)
    assert res.returncode == 0, res.stderr
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert "sr degrade: 5 image(s)" in res.stderr  # rank 0 counts every rank's images


def test_torchrun_score_gathers_scores_and_means_once(runner, photos, tmp_path, no_torchrun,
                                                      make_image):
    sr = tmp_path / "sr"
    sr.mkdir()
    for i in range(5):  # SR = HR + a different small noise per image
        hr = iio.imread(photos / f"img{i}.png").astype(int)
        noise = np.random.default_rng(i).integers(-3 * (i + 1), 3 * (i + 1) + 1, hr.shape)
        iio.imwrite(sr / f"img{i}.png", np.clip(hr + noise, 0, 255).astype(np.uint8))
    args = ["score", str(sr), str(photos), "--psnr", "--ssim", "--json"]
    one = runner.invoke(app, args)
    assert one.exit_code == 0, one.output
    res = torchrun(args, tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(one.stdout)  # every float equal
    assert len(json.loads(res.stdout)["images"]) == 5


def test_torchrun_video_segments_across_ranks_joined_by_rank_0(runner, tmp_path, no_torchrun):
    """A clip with audio and subtitles, 4 segments of 5 frames over 2 ranks: the same frames,
    timestamps and copied streams as one process."""
    from tests.test_video import SRT, decode_rgb, ff, frame_seconds, packets

    (tmp_path / "s.srt").write_text(SRT)
    src = tmp_path / "src.mkv"
    ff("-f", "lavfi", "-i", "testsrc=size=24x16:rate=10", "-f", "lavfi", "-i",
       "sine=frequency=440:sample_rate=8000", "-i", str(tmp_path / "s.srt"), "-t", "2",
       "-map", "0:v", "-map", "1:a", "-map", "2:s", "-c:v", "libx264", "-pix_fmt", "yuv444p",
       "-c:a", "aac", "-c:s", "srt", str(src))
    args = ["upscale", str(src), str(tmp_path / "out.mkv"), "-m", "bicubic", "-s", "2",
            "--codec", "ffv1", "--segment-frames", "5", "--json"]
    one = runner.invoke(app, args)
    assert one.exit_code == 0, one.output
    (tmp_path / "out.mkv").rename(tmp_path / "one.mkv")
    res = torchrun(args, tmp_path)
    assert res.returncode == 0, res.stderr
    two = tmp_path / "out.mkv"
    assert without_timing(json.loads(res.stdout)) == without_timing(json.loads(one.stdout))
    assert json.loads(res.stdout)["files"][0]["segments"] == 4
    np.testing.assert_array_equal(decode_rgb(two, 48, 32), decode_rgb(tmp_path / "one.mkv",
                                                                      48, 32))
    assert frame_seconds(two) == frame_seconds(src) and len(frame_seconds(two)) == 20
    for spec in ("0:a", "0:s"):
        assert packets(two, spec) == packets(src, spec)
    assert not (tmp_path / ".out.mkv.sr-work").exists()
