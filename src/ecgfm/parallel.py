"""Worker processes for per-file work over many files (``ecgfm measure --jobs``, ``ecgfm profile --jobs``).

A worker process is the unit of parallelism: BLAS/OpenMP thread pools inside each would
oversubscribe the cores (measured: 2 workers on 2 cores ran at 0.6x of 1 worker with OpenBLAS's
default threads, 1.7x with one thread each). Dask's nanny sets the same by default.

:func:`map_chunks` hands consecutive chunks of the inputs to a pool of spawned processes, a
bounded number in flight, and yields the results in input order as they arrive, so an archive
of a million files neither waits for the last chunk nor sits in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_blas_thread_per_process() -> Iterator[None]:
    """Worker processes started in this block (and a forkserver) get one BLAS thread each,
    unless the user set these variables; this process's own thread pools are already sized."""
    added = [name for name in THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def map_chunks(func: Callable[..., list[R]], items: Sequence[T], *args: Any, jobs: int = 1, chunk: int = 16,
               ahead: int = 2) -> Iterator[R]:
    """``func(items[i:i + chunk], *args)`` for consecutive chunks; its results, in input order.

    Args:
        func: a module-level function (it is pickled by name) returning one list per chunk.
        items: the inputs (file names, say).
        args: passed to every call (picklable).
        jobs: worker processes; 1 runs everything in this process.
        chunk: items per call.
        ahead: chunks in flight per worker: enough to keep the workers busy while this process
            writes results, few enough that finished results never pile up.

    Raises:
        concurrent.futures.process.BrokenProcessPool: a worker died (killed, out of memory).
    """
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    if jobs <= 1 or len(chunks) <= 1:
        for part in chunks:
            yield from func(part, *args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no fork of a parent that holds threads
    todo = iter(chunks)
    with one_blas_thread_per_process(), ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        # range first: zip stops on it without drawing a chunk that would then be lost
        running = deque(pool.submit(func, part, *args) for _, part in zip(range(jobs * ahead), todo))
        try:
            while running:
                results = running.popleft().result()
                part = next(todo, None)
                if part is not None:
                    running.append(pool.submit(func, part, *args))
                yield from results
        finally:
            for future in running:
                future.cancel()
