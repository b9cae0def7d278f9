"""A minimal streaming Matroska writer for raw RGB frames with exact timestamps.

ffmpeg's rawvideo pipe input has no per-frame timestamps, so variable frame rate would be lost.
Instead the encoder reads this stream: an EBML header, a Segment of unknown size, one
``V_UNCOMPRESSED`` track (ColourSpace FourCC ``RGB\\x18`` = rgb24), then one Cluster per frame
holding a BlockGroup (Block + BlockDuration). TimestampScale is 1 ns, so a timestamp in any
rational time base is carried to within 0.5 ns; the encoder's ``-enc_time_base`` (the source's
time base) rounds it back to the exact tick.
"""

from __future__ import annotations

import struct
from fractions import Fraction

_NS = 1_000_000_000


def _size(n: int) -> bytes:
    """EBML variable-size integer for a data size."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError("EBML element too large")


def _el(eid: bytes, data: bytes) -> bytes:
    return eid + _size(len(data)) + data


def _uint(v: int) -> bytes:
    return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")


def header(width: int, height: int) -> bytes:
    """Everything before the first frame: EBML header, Segment start, Info and Tracks."""
    ebml = _el(b"\x1a\x45\xdf\xa3", b"".join([
        _el(b"\x42\x86", _uint(1)), _el(b"\x42\xf7", _uint(1)), _el(b"\x42\xf2", _uint(4)),
        _el(b"\x42\xf3", _uint(8)), _el(b"\x42\x82", b"matroska"),
        _el(b"\x42\x87", _uint(4)), _el(b"\x42\x85", _uint(2)),
    ]))
    segment = b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size
    info = _el(b"\x15\x49\xa9\x66", _el(b"\x2a\xd7\xb1", _uint(1))
               + _el(b"\x4d\x80", b"sr") + _el(b"\x57\x41", b"sr"))
    video = _el(b"\xe0", _el(b"\xb0", _uint(width)) + _el(b"\xba", _uint(height))
                + _el(b"\x2e\xb5\x24", b"RGB\x18"))
    track = _el(b"\xae", b"".join([
        _el(b"\xd7", _uint(1)), _el(b"\x73\xc5", _uint(1)), _el(b"\x83", _uint(1)),
        _el(b"\x86", b"V_UNCOMPRESSED"), _el(b"\x9c", _uint(0)),
        _el(b"\x22\xb5\x9c", b"und"), video,
    ]))
    return ebml + segment + info + _el(b"\x16\x54\xae\x6b", track)


def to_ns(ticks: int, tb: Fraction) -> int:
    """``ticks * tb`` seconds in integer nanoseconds (rounded)."""
    return round(ticks * tb * _NS)


def frame(rgb: bytes, pts_ns: int, duration_ns: int) -> bytes:
    """One frame as a Cluster (timestamp ``pts_ns``, >= 0) with a BlockGroup."""
    if pts_ns < 0:
        raise ValueError("negative timestamp")
    block = b"\x81" + struct.pack(">h", 0) + b"\x00" + rgb
    group = _el(b"\xa1", block)
    if duration_ns > 0:
        group += _el(b"\x9b", _uint(duration_ns))
    return _el(b"\x1f\x43\xb6\x75", _el(b"\xe7", _uint(pts_ns)) + _el(b"\xa0", group))
