"""The GPU pack: train the published-size networks on a lent GPU, in resumable slots.

A lent H200 gives a session 15 minutes in all and 10 minutes per command, over a copy of the
working tree of at most 64 MiB; files come back from ``$OUT`` (8 files of <= 16 MiB). So:

1. Here, once: ``python benchmarks/train_gpu.py pack`` copies the training images
   (../shared/data/train, as many as fit the budget beside the tracked files) and the
   validation split into ``gpu_pack/`` (ignored by git: add it to the run's ``carry``).
2. There, per slot: ``python3 benchmarks/train_gpu.py run --seconds 480`` trains the ESRGAN
   PSNR stage with the paper's RRDBNet-23 (nf 64, gc 32; bf16 autocast, batch 32, 128 px)
   for the slot (``sr train --time-limit``), resuming the run folder when the machine still
   holds it, and writes the EMA weights as fp16 safetensors in <= 15 MiB parts plus
   ``metrics.jsonl`` to ``$OUT``.
3. Here: ``python benchmarks/train_gpu.py join FILES_AT -o runs/gpu-psnr-x4.safetensors``
   puts the parts together (checked by the sha256 that ``run`` wrote).

The device's python3 has torch, typer, rich, numpy, imageio, pillow, tifffile and
safetensors; the checkout runs with ``PYTHONPATH=.`` (no install there).
``python benchmarks/train_gpu.py dry`` does all three on this CPU with a tiny network and a
few generated images (a test runs it so the pack cannot rot).

Device call (one command, leaves time for a second slot):
    run(command="PYTHONUNBUFFERED=1 python3 benchmarks/train_gpu.py run --seconds 480",
        carry=["gpu_pack"], timeout_s=590)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "gpu_pack"
BUDGET = 64 * 2**20  # what travels to the device: tracked files + pack
PART = 15 * 2**20

# The ESRGAN PSNR stage at the paper's size; batch 32 and lr 4e-4 (linear scaling from the
# published 16 / 2e-4) to make the most of a few thousand steps.
PSNR_STAGE = ["esrgan-psnr", "--scale", "4", "--steps", "400000",
              "--set", "amp=bf16", "--set", "batch_size=32", "--set", "patch_size=128",
              "--set", "lr=4e-4", "--set", "milestones=[50000, 100000, 200000, 300000]",
              "--set", "ema=0.999", "--set", "workers=8", "--set", "log_every=100",
              "--set", "val_every=1000", "--set", "ckpt_every=1000"]
TINY = ["--set", "arch_params.num_block=1", "--set", "arch_params.num_feat=8",
        "--set", "arch_params.num_grow_ch=4", "--set", "batch_size=2", "--set", "patch_size=32",
        "--set", "amp=none", "--set", "workers=0", "--set", "val_every=2",
        "--set", "ckpt_every=2", "--set", "log_every=1"]


def _tracked_bytes() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f
               and (REPO / f.decode()).is_file())


def pack(train: Path, val: Path | None, dest: Path, budget: int) -> dict[str, int]:
    """Copy ``train`` images (sorted, until ``budget`` bytes) and ``val`` into ``dest``."""
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "train").mkdir(parents=True)
    used, n = 0, 0
    for i, p in enumerate(sorted(q for q in train.rglob("*") if q.suffix.lower() in exts)):
        size = p.stat().st_size
        if used + size > budget:
            break
        shutil.copyfile(p, dest / "train" / f"{i:05d}_{p.name}")
        used, n = used + size, n + 1
    if val is not None:
        shutil.copytree(val, dest / "val", symlinks=False)
    return {"images": n, "bytes": used}


def _sr(*args: str, env: dict[str, str] | None = None) -> int:
    cmd = [sys.executable, "-m", "sr_cli", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                 **(env or {})}).returncode


def run(pack_dir: Path, out: Path, seconds: float, tiny: bool = False) -> list[Path]:
    """Train one slot, export fp16 parts + metrics to ``out``; returns the files written."""
    import torch
    from safetensors.torch import load_file, save_file

    run_dir = pack_dir / "runs" / "psnr-x4"
    args = [*PSNR_STAGE, "--data", str(pack_dir / "train"), "-o", str(run_dir),
            "--time-limit", str(seconds), "-q"]
    if (pack_dir / "val").is_dir():
        args += ["--val", str(pack_dir / "val")]
    if tiny:
        args += TINY + ["--device", "cpu"]
    else:
        args += ["--device", "cuda"]
    if (run_dir / "checkpoint.pt").exists():
        args.append("--resume")
    code = _sr("train", *args)
    if code != 0:
        raise SystemExit(f"sr train exited {code}")
    from sr_cli.zoo import read_weights

    _, meta = read_weights(run_dir / "model.safetensors")
    tensors = {k: v.half() if v.is_floating_point() else v
               for k, v in load_file(str(run_dir / "model.safetensors")).items()}
    out.mkdir(parents=True, exist_ok=True)
    whole = out / "model_fp16.safetensors"
    save_file(tensors, str(whole), metadata=meta)
    data = whole.read_bytes()
    whole.unlink()
    written = []
    for k in range(0, len(data), PART):
        part = out / f"model_fp16.part{k // PART}"
        part.write_bytes(data[k: k + PART])
        written.append(part)
    manifest = {"sha256": hashlib.sha256(data).hexdigest(), "parts": len(written),
                "bytes": len(data), "steps": meta.get("trained_steps"),
                "torch": torch.__version__}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.copyfile(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    return [*written, out / "manifest.json", out / "metrics.jsonl"]


def join(src: Path, dest: Path) -> Path:
    """Reassemble ``run``'s parts from ``src`` into ``dest`` (sha256 checked)."""
    manifest = json.loads((src / "manifest.json").read_text())
    data = b"".join((src / f"model_fp16.part{i}").read_bytes()
                    for i in range(manifest["parts"]))
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{src}: parts do not match the manifest's sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def dry() -> None:
    """The whole pack on this CPU: tiny network, generated images, 2 slots, join, load."""
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        rng = np.random.default_rng(0)
        (t / "src").mkdir()
        (t / "val").mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(
                t / "src" / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            t / "val" / "v.png")
        info = pack(t / "src", t / "val", t / "pack", 2**20)
        assert info["images"] == 3, info
        run(t / "pack", t / "out1", seconds=0.0, tiny=True)
        files = run(t / "pack", t / "out2", seconds=0.0, tiny=True)  # resumes
        model = join(t / "out2", t / "model.safetensors")
        from sr_cli.zoo import load_model

        lm = load_model(str(model))
        steps = json.loads((t / "out2" / "manifest.json").read_text())["steps"]
        print(f"dry run ok: {len(files)} files back, {lm.desc.arch} x{lm.desc.scale}, "
              f"{steps} steps over two slots")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="copy the training data into gpu_pack/ (here)")
    p.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "train")
    p.add_argument("--val", type=Path, default=None,
                   help="validation images (a split of the training data, not Set5/Set14)")
    r = sub.add_parser("run", help="train one slot (on the GPU machine)")
    r.add_argument("--seconds", type=float, default=480.0)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    j = sub.add_parser("join", help="reassemble the weights (here)")
    j.add_argument("src", type=Path)
    j.add_argument("-o", "--output", type=Path, required=True)
    sub.add_parser("dry", help="everything on this CPU with a tiny network")
    a = ap.parse_args()
    if a.cmd == "pack":
        room = BUDGET - _tracked_bytes() - 2 * 2**20
        info = pack(a.train, a.val, PACK, room)
        print(f"packed {info['images']} images, {info['bytes'] / 2**20:.1f} MiB into {PACK} "
              f"(room {room / 2**20:.1f} MiB beside the tracked files)")
    elif a.cmd == "run":
        for f in run(PACK, a.out, a.seconds):
            print(f"wrote {f} ({f.stat().st_size} bytes)")
    elif a.cmd == "join":
        print(f"wrote {join(a.src, a.output)}")
    else:
        dry()


if __name__ == "__main__":
    main()
