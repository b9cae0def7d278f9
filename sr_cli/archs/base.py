"""What every architecture declares: the :class:`ArchSpec` (how to build, describe and detect it)
and the :class:`Descriptor` (what the inference engine needs to know about one built network).

Tensor contract of every network built from a spec: ``forward(x)`` takes ``x`` of shape
``(B, C, h, w)``, float, values in [0, 1] (RGB or gray), and returns ``(B, C, h*s, w*s)`` in
roughly [0, 1] (not clamped), where ``s`` is ``Descriptor.scale``. Pre-processing a paper's
network needs (SRCNN's bicubic pre-upsampling and Y channel, pixel-unshuffle of RRDBNet x1/x2)
happens inside ``forward``, so the engine and the trainer treat every network alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Descriptor:
    """Facts about one built network, for inference and tiling.

    Attributes:
        arch: registry id, e.g. ``"rrdbnet"``.
        scale: native integer upscaling factor; ``0`` means any factor (non-learned baselines,
            which read the factor from ``hparams["scale"]``).
        in_channels: image channels the network takes (1 or 3). A 1-channel network whose
            ``accepts_rgb`` is true converts RGB to BT.601 Y internally (SRCNN-Y).
        accepts_rgb: see ``in_channels``.
        size_multiple: input height/width must be a multiple of this (pixel-unshuffle: 2 for
            RRDBNet x2, 4 for x1); the engine pads by reflection and crops.
        context: input pixels on each side that influence an output pixel (receptive radius),
            used by the tiler as overlap; a safe upper bound when ``exact_context``.
        exact_context: ``context`` is the exact receptive radius (tiles equal the untiled output
            bit for bit). False for deep networks whose theoretical radius is impractical
            (RRDBNet): their context is measured from the weights
            (:func:`sr_cli.infer.context.measure_context`, cached in the file's metadata) and
            ``context`` here is only the value used before a measurement exists.
        supports_half: fp16/bf16 inference is numerically fine.
        learned: has weights (False for bicubic/lanczos/nearest).
        hparams: the full hyperparameters the network was built with.
    """

    arch: str
    scale: int
    in_channels: int
    hparams: dict[str, Any]
    accepts_rgb: bool = False
    size_multiple: int = 1
    context: int = 16
    exact_context: bool = True
    supports_half: bool = True
    learned: bool = True


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture.

    Attributes:
        name: registry id (lower case, unique).
        defaults: default hyperparameters; ``build(**hp)`` accepts any subset as overrides.
        factory: ``factory(**hparams) -> nn.Module`` following the tensor contract above.
        describe: ``describe(hparams) -> Descriptor``.
        detect: ``detect(state_dict) -> hparams | None``: recognise this architecture from a
            state dict already in canonical keys, inferring hyperparameters (and scale) from
            tensor shapes; None when it is not this architecture.
        canonical_keys: ``canonical_keys(state_dict) -> state_dict`` rename alternative key
            schemes (original ESRGAN repo, old ``model.N``) to this project's keys; returns the
            input unchanged when it is already canonical or not this architecture.
        description: one line for ``sr models list`` / docs.
        extra: optional facts. Keys in use: ``tiny`` (small hparams the shared registry tests
            build), ``scales`` (supported native scales), ``scale_in_weights`` (False when the
            factor cannot be read from tensor shapes, e.g. SRCNN), ``learned`` (False for the
            interpolation baselines).
    """

    name: str
    defaults: Mapping[str, Any]
    factory: Callable[..., nn.Module]
    describe: Callable[[Mapping[str, Any]], Descriptor]
    detect: Callable[[StateDict], dict[str, Any] | None] = lambda sd: None
    canonical_keys: Callable[[StateDict], dict[str, torch.Tensor]] = lambda sd: dict(sd)
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def hparams(self, **overrides: Any) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            from sr_cli.errors import ModelError

            raise ModelError(
                f"unknown hyperparameter(s) for {self.name}: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(self.defaults))})"
            )
        hp = dict(self.defaults)
        hp.update(overrides)
        return hp

    def build(self, **overrides: Any) -> nn.Module:
        return self.factory(**self.hparams(**overrides))
