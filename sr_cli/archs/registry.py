"""The explicit architecture registry. Adding a spec here adds it to the shared tests."""

from __future__ import annotations

from typing import Any

from torch import nn

from sr_cli.archs.base import ArchSpec, Descriptor
from sr_cli.errors import ModelError

_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add a spec; a duplicate id raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    if not _REGISTRY:
        from sr_cli.archs import _all  # explicit list of specs, no import side effects elsewhere

        for spec in _all.SPECS:
            register(spec)


def arch_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def all_specs() -> list[ArchSpec]:
    _ensure_loaded()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get_arch(name: str) -> ArchSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r} (known: {', '.join(sorted(_REGISTRY))})"
        ) from None


def build(name: str, **hparams: Any) -> tuple[nn.Module, Descriptor]:
    """Build a network and its descriptor from an architecture id and hyperparameters."""
    spec = get_arch(name)
    hp = spec.hparams(**hparams)
    return spec.create(hp), spec.describe(hp)
