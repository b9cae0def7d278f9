"""The effective receptive radius of a loaded network, measured from its weights.

Deep networks (RRDBNet: 23 blocks, a theoretical radius of hundreds of pixels) have an influence
that decays with distance, at a rate set by the trained weights, not by the architecture. The
tiler needs the distance beyond which cutting the image changes the output by less than a
rounding step; a fixed constant is too small for some weights (seams) and wasteful for others.

The probe reproduces what a tile border does. A synthetic test image (smooth shading, hard
edges, lines, fine texture and noise: the content that carries influence furthest) is run whole,
and again cut along one side at a distance of ``R`` pixels from the full image's border; the
difference between the two outputs, as a function of the distance from the cut, is the error
profile of a tile border. Cuts on all four sides are measured (convolutions are not symmetric).
The radius is the distance beyond which the profile stays under ``threshold`` (default a quarter
of an 8-bit level, so that a tile corner, where two cuts add, stays within half a level and the
rounded output within one level); the context is that radius times :data:`MARGIN`. ``R``
doubles until the profile has decayed inside the probe, up to the theoretical radius or
``max_context``.

The result is stored in the model file's metadata (``context``) by
:func:`sr_cli.zoo.save_model`, so the probe runs once per weights file (convert, fetch, train
export), and at load time only for files saved before this existed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_cli.archs.base import Descriptor
from sr_cli.archs.facts import context_from_metadata  # noqa: F401 - re-exported

THRESHOLD = 0.25 / 255
"""Largest output change allowed per tile border (a quarter of an 8-bit level)."""
MAX_CONTEXT = 256
MARGIN = 1.25
"""Safety factor on the measured radius (real images may carry influence a little further)."""
PROBE_ROWS = 40
"""Height of the probe strips (input pixels): the cut runs along this many rows."""


def probe_image(height: int, width: int, channels: int, seed: int = 0) -> torch.Tensor:
    """A deterministic ``(1, C, H, W)`` test image in [0, 1] with natural-image content:
    shading, step edges, thin lines, fine texture and noise (seeded, no I/O)."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, height).view(-1, 1)
    xx = torch.linspace(0, 1, width).view(1, -1)
    out = []
    for _ in range(channels):
        a, b, c = torch.rand(3, generator=g).tolist()
        img = 0.35 + 0.3 * torch.sin(6.283 * (a * 2 * xx + b * 1.5 * yy) + c * 6.283)
        for _k in range(6):  # step edges at random angles
            th = float(torch.rand(1, generator=g)) * math.pi
            off = float(torch.rand(1, generator=g))
            img = img + 0.25 * torch.sign(math.cos(th) * xx + math.sin(th) * yy - off) * (
                float(torch.rand(1, generator=g)) - 0.5
            )
        texture = torch.sin(xx * width * 1.7 + yy * height * 0.9) * torch.sin(yy * height * 1.3)
        img = img + 0.12 * texture + 0.08 * torch.randn(height, width, generator=g)
        out.append(img)
    x = torch.stack(out).unsqueeze(0)
    lines = torch.zeros(height, width)
    lines[:, 3::11] = 0.4
    lines[5::13, :] = -0.4
    return (x + lines).clamp(0, 1)


def _profile(net: nn.Module, x: torch.Tensor, r: int, scale: int) -> torch.Tensor:
    """Max |cut - whole| output error per distance (input px) from a cut on the left and on the
    right of ``x`` (``(1, C, h, W)``), ``r`` pixels inside; length ``W - r``."""
    w = x.shape[-1]
    full = net(x)
    left = net(x[..., r:])
    right = net(x[..., : w - r])
    s = scale
    el = (left - full[..., r * s:]).abs().amax(dim=(0, 1, 2))  # distance = column index
    er = (right - full[..., : (w - r) * s]).abs().amax(dim=(0, 1, 2)).flip(0)
    e = torch.maximum(el, er)
    return e.view(-1, s).amax(dim=1).float().cpu()  # per input-pixel distance


@torch.no_grad()
def measure_context(
    net: nn.Module,
    desc: Descriptor,
    *,
    threshold: float = THRESHOLD,
    max_context: int = MAX_CONTEXT,
    theoretical: int | None = None,
) -> int:
    """The tiling context (input pixels) of ``net`` measured as the module docstring describes.

    Runs on the device and in the dtype of ``net``'s parameters (use fp32). Returns a multiple
    of ``desc.size_multiple``, at least 1 and at most ``min(theoretical, max_context)``.
    """
    m = max(1, desc.size_multiple)
    s = max(1, desc.scale)
    if theoretical is None:
        theoretical = theoretical_radius(desc)
    cap = min(max_context, theoretical if theoretical is not None else max_context)
    cap = max(m, -(-cap // m) * m)
    p = next(iter(net.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    dt = p.dtype if p is not None else torch.float32
    was_training = net.training
    net.eval()
    r = min(cap, 16 * m)
    try:
        while True:
            span = -(-(2 * r + 8) // m) * m
            rows = -(-PROBE_ROWS // m) * m
            img = probe_image(rows, span, desc.in_channels).to(dev, dt)
            prof = _profile(net, img, r, s)
            imgt = probe_image(span, rows, desc.in_channels, seed=1).to(dev, dt)
            prof_t = _profile(_Transposed(net), imgt.transpose(-1, -2), r, s)
            prof = torch.maximum(prof, prof_t)
            above = torch.nonzero(prof > threshold).flatten()
            radius = int(above.max()) + 1 if above.numel() else 0
            # trust the profile only where the cut left at least ``radius`` of context unseen
            if radius < r or r >= cap:
                break
            r = min(cap, 2 * r)
    finally:
        net.train(was_training)
    ctx = min(cap, max(1, math.ceil(radius * MARGIN)))
    return -(-ctx // m) * m


def theoretical_radius(desc: Descriptor) -> int | None:
    """The architecture's theoretical receptive radius, where known (caps the probe)."""
    if desc.arch == "rrdbnet":
        from sr_cli.archs.facts import receptive_radius_rrdbnet

        return receptive_radius_rrdbnet(desc.hparams)
    return None


class _Transposed(nn.Module):
    """``net`` seen through a transpose, so vertical cuts are measured as horizontal ones."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(-1, -2)).transpose(-1, -2)  # type: ignore[no-any-return]
