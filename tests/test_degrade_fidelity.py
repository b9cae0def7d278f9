"""Fidelity to Real-ESRGAN's training degradation (realesrgan_model.feed_data, the dataset's
kernel generation, train_realesrgan_x4plus.yml, BasicSR's DiffJPEG / noise / USMSharp)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from sr_cli.degrade.config import DegradeConfig, RealESRGANConfig, validate
from sr_cli.degrade.jpeg import _RGB2YCC, _YCC2RGB, C_TABLE, Y_TABLE, diffjpeg_tables, jpeg_torch
from sr_cli.degrade.noise import rgb_to_gray
from sr_cli.degrade.pipeline import apply_realesrgan, make_generator, sample_realesrgan
from sr_cli.degrade.sharpen import usm_sharp
from sr_cli.errors import UsageError


def test_diffjpeg_tables_are_continuous_and_luma_transposed() -> None:
    qy, qc = diffjpeg_tables(torch.tensor([50.0, 95.0, 30.0, 62.5]))
    ty = torch.tensor(Y_TABLE, dtype=torch.float64)
    # q = 50: factor 1, the luminance table transposed (DiffJPEG ships y_table.T)
    torch.testing.assert_close(qy[0], ty.t())
    assert float(qy[0, 0, 1]) == 12 and float(qy[0, 1, 0]) == 11
    torch.testing.assert_close(qc[0], torch.tensor(C_TABLE, dtype=torch.float64))
    # no flooring / clamping: q 95 -> factor 0.1 (libjpeg would give floor(1.6 + .5) = 2)
    assert float(qy[1, 0, 0]) == pytest.approx(1.6)
    assert float(qc[1, 0, 0]) == pytest.approx(1.7)
    assert float(qy[2, 0, 0]) == pytest.approx(16 * 5000 / 30 / 100)  # q < 50: 5000 / q
    assert float(qy[3, 0, 0]) == pytest.approx(16 * (200 - 125) / 100)


def _diffjpeg_plain(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """DiffJPEG(differentiable=False) written out plainly, block by block (float64)."""
    b, _, h, w = x.shape
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    qy, qc = diffjpeg_tables(q)
    ph, pw = (-h) % 16, (-w) % 16
    img = F.pad(x.clamp(0, 1) * 255, (0, pw, 0, ph), value=0.0)  # zero padding
    ycc = torch.einsum("ij,bjhw->bihw", torch.tensor(_RGB2YCC, dtype=x.dtype), img)
    c = F.avg_pool2d(ycc[:, 1:], 2) + 128  # float samples, no rounding

    def code(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        bb, hh, ww = p.shape
        blocks = (p - 128).view(bb, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4)
        coef = d @ blocks @ d.t()
        tt = t.view(bb, 1, 1, 8, 8)
        rec = d.t() @ (torch.round(coef / tt) * tt) @ d
        return rec.permute(0, 1, 3, 2, 4).reshape(bb, hh, ww) + 128  # no rounding, no clamp

    y = code(ycc[:, 0], qy)
    ch = torch.stack([code(c[:, 0], qc), code(c[:, 1], qc)], 1) - 128
    ch = ch.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # pixel repetition
    rgb = torch.einsum("ij,bjhw->bihw", torch.tensor(_YCC2RGB, dtype=x.dtype),
                       torch.cat([y[:, None], ch], 1))
    return (rgb.clamp(0, 255) / 255)[:, :, :h, :w]


def test_torch_jpeg_diffjpeg_model_equals_plain_transcription() -> None:
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(3, 3, 53, 70, dtype=torch.float64), 3, 1, 1)  # not x16
    q = torch.tensor([33.0, 62.5, 94.0], dtype=torch.float64)
    got, ref = jpeg_torch(x, q, model="diffjpeg"), _diffjpeg_plain(x, q)
    diff = (got - ref).abs() * 255
    assert float((diff > 1e-6).double().mean()) < 0.01  # only rare coefficient rounding ties
    assert float(diff.mean()) < 0.02
    # and it is a different model from the libjpeg one (zero padding, tables, no rounding)
    lib = jpeg_torch(x, q, model="libjpeg")
    assert float((lib - got).abs().mean()) * 255 > 0.3
    with pytest.raises(UsageError):
        jpeg_torch(x, q, model="cv2")


def test_gray_luma_weights_are_torchvision() -> None:
    x = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)
    assert rgb_to_gray(x).flatten().tolist() == pytest.approx([0.2989, 0.587, 0.114])


def test_defaults_are_train_realesrgan_x4plus() -> None:
    r = RealESRGANConfig()
    assert r.order == 2 and r.degrade_usm and r.jpeg_model == "diffjpeg"
    assert (r.usm.radius, r.usm.weight, r.usm.threshold) == (51, 0.5, 10.0)
    s1, s2, f = r.stage1, r.stage2, r.final
    assert s1.blur.sizes == s2.blur.sizes == f.sinc_sizes == tuple(range(7, 22, 2))
    assert s1.blur.kernel_probs == s2.blur.kernel_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert (s1.blur.prob, s2.blur.prob, s1.blur.sinc_prob, s2.blur.sinc_prob) == (1, 0.8, .1, .1)
    assert s1.blur.sigma == (0.2, 3.0) and s2.blur.sigma == (0.2, 1.5)
    assert s1.blur.beta_g == s2.blur.beta_g == (0.5, 4.0)
    assert s1.blur.beta_p == s2.blur.beta_p == (1.0, 2.0)
    assert s1.resize.probs == (0.2, 0.7, 0.1) and (s1.resize.down[0], s1.resize.up[1]) == (.15, 1.5)
    assert s2.resize.probs == (0.3, 0.4, 0.3) and (s2.resize.down[0], s2.resize.up[1]) == (.3, 1.2)
    assert s1.resize.modes == s2.resize.modes == f.modes == ("area", "bilinear", "bicubic")
    assert (s1.noise.gaussian_prob, s1.noise.gray_prob) == (0.5, 0.4) == (
        s2.noise.gaussian_prob, s2.noise.gray_prob)
    assert s1.noise.sigma == (1.0, 30.0) and s1.noise.poisson_scale == (0.05, 3.0)
    assert s2.noise.sigma == (1.0, 25.0) and s2.noise.poisson_scale == (0.05, 2.5)
    assert s1.jpeg.quality == f.jpeg.quality == (30.0, 95.0)
    assert f.sinc_prob == 0.8 and f.order_probs == (0.5, 0.5)
    assert f.sinc_cutoff == pytest.approx((math.pi / 3, math.pi))
    cfg = DegradeConfig(preset="realesrgan")
    cfg.realesrgan.jpeg_model = "nope"
    with pytest.raises(UsageError):
        validate(cfg)


def test_sampled_frequencies_follow_the_reference() -> None:
    cfg = RealESRGANConfig()
    gen = make_generator(123)
    n = 2000
    recs = [sample_realesrgan(cfg, gen) for _ in range(n)]
    cnt: Counter[str] = Counter()
    for r in recs:
        s1, s2, fin = r["stages"][0], r["stages"][1], r["final"]
        cnt["s1_" + s1["resize"]["updown"]] += 1
        cnt["s2_" + s2["resize"]["updown"]] += 1
        cnt["s2_blur"] += s2["blur"]["apply"]
        cnt["fin_sinc"] += fin["sinc"]["apply"]
        cnt["fin_first_resize"] += fin["order"] == "resize_sinc_jpeg"
        for st in (s1, s2):
            cnt["gauss"] += st["noise"]["type"] == "gaussian"
            cnt["gray"] += st["noise"]["gray"]
            b = st["blur"]
            if b["apply"]:
                cnt["blurs"] += 1
                cnt["sinc"] += b["type"] == "sinc"
                if b["type"] == "sinc":
                    lo = math.pi / 3 if b["size"] < 13 else math.pi / 5
                    assert lo <= b["cutoff"] <= math.pi
                if b["type"].startswith("generalized"):
                    cnt["beta"] += 1
                    cnt["beta_lt1"] += b["beta"] < 1
                    assert 0.5 <= b["beta"] <= 4
                elif b["type"].startswith("plateau"):
                    # beta_p = [1, 2]: the "U(lo, 1)" half is U(1, 1) = 1 in BasicSR too
                    cnt["pbeta"] += 1
                    cnt["pbeta_1"] += b["beta"] == 1.0
                    assert 1 <= b["beta"] <= 2
        # stage-1 resize: up in [1, 1.5], down in [0.15, 1]; stage 2: [1, 1.2] / [0.3, 1]
        f1, f2 = s1["resize"]["factor"], s2["resize"]["factor"]
        assert 0.15 <= f1 <= 1.5 and 0.3 <= f2 <= 1.2

    def near(key: str, p: float, total: int = n) -> None:
        sd = math.sqrt(p * (1 - p) / total)
        assert abs(cnt[key] / total - p) < 4.5 * sd, (key, cnt[key] / total, p)

    for k, p in (("s1_up", .2), ("s1_down", .7), ("s1_keep", .1), ("s2_up", .3),
                 ("s2_down", .4), ("s2_keep", .3), ("s2_blur", .8), ("fin_sinc", .8),
                 ("fin_first_resize", .5)):
        near(k, p)
    near("gauss", 0.5, 2 * n)
    near("gray", 0.4, 2 * n)
    near("sinc", 0.1, cnt["blurs"])
    near("beta_lt1", 0.5, cnt["beta"])  # BasicSR: U(lo, 1) w.p. 0.5 else U(1, hi)
    near("pbeta_1", 0.5, cnt["pbeta"])


def test_degradation_starts_from_the_usm_sharpened_gt() -> None:
    """feed_data: ``out = filter2D(self.gt_usm, self.kernel1)``; USM also gives the loss GT."""
    torch.manual_seed(3)
    hr = F.avg_pool2d(torch.rand(1, 3, 96, 96), 5, 1, 2)
    off = {"apply": False}
    keep = {"updown": "keep", "factor": 1.0, "mode": "area"}
    stage = {"blur": off, "resize": keep, "noise": off, "jpeg": off}
    rec = {"preset": "realesrgan", "stages": [stage, dict(stage)],
           "final": {"order": "resize_sinc_jpeg", "mode": "area", "sinc": off, "jpeg": off}}
    cfg = RealESRGANConfig()
    lr, hr_usm = apply_realesrgan(hr, [rec], 4, cfg)
    sharp = usm_sharp(hr, 0.5, 51, 10.0)
    torch.testing.assert_close(hr_usm, sharp)
    # stage-2 resize to int(96 / 4 * 1) then the final resize: both area
    want = F.interpolate(F.interpolate(sharp, size=(24, 24), mode="area"), size=(24, 24),
                         mode="area")
    torch.testing.assert_close(lr, torch.clamp(torch.round(want * 255), 0, 255) / 255)
    cfg.degrade_usm = False
    lr_plain, _ = apply_realesrgan(hr, [rec], 4, cfg)
    assert float((lr_plain - lr).abs().max()) > 0
