"""Unit tests of the training parts: discriminators, VGG19, losses, EMA, data, DDP logic."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from sr_cli.archs.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator
from sr_cli.archs.vgg import VGG19_LAYERS, load_vgg19
from sr_cli.errors import InputError, ModelError, UsageError
from sr_cli.train.config import TrainConfig, apply_overrides
from sr_cli.train.ema import EMA
from sr_cli.train.losses import (
    PerceptualLoss,
    gan_d_fake,
    gan_d_real,
    gan_g_loss,
    pixel_loss,
    y_channel,
)
from sr_cli.train.recipes import RECIPES, recipe_config


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_unet_discriminator_matches_real_esrgan_param_count():
    d = UNetDiscriminatorSN(3, 64)
    assert _count(d) == 4_376_897
    out = d(torch.rand(2, 3, 32, 24))
    assert out.shape == (2, 1, 32, 24)
    with pytest.raises(UsageError):
        d(torch.rand(1, 3, 30, 32))


def test_vgg_style_discriminator_shapes():
    d = VGGStyleDiscriminator(3, 8, input_size=64)
    assert d(torch.rand(3, 3, 64, 64)).shape == (3, 1)
    with pytest.raises(UsageError):
        d(torch.rand(1, 3, 32, 32))
    with pytest.raises(UsageError):
        VGGStyleDiscriminator(3, 8, input_size=48)
    # VGG128 as published: 128x128 input, linear on nf*8*4*4 features.
    assert VGGStyleDiscriminator(3, 64, 128).linear1.in_features == 512 * 4 * 4


def test_vgg19_layers_random_and_loaded(tmp_path: Path):
    assert VGG19_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert VGG19_LAYERS.index("conv5_4") == 34 and len(VGG19_LAYERS) == 37
    a = load_vgg19(["conv1_2", "conv3_4"], None)
    b = load_vgg19(["conv1_2", "conv3_4"], None)
    x = torch.rand(1, 3, 16, 16)
    fa, fb = a(x), b(x)
    assert set(fa) == {"conv1_2", "conv3_4"} and fa["conv3_4"].shape == (1, 256, 4, 4)
    assert torch.equal(fa["conv3_4"], fb["conv3_4"])  # fixed seed
    assert (fa["conv1_2"] < 0).any()  # before ReLU
    assert not any(p.requires_grad for p in a.parameters())
    # A torchvision-style .pth (features.N + classifier keys, in a full state dict).
    sd = {k: v.clone() * 0.5 for k, v in a.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "vgg19.pth")
    c = load_vgg19(["conv1_2", "conv3_4"], tmp_path / "vgg19.pth")
    assert torch.equal(c.features[2].weight, a.features[2].weight * 0.5)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError):
        load_vgg19(["conv1_2"], tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ModelError):
        load_vgg19(["conv1_2"], tmp_path / "junk.pth")
    with pytest.raises(UsageError):
        load_vgg19(["conv9_9"], None)


def test_losses():
    x = torch.rand(2, 3, 8, 8)
    y = torch.rand(2, 3, 8, 8)
    assert pixel_loss(x, x, "l1") == 0
    assert torch.isclose(pixel_loss(x, y, "mse"), ((x - y) ** 2).mean())
    yx = y_channel(x)
    ref = (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255
    assert torch.allclose(yx[:, 0], ref)
    assert torch.isclose(pixel_loss(x, y, "mse", on_y=True), ((yx - y_channel(y)) ** 2).mean())
    perc = PerceptualLoss(load_vgg19(["conv2_2"], None), {"conv2_2": 1.0})
    assert perc(x, x) == 0 and perc(x, y) > 0
    real, fake = torch.tensor([[3.0], [2.0]]), torch.tensor([[-1.0], [0.5]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert torch.isclose(gan_g_loss("vanilla", fake), bce(fake, torch.ones_like(fake)))
    expect_g = 0.5 * (bce(real - fake.mean(), torch.zeros_like(real))
                      + bce(fake - real.mean(), torch.ones_like(fake)))
    assert torch.isclose(gan_g_loss("ragan", fake, real), expect_g)
    expect_d = 0.5 * (bce(real - fake.mean(), torch.ones_like(real))
                      + bce(fake - real.mean(), torch.zeros_like(fake)))
    assert torch.isclose(gan_d_real("ragan", real, fake) + gan_d_fake("ragan", fake, real),
                         expect_d)
    with pytest.raises(UsageError):
        gan_g_loss("wgan", fake)


def test_ema_averages_parameters_and_buffers():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    ema = EMA(net, 0.9)
    p0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(7)
    ema.update(net)
    assert torch.allclose(ema.module[0].weight, p0 + 0.1)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.2))
    assert int(ema.module[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_warmup_tracks_early_steps_then_reaches_the_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(net, 0.999, warmup=True)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.module.weight.data.fill_(0.0)
    ema.update(net, 1)  # decay min(0.999, 2/11)
    assert torch.allclose(ema.module.weight, torch.tensor([[9 / 11]]))
    ema.update(net, 10_000)  # decay 0.999 from here on
    assert torch.allclose(ema.module.weight, torch.tensor([[1 - 0.999 * 2 / 11]]))
    assert recipe_config("distill", 4).ema_warmup and not recipe_config("esrgan").ema_warmup


def test_gradient_loss_sees_steps_that_pixel_l1_averages_away():
    from sr_cli.train.losses import gradient_loss

    gt = torch.linspace(0, 1, 16).repeat(1, 3, 16, 1)  # a smooth horizontal ramp
    blocks = gt.reshape(1, 3, 16, 4, 4).mean(-1, keepdim=True).expand(-1, -1, -1, -1, 4)
    blocks = blocks.reshape(1, 3, 16, 16)  # the same ramp drawn as flat 4-pixel steps
    # pixel L1 cannot tell the steps from a uniform offset of the same mean error; the
    # gradient loss is 0 for the offset and 0.7x the L1 error (1.4/15/2) for the steps
    err = float((blocks - gt).abs().mean())
    assert float(gradient_loss(gt + err, gt)) == pytest.approx(0.0, abs=1e-6)
    assert float(gradient_loss(blocks, gt)) == pytest.approx(0.7 * err, rel=1e-4)
    cfg = recipe_config("distill", 4)
    cfg.grad_weight = -1.0
    with pytest.raises(UsageError):
        cfg.validate()


def test_recipes_published_settings():
    assert set(RECIPES) >= {"srcnn", "srresnet", "srgan", "esrgan-psnr", "esrgan", "realesrnet",
                            "realesrgan", "realesrnet-compact", "realesrgan-compact"}
    c = recipe_config("srcnn", 3)
    assert (c.arch, c.patch_size, c.pixel_loss, c.pixel_on_y) == ("srcnn", 33, "mse", True)
    assert recipe_config("srcnn", 4).patch_size == 32
    g = recipe_config("srgan")
    assert g.gan_weight == 1e-3 and g.perceptual_layers == {"relu5_4": 1.0}
    assert g.arch_params["num_block"] == 16
    e = recipe_config("esrgan-psnr")
    assert e.lr == 2e-4 and e.arch_params == {"num_block": 23, "num_feat": 64, "num_grow_ch": 32}
    r = recipe_config("realesrgan")
    assert r.gan_type == "vanilla" and r.gan_weight == 0.1 and r.discriminator == "unet"
    assert r.perceptual_layers == {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0,
                                   "conv4_4": 1.0, "conv5_4": 1.0}
    assert r.ema == 0.999 and r.usm_gt and r.degradation == "realesrgan"
    assert recipe_config("realesrnet-compact").arch == "srvgg"
    with pytest.raises(UsageError):
        recipe_config("esrgan-gan")
    with pytest.raises(UsageError):
        apply_overrides(TrainConfig(), {"batch_size": "many"}, "t")
    with pytest.raises(UsageError):
        apply_overrides(recipe_config("srcnn"), {"patch_size": 32}, "t").validate()


def test_train_set_is_a_pure_function_of_seed_rank_and_counter(tmp_path, make_image, write_png):
    from sr_cli.train.data import PairSource, TrainSet

    for i in range(3):
        write_png(f"d/{i}.png", make_image(40, 36, seed=i))
    src = PairSource.build(tmp_path / "d", None, scale=2, patch_size=16,
                           degradation="bicubic", cache_mb=16)
    assert src.cache is not None and src.count == 3
    a = TrainSet(src, seed=1, rank=0, flip=True, rot90=True)
    b = TrainSet(src, seed=1, rank=0, flip=True, rot90=True)
    c = TrainSet(src, seed=1, rank=1, flip=True, rot90=True)
    sa, sb = a[5], b[5]
    assert sa["hr"].shape == (3, 16, 16) and sa["lr"].shape == (3, 8, 8)
    assert torch.equal(sa["hr"], sb["hr"]) and torch.equal(sa["lr"], sb["lr"])
    assert any(not torch.equal(a[k]["hr"], c[k]["hr"]) for k in range(4))
    # every epoch visits every image once
    firsts = {int(a._image_index(k)) for k in range(3)}
    assert firsts == {0, 1, 2}
    # uncached: same samples as cached
    src2 = PairSource.build(tmp_path / "d", None, scale=2, patch_size=16,
                            degradation="bicubic", cache_mb=0)
    assert src2.cache is None
    assert torch.equal(TrainSet(src2, seed=1, rank=0, flip=True, rot90=True)[5]["hr"], sa["hr"])
    with pytest.raises(InputError):
        PairSource.build(tmp_path / "d", None, scale=2, patch_size=64, degradation="bicubic",
                         cache_mb=16)
    # lazy: nothing decoded before the first sample asks; then the same samples, cached
    lazy = PairSource.build(tmp_path / "d", None, scale=2, patch_size=16,
                            degradation="bicubic", cache_mb=16, lazy=True)
    assert lazy.cache == {}
    got = TrainSet(lazy, seed=1, rank=0, flip=True, rot90=True)[5]
    assert torch.equal(got["hr"], sa["hr"]) and torch.equal(got["lr"], sa["lr"])
    assert list(lazy.cache) == [a._image_index(5)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_gloo_world_size_one_matches_plain_run(tmp_path, make_image, write_png, monkeypatch):
    """Under torchrun's environment the loop wraps the nets in DDP (gloo on CPU); with one rank
    the result equals the plain run, and rank 0 writes the files."""
    import torch.distributed as dist

    from sr_cli.train.loop import RunOptions, run_training

    for i in range(2):
        write_png(f"d/{i}.png", make_image(40, 40, seed=i))
    cfg = apply_overrides(recipe_config("srgan", 2), {
        "arch_params": {"num_feat": 8, "num_block": 1}, "patch_size": 32, "batch_size": 2,
        "steps": 2, "d_features": 4, "perceptual_layers": {"relu1_2": 1.0}}, "test")
    plain = run_training(cfg, RunOptions(data=tmp_path / "d", out=tmp_path / "plain",
                                         perceptual="random"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    try:
        ddp = run_training(cfg, RunOptions(data=tmp_path / "d", out=tmp_path / "ddp",
                                           perceptual="random"))
        assert dist.is_initialized() and dist.get_world_size() == 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    from safetensors.torch import load_file

    a, b = load_file(str(plain.model_path)), load_file(str(ddp.model_path))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
