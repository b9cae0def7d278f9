"""sr_cli.coercion checks option values without pydantic: on every parameter of every sr command
it must give what Typer's own (pydantic) coercion gives, value or error message, for a table of
inputs (plain values, unusual spellings, out-of-range numbers, words for numbers, paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from sr_cli.cli import app
from sr_cli.coercion import LightArgument, LightOption, LightRuntimeParam

NUMBERS = ["0", "1", "4", "-1", "+3", "-0", "007", "1_000", " 3", "3 ", "3.0", "3.5", "1e3",
           "1E+02", ".5", "5.", "0.25", "-0.5", "1e400", "-1e-3", "100", "101", "16", "15",
           "99999999999999999999", "inf", "-inf", "Infinity", "nan", "NaN", "", " ", "two",
           "x", "abc", "e", ".", "-", "+", "1,5", "0x10", "\u0661", "3\u00a0"]
WORDS = ["", "-", "x", "in.png", "a//b/", "./out/", "~/x", "caf\u00e9", "a\udcffb", "KEY=VALUE"]
LISTS = [("a",), ("a", "b"), (), ("", "x"), ["1", "2"]]


def _params() -> list[tuple[str, object, object]]:
    root = typer.main.get_command(app)
    found = []

    def walk(cmd, path):
        ctx = Context(cmd, info_name=path)
        help_opt = cmd.get_help_option(ctx)
        for p in [*cmd.params, *([help_opt] if help_opt is not None else [])]:
            if getattr(p, "type_descriptor", None) is not None:
                found.append((f"{path} {p.name}", p, ctx))
        for name in getattr(cmd, "list_commands", lambda c: [])(ctx):
            walk(cmd.get_command(ctx, name), f"{path} {name}")

    walk(root, "sr")
    return found


PARAMS = _params()


def _outcome(fn, value):
    try:
        out = fn(value)
    except BadParameter as exc:
        return ("error", exc.format_message())
    return ("value", type(out).__name__, repr(out))  # repr: nan equals nan


def _inputs(param) -> list:
    ann = param.type_descriptor.annotation
    if param.multiple or param.nargs == -1:
        return [*LISTS, None]
    if ann in (int, float):
        return [*NUMBERS, 0, 3, 2.5, None]
    if ann is bool:
        return [None, True, False]
    return [*WORDS, None, Path("p.png")]


def test_every_parameter_is_light():
    """Every Typer parameter of the built tree (help flags included) has the light class."""
    assert PARAMS
    for label, param, _ in PARAMS:
        assert isinstance(param, (LightOption, LightArgument)), label
        assert isinstance(param.get_runtime_param(), LightRuntimeParam), label


@pytest.mark.parametrize("label", sorted({lb for lb, _, _ in PARAMS}))
def test_light_coercion_matches_typer(label, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.png").write_bytes(b"x")
    param, ctx = next((p, c) for lb, p, c in PARAMS if lb == label)
    light = param.get_runtime_param()
    full = build_runtime_param(param.type_descriptor)
    for value in _inputs(param):
        got = _outcome(lambda v: light.coerce(v, param=param, ctx=ctx), value)
        want = _outcome(lambda v: full.coerce(v, param=param, ctx=ctx), value)
        assert got == want, (label, value)


def test_plain_values_and_plain_mistakes_skip_pydantic(tmp_path):
    """In a fresh interpreter: good values and the two plain mistakes (out of range, a word
    for a number) are answered without importing pydantic."""
    code = (
        "import sys\n"
        "from sr_cli.cli import app\n"
        "for args in (['upscale', 'in.png', 'out.png', '--tile-batch', '0'],\n"
        "             ['degrade', '--scale', 'two'],\n"
        "             ['upscale', 'in.png', 'out.png', '-s', '2.5', '--tile', '64']):\n"
        "    try:\n"
        "        app(args, prog_name='sr')\n"
        "    except SystemExit as exc:\n"
        "        print(exc.code)\n"
        "print('pydantic' in sys.modules)\n"
    )
    (tmp_path / "in.png").write_bytes(b"x")
    (tmp_path / "out.png").write_bytes(b"x")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.stdout.split() == ["2", "2", "2", "False"], out.stderr
    assert "greater than or equal to 1" in out.stderr
    assert "unable to parse string as an integer" in out.stderr
