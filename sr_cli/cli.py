"""The Typer app: one thin function per command (in ``sr_cli.commands``), and the only place
that turns outcomes into exit codes and messages.

Every command callback is wrapped by :func:`guard`, so typed errors raised anywhere in the core
become one line on stderr and the documented exit code (see :class:`sr_cli.errors.ExitCode`).

Commands are listed in :data:`COMMANDS` (name -> builder) and built on first use, so a call
imports and builds its own command only (`sr models list` never reads upscale's signature);
tests/test_startup.py keeps light commands free of torch, pydantic and rich.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import inspect
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

# Typer 0.29 vendors Click as typer._click; the exception types live there.
try:
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older Typer on top of the click package
    from click import exceptions as click_exc  # type: ignore[no-redef]

from sr_cli import __version__
from sr_cli.coercion import LightHelp, apply_light_coercion
from sr_cli.console import say
from sr_cli.errors import ExitCode, SRError

F = TypeVar("F", bound=Callable[..., Any])

_state = {"traceback": False}


def _want_traceback() -> bool:
    return _state["traceback"] or os.environ.get("SR_TRACEBACK") == "1"


def _fail(message: str, code: int) -> typer.Exit:
    from sr_cli.console import error

    error(message)  # control characters escaped: a path cannot forge a second line
    return typer.Exit(int(code))


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _install_signals() -> None:
    """SIGTERM (and SIGHUP) stop a command like Ctrl-C: temporary files are removed, training
    saves its checkpoint, the exit code is 130. Installed once, from the main thread, and only
    over the default action (a handler someone else set, or SIG_IGN from nohup, stays)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _terminate)


class _LogAsWarning(logging.Handler):
    """A library's log record (tifffile, PIL, ...) as one ``sr: warning:`` line, without the
    object reprs libraries put in them; never its raw line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from sr_cli.console import warn, without_reprs

        with contextlib.suppress(Exception):
            text = without_reprs(record.getMessage().strip().splitlines()[0])
            warn(f"{record.name.split('.')[0]}: {text}" if text else record.name)


def _install_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _LogAsWarning) for h in root.handlers):
        handler = _LogAsWarning(level=logging.WARNING)
        root.addHandler(handler)


def _settle_stdout() -> None:
    """After a failure: flush what stdout holds, or drop it when stdout cannot take it, so
    the interpreter's exit never prints "Exception ignored"."""
    from sr_cli.io import stdio

    with contextlib.suppress(OSError, ValueError, SRError):
        stdio.finish()


def _os_message(exc: OSError) -> str:
    """One line for an OSError: the reason and the user's path (never a temporary file)."""
    from sr_cli.io.atomic import user_path

    what = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        what = "no space left on device"
    name = getattr(exc, "filename", None)
    return f"{what}: {user_path(str(name))}" if name else what


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    """Show a Python warning (ours or a library's) as one ``sr: warning:`` line on stderr."""
    from sr_cli.console import warn

    text = str(message).strip().splitlines()
    warn(text[0] if text else category.__name__)


def guard(fn: F) -> F:
    """Wrap a command so errors become one stderr line and a documented exit code.

    Python warnings raised while the command runs (e.g. from torch or numpy) are shown as
    one ``sr: warning:`` line each, without file and line, unless --traceback is given.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from sr_cli import console
        from sr_cli.io import atomic, stdio

        # Per-invocation state, in this one place: -q/--quiet of this command (commands
        # without the option are never quiet), new temporary-file registry, stdout wrapper.
        console.begin_invocation(bool(kwargs.get("quiet", False)))
        atomic.begin_run()
        stdio.install()
        _install_signals()
        _install_logging()
        try:
            with warnings.catch_warnings():
                if not _want_traceback():
                    warnings.showwarning = _one_line_warning
                fn(*args, **kwargs)
            stdio.finish()  # a full disk or /dev/full on stdout fails here, with one line
        except (typer.Exit, typer.Abort):
            _settle_stdout()
            raise
        except SRError as exc:
            _settle_stdout()
            if _want_traceback():
                traceback.print_exc(file=sys.stderr)
            raise _fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            _settle_stdout()
            say("sr: interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # The reader went away (e.g. `sr ... | head`): quiet exit, like other filters.
            # Point the stdout descriptor at /dev/null so the interpreter's final flush does
            # not raise again (the approach of the Python docs' SIGPIPE note); in-process
            # streams without a descriptor (tests, API use) are left alone.
            stdio.discard()
            raise typer.Exit(int(ExitCode.FAILURE)) from None
        except OSError as exc:
            _settle_stdout()
            if _want_traceback():
                traceback.print_exc(file=sys.stderr)
            raise _fail(_os_message(exc), ExitCode.FAILURE) from None
        except MemoryError:
            _settle_stdout()
            raise _fail(
                "out of memory (try a smaller --tile or --max-pixels)", ExitCode.FAILURE
            ) from None
        except Exception as exc:  # a bug: still one line, unless --traceback
            _settle_stdout()
            if _want_traceback():
                traceback.print_exc(file=sys.stderr)
                raise typer.Exit(int(ExitCode.FAILURE)) from None
            raise _fail(
                f"internal error: {type(exc).__name__}: {exc} (rerun with --traceback)",
                ExitCode.FAILURE,
            ) from None

    return wrapper  # type: ignore[return-value]


class LazyCommands(MutableMapping[str, Any]):
    """A group's sub-commands, each built (its module imported, its Click command made by
    Typer) the first time it is looked up: `sr models list` builds `models` and its commands,
    not `upscale` or `train`. Iterating the names builds nothing; `sr --help` builds all."""

    def __init__(self, table: dict[str, Callable[[], Any]]) -> None:
        self._table = table
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = _finish(self._table[name]())  # KeyError: no such command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._built.pop(name, None)
        self._table.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._table

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (n for n in self._built if n not in self._table)

    def __len__(self) -> int:
        return len(self._table.keys() | self._built.keys())


def _finish(command: Any) -> Any:
    """The shared layer's touches on a command Typer built: readable metavars, and option
    values checked without pydantic (:mod:`sr_cli.coercion`)."""
    from sr_cli.metavars import apply_readable_metavars

    apply_readable_metavars(command)
    apply_light_coercion(command)
    return command


class SRCommand(LightHelp, TyperCommand):
    """A sub-command: its --help flag is checked without pydantic like its options."""


class SRSubGroup(LightHelp, TyperGroup):
    """A sub-command group (`sr models`), with the root's conventions."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: nothing is built to list them


class SRGroup(SRSubGroup):
    """The root command group: Click's own usage errors (unknown option, bad option value,
    missing argument) become one ``sr: error:`` line and exit 2, like every other error.
    Every parameter gets a readable metavar (:mod:`sr_cli.metavars`) and pydantic-free value
    checks (:mod:`sr_cli.coercion`); sub-commands are built on first use (:data:`COMMANDS`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        built = dict(self.commands)  # any command registered on `app` the Typer way
        self.commands = LazyCommands(dict(COMMANDS))
        for name, command in built.items():
            self.commands[name] = _finish(command)
        _finish(self)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as exc:
            exc.show()  # `sr` alone, `sr models` alone: the help text
            sys.exit(exc.exit_code)
        except click_exc.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sr"
            text = " ".join(exc.format_message().split()).rstrip(".")
            _fail(f"{text} (see '{where} --help')", ExitCode.USAGE)
            sys.exit(int(ExitCode.USAGE))
        except click_exc.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            say("sr: interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))
        # Not standalone: Click returns the code of a typer.Exit, or the command's return
        # value (commands return None, see guard).
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=SRGroup,
    name="sr",
    help="Super-resolution on the command line: upscale, degrade, train, interp, score.\n\n"
    "Example: sr upscale photo.jpg photo_x4.png\n\n"
    "stdout carries data only; messages go to stderr. `-` means stdin/stdout.\n\n"
    "Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 bad input data, "
    "4 model/weights error, 5 score threshold not met, 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"sr {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    traceback_: Annotated[
        bool, typer.Option("--traceback", help="Show Python tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print version, exit."),
    ] = False,
) -> None:
    """sr: super-resolution on the command line.

    Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 bad input data,
    4 model/weights error, 5 score threshold not met, 130 interrupted.
    """
    _state["traceback"] = traceback_


def _resolved(fn: F) -> F:
    """``fn`` with its annotations evaluated once. The command modules use ``from __future__
    import annotations``, so each annotation is a string, which Typer evaluates twice per
    parameter (inspect.signature and get_type_hints): half the cost of building a command."""
    if any(isinstance(a, str) for a in fn.__annotations__.values()):
        fn.__annotations__ = inspect.get_annotations(fn, eval_str=True)
    return fn


_resolved(_root)


def _build_one(name: str, fn: Callable[..., Any], **settings: Any) -> Any:
    """The Click command of one command function, wrapped by :func:`guard`."""
    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(name, cls=SRCommand, **settings)(guard(_resolved(fn)))
    return typer.main.get_command(one)


def _command(module: str, function: str, name: str, **settings: Any) -> Callable[[], Any]:
    """A builder for one sub-command: ``module.function``, imported when it is built."""

    def build() -> Any:
        return _build_one(name, getattr(importlib.import_module(module), function), **settings)

    return build


def _models_group() -> Any:
    """`sr models`: its commands (:data:`sr_cli.commands.models.COMMANDS`) are built on first
    use too, so `sr models list` does not build `convert` and `fetch`."""
    from sr_cli.commands import models

    models_app = typer.Typer(
        cls=SRSubGroup,
        name="models",
        help="List, inspect, convert and fetch models of the zoo.\n\n"
        "Example: sr models list",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
    )
    group = typer.main.get_group(models_app)
    group.commands = LazyCommands(
        {name: functools.partial(_build_one, name, fn) for name, fn in models.COMMANDS})
    return group


#: The command table, in the order of `sr --help`: name -> builder of its Click command.
COMMANDS: dict[str, Callable[[], Any]] = {
    "upscale": _command("sr_cli.commands.upscale", "upscale", "upscale", no_args_is_help=False),
    "degrade": _command("sr_cli.commands.degrade", "degrade", "degrade"),
    "train": _command("sr_cli.commands.train", "train", "train",
                      context_settings={"allow_extra_args": False}),
    "interp": _command("sr_cli.commands.interp", "interp", "interp"),
    "score": _command("sr_cli.commands.score", "score", "score"),
    "models": _models_group,
}


def main() -> None:
    """Console-script entry point."""
    app()
