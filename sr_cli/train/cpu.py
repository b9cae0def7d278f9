"""Training settings sized for a CPU, and the advice printed when a schedule is too long.

The published recipes assume a GPU: Real-ESRNet trains RRDBNet-23 on 12 crops of 256x256,
which on a CPU takes about 11 GB and minutes per step. On a CPU device, settings the user did
not choose are reduced (:data:`CPU_LIMITS`) so that the README examples stay within about
4 GB (:data:`CPU_MEMORY_BUDGET_GB`; peak RSS measured by ``benchmarks/train_cpu.py``) and a
step takes seconds; ``--published`` keeps the published values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from sr_cli.train.config import TrainConfig

__all__ = ["CPU_LIMITS", "CPU_MEMORY_BUDGET_GB", "cpu_sized", "format_duration", "schedule_note"]

CPU_MEMORY_BUDGET_GB = 4
#: Upper bounds applied on a CPU to settings the user did not set.
CPU_LIMITS = {"batch_size": 4, "patch_size": 128, "cache_mb": 512}


def cpu_sized(cfg: TrainConfig, explicit: set[str]) -> tuple[TrainConfig, str | None]:
    """``cfg`` with :data:`CPU_LIMITS` applied to the settings not in ``explicit``.

    The pool keeps its size in batches (Real-ESRGAN: 15 batches). Returns the new config and a
    one-line note naming the changes (None when nothing changed).
    """
    changes: dict[str, Any] = {}
    big_patches = cfg.patch_size > 48  # SRCNN's 33-pixel crops are cheap at any batch size
    if ("batch_size" not in explicit and big_patches
            and cfg.batch_size > CPU_LIMITS["batch_size"]):
        changes["batch_size"] = CPU_LIMITS["batch_size"]
    if "patch_size" not in explicit and cfg.patch_size > CPU_LIMITS["patch_size"]:
        limit = CPU_LIMITS["patch_size"]
        changes["patch_size"] = limit - limit % cfg.scale
    if "cache_mb" not in explicit and cfg.cache_mb > CPU_LIMITS["cache_mb"]:
        changes["cache_mb"] = CPU_LIMITS["cache_mb"]
    if cfg.pool_size and "pool_size" not in explicit and "batch_size" in changes:
        batches = max(1, cfg.pool_size // cfg.batch_size)
        changes["pool_size"] = batches * changes["batch_size"]
    if not changes:
        return cfg, None
    what = ", ".join(f"{k} {getattr(cfg, k)} -> {v}" for k, v in changes.items())
    note = (f"note: training on a CPU: {what} (published {cfg.recipe} recipe sized for a GPU; "
            f"these keep memory within about {CPU_MEMORY_BUDGET_GB} GB; --published restores "
            "the published values)")
    return dataclasses.replace(cfg, **changes), note


def format_duration(seconds: float) -> str:
    """``3156 days``, ``4.2 h``, ``17 min``, ``42 s``."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def schedule_note(remaining: int, seconds_per_step: float, batch_size: int,
                  hardware: str) -> list[str]:
    """Notes after the first measured steps: the speed and an ETA; when the rest of the
    schedule would take more than a day here, how to shorten it."""
    eta = remaining * seconds_per_step
    notes = [f"speed: {seconds_per_step:.2f} s/step ({batch_size / seconds_per_step:.2f} "
             f"samples/s) on {hardware}; ETA {format_duration(eta)} for {remaining} more steps"]
    if eta > 86400:
        per_hour = max(1, math.floor(3600 / seconds_per_step))
        notes.append(
            f"note: the schedule ({remaining} more steps) would take about "
            f"{format_duration(eta)} on this device; shorten it with --steps N (about "
            f"{per_hour} steps per hour here) and move the learning-rate drops with --set "
            "milestones=[...]; Ctrl-C stops with a checkpoint and model.safetensors, "
            "--resume RUN_DIR continues"
        )
    return notes
