"""sr's default CPU path (sr_cli/infer/cpumem.py and the torch engine): freed memory kept in
the process (no fresh pages per activation), the SR_CPU_MALLOC switch, and the accuracy of the
default forward of SRVGGNetCompact, RRDBNet and SRResNet against a float64 forward per
precision, tiled == untiled, and calls from several threads. Small random networks."""

from __future__ import annotations

import copy
import platform
import resource
import sys
import threading

import pytest
import torch

from sr_cli.archs import build
from sr_cli.errors import UsageError
from sr_cli.infer import cpumem
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel

glibc = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
    reason="the memory setting applies to glibc only",
)

CASES = [
    ("srvgg", {"num_feat": 32, "num_conv": 4, "upscale": 4}, (19, 23)),
    ("rrdbnet", {"num_feat": 16, "num_block": 2, "num_grow_ch": 8, "scale": 4}, (15, 18)),
    ("srresnet", {"num_feat": 16, "num_block": 2, "scale": 4}, (13, 17)),
]
# Against the float64 forward of the same weights (outputs clamped to [0, 1]); measured on these
# cases: fp32 max <= 4e-7, mean <= 3e-8; bf16 (8-bit mantissa) max <= 3e-2, mean <= 3e-3. The
# fp32 bounds stay far below one 8-bit level (3.9e-3).
TOL = {"fp32": (1e-5, 1e-6), "bf16": (8e-2, 1e-2)}


def _model(arch: str, hp: dict) -> LoadedModel:
    torch.manual_seed(0)
    net, desc = build(arch, **hp)
    net.eval().requires_grad_(False)
    with torch.no_grad():
        for m in net.modules():  # batch norm with non-trivial statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return LoadedModel(name=arch, net=net, desc=desc, metadata={"context": "40"}, source=None)


def _up(model: LoadedModel, prec: str = "fp32", tile: int = 0) -> Upscaler:
    return Upscaler(model, InferenceOptions(device="cpu", precision=prec, tile=tile,
                                            engine="torch"))


def test_mode_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SR_CPU_MALLOC", raising=False)
    assert cpumem.resolve_mode() == "keep"
    monkeypatch.setenv("SR_CPU_MALLOC", "System")
    assert cpumem.resolve_mode() == "system"
    monkeypatch.setattr(cpumem, "_applied", None)
    assert cpumem.keep_freed_memory() is False  # left alone, and not remembered
    assert cpumem._applied is None
    monkeypatch.setenv("SR_CPU_MALLOC", "jemalloc")
    with pytest.raises(UsageError, match="SR_CPU_MALLOC"):
        cpumem.resolve_mode()


@glibc
def test_freed_memory_is_reused_without_page_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """After keep_freed_memory(), a 64 MiB tensor freed and allocated again (above glibc's
    largest mmap threshold, so by default fresh pages every time) takes no new pages."""
    monkeypatch.delenv("SR_CPU_MALLOC", raising=False)
    assert cpumem.keep_freed_memory() is True
    assert cpumem.keep_freed_memory() is True  # once per process, then remembered
    n = 16 * 1024 * 1024  # float32: 64 MiB, 16384 pages
    torch.empty(n).fill_(1.0)
    faults = []
    for _ in range(3):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(n).fill_(1.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    assert min(faults) < 1000, faults  # 16384 when the pages are handed back


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize(("arch", "hp", "hw"), CASES, ids=[c[0] for c in CASES])
def test_default_path_matches_float64_forward(arch: str, hp: dict, hw: tuple[int, int],
                                              prec: str) -> None:
    """The default CPU path (torch engine, channels-last, memory kept) per precision, whole
    image and tiled, against the float64 forward; tiled equals whole up to float rounding."""
    model = _model(arch, hp)
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = copy.deepcopy(model.net).double()(x.double()).clamp(0, 1)
    whole = _up(model, prec).run(x)
    tiled = _up(model, prec, tile=8).run(x)
    assert whole.shape == ref.shape and whole.dtype == torch.float32
    err = (whole.double() - ref).abs()
    print(f"{arch} {prec}: max {err.max():.2e} mean {err.mean():.2e}")
    max_err, mean_err = TOL[prec]
    assert float(err.max()) <= max_err
    assert float(err.mean()) <= mean_err
    # fp32: exact context, so tiles differ only by float rounding; bf16 rounds more
    assert float((tiled - whole).abs().max()) <= (1e-5 if prec == "fp32" else max_err)


def test_threads_share_one_upscaler() -> None:
    """Worker threads calling one Upscaler (one prepared network) get the single-thread
    result."""
    arch, hp, hw = CASES[0]
    up = _up(_model(arch, hp))
    xs = [torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    want = [up.run(x) for x in xs]
    got: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        got[i] = up.run(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        assert torch.equal(got[i], w)
