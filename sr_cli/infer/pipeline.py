"""A folder pipeline: decode, compute and encode on separate threads (``-j load:proc:save``).

Like realesrgan-ncnn-vulkan's ``-j``: ``load`` threads read and decode the next images,
``proc`` threads run the network (the device stays busy), ``save`` threads encode and write
finished ones. The stages meet in bounded queues, so memory stays bounded: at most
``load + proc`` decoded inputs wait, and each image in flight holds at most
:data:`BAND_QUEUE` output bands between its proc and save threads (the encoder consumes the
bands while the network computes the next ones). Results come back in completion order;
writes stay atomic (the save function's job). An error in one image is that image's result; an
interrupt stops every stage, and partially written outputs are removed by their atomic writers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sr_cli.errors import UsageError

T = TypeVar("T")
BAND_QUEUE = 3
_END = object()


@dataclass(frozen=True)
class JobsSpec:
    """Threads per stage."""

    load: int = 1
    proc: int = 1
    save: int = 2


def parse_jobs(spec: str | None) -> JobsSpec:
    """``"load:proc:save"`` (e.g. ``1:2:2``) or one number for the proc stage."""
    if not spec:
        return JobsSpec()
    parts = spec.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--jobs {spec!r}: expected load:proc:save, e.g. 1:1:2") from None
    if len(nums) == 1:
        nums = [1, nums[0], 2]
    if len(nums) != 3 or min(nums) < 1 or max(nums) > 64:
        raise UsageError(f"--jobs {spec!r}: expected three numbers 1..64 as load:proc:save")
    return JobsSpec(*nums)


class Cancelled(Exception):
    """Raised inside a stage when the pipeline is stopping."""


class _Bands(Generic[T]):
    """A bounded hand-over of one image's bands from its proc thread to its save thread."""

    def __init__(self, stop: threading.Event) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=BAND_QUEUE)
        self.stop = stop
        self.reader_failed = threading.Event()

    def put(self, item: Any) -> None:
        while True:
            if self.stop.is_set() or self.reader_failed.is_set():
                raise Cancelled
            try:
                self.q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        while True:
            if self.stop.is_set():
                raise Cancelled
            try:
                item = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def put_until_stopped(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded ``q``, waiting for room, unless ``stop`` is set first
    (checked every 50 ms); False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def prefetched(items: Iterable[T], depth: int = 1,
               stop: threading.Event | None = None) -> Iterator[T]:
    """Iterate ``items`` on a producer thread that works ahead of the consumer (``depth``
    items queued, one more made and waiting; memory: ``depth + 2`` items at most):
    one image's output bands are computed while the previous one is encoded (the single-image
    form of the pipeline's proc/save overlap; PNG's deflate took 5.5 s of a 26 s 800x800 x4
    ``sr upscale`` on one thread, after the network, not beside it).

    The producer's exception is raised in the consumer. When the consumer stops early (an
    error, an interrupt, or it closes this generator), ``stop`` is set, the producer stops
    before its next item, closes ``items`` on its own thread, and is joined: nothing runs on
    after return. A producer that checks ``stop`` itself (``sr upscale``'s per-tile progress
    callback raises :class:`Cancelled`) stops sooner than at its next item.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = stop if stop is not None else threading.Event()

    def produce() -> None:
        it: Any = None
        try:
            it = iter(items)
            for item in it:
                if not put_until_stopped(q, (True, item), stop):
                    break
                del item
            else:
                put_until_stopped(q, _END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put_until_stopped(q, (False, exc), stop)
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                with contextlib.suppress(Exception):  # the consumer has its own error
                    close()

    th = threading.Thread(target=produce, name="sr-prefetch", daemon=True)
    th.start()
    try:
        while True:
            try:
                got = q.get(timeout=0.1)
            except queue.Empty:
                if not th.is_alive() and q.empty():  # internal: ended without a verdict
                    raise RuntimeError("prefetch producer ended without a result") from None
                continue
            if got is _END:
                return
            ok, val = got
            if not ok:
                raise val
            yield val
            del val, got
    finally:
        stop.set()
        th.join()


def run_pipeline(
    items: Sequence[T],
    load: Callable[[T], Any],
    process: Callable[[T, Any], tuple[Any, Iterable[Any]]],
    save: Callable[[T, Any, Any, Iterable[Any]], Any],
    spec: JobsSpec,
) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``items`` through the three stages; yield ``(index, result, error)`` as each ends.

    ``load(item) -> loaded`` (load threads); ``process(item, loaded) -> (header, bands)``
    (proc threads: ``bands`` is iterated there, each band handed to the save thread);
    ``save(item, loaded, header, bands) -> result`` (save threads: it iterates ``bands``).
    An exception in any stage becomes that item's ``error``.
    """
    stop = threading.Event()
    loaded_q: queue.Queue[Any] = queue.Queue(maxsize=spec.load + spec.proc)
    results: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()
    next_item = iter(range(len(items)))
    lock = threading.Lock()
    save_slots = threading.Semaphore(spec.save)

    def loader() -> None:
        while not stop.is_set():
            with lock:
                i = next(next_item, None)
            if i is None:
                return
            try:
                put_until_stopped(loaded_q, (i, load(items[i]), None), stop)
            except Exception as exc:  # noqa: BLE001 - an item's error is its result
                put_until_stopped(loaded_q, (i, None, exc), stop)

    def saver(i: int, loaded: Any, header: Any, bands: _Bands[Any]) -> None:
        try:
            results.put((i, save(items[i], loaded, header, bands), None))
        except Cancelled:
            results.put((i, None, KeyboardInterrupt()))
        except Exception as exc:  # noqa: BLE001
            bands.reader_failed.set()
            results.put((i, None, exc))
        finally:
            save_slots.release()

    def proc() -> None:
        while not stop.is_set():
            try:
                got = loaded_q.get(timeout=0.05)
            except queue.Empty:
                if not any(t.is_alive() for t in loaders) and loaded_q.empty():
                    return
                continue
            i, loaded, err = got
            if err is not None:
                results.put((i, None, err))
                continue
            try:
                header, band_iter = process(items[i], loaded)
            except Exception as exc:  # noqa: BLE001
                results.put((i, None, exc))
                continue
            bands: _Bands[Any] = _Bands(stop)
            while not save_slots.acquire(timeout=0.05):
                if stop.is_set():
                    return
            th = threading.Thread(target=saver, args=(i, loaded, header, bands), daemon=True)
            th.start()
            savers.append(th)
            try:
                for band in band_iter:
                    bands.put(band)
                bands.put(_END)
            except Cancelled:
                continue
            except Exception as exc:  # noqa: BLE001 - the saver raises it for this item
                try:
                    bands.put(exc)
                except Cancelled:
                    continue

    savers: list[threading.Thread] = []
    loaders = [threading.Thread(target=loader, daemon=True) for _ in range(spec.load)]
    procs = [threading.Thread(target=proc, daemon=True) for _ in range(spec.proc)]
    for t in loaders + procs:
        t.start()
    try:
        for _ in range(len(items)):
            yield results.get()
    finally:
        stop.set()
        for t in loaders + procs + savers:
            t.join()
