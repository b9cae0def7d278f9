"""Training curves from ``RUN_DIR/metrics.jsonl`` drawn to a PNG (needs the ``plot`` extra)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from sr_cli.errors import InputError, RuntimeFailure
from sr_cli.io.atomic import atomic_write_bytes

__all__ = ["plot_run", "read_metrics"]


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl`` (bad lines skipped); InputError when none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir}: no metrics.jsonl (not a training run folder?)")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    if not records:
        raise InputError(f"{path}: no records yet")
    return records


def plot_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Draw losses (left) and validation scores (right) against the step; write a PNG."""
    target = Path(out)
    atomic_write_bytes(target, render_run(run_dir))
    return target


def render_run(run_dir: str | os.PathLike[str]) -> bytes:
    """The PNG bytes of :func:`plot_run`'s figure."""
    records = read_metrics(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeFailure(
            "plotting needs matplotlib: pip install 'sr_cli[plot]' (or pip install matplotlib)"
        ) from None
    loss_keys = sorted({k for r in records for k in r if k == "loss" or k.startswith("l_")})
    val_keys = sorted({k for r in records for k in r if k.startswith("val_")})
    # one panel per validation metric: PSNR (dB), SSIM (0..1) and NIQE need their own scales
    ncols = 1 + len(val_keys)
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    for key in loss_keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if loss_keys and all(r[k] > 0 for r in records for k in loss_keys if k in r):
        ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"{Path(run_dir).name}: training losses")
    for i, key in enumerate(val_keys, start=1):
        axv = axes[0][i]
        pts = [(r["step"], r[key]) for r in records if key in r]
        axv.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        axv.set_xlabel("step")
        axv.set_title(f"validation {key[len('val_'):]}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
