"""Spreading a command's files over processes: torchrun ranks, or ``--shard K/N`` by hand.

One rule for ``sr upscale``, ``sr degrade`` and ``sr score`` (and the segments of a video):

- **Split.** The work items are sorted by a key that names them uniquely (the output path,
  the file name, the image name) and item ``i`` of that sorted list goes to part ``i % N``.
  So the same item always goes to the same part for a given ``N``, whatever order the folder
  listing came in, and every part gets the same number of items give or take one (neighbours
  in name order, often similar in size, land on different parts). A stable hash of the key was
  the alternative; it keeps an item on its part when other items are added, but its counts are
  binomial (two ranks given 10 files get 7 and 3 one time in three), and the batch waits for
  the busiest part.
- **Torchrun.** Under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set)
  part ``RANK`` of ``WORLD_SIZE`` runs in each process, each output is written by exactly one
  rank, and rank 0 gathers the results through ``torch.distributed`` object collectives over
  gloo (CPU, so it works whatever the device of the work). Rank 0 alone prints the summary,
  writes stdout and exits with the batch's exit code; the other ranks exit 0 once their
  results are handed over (their per-file warnings stay on their stderr). A CUDA device given as
  ``auto`` or ``cuda`` becomes ``cuda:LOCAL_RANK``.
- **--shard K/N.** The same split for independent processes (job arrays): part ``K``
  (0-based) of ``N``, nothing gathered; each part reports its own summary and exit code.

Without torchrun and without ``--shard`` nothing changes: one part, no collective, no torch
import. This module does not print or exit; it raises :class:`~sr_cli.errors.UsageError` for a
bad ``--shard`` and hands errors over to rank 0, which raises them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sr_cli.errors import RuntimeFailure, SRError, UsageError

T = TypeVar("T")

SHARD_HELP = (
    "Process only part K of N (K = 0..N-1) of the input files, for schedulers that start "
    "independent processes (job arrays): files sorted by name, file i goes to part i % N, the "
    "split torchrun ranks use. Each part reports its own summary. Under torchrun (RANK, "
    "WORLD_SIZE set) the split is automatic and rank 0 reports for all; see docs/scaling.md."
)

# How long a rank waits in a collective for the others (the slowest part of a batch may take
# hours longer than the fastest; torchrun stops every rank as soon as one of them dies).
COLLECTIVE_TIMEOUT_S = 7 * 24 * 3600


def torchrun_env(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun, else None.

    Torchrun is recognised as ``sr train`` does: ``WORLD_SIZE`` and ``MASTER_ADDR`` set.
    """
    e = os.environ if env is None else env
    if "WORLD_SIZE" not in e or "MASTER_ADDR" not in e:
        return None
    try:
        world = int(e["WORLD_SIZE"])
        rank = int(e.get("RANK", "0"))
        local = int(e.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; UsageError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--shard expects K/N (e.g. 0/4), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or k >= n:
        raise UsageError(f"--shard {text}: K must be in 0..N-1 (parts are numbered from 0)")
    return k, n


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: part ``index`` of ``count``.

    ``torchrun``: the parts are ranks of one job, and rank 0 gathers the results.
    """

    index: int = 0
    count: int = 1
    local_rank: int = 0
    torchrun: bool = False

    # -- the split ------------------------------------------------------------------------
    @property
    def split(self) -> bool:
        """True when this process does only part of the work."""
        return self.count > 1

    @property
    def gathers(self) -> bool:
        """True when results travel to rank 0 (torchrun with more than one rank)."""
        return self.torchrun and self.count > 1

    @property
    def reports(self) -> bool:
        """True when this process prints the summary and carries the exit code."""
        return not self.gathers or self.index == 0

    @property
    def label(self) -> str:
        return f"{'rank' if self.torchrun else 'shard'} {self.index}/{self.count}"

    def owner(self, position: int) -> int:
        """The part that owns item ``position`` of the key-sorted list."""
        return position % self.count

    def pick(self, items: Sequence[T], key: Callable[[T], str]) -> list[T]:
        """This part's items, in their original order (see the module's split rule).

        Keys must be unique (they name outputs); ties would fall back to the listing order.
        """
        if self.count == 1:
            return list(items)
        order = sorted(range(len(items)), key=lambda i: key(items[i]))
        mine = {i for pos, i in enumerate(order) if self.owner(pos) == self.index}
        return [it for i, it in enumerate(items) if i in mine]

    def pick_indices(self, n: int) -> list[int]:
        """This part's share of ``0..n-1`` when the items are already in their canonical
        order (video segments)."""
        return [i for i in range(n) if self.owner(i) == self.index]

    def device(self, spec: str) -> str:
        """``auto`` / ``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (when CUDA is present);
        any other spec, or no torchrun, unchanged."""
        if not self.torchrun:
            return spec
        s = (spec or "auto").strip().lower()
        if s == "cuda":
            return f"cuda:{self.local_rank}"
        if s == "auto":
            import torch

            return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        return spec

    def attempt(self, fn: Callable[[], T]) -> tuple[T | None, SRError | None]:
        """:func:`attempt` when results are gathered (torchrun); otherwise ``fn()`` with its
        errors raised as usual, so a single process behaves exactly as without this module."""
        if not self.gathers:
            return fn(), None
        return attempt(fn)

    # -- collectives (no-ops without torchrun) ----------------------------------------------
    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), None on the others; ``[obj]``
        without torchrun."""
        if not self.gathers:
            return [obj]
        dist = _process_group()
        out: list[Any] | None = [None] * self.count if self.index == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank (in rank order); ``[obj]`` without torchrun."""
        if not self.gathers:
            return [obj]
        dist = _process_group()
        out: list[Any] = [None] * self.count
        dist.all_gather_object(out, obj)
        return out

    def agree(self, error: SRError | None) -> SRError | None:
        """Tell every rank whether any rank failed: the first error in rank order, or None.

        Used before a point of no return (writing outputs, joining video segments) so that
        either every rank goes on or none does.
        """
        return next((e for e in self.all_gather(error) if e is not None), None)

    def settle(self, error: SRError | None) -> bool:
        """After :meth:`agree`: the reporting rank raises ``error``; the others get True
        (stop quietly, rank 0 reports); False when there is no error."""
        if error is None:
            return False
        if self.reports:
            raise error
        return True


def current(shard: str | None = None) -> Shard:
    """This process's part: from ``--shard K/N`` or torchrun's environment (not both)."""
    env = torchrun_env()
    if shard is not None:
        if env is not None and env[1] > 1:
            raise UsageError("--shard splits work by hand; under torchrun the ranks split it "
                             "already (drop --shard)")
        k, n = parse_shard(shard)
        return Shard(index=k, count=n)
    if env is None:
        return Shard()
    rank, world, local = env
    return Shard(index=rank, count=world, local_rank=local, torchrun=True)


def attempt(fn: Callable[[], T]) -> tuple[T | None, SRError | None]:
    """Run ``fn``; its SRError (or an OSError, as a RuntimeFailure) is returned, not raised, so
    a rank can hand it to rank 0 instead of leaving the others waiting."""
    try:
        return fn(), None
    except SRError as exc:
        return None, exc
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return None, RuntimeFailure(f"{exc.strerror or exc}{where}")


def merge_batch_summaries(parts: list[dict[str, Any]], order: Sequence[str],
                          key: str = "output") -> dict[str, Any]:
    """Join per-part batch summaries (``sr upscale``'s shape: ``files``, ``ok``, ``skipped``,
    ``failed``, ``seconds``, ``_failures``) into one: file records in ``order`` of their
    ``key``, counts summed, seconds of the slowest part, failures in file order; the other
    fields are rank 0's."""
    pos = {k: i for i, k in enumerate(order)}
    merged = dict(parts[0])
    files = sorted((r for p in parts for r in p["files"]),
                   key=lambda r: pos.get(r.get(key), len(pos)))
    merged["files"] = files
    for name in ("ok", "skipped", "failed"):
        merged[name] = sum(int(p.get(name, 0)) for p in parts)
    merged["seconds"] = max(float(p.get("seconds", 0.0)) for p in parts)
    merged["_failures"] = [f for p in parts for f in p.get("_failures", [])]
    return merged


def gather_batch_summary(shard: Shard, summary: dict[str, Any], order: Sequence[str],
                         key: str = "output") -> dict[str, Any] | None:
    """Rank 0's merged summary of a batch (see :func:`merge_batch_summaries`); None on the
    other ranks. Without torchrun the summary comes back as it is. A batch of one file that
    failed raises that file's error, as a single process would."""
    if not shard.gathers:
        return summary
    parts = shard.gather(summary)
    if parts is None:
        return None
    merged = merge_batch_summaries(parts, order, key)
    if len(order) == 1 and merged["_failures"]:
        raise merged["_failures"][0]
    return merged


def _process_group() -> Any:
    """``torch.distributed``, its default group set up over gloo on first use."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo",
                                timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        import atexit

        atexit.register(_close)
    return dist


def _close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["SHARD_HELP", "Shard", "attempt", "current", "gather_batch_summary",
           "merge_batch_summaries", "parse_shard", "torchrun_env"]
