"""The Python API: upscale arrays without the CLI."""

from __future__ import annotations

from typing import Any

import numpy as np

from sr_cli.infer.engine import InferenceOptions, Upscaler


def upscale(
    array: np.ndarray,
    model: str = "default",
    scale: float | None = None,
    *,
    tile: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    alpha: str = "model",
    tta: bool = False,
    engine: str = "auto",
) -> np.ndarray:
    """Upscale an image array.

    Args:
        array: ``(H, W)`` or ``(H, W, C)`` (C = 1..4, alpha last), uint8, uint16 or float in
            [0, 1]. Integer arrays are upscaled band by band (memory: the input, the output
            and a few bands); float arrays keep float precision and hold the float32 output
            whole, so prefer integers for very large images.
        model: zoo name or weights path; ``"default"`` = the zoo's default model.
        scale: output factor (default: the model's native scale).
        tile: tile size (None = auto, 0 = whole image).
        device, precision, alpha, tta, engine: as in ``sr upscale``.

    Returns:
        The upscaled array, same dtype and channel count.

    Raises:
        sr_cli.errors.SRError subclasses for bad models or arguments.
    """
    from sr_cli import zoo

    name = zoo.default_model_name() if model == "default" else model
    loaded: Any = zoo.load_model(name, scale=scale)
    up = Upscaler(loaded, InferenceOptions(device=device, precision=precision, tile=tile,
                                           alpha=alpha, tta=tta, engine=engine))
    return up.upscale_array(array, scale)
