"""Typed errors and the single map from outcomes to exit codes.

Core modules raise these; only :mod:`sr_cli.cli` turns them into messages and exit codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of every ``sr`` command."""

    OK = 0
    FAILURE = 1  # runtime failure (I/O error, full disk, a batch with failed items, internal error)
    USAGE = 2  # bad flags or option values
    BAD_INPUT = 3  # unreadable, corrupt, wrong-size or otherwise bad input data
    MODEL = 4  # unknown model, bad or unsafe weights, architecture mismatch
    THRESHOLD = 5  # an `sr score` --fail-under / --fail-over gate was not met
    INTERRUPTED = 130  # Ctrl-C


class SRError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SRError):
    """Bad combination or value of options (exit 2)."""

    exit_code = ExitCode.USAGE


class InputError(SRError):
    """Bad input data: corrupt/truncated/non-image files, wrong sizes (exit 3)."""

    exit_code = ExitCode.BAD_INPUT


class ModelError(SRError):
    """Unknown model names, unreadable or unsafe weights, mismatched architectures (exit 4)."""

    exit_code = ExitCode.MODEL


class ThresholdError(SRError):
    """A score gate (``--fail-under`` / ``--fail-over``) was not met (exit 5)."""

    exit_code = ExitCode.THRESHOLD


class RuntimeFailure(SRError):
    """A runtime failure: output not writable, disk full, failed items in a batch (exit 1)."""

    exit_code = ExitCode.FAILURE


def batch_error(failed: list[tuple[str, SRError]], total: int) -> SRError:
    """The one error of a batch in which some files failed (the others were written): exit
    code of the failures when they agree (e.g. 3 when all were bad images), else 1."""
    codes = {int(e.exit_code) for _, e in failed}
    err = SRError(f"{len(failed)} of {total} file(s) failed: {', '.join(n for n, _ in failed)}")
    err.exit_code = ExitCode(codes.pop()) if len(codes) == 1 else ExitCode.FAILURE
    return err
