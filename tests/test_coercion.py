"""sr_cli.coercion checks option values without pydantic: on every parameter of every sr command
it must give what Typer's own (pydantic) coercion gives, value or error message, for a table of
inputs (plain values, unusual spellings, out-of-range numbers, words for numbers, paths)."""

from __future__ import annotations

import datetime
import enum
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import typer
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from sr_cli.cli import app
from sr_cli.coercion import (
    LightArgument,
    LightOption,
    LightRuntimeParam,
    apply_light_coercion,
)

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


def _both(param, ctx, value) -> tuple:
    """(sr_cli.coercion's outcome, Typer's own outcome) for one value of one parameter."""
    light = param.get_runtime_param()
    full = build_runtime_param(param.type_descriptor)
    return (_outcome(lambda v: light.coerce(v, param=param, ctx=ctx), value),
            _outcome(lambda v: full.coerce(v, param=param, ctx=ctx), value))


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
    for value in _inputs(param):
        got, want = _both(param, ctx, value)
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


class Color(enum.Enum):
    red = "red"
    blue = "blue"


def _other_kinds(
    color: Annotated[Color, typer.Option()] = Color.red,
    mode: Annotated[Literal["a", "b"], typer.Option()] = "a",
    sizes: Annotated[list[int], typer.Option()] = [],  # noqa: B006 - Typer's own idiom
    ratio: Annotated[float, typer.Option(min=0.5, max=2.5)] = 1.0,
    when: Annotated[datetime.datetime | None, typer.Option()] = None,
    out: Annotated[typer.FileText | None, typer.Option()] = None,
) -> None:
    pass


def test_other_kinds_match_typer_too(tmp_path, monkeypatch):
    """Kinds sr does not use today (enums, literals, lists of numbers, fractional bounds, files)
    are left to Typer, so a new option of such a kind behaves exactly as Typer makes it."""
    one = typer.Typer(add_completion=False)
    one.command()(_other_kinds)
    cmd = typer.main.get_command(one)
    apply_light_coercion(cmd)
    ctx = Context(cmd, info_name="x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("x")
    values = {
        "color": ["red", "RED", "green", None],
        "mode": ["a", "c", None],
        "sizes": [("1", "2"), ("1", "x"), ("0",), ()],
        "ratio": ["0.5", "0.25", "2.5", "3", "two", "1e0", None],
        "when": ["2020-01-02", "x", None],
        "out": ["in.txt", None],
    }
    for param in cmd.params:
        for value in values[param.name]:
            got, want = _both(param, ctx, value)
            if param.name == "out" and value is not None:  # two opened files: compare names
                got, want = got[:2], want[:2]
            assert got == want, (param.name, value)
