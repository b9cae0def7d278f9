"""Publish trained runs into models/ and measure the zoo the way the model cards report it.

    python benchmarks/zoo.py publish RUN_DIR NAME [--fp32] [--description TEXT]
    python benchmarks/zoo.py score [NAME ...] [--shared ../shared] [--write]
    python benchmarks/zoo.py cards [NAME ...]

``publish`` copies RUN_DIR/model.safetensors (the run's final weights, EMA where the recipe
uses EMA) to models/NAME.safetensors, stored in fp16 unless --fp32, with the metadata ``name``
set and the run's metadata (recipe, train_config, steps, wall time, hardware, data) kept. It
prints the largest absolute weight change of the fp16 rounding and refuses values beyond fp16.

``score`` runs, for every model (all of models/ when no NAME is given), exactly the commands
the model cards quote:

    sr upscale SHARED/data/SetN/LR_bicubic/X{s} OUT -m NAME -q
    sr score OUT SHARED/data/SetN/HR --scale s --strip-suffix x{s} --json
    sr score OUT --scale s --niqe --niqe-params sr --json     (Set14)
    sr score OUT --scale s --niqe --niqe-params SHARED/reference/niqe_pris_params.npz --json

and prints one markdown table row per model. With --write the measured scores are stored in
the weights' metadata (``scores``), which ``sr models list`` shows and which picks the default
model. Needs ../shared (Set5, Set14, the MATLAB NIQE parameters); says so and exits 2 without.

``cards`` prints the generated part of each model card (models/README.md) from the metadata:
architecture and size, recipe settings that differ from the recipe's published ones, data,
steps, hardware, wall time, the training commands stored by ``publish --command`` and the
measured scores with the commands that reproduce them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from sr_cli.io.atomic import atomic_write_bytes

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    return tensors, meta


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    atomic_write_bytes(path, save(tensors, metadata=meta))


def publish(run: Path, name: str, fp32: bool, description: str, commands: list[str]) -> None:
    src = run / "model.safetensors"
    tensors, meta = _read(src)
    if not fp32:
        worst = 0.0
        for k, t in tensors.items():
            if t.is_floating_point():
                if t.abs().max() > 60000:
                    sys.exit(f"{k}: values beyond fp16 range; publish with --fp32")
                h = t.half()
                worst = max(worst, float((h.float() - t.float()).abs().max()))
                tensors[k] = h
        print(f"fp16 storage: largest weight change {worst:.2e}", file=sys.stderr)
    meta["name"] = name
    meta["source_run"] = run.name
    meta["storage"] = "fp32" if fp32 else "fp16"
    if description:
        meta["description"] = description
    meta.setdefault("scores", "{}")
    if commands:
        meta["train_commands"] = json.dumps(commands)
    MODELS.mkdir(exist_ok=True)
    dst = MODELS / f"{name}.safetensors"
    _write(dst, tensors, meta)
    print(f"{dst.relative_to(REPO)}  {dst.stat().st_size / 1e6:.2f} MB")


def _run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stdout


def _mean(js: str, key: str) -> float:
    return float(json.loads(js)["mean"][key])


def score(names: list[str], shared: Path, write: bool) -> None:
    data = shared / "data"
    niqe_matlab = shared / "reference" / "niqe_pris_params.npz"
    if not (data / "Set5").is_dir() or not (data / "Set14").is_dir():
        print(f"needs {data}/Set5 and Set14 (pass --shared)", file=sys.stderr)
        sys.exit(2)
    files = [MODELS / f"{n}.safetensors" for n in names] if names else sorted(
        MODELS.glob("*.safetensors"))
    print("| model | scale | Set5 PSNR-Y / SSIM-Y | Set14 PSNR-Y / SSIM-Y "
          "| Set14 NIQE (sr / MATLAB params) |")
    print("|---|---|---|---|---|")
    for path in files:
        tensors, meta = _read(path)
        name = path.stem
        s = int(float(meta["scale"]))
        scores: dict[str, dict[str, float]] = {}
        cells = []
        with tempfile.TemporaryDirectory() as tmp:
            for ds in ("Set5", "Set14"):
                out = Path(tmp) / ds
                _run(["sr", "upscale", str(data / ds / "LR_bicubic" / f"X{s}"), str(out),
                      "-m", str(path), "-q"])
                js = _run(["sr", "score", str(out), str(data / ds / "HR"), "--scale", str(s),
                           "--strip-suffix", f"x{s}", "--json"])
                scores[ds] = {"psnr_y": round(_mean(js, "psnr"), 2),
                              "ssim_y": round(_mean(js, "ssim"), 4)}
                cells.append(f"{scores[ds]['psnr_y']:.2f} / {scores[ds]['ssim_y']:.4f}")
                if ds == "Set14":
                    js = _run(["sr", "score", str(out), "--scale", str(s), "--niqe",
                               "--niqe-params", "sr", "--json"])
                    scores[ds]["niqe"] = round(_mean(js, "niqe"), 3)
                    if niqe_matlab.is_file():
                        js = _run(["sr", "score", str(out), "--scale", str(s), "--niqe",
                                   "--niqe-params", str(niqe_matlab), "--json"])
                        scores[ds]["niqe_matlab"] = round(_mean(js, "niqe"), 3)
        niqe = scores["Set14"].get("niqe")
        cells.append("-" if niqe is None else
                     f"{niqe:.3f} / {scores['Set14'].get('niqe_matlab', float('nan')):.3f}")
        print(f"| {name} | x{s} | " + " | ".join(cells) + " |", flush=True)
        if write:
            meta["scores"] = json.dumps(scores, sort_keys=True)
            _write(path, tensors, meta)


def _fmt(v: object) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def cards(names: list[str]) -> None:
    from sr_cli.train.recipes import recipe_config

    files = [MODELS / f"{n}.safetensors" for n in names] if names else sorted(
        MODELS.glob("*.safetensors"))
    for path in files:
        _, meta = _read(path)
        name, s = path.stem, int(float(meta["scale"]))
        cfg = json.loads(meta["train_config"])
        base = recipe_config(meta["recipe"], s)
        changed = {k: v for k, v in cfg.items()
                   if k not in ("log_every", "val_every", "ckpt_every", "steps", "workers",
                                "cache_mb", "recipe", "scale")
                   and getattr(base, k, None) != v and not (
                       isinstance(getattr(base, k, None), (list, tuple))
                       and list(getattr(base, k)) == v)}
        hp = json.loads(meta["hparams"])
        scores = json.loads(meta["scores"])
        wall = float(meta.get("wall_time_s", 0))
        print(f"### {name}\n")
        print(f"- Architecture: `{meta['arch']}` "
              + ", ".join(f"{k}={v}" for k, v in hp.items() if k not in ("num_in_ch",
                                                                           "num_out_ch"))
              + f"; {int(meta['params']):,} parameters; stored {meta.get('storage', 'fp32')}, "
              f"{path.stat().st_size / 1e6:.2f} MB.")
        perc = meta.get("perceptual", "none")
        print(f"- Recipe `{meta['recipe']}`"
              + (" (perceptual loss on a fixed-seed random VGG19: no pretrained VGG weights "
                 "were available)" if perc == "random" else
                 f" (perceptual network: {perc})" if perc != "none" else "")
              + "; changed from the recipe's published settings: "
              + (", ".join(f"`{k}={_fmt(v)}`" for k, v in changed.items()) or "none") + ".")
        print(f"- Data: `{meta['data']}` ({meta['data_images']} images); "
              f"{int(meta['trained_steps']):,} steps; {meta['hardware']}; "
              f"{wall / 60:.0f} min wall time (training only).")
        for ds in ("Set5", "Set14"):
            v = scores.get(ds, {})
            extra = ""
            if "niqe" in v:
                extra = (f", NIQE {v['niqe']:.3f} (sr's shipped parameters) / "
                         f"{v.get('niqe_matlab', float('nan')):.3f} (MATLAB release "
                         "parameters)")
            if v:
                print(f"- {ds} x{s}: PSNR-Y {v['psnr_y']:.2f} dB, SSIM-Y {v['ssim_y']:.4f}"
                      f"{extra}.")
        cmds = json.loads(meta.get("train_commands", "[]"))
        print("\nTrain:\n\n```sh")
        for c in cmds:
            print(c)
        print("```\n\nMeasure:\n\n```sh")
        for ds in ("Set5", "Set14"):
            print(f"sr upscale ../shared/data/{ds}/LR_bicubic/X{s} /tmp/{name}-{ds} "
                  f"-m {name} -q")
            print(f"sr score /tmp/{name}-{ds} ../shared/data/{ds}/HR --scale {s} "
                  f"--strip-suffix x{s} --json")
        if "niqe" in scores.get("Set14", {}):
            print(f"sr score /tmp/{name}-Set14 --scale {s} --niqe --niqe-params sr --json")
            print(f"sr score /tmp/{name}-Set14 --scale {s} --niqe "
                  "--niqe-params ../shared/reference/niqe_pris_params.npz --json")
        print("```\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    p.add_argument("run", type=Path)
    p.add_argument("name")
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--description", default="")
    p.add_argument("--command", action="append", default=[],
                   help="a training command to quote in the card (repeatable)")
    c = sub.add_parser("cards")
    c.add_argument("names", nargs="*")
    q = sub.add_parser("score")
    q.add_argument("names", nargs="*")
    q.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    q.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if a.cmd == "publish":
        publish(a.run, a.name, a.fp32, a.description, a.command)
    elif a.cmd == "cards":
        cards(a.names)
    else:
        score(a.names, a.shared, a.write)


if __name__ == "__main__":
    main()
