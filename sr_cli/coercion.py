"""Option values of the plain kinds sr uses, checked without pydantic.

Typer 0.29 checks every parameter value with a pydantic ``TypeAdapter``; building the first one
imports pydantic (about 0.3 s of CPU here, as much as the rest of a light command). Click
processes every parameter of every command on the way to a sub-command, even the ``--help``
flags nobody gave, so without this module `sr models list`, `sr upscale --help` and every usage
error paid for pydantic.

:class:`LightOption` and :class:`LightArgument` coerce the plain values of sr's signatures
(``str``, ``int``/``float`` with ``min``/``max``, ``pathlib.Path``, ``bool``, ``list[str]``)
themselves, and hand everything else to Typer's own pydantic coercion: an unusual spelling
(``1_000``, `` 3``, ``3.0`` for an int), a path check that fails, or an annotation of any
other kind. A value this module accepts comes out exactly as Typer would give it; the two plain
mistakes it rejects itself (a number outside ``min``/``max``, a word where a number goes) get
pydantic's own wording; every other rejection is Typer's. tests/test_coercion.py compares the
two on every parameter of sr with a table of inputs.

The classes are applied at the shared layer (:func:`apply_light_coercion`, on each command
as the root group builds it), so new options get them without doing anything. If a Typer
release moves the hook they use (``get_runtime_param``), they fall back to Typer's coercion
unchanged, and tests/test_startup.py reports pydantic on the light commands.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperArgument, TyperOption

try:  # the hook of Typer 0.29: each parameter builds its RuntimeParam lazily
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - another Typer: its own coercion throughout
    RuntimeParam = None  # type: ignore[assignment,misc]

__all__ = ["LightArgument", "LightHelp", "LightOption", "apply_light_coercion", "light_value"]

_MISS: Any = object()
"""``light_value``'s answer when the value is for Typer's own coercion to judge."""

# Only the plain spellings: anything else (underscores, spaces, "3.0" for an int, inf, nan,
# huge numbers) goes to pydantic, which decides and words the error.
_FLOAT_CHARS = frozenset("0123456789.eE+-")


def _plain_int(text: str) -> int | None:
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (0 < len(digits) <= 18 and digits.isascii() and digits.isdigit()):
        return None
    if digits[0] == "0" and digits != "0":
        return None
    return int(text)


def _plain_float(text: str) -> float | None:
    if not (0 < len(text) <= 40) or not _FLOAT_CHARS.issuperset(text):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _bound(value: float) -> str | None:
    """A min/max as pydantic writes it in its message, for the bounds written here alike."""
    if isinstance(value, bool) or not float(value).is_integer() or abs(value) >= 1e15:
        return None
    return str(int(value))


def _in_range(value: float, info: Any, param: Any, ctx: Any) -> bool:
    """Whether ``value`` is within min/max; outside, pydantic's message (with an integral
    bound) or False for Typer to word it."""
    if info.min is not None and value < info.min:
        bound, words = info.min, "greater than or equal to"
    elif info.max is not None and value > info.max:
        bound, words = info.max, "less than or equal to"
    else:
        return True
    shown = _bound(bound)
    if shown is None:
        return False
    raise BadParameter(f"Input should be {words} {shown}", ctx=ctx, param=param)


def _not_a_number(value: Any, kind: str, param: Any, ctx: Any) -> None:
    """A value with no digit at all that Python cannot read as a number (``two``, ``x``): no
    spelling of pydantic's accepts it either (``inf``/``nan`` it reads like Python)."""
    if type(value) is str and not any(ch.isdigit() for ch in value):
        try:
            float(value)
        except ValueError:
            what = ("a valid integer, unable to parse string as an integer" if kind == "int"
                    else "a valid number, unable to parse string as a number")
            raise BadParameter(f"Input should be {what}", ctx=ctx, param=param) from None


def _plain_str(value: Any) -> bool:
    return type(value) is str and value != ""


def light_value(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
    """``value`` (never None) coerced for ``annotation`` as Typer would, or :data:`_MISS`.

    Raises Typer's own BadParameter, worded as pydantic words it, for the two plain mistakes
    (a number out of min/max, a word given for a number); any other doubt is a :data:`_MISS`.
    """
    if info.parser is not None or getattr(info, "clamp", False):
        return _MISS
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (Any,)
        items = value if isinstance(value, (list, tuple)) else [value]
        try:
            out = [light_value(item, info, v, param, ctx) for v in items]
        except BadParameter:
            return _MISS  # an element's mistake: Typer words it for the list
        return _MISS if any(v is _MISS for v in out) else out
    if annotation is str:
        return value if type(value) is str else _MISS
    if annotation is bool:
        return value if type(value) is bool else _MISS
    if annotation is int:
        number = value if type(value) is int else (
            _plain_int(value) if type(value) is str else None)
        if number is None:
            _not_a_number(value, "int", param, ctx)
            return _MISS
        return number if _in_range(number, info, param, ctx) else _MISS
    if annotation is float:
        real = float(value) if type(value) in (int, float) else (
            _plain_float(value) if type(value) is str else None)
        if real is None:
            _not_a_number(value, "float", param, ctx)
            return _MISS
        if not math.isfinite(real):
            return _MISS
        return real if _in_range(real, info, param, ctx) else _MISS
    if annotation is Path and getattr(info, "path_type", None) in (None, Path):
        if isinstance(value, Path):
            path = value
        elif _plain_str(value):
            path = Path(value)
        else:
            return _MISS
        try:  # Typer's own checks (exists, file_okay, ...) on a Path: no pydantic involved
            return coerce_cli_path(path, info, path_type=Path, param=param, ctx=ctx)
        except BadParameter:
            return _MISS  # Typer words the message from the value as typed
    return _MISS


if RuntimeParam is not None:

    class LightRuntimeParam(RuntimeParam):  # type: ignore[misc,valid-type]
        """Typer's runtime coercion contract (None, multiple values) with :func:`light_value`
        first and Typer's pydantic-backed coercion, built on first need, for the rest.
        (A plain subclass of Typer's frozen dataclass: same fields, nothing to generate.)"""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            out = light_value(self.annotation, self.parameter_info, value, param, ctx)
            if out is not _MISS:
                return out
            full = self.__dict__.get("_full")
            if full is None:
                full = build_runtime_param(param.type_descriptor)
                object.__setattr__(self, "_full", full)  # a cache on a frozen instance
            return full._coerce_value(value, param=param, ctx=ctx)


def _light_runtime_param(self: Any) -> Any:
    """``get_runtime_param`` of the light parameters: the coercion above instead of Typer's."""
    if self._runtime_param is None and getattr(self.type_descriptor, "file_annotation", None):
        self._runtime_param = build_runtime_param(self.type_descriptor)  # files: Typer's own
    elif self._runtime_param is None:
        desc = self.type_descriptor
        self._runtime_param = LightRuntimeParam(parameter_info=desc.parameter_info,
                                                annotation=desc.annotation)
    return self._runtime_param


# Plain subclasses (no mixin), so that a parameter Typer built can take the class in place.
class LightOption(TyperOption):
    """A TyperOption whose plain values are checked without pydantic."""

    if RuntimeParam is not None:
        get_runtime_param = _light_runtime_param


class LightArgument(TyperArgument):
    """A TyperArgument whose plain values are checked without pydantic."""

    if RuntimeParam is not None:
        get_runtime_param = _light_runtime_param


def light_param(param: Any) -> None:
    """Give one Typer parameter the light coercion (other Click parameters stay as they are)."""
    if type(param) is TyperOption:
        param.__class__ = LightOption
    elif type(param) is TyperArgument:
        param.__class__ = LightArgument


class LightHelp:
    """Mixin for Typer commands and groups (put it first): their ``--help`` flag, built on
    demand and processed on every call even when absent, gets the light coercion too."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            light_param(option)
        return option


def apply_light_coercion(command: Any) -> None:
    """Give every Typer parameter of ``command`` and its built sub-commands light coercion."""
    for param in getattr(command, "params", []):
        light_param(param)
    subs = getattr(command, "commands", None)
    if type(subs) is dict:  # built sub-commands; a lazy table finishes each as it builds it
        for sub in subs.values():
            apply_light_coercion(sub)
