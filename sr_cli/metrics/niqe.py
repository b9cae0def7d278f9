"""NIQE (Mittal, Soundararajan & Bovik 2013), reproducing the authors' MATLAB release.

Pipeline (``computequality.m``): crop the gray/Y image (0..255, float64) to a multiple of the
96x96 block; at two scales (the second after MATLAB ``imresize(im, 0.5)``) compute MSCN
coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6, replicate
padding); per block (96x96, then 48x48) fit a GGD to the coefficients and an AGGD to the four
neighbour products (horizontal, vertical, two diagonals, circularly shifted within the block),
by moment matching over ``gamma = 0.2:0.001:10`` (``estimateaggdparam``); 18 features per
scale, 36 per block. The quality is the Mahalanobis-like distance between the pristine MVG
``(mu_p, S_p)`` and the image's ``(mu_d, S_d)``:
``sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)^T)``.

:func:`fit_niqe_params` is ``estimatemodelparam.m``: the same features on each natural image
(``rgb2gray``), keeping blocks whose mean local sigma exceeds 0.75 of the image's sharpest
block, then the mean and covariance of all kept feature vectors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import InputError
from sr_cli.metrics.ssim import filter_valid

BLOCK = 96
NUM_FEATURES = 36
SHARPNESS_THRESHOLD = 0.75
#: ``|I - mu|`` at or below this (0..255 scale) is taken as exactly 0. In flat regions (sky,
#: saturated highlights) ``I - mu`` is 0 in exact arithmetic but +-1e-12 in floating point,
#: with a sign that depends on the convolution's summation order (MATLAB's imfilter, scipy's
#: convolve and ours differ); the sign decides whether the pixel counts on the left or the
#: right side of the AGGD fit, which moved whole-image NIQE by up to 0.01. Real 8-bit
#: structure gives |I - mu| > 1e-4; roundoff stays below 1e-11.
FLAT_TOLERANCE = 1e-8


@dataclass(frozen=True)
class NiqeParams:
    """A pristine NIQE model: ``mu`` (36,) and ``cov`` (36, 36) float64, plus its name."""

    mu: np.ndarray
    cov: np.ndarray
    name: str


@lru_cache(maxsize=4)
def _gamma_tables(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MATLAB's ``gam = 0.2:0.001:10``, the GGD ratio ``G(1/g)G(3/g)/G(2/g)^2`` and the AGGD
    ratio (its inverse) on it, float64."""
    gam = 0.2 + 0.001 * np.arange(9801, dtype=np.float64)
    lg1 = np.array([math.lgamma(1.0 / g) for g in gam])
    lg2 = np.array([math.lgamma(2.0 / g) for g in gam])
    lg3 = np.array([math.lgamma(3.0 / g) for g in gam])
    r_ggd = np.exp(lg1 + lg3 - 2.0 * lg2)
    r_aggd = np.exp(2.0 * lg2 - lg1 - lg3)
    dev = torch.device(device)
    return (torch.from_numpy(gam).to(dev), torch.from_numpy(r_ggd).to(dev),
            torch.from_numpy(r_aggd).to(dev))


@lru_cache(maxsize=1)
def _mscn_taps() -> tuple[float, ...]:
    """1-D taps of MATLAB ``fspecial('gaussian', 7, 7/6)`` (the 2-D window is their outer
    product, already normalised to sum 1)."""
    r = np.arange(7, dtype=np.float64) - 3.0
    g = np.exp(-(r**2) / (2.0 * (7.0 / 6.0) ** 2))
    return tuple(float(v) for v in g / g.sum())


def _gauss7(x: torch.Tensor) -> torch.Tensor:
    """``imfilter(x, fspecial('gaussian', 7, 7/6), 'replicate')`` on ``(B, C, H, W)``
    (separable; see :func:`sr_cli.metrics.ssim.filter_valid`)."""
    taps = torch.tensor(_mscn_taps(), dtype=x.dtype, device=x.device)
    return filter_valid(F.pad(x, (3, 3, 3, 3), mode="replicate"), taps)


def mscn(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSCN coefficients and local sigma of ``(B, 1, H, W)`` float64 images (0..255).

    ``mu = imfilter(I, w, 'replicate')``, ``sigma = sqrt(|imfilter(I^2, w) - mu^2|)``,
    ``mscn = (I - mu) / (sigma + 1)``; ``w`` is the normalised 7x7 Gaussian of sigma 7/6.
    ``I - mu`` within :data:`FLAT_TOLERANCE` of 0 is exactly 0 (flat regions; see there), so
    the result does not depend on the summation order of the filter.
    """
    both = _gauss7(torch.cat([img, img * img], dim=1))
    mu = both[:, :1]
    sigma = torch.sqrt(torch.abs(both[:, 1:] - mu * mu))
    centred = img - mu
    centred = torch.where(centred.abs() <= FLAT_TOLERANCE, 0.0, centred)
    return centred / (sigma + 1.0), sigma


def _blocks(x: torch.Tensor, bs: int) -> torch.Tensor:
    """``(B, 1, H, W)`` with H, W multiples of ``bs`` -> ``(B, nh*nw, bs, bs)`` blocks."""
    b, _, h, w = x.shape
    nh, nw = h // bs, w // bs
    return x.reshape(b, nh, bs, nw, bs).permute(0, 1, 3, 2, 4).reshape(b, nh * nw, bs, bs)


def _nearest(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index of the entry of increasing ``table`` nearest to each ``x`` (first one on a tie),
    i.e. MATLAB's ``[~, i] = min((table - x).^2)``, by binary search."""
    xs = torch.nan_to_num(x, nan=0.0)
    hi = torch.searchsorted(table, xs).clamp(1, table.numel() - 1)
    lo = hi - 1
    pick_hi = (table[hi] - xs) ** 2 < (table[lo] - xs) ** 2
    return torch.where(pick_hi, hi, lo)


def _aggd(v: torch.Tensor, gam: torch.Tensor, r_aggd: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``estimateaggdparam``: (..., L) samples -> (alpha, beta_left, beta_right).

    ``gammahat = s_l / s_r``, ``rhat = E|x|^2 / E x^2``,
    ``rnorm = rhat (gammahat^3 + 1)(gammahat + 1) / (gammahat^2 + 1)^2``; alpha minimises
    ``(r(alpha) - rnorm)^2`` on the grid, ``beta = s sqrt(G(1/alpha) / G(3/alpha))``.
    """
    neg = v < 0
    sq = v * v
    sq_neg = torch.where(neg, sq, 0.0).sum(-1)
    sq_all = sq.sum(-1)
    n_neg = neg.sum(-1)
    n_pos = (v > 0).sum(-1)
    left = torch.sqrt(sq_neg / n_neg)
    right = torch.sqrt((sq_all - sq_neg) / n_pos)
    ghat = left / right
    rhat = v.abs().mean(-1) ** 2 / (sq_all / v.shape[-1])
    rnorm = rhat * (ghat**3 + 1) * (ghat + 1) / (ghat**2 + 1) ** 2
    alpha = gam[_nearest(r_aggd, rnorm)]
    alpha = torch.where(torch.isnan(rnorm), torch.full_like(alpha, float("nan")), alpha)
    const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * const, right * const


def _block_features(structdis: torch.Tensor, bs: int) -> torch.Tensor:
    """``computefeature`` on every block: ``(B, 1, H, W)`` MSCN -> ``(B, N, 18)``.

    Per block: AGGD of the coefficients -> ``[alpha, (beta_l + beta_r) / 2]``; for each of the
    four neighbour products -> ``[alpha, (beta_r - beta_l) G(2/alpha) / G(1/alpha), beta_l,
    beta_r]``.
    """
    gam, _, r_aggd = _gamma_tables(str(structdis.device))
    blk = _blocks(structdis, bs)
    b, n = blk.shape[:2]
    flat = blk.reshape(b, n, -1)
    alpha, bl, br = _aggd(flat, gam, r_aggd)
    feats = [alpha, (bl + br) / 2]
    # circshift(structdis, [dy dx]) inside each block: out(i, j) = in(i - dy, j - dx).
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = torch.roll(blk, shifts=(dy, dx), dims=(2, 3)).reshape(b, n, -1)
        a, bl, br = _aggd(flat * shifted, gam, r_aggd)
        meanparam = (br - bl) * torch.exp(torch.lgamma(2 / a) - torch.lgamma(1 / a))
        feats += [a, meanparam, bl, br]
    return torch.stack(feats, dim=-1)


def crop_to_blocks(img: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Crop ``(B, 1, H, W)`` to ``floor(H/96)*96 x floor(W/96)*96``; InputError if too small."""
    h, w = img.shape[-2:]
    if h < block or w < block:
        raise InputError(
            f"NIQE needs at least {block}x{block} pixels (one block), got {w}x{h}"
        )
    return img[..., : (h // block) * block, : (w // block) * block]


def niqe_features(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NIQE features of ``(B, 1, H, W)`` float64 gray/Y images on the 0..255 scale.

    Returns ``(features, sharpness)``: ``(B, N, 36)`` (18 per scale; N = number of 96x96 blocks
    after cropping to a multiple of 96) and ``(B, N)`` mean local sigma per block (scale 1).
    """
    from sr_cli.degrade.resize import imresize

    if img.ndim != 4 or img.shape[1] != 1:
        raise InputError(f"NIQE expects (B, 1, H, W) gray images, got {tuple(img.shape)}")
    im = crop_to_blocks(img.to(torch.float64))
    if not torch.isfinite(im).all():
        raise InputError("image contains NaN or infinite values")
    feats = []
    sharp = None
    for scale in (1, 2):
        structdis, sigma = mscn(im)
        feats.append(_block_features(structdis, BLOCK // scale))
        if scale == 1:
            sharp = _blocks(sigma, BLOCK).mean(dim=(2, 3))
            im = imresize(im, 0.5)
    assert sharp is not None
    return torch.cat(feats, dim=-1), sharp


def _nan_cov(x: torch.Tensor) -> torch.Tensor:
    """``nancov``: covariance (ddof 1) of the rows without NaN; zeros for a single row."""
    keep = ~torch.isnan(x).any(dim=1)
    x = x[keep]
    if x.shape[0] < 2:
        return torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
    return torch.cov(x.T)


def niqe_distance(features: torch.Tensor, params: NiqeParams) -> torch.Tensor:
    """MVG distance of one image's ``(N, 36)`` block features to the pristine model (scalar)."""
    mu_p = torch.as_tensor(params.mu, dtype=torch.float64, device=features.device).reshape(-1)
    cov_p = torch.as_tensor(params.cov, dtype=torch.float64, device=features.device)
    mu_d = torch.nanmean(features, dim=0)
    cov_d = _nan_cov(features)
    inv = torch.linalg.pinv((cov_p + cov_d) / 2.0)
    d = (mu_p - mu_d).unsqueeze(0)
    return torch.sqrt((d @ inv @ d.T).squeeze())


def niqe(img: torch.Tensor, params: NiqeParams) -> torch.Tensor:
    """NIQE of ``(B, 1, H, W)`` float64 gray/Y images (0..255; same size within a batch).

    Returns ``(B,)`` float64, lower is better. With the MATLAB release's parameters and the Y
    channel of MATLAB ``rgb2ycbcr`` this reproduces ``computequality.m`` (e.g. Set14 baboon
    5.7296).
    Example: ``niqe(y, load_niqe_params(path))`` with ``y`` a ``(1, 1, 256, 256)`` float64 tensor.
    """
    feats, _ = niqe_features(img)
    return torch.stack([niqe_distance(f, params) for f in feats])


# --------------------------------------------------------------------------- parameters


#: Named pristine models shipped in ``sr_cli/data`` (see its NOTICE and docs/score.md).
NAMED_PARAMS = {
    "matlab": ("niqe_pris_params.npz",
               "matlab (NIQE release modelparameters.mat, Mittal et al. 2013)"),
    "sr": ("niqe_sr_params.npz", "sr (fitted by sr score fit-niqe on BSDS500 + T91)"),
}
DEFAULT_PARAMS = "matlab"


def default_params_path(name: str = DEFAULT_PARAMS) -> Path:
    """The file of a named pristine model shipped in the package (``matlab`` or ``sr``)."""
    return Path(__file__).resolve().parents[1] / "data" / NAMED_PARAMS[name][0]


def load_niqe_params(path: str | os.PathLike[str] | None = None) -> NiqeParams:
    """Read NIQE parameters: a shipped set by name (``matlab``, the default and the
    literature's: the MATLAB release's ``modelparameters.mat``; ``sr``: the project's fit), an
    ``.npz`` with ``mu_pris_param``/``cov_pris_param`` (or ``mu``/``cov``) or a MATLAB ``.mat``
    (``mu_prisparam``/``cov_prisparam``). ``None`` loads ``matlab``.

    Raises InputError for unreadable files or wrong shapes.
    """
    key = DEFAULT_PARAMS if path is None else str(path)
    named = key in NAMED_PARAMS
    p = default_params_path(key) if named else Path(path)  # type: ignore[arg-type]
    label = str(p)
    if not p.is_file():
        raise InputError(f"NIQE parameter file {label}: no such file")
    mu: np.ndarray | None = None
    cov: np.ndarray | None = None
    name = NAMED_PARAMS[key][1] if named else str(p)
    if p.suffix.lower() == ".mat":
        from sr_cli.metrics.matfile import load_mat

        data = load_mat(p)
        mu = data.get("mu_prisparam", data.get("mu_pris_param"))
        cov = data.get("cov_prisparam", data.get("cov_pris_param"))
    else:
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = set(z.files)
                mk = "mu_pris_param" if "mu_pris_param" in keys else "mu"
                ck = "cov_pris_param" if "cov_pris_param" in keys else "cov"
                if mk in keys and ck in keys:
                    mu, cov = np.asarray(z[mk]), np.asarray(z[ck])
                if "name" in keys and key == "sr":
                    name = f"sr: {z['name']}"
        except (OSError, ValueError) as exc:
            raise InputError(f"NIQE parameter file {label}: not a readable .npz ({exc})") from None
    if mu is None or cov is None:
        raise InputError(
            f"NIQE parameter file {label}: needs mu_pris_param (1x36) and cov_pris_param (36x36)"
        )
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.shape != (NUM_FEATURES,) or cov.shape != (NUM_FEATURES, NUM_FEATURES):
        raise InputError(
            f"NIQE parameter file {label}: expected 36 means and a 36x36 covariance, "
            f"got {mu.shape} and {cov.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise InputError(f"NIQE parameter file {label}: contains NaN or infinite values")
    return NiqeParams(mu=mu, cov=cov, name=name)


def fit_niqe_params(
    images: Iterable[tuple[str, torch.Tensor]],
    *,
    threshold: float = SHARPNESS_THRESHOLD,
    callback: Callable[[int, int], None] | None = None,
    total: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """``estimatemodelparam.m``: fit the pristine MVG from natural images.

    Args:
        images: ``(name, (1, 1, H, W) float64 gray 0..255)`` pairs (MATLAB uses ``rgb2gray``).
            Images smaller than 96x96 are skipped (counted in the returned stats).
        threshold: keep blocks whose sharpness (mean local sigma) exceeds
            ``threshold * max(sharpness)`` of their image (0.75 in the paper).

    Returns ``(mu (36,), cov (36, 36), stats)`` with stats counting images used/skipped and
    patches kept. Blocks with a NaN feature (flat patches) are dropped.
    """
    kept: list[torch.Tensor] = []
    stats = {"images": 0, "skipped_small": 0, "patches": 0, "dropped_nan": 0}
    for done, (_name, img) in enumerate(images, start=1):
        if img.shape[-1] < BLOCK or img.shape[-2] < BLOCK:
            stats["skipped_small"] += 1
        else:
            feats, sharp = niqe_features(img)
            f, s = feats[0], sharp[0]
            sel = f[s > threshold * s.max()]
            bad = torch.isnan(sel).any(dim=1)
            stats["dropped_nan"] += int(bad.sum())
            kept.append(sel[~bad])
            stats["images"] += 1
        if callback is not None:
            callback(done, total)
    if not kept:
        raise InputError("no usable images (NIQE fitting needs images of at least 96x96)")
    allf = torch.cat(kept)
    if allf.shape[0] < 2:
        raise InputError(f"only {allf.shape[0]} sharp patch found; need at least 2 to fit")
    stats["patches"] = int(allf.shape[0])
    mu = allf.mean(dim=0).cpu().numpy()
    cov = torch.cov(allf.T).cpu().numpy()
    return mu, cov, stats
