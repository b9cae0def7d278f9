"""What every architecture declares: the :class:`ArchSpec` (how to build, describe and detect it)
and the :class:`Descriptor` (what the inference engine needs to know about one built network).

Tensor contract of every network built from a spec: ``forward(x)`` takes ``x`` of shape
``(B, C, h, w)``, float, values in [0, 1] (RGB or gray), and returns ``(B, C, h*s, w*s)`` in
roughly [0, 1] (not clamped), where ``s`` is ``Descriptor.scale``. Pre-processing a paper's
network needs (SRCNN's bicubic pre-upsampling and Y channel, pixel-unshuffle of RRDBNet x1/x2)
happens inside ``forward``, so the engine and the trainer treat every network alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sr_cli.errors import ModelError

if TYPE_CHECKING:  # annotations only: this module stays importable without torch
    import torch
    from torch import nn

StateDict = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class Descriptor:
    """Facts about one built network, for inference and tiling.

    Attributes:
        arch: registry id, e.g. ``"rrdbnet"``.
        scale: native integer upscaling factor; ``0`` means any factor (non-learned baselines,
            which read the factor from ``hparams["scale"]``).
        in_channels: image channels the network takes (1 or 3).
        accepts_rgb: RGB images go in as they are: every 3-channel network (the default when
            not given: ``in_channels == 3``), and a 1-channel network that converts RGB to
            BT.601 Y internally (SRCNN-Y).
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
    accepts_rgb: bool | None = None
    size_multiple: int = 1
    context: int = 16
    exact_context: bool = True
    supports_half: bool = True
    learned: bool = True

    def __post_init__(self) -> None:
        if self.accepts_rgb is None:
            object.__setattr__(self, "accepts_rgb", self.in_channels == 3)


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
            raise ModelError(
                f"unknown hyperparameter(s) for {self.name}: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(self.defaults))})"
            )
        hp = dict(self.defaults)
        hp.update(overrides)
        return _checked_values(self.name, self.defaults, hp)

    def check_size(self, hp: Mapping[str, Any]) -> None:
        """Refuse (ModelError, exit 4) hyperparameters that describe an absurd network, before
        allocating it: the network is built on the ``meta`` device (no memory, no
        initialisers) and its parameter count checked against :data:`MAX_PARAMETERS`. Crafted
        metadata (2**20 channels) cannot exhaust memory."""
        hp = dict(hp)
        try:
            with meta_build():
                probe = self.factory(**hp)
            count = sum(p.numel() for p in probe.parameters())
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError) as exc:
            raise ModelError(f"cannot build {self.name} with {hp}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
        if count > MAX_PARAMETERS:
            raise ModelError(f"{self.name} with {hp} would have {count:,} parameters (more than "
                             f"{MAX_PARAMETERS:,}); refusing to build it")

    def create(self, hp: Mapping[str, Any]) -> nn.Module:
        """Build the network for ``hp`` after :meth:`check_size` (ModelError, exit 4)."""

        self.check_size(hp)
        try:
            return self.factory(**dict(hp))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot build {self.name} with {hp}: {exc}") from None

    def build(self, **overrides: Any) -> nn.Module:
        return self.create(self.hparams(**overrides))


@contextlib.contextmanager
def meta_build() -> Iterator[None]:
    """Build modules on the ``meta`` device without running weight initialisers: for shape
    checks and for networks whose weights are assigned afterwards. (An initialiser on a meta
    tensor can cost seconds: ``nn.Embedding``'s ``normal_`` imports torch's compiler stack.)"""
    import torch

    with torch.device("meta"), _skip_init():
        yield


def count_indexed(sd: StateDict, prefix: str) -> int:
    """How many ``prefix.0.``, ``prefix.1.``, ... groups of keys ``sd`` has, counting from 0."""
    n = 0
    while any(k.startswith(f"{prefix}.{n}.") for k in sd):
        n += 1
    return n


def inferred_state(factory: Callable[..., nn.Module], hp: Mapping[str, Any],
                   arch: str | None = None) -> dict[str, torch.Tensor] | None:
    """The state dict (meta tensors) of ``factory(**hp)``, the network that detection inferred
    from a checkpoint. When ``hp`` gives no valid network (the factory's ValueError): None, or
    with ``arch`` a ModelError saying the weights look like ``arch`` but build nothing."""
    try:
        with meta_build():
            return dict(factory(**hp).state_dict())
    except ValueError as exc:
        if arch is None:
            return None
        raise ModelError(f"these weights look like {arch} but give no valid network: {exc}"
                         ) from None


def fits(expected: StateDict, sd: StateDict) -> bool:
    """Whether ``sd`` has exactly the keys of ``expected``, each of the same shape."""
    return set(expected) == set(sd) and all(
        tuple(expected[k].shape) == tuple(sd[k].shape) for k in expected)


def mismatch(arch: str, expected: StateDict, sd: StateDict) -> ModelError:
    """The ModelError for weights recognised as ``arch`` whose keys or shapes do not fit the
    network inferred from them (names the first differences)."""
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if not parts:
        k = next(k for k in expected if tuple(expected[k].shape) != tuple(sd[k].shape))
        parts.append(f"{k} has shape {tuple(sd[k].shape)}, the inferred network needs "
                     f"{tuple(expected[k].shape)}")
    return ModelError(f"these weights look like {arch} but do not fit the {arch} inferred from "
                      f"them: tensors {'; '.join(parts)}")


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """No weight initialisers while probing on the meta device (there is nothing to fill,
    and their meta decompositions are slow: seconds for a large RRDBNet)."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")
             and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


MAX_PARAMETERS = 1 << 28
"""Largest network ``sr`` builds (268 M parameters, 1 GiB in fp32; the largest real SR model
here has 17 M). Checked from the hyperparameters, before allocation."""

_COUNTS = ("num_block", "num_conv")  # may be 0; every other integer hyperparameter is >= 1


def _checked_values(arch: str, defaults: Mapping[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters of the default's type and in range: integers are integers (>= 1, or
    >= 0 for block counts), at most 2**20; floats are finite and > 0; flags are booleans.
    ModelError (exit 4) otherwise, so bad metadata never reaches a constructor."""
    import math


    for key, default in defaults.items():
        v = hp[key]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ModelError(f"{arch}: hyperparameter {key} must be true or false, got {v!r}")
        elif isinstance(default, int):
            if isinstance(v, float) and math.isfinite(v) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ModelError(f"{arch}: hyperparameter {key} must be an integer, got {v!r}")
            low = 0 if key in _COUNTS else 1
            if not low <= v <= 1 << 20:
                raise ModelError(f"{arch}: hyperparameter {key} = {v} is out of range "
                                 f"({low}..{1 << 20})")
            hp[key] = v
        elif isinstance(default, float) and (
                isinstance(v, bool) or not isinstance(v, (int, float))
                or not (math.isfinite(v) and v > 0)):
            raise ModelError(f"{arch}: hyperparameter {key} must be a finite number > 0, "
                             f"got {v!r}")
    return hp
