"""Every command has help with a one-line summary and an example; man pages are current."""

from __future__ import annotations

import typer

from sr_cli.cli import app
from sr_cli.manpages import main as manpages_main


def _commands():
    from typer._click import core

    root = typer.main.get_command(app)
    ctx = core.Context(root, info_name="sr")
    out = []

    def walk(group, gctx, prefix):
        for name in group.list_commands(gctx):
            sub = group.get_command(gctx, name)
            out.append((f"{prefix} {name}".strip(), sub))
            if hasattr(sub, "list_commands"):
                walk(sub, core.Context(sub, info_name=name, parent=gctx), f"{prefix} {name}")

    walk(root, ctx, "")
    return out


def test_every_command_has_help_and_example(runner):
    cmds = _commands()
    assert {"upscale", "degrade", "train", "interp", "score", "models"} <= {c for c, _ in cmds}
    for name, cmd in cmds:
        if hasattr(cmd, "list_commands"):
            assert cmd.help, name
            continue
        assert cmd.help and cmd.help.strip().splitlines()[0], f"{name}: no summary"
        assert "Example" in cmd.help or "example" in cmd.help, f"{name}: no example in help"
        r = runner.invoke(app, [*name.split(), "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_man_pages_current():
    assert manpages_main(["--check"]) == 0, "run `python -m sr_cli.manpages`"


def test_version_and_root_help(runner):
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("sr ")
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "Exit codes" in r.stdout
    r = runner.invoke(app, ["no-such-command"])
    assert r.exit_code == 2
