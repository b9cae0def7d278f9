"""`sr score` (not built yet; see the issue tracker)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def score() -> None:
    """Not available yet in this version."""
    raise RuntimeFailure("'sr score' is not implemented yet")
