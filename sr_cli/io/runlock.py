"""An exclusive lock on a folder that one process owns while it works in it (``sr train
--out RUN_DIR``): a second process gets a one-line usage error (exit 2) instead of
interleaving its checkpoints and logs with the first one's.

The lock is ``fcntl.flock`` on ``FOLDER/.sr-lock`` (released by the kernel when the process
dies, so a killed run never leaves a stale lock). Where ``flock`` does not exist (Windows) the
lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sr_cli.errors import RuntimeFailure, UsageError

LOCK_NAME = ".sr-lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block.

    Raises UsageError when another process holds it. If the folder did not exist and the
    block fails leaving nothing but the lock file, the folder is removed again (a run refused
    by its checks leaves nothing behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        yield Path(folder)
        return
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"{path}: cannot create the folder ({exc.strerror or exc})") \
            from None
    lock = path / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UsageError(f"{option} {path}: another sr process is working in this folder "
                         "(it is locked); wait for it to finish or choose another folder") \
            from None
    ok = False
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
        ok = True
    finally:
        if created and not ok:
            with contextlib.suppress(OSError):
                if {p.name for p in path.iterdir()} <= {LOCK_NAME}:
                    shutil.rmtree(path)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
