"""Network interpolation (ESRGAN) and pixel interpolation: pure functions, no printing.

Network interpolation blends every parameter of two networks of the same architecture::

    theta = (1 - alpha) * theta_A + alpha * theta_B

computed in float64 and rounded once to the parents' dtype, so ``alpha = 0`` reproduces A and
``alpha = 1`` reproduces B bit for bit, and ``alpha = 0.5`` is the exact mean ``(A + B) / 2``.
ESRGAN uses it between a PSNR-oriented model (A) and its GAN fine-tune (B); Real-ESRGAN's
"denoise strength" is the same blend of ``realesr-general-x4v3`` and its ``wdn`` variant.

Pixel interpolation (the ESRGAN paper's comparison baseline) blends two already-upscaled images
with the same formula, per pixel.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sr_cli.errors import InputError, ModelError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from sr_cli.zoo import LoadedModel

StateDict = Mapping[str, torch.Tensor]

# ---------------------------------------------------------------------------------------------
# alpha values


def check_alpha(alpha: float, *, extrapolate: bool = False) -> float:
    """Validate one interpolation weight.

    Args:
        alpha: weight of model B; 0 gives A, 1 gives B.
        extrapolate: allow values outside [0, 1] (theta moves beyond a parent).

    Raises:
        UsageError: alpha is not finite, or outside [0, 1] without ``extrapolate``.
    """
    a = float(alpha)
    if not math.isfinite(a):
        raise UsageError(f"--alpha must be a finite number, got {alpha!r}")
    if not extrapolate and not 0.0 <= a <= 1.0:
        raise UsageError(
            f"--alpha {a:g} is outside [0, 1]; pass --extrapolate to go beyond the parents"
        )
    return a


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _float(tok: str) -> float:
    if not re.fullmatch(_NUM, tok):
        raise UsageError(f"--alpha: {tok!r} is not a number (finite, e.g. 0.8)")
    return float(tok)


def parse_alphas(text: str, *, extrapolate: bool = False) -> list[float]:
    """Parse ``--alpha``: one value, a comma list, ``start:stop:step`` or ``a,b,...,z``.

    ``"0,0.25,...,1"`` continues the step of the first two values up to the last one;
    ``"0:1:0.25"`` is the same range (stop included). Values are rounded to 6 decimals
    (removes float noise of generated ranges), duplicates are dropped, order is kept.

    Raises:
        UsageError: unparsable text, a non-positive step, an empty list, or a value outside
            [0, 1] without ``extrapolate``.
    """
    s = text.replace(" ", "")
    if not s:
        raise UsageError("--alpha is empty")
    values: list[float] = []
    if ":" in s:
        parts = s.split(":")
        if len(parts) != 3:
            raise UsageError(f"--alpha {text!r}: a range is start:stop:step")
        start, stop, step = (_float(p) for p in parts)
        values = _arange(start, stop, step, text)
    else:
        toks = s.split(",")
        if "..." in toks:
            i = toks.index("...")
            if i < 2 or i != len(toks) - 2 or toks.count("...") != 1:
                raise UsageError(
                    f"--alpha {text!r}: write two values, '...', then the last value "
                    "(e.g. 0,0.2,...,1)"
                )
            head = [_float(t) for t in toks[:i]]
            values = head[:-2] + _arange(head[-2], _float(toks[-1]), head[-1] - head[-2], text)
        else:
            values = [_float(t) for t in toks if t != ""]
    out: list[float] = []
    for v in values:
        v = round(v, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
        check_alpha(v, extrapolate=extrapolate)
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError(f"--alpha {text!r} gives no values")
    return out


def _arange(start: float, stop: float, step: float, text: str) -> list[float]:
    if step == 0 or (stop - start) * step < 0:
        raise UsageError(f"--alpha {text!r}: the step must move from start towards stop")
    n = int(math.floor((stop - start) / step + 1e-9))
    if n > 1000:
        raise UsageError(f"--alpha {text!r}: more than 1000 values")
    vals = [start + k * step for k in range(n + 1)]
    if abs(vals[-1] - stop) > 1e-9 * max(1.0, abs(stop)):
        vals.append(stop)
    return vals


def alpha_tag(alpha: float) -> str:
    """File-name tag of an alpha: ``0.8 -> "a0.80"``, ``-0.25 -> "a-0.25"``,
    ``0.125 -> "a0.125"`` (two decimals unless more are needed)."""
    txt = f"{alpha:.2f}"
    if abs(float(txt) - alpha) > 1e-12:
        txt = f"{alpha:.6f}".rstrip("0")
    return f"a{txt}"


def output_stem(name_a: str, name_b: str) -> str:
    """``<A>_<B>`` from two model or image names, reduced to file-name-safe characters."""

    def clean(n: str) -> str:
        stem = Path(n).name
        for ext in (".safetensors", ".pth", ".pt", ".png", ".jpg", ".jpeg", ".webp", ".tif",
                    ".tiff", ".bmp"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-") or "model"

    return f"{clean(name_a)}_{clean(name_b)}"


# ---------------------------------------------------------------------------------------------
# state dicts


def check_compatible(
    a: StateDict,
    b: StateDict,
    *,
    arch_a: str | None = None,
    arch_b: str | None = None,
    hparams_a: Mapping[str, Any] | None = None,
    hparams_b: Mapping[str, Any] | None = None,
    name_a: str = "A",
    name_b: str = "B",
) -> None:
    """Raise :class:`ModelError` unless A and B can be blended tensor by tensor.

    Checks, in order: same architecture id, same hyperparameters (when given), the same set of
    keys, and for every key the same shape and dtype, floating-point tensors.
    """
    if arch_a is not None and arch_b is not None and arch_a != arch_b:
        raise ModelError(
            f"cannot interpolate different architectures: {name_a} is {arch_a}, "
            f"{name_b} is {arch_b}"
        )
    if hparams_a is not None and hparams_b is not None:
        diff = sorted(
            k for k in set(hparams_a) | set(hparams_b) if hparams_a.get(k) != hparams_b.get(k)
        )
        if diff:
            k = diff[0]
            raise ModelError(
                f"cannot interpolate: hyperparameter {k} differs ({name_a}: {hparams_a.get(k)!r}, "
                f"{name_b}: {hparams_b.get(k)!r})"
            )
    ka, kb = set(a), set(b)
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        what = (f"{len(only_a)} tensor(s) only in {name_a} (e.g. {only_a[0]})" if only_a
                else f"{len(only_b)} tensor(s) only in {name_b} (e.g. {only_b[0]})")
        raise ModelError(f"cannot interpolate: the networks have different layers: {what}")
    for k in a:
        ta, tb = a[k], b[k]
        if tuple(ta.shape) != tuple(tb.shape):
            raise ModelError(
                f"cannot interpolate: tensor {k} has shape {tuple(ta.shape)} in {name_a} "
                f"but {tuple(tb.shape)} in {name_b}"
            )
        if ta.dtype != tb.dtype:
            raise ModelError(
                f"cannot interpolate: tensor {k} is {ta.dtype} in {name_a} but {tb.dtype} "
                f"in {name_b}"
            )


def same_weights(a: StateDict, b: StateDict) -> bool:
    """True when both state dicts hold the same keys and bit-identical tensors."""
    return set(a) == set(b) and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
        for k in a
    )


def interpolate_state_dicts(a: StateDict, b: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """Blend two compatible state dicts: ``(1 - alpha) * a + alpha * b`` per tensor.

    Args:
        a, b: state dicts with the same keys, shapes and dtypes (see :func:`check_compatible`).
        alpha: weight of ``b``; any finite value (range checks belong to the caller).

    Returns:
        A new state dict. Floating-point tensors are computed in float64 and rounded once to
        their dtype: ``alpha = 0`` returns exactly ``a``, ``alpha = 1`` exactly ``b``, and
        ``alpha = 0.5`` equals ``((a.double() + b.double()) / 2).to(dtype)``. Non-float
        tensors (counters) must be equal in both and are copied.

    Raises:
        ModelError: incompatible inputs, or unequal non-float tensors.

    Example:
        >>> sd = interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)
        >>> sd["w"].tolist()
        [0.25, 0.25]
    """
    check_compatible(a, b)
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise UsageError(f"alpha must be finite, got {alpha!r}")
    return {k: _blend_tensor(k, ta, b[k], alpha) for k, ta in a.items()}


def _blend_tensor(key: str, ta: torch.Tensor, tb: torch.Tensor, alpha: float) -> torch.Tensor:
    """One tensor of :func:`interpolate_state_dicts` (a new tensor, inputs untouched)."""
    if ta.is_floating_point():
        blended = (1.0 - alpha) * ta.detach().double() + alpha * tb.detach().double()
        return blended.to(ta.dtype).contiguous()
    if torch.equal(ta, tb):
        return ta.detach().clone()
    raise ModelError(f"cannot interpolate: non-float tensor {key} differs between models")


# ---------------------------------------------------------------------------------------------
# models


def interp_metadata(
    a: LoadedModel, b: LoadedModel, alpha: float, *, name: str | None = None
) -> dict[str, str]:
    """``__metadata__`` of a blend: both parents, alpha, and what is needed to rebuild it.

    Keys: ``name``, ``arch``, ``hparams`` (JSON), ``scale``, ``in_channels``, ``recipe``
    ("interp"), ``alpha``, ``parents`` (JSON list of ``{"name", "source", "weight"}``, weight =
    the parent's coefficient), ``parent_a``, ``parent_b``, and ``data`` when both parents agree.
    """
    desc = a.desc
    meta: dict[str, str] = {
        "name": name or f"{output_stem(a.name, b.name)}_{alpha_tag(alpha)}",
        "arch": desc.arch,
        "hparams": json.dumps(dict(desc.hparams), sort_keys=True),
        "scale": str(desc.scale),
        "in_channels": str(desc.in_channels),
        "recipe": "interp",
        "alpha": repr(float(alpha)),
        "formula": "(1 - alpha) * parent_a + alpha * parent_b",
        "parent_a": a.name,
        "parent_b": b.name,
        "parents": json.dumps(
            [
                {"name": a.name, "source": str(a.source), "weight": 1.0 - float(alpha)},
                {"name": b.name, "source": str(b.source), "weight": float(alpha)},
            ]
        ),
    }
    da, db = (a.metadata or {}).get("data"), (b.metadata or {}).get("data")
    if da and da == db:
        meta["data"] = da
    return meta


def _same_source(a: LoadedModel, b: LoadedModel) -> bool:
    sa, sb = getattr(a, "source", None), getattr(b, "source", None)
    if not sa or not sb:
        return False
    try:
        return Path(str(sa)).resolve() == Path(str(sb)).resolve()
    except OSError:
        return str(sa) == str(sb)


def check_models(a: LoadedModel, b: LoadedModel) -> None:
    """Raise unless two loaded models can be blended.

    Raises:
        UsageError: A and B are the same model (same file, or bit-identical weights).
        ModelError: different architectures, hyperparameters, layers, shapes or dtypes.
    """
    if _same_source(a, b):
        raise UsageError(
            f"blending a model with itself ({a.name}) changes nothing; give two different models"
        )
    sa, sb = a.net.state_dict(), b.net.state_dict()
    check_compatible(
        sa, sb,
        arch_a=a.desc.arch, arch_b=b.desc.arch,
        hparams_a=a.desc.hparams, hparams_b=b.desc.hparams,
        name_a=a.name, name_b=b.name,
    )
    if same_weights(sa, sb):
        raise UsageError(
            f"{a.name} and {b.name} have identical weights; blending them changes nothing"
        )


def blend_models(a: LoadedModel, b: LoadedModel, alpha: float) -> LoadedModel:
    """Deep network interpolation of two loaded models (``sr upscale -m A -m B --mix ALPHA``).

    Returns a new :class:`~sr_cli.zoo.LoadedModel` whose network is built from A's
    architecture and hyperparameters with the weights ``(1 - alpha) * A + alpha * B`` (see
    :func:`interpolate_state_dicts`), in eval mode, and whose metadata records both parents and
    alpha (:func:`interp_metadata`). The parents are not modified. Range checks on ``alpha``
    are the caller's (see :func:`check_alpha`).

    Raises:
        UsageError: A and B are the same model.
        ModelError: incompatible networks.
    """
    check_models(a, b)
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise UsageError(f"alpha must be finite, got {alpha!r}")
    # A copy of A's module (same class, hyperparameters and buffers) whose tensors are then
    # overwritten in place: no re-initialisation, and one blended tensor in memory at a time.
    net = copy.deepcopy(a.net)
    sb = b.net.state_dict()
    with torch.no_grad():
        for k, t in net.state_dict(keep_vars=False).items():
            t.copy_(_blend_tensor(k, t, sb[k], alpha))
    net.eval()
    desc = a.desc
    meta = interp_metadata(a, b, alpha)
    return type(a)(
        name=meta["name"],
        net=net,
        desc=desc,
        metadata=meta,
        source=None,
    )


# ---------------------------------------------------------------------------------------------
# images


def blend_images(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Pixel interpolation ``(1 - alpha) * a + alpha * b``, rounded and clipped.

    Args:
        a, b: ``(H, W, C)`` arrays of the same shape and dtype (``uint8`` or ``uint16``).
        alpha: weight of ``b``.

    Returns:
        ``(H, W, C)`` array of the input dtype; computed in float64, rounded half to even,
        clipped to the dtype's range (only matters when extrapolating).

    Raises:
        InputError: the images differ in size, channels or bit depth.
    """
    if a.shape != b.shape:
        raise InputError(
            f"cannot blend images of different sizes: {a.shape[1]}x{a.shape[0]}x{a.shape[2]} "
            f"and {b.shape[1]}x{b.shape[0]}x{b.shape[2]}"
        )
    if a.dtype != b.dtype:
        raise InputError(f"cannot blend images of different bit depths ({a.dtype}, {b.dtype})")
    maxv = float(np.iinfo(a.dtype).max)
    out = (1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)
    return np.clip(np.rint(out), 0, maxv).astype(a.dtype)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any ``(H, W, C)`` uint8/uint16 image -> ``(H, W, 3)`` uint8 for display (alpha dropped)."""
    arr = pixels
    if arr.dtype == np.uint16:
        arr = np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if arr.shape[2] in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def fit_tile(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Resize an ``(H, W, C)`` uint8 image by an integer factor towards ``max_side``.

    Larger images are box-averaged so the longest side is at most ``max_side``; images at
    most half that size are enlarged by pixel repetition (nearest), so small previews stay
    visible on the sheet with their pixels intact.
    """
    h, w = pixels.shape[:2]
    longest = max(h, w)
    up = max(1, max_side // max(1, longest))
    if up >= 2:
        return np.repeat(np.repeat(pixels, up, axis=0), up, axis=1)
    f = max(1, math.ceil(longest / max(1, max_side)))
    if f == 1:
        return pixels
    hh, ww = h // f * f, w // f * f
    if hh == 0 or ww == 0:
        return pixels[:: f, :: f]
    blocks = pixels[:hh, :ww].astype(np.float64).reshape(hh // f, f, ww // f, f, -1)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


# A 5x7 bitmap font for labels (enough for "a=0.80", "A", "B", names of digits and signs).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    "+": ("00000", "00100", "00100", "11111", "00100", "00100", "00000"),
    "=": ("00000", "00000", "11111", "00000", "11111", "00000", "00000"),
    " ": ("00000",) * 7,
    "a": ("00000", "00000", "01110", "00001", "01111", "10001", "01111"),
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
}
_UNKNOWN = ("11111", "10001", "10001", "10001", "10001", "10001", "11111")


def render_label(text: str, *, scale: int = 2) -> np.ndarray:
    """Rasterise ``text`` with the built-in 5x7 font: ``(7*scale, 6*len*scale)`` bool mask."""
    cols = []
    for ch in text:
        g = _GLYPHS.get(ch, _UNKNOWN)
        m = np.array([[c == "1" for c in row] + [False] for row in g], dtype=bool)
        cols.append(m)
    mask = np.concatenate(cols, axis=1) if cols else np.zeros((7, 1), dtype=bool)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def contact_sheet(
    tiles: Sequence[tuple[str, np.ndarray]],
    *,
    columns: int | None = None,
    max_tile_side: int = 384,
    gap: int = 8,
) -> np.ndarray:
    """Lay out labelled images in a grid: one PNG-ready ``(H, W, 3)`` uint8 array.

    Each tile is converted to 8-bit RGB (:func:`to_rgb8`), resized by an integer factor
    towards ``max_tile_side`` (:func:`fit_tile`), and drawn on a dark background with its label
    (built-in 5x7 font, white on black) in a strip above it. Tiles of different sizes are
    top-left aligned in cells of the largest size.

    Raises:
        UsageError: no tiles.
    """
    if not tiles:
        raise UsageError("contact sheet needs at least one image")
    imgs = [fit_tile(to_rgb8(p), max_tile_side) for _, p in tiles]
    labels = [render_label(t) for t, _ in tiles]
    n = len(imgs)
    cols = columns or min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    rows = math.ceil(n / cols)
    cell_h = max(i.shape[0] for i in imgs)
    cell_w = max(max(i.shape[1] for i in imgs), max(lb.shape[1] for lb in labels) + 8)
    strip = max(lb.shape[0] for lb in labels) + 8
    H = gap + rows * (strip + cell_h + gap)
    W = gap + cols * (cell_w + gap)
    sheet = np.full((H, W, 3), 32, dtype=np.uint8)
    for idx, (img, lb) in enumerate(zip(imgs, labels, strict=True)):
        r, c = divmod(idx, cols)
        y0 = gap + r * (strip + cell_h + gap)
        x0 = gap + c * (cell_w + gap)
        sheet[y0 : y0 + strip, x0 : x0 + cell_w] = 0
        ly, lx = y0 + 4, x0 + 4
        region = sheet[ly : ly + lb.shape[0], lx : lx + lb.shape[1]]
        region[lb[: region.shape[0], : region.shape[1]]] = 255
        sheet[y0 + strip : y0 + strip + img.shape[0], x0 : x0 + img.shape[1]] = img
    return sheet
