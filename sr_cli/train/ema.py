"""Exponential moving average of a network's parameters and buffers."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """``ema = decay * ema + (1 - decay) * current`` for every floating parameter and buffer.

    With ``warmup``, step ``t`` uses ``min(decay, (1 + t) / (10 + t))`` (as timm's ModelEmaV3
    and TensorFlow's ``num_updates``): early steps average fast, so short runs are not stuck
    near the initial weights.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied. The averaged copy
    (``self.module``) is frozen and in eval mode; export it instead of the trained network.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        """Average in ``model``; ``step`` (from 1) sets the warm-up decay when enabled."""
        d = min(self.decay, (1.0 + step) / (10.0 + step)) if self.warmup else self.decay
        cur = model.state_dict()
        for k, v in self.module.state_dict().items():
            src = cur[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(sd)
