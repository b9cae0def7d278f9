"""One interface across commands: INPUT... [OUTPUT] everywhere, readable help with an example
that parses, and the same JSON types for the same fields."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import imageio.v3 as iio
import pytest
import typer

from sr_cli.cli import app

BAD_METAVAR = re.compile(r"<(str|int|float|path|list\[[^\]]*\]|[a-z]+ range)>|\[\[")


def _walk(cmd, path=()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


def _commands():
    root = typer.main.get_command(app)
    return [(p, c) for p, c in _walk(root) if p]


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands()])
def test_every_help_has_an_example_and_readable_metavars(runner, path: str) -> None:
    r = runner.invoke(app, [*path.split(), "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output, f"sr {path} --help has no example"
    bad = BAD_METAVAR.findall(r.output)
    assert not bad, f"sr {path} --help shows unreadable metavars: {bad}\n{r.output}"


def _example_args(help_text: str) -> list[list[str]]:
    """Every `sr ...` command of the help's 'Example:' line, as argument lists."""
    line = next(ln for ln in help_text.splitlines() if "Example:" in ln)
    lex = shlex.shlex(line.split("Example:", 1)[1], posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out: list[list[str]] = []
    words: list[str] = []
    skip = False  # after a redirection: its target; after '(': a comment
    for tok in [*lex, ";"]:
        if tok in ("|", ";", "&&", "(", ")"):
            if "sr" in words:
                out.append(words[words.index("sr") + 1:])
            words, skip = [], tok == "("
        elif tok in (">", "<") or not skip:
            words.append(tok)
    return [[w for i, w in enumerate(a) if w not in "<>" and (i == 0 or a[i - 1] not in "<>")]
            for a in out]


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands()])
def test_every_help_example_parses(path: str) -> None:
    """The example uses the command's real options and arguments (Click parses it)."""
    root = typer.main.get_command(app)
    cmd = dict(_commands())[tuple(path.split())]
    examples = _example_args(cmd.help or "")
    assert examples, f"sr {path}: no runnable `sr ...` in the example"
    for args in examples:
        ctx = root.make_context("sr", list(args), resilient_parsing=False)
        node, rest, parent = root, list(args), ctx
        while getattr(node, "commands", None) and rest and rest[0] in node.commands:
            node = node.commands[rest[0]]
            parent = node.make_context(rest[0], rest[1:], parent=parent)
            rest = parent.protected_args + parent.args if hasattr(parent, "protected_args") \
                else parent.args
        assert node is not root, f"{args}: names no command"


def test_degrade_takes_a_trailing_output_like_upscale(runner, make_image, write_png,
                                                      tmp_path: Path) -> None:
    for n in ("a.png", "b.png"):
        write_png(f"hr/{n}", make_image(48, 40, seed=len(n)))
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    r = runner.invoke(app, ["degrade", "--preset", "bicubic", "--scale", "4", str(hr), str(lr),
                            "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in lr.iterdir()) == ["a.png", "b.png"]
    assert iio.imread(lr / "a.png").shape == (12, 10, 3)
    # file -> file, and the old -o form is the same thing
    r = runner.invoke(app, ["degrade", str(hr / "a.png"), str(tmp_path / "one.png"), "-s", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["degrade", str(hr / "a.png"), "-o", str(tmp_path / "two.png"),
                            "-s", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    # '-' is stdin / stdout
    r = runner.invoke(app, ["degrade", "-", "-", "-s", "2"], input=(hr / "a.png").read_bytes())
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == (tmp_path / "one.png").read_bytes()
    # three positionals: one input only
    r = runner.invoke(app, ["degrade", str(hr / "a.png"), str(hr / "b.png"), str(lr)])
    assert r.exit_code == 2, r.output
    assert "one INPUT" in r.output


def test_train_takes_output_and_keeps_out_as_alias(runner, tmp_path: Path) -> None:
    for flag in ("-o", "--output", "--out"):
        r = runner.invoke(app, ["train", "srcnn", "--data", str(tmp_path / "none"), flag,
                                str(tmp_path / "run")])
        # the run folder is accepted; the missing data folder is what fails (exit 3)
        assert r.exit_code == 3, (flag, r.output)
        assert "--data" in r.output


def _zoo_model(folder: Path, name: str, scale: int, psnr: float) -> None:
    import json

    from sr_cli import zoo
    from sr_cli.archs import build

    net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=scale)
    zoo.save_model(folder / f"{name}.safetensors", net, desc,
                   {"scores": json.dumps({"Set5": {"psnr_y": psnr}})})


def test_scale_without_model_picks_the_zoos_best_of_that_native_scale(
        runner, isolated_zoo, make_image, write_png, tmp_path: Path) -> None:
    import json

    _zoo_model(isolated_zoo, "a-x4", 4, 30.0)
    _zoo_model(isolated_zoo, "b-x2", 2, 33.0)
    _zoo_model(isolated_zoo, "c-x2", 2, 34.0)
    (isolated_zoo / "DEFAULT").write_text("a-x4\n")
    src = write_png("in.png", make_image(12, 10, seed=1))
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o2.png"), "-s", "2", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["model"] == "c-x2" and summary["native_scale"] == 2.0
    assert "c-x2" in r.stderr and "a-x4" in r.stderr  # the note says which, and the way back
    # an explicit x4 model at -s 2 runs x4 and shrinks (no substitution)
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o3.png"), "-s", "2", "-m",
                            "a-x4", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["model"] == "a-x4" and summary["native_scale"] == 4.0
    assert iio.imread(tmp_path / "o3.png").shape[:2] == (24, 20)
    # no model of native scale 3: the default runs and is resized
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o4.png"), "-s", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"] == "a-x4"


def test_json_scale_fields_have_one_type(runner, isolated_zoo, make_image, write_png,
                                         tmp_path: Path) -> None:
    """scale / native_scale: a float everywhere; null for the any-scale baselines."""
    import json

    _zoo_model(isolated_zoo, "a-x4", 4, 30.0)
    src = write_png("in.png", make_image(12, 10, seed=1))
    seen = []
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    seen += [s["scale"], s["native_scale"]]
    r = runner.invoke(app, ["upscale", str(src), str(tmp_path / "b.png"), "-m", "bicubic",
                            "-s", "2", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["native_scale"] is None and s["scale"] == 2.0
    seen.append(s["scale"])
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert {r["name"]: r["scale"] for r in rows}["bicubic"] is None
    seen += [r["scale"] for r in rows if r["scale"] is not None]
    info = json.loads(runner.invoke(app, ["models", "info", "a-x4", "--json"]).stdout)
    seen.append(info["scale"])
    assert json.loads(runner.invoke(app, ["models", "info", "bicubic", "--json"]).stdout)[
        "scale"] is None
    assert seen and all(type(v) is float for v in seen), seen


def test_readme_setup_command_writes_outside_the_repository(runner, tmp_path: Path) -> None:
    """The set-up line's `sr upscale IN OUT` writes OUT outside the checkout (no untracked
    file in the repository root), and the same command runs."""
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("```", 2)[1]
    cmd = setup.split("sr upscale", 1)[1].split("&&")[0].split()
    src, out = cmd[0], cmd[1]
    target = (repo / out).resolve()
    assert repo not in target.parents, f"README set-up writes {out} inside the repository"
    r = runner.invoke(app, ["upscale", str(repo / src), str(tmp_path / Path(out).name)])
    assert r.exit_code == 0, r.output
    assert iio.imread(tmp_path / Path(out).name).shape[:2] == tuple(
        4 * n for n in iio.imread(repo / src).shape[:2])


def test_quiet_holds_for_one_invocation_only(runner, make_image, write_png,
                                             tmp_path: Path) -> None:
    """-q is per command: the next command run in the same process prints its notes again
    (the guard resets the message settings at the start of every invocation)."""
    src = write_png("in/a.png", make_image(16, 12, seed=3))
    write_png("in/b.png", make_image(16, 12, seed=4))
    r = runner.invoke(app, ["degrade", str(src), str(tmp_path / "q.png"), "-s", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    r = runner.invoke(app, ["degrade", str(src), str(tmp_path / "n.png"), "-s", "2"])
    assert r.exit_code == 0, r.output
    assert "sr degrade: 1 image(s)" in r.stderr, r.stderr
    # after a quiet run, commands whose notes used to inherit it (train, interp, fetch)
    # print them again
    for quiet_run in (["upscale", str(src.parent), str(tmp_path / "up"), "-m", "bicubic",
                       "-s", "2", "-q"],
                      ["train", "realesrnet", "--device", "cpu", "--print-config", "-q"]):
        r = runner.invoke(app, quiet_run)
        assert r.exit_code == 0 and r.stderr == "", r.output
        r = runner.invoke(app, ["train", "realesrnet", "--device", "cpu", "--print-config"])
        assert r.exit_code == 0, r.output
        assert "training on a CPU" in r.stderr, r.stderr
    r = runner.invoke(app, ["upscale", str(src.parent), str(tmp_path / "up2"), "-m", "bicubic",
                            "-s", "2"])
    assert r.exit_code == 0, r.output
    assert "2 written" in r.stderr, r.stderr


def test_dash_is_stdin_and_stdout_for_every_command(runner, isolated_zoo, make_image, write_png,
                                                    tmp_path: Path) -> None:
    """'-' for stdin/stdout in upscale, degrade, score, interp and models convert; interp and
    convert take the output as the last positional or -o, like upscale and degrade."""
    import json

    from sr_cli.zoo import read_weights

    png = write_png("in.png", make_image(16, 12, seed=5)).read_bytes()
    r = runner.invoke(app, ["upscale", "-", "-", "-m", "bicubic", "-s", "2"], input=png)
    assert r.exit_code == 0, r.output
    assert iio.imread(r.stdout_bytes).shape == (32, 24, 3)
    r = runner.invoke(app, ["degrade", "-", "-", "-s", "2"], input=png)
    assert r.exit_code == 0 and iio.imread(r.stdout_bytes).shape == (8, 6, 3), r.output
    r = runner.invoke(app, ["score", "-", str(tmp_path / "in.png"), "--json"], input=png)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mean"]["ssim"] == 1.0  # the same image
    # interp: A B OUTPUT == A B -o OUTPUT; --images to stdout
    _zoo_model(isolated_zoo, "a-x2", 2, 30.0)
    _zoo_model(isolated_zoo, "b-x2", 2, 31.0)
    r = runner.invoke(app, ["interp", "a-x2", "b-x2", str(tmp_path / "p.safetensors"),
                            "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["interp", "a-x2", "b-x2", "-o", str(tmp_path / "o.safetensors"),
                            "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    tp, to = (read_weights(tmp_path / f"{n}.safetensors")[0] for n in "po")
    assert tp.keys() == to.keys() and all(tp[k].equal(to[k]) for k in tp)
    r = runner.invoke(app, ["interp", "a-x2", "b-x2", str(tmp_path / "x.safetensors"), "-o",
                            str(tmp_path / "y.safetensors")])
    assert r.exit_code == 2, r.output
    write_png("b.png", make_image(16, 12, seed=6))
    r = runner.invoke(app, ["interp", "--images", str(tmp_path / "in.png"),
                            str(tmp_path / "b.png"), "-", "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    assert iio.imread(r.stdout_bytes).shape == (16, 12, 3)
    # models convert: SRC DST, SRC -o DST, '-' in and out
    model = (isolated_zoo / "a-x2.safetensors").read_bytes()
    r = runner.invoke(app, ["models", "convert", "-", "-"], input=model)
    assert r.exit_code == 0, r.output
    (tmp_path / "c.safetensors").write_bytes(r.stdout_bytes)
    r = runner.invoke(app, ["models", "convert", str(isolated_zoo / "a-x2.safetensors"), "-o",
                            str(tmp_path / "d.safetensors")])
    assert r.exit_code == 0, r.output
    tc, td = (read_weights(tmp_path / f"{n}.safetensors")[0] for n in "cd")
    assert tc.keys() == td.keys() and all(tc[k].equal(td[k]) for k in tc)
    r = runner.invoke(app, ["models", "convert", "-", "-"], input=b"not a checkpoint")
    assert r.exit_code == 4 and "<stdin>" in r.output and "sr-convert-" not in r.output, r.output


def _example_inputs(path: str, cwd: Path, make_image, shared: Path | None) -> list[str] | None:
    """Create the files the example of `sr PATH --help` reads (in ``cwd``); extra arguments
    that keep it short (None: the example needs the network)."""
    import imageio.v3 as iio

    def img(rel: str, h: int = 48, w: int = 40, seed: int = 0) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(cwd / rel, make_image(h, w, seed=seed))

    if path == "upscale":
        img("photo.jpg", 12, 10)
    elif path == "degrade":
        img("hr/a.png")
    elif path == "score":
        img("out/baby.png", seed=1)
        img("Set5/HR/baby.png", seed=2)
    elif path == "train":
        img("train/a.png", 64, 64)
        img("Set5/HR/b.png", 24, 24)
        return ["--time-limit", "1", "--set", "val_every=1"]  # a real run, one second long
    elif path == "models info":
        if shared is None:
            return None
        (cwd / "weights").mkdir()
        (cwd / "weights" / "realesr-animevideov3.pth").symlink_to(
            shared / "weights" / "realesr-animevideov3.pth")
    elif path == "models convert":
        import torch

        from sr_cli.archs import build

        net, _ = build("rrdbnet", num_block=1, num_feat=8, num_grow_ch=4, scale=4)
        torch.save({"params_ema": net.state_dict()}, cwd / "RealESRGAN_x4plus.pth")
    elif path == "models fetch":
        return None  # downloads: the only networked command
    return []


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands()])
def test_every_help_example_runs(path: str, runner, make_image, tmp_path: Path,
                                 monkeypatch) -> None:
    """Each command's example, with small stand-ins for the files it names, runs to the end
    (score: exit 5 is its threshold verdict). `sr models fetch` needs the network."""
    from tests.conftest import SHARED

    cmd = dict(_commands())[tuple(path.split())]
    args = _example_args(cmd.help or "")[0]
    monkeypatch.chdir(tmp_path)
    shared = SHARED if (SHARED / "weights").is_dir() else None
    extra = _example_inputs(path, tmp_path, make_image, shared)
    if extra is None:
        pytest.skip(f"sr {path}'s example needs "
                    + ("the network" if path == "models fetch" else "../shared/weights"))
    before = set(tmp_path.rglob("*"))
    r = runner.invoke(app, [*args, *extra])
    assert r.exit_code in ((0, 5) if path == "score" else (0,)), (args, r.output)
    wrote = {p.relative_to(tmp_path).as_posix() for p in set(tmp_path.rglob("*")) - before}
    expected = {"upscale": "photo_x4.png", "degrade": "lr/a.png", "train":
                "runs/srcnn/model.safetensors", "interp": "blend.safetensors",
                "models convert": "realesrgan-x4plus.safetensors"}.get(path)
    if expected:
        assert expected in wrote, (args, sorted(wrote))
    else:  # list, info, score: data on stdout
        assert r.stdout.strip(), (args, r.output)
