"""`sr models list|info|convert` through the real CLI (CliRunner on sr_cli.cli.app)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.cli import app
from sr_cli.commands.models import COMMANDS

pytestmark = pytest.mark.usefixtures("isolated_zoo")


def _tiny_pth(path, scheme_prefix="", wrapper="params"):
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    sd = {f"{scheme_prefix}{k}": v for k, v in net.state_dict().items()}
    torch.save({wrapper: sd}, path)
    return net.eval(), desc


def test_every_models_command_has_help_with_an_example(runner):
    for name, fn in COMMANDS:
        assert fn.__doc__ and "Example: sr models" in fn.__doc__, name
        result = runner.invoke(app, ["models", name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output


def test_list_table_and_bicubic_fallback(runner, isolated_zoo):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ARCH", "SCALE"]
    assert any(ln.startswith("*") and "bicubic" in ln for ln in lines)
    assert {"lanczos", "nearest"} <= {ln.split()[0] for ln in lines[1:]}
    assert "default model: bicubic (fallback" in result.stderr
    assert "default model" not in result.stdout  # stdout is data only


def test_list_json_with_zoo_models(runner, isolated_zoo):
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    zoo.save_model(isolated_zoo / "compact-x2.safetensors", net, desc,
                   {"scores": json.dumps({"Set5": {"psnr_y": 33.1, "ssim_y": 0.91}})})
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["compact-x2"]["arch"] == "srvgg" and rows["compact-x2"]["scale"] == 2
    assert rows["compact-x2"]["params"] == sum(p.numel() for p in net.parameters())
    assert rows["compact-x2"]["default"] and not rows["bicubic"]["default"]
    assert rows["compact-x2"]["scores"]["Set5"]["psnr_y"] == 33.1
    table = runner.invoke(app, ["models", "list"])
    assert "Set5 33.10/0.9100" in table.stdout and "compact-x2" in table.stdout
    assert "default model: compact-x2" in table.stderr
    long = runner.invoke(app, ["models", "list", "--long"])
    assert "33.10 0.9100" in long.stdout and str(isolated_zoo) in long.stdout


def test_list_fits_100_columns_without_paths(runner, isolated_zoo):
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    many = {f"Dataset{i}": {"psnr_y": 30.0 + i, "ssim_y": 0.9, "niqe": 5.0} for i in range(9)}
    name = "a-rather-long-model-name-from-the-community-x2"
    zoo.save_model(isolated_zoo / f"{name}.safetensors", net, desc,
                   {"scores": json.dumps(many)})
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0, table.output
    assert max(len(ln) for ln in table.stdout.splitlines()) <= 100
    assert str(isolated_zoo) not in table.stdout and name in table.stdout
    assert "..." in table.stdout and "niqe" not in table.stdout


def test_info_accepts_rgb(runner, tmp_path):
    path = tmp_path / "tiny.pth"
    _tiny_pth(path)
    for model, want in ((str(path), True), ("bicubic", True)):
        facts = json.loads(runner.invoke(app, ["models", "info", model, "--json"]).stdout)
        assert facts["accepts_rgb"] is want, model
    net, desc = build("srcnn", in_channels=1)
    zoo.save_model(tmp_path / "y.safetensors", net, desc)
    facts = json.loads(runner.invoke(app, ["models", "info", str(tmp_path / "y.safetensors"),
                                           "--json"]).stdout)
    assert facts["in_channels"] == 1 and facts["accepts_rgb"] is True  # converts RGB to Y
    gray = build("srvgg", num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1)[1]
    assert gray.accepts_rgb is False


def test_info_on_pth_baseline_and_unknown(runner, tmp_path):
    path = tmp_path / "tiny.pth"
    net, _ = _tiny_pth(path, scheme_prefix="module.")
    result = runner.invoke(app, ["models", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["arch"] == "srvgg" and facts["scale"] == 2 and facts["in_channels"] == 3
    assert facts["hparams"]["num_conv"] == 2 and facts["context"] == 4
    assert facts["params"] == sum(p.numel() for p in net.parameters())
    text = runner.invoke(app, ["models", "info", "bicubic"])
    assert text.exit_code == 0, text.output
    assert "arch: bicubic" in text.stdout and "scale: any" in text.stdout
    bad = runner.invoke(app, ["models", "info", "bicubik"])
    assert bad.exit_code == 4, bad.output
    assert "did you mean bicubic" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_convert_pth_to_safetensors_round_trip(runner, tmp_path):
    src = tmp_path / "tiny.pth"
    net, desc = _tiny_pth(src)
    out = tmp_path / "tiny-x2.safetensors"
    result = runner.invoke(app, ["models", "convert", str(src), str(out), "--name", "Tiny"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    _, meta = zoo.read_weights(out)
    assert meta["arch"] == "srvgg" and meta["name"] == "Tiny"
    assert meta["converted_from"] == "tiny.pth" and json.loads(meta["hparams"]) == desc.hparams
    loaded = zoo.load_model(str(out))
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    info = runner.invoke(app, ["models", "info", str(out)])
    assert "metadata.name: Tiny" in info.stdout
    # to stdout
    piped = runner.invoke(app, ["models", "convert", str(src), "-"])
    assert piped.exit_code == 0, piped.output
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(piped.stdout_bytes)
    assert zoo.load_model(str(copy)).desc == loaded.desc


def test_convert_refusals_and_model_errors(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a pickle that ran would `touch pwned`
    src = tmp_path / "tiny.safetensors"
    net, desc = build("srvgg", num_feat=8, num_conv=2, upscale=2)
    zoo.save_model(src, net, desc)
    before = src.read_bytes()
    same = runner.invoke(app, ["models", "convert", str(src), str(src)])
    assert same.exit_code == 2, same.output
    assert "overwrite the input" in same.stderr and src.read_bytes() == before
    wrong_ext = runner.invoke(app, ["models", "convert", str(src), str(tmp_path / "o.pth")])
    assert wrong_ext.exit_code == 2, wrong_ext.output
    unknown = tmp_path / "unknown.pth"
    torch.save({"params": {"foo.weight": torch.zeros(2, 2)}}, unknown)
    res = runner.invoke(app, ["models", "convert", str(unknown), str(tmp_path / "u.safetensors")])
    assert res.exit_code == 4, res.output
    assert "no known architecture" in res.stderr
    assert not (tmp_path / "u.safetensors").exists()
    evil = tmp_path / "evil.pth"
    torch.save({"params": _Evil()}, evil)
    res = runner.invoke(app, ["models", "convert", str(evil), str(tmp_path / "e.safetensors")])
    assert res.exit_code == 4, res.output
    assert "refused" in res.stderr and not (tmp_path / "pwned").exists()
    missing = runner.invoke(app, ["models", "info", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code == 4, missing.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))
