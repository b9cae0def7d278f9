"""`sr interp` (not built yet; see the issue tracker)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def interp() -> None:
    """Not available yet in this version."""
    raise RuntimeFailure("'sr interp' is not implemented yet")
