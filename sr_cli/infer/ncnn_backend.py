"""The ncnn CPU engine: a network exported to ncnn (:mod:`sr_cli.infer.ncnn_export`) and run by
ncnn's fp32 CPU kernels (Winograd 3x3 convolutions, packed layouts), behind the same tensor
contract as the PyTorch network it replaces.

``--engine`` (``InferenceOptions.engine``):

``auto``   ncnn for fp32 inference on the CPU when the ``ncnn`` package imports, the network
           is one where ncnn measured faster (:data:`AUTO_NETS`, empty: on this project's
           AVX2 machine ncnn measured slower than PyTorch for every network) and
           ``--compile`` is off; PyTorch otherwise.
``torch``  always PyTorch.
``ncnn``   ncnn for every architecture that exports (also SRResNet, SRCNN), or a usage error
           saying why it cannot run (not the CPU, not fp32, package missing, architecture not
           exportable).

Each network is exported once per process (cached on the network object). ncnn's thread count
follows PyTorch's (``--threads`` / ``torch.set_num_threads``), read at every forward pass.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sr_cli.errors import ModelError, UsageError
from sr_cli.infer.ncnn_export import INPUT, OUTPUT, Export, export, exportable

ENGINES = ("auto", "torch", "ncnn")
AUTO_NETS: tuple[str, ...] = ()
"""The networks ``auto`` gives to ncnn: those where ncnn measured faster than PyTorch. None
here: on a quiet 2-core AVX2 machine (benchmarks/upscale.py --threads 1,2, README "CPU
engines") sr's ncnn engine ran SRVGGNetCompact x4 320x320 at 0.91-1.05x / 0.76x (1 / 2 threads)
of sr's PyTorch path and RRDBNet-23 x4 at 0.85x / 0.87x (ncnn's own runtime on the official
files the same within 5%); SRResNet measured about even and SRCNN slower. ``--engine ncnn``
runs it on request (CPUs where ncnn's Winograd kernels win can list networks here)."""


@cache
def ncnn_module() -> ModuleType | None:
    """The ``ncnn`` package, or ``None`` when it is not installed (or does not load)."""
    try:
        import ncnn
    except (ImportError, OSError):
        return None
    return ncnn


def resolve_engine(requested: str, device: torch.device, precision: str, net: nn.Module,
                   *, compile: bool = False) -> str:
    """``torch`` or ``ncnn`` for ``requested`` (one of :data:`ENGINES`), see the module
    docstring. Raises UsageError for an unknown name or an ``ncnn`` request that cannot run."""
    req = requested.strip().lower()
    if req not in ENGINES:
        raise UsageError(f"unknown --engine {requested!r} ({', '.join(ENGINES)})")
    if req == "torch":
        return "torch"
    why = _why_not(device, precision, net, compile)
    if req == "ncnn":
        if why is not None:
            raise UsageError(f"--engine ncnn: {why}; use --engine torch or auto")
        return "ncnn"
    return "ncnn" if why is None and type(net).__name__ in AUTO_NETS else "torch"


def _why_not(device: torch.device, precision: str, net: nn.Module, compile: bool) -> str | None:
    if device.type != "cpu":
        return f"ncnn runs on the CPU here, not {device}"
    if precision != "fp32":
        return f"ncnn runs fp32 here, not {precision}"
    if compile:
        return "--compile is a PyTorch option"
    if not exportable(net):
        return (f"{type(net).__name__} has no ncnn export (SRVGGNetCompact, RRDBNet, "
                "SRResNet and SRCNN have)")
    if ncnn_module() is None:
        return "the ncnn package is not installed (pip install ncnn)"
    return None


class NcnnNetwork(nn.Module):
    """An exported network run by ncnn: ``forward(x)`` takes and returns what the PyTorch
    network does (``(B, C, H, W)`` float32 on the CPU; the result is float32, NCHW).

    Args:
        exp: from :func:`sr_cli.infer.ncnn_export.export`.
    """

    def __init__(self, exp: Export) -> None:
        super().__init__()
        ncnn = ncnn_module()
        if ncnn is None:
            raise UsageError("the ncnn package is not installed (pip install ncnn)")
        self._ncnn = ncnn
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = False
        for name in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                     "use_bf16_storage", "use_bf16_packed"):
            setattr(opt, name, False)  # fp32 throughout: the accuracy of sr's fp32 path
        opt.num_threads = max(1, torch.get_num_threads())
        with tempfile.TemporaryDirectory(prefix="sr-ncnn-") as tmp:  # ncnn copies from files
            param, weights = Path(tmp) / "net.param", Path(tmp) / "net.bin"
            param.write_text(exp.param, encoding="utf-8")
            weights.write_bytes(exp.weights)
            if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
                raise ModelError("ncnn refused the exported graph (an exporter bug)")
        self._net = net
        self._wrap = exp.wrap
        self._lock = threading.Lock()

    def _extract(self, x: np.ndarray) -> np.ndarray:
        with self._lock:  # the extractor takes the options as they are at its creation
            self._net.opt.num_threads = max(1, torch.get_num_threads())
            ex = self._net.create_extractor()
        if ex.input(INPUT, self._ncnn.Mat(x)) != 0:
            raise ModelError("ncnn did not take the input")
        ret, out = ex.extract(OUTPUT)
        if ret != 0:
            raise ModelError(f"ncnn forward pass failed (code {ret})")
        return np.array(out, dtype=np.float32, copy=True)

    def body(self, x: Tensor) -> Tensor:
        """The ncnn graph on a batch, one image at a time."""
        xs = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [self._extract(np.ascontiguousarray(xs[i])) for i in range(xs.shape[0])]
        return torch.from_numpy(outs[0][None] if len(outs) == 1 else np.stack(outs))

    def forward(self, x: Tensor) -> Tensor:
        return self._wrap(x, self.body)


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[float, ...], NcnnNetwork]] = (
    weakref.WeakKeyDictionary())
_CACHE_LOCK = threading.Lock()


@torch.no_grad()
def _fingerprint(net: nn.Module) -> tuple[float, ...]:
    """A cheap summary of the weights (sum and L2 norm per tensor), so a network changed in
    place after its export is exported again."""
    ts = [t.detach() for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()]
    if not ts:
        return ()
    sums = torch.stack([t.sum() for t in ts] + [torch.linalg.vector_norm(t) for t in ts])
    return tuple(sums.tolist())


def ncnn_network(net: nn.Module) -> NcnnNetwork:
    """``net`` (a float32 network on the CPU) as an :class:`NcnnNetwork`, exported on first use
    and cached for the process (exported again when its weights have changed since). Raises
    UsageError when it cannot be exported or ncnn is missing."""
    with _CACHE_LOCK:
        fp = _fingerprint(net)
        found = _CACHE.get(net)
        if found is None or found[0] != fp:
            exp = export(net)
            if exp is None:
                raise UsageError(f"{type(net).__name__} has no ncnn export")
            found = (fp, NcnnNetwork(exp))
            _CACHE[net] = found
        return found[1]


def describe(engine: str) -> dict[str, Any]:
    """Facts for a run summary: the engine, and ncnn's version when it ran."""
    info: dict[str, Any] = {"engine": engine}
    mod = ncnn_module() if engine == "ncnn" else None
    if mod is not None:
        info["ncnn_version"] = str(getattr(mod, "__version__", "?"))
    return info
