"""Deterministic parallel generation: instance i depends only on (seed, stream, i).

Each instance gets its own random stream derived from the set's seed, a
stable tag of the level and its index, so a set is identical for any number
of worker processes and a smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import zlib
from typing import TypeVar
from collections.abc import Callable, Sequence

import numpy as np

T = TypeVar("T")


def stream_tag(*parts: str) -> int:
    """A stable 32-bit integer for a tuple of strings (Python's hash() is salted per process)."""
    return zlib.crc32("\x1f".join(parts).encode())


def instance_seed(seed: int, tag: int, index: int, attempt: int = 0) -> int:
    """A 64-bit seed for instance `index` (attempt > 0 after a duplicate) of a set."""
    state = np.random.SeedSequence([seed, tag, index, attempt]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_ordered(
    fn: Callable[[int], T], indices: Sequence[int], workers: int | None = None
) -> list[T]:
    """[fn(i) for i in indices], spread over `workers` processes (None = all cores).

    fn must be a module-level function (it is pickled). Results are in the
    order of `indices`. With one worker or a handful of items it runs inline.
    """
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(indices))
    if workers <= 1 or mp.current_process().daemon:  # a pool worker may not start its own pool
        return [fn(i) for i in indices]
    # fork keeps start-up cheap (no re-import of torch); the work is pure Python.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    chunk = max(1, min(16, len(indices) // (workers * 8)))
    with mp.get_context(method).Pool(workers) as pool:
        return pool.map(fn, indices, chunksize=chunk)
