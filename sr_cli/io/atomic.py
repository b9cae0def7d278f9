"""Atomic file writes: a temp file in the target folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sr_cli.errors import RuntimeFailure, UsageError


def _temp_beside(target: Path) -> tuple[int, str]:
    """Create the temporary file; a missing/unwritable folder is a RuntimeFailure (exit 1)."""
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise RuntimeFailure(f"{target}: is a folder; cannot write a file there")
    try:
        return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except FileNotFoundError:
        raise RuntimeFailure(f"{target}: output folder {str(folder)!r} does not exist") from None
    except NotADirectoryError:
        raise RuntimeFailure(f"{target}: {str(folder)!r} is not a folder") from None
    except PermissionError:
        raise RuntimeFailure(
            f"{target}: permission denied (cannot write in {str(folder)!r})"
        ) from None


# Errors of the write itself (disk full, quota, read-only or failing device): reported as a
# RuntimeFailure that names the target. Other OSErrors propagate unchanged.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so an
    interrupted or failed write never leaves a truncated output. A missing or unwritable
    target folder, a full disk, a quota or a read-only device raise
    :class:`~sr_cli.errors.RuntimeFailure` naming ``path``; other ``OSError`` propagate
    unchanged. The temporary file is removed in every case.
    """
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh  # type: ignore[misc]
            fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file mode
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            reason = "no space left on device" if exc.errno == errno.ENOSPC else (
                exc.strerror or str(exc)).lower()
            raise RuntimeFailure(f"{target}: cannot write ({reason}); nothing was written "
                                 "and an existing file there is unchanged") from None
        raise


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
    """Raise UsageError when an output already exists and ``overwrite`` is false.

    Every command checks all its planned outputs with this before doing any work, so an
    existing file is never replaced without ``--overwrite`` and nothing is half-written.
    """
    if overwrite:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
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
