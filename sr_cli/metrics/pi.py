"""The perceptual index of the PIRM 2018 challenge (Blau et al.)."""

from __future__ import annotations

import torch


def perceptual_index(ma: torch.Tensor, niqe: torch.Tensor) -> torch.Tensor:
    """``PI = ((10 - Ma) + NIQE) / 2`` elementwise; lower is better.

    Args:
        ma: Ma et al.'s score (NRQM, 0..10, higher is better), any shape.
        niqe: NIQE of the same images, same shape.
    Example: ``perceptual_index(torch.tensor([8.0]), torch.tensor([3.0]))`` is ``2.5``.
    """
    return ((10.0 - ma) + niqe) / 2.0
