"""Print encode/decode times of the 16-bit PNG codec (sr_cli/io/png16.py).

Usage: python benchmarks/io_png16.py [SIZE]   (default 1024: a SIZE x SIZE 16-bit RGB image)
If `pypng` happens to be importable, it is timed on the same file for comparison.
"""

from __future__ import annotations

import io
import sys
import time

import numpy as np

from sr_cli.io import png16


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n] / n
    base = np.stack([np.sin(7 * xx + k) * np.cos(5 * yy - k) for k in range(3)], axis=-1)
    img = np.clip(0.5 + 0.4 * base + 0.02 * rng.standard_normal(base.shape), 0, 1)
    a = np.round(img * 65535).astype(np.uint16)
    t0 = time.perf_counter()
    data = png16.encode(a)
    t1 = time.perf_counter()
    back = png16.decode(data).pixels
    t2 = time.perf_counter()
    assert np.array_equal(back, a)
    print(f"png16 {n}x{n} RGB 16-bit: encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s, "
          f"{len(data) / 1e6:.2f} MB")
    try:
        import png  # type: ignore[import-not-found]
    except ImportError:
        print("pypng not installed: no comparison")
        return
    t0 = time.perf_counter()
    _w, _h, rows, _meta = png.Reader(bytes=data).asDirect()
    arr = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(a.shape)
    t1 = time.perf_counter()
    assert np.array_equal(arr, a)
    buf = io.BytesIO()
    png.Writer(n, n, bitdepth=16, greyscale=False).write(buf, a.reshape(n, -1))
    t2 = time.perf_counter()
    print(f"pypng {png.__version__}: decode {t1 - t0:.2f} s, encode {t2 - t1:.2f} s, "
          f"{len(buf.getvalue()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
