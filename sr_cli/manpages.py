"""Generate the man pages (man/sr.1, man/sr-<command>.1) from the Typer app itself.

    python -m sr_cli.manpages            # (re)write man/
    python -m sr_cli.manpages --check    # exit 1 if man/ is stale (CI)

The pages come from the same click objects that drive ``--help``, so they cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import typer
from typer._click import core as click_core

from sr_cli import __version__


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands")

EXIT_STATUS = [
    ("0", "success"),
    ("1", "runtime failure (I/O error, full disk, failed items in a batch, internal error)"),
    ("2", "usage error (bad options or values)"),
    ("3", "bad input data (unreadable, corrupt or wrong-size files)"),
    ("4", "model or weights error (unknown name, bad or unsafe file, mismatched architecture)"),
    ("5", "an sr score threshold (--fail-under / --fail-over) was not met"),
    ("130", "interrupted (Ctrl-C)"),
]


def _esc(text: str) -> str:
    out = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in out.splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in (text or "").split("\n\n") if p.strip()]
    return "\n.PP\n".join(_esc(" ".join(p.split())) for p in parts)


def _param_lines(cmd: Any, ctx: Any) -> list[str]:
    """One .TP entry per parameter, from the same help records ``--help`` prints."""
    lines: list[str] = []
    for p in cmd.get_params(ctx):
        if getattr(p, "hidden", False):
            continue
        rec = p.get_help_record(ctx)
        if rec is None:
            if getattr(p, "param_type_name", "") != "argument":
                continue
            rec = (p.name.upper(), "")
        name, help_ = rec
        if getattr(p, "param_type_name", "") == "argument" and not help_:
            help_ = getattr(p, "help", "") or ""
        lines.append(f".TP\n.B {_esc(name)}\n{_esc(' '.join(str(help_).split()))}")
    return lines


def _page(title: str, section_name: str, cmd: Any, ctx: Any,
          see_also: list[str]) -> str:
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    head = [
        f'.TH "{title.upper()}" 1 "" "sr {__version__}" "sr manual"',
        ".SH NAME",
        f"{_esc(section_name)} \\- {_esc(cmd.get_short_help_str(limit=200))}",
        ".SH SYNOPSIS",
        f".B {_esc(ctx.command_path)}\n{_esc(usage)}",
        ".SH DESCRIPTION",
        _paragraphs(cmd.help or ""),
    ]
    if _is_group(cmd):
        head.append(".SH COMMANDS")
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                head.append(f".TP\n.B {_esc(name)}\n{_esc(sub.get_short_help_str(limit=200))}")
    params = _param_lines(cmd, ctx)
    if params:
        head.append(".SH OPTIONS")
        head.extend(params)
    head.append(".SH EXIT STATUS")
    for code, text in EXIT_STATUS:
        head.append(f".TP\n.B {code}\n{_esc(text)}")
    if see_also:
        head.append(".SH SEE ALSO")
        head.append(_esc(", ".join(f"{s}(1)" for s in see_also)))
    return "\n".join(head) + "\n"


def render_all() -> dict[str, str]:
    """Return {file name: roff text} for sr.1 and every sub-command."""
    from sr_cli.cli import app

    root: Any = typer.main.get_command(app)
    ctx = click_core.Context(root, info_name="sr")
    pages: dict[str, str] = {}
    names = [n for n in root.list_commands(ctx) if not root.get_command(ctx, n).hidden]
    pages["sr.1"] = _page("sr", "sr", root, ctx, [f"sr-{n}" for n in names])

    def walk(group: Any, gctx: Any, prefix: str) -> None:
        for name in group.list_commands(gctx):
            sub = group.get_command(gctx, name)
            if sub is None or sub.hidden:
                continue
            sctx = click_core.Context(sub, info_name=name, parent=gctx)
            page = f"{prefix}-{name}"
            pages[f"{page}.1"] = _page(page, page.replace("-", " ", 1), sub, sctx, ["sr"])
            if _is_group(sub):
                walk(sub, sctx, page)

    walk(root, ctx, "sr")
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if man/ is stale")
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "man"))
    args = ap.parse_args(argv)
    out = Path(args.dir)
    pages = render_all()
    if args.check:
        stale = [n for n, t in pages.items()
                 if not (out / n).is_file() or (out / n).read_text() != t]
        extra = [p.name for p in out.glob("*.1") if p.name not in pages] if out.is_dir() else []
        if stale or extra:
            print(f"man pages are stale: {', '.join(stale + extra)}; run "
                  "`python -m sr_cli.manpages`", file=sys.stderr)
            return 1
        print(f"man pages up to date ({len(pages)} pages)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for n in {p.name for p in out.glob("*.1")} - set(pages):
        (out / n).unlink()
    for n, t in pages.items():
        (out / n).write_text(t)
    print(f"wrote {len(pages)} pages to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
