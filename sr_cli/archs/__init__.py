"""Network architectures, one module each, listed explicitly in :mod:`sr_cli.archs._all`.

The names below load on first use (PEP 562), so importing a light submodule of this package
(e.g. :mod:`sr_cli.archs.base`) does not import the networks and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sr_cli.archs.base import ArchSpec, Descriptor
    from sr_cli.archs.registry import all_specs, arch_names, build, get_arch, register

__all__ = ["ArchSpec", "Descriptor", "all_specs", "arch_names", "build", "get_arch", "register"]

_WHERE = {"ArchSpec": "base", "Descriptor": "base"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"sr_cli.archs.{_WHERE.get(name, 'registry')}")
        return getattr(module, name)
    raise AttributeError(f"module 'sr_cli.archs' has no attribute {name!r}")
