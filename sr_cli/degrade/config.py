"""Configuration of the degradation pipelines: dataclasses, defaults, merging and validation.

Defaults are Real-ESRGAN's ``train_realesrgan_x4plus`` settings (see ../shared/DESIGN.md).
A config is built from defaults, then a TOML/JSON file (:func:`load_config_file`), then
``key=value`` overrides with dotted paths (:func:`apply_overrides`, e.g.
``realesrgan.stage1.noise.sigma=[1, 20]``), then validated (:func:`validate`), which raises
:class:`~sr_cli.errors.UsageError` for any bad value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from sr_cli.degrade.jpeg import JPEG_MODELS
from sr_cli.degrade.kernels import KERNEL_TYPES
from sr_cli.errors import UsageError

SCALES = (1, 2, 3, 4, 8)
PRESETS = ("bicubic", "classical", "realesrgan")
TORCH_RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest", "matlab")
IMRESIZE_KERNELS = ("cubic", "lanczos2", "lanczos3", "box", "triangle", "nearest")
SIZES_7_21 = (7, 9, 11, 13, 15, 17, 19, 21)
PI = math.pi


@dataclass
class BlurConfig:
    """Random blur kernel distribution (one kernel per image per stage)."""

    prob: float = 1.0
    sizes: tuple[int, ...] = SIZES_7_21
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma: tuple[float, float] = (0.2, 3.0)
    rotation: tuple[float, float] = (-PI, PI)
    beta_g: tuple[float, float] = (0.5, 4.0)
    beta_p: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1
    sinc_cutoff_small: tuple[float, float] = (PI / 3, PI)
    sinc_cutoff_large: tuple[float, float] = (PI / 5, PI)


@dataclass
class ResizeConfig:
    """Random resize: up / down / keep with ``probs``, factor ranges, and modes (uniform)."""

    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    up: tuple[float, float] = (1.0, 1.5)
    down: tuple[float, float] = (0.15, 1.0)
    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")


@dataclass
class NoiseConfig:
    """Gaussian (sigma in 0..255 units) with ``gaussian_prob``, else Poisson; gray with prob."""

    prob: float = 1.0
    gaussian_prob: float = 0.5
    sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass
class JpegConfig:
    """JPEG with probability ``prob`` and quality U[quality]."""

    prob: float = 1.0
    quality: tuple[float, float] = (30.0, 95.0)


@dataclass
class StageConfig:
    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


def _stage2() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), up=(1.0, 1.2), down=(0.3, 1.0)),
        noise=NoiseConfig(sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        jpeg=JpegConfig(quality=(30.0, 95.0)),
    )


@dataclass
class FinalConfig:
    """Last step: [resize to H/scale + sinc] and JPEG, in a random order."""

    order_probs: tuple[float, float] = (0.5, 0.5)  # (resize+sinc then JPEG, JPEG then resize+sinc)
    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    sinc_prob: float = 0.8
    sinc_sizes: tuple[int, ...] = SIZES_7_21
    sinc_cutoff: tuple[float, float] = (PI / 3, PI)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


@dataclass
class UsmConfig:
    """Unsharp masking of the ground truth (Real-ESRGAN: radius 51, weight 0.5, threshold 10)."""

    apply: bool = True
    weight: float = 0.5
    radius: int = 51
    threshold: float = 10.0


@dataclass
class RealESRGANConfig:
    """High-order degradation: ``order`` stages (stage 1 = ``stage1``, others = ``stage2``;
    the last stage has no JPEG of its own), then ``final``. ``degrade_usm``: degrade the
    USM-sharpened GT (as Real-ESRGAN's training code: ``feed_data`` blurs ``self.gt_usm``)
    rather than the plain one. ``jpeg_model``: the torch backend's JPEG model, "diffjpeg"
    (BasicSR's DiffJPEG, what Real-ESRGAN trains with) or "libjpeg" (a model of the codec)."""

    order: int = 2
    usm: UsmConfig = field(default_factory=UsmConfig)
    degrade_usm: bool = True
    jpeg_backend: str = "torch"  # "torch" (batched DCT model) or "pillow" (real libjpeg)
    jpeg_model: str = "diffjpeg"  # torch backend: "diffjpeg" (Real-ESRGAN) or "libjpeg"
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)


def _classical_blur() -> BlurConfig:
    return BlurConfig(kernel_types=("iso", "aniso"), kernel_probs=(0.5, 0.5), sinc_prob=0.0)


@dataclass
class ClassicalConfig:
    """First-order model ``y = JPEG((x * k) downsampled by s + n)``."""

    blur: BlurConfig = field(default_factory=_classical_blur)
    modes: tuple[str, ...] = ("bicubic",)
    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(sigma=(0.0, 25.0),
                                                                   gray_prob=0.0,
                                                                   gaussian_prob=1.0))
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    jpeg_backend: str = "pillow"


@dataclass
class BicubicConfig:
    """MATLAB ``imresize`` by 1/scale (``quantize`` reproduces MATLAB's uint8 arithmetic)."""

    kernel: str = "cubic"
    antialias: bool = True
    quantize: bool = True


@dataclass
class DegradeConfig:
    preset: str = "bicubic"
    scale: int = 4
    seed: int = 0
    bicubic: BicubicConfig = field(default_factory=BicubicConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    realesrgan: RealESRGANConfig = field(default_factory=RealESRGANConfig)


# ----------------------------------------------------------------------------- merging


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serializable nested dict of a config dataclass (tuples become lists)."""
    d = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, tuple | list):
            return [fix(x) for x in v]
        return v

    return fix(d)


def _coerce(value: Any, current: Any, path: str) -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(f"config {path}: expected true/false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise UsageError(f"config {path}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"config {path}: expected a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise UsageError(f"config {path}: expected a string, got {value!r}")
        return value
    if isinstance(current, tuple):
        if not isinstance(value, list | tuple):
            raise UsageError(f"config {path}: expected a list, got {value!r}")
        if current and all(isinstance(c, str) for c in current):
            if not all(isinstance(v, str) for v in value):
                raise UsageError(f"config {path}: expected a list of names, got {value!r}")
            return tuple(value)
        elem: Any = current[0] if current else 0.0
        if len(current) in (2, 3) and all(isinstance(c, float) for c in current) and len(
            value
        ) != len(current):
            raise UsageError(f"config {path}: expected {len(current)} numbers, got {value!r}")
        return tuple(_coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    raise UsageError(f"config {path}: cannot set this value")


def merge(cfg: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested dict into a config dataclass in place (unknown keys -> UsageError)."""
    if not isinstance(data, dict):
        raise UsageError(f"config {prefix or 'root'}: expected a table/object")
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise UsageError(f"unknown config key {path!r}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, prefix=f"{path}.")
        else:
            setattr(cfg, key, _coerce(value, current, path))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON file into a dict; errors -> UsageError."""
    p = Path(path)
    try:
        from sr_cli.io.atomic import note_input

        note_input(p)
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config {str(p)!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config {str(p)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config {str(p)!r}: expected a table/object at the top")
    return data


def parse_override(item: str) -> dict[str, Any]:
    """``"a.b.c=VALUE"`` -> ``{"a": {"b": {"c": value}}}``; VALUE is JSON, else a string."""
    if "=" not in item:
        raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
    raw = raw.strip()
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def apply_overrides(cfg: DegradeConfig, items: list[str]) -> None:
    for item in items:
        merge(cfg, parse_override(item))


# ----------------------------------------------------------------------------- validation


def _range(path: str, r: tuple[float, ...], lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> None:
    if len(r) != 2:
        raise UsageError(f"{path}: expected [min, max]")
    a, b = r
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UsageError(f"{path}: values must be finite")
    if a > b:
        raise UsageError(f"{path}: min {a} > max {b}")
    if lo is not None and a < lo - 1e-12:
        raise UsageError(f"{path}: {a} is below {lo}")
    if hi is not None and b > hi + 1e-12:
        raise UsageError(f"{path}: {b} is above {hi}")
    if positive and a <= 0:
        raise UsageError(f"{path}: values must be > 0")


def _prob(path: str, p: float) -> None:
    if not (0.0 <= p <= 1.0):
        raise UsageError(f"{path}: probability {p} is outside [0, 1]")


def _probs(path: str, ps: tuple[float, ...], n: int) -> None:
    if len(ps) != n:
        raise UsageError(f"{path}: expected {n} probabilities, got {len(ps)}")
    for p in ps:
        _prob(path, p)
    if abs(sum(ps) - 1.0) > 1e-6:
        raise UsageError(f"{path}: probabilities sum to {sum(ps):g}, not 1")


def _sizes(path: str, sizes: tuple[int, ...]) -> None:
    if not sizes:
        raise UsageError(f"{path}: empty list of kernel sizes")
    for s in sizes:
        if s < 1 or s % 2 == 0 or s > 51:
            raise UsageError(f"{path}: kernel size {s} must be odd, 1..51")


def _modes(path: str, modes: tuple[str, ...]) -> None:
    if not modes:
        raise UsageError(f"{path}: empty list of resize modes")
    for m in modes:
        if m not in TORCH_RESIZE_MODES:
            raise UsageError(f"{path}: unknown resize mode {m!r} ({', '.join(TORCH_RESIZE_MODES)})")


def _blur(path: str, b: BlurConfig) -> None:
    _prob(f"{path}.prob", b.prob)
    _sizes(f"{path}.sizes", b.sizes)
    for t in b.kernel_types:
        if t not in KERNEL_TYPES:
            raise UsageError(
                f"{path}.kernel_types: unknown kernel {t!r} ({', '.join(KERNEL_TYPES)})"
            )
    if not b.kernel_types:
        raise UsageError(f"{path}.kernel_types: empty")
    _probs(f"{path}.kernel_probs", b.kernel_probs, len(b.kernel_types))
    _range(f"{path}.sigma", b.sigma, positive=True)
    _range(f"{path}.rotation", b.rotation)
    _range(f"{path}.beta_g", b.beta_g, positive=True)
    _range(f"{path}.beta_p", b.beta_p, positive=True)
    _prob(f"{path}.sinc_prob", b.sinc_prob)
    _range(f"{path}.sinc_cutoff_small", b.sinc_cutoff_small, 0, PI, positive=True)
    _range(f"{path}.sinc_cutoff_large", b.sinc_cutoff_large, 0, PI, positive=True)


def _noise(path: str, n: NoiseConfig) -> None:
    _prob(f"{path}.prob", n.prob)
    _prob(f"{path}.gaussian_prob", n.gaussian_prob)
    _prob(f"{path}.gray_prob", n.gray_prob)
    _range(f"{path}.sigma", n.sigma, 0, 255)
    _range(f"{path}.poisson_scale", n.poisson_scale, 0)


def _jpeg(path: str, j: JpegConfig) -> None:
    _prob(f"{path}.prob", j.prob)
    _range(f"{path}.quality", j.quality, 1, 100)


def _backend(path: str, b: str) -> None:
    if b not in ("torch", "pillow"):
        raise UsageError(f"{path}: unknown JPEG backend {b!r} (torch, pillow)")


def validate(cfg: DegradeConfig) -> DegradeConfig:
    """Check every range, probability and name; raise UsageError on the first problem."""
    if cfg.preset not in PRESETS:
        raise UsageError(f"unknown preset {cfg.preset!r} (choose from {', '.join(PRESETS)})")
    if cfg.scale not in SCALES:
        raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))}, got {cfg.scale}")
    if cfg.bicubic.kernel not in IMRESIZE_KERNELS:
        raise UsageError(
            f"bicubic.kernel: unknown kernel {cfg.bicubic.kernel!r} ({', '.join(IMRESIZE_KERNELS)})"
        )
    c = cfg.classical
    _blur("classical.blur", c.blur)
    _modes("classical.modes", c.modes)
    _noise("classical.noise", c.noise)
    _jpeg("classical.jpeg", c.jpeg)
    _backend("classical.jpeg_backend", c.jpeg_backend)
    r = cfg.realesrgan
    if not 1 <= r.order <= 8:
        raise UsageError(f"realesrgan.order must be 1..8, got {r.order}")
    _backend("realesrgan.jpeg_backend", r.jpeg_backend)
    if r.jpeg_model not in JPEG_MODELS:
        raise UsageError(
            f"realesrgan.jpeg_model: unknown JPEG model {r.jpeg_model!r} ({', '.join(JPEG_MODELS)})"
        )
    if r.usm.radius < 1 or r.usm.radius > 201:
        raise UsageError("realesrgan.usm.radius must be in 1..201")
    for name in ("stage1", "stage2"):
        s: StageConfig = getattr(r, name)
        p = f"realesrgan.{name}"
        _blur(f"{p}.blur", s.blur)
        _probs(f"{p}.resize.probs", s.resize.probs, 3)
        _range(f"{p}.resize.up", s.resize.up, 1.0, 16.0)
        _range(f"{p}.resize.down", s.resize.down, 0.0, 1.0, positive=True)
        _modes(f"{p}.resize.modes", s.resize.modes)
        _noise(f"{p}.noise", s.noise)
        _jpeg(f"{p}.jpeg", s.jpeg)
    f = r.final
    _probs("realesrgan.final.order_probs", f.order_probs, 2)
    _modes("realesrgan.final.modes", f.modes)
    _prob("realesrgan.final.sinc_prob", f.sinc_prob)
    _sizes("realesrgan.final.sinc_sizes", f.sinc_sizes)
    _range("realesrgan.final.sinc_cutoff", f.sinc_cutoff, 0, PI, positive=True)
    _jpeg("realesrgan.final.jpeg", f.jpeg)
    return cfg
