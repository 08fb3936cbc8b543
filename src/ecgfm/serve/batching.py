"""Dynamic batching: concurrent requests share one forward pass.

Each request prepares its record on its own (in a worker thread) and :meth:`DynamicBatcher.submit`
hands the prepared ``[L, T]`` signal and ``[L]`` lead mask to one batching thread. That thread
takes the first waiting item, then keeps collecting until ``max_batch`` items are in hand or
``wait_ms`` milliseconds have passed, stacks the items of equal shape into ``[B, L, T]`` and
``[B, L]``, runs the backend once per shape and hands each caller its own row ``[C]``.

Callers wait on a :class:`concurrent.futures.Future`: worker threads call ``.result()``, the
event loop awaits ``asyncio.wrap_future(...)``. A model forward pass in PyTorch or ONNX Runtime
releases the GIL, so the event loop keeps serving while a batch runs.

>>> batcher = DynamicBatcher(backend, max_batch=32, wait_ms=5)      # doctest: +SKIP
>>> probs = batcher.submit(signal, mask).result()                  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgfm.errors import ValidationError

__all__ = ["BatcherBusy", "BatcherClosed", "DynamicBatcher"]

#: A backend: float32 ``[B, L, T]`` and bool ``[B, L]`` -> float32 ``[B, C]``.
RunBatch = Callable[[np.ndarray, np.ndarray], np.ndarray]


class BatcherBusy(RuntimeError):
    """The queue already holds ``max_queue`` items: the service is overloaded (HTTP 503)."""


class BatcherClosed(RuntimeError):
    """The batcher was closed (the service is shutting down)."""


@dataclass
class _Item:
    signal: np.ndarray  # [L, T] float32
    mask: np.ndarray  # [L] bool
    future: Future = field(default_factory=Future)


_STOP = object()


class DynamicBatcher:
    """Collects prepared records from many threads into batched forward passes.

    Args:
        run: the backend, ``run(signal [B, L, T] float32, mask [B, L] bool) -> [B, C]``.
        max_batch: the most records in one forward pass.
        wait_ms: how long the first record of a batch waits for others to join it, in ms.
            0 runs whatever is already queued at once.
        max_queue: the most records waiting; :meth:`submit` raises :class:`BatcherBusy` beyond.
    """

    def __init__(self, run: RunBatch, *, max_batch: int = 32, wait_ms: float = 5.0,
                 max_queue: int = 1024) -> None:
        if max_batch < 1:
            raise ValidationError(f"max_batch must be >= 1, got {max_batch}")
        if not wait_ms >= 0:
            raise ValidationError(f"batch wait must be >= 0 ms, got {wait_ms}")
        self.run = run
        self.max_batch = int(max_batch)
        self.wait_s = float(wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sizes: Counter[int] = Counter()  # batch size -> how many batches of that size ran
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ecgfm-batcher", daemon=True)
        self._thread.start()

    # -- callers ----------------------------------------------------------------------------
    def submit(self, signal: np.ndarray, mask: np.ndarray) -> Future:
        """Queue one prepared record; the future's result is its output row, float32 ``[C]``.

        Args:
            signal: float32 ``[L, T]``, as :meth:`~ecgfm.models.portable.Model.prepare` gives it.
            mask: bool ``[L]``, True where the lead is present.

        Raises:
            BatcherBusy: ``max_queue`` records are already waiting.
            BatcherClosed: :meth:`close` was called.
        """
        if self._closed:
            raise BatcherClosed("the model batcher is closed (the service is shutting down)")
        if self._queue.qsize() >= self.max_queue:
            raise BatcherBusy(f"{self.max_queue} records are already waiting for the model")
        item = _Item(np.ascontiguousarray(signal, np.float32), np.ascontiguousarray(mask, bool))
        self._queue.put(item)
        return item.future

    def stats(self) -> dict[str, Any]:
        """Batches run so far: ``{"batches", "records", "largest", "sizes": {size: count}}``."""
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
        return {"batches": sum(sizes.values()), "records": sum(k * v for k, v in sizes.items()),
                "largest": max(sizes, default=0), "sizes": sizes, "waiting": self._queue.qsize()}

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the thread after the batches already queued; later submits raise."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the batching thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = self._collect(batch)
            self._run(batch)
            if stop:
                return

    def _collect(self, batch: list[_Item]) -> bool:
        """Fill ``batch`` until it is full or the wait is over; True when a stop was seen."""
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _run(self, batch: list[_Item]) -> None:
        # A caller may have given up (timed out) and cancelled its future: skip it.
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for item in live:  # one forward pass per input shape (models without a fixed window)
            groups.setdefault(item.signal.shape, []).append(item)
        for items in groups.values():
            try:
                out = np.asarray(self.run(np.stack([i.signal for i in items]),
                                          np.stack([i.mask for i in items])))
                if out.shape[0] != len(items):
                    raise RuntimeError(f"the backend returned {out.shape[0]} rows for {len(items)} records")
            except Exception as error:  # every waiting caller must hear of it
                for item in items:
                    item.future.set_exception(error)
                continue
            with self._lock:
                self._sizes[len(items)] += 1
            for row, item in zip(out, items):
                item.future.set_result(row)
