"""Reading and writing images (basic version: 8-bit via imageio; see TODO list in the issue).

API used across the project:

- :class:`Image` — pixels ``(H, W, C)`` numpy ``uint8`` or ``uint16`` (C = 1, 2, 3 or 4), plus
  format, ICC profile, EXIF and other metadata to carry to the output.
- :func:`read_image` — path or bytes -> Image (EXIF orientation applied); raises InputError.
- :func:`write_image` — Image -> path, atomically; :func:`encode_image` -> bytes.
- :func:`to_tensor` / :func:`from_tensor` — numpy <-> float32 (1, C, H, W) in [0, 1].
- :func:`read_stdin_bytes` / :func:`write_stdout_bytes` — binary stdio; refuses a terminal.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_cli.errors import InputError, UsageError
from sr_cli.io.atomic import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FORMAT_OF_EXT = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}
EXT_OF_FORMAT = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp",
                 "tiff": ".tif", "tif": ".tif"}

DEFAULT_MAX_PIXELS = 400_000_000


@dataclass
class Image:
    """An image in memory.

    Attributes:
        pixels: ``(H, W, C)`` array, ``uint8`` or ``uint16``; C is 1 (gray), 2 (gray+alpha),
            3 (RGB) or 4 (RGBA). Orientation from EXIF is already applied.
        format: source format name ("png", "jpeg", ...) when known.
        icc: ICC profile bytes to carry over, if any.
        exif: EXIF bytes to carry over (orientation reset to 1), if any.
        info: other metadata (e.g. PNG text chunks, dpi).
    """

    pixels: np.ndarray
    format: str | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def format_for_path(path: Path, override: str | None = None) -> str:
    if override:
        fmt = override.lower().lstrip(".")
        fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
        if fmt not in EXT_OF_FORMAT:
            raise UsageError(f"unknown image format {override!r} (png, jpeg, webp, bmp, tiff)")
        return fmt
    try:
        return FORMAT_OF_EXT[path.suffix.lower()]
    except KeyError:
        raise UsageError(
            f"cannot tell the image format of {str(path)!r} from its extension; use --format"
        ) from None


def _normalize(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{name}: unsupported image layout {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: unsupported pixel type {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name}: image has zero size")
    return np.ascontiguousarray(arr)


def read_image(
    src: str | os.PathLike[str] | bytes, *, name: str | None = None, max_pixels: int | None = None
) -> Image:
    """Decode an image file or bytes. Raises :class:`InputError` for anything unreadable."""
    import imageio.v3 as iio

    label = name or (str(src) if not isinstance(src, bytes) else "<stdin>")
    if not isinstance(src, bytes):
        p = Path(src)
        if not p.exists():
            raise InputError(f"{label}: no such file")
        if p.is_dir():
            raise InputError(f"{label}: is a folder, not an image")
        data = p.read_bytes()
    else:
        data = src
    if not data:
        raise InputError(f"{label}: empty file")
    try:
        arr = iio.imread(data, index=0)
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        raise InputError(f"{label}: not a readable image ({type(exc).__name__})") from None
    arr = _normalize(np.asarray(arr), label)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if limit and arr.shape[0] * arr.shape[1] > limit:
        raise InputError(f"{label}: {arr.shape[1]}x{arr.shape[0]} exceeds --max-pixels {limit}")
    return Image(arr)


def encode_image(img: Image, fmt: str, *, quality: int | None = None) -> bytes:
    """Encode to bytes in ``fmt`` ("png", "jpeg", "webp", "bmp", "tiff")."""
    import imageio.v3 as iio

    arr = img.pixels
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    kwargs: dict[str, Any] = {}
    if fmt in ("jpeg", "webp") and quality is not None:
        kwargs["quality"] = int(quality)
    return bytes(iio.imwrite("<bytes>", arr, extension=EXT_OF_FORMAT[fmt], **kwargs))


def write_image(
    path: str | os.PathLike[str], img: Image, *, fmt: str | None = None, quality: int | None = None
) -> None:
    """Encode and write atomically; never leaves a partial file."""
    p = Path(path)
    data = encode_image(img, format_for_path(p, fmt), quality=quality)
    atomic_write_bytes(p, data)


def read_stdin_bytes() -> bytes:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    if hasattr(stream, "isatty") and stream.isatty():
        raise UsageError("no input: give a file or pipe an image into stdin")
    data = stream.read()
    if not data:
        raise InputError("<stdin>: no data")
    return bytes(data)


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def write_stdout_bytes(data: bytes) -> None:
    """Write binary data to stdout; refuses when stdout is a terminal."""
    if stdout_is_terminal():
        raise UsageError("refusing to write image data to a terminal; redirect stdout or give OUTPUT")
    stream = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
    stream.write(data)
    stream.flush()


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8/uint16 -> float32 ``(1, C, H, W)`` in [0, 1]."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    t = torch.from_numpy(np.ascontiguousarray(pixels).astype(np.float32) / scale)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(t: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """float ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1] -> ``(H, W, C)`` rounded ``dtype``."""
    if t.ndim == 4:
        t = t[0]
    maxv = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    arr = (t.detach().float().clamp(0, 1) * maxv).round().permute(1, 2, 0).cpu().numpy()
    return arr.astype(dtype)
