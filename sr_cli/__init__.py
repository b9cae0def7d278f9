"""sr: super-resolution on the command line, and a small Python API.

>>> import numpy as np, sr_cli
>>> out = sr_cli.upscale(np.zeros((8, 8, 3), np.uint8), model="bicubic", scale=2)
>>> out.shape
(16, 16, 3)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "upscale"]


def upscale(array: Any, model: str = "default", scale: float | None = None, **kwargs: Any) -> Any:
    """Upscale an HxW or HxWxC uint8/uint16/float array; see :func:`sr_cli.api.upscale`."""
    from sr_cli.api import upscale as _upscale

    return _upscale(array, model=model, scale=scale, **kwargs)
