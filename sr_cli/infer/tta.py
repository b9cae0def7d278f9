"""Self-ensemble ("test-time augmentation"): the x8 geometric ensemble of EDSR / ncnn's ``-x``.

The network runs on the eight symmetries of the square (identity, three 90-degree rotations,
and the horizontal flip of each); every output is mapped back by the inverse symmetry and the
eight are averaged. A convolutional network is not equivariant to these symmetries once
trained, so the average removes part of the orientation-dependent error: EDSR reports +0.1 to
+0.2 dB on Set5/Set14.

Because each transform is applied to the network's *input* (a tile with its context) and the
receptive field of a convolutional network is symmetric, tiled self-ensembles equal the untiled
self-ensemble exactly where plain tiling does: the wrapper is used like the network itself.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SelfEnsemble", "TRANSFORMS"]

# (k, flip): rotate by k * 90 degrees (torch.rot90 over H, W), then flip W when ``flip``.
TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def _forward_t(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(y, dims=(-1,)) if flip else y


def _inverse_t(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        y = torch.flip(y, dims=(-1,))
    return torch.rot90(y, -k, dims=(-2, -1)) if k else y


class SelfEnsemble(nn.Module):
    """``net`` averaged over the 8 flips/rotations of its input.

    Args:
        net: a fully convolutional SR network ``(B, C, H, W) -> (B, C', H*s, W*s)``.

    Shapes: as ``net``. The output is accumulated in float32 whatever the network's dtype
    and returned in the network's output dtype. Costs 8 forward passes.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc: torch.Tensor | None = None
        out_dtype = x.dtype
        for k, flip in TRANSFORMS:
            xt = _forward_t(x, k, flip)
            y = _inverse_t(self.net(xt.contiguous(memory_format=_fmt(x))), k, flip)
            out_dtype = y.dtype
            acc = y.float() if acc is None else acc.add_(y.float())
        assert acc is not None
        return acc.div_(len(TRANSFORMS)).to(out_dtype)


def _fmt(x: torch.Tensor) -> torch.memory_format:
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
