"""The stderr console and progress bars. stdout is never used for messages."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    err_console: Console

_quiet = False
_console: Console | None = None


def stderr_console() -> Console:
    """The stderr console, created on first use: commands that print no message (--version,
    --help, data on stdout) never import rich. ``console.err_console`` is the same object.

    It resolves sys.stderr lazily, so it follows redirection (and Click's test runner).
    emoji=False: paths and values like "cuda:x:" must print verbatim, not as emoji codes.
    """
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    return _console


def __getattr__(name: str) -> Any:
    if name == "err_console":
        return stderr_console()
    raise AttributeError(f"module 'sr_cli.console' has no attribute {name!r}")


def _rate_column() -> Any:
    """A column with items per second (frames/s, images/s), blank until measurable.

    Built on first use: rich.progress is imported only when a progress bar is shown.
    """
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _RateColumn(ProgressColumn):
        def render(self, task: Any) -> Any:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:.2f}/s")

    return _RateColumn()


ProgressCallback = Callable[[int, int], None]
"""Core modules report progress as ``callback(done, total)``; they never print."""


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def begin_invocation(quiet: bool = False) -> None:
    """Start one command invocation's message settings: ``--quiet`` holds for this command
    only. The CLI guard calls it before every command, so a ``-q`` never carries over to the
    next command run in the same process (tests, the Python API, a notebook)."""
    set_quiet(bool(quiet))


def is_quiet() -> bool:
    return _quiet


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...), so a file name
    holding a newline or a terminal escape cannot forge a second ``sr: error:`` line or
    repaint the terminal. Every message line goes through this."""
    def esc(m: re.Match[str]) -> str:
        ch = m.group(0)
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
        return named or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")

    return _CONTROL.sub(esc, str(text))


def without_reprs(text: str) -> str:
    """``text`` without Python object reprs a library put in its message
    (``<x.Y object at 0x7f...>``, ``<tifffile.TiffPages @8>``)."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(text))
    text = re.sub(r"\s*<[A-Za-z_][\w.]*(?:\s[^<>]*)?>", "", text)
    return text.strip(" :;,")


def _colours_stderr() -> bool:
    """Whether rich would colour stderr: its own rule (TTY_COMPATIBLE, FORCE_COLOR, then
    isatty; a dumb terminal never)."""
    env = os.environ
    if env.get("TTY_COMPATIBLE") in ("0", "1"):
        tty = env["TTY_COMPATIBLE"] == "1"
    elif "FORCE_COLOR" in env:
        tty = env["FORCE_COLOR"] != ""
    else:
        tty = stderr_is_tty()
    return tty and env.get("TERM", "").lower() not in ("dumb", "unknown")


def say(line: str, style: str | None = None) -> None:
    """One message line on stderr, verbatim (no markup, no emoji codes, never wrapped).

    Written directly when it needs no colour (a plain note, or stderr is not a terminal) and
    no rich console is live (a progress bar draws through it): the same bytes rich would
    write, without importing rich, so `sr models list` in a pipe or a usage error stays light.
    """
    if _console is None and (style is None or not _colours_stderr()):
        stream = sys.stderr
        if stream is not None:
            stream.write(line + "\n")
            stream.flush()
        return
    stderr_console().print(line, markup=False, style=style, soft_wrap=True)


def info(message: str) -> None:
    """A human-readable note on stderr (suppressed by --quiet)."""
    if not _quiet:
        say(clean(message))


def warn(message: str) -> None:
    """A warning on stderr (shown even with --quiet)."""
    say(f"sr: warning: {clean(message)}", style="yellow")


def error(message: str) -> None:
    """The one ``sr: error:`` line of a failed command (the CLI guard prints it)."""
    say(f"sr: error: {clean(message)}", style="red")


def show_progress() -> bool:
    """Progress bars only when stderr is a terminal and not --quiet (or SR_PROGRESS=1)."""
    if _quiet:
        return False
    return os.environ.get("SR_PROGRESS") == "1" or stderr_is_tty()


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None):
    """Yield a ``callback(done, total)`` that drives a rich progress bar on stderr.

    When progress is disabled the callback is a no-op, so callers never branch.
    """
    if enabled is None:
        enabled = show_progress()
    if not enabled:
        yield lambda done, tot=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    with prog:
        task = prog.add_task(description, total=total)

        def update(done: int, tot: Any = None) -> None:
            if tot is not None:
                prog.update(task, total=tot)
            prog.update(task, completed=done)

        yield update
