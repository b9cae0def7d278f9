"""Readable metavars for every command's help: ``--tile N``, ``--output OUTPUT``, ``INPUT``.

Typer's own help shows Python types (``<str>``, ``<list[str]>``) and wraps variadic
arguments twice (``[[INPUT]... [OUTPUT]]...``). :func:`apply_readable_metavars` goes over a
command (and the sub-commands it holds) once, after Typer built it, and gives each parameter a
metavar a person can read:

- options: ``N`` for integers, ``X`` for floats, otherwise the option's long name in capitals
  (``--device DEVICE``), or a fixed form from :data:`OPTION_METAVARS` (``--set KEY=VALUE``);
- arguments: their name in capitals (``RUN_DIR``), ``[NAME]`` when optional and ``NAME...``
  when variadic; an argument that states its own metavar (``[INPUT]... [OUTPUT]``) keeps it.

It is applied at the shared layer (the root group, to each command as it builds it on first
use), so a new command or option gets readable help without doing anything.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

from sr_cli.coercion import LightArgument

__all__ = ["OPTION_METAVARS", "apply_readable_metavars"]

#: Options whose value has a shape worth showing.
OPTION_METAVARS = {
    "--set": "KEY=VALUE",
    "--fail-under": "METRIC=VALUE",
    "--fail-over": "METRIC=VALUE",
    "--model": "MODEL",
    "--output": "OUTPUT",
}


class ReadableArgument(LightArgument):
    """A TyperArgument whose help shows its metavar only (no Python type); its values are
    checked by :mod:`sr_cli.coercion`."""

    def display_type_rich(self, ctx: Any) -> str | None:  # noqa: D102 - see class
        return None

    def _rich_display_name(self) -> str:
        return self.metavar or self.display_name_raw

    def _usage_display_name(self) -> str:
        name = self.metavar or self.display_name_raw
        if "[" in name or "..." in name:  # the argument spelled its own form
            return name
        if self.nargs != 1:
            return f"{name}..." if self.required else f"[{name}]..."
        return name if self.required else f"[{name}]"


def _option_metavar(opt: TyperOption) -> str:
    longs = [o for o in opt.opts if o.startswith("--")]
    for o in longs:
        if o in OPTION_METAVARS:
            return OPTION_METAVARS[o]
    desc = getattr(opt, "type_descriptor", None)
    annotation = getattr(desc, "annotation", None)
    inner = getattr(annotation, "__args__", (annotation,))
    base = inner[0] if getattr(annotation, "__origin__", None) is list else annotation
    if base is int:
        return "N"
    if base is float:
        return "X"
    name = (longs[0] if longs else opt.opts[0]).lstrip("-")
    return name.replace("-", "_").upper()


def apply_readable_metavars(command: Any) -> None:
    """Give every parameter of ``command`` and its subcommands a readable metavar."""
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption):
            if param.metavar is None and not param.is_flag and not param.count:
                param.metavar = _option_metavar(param)
        elif isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "ARG").upper()
            param.__class__ = ReadableArgument
    subs = getattr(command, "commands", None)
    if type(subs) is dict:  # built sub-commands; a lazy table finishes each as it builds it
        for sub in subs.values():
            apply_readable_metavars(sub)
