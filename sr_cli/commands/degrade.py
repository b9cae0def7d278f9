"""`sr degrade` (not built yet; see the issue tracker)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def degrade() -> None:
    """Not available yet in this version."""
    raise RuntimeFailure("'sr degrade' is not implemented yet")
