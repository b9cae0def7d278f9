"""The inference engine: a model on a device at a precision, tiled, for arrays and tensors.

``Upscaler.run`` applies the network at its native scale to a float batch; ``upscale_array``
handles a whole image: gray/RGB/alpha channels, 8/16-bit, and a final high-quality resize
(MATLAB bicubic, antialiased when shrinking) from the network's native scale to the requested
one. Instances are safe to share between threads: the tiler is stateless and per-precision
network copies are created once under a lock.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import ModelError, RuntimeFailure, UsageError
from sr_cli.infer.alpha import bleed_transparent
from sr_cli.infer.device import DTYPES, free_memory_bytes, resolve_device, resolve_precision
from sr_cli.infer.fastconv import prepare_for_cpu
from sr_cli.infer.tiling import plan_tiles, run_tiled
from sr_cli.io.images import from_tensor, to_tensor

if TYPE_CHECKING:
    from sr_cli.zoo import LoadedModel

ALPHA_MODES = ("model", "bicubic")
# BT.601 luma, used to return a gray image from a 3-channel network.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16`` (not on CPU).
        tile: core tile size in input pixels; ``None`` = auto (sized to free memory),
            ``0`` = whole image.
        tile_batch: tiles of equal shape per forward pass.
        channels_last: use the channels-last memory format (faster convolutions).
        alpha: ``model`` (alpha through the network) or ``bicubic``.
        memory_fraction: share of free device memory the auto tile size may use.
        tta: x8 self-ensemble (flips and 90-degree rotations, outputs averaged; 8x the
            compute), see :mod:`sr_cli.infer.tta`.
    """

    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    tile_batch: int = 4
    channels_last: bool = True
    alpha: str = "model"
    memory_fraction: float = 0.5
    tta: bool = False


def check_output_size(height: int, width: int, planes: int, scale: float) -> tuple[int, int]:
    """The output size ``(ceil(H*scale), ceil(W*scale))`` of an upscale (MATLAB's imresize
    rule, so baselines and network + resize agree), checked.

    Raises UsageError when the factor leaves no pixel (e.g. ``--scale 1e-9``), and
    RuntimeFailure when the float32 output of ``planes`` channels (x3 for the working
    copies) would not fit in the free memory, instead of letting the OS kill the process.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise UsageError(f"--scale must be a positive number, got {scale:g}")
    from sr_cli.degrade.resize import output_size

    oh, ow = output_size(height, scale), output_size(width, scale)
    if min(height, width) * scale < 0.5:  # ceil would still give 1 px, from a vast kernel
        raise UsageError(
            f"--scale {scale:g} leaves no pixels of a {width}x{height} image "
            f"({ow}x{oh}); use a larger factor"
        )
    need = 3 * 4 * planes * oh * ow
    free = free_memory_bytes(torch.device("cpu"))
    if need > free:
        raise RuntimeFailure(
            f"a {ow}x{oh} output needs about {need / 2**30:.1f} GiB of memory, "
            f"{free / 2**30:.1f} GiB is free; use a smaller --scale"
        )
    return oh, ow


def _bytes_per_input_pixel(model: LoadedModel, dtype_bytes: int) -> int:
    """A conservative estimate of peak activation memory per input pixel at inference."""
    hp = model.desc.hparams
    s = max(1, model.desc.scale)
    feat = int(hp.get("num_feat", hp.get("n1", hp.get("num_features", 64))))
    arch = model.desc.arch
    hr_ch = 3 * s * s if arch in ("srvgg", "span") else feat  # channels at the output res.
    lr_ch = feat * 6 if arch == "rrdbnet" else feat * 3
    if arch == "span":  # the 4-way concat plus a block's 2x-wide re-parameterised convs
        lr_ch = int(hp["feature_channels"]) * 8
    elif arch == "swinir":  # tokens, qkv, MLP, and per-window attention maps + shift mask
        ws = int(hp["window_size"])
        lr_ch = int(hp["embed_dim"]) * 8 + (2 * max(hp["num_heads"]) + 1) * ws * ws
    return dtype_bytes * (lr_ch + 3 * hr_ch * s * s) + 64


class Upscaler:
    """Run a loaded model on images.

    Args:
        model: from :func:`sr_cli.zoo.load_model`.
        options: see :class:`InferenceOptions`.
        on_warning: called with one-line warnings (e.g. half-precision fallback).
    """

    def __init__(
        self,
        model: LoadedModel,
        options: InferenceOptions | None = None,
        *,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.options = options or InferenceOptions()
        if self.options.alpha not in ALPHA_MODES:
            raise UsageError(f"unknown --alpha {self.options.alpha!r} (model, bicubic)")
        if self.options.tile is not None and self.options.tile < 0:
            raise UsageError("--tile must be >= 0")
        self.device = resolve_device(self.options.device)
        self.precision = resolve_precision(
            self.options.precision, self.device, model.desc.supports_half
        )
        self.on_warning = on_warning
        self._nets: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()
        self._warned_fallback = False

    # -- network ---------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        """Native integer scale of the network (0 for the any-scale baselines)."""
        return int(self.model.desc.scale)

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.options.channels_last else torch.contiguous_format

    def _net(self, precision: str) -> torch.nn.Module:
        with self._lock:
            net = self._nets.get(precision)
            if net is None:
                net = copy.deepcopy(self.model.net).eval()
                net = net.to(device=self.device, dtype=DTYPES[precision])
                net = net.to(memory_format=self._memory_format())  # type: ignore[call-overload]
                if self.device.type == "cpu":  # $SR_CPU_CONV: alternative 3x3 convolutions
                    net = prepare_for_cpu(net, DTYPES[precision])
                for p in net.parameters():
                    p.requires_grad_(False)
                if self.options.tta:
                    from sr_cli.infer.tta import SelfEnsemble

                    net = SelfEnsemble(net)
                self._nets[precision] = net
            return net

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network forward of a float32 batch; half-precision non-finite output -> fp32 redo."""
        prec = self.precision
        with torch.no_grad():
            xd = x.to(self.device, DTYPES[prec]).contiguous(memory_format=self._memory_format())
            y = self._net(prec)(xd)
            if prec != "fp32" and not bool(torch.isfinite(y).all()):
                if self.on_warning and not self._warned_fallback:
                    self.on_warning(
                        f"{prec} produced NaN/Inf on a tile; recomputed it in fp32"
                    )
                    self._warned_fallback = True
                xd = x.to(self.device, torch.float32).contiguous(
                    memory_format=self._memory_format()
                )
                y = self._net("fp32")(xd)
            return y.float().contiguous()

    def auto_tile(self, height: int, width: int) -> int:
        """Largest tile (0 = whole image) whose activations fit the memory budget."""
        dtype_bytes = torch.finfo(DTYPES[self.precision]).bits // 8
        per_px = _bytes_per_input_pixel(self.model, dtype_bytes)
        budget = free_memory_bytes(self.device) * self.options.memory_fraction
        if self.device.type == "cpu":
            budget = min(budget, 8 * 1024**3)
        max_px = max(1, int(budget // per_px))
        if height * width <= max_px:
            return 0
        side = int(math.sqrt(max_px))
        return max(32, side)

    def run(
        self,
        x: torch.Tensor,
        *,
        tile: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Network at native scale.

        Args:
            x: ``(B, C, H, W)`` float in [0, 1] (any device), C matching the network.
            tile: overrides ``options.tile`` (None = options / auto).
            progress: ``progress(done_tiles, total_tiles)``.

        Returns:
            ``(B, C_out, H*s, W*s)`` float32 on the CPU, clamped to [0, 1].
        """
        if x.ndim != 4:
            raise UsageError("expected a (B, C, H, W) tensor")
        desc = self.model.desc
        s = self.scale
        if s == 0:
            raise UsageError("any-scale baseline models are run through upscale_array")
        h, w = x.shape[-2:]
        m = max(1, desc.size_multiple)
        ph, pw = (-h) % m, (-w) % m
        x = x.float().cpu()
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        t = self.options.tile if tile is None else tile
        if t is None:
            t = self.auto_tile(*x.shape[-2:])
        tiles = plan_tiles(x.shape[-2], x.shape[-1], t, desc.context, m)
        out = run_tiled(
            self._forward, x, s, tiles, batch=self.options.tile_batch, progress=progress
        )
        if ph or pw:
            out = out[:, :, : h * s, : w * s]
        return out.clamp_(0, 1)

    @property
    def default_scale(self) -> float:
        """The factor used when none is asked: the native one, or the baseline's own."""
        return float(self.scale or self.model.desc.hparams.get("scale") or 4.0)

    def output_size(
        self, height: int, width: int, out_scale: float | None = None, planes: int = 3
    ) -> tuple[int, int]:
        """``(H', W')`` that :meth:`upscale_tensor` returns for an ``H x W`` input (checked)."""
        target = float(out_scale) if out_scale else self.default_scale
        return check_output_size(height, width, planes, target)

    # -- whole images ----------------------------------------------------------------------
    def _network_rgb_or_gray(
        self, x: torch.Tensor, progress: Callable[[int, int], None] | None
    ) -> torch.Tensor:
        """Run colour channels (1 or 3) through the network, adapting gray <-> RGB."""
        desc = self.model.desc
        c = x.shape[1]
        if c == desc.in_channels or (c == 3 and desc.in_channels == 1 and desc.accepts_rgb):
            return self.run(x, progress=progress)
        if c == 1 and desc.in_channels == 3:
            y = self.run(x.expand(-1, 3, -1, -1), progress=progress)
            luma = torch.tensor(_LUMA, dtype=y.dtype).view(1, 3, 1, 1)
            return (y * luma).sum(dim=1, keepdim=True)
        raise ModelError(
            f"model {self.model.name!r} takes {desc.in_channels}-channel images, "
            f"the image has {c} colour channel(s)"
        )

    def upscale_tensor(
        self,
        x: torch.Tensor,
        out_scale: float | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Upscale a float ``(B, C, H, W)`` batch in [0, 1], C in 1..4 (alpha last).

        The network runs at its native scale; when ``out_scale`` differs, a MATLAB-bicubic
        resize (antialiased when shrinking) brings the result to ``ceil(H*out_scale)``.
        """
        from sr_cli.degrade.resize import imresize

        b, c, h, w = x.shape
        native = self.scale
        # no factor asked: the native one, or an any-scale baseline's own (x4 by default)
        target = float(out_scale) if out_scale else self.default_scale
        oh, ow = self.output_size(h, w, target, planes=c * b)
        has_alpha = c in (2, 4)
        color = x[:, : c - 1] if has_alpha else x
        if has_alpha:
            color = bleed_transparent(color, x[:, c - 1 :])
        if native == 0:
            up = self._baseline(color, target)
        else:
            up = self._network_rgb_or_gray(color, progress)
            if up.shape[-2:] != (oh, ow):
                up = imresize(up, size=(oh, ow), kernel="cubic", antialias=True)
        if has_alpha:
            a = x[:, c - 1 :]
            if self.options.alpha == "model" and native != 0:
                na = self._network_rgb_or_gray(
                    a.expand(-1, self.model.desc.in_channels, -1, -1), None
                ).mean(dim=1, keepdim=True)
                if na.shape[-2:] != (oh, ow):
                    na = imresize(na, size=(oh, ow), kernel="cubic", antialias=True)
            else:
                na = imresize(a.float(), size=(oh, ow), kernel="cubic", antialias=True)
            up = torch.cat([up, na], dim=1)
        if not bool(torch.isfinite(up).all()):
            hint = "" if self.precision == "fp32" else "; try --precision fp32"
            raise ModelError(
                f"model {self.model.name!r} produced NaN or infinite values{hint}"
            )
        return up.clamp_(0, 1)

    def _baseline(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """An any-scale baseline (MATLAB imresize with the network's kernel) at ``scale``."""
        from sr_cli.degrade.resize import imresize

        kernel = getattr(self.model.net, "kernel", "cubic")
        with torch.no_grad():
            return imresize(x.double(), scale=scale, kernel=kernel, antialias=True).float()

    def upscale_array(
        self,
        pixels: np.ndarray,
        out_scale: float | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Upscale an ``(H, W)`` or ``(H, W, C)`` uint8/uint16 (or float in [0, 1]) array.

        Returns an array of the same dtype and channel count.
        """
        arr = np.asarray(pixels)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
            raise UsageError(f"expected an HxW or HxWxC image array (C 1..4), got {arr.shape}")
        if arr.dtype in (np.uint8, np.uint16):
            y = self.upscale_tensor(to_tensor(arr), out_scale, progress=progress)
            out = from_tensor(y, arr.dtype)
        elif np.issubdtype(arr.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            y = self.upscale_tensor(x.permute(2, 0, 1).unsqueeze(0), out_scale, progress=progress)
            out = y[0].permute(1, 2, 0).numpy().astype(arr.dtype)
        else:
            raise UsageError(f"unsupported array dtype {arr.dtype}")
        return out[:, :, 0] if squeeze else out
