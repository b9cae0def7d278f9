"""Image formats by file extension: pure Python, so planning work (which files, which output
names and formats) and usage errors need no numpy, torch or image decoders.

:mod:`sr_cli.io.images` re-exports everything here.
"""

from __future__ import annotations

from pathlib import Path

from sr_cli.errors import UsageError

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

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest input (pixels) read by default. Decoding, converting and resizing cost about 40
bytes per input pixel (measured: a 6000x6000 PNG shrunk by ``sr upscale -m bicubic -s 0.01``
peaks at 1.6 GB resident), so the default keeps a run near 2 GB; ``sr upscale --max-pixels``
raises it for larger scans."""


def is_image_path(path: Path) -> bool:
    """True when the extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def format_for_path(path: Path, override: str | None = None) -> str:
    """Output format name from ``override`` (e.g. ``--format``) or the extension of ``path``."""
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
