"""`sr models ...` (placeholder until the zoo lands)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def list_() -> None:
    """List the models of the zoo."""
    raise RuntimeFailure("'sr models list' is not implemented yet")


COMMANDS = [("list", list_)]
