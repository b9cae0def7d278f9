"""Ma et al.'s no-reference SR quality metric (NRQM, CVIU 2017), as in their MATLAB release.

``quality_predict.m``: three feature groups of the Y image, one regression forest per group
(``randomforest-matlab``'s ``regRF_predict``), then ``[1 s1 s2 s3] * model.linear``.

Features (``feature_all.m``), on the 8-bit luma ``I``:

* spatial pyramid: ``im1 = I / 255``; ``im2``, ``im3`` = 3x3 Gaussian (sigma 0.5, zero
  padding) then every second pixel (``(2:2:end, 2:2:end)``);
* f1, local frequency (18): per pyramid level, 7x7 windows on a 3-pixel grid (``blkproc``
  with ``[3 3]`` blocks and a 2-pixel zero border), orthonormal 2-D DCT; per window the GGD
  shape of the AC coefficients (``gama_gen_gauss``), their coefficient of variation, and the
  variance of three oriented-band coefficients of variation; per level the mean of the lowest
  10 % and of all GGD shapes, the mean of the highest 10 % and of all variations, and the same
  for the orientation variance;
* f2, global frequency (45): real steerable pyramid (``buildSFpyr``, 2 scales, 6
  orientations) of ``I`` (0..255), divisive normalisation of each band by a Gaussian scale
  mixture over 3x3 neighbours, the parent and the other orientations
  (``norm_sender_normalized``); GGD shapes of the 12 normalised bands and of the 6
  cross-scale pairs, SSIM contrast-structure between every band (resized) and the high-pass
  residual (12), and between the 15 pairs of first-scale orientations;
* f3, spatial (75): singular values of the 5x5 ``im2col(..., 'distinct')`` patch matrix of
  each pyramid level.

The trained forests are not shipped: see :func:`load_ma_model`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sr_cli.errors import InputError
from sr_cli.metrics.ssim import gaussian_window, ssim_maps

MIN_SIZE = 64
NODE_TERMINAL = -1


# ----------------------------------------------------------------------------- forests


@dataclass(frozen=True)
class RegForest:
    """One ``randomforest-matlab`` regression forest; node arrays are ``(nrnodes, ntree)``.

    ``lDau``/``rDau``: 1-based child indices; ``nodestatus``: -1 for leaves; ``upper``: split
    thresholds (go left when ``x[mbest - 1] <= upper``); ``avnode``: leaf predictions;
    ``mbest``: 1-based split feature.
    """

    ldau: np.ndarray
    rdau: np.ndarray
    nodestatus: np.ndarray
    upper: np.ndarray
    avnode: np.ndarray
    mbest: np.ndarray
    ntree: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``regRF_predict``: ``(B, D)`` features -> ``(B,)`` mean of the trees' leaf values."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        need = int(self.mbest.max()) if self.mbest.size else 0
        if x.shape[1] < need:
            raise InputError(f"Ma model expects at least {need} features, got {x.shape[1]}")
        trees = np.arange(self.ntree)
        out = np.empty(x.shape[0])
        for i, row in enumerate(x):
            k = np.zeros(self.ntree, dtype=np.int64)
            for _ in range(self.ldau.shape[0] + 1):
                active = self.nodestatus[k, trees] != NODE_TERMINAL
                if not active.any():
                    break
                ka, ta = k[active], trees[active]
                go_left = row[self.mbest[ka, ta] - 1] <= self.upper[ka, ta]
                k[active] = np.where(go_left, self.ldau[ka, ta], self.rdau[ka, ta]) - 1
            out[i] = self.avnode[k, trees].mean()
        return out


@dataclass(frozen=True)
class MaModel:
    """``model.mat``: ``model.rf`` (3 forests: DCT, GSM, PCA features) and ``model.linear``
    (4 weights: bias and one per forest)."""

    forests: tuple[RegForest, RegForest, RegForest]
    linear: np.ndarray
    name: str


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj[name]
    if isinstance(obj, np.ndarray) and obj.dtype.names:
        return obj[name].squeeze()[()]
    return getattr(obj, name)


def _forest(obj: Any, label: str) -> RegForest:
    try:
        ntree = int(np.asarray(_field(obj, "ntree")).reshape(-1)[0])
        arrays = {}
        for key in ("lDau", "rDau", "nodestatus", "upper", "avnode", "mbest"):
            a = np.asarray(_field(obj, key))
            arrays[key] = a.reshape(-1, ntree, order="F") if a.ndim < 2 else a
    except (KeyError, AttributeError, ValueError, IndexError, TypeError) as exc:
        raise InputError(f"{label}: not a randomforest-matlab regression forest ({exc})") from None
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes))[1] != ntree:
        raise InputError(f"{label}: inconsistent forest arrays {sorted(shapes)}")
    return RegForest(
        ldau=arrays["lDau"].astype(np.int64), rdau=arrays["rDau"].astype(np.int64),
        nodestatus=arrays["nodestatus"].astype(np.int64),
        upper=arrays["upper"].astype(np.float64), avnode=arrays["avnode"].astype(np.float64),
        mbest=arrays["mbest"].astype(np.int64), ntree=ntree,
    )


def load_ma_model(path: str | os.PathLike[str]) -> MaModel:
    """Read Ma et al.'s ``model.mat`` (``model.rf`` = 3x1 cell of regRF structs,
    ``model.linear`` = 4x1). The file is the authors' (https://github.com/chaoma99/sr-metric);
    sr does not ship it. Raises InputError when missing or malformed."""
    from sr_cli.metrics.matfile import load_mat

    label = os.fspath(path)
    if not os.path.isfile(label):
        raise InputError(f"Ma model {label}: no such file")
    data = load_mat(label)
    if "model" not in data:
        raise InputError(f"Ma model {label}: no 'model' variable (expected Ma et al.'s model.mat)")
    model = data["model"]
    try:
        rf = np.asarray(_field(model, "rf"), dtype=object).reshape(-1)
        linear = np.asarray(_field(model, "linear"), dtype=np.float64).reshape(-1)
    except (KeyError, AttributeError, ValueError) as exc:
        raise InputError(f"Ma model {label}: missing model.rf / model.linear ({exc})") from None
    if rf.size != 3 or linear.size != 4:
        raise InputError(f"Ma model {label}: expected 3 forests and 4 linear weights, got "
                         f"{rf.size} and {linear.size}")
    forests = tuple(_forest(f, f"{label} rf{{{i + 1}}}") for i, f in enumerate(rf))
    return MaModel(forests=forests, linear=linear, name=label)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- helpers


@lru_cache(maxsize=1)
def _ggd_table() -> tuple[np.ndarray, np.ndarray]:
    g = 0.03 + 0.001 * np.arange(9971, dtype=np.float64)  # 0.03:0.001:10
    r = np.exp(np.array([math.lgamma(1 / v) + math.lgamma(3 / v) - 2 * math.lgamma(2 / v)
                         for v in g]))
    return g, r


def gama_gen_gauss(x: torch.Tensor) -> torch.Tensor:
    """``gama_gen_gauss.m`` on the last axis: GGD shape by moment matching.

    ``rho = var(x) / (mean|x - mean x|^2 + 1e-7)`` (unbiased var); the shape is ``g(j)`` with
    ``r(j) >= rho > r(j + 1)`` on ``g = 0.03:0.001:10``, ``r = G(1/g)G(3/g)/G(2/g)^2``
    (decreasing); 11 when rho is outside the table.
    """
    g, r = _ggd_table()
    var = x.var(dim=-1, unbiased=True)
    mean_abs = (x - x.mean(dim=-1, keepdim=True)).abs().mean(dim=-1) ** 2
    rho = (var / (mean_abs + 1e-7)).cpu().numpy()
    # count of r >= rho (r decreasing) -> j = count - 1
    cnt = np.searchsorted(-r, -rho, side="right")
    j = cnt - 1
    ok = (cnt >= 1) & (cnt <= len(r) - 1)
    out = np.where(ok, g[np.clip(j, 0, len(g) - 1)], 11.0)
    return torch.from_numpy(out).to(x.device)


def _cv(x: torch.Tensor, eps: float) -> torch.Tensor:
    a = x.abs()
    return a.std(dim=-1, unbiased=True) / (a.mean(dim=-1) + eps)


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def _orient_index() -> tuple[list[tuple[int, int]], ...]:
    o1 = [(0, c) for c in range(1, 7)] + [(1, c) for c in range(2, 7)] + \
         [(2, c) for c in range(4, 7)] + [(3, c) for c in range(5, 7)]
    o2 = [(1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4)] + [(4, c) for c in range(3, 7)] + \
         [(5, c) for c in range(4, 7)] + [(6, c) for c in range(4, 7)]
    o3 = [(r, 0) for r in range(1, 7)] + [(r, 1) for r in range(2, 7)] + \
         [(r, 2) for r in range(4, 7)] + [(r, 3) for r in range(5, 7)]
    return o1, o2, o3


def block_dct_features(im: torch.Tensor) -> torch.Tensor:
    """Six local-frequency statistics of a ``(H, W)`` float64 image (see module docstring)."""
    h, w = im.shape
    nh, nw = -(-h // 3), -(-w // 3)
    pad = F.pad(im[None, None], (2, 2 + nw * 3 - w, 2, 2 + nh * 3 - h))
    win = pad.unfold(2, 7, 3).unfold(3, 7, 3).reshape(-1, 7, 7)  # (N, 7, 7)
    c = _dct_matrix(7).to(im.device)
    d = c @ win @ c.T
    ac = d.transpose(1, 2).reshape(d.shape[0], -1)[:, 1:]  # column-major (:) without DC
    gam = gama_gen_gauss(ac)
    cv = _cv(ac, 1e-7)
    ad = d.abs()
    gs = []
    for idx in _orient_index():
        rr = torch.tensor([p[0] for p in idx], device=im.device)
        cc = torch.tensor([p[1] for p in idx], device=im.device)
        sel = ad[:, rr, cc]
        gs.append(sel.std(dim=-1, unbiased=True) / (sel.mean(dim=-1) + 1e-8))
    ori = torch.stack(gs, dim=-1).var(dim=-1, unbiased=True)

    def low10(v: torch.Tensor) -> torch.Tensor:
        s = torch.sort(v).values
        return s[: math.ceil(s.numel() / 10)].mean()

    def high10(v: torch.Tensor) -> torch.Tensor:
        s = torch.sort(v, descending=True).values
        return s[: math.ceil(s.numel() / 10)].mean()

    return torch.stack([low10(gam), gam.mean(), high10(cv), cv.mean(), high10(ori), ori.mean()])


def _im2col_svd(im: torch.Tensor) -> torch.Tensor:
    h, w = im.shape
    ph, pw = -(-h // 5) * 5, -(-w // 5) * 5
    p = F.pad(im, (0, pw - w, 0, ph - h))
    cols = p.unfold(0, 5, 5).unfold(1, 5, 5).reshape(-1, 25).T  # (25, N)
    if cols.shape[1] < 25:
        raise InputError("image too small for Ma's spatial features (needs >= 25 5x5 patches "
                         "at 1/4 size)")
    return torch.linalg.svdvals(cols)


# ----------------------------------------------------------------------------- steerable pyramid


def _rcos(width: float = 1.0, position: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """matlabPyrTools ``rcosFn(width, position, [0 1])``."""
    sz = 256
    x = np.pi * np.arange(-sz - 1, 2) / (2 * sz)
    y = np.cos(x) ** 2
    y[0] = y[1]
    y[-1] = y[-2]
    return position + (2 * width / np.pi) * (x + np.pi / 4), y


def _point_op(im: np.ndarray, lut: np.ndarray, origin: float, inc: float) -> np.ndarray:
    """matlabPyrTools ``pointOp`` (MEX): linear interpolation, linear extrapolation at ends."""
    pos = (im - origin) / inc
    idx = np.clip(np.floor(pos).astype(np.int64), 0, len(lut) - 2)
    frac = pos - idx
    return lut[idx] + (lut[idx + 1] - lut[idx]) * frac


def build_sf_pyr(im: np.ndarray, ht: int = 2, order: int = 5) -> list[np.ndarray]:
    """matlabPyrTools ``buildSFpyr``: ``[hi0, (scale 1: order+1 bands), ..., lowpass]``."""
    nb = order + 1
    dims = np.array(im.shape)
    ctr = np.ceil((dims + 0.5) / 2).astype(int)  # 1-based
    xr = (np.arange(1, dims[1] + 1) - ctr[1]) / (dims[1] / 2)
    yr = (np.arange(1, dims[0] + 1) - ctr[0]) / (dims[0] / 2)
    xramp, yramp = np.meshgrid(xr, yr)
    angle = np.arctan2(yramp, xramp)
    log_rad = np.sqrt(xramp**2 + yramp**2)
    log_rad[ctr[0] - 1, ctr[1] - 1] = log_rad[ctr[0] - 1, ctr[1] - 2]
    log_rad = np.log2(log_rad)
    xrc, yrc = _rcos(1.0, -0.5)
    yrc = np.sqrt(yrc)
    yirc = np.sqrt(1.0 - yrc**2)
    lo0mask = _point_op(log_rad, yirc, xrc[0], xrc[1] - xrc[0])
    imdft = np.fft.fftshift(np.fft.fft2(im))
    lodft = imdft * lo0mask
    hi0mask = _point_op(log_rad, yrc, xrc[0], xrc[1] - xrc[0])
    hi0 = np.real(np.fft.ifft2(np.fft.ifftshift(imdft * hi0mask)))
    bands: list[np.ndarray] = [hi0]
    lutsize = 1024
    xcosn = np.pi * np.arange(-(2 * lutsize + 1), lutsize + 2) / lutsize
    const = (2 ** (2 * order)) * (math.factorial(order) ** 2) / (nb * math.factorial(2 * order))
    ycosn = np.sqrt(const) * np.cos(xcosn) ** order
    for _ in range(ht):
        xrc = xrc - 1.0
        himask = _point_op(log_rad, yrc, xrc[0], xrc[1] - xrc[0])
        for b in range(nb):
            anglemask = _point_op(angle, ycosn, xcosn[0] + np.pi * b / nb, xcosn[1] - xcosn[0])
            banddft = ((-1j) ** order) * lodft * anglemask * himask
            bands.append(np.real(np.fft.ifft2(np.fft.ifftshift(banddft))))
        d = np.array(lodft.shape)
        c = np.ceil((d + 0.5) / 2).astype(int)
        lod = np.ceil((d - 0.5) / 2).astype(int)
        loc = np.ceil((lod + 0.5) / 2).astype(int)
        s = c - loc  # 0-based start
        sl = (slice(s[0], s[0] + lod[0]), slice(s[1], s[1] + lod[1]))
        log_rad, angle, lodft = log_rad[sl], angle[sl], lodft[sl]
        lomask = _point_op(log_rad, np.abs(np.sqrt(1.0 - yrc**2)), xrc[0], xrc[1] - xrc[0])
        lodft = lomask * lodft
    bands.append(np.real(np.fft.ifft2(np.fft.ifftshift(lodft))))
    return bands


def _imresize(x: np.ndarray, size: tuple[int, int] | None = None,
              scale: float | None = None) -> np.ndarray:
    from sr_cli.degrade.resize import imresize

    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    return imresize(t, scale=scale, size=size)[0, 0].numpy()


def norm_sender_normalized(bands: list[np.ndarray], nsc: int = 2, nor: int = 6,
                           guardband: int = 16) -> list[np.ndarray]:
    """DIIVINE's ``norm_sender_normalized(pyr, pind, 2, 6, 1, 1, 3, 3, 50)`` -> 2-D bands."""
    nband_total = len(bands) - 1  # MATLAB Nband = size(pind, 1) - 1
    out = []
    for scale in range(1, nsc + 1):
        for orien in range(1, nor + 1):
            nband = (scale - 1) * nor + orien + 1  # 1-based index into bands
            aux = bands[nband - 1]
            nsy, nsx = aux.shape
            prnt = nband < nband_total - nor
            nblv, nblh = nsy - 2, nsx - 2
            cols = []
            for ny in (-1, 0, 1):
                for nx in (-1, 0, 1):
                    foo = np.roll(aux, (ny, nx), axis=(0, 1))
                    cols.append(foo[1:1 + nblv, 1:1 + nblh].reshape(-1))
            n = 9
            if prnt:
                auxp = _imresize(bands[nband + nor - 1], scale=2.0)[:nsy, :nsx]
                cols.append(auxp[1:1 + nblv, 1:1 + nblh].reshape(-1))
                n += 1
            for neib in range(1, nor + 1):
                if neib != orien:
                    nb1 = bands[(scale - 1) * nor + neib]
                    cols.append(nb1[1:1 + nblv, 1:1 + nblh].reshape(-1))
            y = np.stack(cols, axis=1)
            cx = y.T @ y / y.shape[0]
            lam, q = np.linalg.eigh(cx)
            pos = lam * (lam > 0)
            ssum = pos.sum()
            lam = pos * lam.sum() / (ssum + (ssum == 0))
            cx = q @ np.diag(lam) @ q.T
            oc = aux[1:1 + nblv, 1:1 + nblh].reshape(-1)
            oc = oc - oc.mean()
            z = np.sqrt(np.sum((y @ np.linalg.pinv(cx)) * y, axis=1) / n)
            gc = np.zeros_like(oc)
            nz = z != 0
            gc[nz] = oc[nz] / z[nz]
            gc = gc.reshape(nblv, nblh)
            gb = guardband // (2 ** (scale - 1))
            gc = gc[gb:-gb, gb:-gb]
            out.append(gc - gc.mean())
    return out


def _cs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean contrast-structure term of SSIM (``ssim_index_new``'s third output), L = 255."""
    ta = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    tb = torch.from_numpy(np.ascontiguousarray(b))[None, None]
    _, cs = ssim_maps(ta, tb, data_range=255.0)
    return float(cs.mean())


def global_gsm_features(img: np.ndarray) -> np.ndarray:
    """45 global-frequency features of a ``(H, W)`` float64 image on the 0..255 scale."""
    bands = build_sf_pyr(img, 2, 5)
    sub = norm_sender_normalized(bands)
    t = [torch.from_numpy(s.reshape(-1)) for s in sub]
    f = [float(gama_gen_gauss(v)) for v in t]
    f += [float(gama_gen_gauss(torch.cat([t[i], t[i + 6]]))) for i in range(6)]
    hp = bands[0]
    for i in range(12):
        f.append(_cs(_imresize(bands[i + 1], size=hp.shape), hp))
    for i in range(6):
        for j in range(i + 1, 6):
            f.append(_cs(sub[i], sub[j]))
    return np.array(f)


def _blur_down(im: torch.Tensor) -> torch.Tensor:
    g = gaussian_window(3, 0.5).to(im)
    f = F.conv2d(F.pad(im[None, None], (1, 1, 1, 1)), g[None, None])[0, 0]
    return f[1::2, 1::2]


def ma_features(y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``feature_all``: ``(H, W)`` luma (0..255) -> (f1 (18,), f2 (45,), f3 (75,))."""
    h, w = y.shape
    if h < MIN_SIZE or w < MIN_SIZE:
        raise InputError(f"Ma's metric needs at least {MIN_SIZE}x{MIN_SIZE} pixels, got {w}x{h}")
    y = y.to(torch.float64).cpu()
    im1 = y / 255.0
    im2 = _blur_down(im1)
    im3 = _blur_down(im2)
    levels = (im1, im2, im3)
    f1 = torch.cat([block_dct_features(im) for im in levels]).numpy()
    f3 = torch.cat([_im2col_svd(im) for im in levels]).numpy()
    f2 = global_gsm_features(y.numpy())
    return f1, f2, f3


def ma_score(img: torch.Tensor, model: MaModel) -> torch.Tensor:
    """Ma et al.'s score of ``(B, 1, H, W)`` luma images (0..255); ``(B,)`` float64, higher is
    better (about 0..10).

    ``[1, rf1(f1), rf2(f2), rf3(f3)] @ model.linear``.
    Example: ``ma_score(y, load_ma_model("model.mat"))``.
    """
    if img.ndim != 4 or img.shape[1] != 1:
        raise InputError(f"Ma expects (B, 1, H, W) luma images, got {tuple(img.shape)}")
    if not torch.isfinite(img).all():
        raise InputError("image contains NaN or infinite values")
    scores = []
    for b in range(img.shape[0]):
        feats = ma_features(img[b, 0])
        s = [1.0] + [float(f.predict(x[None])[0]) for f, x in zip(model.forests, feats,
                                                                   strict=True)]
        scores.append(float(np.dot(s, model.linear)))
    return torch.tensor(scores, dtype=torch.float64)
