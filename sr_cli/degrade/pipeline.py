"""Degradation pipelines: MATLAB bicubic, classical first order, Real-ESRGAN high order.

Sampling and applying are separate, so every random choice can be recorded and replayed:

- ``sample_*(cfg, gen) -> dict``: draws all parameters of one image's degradation from a
  ``torch.Generator`` (CPU). The dict is JSON-serializable and holds kernel types, sizes, sigmas,
  angles, betas, cutoffs, resize modes and factors, noise types, sigma/scale, gray flags, JPEG
  qualities, the final order, and integer seeds for the noise fields.
- ``apply_*(x, params, scale, cfg)``: deterministic given the params (noise fields are drawn
  from per-image generators seeded by the recorded seeds), batched over ``(B, 3, H, W)``.

Training API (Real-ESRNet / Real-ESRGAN on-the-fly degradation)::

    from sr_cli.degrade.config import RealESRGANConfig
    from sr_cli.degrade.pipeline import realesrgan_batch

    gen = torch.Generator().manual_seed(0)           # CPU generator, even for GPU tensors
    lr, hr_usm, records = realesrgan_batch(hr, 4, RealESRGANConfig(), gen)

``hr``: ``(B, 3, H, W)`` float in [0, 1] on any device with ``H, W`` multiples of ``scale``
(Real-ESRGAN uses 400x400 crops, then random-crops the pairs). Returns ``lr``
``(B, 3, H/scale, W/scale)`` in [0, 1] rounded to 8-bit levels, ``hr_usm`` (the
USM-sharpened GT Real-ESRGAN trains its L1/perceptual losses on; ``hr`` itself when
``cfg.usm.apply`` is false) and one parameter dict per image. With ``shared_resize=True``
(default, as Real-ESRGAN's training code) the resize decisions and the final order are drawn
once per batch; kernels, noise and JPEG qualities are drawn per image. Replaying
``apply_realesrgan(hr, records, scale, cfg)`` gives the same ``lr``.

Per-image reproducibility in the CLI: :func:`derive_seed` hashes (seed, file name, variant),
so the result never depends on the processing order.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch
import torch.nn.functional as F

from sr_cli.degrade.config import (
    ClassicalConfig,
    DegradeConfig,
    FinalConfig,
    JpegConfig,
    NoiseConfig,
    RealESRGANConfig,
    ResizeConfig,
    StageConfig,
)
from sr_cli.degrade.jpeg import jpeg_real, jpeg_torch
from sr_cli.degrade.kernels import (
    choice,
    filter2d,
    kernel_from_params,
    sample_blur,
    uniform,
)
from sr_cli.degrade.noise import noise_batch
from sr_cli.degrade.resize import imresize
from sr_cli.degrade.sharpen import usm_sharp
from sr_cli.errors import InputError, UsageError

__all__ = [
    "apply_classical",
    "apply_realesrgan",
    "bicubic_downscale",
    "derive_seed",
    "min_input_size",
    "realesrgan_batch",
    "sample_classical",
    "sample_realesrgan",
    "sample_realesrgan_batch",
]

_SEED_MAX = 2**62


def derive_seed(seed: int, name: str, variant: int = 0) -> int:
    """A 62-bit seed from the user seed, the image's file name and the variant index (hash)."""
    h = hashlib.sha256(f"{int(seed)}\x00{name}\x00{int(variant)}".encode()).digest()
    return int.from_bytes(h[:8], "little") % _SEED_MAX


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, _SEED_MAX, (), generator=gen, dtype=torch.int64))


# ----------------------------------------------------------------------------- sampling


def sample_resize(cfg: ResizeConfig, gen: torch.Generator) -> dict[str, Any]:
    updown = str(choice(gen, ["up", "down", "keep"], list(cfg.probs)))
    if updown == "up":
        factor = uniform(gen, 1.0, cfg.up[1])
    elif updown == "down":
        factor = uniform(gen, cfg.down[0], 1.0)
    else:
        factor = 1.0
    mode = str(choice(gen, list(cfg.modes)))
    return {"updown": updown, "factor": factor, "mode": mode}


def sample_noise(cfg: NoiseConfig, gen: torch.Generator) -> dict[str, Any]:
    if cfg.prob < 1.0 and uniform(gen, 0.0, 1.0) >= cfg.prob:
        return {"apply": False}
    if uniform(gen, 0.0, 1.0) < cfg.gaussian_prob:
        out: dict[str, Any] = {"apply": True, "type": "gaussian", "sigma": uniform(gen, *cfg.sigma)}
    else:
        out = {"apply": True, "type": "poisson", "scale": uniform(gen, *cfg.poisson_scale)}
    out["gray"] = bool(uniform(gen, 0.0, 1.0) < cfg.gray_prob)
    out["seed"] = _seed(gen)
    return out


def sample_jpeg(cfg: JpegConfig, gen: torch.Generator) -> dict[str, Any]:
    if cfg.prob < 1.0 and uniform(gen, 0.0, 1.0) >= cfg.prob:
        return {"apply": False}
    return {"apply": True, "quality": uniform(gen, *cfg.quality)}


def sample_stage(cfg: StageConfig, gen: torch.Generator, *, jpeg: bool,
                 resize: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"blur": sample_blur(cfg.blur, gen)}
    out["resize"] = resize if resize is not None else sample_resize(cfg.resize, gen)
    out["noise"] = sample_noise(cfg.noise, gen)
    out["jpeg"] = sample_jpeg(cfg.jpeg, gen) if jpeg else {"apply": False}
    return out


def sample_final_shape(cfg: FinalConfig, gen: torch.Generator) -> dict[str, Any]:
    order = str(choice(gen, ["resize_sinc_jpeg", "jpeg_resize_sinc"], list(cfg.order_probs)))
    return {"order": order, "mode": str(choice(gen, list(cfg.modes)))}


def sample_final(cfg: FinalConfig, gen: torch.Generator,
                 shape: dict[str, Any] | None = None) -> dict[str, Any]:
    out = dict(shape) if shape is not None else sample_final_shape(cfg, gen)
    if uniform(gen, 0.0, 1.0) < cfg.sinc_prob:
        size = int(choice(gen, list(cfg.sinc_sizes)))
        out["sinc"] = {"apply": True, "type": "sinc", "size": size,
                       "cutoff": uniform(gen, *cfg.sinc_cutoff)}
    else:
        out["sinc"] = {"apply": False}
    out["jpeg"] = sample_jpeg(cfg.jpeg, gen)
    return out


def _shape_params(cfg: RealESRGANConfig, gen: torch.Generator) -> dict[str, Any]:
    resizes = [
        sample_resize((cfg.stage1 if i == 0 else cfg.stage2).resize, gen) for i in range(cfg.order)
    ]
    return {"resizes": resizes, "final": sample_final_shape(cfg.final, gen)}


def sample_realesrgan(cfg: RealESRGANConfig, gen: torch.Generator,
                      shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """All random parameters of one Real-ESRGAN degradation (``cfg.order`` stages + final)."""
    sh = shape if shape is not None else _shape_params(cfg, gen)
    stages = []
    for i in range(cfg.order):
        scfg = cfg.stage1 if i == 0 else cfg.stage2
        stages.append(sample_stage(scfg, gen, jpeg=i < cfg.order - 1, resize=sh["resizes"][i]))
    return {"preset": "realesrgan", "stages": stages,
            "final": sample_final(cfg.final, gen, sh["final"])}


def sample_realesrgan_batch(cfg: RealESRGANConfig, batch: int, gen: torch.Generator, *,
                            shared_resize: bool = True) -> list[dict[str, Any]]:
    """Parameters for a batch; with ``shared_resize`` the resizes and final order are common."""
    shape = _shape_params(cfg, gen) if shared_resize else None
    return [sample_realesrgan(cfg, gen, shape) for _ in range(batch)]


def sample_classical(cfg: ClassicalConfig, gen: torch.Generator) -> dict[str, Any]:
    """Parameters of the first-order model: kernel, resize mode, noise, JPEG."""
    return {
        "preset": "classical",
        "blur": sample_blur(cfg.blur, gen),
        "mode": str(choice(gen, list(cfg.modes))),
        "noise": sample_noise(cfg.noise, gen),
        "jpeg": sample_jpeg(cfg.jpeg, gen),
    }


# ----------------------------------------------------------------------------- applying


def _resize_to(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if size[0] < 1 or size[1] < 1:
        raise InputError(
            f"image too small: a resize step would produce {size[1]}x{size[0]} pixels"
        )
    if mode == "matlab":
        return imresize(x, size=size)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    return F.interpolate(x, size=size, mode=mode)


def _resize_factor(x: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    if factor == 1.0:
        return x
    h, w = x.shape[-2:]
    size = (int(math.floor(h * factor)), int(math.floor(w * factor)))
    if size[0] < 1 or size[1] < 1:
        raise InputError(f"image too small: resizing {w}x{h} by {factor:.3f} leaves no pixels")
    if mode == "matlab":
        return imresize(x, size=size)
    # same call as Real-ESRGAN's stage-1 resize (scale_factor semantics)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)
    return F.interpolate(x, scale_factor=factor, mode=mode)


_CONV_LANES = 16  # planes per vector of the CPU depthwise conv (AVX-512 float32)



def _blur_groups(sizes: list[int], planes: int, pixels: int) -> list[list[int]]:
    """Partition images (kernel sizes ``sizes``) into filter2d calls of least modelled cost.

    Each call zero-pads its kernels to its largest size (padding adds exact zero taps, as
    Real-ESRGAN pads every kernel to 21). The CPU depthwise conv vectorizes across planes, so a
    call costs about ``kmax^2 * ceil(planes_in_call / _CONV_LANES)``: a few large calls beat
    one call per kernel size. A further call costs a fixed overhead (gather, scatter, padding;
    relatively larger on small images). Exact dynamic programme over images sorted by size.
    """
    overhead = 40.0 + 2e6 / max(1, pixels)  # in units of one tap over one vector of planes
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            kmax = sizes[order[i]]
            c = best[i] + kmax * kmax * math.ceil((j - i) * planes / _CONV_LANES) + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    groups = []
    j = n
    while j > 0:
        groups.append(sorted(order[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def _blur_each(x: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
    """One kernel per image (``None`` = identity), in as few batched filter2d calls as pays."""
    kernels = [kernel_from_params(p) for p in params]
    idx = [i for i, k in enumerate(kernels) if k is not None]
    if not idx:
        return x
    sizes = [int(kernels[i].shape[-1]) for i in idx]  # type: ignore[union-attr]
    plan = _blur_groups(sizes, x.shape[1], x.shape[-2] * x.shape[-1])
    groups = [[idx[j] for j in g] for g in plan]

    def stack(ii: list[int]) -> torch.Tensor:
        ks = [kernels[i] for i in ii]
        kmax = max(int(k.shape[-1]) for k in ks)  # type: ignore[union-attr]
        out = torch.zeros(len(ks), kmax, kmax, dtype=torch.float64)
        for j, k in enumerate(ks):
            assert k is not None
            o = (kmax - k.shape[-1]) // 2  # zero-padding a kernel does not change the result
            out[j, o : o + k.shape[-1], o : o + k.shape[-1]] = k
        return out

    if len(groups) == 1 and len(idx) == x.shape[0]:
        return filter2d(x, stack(idx))
    out = torch.empty_like(x)
    keep = [i for i, k in enumerate(kernels) if k is None]
    if keep:
        out[keep] = x[keep]
    for g in groups:
        out[g] = filter2d(x[g], stack(g))
    return out


def _noise_each(x: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
    """Per-image noise (one generator per image, from its recorded seed), batched."""
    idx = [i for i, p in enumerate(params) if p.get("apply", True)]
    if not idx:
        return x
    for i in idx:
        if params[i]["type"] not in ("gaussian", "poisson"):
            raise UsageError(f"unknown noise type {params[i]['type']!r} in parameters")
    ps = [params[i] for i in idx]
    noisy = noise_batch(
        x if len(idx) == x.shape[0] else x[idx],
        [str(p["type"]) for p in ps],
        [float(p["sigma"] if p["type"] == "gaussian" else p["scale"]) for p in ps],
        [bool(p["gray"]) for p in ps],
        [make_generator(int(p["seed"])) for p in ps],
    )
    if len(idx) == x.shape[0]:
        return noisy
    out = x.clone()
    out[idx] = noisy
    return out


def _jpeg_each(x: torch.Tensor, params: list[dict[str, Any]], backend: str,
               model: str = "libjpeg") -> torch.Tensor:
    """Per-image JPEG (Real-ESRGAN clamps to [0, 1] right before its JPEG: so do both backends)."""
    idx = [i for i, p in enumerate(params) if p.get("apply", True)]
    if not idx:
        return x
    q = [float(params[i]["quality"]) for i in idx]
    sub = x if len(idx) == x.shape[0] else x[idx]
    if backend == "pillow":
        done = jpeg_real(sub, [int(round(v)) for v in q]).to(x.dtype)
    else:
        done = jpeg_torch(sub, torch.tensor(q, dtype=torch.float64), model=model)
    if len(idx) == x.shape[0]:
        return done  # in [0, 1] like the clamped input of the skipped images below
    out = x.clamp(0, 1)
    out[idx] = done
    return out


def _group_key(p: dict[str, Any]) -> str:
    return json.dumps(
        [[s["resize"] for s in p["stages"]], p["final"]["order"], p["final"]["mode"]],
        sort_keys=True,
    )


def min_input_size(cfg: DegradeConfig) -> int:
    """Smallest HR side length the configured preset accepts (worst case over its ranges)."""
    s = cfg.scale
    if cfg.preset == "bicubic":
        return s
    if cfg.preset == "classical":
        return max(s, max(cfg.classical.blur.sizes) // 2 + 1)
    r = cfg.realesrgan
    need = max(1, s)
    if r.usm.apply:
        need = max(need, r.usm.radius // 2 + 1)
    # stage i blurs an image of size cur(i-1); track the worst (smallest) size factor.
    k1 = max(r.stage1.blur.sizes) // 2 + 1
    need = max(need, k1)
    cur = r.stage1.resize.down[0] if r.stage1.resize.probs[1] > 0 else 1.0
    for _ in range(1, r.order):
        k = max(r.stage2.blur.sizes) // 2 + 1
        need = max(need, math.ceil(k / cur))
        lo = r.stage2.resize.down[0] if r.stage2.resize.probs[1] > 0 else 1.0
        cur = lo / s
        need = max(need, math.ceil(1 / cur))
    if r.final.sinc_prob > 0:
        need = max(need, (max(r.final.sinc_sizes) // 2 + 1) * s)
    return int(need)


def apply_realesrgan(
    hr: torch.Tensor, params: list[dict[str, Any]], scale: int, cfg: RealESRGANConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply recorded Real-ESRGAN parameters to ``hr`` ``(B, 3, H, W)`` in [0, 1].

    Returns ``(lr, hr_usm)``: ``lr`` ``(B, 3, H // scale, W // scale)`` rounded to 8-bit
    levels, ``hr_usm`` the sharpened GT. Images sharing resize decisions run batched.
    """
    if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        raise UsageError(f"expected a float (B, 3, H, W) batch, got {tuple(hr.shape)}")
    if len(params) != hr.shape[0]:
        raise UsageError(f"{len(params)} parameter sets for a batch of {hr.shape[0]}")
    b, _, h, w = hr.shape
    if h // scale < 1 or w // scale < 1:
        raise InputError(f"image {w}x{h} is smaller than the scale {scale}")
    u = cfg.usm
    hr_usm = usm_sharp(hr, u.weight, u.radius, u.threshold) if u.apply else hr
    src = hr_usm if cfg.degrade_usm else hr
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(_group_key(p), []).append(i)
    if len(groups) == 1:
        return _realesrgan_group(src, params, scale, cfg), hr_usm
    lr = torch.empty(b, 3, h // scale, w // scale, dtype=hr.dtype, device=hr.device)
    for idx in groups.values():
        ps = [params[i] for i in idx]
        lr[idx] = _realesrgan_group(src[idx], ps, scale, cfg)
    return lr, hr_usm


def _realesrgan_group(x: torch.Tensor, ps: list[dict[str, Any]], scale: int,
                      cfg: RealESRGANConfig) -> torch.Tensor:
    ori_h, ori_w = x.shape[-2:]
    out = x
    n_stages = len(ps[0]["stages"])
    for si in range(n_stages):
        st = [p["stages"][si] for p in ps]
        out = _blur_each(out, [s["blur"] for s in st])
        rz = st[0]["resize"]
        if si == 0:
            out = _resize_factor(out, float(rz["factor"]), rz["mode"])
        else:
            f = float(rz["factor"])
            size = (int(ori_h / scale * f), int(ori_w / scale * f))
            out = _resize_to(out, size, rz["mode"])
        out = _noise_each(out, [s["noise"] for s in st])
        out = _jpeg_each(out, [s["jpeg"] for s in st], cfg.jpeg_backend, cfg.jpeg_model)
    fin = ps[0]["final"]
    target = (ori_h // scale, ori_w // scale)

    def resize_sinc(t: torch.Tensor) -> torch.Tensor:
        t = _resize_to(t, target, fin["mode"])
        return _blur_each(t, [p["final"]["sinc"] for p in ps])

    jp = [p["final"]["jpeg"] for p in ps]
    if fin["order"] == "resize_sinc_jpeg":
        out = _jpeg_each(resize_sinc(out), jp, cfg.jpeg_backend, cfg.jpeg_model)
    else:
        out = resize_sinc(_jpeg_each(out, jp, cfg.jpeg_backend, cfg.jpeg_model))
    return torch.clamp(torch.round(out * 255.0), 0, 255) / 255.0


def realesrgan_batch(
    hr: torch.Tensor, scale: int, cfg: RealESRGANConfig, gen: torch.Generator, *,
    shared_resize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Sample and apply Real-ESRGAN degradations to a batch (see the module docstring)."""
    records = sample_realesrgan_batch(cfg, hr.shape[0], gen, shared_resize=shared_resize)
    lr, hr_usm = apply_realesrgan(hr, records, scale, cfg)
    return lr, hr_usm, records


def apply_classical(
    hr: torch.Tensor, params: list[dict[str, Any]], scale: int, cfg: ClassicalConfig
) -> torch.Tensor:
    """First-order degradation ``JPEG((k * x) resized to H/scale + n)``, rounded to 8 bits."""
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise UsageError(f"expected a (B, 3, H, W) batch, got {tuple(hr.shape)}")
    h, w = hr.shape[-2:]
    outs = []
    for i, p in enumerate(params):
        x = _blur_each(hr[i : i + 1], [p["blur"]])
        x = _resize_to(x, (h // scale, w // scale), p["mode"]) if scale != 1 else x
        x = _noise_each(x, [p["noise"]])
        x = _jpeg_each(x, [p["jpeg"]], cfg.jpeg_backend)
        outs.append(torch.clamp(torch.round(x * 255.0), 0, 255) / 255.0)
    return torch.cat(outs, dim=0)


def bicubic_downscale(x: torch.Tensor, scale: int, *, kernel: str = "cubic",
                      antialias: bool = True, maxval: float | None = None) -> torch.Tensor:
    """MATLAB ``imresize(x, 1/scale)`` of ``x`` holding 0..maxval values (float64 inside).

    With ``maxval`` the result is rounded as MATLAB does for integer images (bit-exact on the
    benchmark LR sets); otherwise plain float.
    """
    if scale == 1:
        return x.clone()
    y = imresize(x.to(torch.float64), 1.0 / scale, kernel=kernel, antialias=antialias,
                 quantize=maxval)
    return y.to(x.dtype)
