"""`sr upscale` (placeholder)."""

from __future__ import annotations

from sr_cli.errors import RuntimeFailure


def upscale() -> None:
    """Upscale images."""
    raise RuntimeFailure("'sr upscale' is not implemented yet")
