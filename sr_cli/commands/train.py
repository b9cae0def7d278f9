"""`sr train` (not built yet; see the issue tracker)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def train() -> None:
    """Not available yet in this version."""
    raise RuntimeFailure("'sr train' is not implemented yet")
