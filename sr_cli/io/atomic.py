"""Atomic file writes and the output-path policy every command follows.

Writes: a temporary file in the target folder, fsync, then rename. The temporary file is
named ``.NAME.sr-PID-HOST-RANDOM.part`` so a later run recognises one left behind by a killed
process (SIGKILL, power loss) and removes it: :func:`sweep_stale_temps` runs once per folder
and process, before the first write into that folder.

Output policy (one rule for every file any command writes: images, ``--record``, ``--json``
files, ``--pairs``, checkpoints, plots, contact sheets, weights):

- an output is only ever a regular file: a folder, device node, FIFO or socket at the output
  path is refused (:class:`UsageError`, exit 2), even with ``--overwrite``;
- an output is never an input of the same run, also through a symlink or a hard link
  (compared by device and inode, and by resolved path). Readers record their inputs with
  :func:`note_input`; :func:`check_output` (called by :func:`refuse_existing` before any work
  and by :func:`atomic_open` at write time) refuses a match.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sr_cli.errors import RuntimeFailure, UsageError

# ------------------------------------------------------------------------- input registry
_inputs: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> the path as the user gave it
_input_paths: dict[str, str] = {}  # resolved path -> the path as the user gave it
_swept: set[str] = set()


def begin_run() -> None:
    """Forget the inputs of a previous command (the CLI guard calls this per command)."""
    _inputs.clear()
    _input_paths.clear()


def note_input(path: str | os.PathLike[str]) -> None:
    """Record ``path`` as an input of this run, so no output may replace it."""
    p = Path(path)
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode):
            _inputs[(st.st_dev, st.st_ino)] = str(p)
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        _input_paths[str(p.resolve())] = str(p)


def input_named(path: str | os.PathLike[str]) -> str | None:
    """The input of this run that ``path`` is (same device and inode, or same resolved
    path), as the user named it; None when it is none of them."""
    p = Path(path)
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(p)
        same = _inputs.get((st.st_dev, st.st_ino))
        if same is not None:
            return same
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        return _input_paths.get(str(p.resolve()))
    return None


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse (UsageError, exit 2) an output path that is not a regular file or that is an
    input of this run (same file through any name: symlink, hard link, ``..``)."""
    p = Path(path)
    try:
        st: os.stat_result | None = os.stat(p)
    except OSError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{p}: is a folder; an output must be a file")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise UsageError(f"{p}: is {kind}; outputs are only written to regular files "
                             "(not even with --overwrite)")
    same = input_named(p)
    if same is not None:
        raise UsageError(f"{p}: is an input of this run ({same}); refusing to overwrite it")


# ------------------------------------------------------------------------ temporary files
@functools.cache
def _host() -> str:
    """This machine in temporary names: 6 hex digits of its host name's SHA-1."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def __getattr__(name: str) -> str:
    if name == "_HOST":  # computed on first use: importing this module stays cheap
        return _host()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.sr-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-z]+"
                      r"\.part$")
STALE_SECONDS = 3600
"""A temporary file written from another host (a shared folder) is removed once it has not
changed for this long; on this host, once its process is gone."""


def temp_name(target: Path) -> Path:
    """The temporary path beside ``target``: ``.NAME.sr-PID-HOST-RANDOM.part``."""
    import secrets

    return target.with_name(f".{target.name}.sr-{os.getpid()}-{_host()}-"
                            f"{secrets.token_hex(4)}.part")


def user_path(name: str) -> str:
    """The user's path for a temporary path (``.out.png.sr-...part`` -> ``out.png``)."""
    p = Path(name)
    m = _TEMP_RE.match(p.name)
    return str(p.with_name(m.group("name"))) if m else name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Remove this project's temporary files in ``folder`` left by dead processes: on this
    host, those whose PID is gone; from another host, those unchanged for
    :data:`STALE_SECONDS`. Runs once per folder and process unless ``force``; returns what it
    removed. Other files are never touched; errors are ignored (it is housekeeping)."""
    key = str(Path(folder).resolve()) if str(folder) else "."
    if key in _swept and not force:
        return []
    _swept.add(key)
    removed: list[Path] = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder or "."):
            m = _TEMP_RE.match(entry.name)
            if not m:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                pid = int(m.group("pid"))
                if m.group("host") == _host():  # this machine: the owner's PID decides
                    stale = pid != os.getpid() and not _pid_alive(pid)
                else:  # another machine (shared folder): untouched for an hour
                    stale = now - st.st_mtime > STALE_SECONDS
                if stale:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _temp_beside(target: Path) -> tuple[int, str]:
    """Create the temporary file; a missing/unwritable folder is a RuntimeFailure (exit 1)."""
    folder = target.parent if str(target.parent) else Path(".")
    check_output(target)
    sweep_stale_temps(folder)
    tmp = temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
    except FileNotFoundError:
        raise RuntimeFailure(f"{target}: output folder {str(folder)!r} does not exist") from None
    except NotADirectoryError:
        raise RuntimeFailure(f"{target}: {str(folder)!r} is not a folder") from None
    except PermissionError:
        raise RuntimeFailure(
            f"{target}: permission denied (cannot write in {str(folder)!r})"
        ) from None
    except OSError as exc:
        raise RuntimeFailure(f"{target}: cannot write ({_reason(exc)})") from None
    return fd, str(tmp)


# fsync on a file system that cannot sync (some FUSE or special file systems) is not a failure
_NO_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return (exc.strerror or type(exc).__name__).lower()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception (also Ctrl-C / SIGTERM) the temporary file is removed and ``path`` is left
    untouched, so an interrupted or failed write never leaves a truncated output. The output
    policy (:func:`check_output`) applies. Any ``OSError`` of the write, the fsync or the rename
    (disk full, EIO, a read-only device, a missing folder) becomes
    :class:`~sr_cli.errors.RuntimeFailure` naming ``path``, never the temporary file.
    """
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh  # type: ignore[misc]
            fh.flush()
            try:
                os.fsync(fh.fileno())
            except OSError as exc:
                if exc.errno not in _NO_SYNC:
                    raise
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())  # a normal file mode, not the temp file's 0600
        check_output(target)  # the path may have changed while we worked
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise RuntimeFailure(f"{target}: cannot write ({_reason(exc)}); nothing was written "
                                 "and an existing file there is unchanged") from None
        raise
    _sync_dir(target.parent)


def _sync_dir(folder: Path) -> None:
    """fsync the folder so the rename survives a crash (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(folder if str(folder) else ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def refuse_existing(paths: Iterable[str | os.PathLike[str]], overwrite: bool,
                    hint: str = "use --overwrite to replace it") -> None:
    """Check every planned output before any work: the output policy (:func:`check_output`:
    regular files only, never an input), then UsageError when an output already exists and
    ``overwrite`` is false. So nothing is half-written and nothing is replaced unasked."""
    planned = [Path(p) for p in paths]
    for p in planned:
        check_output(p)
    if overwrite:
        return
    existing = [p for p in planned if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}; {hint}")


def make_parent(path: str | os.PathLike[str]) -> None:
    """Create the folder an output goes into; a file in the way or no permission is a
    RuntimeFailure naming the folder (exit 1)."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RuntimeFailure(
            f"{parent}: cannot create the output folder (a file is in the way)"
        ) from None
    except PermissionError:
        raise RuntimeFailure(f"{parent}: cannot create the output folder (permission denied)") \
            from None
