"""Download, verify, convert and cache the official checkpoints (``sr models fetch``).

The only networked code of the project; it runs only when a user asks for it. No printing:
progress goes through ``callback(done, total)`` and failures raise typed errors.

Cache layout (``root`` = ``$SR_HOME``, else ``$XDG_CACHE_HOME/sr``, else ``~/.cache/sr``; the
models folder is :func:`sr_cli.zoo.user_models_dir`)::

    root/models/<NAME>.safetensors        converted models, found by ``-m NAME``
    root/downloads/<file>.pth.part        a resumable partial download (only after a network
    root/downloads/<file>.pth.part.json   failure; its URL and ETag; removed on success, on a
                                          size/SHA mismatch and by --force)

A finished download is verified (size and SHA-256 where known, the parameter count and
architecture always), converted to safetensors with metadata, written atomically into
``models/``, and the ``.pth`` is deleted. Anything that fails verification or conversion is
deleted at once; nothing that could be mistaken for a model is ever left in ``models/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from sr_cli.errors import InputError, ModelError, RuntimeFailure, UsageError

Callback = Callable[[int, int], None]
CHUNK = 1 << 16
DEFAULT_TIMEOUT = 30.0
BASE_URL_ENV = "SR_FETCH_BASE_URL"

_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
ESRGAN_DRIVE = "https://drive.google.com/drive/u/0/folders/17VYV_SoZZesU6mbxz2dMAIccSSlqLecY"


@dataclass(frozen=True)
class Entry:
    """One official checkpoint.

    Attributes:
        name: cache name (``-m NAME``), the upstream model name.
        filename: upstream file name; also the file name under a mirror ``--url``.
        url: published direct address, or None when none is stable (manual download only).
        arch: expected architecture id after conversion.
        params: expected parameter count (checked after conversion).
        scale: expected native scale.
        size: file size in bytes when known.
        sha256: full SHA-256 when known; ``sha256_prefix``: a published prefix (BasicSR names
            its files ``<name>-<first 8 hex of sha256>.pth``).
        description, license, source: for metadata and ``--list``.
        manual: where to get the file by hand when ``url`` is None.
    """

    name: str
    filename: str
    url: str | None
    arch: str
    params: int
    scale: int
    description: str
    license: str = "BSD-3-Clause"
    source: str = "https://github.com/xinntao/Real-ESRGAN"
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    manual: str | None = None


CATALOG: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry(
            "RealESRGAN_x4plus", "RealESRGAN_x4plus.pth",
            f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth", "rrdbnet", 16_697_987, 4,
            "Real-ESRGAN x4, general photos (RRDBNet, 23 blocks)",
        ),
        Entry(
            "RealESRNet_x4plus", "RealESRNet_x4plus.pth",
            f"{_RELEASES}/v0.1.1/RealESRNet_x4plus.pth", "rrdbnet", 16_697_987, 4,
            "Real-ESRNet x4: Real-ESRGAN's PSNR-oriented stage (RRDBNet, 23 blocks), smoother",
        ),
        Entry(
            "RealESRGAN_x2plus", "RealESRGAN_x2plus.pth",
            f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth", "rrdbnet", 16_703_171, 2,
            "Real-ESRGAN x2, general photos (RRDBNet, 23 blocks, pixel-unshuffle input)",
        ),
        Entry(
            "RealESRGAN_x4plus_anime_6B", "RealESRGAN_x4plus_anime_6B.pth",
            f"{_RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", "rrdbnet", 4_467_779, 4,
            "Real-ESRGAN x4 for anime illustrations (RRDBNet, 6 blocks)",
        ),
        Entry(
            "realesr-general-x4v3", "realesr-general-x4v3.pth",
            f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth", "srvgg", 1_213_296, 4,
            "Real-ESRGAN general v3, small and fast (SRVGGNetCompact, 32 convs); "
            "blend with realesr-general-wdn-x4v3 for a denoise strength",
        ),
        Entry(
            "realesr-general-wdn-x4v3", "realesr-general-wdn-x4v3.pth",
            f"{_RELEASES}/v0.2.5.0/realesr-general-wdn-x4v3.pth", "srvgg", 1_213_296, 4,
            "Real-ESRGAN general v3, weak-denoise variant (SRVGGNetCompact, 32 convs)",
        ),
        Entry(
            "realesr-animevideov3", "realesr-animevideov3.pth",
            f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth", "srvgg", 621_424, 4,
            "Real-ESRGAN anime video v3, extra small (SRVGGNetCompact, 16 convs)",
            size=2_334_339,
            sha256="4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932",
        ),
        Entry(
            "RealESRGANv2-animevideo-xsx2", "RealESRGANv2-animevideo-xsx2.pth",
            f"{_RELEASES}/v0.2.3.0/RealESRGANv2-animevideo-xsx2.pth", "srvgg", 600_652, 2,
            "Real-ESRGAN anime video v2 x2, extra small (SRVGGNetCompact, 16 convs); "
            "superseded by realesr-animevideov3",
        ),
        Entry(
            "RealESRGANv2-animevideo-xsx4", "RealESRGANv2-animevideo-xsx4.pth",
            f"{_RELEASES}/v0.2.3.0/RealESRGANv2-animevideo-xsx4.pth", "srvgg", 621_424, 4,
            "Real-ESRGAN anime video v2 x4, extra small (SRVGGNetCompact, 16 convs); "
            "superseded by realesr-animevideov3",
        ),
        Entry(
            "RRDB_ESRGAN_x4", "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
            f"{_RELEASES}/v0.1.1/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", "rrdbnet",
            16_697_987, 4,
            "ESRGAN x4 (the paper's GAN model, RRDBNet 23 blocks), as republished in "
            "BasicSR format by the Real-ESRGAN releases",
            license="Apache-2.0", source="https://github.com/xinntao/ESRGAN",
            sha256_prefix="ff704c30",
        ),
        Entry(
            "RRDB_PSNR_x4", "RRDB_PSNR_x4.pth", None, "rrdbnet", 16_697_987, 4,
            "ESRGAN's PSNR-oriented RRDB x4 (the usual alpha-0 parent of network interpolation)",
            license="Apache-2.0", source="https://github.com/xinntao/ESRGAN",
            manual=(
                "RRDB_PSNR_x4 is published only on Google Drive (no stable direct address): "
                f"download RRDB_PSNR_x4.pth from {ESRGAN_DRIVE} (ESRGAN README, 'Test models'), "
                "then run 'sr models fetch RRDB_PSNR_x4 --file RRDB_PSNR_x4.pth' to verify, "
                "convert and cache it (or 'sr models convert' it yourself)"
            ),
        ),
    ]
}


def find_entry(name: str) -> Entry:
    """Catalogue entry by name (case-insensitive; ``.pth`` suffix and ``-``/``_`` tolerated)."""
    def norm(s: str) -> str:
        s = s.strip()
        if s.lower().endswith(".pth"):
            s = s[:-4]
        return s.lower().replace("-", "_")

    want = norm(name)
    for e in CATALOG.values():
        if norm(e.name) == want or norm(e.filename) == want:
            return e
    raise ModelError(
        f"unknown official model {name!r} (known: {', '.join(CATALOG)}); "
        "see 'sr models fetch --list'"
    )


# ---------------------------------------------------------------------------------------------
# paths


def models_dir() -> Path:
    """Where fetched models are stored: the zoo's user folder (``-m NAME`` looks there)."""
    from sr_cli import zoo

    return zoo.user_models_dir()


def downloads_dir() -> Path:
    """The download temp area beside the models folder: resumable ``*.part`` files only."""
    return models_dir().parent / "downloads"


def resolve_url(entry: Entry, base_url: str | None = None) -> str | None:
    """The address to download ``entry`` from: ``<base>/<filename>`` when a mirror base is
    given (``--url`` or ``$SR_FETCH_BASE_URL``), else the published address (None if none)."""
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    if base:
        scheme = urllib.parse.urlsplit(base).scheme
        if scheme not in ("http", "https", "file"):
            raise UsageError(f"--url {base!r}: expected an http(s):// or file:// address")
        return base.rstrip("/") + "/" + urllib.parse.quote(entry.filename)
    return entry.url


# ---------------------------------------------------------------------------------------------
# download


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def _read_sidecar(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def discard_partial(part: Path) -> None:
    """Remove a partial download and its sidecar (missing files are fine)."""
    for p in (part, part.with_name(part.name + ".json")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def download(
    url: str,
    part: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    callback: Callback | None = None,
    expected_size: int | None = None,
) -> int:
    """Download ``url`` into ``part``, resuming a previous partial with an HTTP Range request.

    The partial's sidecar ``<part>.json`` records the URL and ETag; a partial of another URL
    is discarded, and ``If-Range`` makes the server send the whole file again if it changed.
    A server that ignores Range (status 200) restarts the file from byte 0.

    Returns:
        The size of the complete file in bytes.

    Raises:
        RuntimeFailure: the host is unreachable (offline), the server answers an HTTP error,
            the connection times out or drops. After a drop the partial stays for resuming,
            and the message says so.
    """
    cb = callback or (lambda done, total: None)
    part.parent.mkdir(parents=True, exist_ok=True)
    sidecar = part.with_name(part.name + ".json")
    state = _read_sidecar(sidecar)
    start = part.stat().st_size if part.exists() else 0
    if start and state.get("url") != url:
        discard_partial(part)
        start, state = 0, {}
    if expected_size is not None and start > expected_size:
        discard_partial(part)
        start, state = 0, {}

    headers = {"User-Agent": "sr-cli (sr models fetch)", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if state.get("etag"):
            headers["If-Range"] = state["etag"]
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - user-requested fetch
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # Our partial is not a prefix the server can continue: start over once.
            discard_partial(part)
            return download(url, part, timeout=timeout, callback=callback,
                            expected_size=expected_size)
        raise RuntimeFailure(f"download failed: {url} answered HTTP {exc.code} {exc.reason}") \
            from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = getattr(reason, "strerror", None) or str(reason)
        if isinstance(reason, socket.gaierror):
            why = "host name not found"
        if url.startswith("file:"):
            raise RuntimeFailure(f"cannot read {url} ({why})") from None
        raise RuntimeFailure(
            f"cannot reach {_host(url)} ({why}); are you offline? "
            f"Set --url or ${BASE_URL_ENV} to use a mirror"
        ) from None
    except TimeoutError:
        raise RuntimeFailure(f"no answer from {_host(url)} within {timeout:g} s (--timeout)") \
            from None
    except (OSError, HTTPException) as exc:
        raise RuntimeFailure(f"cannot download {url}: {exc}") from None

    with resp:
        status = getattr(resp, "status", 200)
        length_hdr = resp.headers.get("Content-Length")
        length = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
        mode = "wb"
        offset = 0
        total: int | None = None
        if status == 206 and start:
            crange = resp.headers.get("Content-Range", "")
            try:
                unit_range, _, size_txt = crange.partition("/")
                first = int(unit_range.split()[-1].split("-")[0])
                total = int(size_txt) if size_txt.strip().isdigit() else None
            except (ValueError, IndexError):
                first = -1
            if first != start:
                resp.close()
                discard_partial(part)
                return download(url, part, timeout=timeout, callback=callback,
                                expected_size=expected_size)
            mode, offset = "ab", start
            if total is None and length is not None:
                total = start + length
        else:
            total = length
        etag = resp.headers.get("ETag") or ""
        sidecar.write_text(json.dumps({"url": url, "etag": etag}))
        done = offset
        cb(done, total or 0)
        try:
            with open(part, mode) as fh:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    done += len(chunk)
                    cb(done, total or 0)
        except (TimeoutError, OSError, HTTPException) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else "dropped"
            raise RuntimeFailure(
                f"download {kind} after {_fmt_bytes(done)}"
                + (f" of {_fmt_bytes(total)}" if total else "")
                + f"; the partial file {part} is kept: run the same command again to resume "
                "(--force starts over)"
            ) from None
    if total is not None and done != total:
        raise RuntimeFailure(
            f"download dropped after {_fmt_bytes(done)} of {_fmt_bytes(total)}; the partial "
            f"file {part} is kept: run the same command again to resume (--force starts over)"
        )
    return done


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, entry: Entry, *, user_file: bool = False) -> str:
    """Check size and SHA-256 (full or published prefix) where known; return the SHA-256.

    ``user_file``: ``path`` is the user's own ``--file`` (messages name it and say it is
    kept); otherwise a download (messages name the upstream file and say it was deleted).

    Raises:
        ModelError: a mismatch (the caller deletes a download).
    """
    label = str(path) if user_file else entry.filename
    fate = (f"not {entry.filename} as published; nothing was imported" if user_file
            else "the file was deleted")
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        why = "" if user_file else " (corrupt download or a different file on the server)"
        raise ModelError(f"{label}: size {size:,} bytes, expected {entry.size:,}; {fate}{why}")
    digest = sha256_file(path)
    if entry.sha256 is not None and digest != entry.sha256.lower():
        raise ModelError(
            f"{label}: SHA-256 {digest} does not match the expected {entry.sha256}; {fate}"
        )
    if entry.sha256_prefix is not None and not digest.startswith(entry.sha256_prefix.lower()):
        raise ModelError(
            f"{label}: SHA-256 {digest[:16]}... does not start with the published "
            f"{entry.sha256_prefix}; {fate}"
        )
    return digest


# ---------------------------------------------------------------------------------------------
# conversion


def convert_checkpoint(src: Path, dest: Path, entry: Entry, *, sha256: str, origin: str,
                       label: str | None = None) -> Path:
    """Load ``src`` (safe .pth), check it is ``entry``'s network, save it to ``dest`` as
    safetensors with metadata (atomically). ``label`` names the file in errors (default: the
    upstream file name).

    Raises:
        ModelError: unreadable or unsafe weights, or not the expected architecture / size.
    """
    from sr_cli import zoo

    loaded = zoo.load_model(str(src))
    desc = loaded.desc
    n_params = sum(int(p.numel()) for p in loaded.net.parameters())
    if desc.arch != entry.arch or n_params != entry.params or desc.scale != entry.scale:
        raise ModelError(
            f"{label or entry.filename}: expected {entry.arch} x{entry.scale} with "
            f"{entry.params:,} "
            f"parameters, found {desc.arch} x{desc.scale} with {n_params:,}; not converted"
        )
    metadata = dict(loaded.metadata or {})
    metadata.update(
        {
            "name": entry.name,
            "recipe": "official",
            "description": entry.description,
            "license": entry.license,
            "source": entry.source,
            "origin_url": origin,
            "origin_file": entry.filename,
            "origin_sha256": sha256,
        }
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    zoo.save_model(dest, loaded.net, desc, metadata)
    return dest


# ---------------------------------------------------------------------------------------------
# the whole operation


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    status: str  # "fetched", "cached" or "imported"
    sha256: str | None = None
    size: int | None = None


def cached_path(entry: Entry) -> Path:
    return models_dir() / f"{entry.name}.safetensors"


def fetch_model(
    name: str,
    *,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    callback: Callback | None = None,
    from_file: Path | None = None,
) -> FetchResult:
    """Fetch one official checkpoint into the cache (see the module docstring).

    Args:
        name: catalogue name (:data:`CATALOG`).
        base_url: mirror folder holding the upstream file names (overrides
            ``$SR_FETCH_BASE_URL`` and the published address).
        force: fetch again even when cached; discards any partial download.
        timeout: seconds to wait for the server at each step.
        callback: ``callback(done_bytes, total_bytes)``; total is 0 when unknown.
        from_file: a checkpoint downloaded by hand: verified, converted and cached the same
            way (for models without a stable address).

    Raises:
        ModelError: unknown name, verification or conversion failure.
        UsageError: no stable address and no ``from_file`` (the message says where to get the
            file by hand).
        RuntimeFailure: network failures (offline, HTTP error, timeout, dropped connection).
    """
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    entry = find_entry(name)
    dest = cached_path(entry)
    if dest.exists() and not force and from_file is None:
        return FetchResult(entry.name, dest, "cached")

    if from_file is not None:
        src = Path(from_file)
        if not src.is_file():
            raise InputError(f"{src}: no such file")
        # Published sizes and hashes describe the upstream file; a file under another name
        # (e.g. the original ESRGAN repo's copy) is checked by structure only.
        if src.name == entry.filename:
            digest = verify_file(src, entry, user_file=True)
        else:
            digest = sha256_file(src)
        convert_checkpoint(src, dest, entry, sha256=digest, origin=f"file:{src.name}",
                           label=str(src))
        return FetchResult(entry.name, dest, "imported", digest, src.stat().st_size)

    url = resolve_url(entry, base_url)
    if url is None:  # not a failure of anything: this model needs --file (a usage matter)
        raise UsageError(entry.manual or f"{entry.name} has no download address; use --file")
    part = downloads_dir() / f"{entry.filename}.part"
    if force:
        discard_partial(part)
    size = download(url, part, timeout=timeout, callback=callback, expected_size=entry.size)
    try:
        digest = verify_file(part, entry)
        # A verified download: no longer a partial. Convert it from a plainly named file in
        # the downloads area, then delete it (the safetensors copy is what the zoo uses).
        raw = part.with_name(entry.filename)
        os.replace(part, raw)
        try:
            convert_checkpoint(raw, dest, entry, sha256=digest, origin=url)
        finally:
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
    finally:
        discard_partial(part)
    return FetchResult(entry.name, dest, "fetched", digest, size)

