"""sr's default CPU path (sr_cli/infer/cpumem.py and the torch engine): freed memory kept in
the process (no fresh pages per activation), the SR_CPU_MALLOC switch, and the accuracy of the
default forward of SRVGGNetCompact, RRDBNet and SRResNet against a float64 forward per
precision, tiled == untiled, and calls from several threads. Small random networks."""

from __future__ import annotations

import copy
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from sr_cli.archs import build
from sr_cli.errors import UsageError
from sr_cli.infer import cpumem
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel

REPO = Path(__file__).resolve().parents[1]
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
    assert cpumem.resolve_mode() == "system"  # the default
    monkeypatch.setenv("SR_CPU_MALLOC", "System")
    assert cpumem.resolve_mode() == "system"
    monkeypatch.setattr(cpumem, "_applied", None)
    assert cpumem.keep_freed_memory() is False  # left alone, and not remembered
    assert cpumem._applied is None
    monkeypatch.setenv("SR_CPU_MALLOC", "jemalloc")
    with pytest.raises(UsageError, match="SR_CPU_MALLOC"):
        cpumem.resolve_mode()


@glibc
def test_scope_is_entered_only_for_large_inputs_and_always_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """keep: mmap is off only inside calls on >= MIN_ELEMENTS inputs (small calls and the
    output pipeline keep glibc's defaults), nested calls count, and a raising forward still
    leaves the scope."""
    monkeypatch.setenv("SR_CPU_MALLOC", "keep")
    monkeypatch.setattr(cpumem, "_applied", None)
    assert cpumem.keep_freed_memory()
    depths = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            depths.append(cpumem._depth)
            if x.numel() == cpumem.MIN_ELEMENTS + 1:
                raise RuntimeError("boom")
            return x

    net = torch.nn.Sequential(Probe())
    cpumem.attach(net)
    net(torch.zeros(cpumem.MIN_ELEMENTS - 1))
    net(torch.zeros(cpumem.MIN_ELEMENTS))
    with cpumem.forward_scope(10):
        net(torch.zeros(3))
    with cpumem.forward_scope(cpumem.MIN_ELEMENTS):
        net(torch.zeros(cpumem.MIN_ELEMENTS))
    with pytest.raises(RuntimeError):
        net(torch.zeros(cpumem.MIN_ELEMENTS + 1))
    # Sequential + Probe each enter on a large input: 2; inside a large scope: 3
    assert depths == [0, 2, 0, 3, 2]
    assert cpumem._depth == 0


_PASSES = """
import resource, torch
from sr_cli.archs import build
from sr_cli.infer.engine import InferenceOptions, Upscaler
from sr_cli.zoo import LoadedModel
torch.set_num_threads(1)
torch.manual_seed(0)
net, desc = build("srvgg", num_feat=4, num_conv=1, upscale=2)
up = Upscaler(LoadedModel(name="v", net=net.eval(), desc=desc, metadata={}, source=None),
              InferenceOptions(device="cpu", precision="fp32", tile=0, engine="torch"))
x = torch.rand(1, 3, 400, 400)  # output >= MIN_ELEMENTS: the whole call runs in the scope
for _ in range(8):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    up.run(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str, **extra: str) -> list[int]:
    env = dict(os.environ, SR_CPU_MALLOC=mode, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _PASSES], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return [int(v) for v in out]


@glibc
def test_no_fresh_pages_after_warm_up() -> None:
    """Fresh processes running sr's CPU path on a network whose pass frees about 20 MB (7.7 MB
    tensors, well within the 64 MiB that keep holds). With keep the heap grows for a pass or
    two (measured 5,600-7,500, then 1-3,750), and then most passes take no new pages.

    The baseline is SR_CPU_MALLOC=system with glibc's mmap threshold pinned at its default
    (``MALLOC_MMAP_THRESHOLD_``): every pass then maps and unmaps its tensors (measured 8,601
    faults per pass, every run). Unpinned, glibc slides the threshold up after frees, and a
    run takes anything from 0 to 5,600 per pass (CI saw [7753, 3595, 115, 116, 394, 0]), so
    the unpinned baseline proves nothing either way."""
    keep = _faults("keep")
    pinned = _faults("system", MALLOC_MMAP_THRESHOLD_="131072")
    assert len(keep) == len(pinned) == 8
    # keep: most warm passes take none, some a few thousand (CI saw [.., 0, 0, 2968, 0])
    assert sorted(keep[2:])[2] < 200, keep
    assert sum(keep[2:]) * 4 < sum(pinned[2:]), (keep, pinned)
    assert min(pinned[1:]) > 4_000, pinned


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize(("arch", "hp", "hw"), CASES, ids=[c[0] for c in CASES])
def test_default_path_matches_float64_forward(arch: str, hp: dict, hw: tuple[int, int],
                                              prec: str) -> None:
    """The default CPU path (torch engine, channels-last) per precision, whole
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


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("hp", [
    {"num_feat": 16, "num_conv": 2, "upscale": 4},
    {"num_feat": 8, "num_conv": 1, "upscale": 3},
    {"num_feat": 8, "num_conv": 1, "upscale": 2, "num_in_ch": 1, "num_out_ch": 1},
    {"num_feat": 8, "num_conv": 1, "upscale": 4, "out_scale": 3},
], ids=["x4", "x3", "x2-gray", "out3"])
def test_srvgg_inference_form_matches_the_network(hp: dict, prec: str) -> None:
    """SRVGGInference (kept-buffer body, fused pixel-shuffle + upsampled-input tail) gives the
    network's own output, channels-last: within 1e-5 in float32 (the body's fused conv + add
    may run another oneDNN kernel), exactly in bf16 (the plain body); a non-native out_scale
    runs the network's forward."""
    from sr_cli.infer.device import DTYPES
    from sr_cli.infer.fastconv import SRVGGInference, prepare_inference

    torch.manual_seed(0)
    net, _ = build("srvgg", **hp)
    net = net.eval().requires_grad_(False).to(DTYPES[prec], memory_format=torch.channels_last)
    fast = prepare_inference(copy.deepcopy(net))
    assert isinstance(fast, SRVGGInference)
    assert prepare_inference(nn := torch.nn.Conv2d(3, 3, 3)) is nn
    c = hp.get("num_in_ch", 3)
    x = torch.rand(2, c, 13, 17).to(DTYPES[prec]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = net(x), fast(x)
    if prec == "fp32":  # the buffered body's fused conv + add: oneDNN may pick another kernel
        assert (fast.workspace.nbytes() > 0) == ("out_scale" not in hp)
        assert float((got - want).abs().max()) <= 1e-5
    else:
        assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("act", ["prelu", "relu", "leakyrelu"])
def test_srvgg_buffered_body_reuses_its_pair_and_hands_out_fresh_outputs(act: str) -> None:
    """SRVGGInference's float32 body runs in two kept buffers: a second call of the same or a
    smaller size reuses them, a larger one replaces them, a call while another thread holds
    them runs in a pair of its own with the same result, and no output aliases a buffer
    (an earlier output survives the next call)."""
    from sr_cli.infer.fastconv import SRVGGInference, _sum_ok, prepare_inference

    if not _sum_ok():
        pytest.skip("oneDNN's in-place convolution + add is not available in this build")
    torch.manual_seed(0)
    net, _ = build("srvgg", num_feat=16, num_conv=3, upscale=4, act_type=act)
    net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    fast = prepare_inference(copy.deepcopy(net))
    assert isinstance(fast, SRVGGInference)

    def rand(h: int, w: int) -> torch.Tensor:
        return torch.rand(1, 3, h, w).contiguous(memory_format=torch.channels_last)

    x1, x2, x3 = rand(40, 36), rand(30, 36), rand(64, 50)
    ws = fast.workspace

    def pointers() -> list[int]:
        return [ws._flat[k].data_ptr() for k in sorted(ws._flat)]

    with torch.no_grad():
        y1 = fast(x1)
        kept = pointers()
        assert len(kept) == 2
        y1_copy = y1.clone()
        y2 = fast(x2)
        assert pointers() == kept
        assert torch.equal(y1, y1_copy)
        for x, y in ((x1, y1), (x2, y2)):
            assert float((y - net(x)).abs().max()) <= 1e-5
        y3 = fast(x3)
        assert ws.nbytes() >= 2 * 4 * 64 * 50 * 16
        grown = pointers()
        assert ws.take()  # another thread is in the kept pair
        try:
            y3_own = fast(x3)
        finally:
            ws.give()
        assert pointers() == grown
        assert torch.equal(y3_own, y3)
        assert float((y3 - net(x3)).abs().max()) <= 1e-5
        xc = x1.contiguous()  # not channels-last: the network's own layers, same function
        assert float((fast(xc) - net(xc)).abs().max()) <= 1e-5


def test_rrdbnet_workspace_is_reused_in_the_trunk_and_freed_after_it() -> None:
    """RRDBNet's dense blocks share one kept workspace (their concatenations and conv1-4
    outputs): reused from block to block and call to call while the trunk runs, freed when
    the trunk is done (whole forward: a hook on ``body``; staged engine runs: the engine), a
    deep copy gets its own, and a call while another thread holds it computes the same."""
    from sr_cli.infer.fastconv import RDBInference, Workspace, prepare_inference

    model = _model("rrdbnet", {"num_feat": 16, "num_block": 2, "num_grow_ch": 8, "scale": 4})
    net = copy.deepcopy(model.net).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(model.net).double()
    fast = prepare_inference(net)
    ws = fast.sr_workspace
    assert isinstance(ws, Workspace)
    rdbs = [m for m in fast.modules() if isinstance(m, RDBInference)]
    assert len(rdbs) == 6 and all(m.workspace is ws for m in rdbs)
    seen: list[tuple[int, ...]] = []

    def record(_m: Any, _a: Any, _o: Any) -> None:  # inside the trunk
        seen.append(tuple(ws._flat[k].data_ptr() for k in sorted(ws._flat)))

    for m in rdbs:
        m.register_forward_hook(record)
    x = torch.rand(1, 3, 21, 19, generator=torch.Generator().manual_seed(1))
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = ref(x.double())
        got = fast(xc)
        assert ws.nbytes() == 0  # freed after the trunk
        assert len(seen) == 6 and len(set(seen)) == 1 and len(seen[0]) == 5  # cat, x1..x4
        assert float((got - want).abs().max()) <= 1e-5
        twin = copy.deepcopy(fast)
        assert twin.sr_workspace is not ws
        assert all(m.workspace is twin.sr_workspace
                   for m in twin.modules() if isinstance(m, RDBInference))
        assert ws.take()  # another thread holds it: the blocks allocate as before
        try:
            held = fast(xc)
        finally:
            ws.give()
        assert float((held - want).abs().max()) <= 1e-5
    up = _up(model, tile=8)
    assert up.stages_exactly()
    y = up.run(xc)
    assert up._net("fp32").sr_workspace.nbytes() == 0  # the staged trunk freed it
    assert float((y.double() - want.clamp(0, 1)).abs().max()) <= 1e-5  # run() clamps


SRRES_CASES = [
    {"num_feat": 16, "num_block": 2, "scale": 4},
    {"num_feat": 16, "num_block": 2, "scale": 3},
    {"num_feat": 8, "num_block": 1, "scale": 8},
    {"num_feat": 8, "num_block": 1, "scale": 2, "in_channels": 1, "out_channels": 1},
    {"num_feat": 8, "num_block": 1, "scale": 2, "norm": False},
]


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("hp", SRRES_CASES, ids=["x4", "x3", "x8", "x2-gray", "x2-nonorm"])
def test_srresnet_inference_form_matches_float64_forward(hp: dict, prec: str) -> None:
    """SRResNetInference (batch norm folded, PReLU fused into the convolutions, the last
    shuffle merged into conv_last) computes the network's function: against the float64
    forward of the same weights within the default path's tolerances, channels-last, at odd
    sizes and batch 2; training-mode networks are left alone."""
    from sr_cli.infer.device import DTYPES
    from sr_cli.infer.fastconv import SRResNetInference, prepare_inference

    model = _model("srresnet", hp)
    net = copy.deepcopy(model.net).to(DTYPES[prec], memory_format=torch.channels_last)
    fast = prepare_inference(net)
    assert isinstance(fast, SRResNetInference)
    assert prepare_inference(t := copy.deepcopy(model.net).train()) is t
    c = hp.get("in_channels", 3)
    x = torch.rand(2, c, 13, 17, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = copy.deepcopy(model.net).double()(x.double())
        got = fast(x.to(DTYPES[prec]).contiguous(memory_format=torch.channels_last))
    assert got.shape == ref.shape and got.dtype == DTYPES[prec]
    assert got.is_contiguous(memory_format=torch.channels_last)
    err = (got.double() - ref).abs()
    max_err, mean_err = TOL[prec]
    assert float(err.max()) <= max_err, float(err.max())
    assert float(err.mean()) <= mean_err


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("scale", [4, 2, 1])
def test_rrdbnet_fused_dense_blocks_match_float64_forward(scale: int, prec: str) -> None:
    """prepare_inference swaps every Residual Dense Block of an eval-mode RRDBNet for
    RDBInference (LeakyReLU fused, 0.2 folded into conv5) in place: the network keeps its type
    (and its staged form), and computes the float64 forward's function within the default
    path's tolerances; a network in training mode is left alone."""
    from sr_cli.archs.rrdbnet import RRDBNet
    from sr_cli.infer.device import DTYPES
    from sr_cli.infer.fastconv import RDBInference, prepare_inference

    model = _model("rrdbnet", {"num_feat": 16, "num_block": 2, "num_grow_ch": 8,
                               "scale": scale})
    net = copy.deepcopy(model.net).to(DTYPES[prec], memory_format=torch.channels_last)
    fast = prepare_inference(net)
    assert type(fast) is RRDBNet
    assert all(isinstance(m, RDBInference) for b in fast.body for m in b.children())
    train = copy.deepcopy(model.net).train()
    assert not any(isinstance(m, RDBInference) for m in prepare_inference(train).modules())
    assert fast.staged().stages  # the staged form still builds
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = copy.deepcopy(model.net).double()(x.double())
        got = fast(x.to(DTYPES[prec]).contiguous(memory_format=torch.channels_last))
    err = (got.double() - ref).abs()
    max_err, mean_err = TOL[prec]
    assert float(err.max()) <= max_err and float(err.mean()) <= mean_err


@pytest.mark.parametrize(("k", "r"), [(9, 2), (9, 3), (3, 2), (5, 4), (1, 2)])
def test_convolution_merged_into_the_shuffle(k: int, r: int) -> None:
    """conv(pixel_shuffle(y)) == pixel_shuffle(conv'(y)) with merge_into_shuffle's weights,
    borders included (float64, to rounding); the output-channel padding changes nothing."""
    import torch.nn.functional as F

    from sr_cli.infer.fastconv import _padded_out, merge_into_shuffle, shuffle_cl

    g = torch.Generator().manual_seed(k * 10 + r)
    y = torch.randn(1, 5 * r * r, 6, 7, generator=g, dtype=torch.float64)
    conv = torch.nn.Conv2d(5, 3, k, 1, k // 2).double()
    w, b, pad = merge_into_shuffle(conv.weight, conv.bias, r)
    with torch.no_grad():
        want = conv(F.pixel_shuffle(y, r))
    got = F.pixel_shuffle(F.conv2d(y, w, b, padding=pad), r)
    assert float((got - want).abs().max()) < 1e-12
    keep = w.shape[0]
    wp = torch.cat([w, torch.randn(_padded_out(keep) - keep, *w.shape[1:], dtype=w.dtype)])
    bp = torch.cat([b, torch.zeros(_padded_out(keep) - keep, dtype=b.dtype)])
    z = F.conv2d(y.contiguous(memory_format=torch.channels_last), wp, bp, padding=pad)
    assert torch.equal(shuffle_cl(z, r, keep), F.pixel_shuffle(z[:, :keep], r))
    assert [_padded_out(n) for n in (3, 8, 12, 16, 27)] == [3, 8, 16, 16, 32]


def test_fused_convolution_equals_conv_then_activation() -> None:
    """conv_act: oneDNN's fused float32 convolution + leaky ReLU (where it runs) and the
    in-place fallbacks give the plain convolution followed by the activation."""
    import torch.nn.functional as F

    from sr_cli.infer.fastconv import _fused_ok, conv_act

    if torch.backends.mkldnn.is_available() and platform.machine() in ("x86_64", "AMD64"):
        assert _fused_ok()  # x86 builds have the fused op: the fast path is the one tested
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 9, 11, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(6, 8, 3, 3, generator=g), torch.randn(6, generator=g)
    plain = F.conv2d(x, w, b, padding=1)
    assert torch.allclose(conv_act(x, w, b, 1, 0.2), F.leaky_relu(plain, 0.2), atol=1e-5)
    slopes = torch.rand(6, generator=g)
    assert torch.allclose(conv_act(x, w, b, 1, slopes), F.prelu(plain, slopes), atol=1e-5)
    assert torch.allclose(conv_act(x, w, None, 1, None), F.conv2d(x, w, None, padding=1),
                          atol=1e-5)
    xb, wb = x.bfloat16(), w.bfloat16()  # never the fused op: in place after the convolution
    assert torch.equal(conv_act(xb, wb, None, 1, 0.2),
                       F.leaky_relu(F.conv2d(xb, wb, None, padding=1), 0.2))


def test_inplace_prelu_in_chunks_is_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    """prelu_inplace (SRVGGNetCompact's activations, a few rows at a time) writes exactly
    F.prelu's values back, for chunks that split the rows unevenly and for batches."""
    from sr_cli.infer import fastconv

    monkeypatch.setattr(fastconv, "_CHUNK", 200)  # 1-2 rows per chunk below
    g = torch.Generator().manual_seed(4)
    for shape in ((1, 8, 13, 11), (3, 5, 7, 9)):
        y = torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.rand(shape[1], generator=g)
        want = torch.nn.functional.prelu(y, w)
        got = fastconv.prelu_inplace(y, w)
        assert got is y and torch.equal(got, want)


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
