"""Reading and writing images: PNG, JPEG, WebP, BMP, TIFF; 8 and 16 bits per channel.

API used across the project:

- :class:`Image` — pixels ``(H, W, C)`` numpy ``uint8`` or ``uint16`` (C = 1, 2, 3 or 4), plus
  format, ICC profile, EXIF and other metadata to carry to the output.
- :func:`read_image` — path or bytes -> Image (EXIF orientation applied); raises InputError.
- :func:`write_image` — Image -> path, atomically; :func:`encode_image` -> bytes.
- :class:`PixelStream` / :func:`write_image_stream` — an image whose rows arrive in bands
  (the inference engine's output) -> path or stdout; PNG and TIFF are encoded band by band,
  so the full image is never in memory.
- :func:`to_tensor` / :func:`from_tensor` — numpy <-> float32 (1, C, H, W) in [0, 1].
- :func:`read_stdin_bytes` / :func:`write_stdout_bytes` — binary stdio; refuses a terminal.

Decoders: 16-bit PNGs go through :mod:`sr_cli.io.png16` (Pillow cannot keep 16-bit colour
PNGs), TIFFs with more than 8 bits per sample through ``tifffile``, everything else through
Pillow. The pixel count is checked against ``max_pixels`` from the file header, before any
pixel data is decoded. See docs/io.md for the conversion rules on output.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_cli.errors import InputError, UsageError
from sr_cli.io import png16
from sr_cli.io.atomic import atomic_open, atomic_write_bytes

# The extension tables live in a light module (no numpy/torch) and are re-exported here.
from sr_cli.io.formats import (  # noqa: F401
    DEFAULT_MAX_PIXELS,
    EXT_OF_FORMAT,
    FORMAT_OF_EXT,
    IMAGE_EXTENSIONS,
    format_for_path,
    is_image_path,
)


@dataclass
class Image:
    """An image in memory.

    Attributes:
        pixels: ``(H, W, C)`` array, ``uint8`` or ``uint16``; C is 1 (gray), 2 (gray+alpha),
            3 (RGB) or 4 (RGBA). Orientation from EXIF is already applied.
        format: source format name ("png", "jpeg", ...) when known.
        icc: ICC profile bytes to carry over, if any.
        exif: EXIF bytes to carry over (Pillow's form, ``b"Exif\\0\\0"`` + TIFF data;
            orientation already reset to 1), if any.
        info: other metadata: ``"dpi"`` -> ``(x, y)`` floats, ``"text"`` -> PNG text chunks
            ``{key: value}``.
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


def sniff_format(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes ("png", "jpeg", ...), else None."""
    if data.startswith(png16.SIGNATURE):
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def _pil() -> Any:
    """Pillow, with its own pixel limit off (ours applies) and truncated files refused."""
    from PIL import Image as PILImage
    from PIL import ImageFile

    PILImage.MAX_IMAGE_PIXELS = None  # we check max_pixels ourselves, from the header
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return PILImage


def _check_size(w: int, h: int, limit: int, label: str) -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"{label}: image has zero size ({w}x{h})")
    if limit and w * h > limit:
        raise InputError(
            f"{label}: {w}x{h} = {w * h} pixels exceeds the limit of {limit} (--max-pixels)"
        )


# EXIF orientation -> numpy transform that makes the image upright (same as
# PIL.ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
# 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise).
def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1..8) to ``(H, W, C)`` pixels; other values: unchanged."""
    if orientation == 2:
        out = arr[:, ::-1]
    elif orientation == 3:
        out = arr[::-1, ::-1]
    elif orientation == 4:
        out = arr[::-1]
    elif orientation == 5:
        out = arr.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(arr, k=-1)
    elif orientation == 7:
        out = arr.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(arr, k=1)
    else:
        return arr
    return np.ascontiguousarray(out)


def _exif_bytes(raw: bytes | None) -> bytes | None:
    """Normalise EXIF to Pillow's form (``b"Exif\\0\\0"`` + TIFF header)."""
    if not raw:
        return None
    if raw[:4] in (b"MM\x00*", b"II*\x00"):
        raw = b"Exif\x00\x00" + raw
    return raw if raw.startswith(b"Exif\x00\x00") else None


def _exif_fixed(raw: bytes | None, width: int | None = None, height: int | None = None
                ) -> bytes | None:
    """EXIF with orientation reset to 1 (and pixel dimensions updated when given).

    Unparsable EXIF is dropped rather than copied blindly (it could re-rotate the output).
    """
    raw = _exif_bytes(raw)
    if raw is None:
        return None
    PILImage = _pil()
    try:
        exif = PILImage.Exif()
        exif.load(raw)
        if 0x0112 in exif:
            exif[0x0112] = 1
        if width is not None and height is not None:
            sub = exif.get_ifd(0x8769)
            if 0xA002 in sub:
                sub[0xA002] = int(width)
            if 0xA003 in sub:
                sub[0xA003] = int(height)
        out: bytes = exif.tobytes()
        return out
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF
        return None


def _pil_to_array(im: Any, label: str) -> np.ndarray:
    """Convert a loaded Pillow image to ``(H, W, C)`` uint8/uint16 under our channel rules."""
    mode = im.mode
    trans = im.info.get("transparency")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or trans is not None) else "RGB")
        if im.mode == "RGBA" and mode == "P" and trans is None:
            im = im.convert("RGB")
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
        if trans is not None and mode in ("L", "RGB"):
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            key = np.asarray(trans if isinstance(trans, tuple) else (trans,), dtype=np.int64)
            if key.size == arr.shape[2]:
                alpha = np.where(np.all(arr == key, axis=2), 0, 255).astype(np.uint8)
                arr = np.concatenate([arr, alpha[:, :, None]], axis=2)
        return arr
    if mode in ("La", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        target = {"La": "LA", "RGBa": "RGBA"}.get(mode, "RGB")
        return np.asarray(im.convert(target))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(f"{label}: 32-bit integer pixels outside 0..65535 are not supported")
        return arr.astype(np.uint16)
    raise InputError(f"{label}: unsupported pixel mode {mode!r}")


def _read_pil(data: bytes, label: str, limit: int, fmt: str | None) -> Image:
    PILImage = _pil()
    try:
        im = PILImage.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        if type(exc).__name__ == "UnidentifiedImageError":
            raise InputError(
                f"{label}: not a readable image (unknown format; expected "
                "PNG, JPEG, WebP, BMP or TIFF)"
            ) from None
        raise InputError(f"{label}: not a readable image ({_why(exc)})") from None
    _check_size(im.size[0], im.size[1], limit, label)  # header only: nothing decoded yet
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        warnings.warn(f"{label}: animated ({frames} frames); only the first frame is used "
                      "(for every frame of a GIF give a folder or a video OUTPUT)",
                      AnimatedInputWarning, stacklevel=2)
    try:
        im.seek(0)  # animated GIF / WebP / APNG: the first frame
        im.load()
        arr = _pil_to_array(im, label)
        exif = im.getexif()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{label}: cannot decode image ({_why(exc)})") from None
    arr = _normalize(np.asarray(arr), label)
    orientation = int(exif.get(0x0112, 1) or 1) if exif is not None else 1
    arr = apply_orientation(arr, orientation)
    img_fmt = fmt or (im.format or "").lower() or None
    info: dict[str, Any] = {}
    dpi = im.info.get("dpi")
    if dpi and len(dpi) >= 2 and float(dpi[0]) > 0 and float(dpi[1]) > 0:
        info["dpi"] = _clean_dpi(float(dpi[0]), float(dpi[1]))
    text = getattr(im, "text", None) if img_fmt == "png" else None
    if text:
        info["text"] = {str(k): str(v) for k, v in text.items()}
    exif_raw = im.info.get("exif") if img_fmt != "tiff" else None
    icc = im.info.get("icc_profile") or None
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        icc = None  # the profile describes the source colour space, not the RGB we made
    return Image(arr, format=img_fmt, icc=icc, exif=_exif_fixed(exif_raw), info=info)


def _clean_dpi(dx: float, dy: float) -> tuple[float, float]:
    """dpi as stored (PNG/BMP keep pixels per metre: 300 dpi reads back as 299.9994)."""
    def r(d: float) -> float:
        # a pixels-per-metre integer is off by at most 0.5 / 39.37 = 0.0127 dpi
        return float(round(d)) if abs(d - round(d)) < 0.013 else round(float(d), 4)

    return r(dx), r(dy)


def _why(exc: BaseException) -> str:
    """A short, stable reason: first line, no object reprs (``<x.Y at 0x...>``,
    ``<tifffile.TiffPages @8>``), at most 160 characters."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from sr_cli.console import without_reprs

    return (without_reprs(msg) or type(exc).__name__)[:160]


class AnimatedInputWarning(UserWarning):
    """An animated image was read as its first frame (shown as one ``sr: warning:`` line)."""


def _read_png16(data: bytes, label: str) -> Image:
    try:
        dec = png16.decode(data)
    except png16.PNGError as exc:
        raise InputError(f"{label}: {exc}") from None
    except (ValueError, MemoryError) as exc:
        raise InputError(f"{label}: cannot decode PNG ({_why(exc)})") from None
    arr = _normalize(dec.pixels, label)
    exif = _exif_bytes(dec.exif)
    orientation = 1
    if exif is not None:
        try:
            ex = _pil().Exif()
            ex.load(exif)
            orientation = int(ex.get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001
            orientation = 1
    info: dict[str, Any] = {}
    if dec.dpi and dec.dpi[0] > 0 and dec.dpi[1] > 0:
        info["dpi"] = _clean_dpi(*dec.dpi)
    if dec.text:
        info["text"] = dict(dec.text)
    return Image(apply_orientation(arr, orientation), format="png", icc=dec.icc,
                 exif=_exif_fixed(exif), info=info)


def _tiff_first_page(data: bytes, label: str) -> Any:
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
        return tif, tif.pages[0]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{label}: not a readable TIFF ({_why(exc)})") from None


def _read_tiff16(tif: Any, page: Any, label: str, limit: int) -> Image:
    """TIFF with >8 bits per sample (Pillow would drop to 8 bits): read with tifffile."""
    _check_size(int(page.imagewidth), int(page.imagelength), limit, label)
    try:
        arr = page.asarray()
    except Exception as exc:  # noqa: BLE001
        hint = " (LZW/JPEG-compressed 16-bit TIFF needs: pip install imagecodecs)" if (
            "imagecodecs" in str(exc)) else ""
        raise InputError(f"{label}: cannot decode TIFF ({_why(exc)}){hint}") from None
    axes = page.axes  # e.g. "YX", "YXS", "SYX"
    if axes.startswith("S") and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint16:
        raise InputError(f"{label}: unsupported TIFF pixel type {arr.dtype}"
                         " (8- and 16-bit unsigned integers only)")
    photometric = int(page.photometric)
    if photometric == 0:  # MINISWHITE
        arr = 65535 - arr
    elif photometric not in (1, 2):
        raise InputError(f"{label}: unsupported 16-bit TIFF colour model {page.photometric.name}")
    arr = _normalize(arr, label)
    tags = page.tags
    orientation = int(tags["Orientation"].value) if "Orientation" in tags else 1
    icc = bytes(tags["InterColorProfile"].value) if "InterColorProfile" in tags else None
    info: dict[str, Any] = {}
    if "XResolution" in tags and "YResolution" in tags:
        try:
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
            xr, yr = (tags[t].value for t in ("XResolution", "YResolution"))
            dx, dy = xr[0] / xr[1], yr[0] / yr[1]
            if unit == 3:
                dx, dy = dx * 2.54, dy * 2.54
            if unit in (2, 3) and dx > 0 and dy > 0:
                info["dpi"] = _clean_dpi(float(dx), float(dy))
        except (ZeroDivisionError, TypeError, ValueError, IndexError):
            pass
    return Image(apply_orientation(arr, orientation), format="tiff", icc=icc, info=info)


def read_image(
    src: str | os.PathLike[str] | bytes, *, name: str | None = None, max_pixels: int | None = None
) -> Image:
    """Decode an image file or bytes into an :class:`Image` (EXIF orientation applied).

    ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`; 0 = no limit) is checked against the
    size in the file header before any pixel data is decoded. Raises :class:`InputError`
    (one line naming the file) for missing files, folders, empty, truncated, corrupt or
    non-image data, zero-size or too-large images. Animated files: the first frame.
    """
    label = name or (str(src) if not isinstance(src, bytes) else "<stdin>")
    data = src if isinstance(src, bytes) else read_path_bytes(Path(src), label)
    if not data:
        raise InputError(f"{label}: empty file")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    fmt = sniff_format(data)
    if fmt == "png":
        try:
            hdr = png16.read_header(data)
            png16.check_chunks(data)  # CRCs and ancillary caps: one rule for every bit depth
        except png16.PNGError as exc:
            raise InputError(f"{label}: {exc}") from None
        _check_size(hdr.width, hdr.height, limit, label)
        if hdr.bit_depth == 16:
            return _read_png16(data, label)
    elif fmt == "tiff":
        tif, page = _tiff_first_page(data, label)
        try:
            bps = page.bitspersample
            if bps > 8 or page.sampleformat != 1:
                return _read_tiff16(tif, page, label, limit)
        finally:
            tif.close()
    return _read_pil(data, label, limit, fmt)


# --------------------------------------------------------------------------------- output

DEFAULT_QUALITY = 95
"""JPEG / WebP quality when none is given (Pillow's own default, 75, is too lossy for SR)."""


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by ``round(v * 255 / 65535)`` (= ``round(v / 257)``); uint8 unchanged."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def output_pixels(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """The pixels as they will be stored in ``fmt`` (documented conversion rules).

    - PNG, TIFF: unchanged (8 or 16 bits; 1-4 channels).
    - JPEG: 16-bit -> 8-bit; alpha dropped (gray+alpha -> gray, RGBA -> RGB).
    - WebP: 16-bit -> 8-bit; gray -> RGB, gray+alpha -> RGBA (WebP has no gray).
    - BMP: 16-bit -> 8-bit; alpha dropped (BMP readers ignore it); gray stays gray.
    """
    if fmt in ("png", "tiff"):
        return pixels
    arr = to_8bit(pixels)
    c = arr.shape[2]
    if fmt in ("jpeg", "bmp"):
        if c in (2, 4):
            arr = arr[:, :, : c - 1]
    elif fmt == "webp":
        if c == 1:
            arr = np.repeat(arr, 3, axis=2)
        elif c == 2:
            arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2)
    return np.ascontiguousarray(arr)


def _tiff_kwargs(img: Image, c: int) -> dict[str, Any]:
    """tifffile.imwrite settings of an output with ``c`` channels: zlib + predictor, alpha as
    unassociated extra sample, ICC profile and dpi carried over."""
    kwargs: dict[str, Any] = {
        "photometric": "minisblack" if c <= 2 else "rgb",
        "compression": "zlib",
        "predictor": True,
    }
    if c in (2, 4):
        kwargs["extrasamples"] = [2]  # unassociated alpha
    if img.icc:
        kwargs["iccprofile"] = img.icc
    dpi = img.info.get("dpi")
    if dpi:
        kwargs["resolution"] = (float(dpi[0]), float(dpi[1]))
        kwargs["resolutionunit"] = "INCH"
    return kwargs


def _encode_tiff16(arr: np.ndarray, img: Image) -> bytes:
    import tifffile

    c = arr.shape[2]
    kwargs = _tiff_kwargs(img, c)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr[:, :, 0] if c == 1 else arr, **kwargs)
    return buf.getvalue()


def encode_image(img: Image, fmt: str, *, quality: int | None = None,
                 lossless: bool = False, jpeg_subsampling: str | None = None) -> bytes:
    """Encode to bytes in ``fmt`` ("png", "jpeg", "webp", "bmp", "tiff").

    Bit depth follows ``img.pixels.dtype``; formats without 16 bits or alpha get the
    conversions of :func:`output_pixels`. ICC, EXIF (orientation 1), dpi and PNG text are
    written where the format can hold them. ``quality`` (1-100, default 95) is for JPEG and
    WebP; ``lossless`` makes WebP lossless. JPEG chroma subsampling is 4:4:4 at quality >= 90
    and 4:2:0 below, unless ``jpeg_subsampling`` ("4:4:4", "4:2:2", "4:2:0") is given (e.g. to
    mimic libjpeg/OpenCV defaults, which always use 4:2:0, when simulating degradations).
    """
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt.lower(), fmt.lower())
    if fmt not in ("png", "jpeg", "webp", "bmp", "tiff"):
        raise UsageError(f"unknown image format {fmt!r} (png, jpeg, webp, bmp, tiff)")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {quality}")
    arr = output_pixels(_normalize(np.asarray(img.pixels), "image"), fmt)
    h, w, c = arr.shape
    exif = _exif_fixed(img.exif, w, h)
    dpi = img.info.get("dpi")
    if fmt == "png" and arr.dtype == np.uint16:
        return png16.encode(arr, icc=img.icc, exif=exif, dpi=dpi, text=img.info.get("text"))
    if fmt == "tiff" and arr.dtype == np.uint16:
        return _encode_tiff16(arr, img)
    PILImage = _pil()
    pil = PILImage.fromarray(arr[:, :, 0] if c == 1 else arr)
    kwargs: dict[str, Any] = {}
    if img.icc and fmt in ("png", "jpeg", "webp", "tiff"):
        kwargs["icc_profile"] = img.icc
    if exif and fmt in ("png", "jpeg", "webp"):  # TIFF: Pillow+libtiff fail on EXIF sub-IFDs
        kwargs["exif"] = exif
    if dpi and fmt in ("png", "jpeg", "tiff", "bmp"):
        kwargs["dpi"] = (float(dpi[0]), float(dpi[1]))
    q = DEFAULT_QUALITY if quality is None else int(quality)
    if fmt == "png":
        text = img.info.get("text")
        if text:
            from PIL.PngImagePlugin import PngInfo

            pnginfo = PngInfo()
            for k, v in text.items():
                try:
                    str(v).encode("latin-1")
                    pnginfo.add_text(str(k), str(v))
                except UnicodeEncodeError:
                    pnginfo.add_itxt(str(k), str(v))
            kwargs["pnginfo"] = pnginfo
        kwargs["compress_level"] = 6
    elif fmt == "jpeg":
        kwargs["quality"] = q
        if jpeg_subsampling is not None:
            if jpeg_subsampling not in ("4:4:4", "4:2:2", "4:2:0"):
                raise UsageError(f"unknown JPEG subsampling {jpeg_subsampling!r}")
            kwargs["subsampling"] = jpeg_subsampling
        else:
            kwargs["subsampling"] = 0 if q >= 90 else 2  # 4:4:4 at high quality, else 4:2:0
        kwargs["optimize"] = True
    elif fmt == "webp":
        kwargs["quality"] = 100 if lossless else q
        kwargs["lossless"] = bool(lossless)
        kwargs["method"] = 4
    elif fmt == "tiff":
        kwargs["compression"] = "tiff_adobe_deflate"
    buf = io.BytesIO()
    pil.save(buf, format={"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP",
                          "tiff": "TIFF"}[fmt], **kwargs)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike[str], img: Image, *, fmt: str | None = None,
    quality: int | None = None, lossless: bool = False,
) -> None:
    """Encode and write atomically (temp file + rename); never leaves a partial file.

    The format comes from ``fmt`` or the extension. A missing or unwritable folder raises
    :class:`RuntimeFailure`; other OS errors (disk full, ...) propagate as ``OSError`` after
    the temporary file has been removed.
    """
    p = Path(path)
    data = encode_image(img, format_for_path(p, fmt), quality=quality, lossless=lossless)
    atomic_write_bytes(p, data)


@dataclass
class PixelStream:
    """An image produced in row bands: ``bands`` yields ``(n, width, channels)`` arrays of
    ``dtype`` (uint8/uint16) top to bottom, ``height`` rows in all; iterate it once."""

    height: int
    width: int
    channels: int
    dtype: np.dtype
    bands: Iterable[np.ndarray]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.bands)

    def collect(self) -> np.ndarray:
        """The whole image ``(H, W, C)``, filled band by band into one array of ``dtype``."""
        out = np.empty((self.height, self.width, self.channels), dtype=self.dtype)
        y = 0
        for band in self:
            out[y : y + band.shape[0]] = band
            y += band.shape[0]
        if y != self.height:
            raise RuntimeError(f"pixel stream gave {y} of {self.height} rows")  # internal bug
        return out


PNG_ROWS = 128
"""Rows filtered and deflated at a time by the streamed PNG writer."""
TIFF_TILE = (64, 512)
"""Tile shape of streamed TIFF output (rows, columns); multiples of 16 as TIFF requires."""


def _stream_png(stream: PixelStream, img: Image, write: Callable[[bytes], Any]) -> None:
    exif = _exif_fixed(img.exif, stream.width, stream.height)
    enc = png16.StreamEncoder(write, stream.height, stream.width, stream.channels, stream.dtype,
                              icc=img.icc, exif=exif, dpi=img.info.get("dpi"),
                              text=img.info.get("text"))
    it = iter(stream)
    while (band := next(it, None)) is not None:
        for y in range(0, band.shape[0], PNG_ROWS):  # bounded filter/deflate temporaries
            enc.write_rows(band[y : y + PNG_ROWS])
        del band  # before the next band is computed
    enc.close()


def _stream_tiff(stream: PixelStream, img: Image, fh: Any) -> None:
    import tifffile

    th, tw = TIFF_TILE
    c = stream.channels

    def tiles() -> Iterator[np.ndarray]:
        # The < th rows left at a band's end are copied, so that nothing keeps a finished band
        # alive while the next one is computed, and only those rows (not the next band) are
        # ever concatenated.
        rest: np.ndarray | None = None
        it = iter(stream)
        while (band := next(it, None)) is not None:
            y = 0
            if rest is not None:
                need = th - rest.shape[0]
                if band.shape[0] < need:
                    rest = np.concatenate([rest, band])
                    del band
                    continue
                yield from _row_tiles(np.concatenate([rest, band[:need]]), tw)
                rest, y = None, need
            while band.shape[0] - y >= th:
                yield from _row_tiles(band[y : y + th], tw)
                y += th
            if y < band.shape[0]:
                rest = band[y:].copy()
            del band  # before the next band is computed
        if rest is not None:
            yield from _row_tiles(rest, tw)

    kwargs = {**_tiff_kwargs(img, c), "tile": (th, tw), **_tiff_buffering(th, stream)}
    shape = (stream.height, stream.width) if c == 1 else (stream.height, stream.width, c)
    if not isinstance(getattr(fh, "name", ""), str):  # os.fdopen: tifffile wants a str name
        fh = _Named(fh)
    with tifffile.TiffWriter(fh) as tw_:
        tw_.write(tiles(), shape=shape, dtype=stream.dtype, **kwargs)


def _tiff_buffering(rows: int, stream: PixelStream) -> dict[str, int]:
    """tifffile compresses tiles on a thread pool that takes up to ``buffersize`` bytes of
    tiles from the iterator at once, 512 MB by default: the whole output of most images, so the
    stream would be drained into memory before a byte is written. Limit it to one row of tiles
    (``rows`` high); a tifffile without ``buffersize`` compresses on one thread, lazily."""
    import inspect

    import tifffile

    if "buffersize" not in inspect.signature(tifffile.TiffWriter.write).parameters:
        return {"maxworkers": 1}
    row_bytes = rows * stream.width * stream.channels * np.dtype(stream.dtype).itemsize
    return {"maxworkers": min(4, os.cpu_count() or 1), "buffersize": max(1, row_bytes)}


class _Named(io.RawIOBase):
    """A seekable binary file seen with a string ``name`` (tifffile reads it)."""

    name = "output.tif"

    def __init__(self, fh: Any) -> None:
        super().__init__()
        self._fh = fh

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return int(self._fh.write(b))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._fh.seek(offset, whence))

    def tell(self) -> int:
        return int(self._fh.tell())

    def flush(self) -> None:
        self._fh.flush()


def _row_tiles(rows: np.ndarray, tw: int) -> Iterator[np.ndarray]:
    """Tiles of ``rows`` as contiguous copies (tifffile would copy the strided views anyway):
    tifffile keeps the first tile for the whole write and the last one while asking for the
    next, and a view would keep its whole band alive."""
    for x in range(0, rows.shape[1], tw):
        t = rows[:, x : x + tw]
        yield np.ascontiguousarray(t[:, :, 0] if t.shape[2] == 1 else t)


def write_image_stream(
    path: str | os.PathLike[str] | None, stream: PixelStream, img: Image, *, fmt: str,
    quality: int | None = None,
) -> None:
    """Write a :class:`PixelStream` to ``path`` atomically, or to stdout when ``path`` is None.

    ``img`` carries the metadata (ICC, EXIF, dpi, text; its pixels are not used). PNG and TIFF
    are encoded as the bands arrive (TIFF as zlib-compressed tiles), so memory stays bounded by
    a few bands; JPEG, WebP and BMP hold the 8-bit output once. Bytes for stdout are assembled
    in memory (compressed) and written at the end, so a failure writes nothing. Same pixels and
    metadata rules as :func:`encode_image`.
    """
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt.lower(), fmt.lower())
    if fmt not in ("png", "tiff"):
        data = encode_image(Image(stream.collect(), icc=img.icc, exif=img.exif,
                                  info=dict(img.info)), fmt, quality=quality)
        if path is None:
            write_stdout_bytes(data)
        else:
            atomic_write_bytes(path, data)
        return
    if path is None:
        refuse_terminal_stdout()
        buf = io.BytesIO()
        if fmt == "png":
            _stream_png(stream, img, buf.write)
        else:
            _stream_tiff(stream, img, buf)
        write_stdout_bytes(buf.getvalue())
        return
    with atomic_open(path, "wb") as fh:
        if fmt == "png":
            _stream_png(stream, img, fh.write)
        else:
            _stream_tiff(stream, img, fh)


def read_stdin_bytes() -> bytes:
    """All of stdin as bytes (the format is sniffed later from the data, see sniff_format).

    Raises UsageError when stdin is an interactive terminal (nothing was piped in) and
    InputError when it is empty.
    """
    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise UsageError("no input: stdin is closed; give a file or pipe an image into stdin")
    stream: Any = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    is_tty = False
    for s in (sys.stdin, stream):
        with contextlib.suppress(AttributeError, ValueError):
            is_tty = is_tty or bool(s.isatty())
    if is_tty:
        raise UsageError("no input: give a file or pipe an image into stdin")
    data = read_limited(stream, "<stdin>")
    if not data:
        raise InputError("<stdin>: no data")
    return data


MAX_STREAM_BYTES = 1 << 30
"""Most bytes read from stdin or from a FIFO/pipe path (1 GiB): a stream has no size to check
in advance, so an endless one (``/dev/zero`` through a pipe) is cut off here, exit 3."""


def read_limited(stream: Any, label: str) -> bytes:
    """Read ``stream`` to its end, refusing (InputError) more than :data:`MAX_STREAM_BYTES`."""
    limit = MAX_STREAM_BYTES
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        if isinstance(chunk, str):  # a text stream without .buffer (some test harnesses)
            chunk = chunk.encode("latin-1")
        parts.append(bytes(chunk))
        total += len(chunk)
        if total > limit:
            raise InputError(f"{label}: more than {limit} bytes; a stream is read up to "
                             f"{limit >> 20} MiB")
    return b"".join(parts)


def read_path_bytes(p: Path, label: str) -> bytes:
    """The bytes of an input file. Regular files are read whole and recorded as inputs of
    the run (so no output may replace them); FIFOs and sockets are read like stdin, with
    :data:`MAX_STREAM_BYTES`; devices (``/dev/zero``) are refused. InputError otherwise."""
    import stat

    from sr_cli.io.atomic import note_input

    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{label}: is a folder, not an image")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        raise InputError(f"{label}: is a device, not a file; pipe it through stdin if you "
                         "mean it")
    try:
        if not stat.S_ISREG(st.st_mode):  # FIFO, socket, /dev/fd/N of a pipe
            with open(p, "rb") as fh:
                return read_limited(fh, label)
        note_input(p)
        return p.read_bytes()
    except InputError:
        raise
    except IsADirectoryError:
        raise InputError(f"{label}: is a folder, not an image") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None


def stdout_is_terminal() -> bool:
    """True when stdout is an interactive terminal (where image bytes must not go)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


def refuse_terminal_stdout() -> None:
    """UsageError when stdout is a terminal (commands call it before any work)."""
    if stdout_is_terminal():
        raise UsageError(
            "refusing to write image data to a terminal; redirect stdout or give OUTPUT"
        )


def write_stdout_bytes(data: bytes) -> None:
    """Write binary data to stdout (looping over short writes, sr_cli.io.stdio); refuses
    (UsageError) when stdout is a terminal."""
    refuse_terminal_stdout()
    from sr_cli.io import stdio

    stdio.write_bytes(data)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8/uint16 -> float32 ``(1, C, H, W)`` in [0, 1].

    Formula: ``x / 255`` for uint8, ``x / 65535`` for uint16 (exact inverse of from_tensor).
    """
    if pixels.ndim != 3:
        raise InputError(f"expected (H, W, C) pixels, got shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        scale = 65535.0
    elif pixels.dtype == np.uint8:
        scale = 255.0
    else:
        raise InputError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(pixels).astype(np.float32) / np.float32(scale))
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(t: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """float ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1] -> ``(H, W, C)`` ``dtype``.

    Formula: ``round(clamp(x, 0, 1) * M)`` with M = 255 (uint8) or 65535 (uint16),
    round-to-nearest (exact halves go to even, as ``torch.round``); NaN becomes 0.
    """
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise InputError(f"expected a batch of one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3:
        raise InputError(f"expected (1, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise InputError(f"output dtype must be uint8 or uint16, got {dt}")
    maxv = 65535.0 if dt == np.uint16 else 255.0
    x = torch.nan_to_num(t.detach().float(), nan=0.0).clamp(0, 1)
    arr = (x * maxv).round().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr.astype(dt))
