"""The command-line convention shared by every command that reads and writes files:
``INPUT... [OUTPUT]`` — inputs are positional, the output is the last positional argument or
``-o/--output``; ``-`` (or nothing) means stdin/stdout."""

from __future__ import annotations

__all__ = ["split_inputs_output"]


def split_inputs_output(paths: list[str], output: str | None) -> tuple[list[str], str | None]:
    """Apply the ``INPUT... [OUTPUT]`` convention (``-o`` makes every positional an input).

    >>> split_inputs_output(["a.png", "b.png", "out/"], None)
    (['a.png', 'b.png'], 'out/')
    >>> split_inputs_output(["a.png"], None)
    (['a.png'], None)
    >>> split_inputs_output(["a.png", "b.png"], "out/")
    (['a.png', 'b.png'], 'out/')
    """
    if output is not None:
        return list(paths), output
    if len(paths) >= 2:
        return list(paths[:-1]), paths[-1]
    return list(paths), None
