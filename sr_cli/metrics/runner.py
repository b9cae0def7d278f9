"""Pairing inputs and computing the selected metrics for ``sr score`` (no printing here)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sr_cli.errors import InputError, UsageError
from sr_cli.io.images import is_image_path, read_image, read_stdin_bytes
from sr_cli.metrics.color import to_channels
from sr_cli.metrics.psnr import crop_border as crop
from sr_cli.metrics.psnr import psnr
from sr_cli.metrics.ssim import ssim

METRICS = ("psnr", "ssim", "niqe", "ma", "pi")
FULL_REFERENCE = ("psnr", "ssim")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "niqe": False, "ma": True, "pi": False}


@dataclass
class Source:
    """One image to read: a path, or stdin (``path is None``)."""

    name: str
    path: Path | None


@dataclass
class Pair:
    name: str
    sr: Source
    hr: Source | None


@dataclass
class Settings:
    metrics: tuple[str, ...]
    channel: str = "y"
    crop_border: int = 0
    scale: int | None = None  # enables the mod-crop of HR (see score_pair)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    niqe_params: Any = None  # NiqeParams
    ma_model: Any = None  # MaModel


def _list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    if not files:
        raise InputError(f"{folder}: no images (png, jpg, webp, bmp, tif) in this folder")
    return files


def _stem(path: Path, strip_suffix: str | None) -> str:
    stem = path.stem
    if strip_suffix and stem.endswith(strip_suffix) and len(stem) > len(strip_suffix):
        stem = stem[: -len(strip_suffix)]
    return stem


def pair_inputs(sr: str, hr: str | None, strip_suffix: str | None = None) -> list[Pair]:
    """Files or folders -> pairs matched by file stem (after removing ``strip_suffix``).

    ``sr == "-"`` reads one image from stdin. Raises InputError for missing paths, a folder
    paired with a file, or SR images without an HR partner (all unpaired names are listed).
    """
    if sr == "-":
        srcs = [Source("<stdin>", None)]
        sr_is_dir = False
    else:
        sp = Path(sr)
        if not sp.exists():
            raise InputError(f"{sr}: no such file or folder")
        sr_is_dir = sp.is_dir()
        srcs = ([Source(p.name, p) for p in _list_images(sp)] if sr_is_dir
                else [Source(sp.name, sp)])
    if hr is None:
        return [Pair(s.name, s, None) for s in srcs]
    if hr == "-":
        raise UsageError("only SR can be read from stdin ('-'); give HR as a file or folder")
    hp = Path(hr)
    if not hp.exists():
        raise InputError(f"{hr}: no such file or folder")
    if hp.is_dir() != sr_is_dir:
        raise UsageError("SR and HR must both be files or both be folders")
    if not sr_is_dir:
        return [Pair(srcs[0].name, srcs[0], Source(hp.name, hp))]
    by_stem: dict[str, Path] = {}
    for p in _list_images(hp):
        by_stem.setdefault(p.stem, p)
    pairs: list[Pair] = []
    missing: list[str] = []
    for s in srcs:
        assert s.path is not None
        key = _stem(s.path, strip_suffix)
        if key in by_stem:
            h = by_stem[key]
            pairs.append(Pair(s.name, s, Source(h.name, h)))
        else:
            missing.append(s.name)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        hint = "" if strip_suffix else (
            " (use --strip-suffix to match e.g. baby_out.png to baby.png)")
        raise InputError(f"no HR image with the same stem for: {shown}{hint}")
    return pairs


def _read(src: Source, stdin_cache: dict[str, bytes]):
    if src.path is None:
        if "data" not in stdin_cache:
            stdin_cache["data"] = read_stdin_bytes()
        return read_image(stdin_cache["data"], name="<stdin>")
    return read_image(src.path)


def mod_crop(hr: Any, sr_hw: tuple[int, int], scale: int | None) -> Any:
    """Crop HR to the SR size when HR is only larger by its remainder modulo ``scale``.

    Benchmark HR images are not always multiples of the scale (Set5 ``baby`` is 512 px, x3
    gives 510); the literature crops HR to a multiple of the scale ("modcrop", top-left). Done
    only with ``--scale`` and only for a remainder smaller than the scale.
    """
    if not scale:
        return hr
    h, w = hr.shape[:2]
    sh, sw = sr_hw
    if (h, w) != (sh, sw) and h - h % scale == sh and w - w % scale == sw:
        return hr[:sh, :sw]
    return hr


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def score_pair(pair: Pair, settings: Settings, stdin_cache: dict[str, bytes]) -> dict[str, Any]:
    """All selected metrics of one pair: ``{"name": ..., "psnr": ..., ...}`` (floats)."""
    sr_img = _read(pair.sr, stdin_cache)
    out: dict[str, Any] = {"name": pair.name}
    dev = settings.device
    if any(m in FULL_REFERENCE for m in settings.metrics):
        if pair.hr is None:
            raise UsageError("PSNR and SSIM need an HR reference image")
        hr_img = _read(pair.hr, stdin_cache)
        hr_px = mod_crop(hr_img.pixels, (sr_img.height, sr_img.width), settings.scale)
        if (sr_img.height, sr_img.width) != hr_px.shape[:2]:
            raise InputError(
                f"{pair.name}: size mismatch, SR is {sr_img.width}x{sr_img.height} and HR "
                f"({pair.hr.name}) is {hr_img.width}x{hr_img.height}"
            )
        a = crop(to_channels(sr_img.pixels, settings.channel), settings.crop_border).to(dev)
        b = crop(to_channels(hr_px, settings.channel), settings.crop_border).to(dev)
        if "psnr" in settings.metrics:
            out["psnr"] = float(psnr(a, b)[0])
        if "ssim" in settings.metrics:
            out["ssim"] = float(ssim(a, b)[0])
    nr = [m for m in settings.metrics if m not in FULL_REFERENCE]
    if nr:
        y = crop(to_channels(sr_img.pixels, "y", round_8bit=True), settings.crop_border).to(dev)
        niqe_v = ma_v = None
        if "niqe" in nr or "pi" in nr:
            from sr_cli.metrics.niqe import niqe

            niqe_v = float(niqe(y, settings.niqe_params)[0])
            if math.isnan(niqe_v):
                raise InputError(f"{pair.name}: NIQE is undefined (flat image?)")
        if "ma" in nr or "pi" in nr:
            from sr_cli.metrics.ma import ma_score

            ma_v = float(ma_score(y, settings.ma_model)[0])
        if "niqe" in nr:
            out["niqe"] = niqe_v
        if "ma" in nr:
            out["ma"] = ma_v
        if "pi" in nr:
            from sr_cli.metrics.pi import perceptual_index

            assert ma_v is not None and niqe_v is not None
            out["pi"] = float(perceptual_index(torch.tensor(ma_v), torch.tensor(niqe_v)))
    return out


def score_rows(
    pairs: list[Pair], settings: Settings, callback: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Score every pair, in order; the first failing pair raises."""
    rows: list[dict[str, Any]] = []
    cache: dict[str, bytes] = {}
    for i, pair in enumerate(pairs):
        rows.append(score_pair(pair, settings, cache))
        if callback is not None:
            callback(i + 1, len(pairs))
    return rows


def mean_scores(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, float]:
    """Means over images (NaN for no images, e.g. an empty ``--shard``)."""
    return {m: sum(r[m] for r in rows) / len(rows) if rows else math.nan for m in metrics}


def score_all(
    pairs: list[Pair], settings: Settings, callback: Callable[[int, int], None] | None = None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Score every pair; returns ``(per-image rows, means)`` (means over images)."""
    rows = score_rows(pairs, settings, callback)
    return rows, mean_scores(rows, settings.metrics)


def parse_gates(
    items: list[str] | None, option: str, selected: tuple[str, ...]
) -> dict[str, float]:
    """``["psnr=30.5", ...]`` -> ``{"psnr": 30.5}``; UsageError for bad syntax or metrics not
    being computed."""
    gates: dict[str, float] = {}
    for item in items or []:
        for part in item.split(","):
            key, sep, val = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in METRICS:
                raise UsageError(f"{option} expects METRIC=VALUE with METRIC in "
                                 f"{', '.join(METRICS)}; got {part!r}")
            try:
                gates[key] = float(val)
            except ValueError:
                raise UsageError(f"{option} {part!r}: {val!r} is not a number") from None
            if math.isnan(gates[key]):
                raise UsageError(f"{option} {part!r}: a threshold cannot be NaN")
            if key not in selected:
                raise UsageError(f"{option} {key}: that metric is not being computed "
                                 f"(add --{key})")
    return gates


def check_gates(means: dict[str, float], under: dict[str, float],
                over: dict[str, float]) -> list[str]:
    """Messages for every mean that misses its gate (empty when all pass)."""
    failed = []
    for k, lim in under.items():
        if not means[k] >= lim:
            failed.append(f"mean {k} {means[k]:.4f} < {lim:g}")
    for k, lim in over.items():
        if not means[k] <= lim:
            failed.append(f"mean {k} {means[k]:.4f} > {lim:g}")
    return failed


__all__ = ["METRICS", "Pair", "Settings", "check_gates", "mean_scores", "pair_inputs",
           "parse_gates", "score_all", "score_rows", "_finite"]
