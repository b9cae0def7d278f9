"""Network architectures, one module each, listed explicitly in :mod:`sr_cli.archs._all`."""

from sr_cli.archs.base import ArchSpec, Descriptor
from sr_cli.archs.registry import all_specs, arch_names, build, get_arch, register

__all__ = ["ArchSpec", "Descriptor", "all_specs", "arch_names", "build", "get_arch", "register"]
