"""Training checkpoints: one file ``RUN_DIR/checkpoint.pt`` with everything a resume needs.

Contents (a dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``): ``format``, ``step``, ``config`` (the settings),
``net_g``, ``net_d``, ``opt_g``, ``opt_d``, ``sched_g``, ``sched_d``, ``ema``, ``scaler``,
``rng`` (torch CPU/CUDA generator states), ``pool`` (Real-ESRGAN pair pool), ``best``
(best validation score and step), ``wall_s`` (training seconds so far), ``options`` (the
run's data paths and switches, for ``sr train --resume RUN_DIR``).
Written atomically (temp file + rename), so an interrupted save never destroys the previous one.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from sr_cli.errors import ModelError
from sr_cli.io.atomic import atomic_write_bytes

__all__ = ["CHECKPOINT_NAME", "FORMAT", "load_checkpoint", "read_run_settings",
           "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "sr_cli.train/1"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Serialise ``state`` (plus the format tag) to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file raises ModelError."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no checkpoint to resume from")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip/pickle errors come in many types
        raise ModelError(
            f"{p}: checkpoint is corrupt or unreadable ({type(exc).__name__}); not restarting "
            "from zero: restore it, or remove it and train into a new -o RUN_DIR"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelError(f"{p}: not an sr training checkpoint (format {FORMAT} expected)")
    for key in ("step", "config", "net_g", "opt_g"):
        if key not in state:
            raise ModelError(f"{p}: checkpoint lacks {key!r}; it is damaged")
    return state


def read_run_settings(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, options) stored in ``RUN_DIR/checkpoint.pt``, without reading the weights
    into memory (memory-mapped). UsageError when the folder holds no checkpoint."""
    from sr_cli.errors import UsageError

    p = Path(run_dir) / CHECKPOINT_NAME
    if not p.is_file():
        raise UsageError(f"--resume: {p} does not exist (nothing to resume)")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_checkpoint gives the full diagnosis
        state = load_checkpoint(p)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        load_checkpoint(p)  # raises the precise ModelError
    return dict(state["config"]), dict(state.get("options") or {})
