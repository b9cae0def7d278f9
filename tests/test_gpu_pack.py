"""The GPU training pack (benchmarks/train_gpu.py) dry-runs on the CPU: pack, two resumable
`--time-limit` slots, fp16 parts under the device's 16 MiB file limit, join, load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_pack_dry_run():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_gpu.py"), "dry"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "dry run ok: 3 files back, rrdbnet x4, 2 steps over two slots" in res.stdout


def test_parts_fit_the_device_file_limit():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import train_gpu
    finally:
        sys.path.pop(0)
    assert train_gpu.PART <= 16 * 2**20
    assert "--time-limit" not in train_gpu.PSNR_STAGE  # added per slot
