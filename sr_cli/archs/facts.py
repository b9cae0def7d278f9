"""Facts about the architectures that need no torch: one-line descriptions, default
hyperparameters and the :class:`~sr_cli.archs.base.Descriptor` of given hyperparameters.

``sr models list``, ``sr models info`` of a .safetensors file and ``--help`` read these without
importing the networks. Each architecture module (``srcnn``, ``srresnet``, ``rrdbnet``,
``srvgg``, ``omnisr``, ``baseline``) builds its :class:`~sr_cli.archs.base.ArchSpec` from them and
re-exports them under its own names (``DEFAULTS``, ``describe``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from sr_cli.archs.base import Descriptor

DESCRIPTIONS: dict[str, str] = {
    "srcnn": "SRCNN 9-5-5 (Dong et al. 2014), bicubic pre-upsampling, Y or RGB",
    "srresnet": "SRResNet / SRGAN generator (Ledig et al. 2017), BN + PReLU, sub-pixel x2/x3",
    "rrdbnet": "RRDBNet (ESRGAN / Real-ESRGAN generator): x1/x2/x4 (Real-ESRGAN), "
               "x1/x2/x8 (ESRGAN)",
    "srvgg": "SRVGGNetCompact (Real-ESRGAN compact, e.g. realesr-animevideov3)",
    "span": "SPAN (Swift Parameter-free Attention Network, NTIRE 2024 efficient SR)",
    "swinir": "SwinIR (Swin Transformer image restoration: classical, lightweight, real-world)",
    "realcugan": "Real-CUGAN (bilibili UpCunet x2/x3/x4: conservative, denoise, no-denoise, pro)",
    "omnisr": "OmniSR (Omni Aggregation Networks, lightweight SR, CVPR 2023)",
    "hat": "HAT (Hybrid Attention Transformer: HAT-S, HAT, HAT-L, Real-HAT-GAN), x1/x2/x3/x4/x8",
    "dat": "DAT (Dual Aggregation Transformer: DAT, DAT-S, DAT-2, DAT-light)",
    "bicubic": "MATLAB imresize bicubic (antialiased when shrinking), any scale",
    "lanczos": "MATLAB imresize Lanczos-3, any scale",
    "nearest": "nearest-neighbour interpolation, any scale",
}
"""Architecture id -> one line for ``sr models list`` / ``sr models info`` / docs."""


# --------------------------------------------------------------------------- srcnn

SRCNN_DEFAULTS: dict[str, Any] = {"in_channels": 1, "scale": 3, "n1": 64, "n2": 32, "f1": 9,
                                  "f2": 5, "f3": 5}


def describe_srcnn(hp: Mapping[str, Any]) -> Descriptor:
    """Context: the conv radius ``(f1+f2+f3-3)/2`` in HR pixels, in LR pixels, plus the 2-pixel
    support of the bicubic kernel (exact)."""
    radius_hr = (hp["f1"] + hp["f2"] + hp["f3"] - 3) // 2
    context = math.ceil(radius_hr / hp["scale"]) + 2
    return Descriptor(
        arch="srcnn",
        scale=int(hp["scale"]),
        in_channels=int(hp["in_channels"]),
        hparams=dict(hp),
        accepts_rgb=True,  # 3-channel: RGB as is; 1-channel: converts RGB to Y itself
        size_multiple=1,
        context=context,
        supports_half=True,
    )


# --------------------------------------------------------------------------- srresnet

def upsample_factors_srresnet(scale: int) -> list[int]:
    """The pixel-shuffle stages for a scale: 2 -> [2], 3 -> [3], 4 -> [2, 2], 8 -> [2, 2, 2]."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"SRResNet supports scale 2, 3, 4 or 8, got {scale}")


SRRESNET_DEFAULTS: dict[str, Any] = {"in_channels": 3, "out_channels": 3, "num_feat": 64,
                                     "num_block": 16, "scale": 4, "norm": True}


def receptive_radius_srresnet(hp: Mapping[str, Any]) -> int:
    """Exact receptive radius in input pixels (every conv is zero-padded, BN is pointwise).

    Worked backwards from an output pixel: ``conv_last`` reaches 4 output pixels; a pixel
    shuffle by ``f`` turns a radius ``R`` into ``ceil(R / f)`` pixels before it (worst sub-pixel
    phase); then each conv adds its half-width.
    """
    r = 4  # conv_last 9x9
    for f in reversed(upsample_factors_srresnet(int(hp["scale"]))):
        r = -(-r // f) + 1  # through the shuffle, then the stage's 3x3 conv
    return r + 1 + 2 * int(hp["num_block"]) + 4  # conv_body, blocks, conv_first 9x9


def describe_srresnet(hp: Mapping[str, Any]) -> Descriptor:
    return Descriptor(
        arch="srresnet",
        scale=int(hp["scale"]),
        in_channels=int(hp["in_channels"]),
        hparams=dict(hp),
        context=receptive_radius_srresnet(hp),
        supports_half=True,
    )


# --------------------------------------------------------------------------- rrdbnet

RRDBNET_UNSHUFFLE = {4: 1, 2: 2, 1: 4}
"""Pixel-unshuffle factor applied to the input, per network scale."""

RRDBNET_PRACTICAL_CONTEXT = 32
"""Placeholder tiling overlap for RRDBNet (input pixels). The theoretical receptive radius is
hundreds of pixels, but the influence of far pixels decays at a rate set by the trained weights, so
the engine measures the real one (:func:`sr_cli.infer.context.measure_context`, stored in the
file's ``context`` metadata) and uses this only as a description before a measurement."""


RRDBNET_DEFAULTS: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64,
                                    "num_block": 23, "num_grow_ch": 32, "upsample_stages": None}


def rrdbnet_layout(hp: Mapping[str, Any]) -> tuple[int, int]:
    """``(unshuffle factor, upsampling stages)`` of hyperparameters: Real-ESRGAN's layout
    (pixel-unshuffle for x1/x2, two x2 stages) unless ``upsample_stages`` is given (the
    original ESRGAN's x1/x2/x8 files: no unshuffle, 0-3 stages)."""
    if hp.get("upsample_stages") is None:
        return RRDBNET_UNSHUFFLE[int(hp["scale"])], 2
    return 1, int(hp["upsample_stages"])


def receptive_radius_rrdbnet(hp: Mapping[str, Any]) -> int:
    """Theoretical receptive radius in input pixels (zero-padded 3x3 convs everywhere).

    Backwards from an output pixel: conv_last, conv_hr (radius 2), then per upsampling stage
    its conv (+1) and the nearest x2 (``ceil(R/2)``), then conv_body + 15 convs per RRDB +
    conv_first, then the pixel unshuffle by ``u`` (``u*R + u - 1`` input pixels).
    """
    u, stages = rrdbnet_layout(hp)
    r = 2
    for _ in range(stages):
        r = -(-(r + 1) // 2)
    r += 15 * int(hp["num_block"]) + 2
    return u * r + u - 1


def describe_rrdbnet(hp: Mapping[str, Any]) -> Descriptor:
    """Context: the theoretical radius when small, else :data:`RRDBNET_PRACTICAL_CONTEXT` (a
    placeholder: ``exact_context`` is False, the engine measures the weights' own radius)."""
    u, _ = rrdbnet_layout(hp)
    radius = receptive_radius_rrdbnet(hp)
    ctx = min(radius, RRDBNET_PRACTICAL_CONTEXT)
    ctx = -(-ctx // u) * u  # a multiple of the unshuffle factor
    return Descriptor(
        arch="rrdbnet",
        scale=int(hp["scale"]),
        in_channels=int(hp["num_in_ch"]),
        hparams=dict(hp),
        size_multiple=u,
        context=ctx,
        exact_context=ctx >= radius,
        supports_half=True,
    )


# --------------------------------------------------------------------------- srvgg

SRVGG_DEFAULTS: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 16,
                                  "upscale": 4, "act_type": "prelu", "out_scale": None}


def describe_srvgg(hp: Mapping[str, Any]) -> Descriptor:
    """Context: ``num_conv + 2`` 3x3 convolutions at input resolution -> exact radius (one more
    input pixel for the bicubic output resize of ``out_scale``)."""
    up = int(hp["upscale"])
    out_scale = up if hp.get("out_scale") is None else int(hp["out_scale"])
    resized = out_scale != up
    return Descriptor(
        arch="srvgg",
        scale=out_scale,
        in_channels=int(hp["num_in_ch"]),
        hparams=dict(hp),
        context=int(hp["num_conv"]) + 2 + (1 if resized else 0),
        supports_half=True,
    )


# --------------------------------------------------------------------------- realcugan

REALCUGAN_DEFAULTS: dict[str, Any] = {"in_channels": 3, "scale": 2, "pro": False}

REALCUGAN_GEOMETRY: dict[int, tuple[int, int]] = {2: (18, 2), 3: (14, 4), 4: (19, 2)}
"""Scale -> (reflection padding the network adds on each side, size multiple), as upstream's
untiled mode. The multiple is the stride of the downsampling convolutions in input pixels
(unet1 halves the input; unet2 quarters the x2 / x3 / x2-feature image), so tiles cut on it see
the same phase as the whole image."""

REALCUGAN_RADIUS: dict[int, int] = {2: 19, 3: 16, 4: 20}
"""Scale -> reach of the convolutions in input pixels (SE gates aside): measured from the
gradient support of output pixels of every sub-pixel phase (benchmarks/realcugan_radius.py)."""


def receptive_radius_realcugan(hp: Mapping[str, Any]) -> int:
    return REALCUGAN_RADIUS[int(hp["scale"])]


def describe_realcugan(hp: Mapping[str, Any]) -> Descriptor:
    """Context: the convolutions' reach, not exact (the SE gates average the whole image), so
    the engine measures the practical context from the weights, as for RRDBNet."""
    s = int(hp["scale"])
    pad, multiple = REALCUGAN_GEOMETRY.get(s, (0, 1))
    radius = REALCUGAN_RADIUS.get(s, 32)
    return Descriptor(
        arch="realcugan",
        scale=s,
        in_channels=int(hp["in_channels"]),
        hparams=dict(hp),
        size_multiple=multiple,
        context=-(-radius // multiple) * multiple,
        exact_context=False,
        supports_half=True,
    )


# --------------------------------------------------------------------------- omnisr

OMNISR_DEFAULTS: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64,
                                   "block_num": 1, "pe": True, "window_size": 8, "res_num": 5,
                                   "up_scale": 4, "bias": True}
"""The published OmniSR (DIV2K/DF2K x2/x3/x4 models): 64 features, 5 OSAGs of 1 block."""

OMNISR_PRACTICAL_CONTEXT = 256
"""OmniSR tiling overlap before a measurement from the weights exists (input pixels): the
measurement's cap (:data:`sr_cli.infer.context.MAX_CONTEXT`), since OmniSR's global paths
usually reach it (benchmarks/omnisr_tiling.py: a 32-pixel overlap left 5-level seams)."""


def describe_omnisr(hp: Mapping[str, Any]) -> Descriptor:
    """Context: not exact (the squeeze-excite mean and grid attention reach the whole image):
    :data:`OMNISR_PRACTICAL_CONTEXT` rounded to the window until the engine has measured these
    weights' own (``exact_context`` False). Inputs are padded to multiples
    of the window. Half precision: marked supported (as spandrel does; bf16 checked against
    fp32 in tests/test_archs_community.py)."""
    ws = int(hp["window_size"])
    return Descriptor(
        arch="omnisr",
        scale=int(hp["up_scale"]),
        in_channels=int(hp["num_in_ch"]),
        hparams=dict(hp),
        size_multiple=ws,
        context=-(-OMNISR_PRACTICAL_CONTEXT // ws) * ws,
        exact_context=False,
        supports_half=True,
    )


# --------------------------------------------------------------------------- hat / dat

HAT_DEFAULTS: dict[str, Any] = {
    "in_chans": 3, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
    "window_size": 16, "compress_ratio": 3, "squeeze_factor": 30, "conv_scale": 0.01,
    "overlap_ratio": 0.5, "mlp_ratio": 2.0, "upscale": 4, "img_range": 1.0,
    "resi_connection": "1conv", "num_feat": 64, "patch_norm": True,
}
"""HAT x4 (``HAT_SRx4``; Real-HAT-GAN has the same layout). HAT-S: embed_dim 144,
compress_ratio 24, squeeze_factor 24; HAT-L: 12 groups."""

DAT_DEFAULTS: dict[str, Any] = {
    "in_chans": 3, "embed_dim": 180, "split_size": [8, 32], "depth": [6] * 6,
    "num_heads": [6] * 6, "expansion_factor": 4.0, "qkv_bias": True, "upscale": 4,
    "img_range": 1.0, "resi_connection": "1conv", "upsampler": "pixelshuffle", "num_feat": 64,
}
"""DAT x4 (``DAT_x4``). DAT-2: expansion_factor 2; DAT-S: split_size [8, 16], expansion 2;
DAT-light: embed_dim 60, depth [18], resi_connection 3conv, pixelshuffledirect."""


def window_transformer_context(window: int) -> int:
    """Tiling overlap (input pixels per side) for HAT's square windows of side ``window``:
    ``max(32, 4 * window)``, the rule of SwinIR's ``practical_context``. A practical bound,
    not a receptive radius: shifted and overlapping windows chain across the whole image and
    the channel attention pools over all of it, so tiles never equal the whole image bit for
    bit (upstream's own tiled test overlaps HAT tiles by 32)."""
    return max(32, 4 * int(window))


def describe_hat(hp: Mapping[str, Any]) -> Descriptor:
    """Inputs padded to multiples of the window (as upstream); fp16 off, as spandrel marks
    HAT (bf16 only on request); context :func:`window_transformer_context`."""
    ws = int(hp["window_size"])
    return Descriptor(
        arch="hat",
        scale=int(hp["upscale"]),
        in_channels=int(hp["in_chans"]),
        hparams=dict(hp),
        size_multiple=ws,
        context=window_transformer_context(ws),
        supports_half=False,
    )


def describe_dat(hp: Mapping[str, Any]) -> Descriptor:
    """Size multiple: the longer window side, so that tiles start on the window grid (tiles cut
    across windows differ by about 1% on small random networks; aligned, by 1e-5). The engine
    reflect-pads to it; upstream instead zero-pads q/k/v inside each attention (what
    ``forward`` does for direct calls of other sizes), so engine outputs differ from
    upstream's only near the right/bottom border of images whose sides are not multiples of
    it. Context: ``max(32, 2 * longer side)`` (64 for the released 8x32 windows), a practical
    bound as for HAT; fp16 off as for HAT."""
    long_side = max(int(v) for v in hp["split_size"])
    return Descriptor(
        arch="dat",
        scale=int(hp["upscale"]),
        in_channels=int(hp["in_chans"]),
        hparams=dict(hp),
        size_multiple=long_side,
        context=max(32, 2 * long_side),
        supports_half=False,
    )


# --------------------------------------------------------------------------- baselines

BASELINE_DEFAULT_SCALE = 4.0

BASELINE_KERNEL_OF = {"bicubic": "cubic", "lanczos": "lanczos3", "nearest": "nearest"}
"""Baseline id -> :func:`sr_cli.degrade.resize.imresize` kernel name."""

BASELINE_KERNEL_WIDTH = {"cubic": 4.0, "lanczos3": 6.0, "nearest": 1.0}
"""Support width of those kernels (as ``sr_cli.degrade.resize.KERNELS``; a test checks it)."""


def describe_baseline(name: str, hp: Mapping[str, Any]) -> Descriptor:
    kernel = BASELINE_KERNEL_OF[name]
    scale = float(hp["scale"])
    half_width = BASELINE_KERNEL_WIDTH[kernel] / 2
    if kernel != "nearest" and scale < 1:
        half_width /= scale  # antialiasing widens the kernel when shrinking
    return Descriptor(
        arch=name,
        scale=0,
        in_channels=3,
        hparams={"scale": scale},
        accepts_rgb=True,
        size_multiple=1,
        context=math.ceil(half_width) + 1,
        supports_half=True,
        learned=False,
    )


# --------------------------------------------------------------------------- by id

DEFAULTS: dict[str, Mapping[str, Any]] = {
    "srcnn": SRCNN_DEFAULTS,
    "srresnet": SRRESNET_DEFAULTS,
    "rrdbnet": RRDBNET_DEFAULTS,
    "srvgg": SRVGG_DEFAULTS,
    "realcugan": REALCUGAN_DEFAULTS,
    "omnisr": OMNISR_DEFAULTS,
    "hat": HAT_DEFAULTS,
    "dat": DAT_DEFAULTS,
    **{name: {"scale": BASELINE_DEFAULT_SCALE} for name in BASELINE_KERNEL_OF},
}
"""Architecture id -> default hyperparameters (the ``ArchSpec.defaults``)."""

DESCRIBE: dict[str, Callable[[Mapping[str, Any]], Descriptor]] = {
    "srcnn": describe_srcnn,
    "srresnet": describe_srresnet,
    "rrdbnet": describe_rrdbnet,
    "srvgg": describe_srvgg,
    "realcugan": describe_realcugan,
    "omnisr": describe_omnisr,
    "hat": describe_hat,
    "dat": describe_dat,
    **{name: functools.partial(describe_baseline, name) for name in BASELINE_KERNEL_OF},
}
"""Architecture id -> ``describe(hparams) -> Descriptor`` (the ``ArchSpec.describe``)."""


def context_from_metadata(desc: Descriptor, metadata: Mapping[str, str]) -> Descriptor:
    """``desc`` with the measured ``context`` of a file's metadata (non-exact archs only)."""
    if desc.exact_context or "context" not in metadata:
        return desc
    try:
        ctx = int(metadata["context"])
    except ValueError:
        return desc
    if ctx < 1:
        return desc
    m = max(1, desc.size_multiple)
    return dataclasses.replace(desc, context=-(-ctx // m) * m)
