"""glibc malloc settings that keep large CPU tensors' memory in the process between iterations.

A looped core allocates the same large tensors at every iteration (at 512 tokens, batch 100, d 128
the MLP's hidden activation alone is 105 MB). glibc serves blocks above its mmap threshold
(adaptive, at most 32 MiB) with mmap and unmaps them on free, so every iteration faults in
fresh zeroed pages: measured on a 2-core CPU, an eager `fpstab eval` at 512 bits spent 20.6 s of
its 77 s in the kernel (8.0 M minor page faults). `tune_malloc` raises the mmap threshold to
1 GiB, so such blocks come from the heap and are reused, and keeps up to 256 MiB of free heap
top instead of trimming it at once. The eager evaluation above then took 0.71-0.74 of its wall time;
with the Anderson solver its peak memory about doubled: the solver's history of varied block sizes
fragments a heap that is no longer trimmed. `trimming` wraps a solver's function so that every tenth
call first returns the free heap pages (glibc's malloc_trim), which brought that peak from 3.6 to
1.9 GB at no measurable cost in time (results/train_speed/README.md).

Only glibc on Linux; anywhere else, or with FPSTAB_MALLOC=default in the environment, nothing
changes. The setting is process-wide, so the command line applies it (`fpstab.cli`), not the library.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from typing import TypeVar

MMAP_THRESHOLD = 1 << 30  # bytes; mallopt takes an int, so at most 2 GiB - 1
TRIM_THRESHOLD = 256 << 20
ENV = "FPSTAB_MALLOC"  # "default": leave glibc's settings alone
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
TRIM_EVERY = 10  # calls of a wrapped solver function between two malloc_trim calls

_state = "glibc defaults (not tuned)"
_libc: ctypes.CDLL | None = None  # glibc, once tune_malloc's settings took
A = TypeVar("A")
R = TypeVar("R")


def tune_malloc() -> str:
    """Apply the settings above where they apply; return what is in effect (also `malloc_state()`)."""
    global _state, _libc
    _libc = None
    if os.environ.get(ENV, "").strip().lower() == "default":
        _state = f"glibc defaults ({ENV}=default)"
        return _state
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = f"the platform's defaults (not glibc on Linux: {platform.system()} {platform.libc_ver()[0] or '?'})"
        return _state
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as err:
        _state = f"glibc defaults (mallopt unavailable: {err})"
        return _state
    _libc = libc if mmap_ok or trim_ok else None
    _state = ", ".join([f"mmap_threshold {MMAP_THRESHOLD >> 20} MiB" if mmap_ok else "mmap_threshold: refused",
                        f"trim_threshold {TRIM_THRESHOLD >> 20} MiB" if trim_ok else "trim_threshold: refused"])
    return _state


def malloc_state() -> str:
    """What `tune_malloc` left in effect ("glibc defaults (not tuned)" before it ran)."""
    return _state


def release_free_heap() -> bool:
    """Return the heap's free pages to the system (glibc's malloc_trim(0)) where `tune_malloc`'s
    settings are in effect; True if it ran."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


def trimming(f: Callable[[A], R], every: int = TRIM_EVERY) -> Callable[[A], R]:
    """`f`, releasing the free heap before every `every`-th call while the tuned settings are in
    effect (else `f` itself). For a solver's function on CPU tensors, whose varied temporaries
    fragment the heap: at 512 tokens, batch 100, d 128, Anderson's peak RSS fell from 3.6 to 1.9 GB
    with every = 10 (1.5 GB with every = 1, at 16 % more wall time)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be an int >= 1")
    if _libc is None:
        return f
    calls = 0

    def wrapped(x: A) -> R:
        nonlocal calls
        calls += 1
        if calls % every == 0:
            release_free_heap()
        return f(x)

    return wrapped
