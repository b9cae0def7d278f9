"""The import-time rule, in one place: light commands never import the heavy libraries.

`sr --version`, every `--help`, `sr models list`, `sr models info` of a baseline or with
--header, `sr train --list` / `--print-config`, the man-page generator and usage errors (bad
option, missing input, existing output)
must run without torch, numpy, image decoders, rich (messages to a stderr that is not a
terminal are written directly, see sr_cli.console.say) or pydantic (Typer's value checks;
sr_cli.coercion checks the plain values without it), so that `sr` in a shell loop or a
mistyped command answers at once. Sub-commands are built on first use (sr_cli.cli.COMMANDS):
a command imports its own module only. Each case runs in a fresh interpreter (the
test process itself has torch loaded): the harness below runs the Typer app in-process with
the given arguments and reports which heavy modules ended up in ``sys.modules``.

To make a new command light: keep its Typer signature (options, help) free of heavy imports
and import numpy/torch/PIL inside the function body, after the usage checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "numpy", "PIL", "imageio", "tifffile", "safetensors", "scipy", "matplotlib",
         "rich.progress", "rich.live", "sr_cli.archs.registry", "sr_cli.io.images",
         "pydantic", "rich.console")

# Runs in a fresh interpreter: argv[1] = JSON list of CLI arguments (or the word "manpages"),
# argv[2] = file for the JSON result {"code", "heavy"}.
HARNESS = r"""
import json, sys
args, result = json.loads(sys.argv[1]), sys.argv[2]
code = 0
if args == "manpages":
    from sr_cli.manpages import render_all
    render_all()
else:
    from sr_cli.cli import app
    try:
        app(args, prog_name="sr")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
heavy = sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)
with open(result, "w") as fh:
    json.dump({"code": code, "heavy": heavy}, fh)
"""


def run_light(args: list[str] | str, tmp_path: Path, cwd: Path | None = None,
              modules: tuple[str, ...] = HEAVY) -> dict:
    """Run the app with ``args`` in a fresh interpreter; return {"code", "heavy", "stderr"}
    ("heavy": which of ``modules`` it imported)."""
    out = tmp_path / "startup_result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(args), str(out), json.dumps(modules)],
        cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.is_file(), f"harness failed: {proc.stderr[-2000:]}"
    res = json.loads(out.read_text())
    res["stderr"] = proc.stderr
    return res


def _commands() -> list[list[str]]:
    """Every command and sub-command path of the app (from the Click tree, so new commands are
    covered automatically)."""
    import typer

    from sr_cli.cli import app

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(group, prefix: list[str]) -> None:
        for name in group.list_commands(None):  # type: ignore[arg-type]
            sub = group.get_command(None, name)
            paths.append([*prefix, name])
            if hasattr(sub, "list_commands"):
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


LIGHT = [
    ["--version"],
    ["--help"],
    *([*p, "--help"] for p in _commands()),
    ["models", "list"],
    ["models", "list", "--json"],
    ["train", "--list"],
    ["train", "srcnn", "--print-config"],
]


@pytest.mark.parametrize("args", LIGHT, ids=" ".join)
def test_light_command_imports_no_heavy_module(args, tmp_path):
    res = run_light(args, tmp_path)
    assert res["code"] == 0, res["stderr"]
    assert res["heavy"] == [], f"sr {' '.join(args)} imported {res['heavy']}"


def test_importing_the_cli_and_the_package_is_light(tmp_path):
    code = ("import sys, sr_cli, sr_cli.cli, sr_cli.zoo, sr_cli.archs, sr_cli.archs.facts; "
            f"print(sorted(m for m in {list(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_manpage_generator_is_light(tmp_path):
    res = run_light("manpages", tmp_path)
    assert res["heavy"] == [], res["heavy"]


def test_models_info_header_and_baseline_are_light(tmp_path):
    """`sr models info --header` reads a .safetensors header only; a baseline has no weights."""
    res = run_light(["models", "info", "bicubic"], tmp_path)
    assert res["code"] == 0 and res["heavy"] == [], (res["heavy"], res["stderr"])
    shipped = sorted((REPO / "models").glob("*.safetensors"))
    if not shipped:
        pytest.skip("no shipped model in models/")
    res = run_light(["models", "info", "--header", str(shipped[0])], tmp_path)
    assert res["code"] == 0, res["stderr"]
    assert res["heavy"] == [], res["heavy"]


def test_models_info_header_matches_a_full_load(runner, tmp_path):
    """The header-only facts (sr_cli.archs.facts) agree with loading the network, for every
    registered architecture and every shipped model."""
    from sr_cli.archs import all_specs, build
    from sr_cli.cli import app
    from sr_cli.zoo import save_model

    files = sorted((REPO / "models").glob("*.safetensors"))
    for spec in all_specs():
        if spec.extra.get("learned", True):
            net, desc = build(spec.name, **spec.extra["tiny"])
            save_model(tmp_path / f"{spec.name}.safetensors", net, desc, {"name": spec.name})
            files.append(tmp_path / f"{spec.name}.safetensors")
    for name in [*(str(f) for f in files), "bicubic", "lanczos", "nearest"]:
        full = runner.invoke(app, ["models", "info", name, "--json"])
        fast = runner.invoke(app, ["models", "info", name, "--json", "--header"])
        assert full.exit_code == 0 and fast.exit_code == 0, (name, full.output, fast.output)
        assert json.loads(fast.stdout) == json.loads(full.stdout), name


def test_baseline_kernel_widths_match_imresize():
    from sr_cli.archs.facts import BASELINE_KERNEL_OF, BASELINE_KERNEL_WIDTH
    from sr_cli.degrade.resize import KERNELS

    for kernel in BASELINE_KERNEL_OF.values():
        assert BASELINE_KERNEL_WIDTH[kernel] == KERNELS[kernel][1], kernel


def _usage_cases(tmp_path: Path) -> list[tuple[list[str], int]]:
    (tmp_path / "in.png").write_bytes(b"not decoded before the usage checks")
    (tmp_path / "out.png").write_bytes(b"existing")
    (tmp_path / "in.mp4").write_bytes(b"not probed before the usage checks")
    (tmp_path / "out.mp4").write_bytes(b"existing")
    for folder in ("imgs", "out"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "in.png").write_bytes(b"existing")
    return [
        (["upscale", "--no-such-option", "in.png"], 2),       # bad option
        (["upscale", "in.png", "out.png", "--tile-batch", "0"], 2),  # bad option value
        (["upscale", "missing.png", "x.png"], 3),             # missing input file
        (["upscale", "in.png", "out.png"], 2),                # existing output
        (["upscale", "imgs", "out"], 2),                       # folder: existing output
        (["upscale", "in.png", "out.png", "--overwrite", "--skip-existing"], 2),
        (["upscale", "in.png", "x.xyz"], 2),                  # unknown output format
        (["upscale", "missing.mp4", "x.mp4"], 3),             # video: missing input
        (["upscale", "in.mp4", "out.mp4"], 2),                # video: existing output
        (["upscale", "in.mp4", "-"], 2),                      # video: no stdout
        (["degrade", "--scale", "two"], 2),
        (["score", "--no-such-option"], 2),
        (["train", "--steps"], 2),                            # missing option value
        (["interp", "--alpha"], 2),
        (["models", "nope"], 2),                              # unknown sub-command
        (["nope"], 2),                                        # unknown command
    ]


def test_usage_errors_are_reported_before_heavy_imports(tmp_path):
    for args, code in _usage_cases(tmp_path):
        res = run_light(args, tmp_path)
        assert res["code"] == code, (args, res["stderr"])
        assert "sr: error:" in res["stderr"], (args, res["stderr"])
        assert res["heavy"] == [], f"sr {' '.join(args)} imported {res['heavy']}"


COMMAND_MODULES = tuple(f"sr_cli.commands.{m}" for m in
                        ("upscale", "degrade", "train", "interp", "score", "models", "fetch"))


@pytest.mark.parametrize(("args", "imported"), [
    (["--version"], []),
    (["models", "list"], ["sr_cli.commands.fetch", "sr_cli.commands.models"]),
    (["upscale", "--help"], ["sr_cli.commands.upscale"]),
    (["score", "--no-such-option"], ["sr_cli.commands.score"]),
], ids=" ".join)
def test_a_command_imports_its_own_module_only(args, imported, tmp_path):
    res = run_light(args, tmp_path, modules=COMMAND_MODULES)
    assert res["heavy"] == imported, res["stderr"]
