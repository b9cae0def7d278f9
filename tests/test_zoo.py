"""The zoo: safe weight reading, the three RRDBNet key schemes, wrappers, names and defaults."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re

import pytest
import torch

from sr_cli import zoo
from sr_cli.archs import build, get_arch
from sr_cli.errors import ModelError

TINY_RRDB = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}


pytestmark = pytest.mark.usefixtures("isolated_zoo")


def _randomized(name: str, **hp):
    net, desc = build(name, **hp)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.2)
    return net.eval(), desc


def _to_original_esrgan(sd: dict) -> dict:
    ren = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
           "conv_hr": "HRconv"}
    out = {}
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)$", k)
        if m:
            k = f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{m[4]}"
        else:
            head, tail = k.split(".", 1)
            k = f"{ren.get(head, head)}.{tail}"
        out[k] = v
    return out


def _to_old_esrgan(sd: dict, num_block: int) -> dict:
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}",
           "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
           "conv_last": "model.10"}
    out = {}
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)$", k)
        if m:
            k = f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"
        else:
            head, tail = k.split(".", 1)
            k = f"{top[head]}.{tail}"
        out[k] = v
    return out


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, c: int = 3, h: int = 8, w: int = 12):
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("scheme", ["basicsr", "original", "old"])
@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", None])
def test_rrdbnet_key_schemes_load_from_pth(scheme, wrapper, tmp_path):
    net, desc = _randomized("rrdbnet", **TINY_RRDB)
    sd = net.state_dict()
    if scheme == "original":
        sd = _to_original_esrgan(sd)
        assert "RRDB_trunk.1.RDB3.conv5.weight" in sd and "HRconv.bias" in sd
    elif scheme == "old":
        sd = _to_old_esrgan(sd, TINY_RRDB["num_block"])
        assert "model.1.sub.0.RDB1.conv1.0.weight" in sd and "model.1.sub.2.weight" in sd
    if wrapper == "state_dict":
        sd = {f"module.{k}": v for k, v in sd.items()}  # DataParallel prefix
    obj = {wrapper: sd} if wrapper else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = zoo.load_model(str(path))
    assert loaded.desc == desc
    assert loaded.name == "ckpt" and loaded.source == path
    assert _same_outputs(loaded.net, net)


@pytest.mark.parametrize("scale", [1, 2])
def test_original_scheme_pixel_unshuffle_scales(scale, tmp_path):
    net, _ = _randomized("rrdbnet", scale=scale, **TINY_RRDB)
    path = tmp_path / "x.pth"
    torch.save({"params_ema": _to_original_esrgan(net.state_dict())}, path)
    loaded = zoo.load_model(str(path))
    assert loaded.desc.scale == scale and loaded.desc.size_multiple == {2: 2, 1: 4}[scale]
    assert _same_outputs(loaded.net, net)


def test_params_ema_is_preferred(tmp_path):
    ema, _ = _randomized("srvgg", num_feat=8, num_conv=2, upscale=2)
    other = build("srvgg", num_feat=8, num_conv=2, upscale=2)[0].eval()
    path = tmp_path / "both.pth"
    torch.save({"params": other.state_dict(), "params_ema": ema.state_dict(), "iter": 5}, path)
    loaded = zoo.load_model(str(path))
    assert _same_outputs(loaded.net, ema) and not _same_outputs(loaded.net, other)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

    marker = ""


class _Custom:
    def __init__(self):
        self.weights = torch.zeros(3)


@pytest.mark.parametrize("kind", ["reduce_zip", "reduce_legacy", "custom_class"])
def test_unsafe_pickle_is_refused_and_never_executed(kind, tmp_path):
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pth"
    if kind == "reduce_zip":
        torch.save({"params": _Evil()}, path)
    elif kind == "reduce_legacy":
        with open(path, "wb") as fh:
            pickle.dump({"params": _Evil()}, fh, protocol=2)
    else:
        torch.save({"state_dict": _Custom()}, path)
    with pytest.raises(ModelError, match=r"refused: unsafe pickle .*nothing .* was executed"):
        zoo.read_weights(path)
    with pytest.raises(ModelError, match="refused"):
        zoo.load_model(str(path))
    assert not marker.exists()


def test_corrupt_and_truncated_safetensors(tmp_path):
    net, desc = _randomized("srvgg", num_feat=8, num_conv=2, upscale=2)
    good = tmp_path / "good.safetensors"
    zoo.save_model(good, net, desc)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file" * 10)
    for p in (trunc, garbage):
        with pytest.raises(ModelError, match="corrupt or truncated safetensors") as ei:
            zoo.load_model(str(p))
        assert "\n" not in str(ei.value)


def test_unrecognised_and_mismatched_weights(tmp_path):
    weird = tmp_path / "weird.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, weird)
    with pytest.raises(ModelError, match="no known architecture"):
        zoo.load_model(str(weird))
    # metadata says num_feat=16 but the tensors were made with 8
    net, desc = _randomized("srvgg", num_feat=8, num_conv=2, upscale=2)
    bad = tmp_path / "bad.safetensors"
    wrong = get_arch("srvgg").describe(get_arch("srvgg").hparams(num_feat=16, num_conv=2,
                                                                 upscale=2))
    zoo.save_model(bad, net, wrong)
    with pytest.raises(ModelError, match="do not fit srvgg") as ei:
        zoo.load_model(str(bad))
    assert "\n" not in str(ei.value)
    empty = tmp_path / "empty.pth"
    torch.save({"iter": 3}, empty)
    with pytest.raises(ModelError, match="no tensors|no state dict"):
        zoo.load_model(str(empty))
    with pytest.raises(ModelError, match="no such weights file"):
        zoo.load_model(str(tmp_path / "missing.pth"))


def test_save_model_metadata_and_atomicity(tmp_path):
    net, desc = _randomized("srvgg", num_feat=8, num_conv=2, upscale=2)
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "m.safetensors"
    zoo.save_model(path, net, desc, {"name": "m", "trained_steps": "10",
                                     "scores": {"Set5": {"psnr_y": 30.0}}})  # type: ignore[dict-item]
    _, meta = zoo.read_weights(path)
    assert meta["arch"] == "srvgg" and json.loads(meta["hparams"]) == desc.hparams
    assert meta["scale"] == "2" and meta["in_channels"] == "3" and meta["trained_steps"] == "10"
    assert json.loads(meta["scores"]) == {"Set5": {"psnr_y": 30.0}}
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temp files left


def _zoo_model(folder, name, scale=2, psnr=None, **meta):
    net, desc = _randomized("srvgg", num_feat=4, num_conv=1, upscale=scale)
    if psnr is not None:
        meta["scores"] = json.dumps({"Set5": {"psnr_y": psnr, "ssim_y": 0.9}})
    zoo.save_model(folder / f"{name}.safetensors", net, desc, meta)
    return net


def test_names_dirs_and_close_matches(tmp_path, monkeypatch, isolated_zoo):
    extra = tmp_path / "extra"
    extra.mkdir()
    net = _zoo_model(extra, "tiny-compact")
    monkeypatch.setenv("SR_MODELS_PATH", os.pathsep.join([str(tmp_path / "nowhere"), str(extra)]))
    dirs = zoo.search_dirs()
    assert dirs[0] == isolated_zoo and dirs[1] == tmp_path / "home" / "models"
    assert extra in dirs
    loaded = zoo.load_model("tiny-compact")
    assert loaded.name == "tiny-compact" and _same_outputs(loaded.net, net)
    assert zoo.load_model("tiny-compact.safetensors").source == extra / "tiny-compact.safetensors"
    with pytest.raises(ModelError, match="did you mean tiny-compact"):
        zoo.load_model("tiny-compct")
    with pytest.raises(ModelError, match="unknown model 'zzzz'"):
        zoo.load_model("zzzz")
    # the repository folder wins over later folders for the same name
    _zoo_model(isolated_zoo, "tiny-compact", scale=3)
    assert zoo.load_model("tiny-compact").desc.scale == 3


def test_user_home_default(monkeypatch, tmp_path):
    monkeypatch.delenv("SR_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.user_models_dir() == tmp_path / "xdg" / "sr" / "models"


def test_baselines_always_exist():
    lm = zoo.load_model("bicubic", scale=3)
    assert lm.desc.scale == 0 and lm.desc.hparams["scale"] == 3.0 and not lm.desc.learned
    assert lm.net(torch.rand(1, 3, 5, 4)).shape == (1, 3, 15, 12)
    assert zoo.load_model("lanczos").desc.hparams["scale"] == 4.0
    assert zoo.load_model("NEAREST", scale=0.5).net(torch.rand(1, 1, 8, 6)).shape[-2:] == (4, 3)
    with pytest.raises(ModelError, match="scale"):
        zoo.load_model("bicubic", scale=-1)


def test_default_model_falls_back_to_bicubic_then_best_set5(isolated_zoo, tmp_path, monkeypatch):
    assert zoo.default_model_name() == "bicubic"
    assert zoo.load_model("default").desc.arch == "bicubic"
    _zoo_model(isolated_zoo, "unscored")  # no scores: never the default
    assert zoo.default_model_name() == "bicubic"
    _zoo_model(isolated_zoo, "good-x2", psnr=33.0)
    _zoo_model(isolated_zoo, "ok-x4", scale=4, psnr=30.0)
    _zoo_model(isolated_zoo, "best-x4", scale=4, psnr=31.0)
    assert zoo.default_model_name() == "best-x4"  # x4 preferred
    assert zoo.default_model_name(scale=2) == "good-x2"
    assert zoo.default_model_name(scale=3) == "bicubic"
    # models outside the repository folder never become the default
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _zoo_model(elsewhere, "user-x4", scale=4, psnr=40.0)
    monkeypatch.setenv("SR_MODELS_PATH", str(elsewhere))
    assert zoo.default_model_name() == "best-x4"
    (isolated_zoo / "DEFAULT").write_text("ok-x4\n")
    assert zoo.default_model_name() == "ok-x4"
    entries = {e.name: e for e in zoo.list_models()}
    assert entries["ok-x4"].default and not entries["bicubic"].default
    assert entries["best-x4"].params == 4 * 3 * 9 + 4 + 4 + 4 * 4 * 9 + 4 + 4 + 4 * 48 * 9 + 48
    assert entries["best-x4"].scores["Set5"]["psnr_y"] == 31.0 and entries["best-x4"].scale == 4


def test_srcnn_scale_from_metadata_or_argument(tmp_path):
    net, desc = _randomized("srcnn", scale=4, n1=8, n2=4)
    sd_path = tmp_path / "srcnn.pth"
    torch.save(net.state_dict(), sd_path)
    assert zoo.load_model(str(sd_path)).desc.scale == 3  # the paper's factor when unknown
    assert zoo.load_model(str(sd_path), scale=4).desc.scale == 4
    st = tmp_path / "srcnn.safetensors"
    zoo.save_model(st, net, desc)
    assert zoo.load_model(str(st)).desc.scale == 4


@pytest.mark.shared
def test_official_realesr_animevideov3_loads(shared_dir):
    path = shared_dir / "weights" / "realesr-animevideov3.pth"
    if not path.is_file():
        pytest.skip(f"needs {path}")
    sd, meta = zoo.read_weights(path)
    assert meta == {} and "body.0.weight" in sd
    assert zoo.detect_arch(sd) == ("srvgg", {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64,
                                             "num_conv": 16, "upscale": 4, "act_type": "prelu",
                                             "out_scale": None})
    lm = zoo.load_model(str(path))
    assert sum(p.numel() for p in lm.net.parameters()) == 621_424
    assert lm.desc.scale == 4 and lm.desc.context == 18
    x = torch.full((1, 3, 6, 6), 0.5)
    with torch.no_grad():
        y = lm.net(x)
    # a flat grey image stays (nearly) flat grey through a trained x4 model
    assert y.shape == (1, 3, 24, 24) and (y - 0.5).abs().max() < 0.05


def _to_old_esrgan_stages(sd: dict, num_block: int, stages: int) -> dict:
    """Old ``model.N`` keys of an ESRGAN with ``stages`` upsampling stages (x1/x2/x8 files):
    0 conv_first, 1 trunk, (upsample, conv, lrelu) per stage, conv_hr, lrelu, conv_last."""
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}",
           "conv_hr": f"model.{3 * stages + 2}", "conv_last": f"model.{3 * stages + 4}"}
    top.update({f"conv_up{k}": f"model.{3 * k}" for k in range(1, stages + 1)})
    out = {}
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)$", k)
        if m:
            k = f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"
        else:
            head, tail = k.split(".", 1)
            k = f"{top[head]}.{tail}"
        out[k] = v
    return out


@pytest.mark.parametrize(("stages", "scale"), [(0, 1), (1, 2), (3, 8)])
def test_old_esrgan_x1_x2_x8_load_and_tile(stages, scale, tmp_path):
    """Community ESRGAN files (old model.N keys, original repo keys) with 0/1/3 upsampling
    stages and no pixel-unshuffle: detected, loaded, same forward, tiled == untiled, and the
    safetensors conversion keeps the layout."""
    from sr_cli.infer.tiling import plan_tiles, run_tiled

    net, desc = _randomized("rrdbnet", scale=scale, upsample_stages=stages, **TINY_RRDB)
    assert desc.scale == scale and desc.size_multiple == 1
    assert net.conv_first.in_channels == 3
    assert sorted(k for k in net.state_dict() if k.startswith("conv_up")) == sorted(
        f"conv_up{k}.{p}" for k in range(1, stages + 1) for p in ("weight", "bias"))
    old = _to_old_esrgan_stages(net.state_dict(), TINY_RRDB["num_block"], stages)
    torch.save(old, tmp_path / "old.pth")
    orig = {k.replace("conv_up3", "upconv3"): v for k, v in
            _to_original_esrgan(net.state_dict()).items()}
    torch.save(orig, tmp_path / "orig.pth")
    for name in ("old.pth", "orig.pth"):
        loaded = zoo.load_model(str(tmp_path / name))
        assert loaded.desc == desc, name
        assert _same_outputs(loaded.net, net), name
    zoo.save_model(tmp_path / "x.safetensors", loaded.net, loaded.desc)
    again = zoo.load_model(str(tmp_path / "x.safetensors"))
    # the saved file carries the tiling context measured from these weights (the engine issue):
    # at most the placeholder, everything else the same
    assert again.desc.context <= desc.context
    assert dataclasses.replace(again.desc, context=desc.context) == desc
    assert _same_outputs(again.net, net)
    x = torch.rand(1, 3, 20, 18, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        tiled = run_tiled(net, x, scale, plan_tiles(20, 18, 8, desc.context))
    assert ref.shape == (1, 3, 20 * scale, 18 * scale)
    torch.testing.assert_close(tiled, ref, atol=1e-5, rtol=0)


def test_rrdbnet_layout_checks():
    # the registry refuses bad hyperparameters before allocating (ModelError, exit 4)
    with pytest.raises((ValueError, ModelError), match="upsample_stages=3"):
        build("rrdbnet", scale=8, **TINY_RRDB)
    with pytest.raises((ValueError, ModelError), match="scale 2\\*\\*stages"):
        build("rrdbnet", scale=4, upsample_stages=3, **TINY_RRDB)
    # the standard x4 is one layout, not two: stages=2 files detect as the default
    net, _ = build("rrdbnet", scale=4, upsample_stages=2, **TINY_RRDB)
    assert zoo.detect_arch(net.state_dict())[1]["upsample_stages"] is None
    # a unshuffled input with another number of stages is no RRDBNet
    net, _ = build("rrdbnet", scale=2, **TINY_RRDB)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("conv_up2")}
    with pytest.raises(ModelError, match="no known architecture"):
        zoo.detect_arch(sd)
