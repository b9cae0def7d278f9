"""Reading MATLAB ``.mat`` files (NIQE parameters, Ma et al.'s ``model.mat``) via scipy.io.

scipy is an optional dependency (``pip install 'sr_cli[mat]'``); it is imported lazily so that
the rest of ``sr score`` works without it.
"""

from __future__ import annotations

import os
from typing import Any

from sr_cli.errors import InputError, UsageError


def load_mat(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a .mat file (v4-v7.2) into a dict of numpy arrays / structs (squeezed, no
    ``__header__`` keys). Raises UsageError when scipy is missing, InputError when unreadable.
    """
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - depends on the environment
        raise UsageError(
            "reading MATLAB .mat files needs scipy: pip install 'sr_cli[mat]' (or scipy)"
        ) from None
    try:
        data = scipy.io.loadmat(os.fspath(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise InputError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save with -v7"
        ) from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for corrupt files
        raise InputError(f"{path}: not a readable .mat file ({type(exc).__name__})") from None
    return {k: v for k, v in data.items() if not k.startswith("__")}
