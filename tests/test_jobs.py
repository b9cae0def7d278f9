"""Planning upscale work: INPUT... OUTPUT conventions, folders, names, safety rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sr_cli.errors import InputError, UsageError
from sr_cli.infer.jobs import plan_jobs, split_inputs_output


def test_split():
    assert split_inputs_output([], None) == ([], None)
    assert split_inputs_output(["a.png"], None) == (["a.png"], None)
    assert split_inputs_output(["a.png", "b.png"], None) == (["a.png"], "b.png")
    assert split_inputs_output(["a.png", "b.png"], "o/") == (["a.png", "b.png"], "o/")


def test_single_file_and_stdio(tmp_path, write_png, make_image):
    a = write_png("a.png", make_image(8, 8))
    (j,) = plan_jobs([str(a)], None)
    assert j.src == a and j.dst is None and j.fmt == "png"
    (j,) = plan_jobs([], "-", fmt="jpeg")
    assert j.src is None and j.dst is None and j.fmt == "jpeg"
    (j,) = plan_jobs([str(a)], str(tmp_path / "b.webp"))
    assert j.fmt == "webp"


def test_folder_names_recursive(tmp_path, write_png, make_image):
    write_png("in/a.png", make_image(8, 8))
    write_png("in/sub/b.png", make_image(8, 8))
    (tmp_path / "in" / "notes.txt").write_text("x")
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out"), suffix="_x4", ext="jpg")
    assert [j.dst.name for j in jobs] == ["a_x4.jpg"]
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out"), recursive=True)
    assert sorted(str(j.dst.relative_to(tmp_path / "out")) for j in jobs) == [
        "a.png", str(Path("sub") / "b.png")]


def test_refusals(tmp_path, write_png, make_image):
    a = write_png("a.png", make_image(8, 8))
    b = write_png("b.png", make_image(8, 8))
    with pytest.raises(UsageError, match="overwrite an input"):
        plan_jobs([str(a)], str(a))
    with pytest.raises(UsageError, match="output folder"):
        plan_jobs([str(a), str(b)], None)
    with pytest.raises(InputError):
        plan_jobs([str(tmp_path / "missing.png")], None)
    with pytest.raises(UsageError, match="format"):
        plan_jobs([str(a)], str(tmp_path / "out.xyz"))
    with pytest.raises(UsageError):
        plan_jobs(["-", str(a)], str(tmp_path / "o/"))
    c = write_png("c.jpg", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UsageError, match="both write"):
        plan_jobs([str(a), str(tmp_path / "a.png"), str(c)], str(tmp_path / "o/"))
    with pytest.raises(UsageError, match="overwrite an input"):
        plan_jobs([str(tmp_path)], str(tmp_path))
