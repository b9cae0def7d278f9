"""A small PNG codec for 8- and 16-bit gray, gray+alpha, RGB and RGBA (numpy + zlib).

Pillow cannot write 16-bit RGB/RGBA/gray+alpha PNGs and reads them as 8-bit, so ``sr``
encodes and decodes 16-bit PNGs here. (8-bit PNGs, palette and 1/2/4-bit PNGs go through
Pillow; this codec also decodes 8-bit colour types 0/2/4/6, which the tests use to check it
against Pillow.)

Decoding validates chunk CRCs, bounds the inflated size by what the header implies (a zlib
bomb cannot blow up memory), supports Adam7 interlacing and ``tRNS`` colour keys, and
unfilters with numpy: rows using only the None/Sub/Up filters are undone one row at a time
(Sub with a wrapping cumulative sum); images with Average or Paeth rows are undone along
anti-diagonals (every pixel's left, upper and upper-left neighbours lie on earlier
diagonals), so the Python loop runs H + W times, never H * W.

Encoding picks a filter per row with the libpng heuristic (least sum of absolute signed
residuals over the five filters, computed for all rows at once) and writes ``iCCP``,
``eXIf``, ``pHYs`` and text chunks.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (3 = palette: not here)
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> colour type
# Adam7 passes: (y0, x0, dy, dx)
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
          (1, 0, 2, 1))


class PNGError(ValueError):
    """Malformed, truncated or unsupported PNG data (the caller names the file)."""


@dataclass
class PNGHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


@dataclass
class PNGData:
    """Decoded pixels ``(H, W, C)`` uint8/uint16 plus the metadata chunks we carry."""

    pixels: np.ndarray
    icc: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: dict[str, str] = field(default_factory=dict)


def read_header(data: bytes) -> PNGHeader:
    """Parse the IHDR chunk only (cheap: used for the pixel-count guard before decoding)."""
    if not data.startswith(SIGNATURE):
        raise PNGError("not a PNG file")
    if len(data) < 33:
        raise PNGError("truncated PNG header")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise PNGError("PNG does not start with an IHDR chunk")
    w, h, depth, color, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return PNGHeader(w, h, depth, color, interlace)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos = 8
    n = len(data)
    while True:
        if pos + 8 > n:
            raise PNGError("truncated PNG (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > n:
            raise PNGError(f"truncated PNG (chunk {ctype.decode('latin-1')!r} cut short)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise PNGError(f"corrupt PNG (bad CRC in chunk {ctype.decode('latin-1')!r})")
        out.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            return out


ANCILLARY_LIMIT = 8 << 20
"""Most bytes one ancillary chunk (text, ICC profile, EXIF) may inflate to (8 MiB)."""
ANCILLARY_TOTAL = 32 << 20
"""Most bytes all ancillary chunks of one file may inflate to together (32 MiB)."""


def _inflate(body: bytes, what: str, budget: list[int]) -> bytes:
    """Inflate an ancillary chunk, refusing more than :data:`ANCILLARY_LIMIT` bytes (or what
    is left of ``budget``): a zlib bomb in a text chunk or ICC profile is bad input."""
    cap = min(ANCILLARY_LIMIT, budget[0])
    dec = zlib.decompressobj()
    out = dec.decompress(body, cap + 1)
    if len(out) > cap or (dec.unconsumed_tail and len(out) >= cap):
        raise PNGError(f"PNG {what} chunk inflates beyond {cap >> 20} MiB "
                       "(decompression bomb?)")
    budget[0] -= len(out)
    return out


def check_chunks(data: bytes) -> None:
    """Validate a PNG's chunk structure the same way for every bit depth, before any
    decoder sees it: every chunk complete with a correct CRC, an IEND, and ancillary chunks
    (zTXt, compressed iTXt, iCCP, and the raw size of every other ancillary chunk) within
    :data:`ANCILLARY_LIMIT` each and :data:`ANCILLARY_TOTAL` together. Raises PNGError."""
    budget = [ANCILLARY_TOTAL]
    for ctype, body in _chunks(data):
        if ctype in (b"IDAT", b"fdAT", b"IHDR", b"IEND", b"PLTE"):
            continue
        if len(body) > ANCILLARY_LIMIT or len(body) > budget[0]:
            raise PNGError(f"PNG {ctype.decode('latin-1')!r} chunk is larger than "
                           f"{ANCILLARY_LIMIT >> 20} MiB")
        budget[0] -= len(body)
        _ancillary(ctype, body, budget)


def _ancillary(ctype: bytes, body: bytes, budget: list[int]) -> bytes | None:
    """The inflated payload of a compressed ancillary chunk (None when not compressed or
    damaged: damaged ancillary chunks are skipped, like libpng). PNGError on a bomb."""
    try:
        if ctype == b"zTXt":
            _k, _, rest = body.partition(b"\x00")
            return _inflate(rest[1:], "zTXt", budget)
        if ctype == b"iCCP":
            name_end = body.find(b"\x00")
            return _inflate(body[name_end + 2:], "iCCP", budget) if name_end >= 0 else None
        if ctype == b"iTXt":
            _k, _, rest = body.partition(b"\x00")
            if rest[:1] == b"\x01":
                _lang, _, rest = rest[2:].partition(b"\x00")
                _tkey, _, val = rest.partition(b"\x00")
                return _inflate(val, "iTXt", budget)
    except (zlib.error, IndexError):
        return None
    return None


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Paeth predictor on int arrays (same shapes)."""
    pa = np.abs(b - c)
    pb = np.abs(a - c)
    pc = np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw: np.ndarray, h: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG filtering. ``raw``: uint8 ``(h, 1 + stride)``; returns uint8 ``(h, stride)``."""
    ftypes = raw[:, 0]
    if ftypes.size and int(ftypes.max()) > 4:
        raise PNGError(f"corrupt PNG (unknown filter type {int(ftypes.max())})")
    filt = raw[:, 1:]
    if not np.any(ftypes >= 3):
        out = np.empty((h, stride), dtype=np.uint8)
        prev = np.zeros(stride, dtype=np.uint8)
        w = stride // bpp
        for y in range(h):
            f = int(ftypes[y])
            row = filt[y]
            if f == 0:
                cur = row
            elif f == 1:
                cur = np.cumsum(row.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(stride)
            else:
                cur = row + prev  # uint8 arithmetic wraps mod 256
            out[y] = cur
            prev = out[y]
        return out
    # Wavefront over anti-diagonals y + x = k. In a zero-padded (h + 1, w + 1) pixel grid
    # stored flat, the pixels of one diagonal are equally spaced (step w), so each diagonal
    # and its left / up / up-left neighbours are strided views: no fancy indexing.
    w = stride // bpp
    wp = w + 1
    rec = np.zeros(((h + 1) * wp + 1, bpp), dtype=np.int16)
    fil = np.zeros_like(rec)
    fil[: (h + 1) * wp].reshape(h + 1, wp, bpp)[1:, 1:] = filt.reshape(h, w, bpp)
    ft = ftypes.astype(np.int16)
    for k in range(h + w - 1):
        y0 = max(0, k - w + 1)
        y1 = min(h, k + 1)
        start = (y0 + 1) * wp + (k - y0) + 1  # flat index of pixel (y0, k - y0), padded grid
        sl = slice(start, start + (y1 - y0 - 1) * w + 1, w)
        a = rec[start - 1:start - 1 + (y1 - y0 - 1) * w + 1:w]  # left
        b = rec[start - wp:start - wp + (y1 - y0 - 1) * w + 1:w]  # up
        c = rec[start - wp - 1:start - wp - 1 + (y1 - y0 - 1) * w + 1:w]  # up-left
        t = ft[y0:y1, None]
        pred = np.where(t == 4, _paeth(a, b, c),
                        np.where(t == 3, (a + b) >> 1,
                                 np.where(t == 1, a, np.where(t == 2, b, 0))))
        rec[sl] = (fil[sl] + pred) & 0xFF
    grid = rec[: (h + 1) * wp].reshape(h + 1, wp, bpp)
    return grid[1:, 1:].astype(np.uint8).reshape(h, stride)


def _decode_pass(buf: memoryview | bytes, pos: int, h: int, w: int, ch: int, depth: int
                 ) -> tuple[np.ndarray, int]:
    bps = depth // 8
    bpp = ch * bps
    stride = w * bpp
    need = h * (stride + 1)
    if pos + need > len(buf):
        raise PNGError("truncated PNG (image data cut short)")
    raw = np.frombuffer(buf, dtype=np.uint8, count=need, offset=pos).reshape(h, stride + 1)
    rows = _unfilter(raw, h, stride, bpp)
    if depth == 16:
        px = rows.reshape(h, w, ch, 2).astype(np.uint16)
        return (px[..., 0] << 8) | px[..., 1], pos + need
    return rows.reshape(h, w, ch), pos + need


def decode(data: bytes) -> PNGData:
    """Decode a non-palette 8/16-bit PNG into ``(H, W, C)`` (C grows by one for a tRNS key)."""
    hdr = read_header(data)
    if hdr.color_type not in _CHANNELS or hdr.bit_depth not in (8, 16):
        raise PNGError(f"PNG colour type {hdr.color_type} / {hdr.bit_depth}-bit not handled here")
    if hdr.width == 0 or hdr.height == 0:
        raise PNGError("image has zero size")
    if hdr.interlace not in (0, 1):
        raise PNGError(f"unknown interlace method {hdr.interlace}")
    ch = _CHANNELS[hdr.color_type]
    h, w, depth = hdr.height, hdr.width, hdr.bit_depth
    idat: list[bytes] = []
    out = PNGData(pixels=np.zeros((0, 0, ch), np.uint8))
    trns: bytes | None = None
    budget = [ANCILLARY_TOTAL]
    for ctype, body in _chunks(data):
        if ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"iCCP":
            out.icc = _ancillary(ctype, body, budget)
        elif ctype == b"eXIf":
            out.exif = b"Exif\x00\x00" + body
        elif ctype == b"pHYs" and len(body) == 9:
            px, py, unit = struct.unpack(">IIB", body)
            if unit == 1:
                out.dpi = (px * 0.0254, py * 0.0254)
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            _read_text(ctype, body, out.text, budget)
    if not idat:
        raise PNGError("PNG has no image data")
    bps = depth // 8
    if hdr.interlace == 0:
        expected = h * (w * ch * bps + 1)
    else:
        expected = 0
        for y0, x0, dy, dx in _ADAM7:
            ph, pw = (h - y0 + dy - 1) // dy, (w - x0 + dx - 1) // dx
            if ph > 0 and pw > 0:
                expected += ph * (pw * ch * bps + 1)
    dec = zlib.decompressobj()
    try:
        buf = dec.decompress(b"".join(idat), expected)
    except zlib.error as exc:
        raise PNGError(f"corrupt PNG image data ({exc})") from None
    if len(buf) < expected:
        raise PNGError("truncated PNG (image data cut short)")
    dtype = np.uint16 if depth == 16 else np.uint8
    if hdr.interlace == 0:
        pixels, _ = _decode_pass(buf, 0, h, w, ch, depth)
    else:
        pixels = np.zeros((h, w, ch), dtype=dtype)
        pos = 0
        for y0, x0, dy, dx in _ADAM7:
            ph, pw = (h - y0 + dy - 1) // dy, (w - x0 + dx - 1) // dx
            if ph <= 0 or pw <= 0:
                continue
            sub, pos = _decode_pass(buf, pos, ph, pw, ch, depth)
            pixels[y0::dy, x0::dx] = sub
    pixels = pixels.astype(dtype, copy=False)
    if trns is not None and hdr.color_type in (0, 2):
        pixels = _apply_color_key(pixels, trns, hdr.color_type, depth)
    out.pixels = np.ascontiguousarray(pixels)
    return out


def _apply_color_key(pixels: np.ndarray, trns: bytes, color_type: int, depth: int) -> np.ndarray:
    n = 1 if color_type == 0 else 3
    if len(trns) < 2 * n:
        return pixels
    key = np.array(struct.unpack(f">{n}H", trns[:2 * n]), dtype=np.int64)
    if depth == 8:
        key &= 0xFF
    maxv = 65535 if depth == 16 else 255
    match = np.all(pixels.astype(np.int64) == key, axis=2)
    alpha = np.where(match, 0, maxv).astype(pixels.dtype)[:, :, None]
    return np.concatenate([pixels, alpha], axis=2)


def _read_text(ctype: bytes, body: bytes, text: dict[str, str], budget: list[int]) -> None:
    try:
        if ctype == b"tEXt":
            k, _, v = body.partition(b"\x00")
            text[k.decode("latin-1")] = v.decode("latin-1")
        elif ctype == b"zTXt":
            k, _, _rest = body.partition(b"\x00")
            val = _ancillary(ctype, body, budget)
            if val is not None:
                text[k.decode("latin-1")] = val.decode("latin-1")
        else:
            k, _, rest = body.partition(b"\x00")
            comp_flag = rest[0]
            _lang, _, rest = rest[2:].partition(b"\x00")
            _tkey, _, val = rest.partition(b"\x00")
            if comp_flag:
                inflated = _ancillary(ctype, body, budget)
                if inflated is None:
                    return
                val = inflated
            text[k.decode("latin-1")] = val.decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError):
        return  # a damaged ancillary chunk is skipped, like libpng does


# ----------------------------------------------------------------------------- encoding


def _filter_rows(rows: np.ndarray, bpp: int, prev: np.ndarray | None = None) -> np.ndarray:
    """Filter ``rows`` uint8 ``(h, stride)`` adaptively; returns ``(h, 1 + stride)`` uint8.
    ``prev`` is the row above the first one (None: the image's first row).

    Per row, the filter with the least sum of absolute residuals (bytes read as signed) wins,
    as in libpng. Residuals are computed in wrapping uint8 arithmetic, Paeth in int16.
    """
    h, stride = rows.shape
    out = np.empty((h, stride + 1), dtype=np.uint8)
    chunk = max(1, (1 << 21) // max(stride, 1))  # bound temporary memory (~ 2 M bytes a row set)
    zero_row = np.zeros((1, stride), np.uint8) if prev is None else prev.reshape(1, stride)
    for y0 in range(0, h, chunk):
        y1 = min(h, y0 + chunk)
        cur = rows[y0:y1]
        up = rows[y0 - 1:y1 - 1] if y0 > 0 else np.vstack([zero_row, rows[0:y1 - 1]])
        left = np.zeros_like(cur)
        left[:, bpp:] = cur[:, :-bpp]
        upleft = np.zeros_like(cur)
        upleft[:, bpp:] = up[:, :-bpp]
        avg = ((left.astype(np.uint16) + up) >> 1).astype(np.uint8)
        paeth = _paeth(left.astype(np.int16), up.astype(np.int16),
                       upleft.astype(np.int16)).astype(np.uint8)
        cands = np.stack([cur, cur - left, cur - up, cur - avg, cur - paeth])  # wraps mod 256
        cost = np.minimum(cands, 0 - cands).sum(axis=2, dtype=np.uint32)  # |signed byte|
        best = np.argmin(cost, axis=0)
        out[y0:y1, 0] = best
        out[y0:y1, 1:] = np.take_along_axis(cands, best[None, :, None], axis=0)[0]
    return out


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(
        ">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def encode(pixels: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None,
           dpi: tuple[float, float] | None = None, text: dict[str, Any] | None = None,
           level: int = 6) -> bytes:
    """Encode ``(H, W, C)`` uint8/uint16 (C = 1..4) as a non-interlaced PNG."""
    if pixels.ndim != 3:
        raise PNGError(f"cannot encode layout {pixels.shape} as PNG")
    h, w, ch = pixels.shape
    out: list[bytes] = []
    enc = StreamEncoder(out.append, h, w, ch, pixels.dtype, icc=icc, exif=exif, dpi=dpi,
                        text=text, level=level)
    enc.write_rows(pixels)
    enc.close()
    return b"".join(out)


class StreamEncoder:
    """Encode a PNG whose rows arrive in bands: header chunks at once, then each band is
    filtered (continuing from the previous band's last row), deflated by one running
    ``zlib.compressobj`` and written as IDAT chunks, so memory stays O(band), not O(image).

    ``write(bytes)`` receives the file bytes in order. Rows must total ``height``.
    """

    def __init__(self, write: Any, height: int, width: int, channels: int, dtype: Any, *,
                 icc: bytes | None = None, exif: bytes | None = None,
                 dpi: tuple[float, float] | None = None, text: dict[str, Any] | None = None,
                 level: int = 6) -> None:
        if channels not in _COLOR_TYPE:
            raise PNGError(f"cannot encode {channels} channels as PNG")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise PNGError(f"cannot encode {dt} as PNG")
        if height <= 0 or width <= 0:
            raise PNGError("cannot encode an empty image")
        self._write = write
        self.height, self.width, self.channels = height, width, channels
        self.depth = 16 if dt == np.uint16 else 8
        self.dtype = dt
        self._rows = 0
        self._prev: np.ndarray | None = None
        self._z = zlib.compressobj(level)
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._header(icc, exif, dpi, text)

    def _header(self, icc: bytes | None, exif: bytes | None, dpi: tuple[float, float] | None,
                text: dict[str, Any] | None) -> None:
        w, h, ch, depth = self.width, self.height, self.channels, self.depth
        parts = [SIGNATURE,
                 _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPE[ch], 0, 0, 0))]
        if icc:
            parts.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
        if dpi:
            ppm = [max(1, round(float(d) / 0.0254)) for d in dpi[:2]]
            parts.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
        for key, val in (text or {}).items():
            k = str(key)[:79].encode("latin-1", "replace")
            try:
                parts.append(_chunk(b"tEXt", k + b"\x00" + str(val).encode("latin-1")))
            except UnicodeEncodeError:
                parts.append(_chunk(b"iTXt", k + b"\x00\x00\x00\x00\x00"
                                   + str(val).encode("utf-8")))
        if exif:
            body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
            parts.append(_chunk(b"eXIf", body))
        self._write(b"".join(parts))

    def write_rows(self, pixels: np.ndarray) -> None:
        """Append rows ``(n, W, C)`` of the encoder's dtype."""
        n = pixels.shape[0]
        if pixels.shape[1:] != (self.width, self.channels) or pixels.dtype != self.dtype:
            raise PNGError(f"rows of shape {pixels.shape} {pixels.dtype} do not fit a "
                           f"{self.width}x{self.height}x{self.channels} {self.dtype} PNG")
        if self._rows + n > self.height:
            raise PNGError("more rows than the PNG's height")
        ch = self.channels
        if self.depth == 16:
            rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8)
        else:
            rows = np.ascontiguousarray(pixels)
        rows = rows.reshape(n, -1)
        filtered = _filter_rows(rows, ch * self.depth // 8, self._prev)
        self._prev = rows[-1].copy()
        self._rows += n
        data = self._z.compress(filtered.tobytes())
        if data:
            self._pending.append(data)
            self._pending_len += len(data)
        if self._pending_len >= 1 << 20:
            self._flush_idat()

    def _flush_idat(self) -> None:
        if self._pending:
            self._write(_chunk(b"IDAT", b"".join(self._pending)))
        self._pending, self._pending_len = [], 0

    def close(self) -> None:
        """Finish the stream (all rows must have been written)."""
        if self._rows != self.height:
            raise PNGError(f"PNG stream ended after {self._rows} of {self.height} rows")
        self._pending.append(self._z.flush())
        self._flush_idat()
        self._write(_chunk(b"IEND", b""))
