"""Image I/O: formats, bit depths, metadata, orientation, guards, atomic writes, stdio."""

from __future__ import annotations

import errno
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageOps

from sr_cli.errors import InputError, RuntimeFailure, UsageError
from sr_cli.io import atomic, png16
from sr_cli.io import images as I
from sr_cli.io.images import Image, encode_image, read_image, write_image
from tests.conftest import synthetic_image

LOSSLESS = ("png", "tiff")
DTYPES = (np.uint8, np.uint16)


def _pil_bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    im = arr if isinstance(arr, PILImage.Image) else PILImage.fromarray(
        arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", LOSSLESS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_lossless_roundtrip_exact(tmp_path: Path, fmt: str, dtype: type, c: int) -> None:
    a = synthetic_image(21, 34, c, seed=c, dtype=dtype)
    p = tmp_path / f"x.{fmt}"
    write_image(p, Image(a))
    r = read_image(p)
    assert r.pixels.dtype == dtype and r.pixels.shape == (21, 34, c)
    assert np.array_equal(r.pixels, a)
    assert r.format == fmt and r.bit_depth == (16 if dtype == np.uint16 else 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_bmp_roundtrip_and_rules(tmp_path: Path, dtype: type, c: int) -> None:
    a = synthetic_image(13, 17, c, dtype=dtype)
    p = tmp_path / "x.bmp"
    write_image(p, Image(a))
    r = read_image(p)
    exp = I.to_8bit(a)[:, :, : (c - 1 if c in (2, 4) else c)]  # 8 bits, alpha dropped
    assert r.pixels.dtype == np.uint8 and np.array_equal(r.pixels, exp)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_lossy_roundtrip_close(fmt: str, dtype: type, c: int) -> None:
    a = synthetic_image(32, 48, c, seed=3, dtype=dtype)
    r = read_image(encode_image(Image(a), fmt, quality=95))
    exp = I.output_pixels(a, fmt)
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == exp.shape
    expected_c = {"jpeg": {1: 1, 2: 1, 3: 3, 4: 3}, "webp": {1: 3, 2: 4, 3: 3, 4: 4}}[fmt][c]
    assert r.pixels.shape[2] == expected_c
    err = np.abs(r.pixels.astype(float) - exp.astype(float))
    # lossy WebP always subsamples chroma 4:2:0; the test image has per-channel noise
    assert err.mean() < (6.0 if fmt == "jpeg" else 12.0), err.mean()


def test_quality_changes_size_and_webp_lossless_is_exact() -> None:
    a = synthetic_image(48, 64, 3, seed=5)
    small = encode_image(Image(a), "jpeg", quality=20)
    big = encode_image(Image(a), "jpeg", quality=98)
    assert len(small) < len(big)
    r = read_image(encode_image(Image(a), "webp", lossless=True))
    assert np.array_equal(r.pixels, a)
    with pytest.raises(UsageError):
        encode_image(Image(a), "jpeg", quality=0)
    from PIL import JpegImagePlugin

    def sub(data: bytes) -> int:
        return JpegImagePlugin.get_sampling(PILImage.open(io.BytesIO(data)))

    assert sub(encode_image(Image(a), "jpeg", quality=95)) == 0  # 4:4:4
    assert sub(encode_image(Image(a), "jpeg", quality=80)) == 2  # 4:2:0
    assert sub(encode_image(Image(a), "jpeg", quality=95, jpeg_subsampling="4:2:0")) == 2


def test_16_to_8_bit_rule_rounds_to_nearest() -> None:
    v = np.array([0, 128, 129, 257, 385, 386, 65535, 65406, 65407], dtype=np.uint16)
    got = I.to_8bit(v.reshape(1, -1, 1)).ravel()
    assert got.tolist() == np.round(v / 257.0).astype(int).tolist()
    assert got.tolist() == [0, 0, 1, 1, 1, 2, 255, 254, 255]


# --------------------------------------------------------------------- PNG 16-bit codec


@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_png16_readable_by_pillow(c: int) -> None:
    a = synthetic_image(19, 23, c, seed=7, dtype=np.uint16)
    data = encode_image(Image(a), "png")
    hdr = png16.read_header(data)
    assert hdr.bit_depth == 16 and hdr.color_type == {1: 0, 2: 4, 3: 2, 4: 6}[c]
    pil = PILImage.open(io.BytesIO(data))
    pil.load()  # Pillow validates CRCs and inflates the data
    got = np.asarray(pil)
    if c == 1:  # Pillow keeps 16-bit gray exactly
        assert got.dtype == np.uint16 and np.array_equal(got, a[:, :, 0])
    elif c in (3, 4):  # Pillow reduces 16-bit colour to the high byte
        assert np.array_equal(got, (a >> 8).astype(np.uint8))


def _filtered_png(a: np.ndarray, ftypes: list[int], interlace: bool = False) -> bytes:
    """Hand-made PNG (8 or 16 bit) with the given per-row filter types (cycled)."""
    h, w, c = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    bpp = c * depth // 8

    def rows_of(sub: np.ndarray) -> np.ndarray:
        sh, sw = sub.shape[:2]
        if depth == 16:
            return sub.astype(">u2").view(np.uint8).reshape(sh, sw * bpp).astype(np.int32)
        return sub.reshape(sh, sw * bpp).astype(np.int32)

    def filt(sub: np.ndarray, offset: int) -> bytes:
        x = rows_of(sub)
        out = bytearray()
        prev = np.zeros(x.shape[1], np.int32)
        for y in range(x.shape[0]):
            f = ftypes[(y + offset) % len(ftypes)]
            cur = x[y]
            left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
            ul = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
            pa, pb, pc = np.abs(prev - ul), np.abs(left - ul), np.abs(left + prev - 2 * ul)
            paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
            pred = [0 * cur, left, prev, (left + prev) // 2, paeth][f]
            out += bytes([f]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes()
            prev = cur
        return bytes(out)

    if interlace:
        raw = b""
        for k, (y0, x0, dy, dx) in enumerate(png16._ADAM7):
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += filt(sub, k)
    else:
        raw = filt(a, 0)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0,
                       1 if interlace else 0)
    return (png16.SIGNATURE + png16._chunk(b"IHDR", ihdr)
            + png16._chunk(b"IDAT", zlib.compress(raw)) + png16._chunk(b"IEND", b""))


@pytest.mark.parametrize("ftypes", [[0], [1], [2], [3], [4], [4, 1, 3, 0, 2, 2, 4]])
@pytest.mark.parametrize("dtype", DTYPES)
def test_png_unfilter_every_filter(ftypes: list[int], dtype: type) -> None:
    a = synthetic_image(11, 14, 3, seed=11, dtype=dtype)
    data = _filtered_png(a, ftypes)
    assert np.array_equal(png16.decode(data).pixels, a)
    if dtype == np.uint8:  # cross-check the hand-made file with Pillow
        assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(data))), a)


@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_png16_adam7_interlaced(c: int) -> None:
    a = synthetic_image(13, 10, c, seed=2, dtype=np.uint16)
    r = read_image(_filtered_png(a, [4, 1, 3, 2, 0], interlace=True))
    assert np.array_equal(r.pixels, a)


def test_png8_decoder_agrees_with_pillow() -> None:
    for c in (1, 2, 3, 4):
        a = synthetic_image(40, 33, c, seed=c)
        data = _pil_bytes(a, "PNG")  # Pillow picks filters adaptively
        assert np.array_equal(png16.decode(data).pixels, a)


def test_png16_color_key_trns_gives_alpha() -> None:
    a = synthetic_image(6, 7, 3, dtype=np.uint16)
    a[2, 3] = (1000, 2000, 3000)
    data = png16.encode(a)
    trns = png16._chunk(b"tRNS", struct.pack(">3H", 1000, 2000, 3000))
    pos = data.index(b"IDAT") - 4
    r = read_image(data[:pos] + trns + data[pos:])
    assert r.pixels.shape == (6, 7, 4) and r.pixels.dtype == np.uint16
    assert r.pixels[2, 3, 3] == 0 and (r.pixels[..., 3] == 0).sum() == 1
    assert np.array_equal(r.pixels[..., :3], a)


# ------------------------------------------------------------------ palettes, 1-bit, gray


def test_palette_png_to_rgb_and_rgba() -> None:
    idx = (np.arange(6 * 8).reshape(6, 8) % 4).astype(np.uint8)
    pal = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    im = PILImage.fromarray(idx, "P")
    im.putpalette(pal + [0] * (768 - len(pal)))
    r = read_image(_pil_bytes(im, "PNG"))
    lut = np.array(pal, np.uint8).reshape(4, 3)
    assert r.pixels.shape == (6, 8, 3) and np.array_equal(r.pixels, lut[idx])
    r2 = read_image(_pil_bytes(im, "PNG", transparency=bytes([255, 0, 128, 255])))
    assert r2.pixels.shape == (6, 8, 4)
    assert np.array_equal(r2.pixels[..., :3], lut[idx])
    assert np.array_equal(r2.pixels[..., 3], np.array([255, 0, 128, 255], np.uint8)[idx])


def test_one_bit_and_gray_trns() -> None:
    bits = (np.indices((9, 12)).sum(0) % 2).astype(bool)
    r = read_image(_pil_bytes(PILImage.fromarray(bits), "PNG"))
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (9, 12, 1)
    assert set(np.unique(r.pixels).tolist()) == {0, 255}
    assert np.array_equal(r.pixels[..., 0] == 255, bits)
    g = synthetic_image(5, 6, 1)[..., 0]
    g[0, 0] = 77
    r2 = read_image(_pil_bytes(PILImage.fromarray(g), "PNG", transparency=77))
    assert r2.pixels.shape == (5, 6, 2) and r2.pixels[0, 0, 1] == 0


def test_animated_gif_and_webp_first_frame() -> None:
    frames = [PILImage.fromarray(np.full((8, 9, 3), v, np.uint8)) for v in (40, 200)]
    for fmt in ("GIF", "WEBP"):
        buf = io.BytesIO()
        kw = {"lossless": True} if fmt == "WEBP" else {}
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50, **kw)
        r = read_image(buf.getvalue())
        assert r.pixels.shape[:2] == (8, 9)
        assert abs(int(r.pixels[..., :3].mean()) - 40) <= 2, fmt


# --------------------------------------------------------------- orientation and metadata


def _oriented(fmt: str, o: int) -> bytes:
    a = np.zeros((16, 24, 3), np.uint8)  # asymmetric blocks so every transform differs
    a[:8, :8] = (255, 0, 0)
    a[:8, 16:] = (0, 255, 0)
    a[8:, 8:16] = (0, 0, 255)
    im = PILImage.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = o
    exif[0x010F] = "TestCam"
    kw = {"quality": 100} if fmt == "JPEG" else {}
    return _pil_bytes(im, fmt, exif=exif.tobytes(), **kw)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("o", range(1, 9))
def test_exif_orientation_applied_and_reset(fmt: str, o: int) -> None:
    data = _oriented(fmt, o)
    want = np.asarray(ImageOps.exif_transpose(PILImage.open(io.BytesIO(data))))
    r = read_image(data)
    assert r.pixels.shape[:2] == ((24, 16) if o >= 5 else (16, 24))
    assert np.array_equal(r.pixels, want.reshape(r.pixels.shape))
    ex = PILImage.Exif()
    ex.load(r.exif)
    assert ex.get(0x0112) == 1 and ex.get(0x010F) == "TestCam"
    # the EXIF written to the output says "upright" too, so viewers do not rotate again
    for out_fmt in ("jpeg", "png", "webp"):
        back = PILImage.open(io.BytesIO(encode_image(r, out_fmt)))
        assert back.getexif().get(0x0112) == 1, out_fmt
        assert back.getexif().get(0x010F) == "TestCam", out_fmt


def test_orientation_on_16bit_png() -> None:
    a = synthetic_image(5, 9, 3, dtype=np.uint16)
    ex = PILImage.Exif()
    ex[0x0112] = 6
    r = read_image(png16.encode(a, exif=ex.tobytes()))
    assert np.array_equal(r.pixels, np.rot90(a, k=-1))


@pytest.mark.parametrize("fmt,dtype", [("png", np.uint8), ("png", np.uint16),
                                       ("jpeg", np.uint8), ("webp", np.uint8),
                                       ("tiff", np.uint8), ("tiff", np.uint16)])
def test_icc_profile_kept(fmt: str, dtype: type) -> None:
    icc = _srgb_icc()
    a = synthetic_image(10, 12, 3, dtype=dtype)
    r = read_image(encode_image(Image(a, icc=icc), fmt))
    assert r.icc == icc
    # and the profile travels on: read -> write another format -> read
    r2 = read_image(encode_image(r, "png"))
    assert r2.icc == icc


@pytest.mark.parametrize("dtype", DTYPES)
def test_png_text_dpi_exif_kept(dtype: type) -> None:
    ex = PILImage.Exif()
    ex[0x010F] = "TestCam"
    a = synthetic_image(6, 8, 4, dtype=dtype)
    img = Image(a, exif=ex.tobytes(), info={"dpi": (300.0, 150.0),
                                           "text": {"Title": "café", "Author": "me"}})
    r = read_image(encode_image(img, "png"))
    assert r.info["dpi"] == (300.0, 150.0)
    assert r.info["text"] == {"Title": "café", "Author": "me"}
    assert PILImage.open(io.BytesIO(encode_image(r, "jpeg"))).getexif()[0x010F] == "TestCam"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp", "tiff"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_full_metadata_writes_everywhere(fmt: str, dtype: type) -> None:
    ex = PILImage.Exif()
    ex[0x010F] = "TestCam"
    ex[0x0112] = 1
    img = Image(synthetic_image(6, 8, 3, dtype=dtype), icc=_srgb_icc(), exif=ex.tobytes(),
                info={"dpi": (300.0, 300.0), "text": {"k": "v"}})
    r = read_image(encode_image(img, fmt))
    assert r.pixels.shape == (6, 8, 3)
    if fmt != "webp":
        assert r.info["dpi"] == (300.0, 300.0)


def test_jpeg_dpi_and_pillow_bomb_warning_silenced() -> None:
    r = read_image(_pil_bytes(synthetic_image(8, 8, 3), "JPEG", dpi=(72, 72)))
    assert r.info["dpi"] == (72.0, 72.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
        big = _huge_png(20000, 20000, depth=8)  # 400 M pixels: Pillow warns above 89 M
        with pytest.raises(InputError, match="truncated|decode|corrupt"):
            read_image(big, max_pixels=0)


# ---------------------------------------------------------------------- guards and errors


def _huge_png(w: int, h: int, depth: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0)
    return (png16.SIGNATURE + png16._chunk(b"IHDR", ihdr)
            + png16._chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png16._chunk(b"IEND", b""))


@pytest.mark.parametrize("depth", [8, 16])
def test_bomb_guard_before_decoding(depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(png16, "decode", boom)
    monkeypatch.setattr(PILImage.Image, "load", boom)
    with pytest.raises(InputError, match=r"100000x100000 .* exceeds the limit"):
        read_image(_huge_png(100_000, 100_000, depth), name="bomb.png")


def test_bomb_guard_jpeg_header_and_small_limit() -> None:
    data = bytearray(_pil_bytes(synthetic_image(16, 16, 3), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(InputError, match="60000x60000"):
        read_image(bytes(data))
    small = encode_image(Image(synthetic_image(20, 30, 3)), "png")
    with pytest.raises(InputError, match="exceeds the limit of 599"):
        read_image(small, max_pixels=599)
    assert read_image(small, max_pixels=600).pixels.shape == (20, 30, 3)


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("make", [
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3)), "png")),
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3, dtype=np.uint16)), "png")),
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3)), "jpeg")),
    lambda: encode_image(Image(synthetic_image(40, 40, 3)), "jpeg")[:-40],
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3)), "webp")),
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3)), "bmp")),
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3)), "tiff")),
    lambda: _cut(encode_image(Image(synthetic_image(40, 40, 3, dtype=np.uint16)), "tiff")),
    lambda: b"hello, this is not an image\n",
    lambda: png16.SIGNATURE + b"\x00\x00",
], ids=["png8-half", "png16-half", "jpeg-half", "jpeg-cut-short", "webp-half", "bmp-half",
        "tiff-half", "tiff16-half", "text", "png-stub"])
def test_truncated_or_corrupt_is_input_error(make) -> None:
    with pytest.raises(InputError) as ei:
        read_image(make(), name="bad.img")
    msg = str(ei.value)
    assert msg.startswith("bad.img: ") and "\n" not in msg


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_crc_and_zero_size(dtype: type) -> None:
    data = bytearray(encode_image(Image(synthetic_image(8, 8, 3, dtype=dtype)), "png"))
    i = data.index(b"IDAT") + 10
    data[i] ^= 0xFF
    with pytest.raises(InputError):
        read_image(bytes(data))
    with pytest.raises(InputError, match="zero size"):
        read_image(_huge_png(0, 10, 8 if dtype == np.uint8 else 16))


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(empty)


# -------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as fh:
        fh.write(b"partial data")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_write_image_enospc_is_runtime_failure_and_cleans(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(RuntimeFailure, match="a.png: cannot write .no space left on device"):
        write_image(tmp_path / "a.png", Image(synthetic_image(8, 8, 3)))
    assert os.listdir(tmp_path) == []


def test_write_image_bad_folder_is_runtime_failure(tmp_path: Path) -> None:
    img = Image(synthetic_image(8, 8, 3))
    with pytest.raises(RuntimeFailure, match="does not exist"):
        write_image(tmp_path / "nope" / "a.png", img)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(RuntimeFailure):
        write_image(tmp_path / "file" / "a.png", img)
    with pytest.raises(UsageError, match="is a folder"):  # output policy: exit 2
        write_image(tmp_path, img, fmt="png")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(RuntimeFailure, match="permission denied"):
                write_image(ro / "a.png", img)
        finally:
            ro.chmod(0o700)


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    write_image(p, Image(synthetic_image(4, 4, 3)))
    assert p.stat().st_mode & 0o044  # readable by others (not mkstemp's 0600) under umask 022
    assert read_image(p).pixels.shape == (4, 4, 3)


def test_format_for_path_and_sniff() -> None:
    assert I.format_for_path(Path("a.JPG")) == "jpeg"
    assert I.format_for_path(Path("a.tif")) == "tiff"
    assert I.format_for_path(Path("a.xyz"), "tif") == "tiff"
    with pytest.raises(UsageError):
        I.format_for_path(Path("a.xyz"))
    for fmt in ("png", "jpeg", "webp", "bmp", "tiff"):
        data = encode_image(Image(synthetic_image(4, 4, 3)), fmt)
        assert I.sniff_format(data) == fmt
        assert read_image(data).format == fmt
    assert I.sniff_format(b"nope") is None


# ---------------------------------------------------------------------------------- stdio


class _FakeStream:
    def __init__(self, data: bytes = b"", tty: bool = False) -> None:
        self.buffer = io.BytesIO(data)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_stdin_refuses_terminal_and_reads_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I.sys, "stdin", _FakeStream(tty=True))
    with pytest.raises(UsageError):
        I.read_stdin_bytes()
    monkeypatch.setattr(I.sys, "stdin", _FakeStream(b""))
    with pytest.raises(InputError):
        I.read_stdin_bytes()
    data = encode_image(Image(synthetic_image(5, 6, 3)), "webp", lossless=True)
    monkeypatch.setattr(I.sys, "stdin", _FakeStream(data))
    r = read_image(I.read_stdin_bytes())
    assert r.format == "webp" and r.pixels.shape == (5, 6, 3)


def test_stdout_refuses_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I.sys, "stdout", _FakeStream(tty=True))
    with pytest.raises(UsageError):
        I.write_stdout_bytes(b"\x89PNG")
    fake = _FakeStream()
    monkeypatch.setattr(I.sys, "stdout", fake)
    I.write_stdout_bytes(b"\x89PNG")
    assert fake.buffer.getvalue() == b"\x89PNG"


# ---------------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_roundtrip_exact(dtype: type) -> None:
    a = synthetic_image(9, 7, 3, dtype=dtype)
    t = I.to_tensor(a)
    assert t.shape == (1, 3, 9, 7) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert np.array_equal(I.from_tensor(t, dtype), a)
    full = np.array([[[0, np.iinfo(dtype).max]]], dtype=dtype).transpose(0, 2, 1)
    assert I.to_tensor(full).flatten().tolist() == [0.0, 1.0]


def test_from_tensor_rounding_and_validation() -> None:
    t = torch.tensor([0.4 / 255, 0.6 / 255, 1.5, -2.0, float("nan")]).view(1, 1, 1, 5)
    assert I.from_tensor(t).ravel().tolist() == [0, 1, 255, 0, 0]
    assert I.from_tensor(t, np.uint16).ravel().tolist()[:2] == [round(0.4 * 257),
                                                                round(0.6 * 257)]
    with pytest.raises(InputError):
        I.from_tensor(t, np.float32)
    with pytest.raises(InputError):
        I.to_tensor(np.zeros((2, 2, 1), np.float32))


def test_cmyk_jpeg_becomes_rgb_without_its_cmyk_profile() -> None:
    im = PILImage.new("CMYK", (8, 8), (0, 255, 0, 0))  # magenta ink
    r = read_image(_pil_bytes(im, "JPEG", icc_profile=b"cmyk-profile", quality=100))
    assert r.pixels.shape == (8, 8, 3)
    assert abs(int(r.pixels[0, 0, 0]) - 255) <= 2 and int(r.pixels[0, 0, 1]) <= 2
    assert r.icc is None  # a CMYK profile must not be attached to RGB pixels
