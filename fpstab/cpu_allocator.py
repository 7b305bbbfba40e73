"""glibc malloc settings that keep large CPU tensors' memory in the process between iterations.

A looped core allocates the same large tensors at every iteration (at 512 tokens, batch 100, d 128
the MLP's hidden activation alone is 105 MB). glibc serves blocks above its mmap threshold
(adaptive, at most 32 MiB) with mmap and unmaps them on free, so every iteration faults in
fresh zeroed pages: measured on a 2-core CPU, an eager `fpstab eval` at 512 bits spent 20.6 s of
its 77 s in the kernel (8.0 M minor page faults). `tune_malloc` raises the mmap threshold to
1 GiB, so such blocks come from the heap and are reused, and keeps up to 256 MiB of free heap
top instead of trimming it at once. The eager evaluation above then took 0.71-0.74 of its wall time;
with the Anderson solver its peak memory about doubled (results/train_speed/README.md).

Only glibc on Linux; anywhere else, or with FPSTAB_MALLOC=default in the environment, nothing
changes. The setting is process-wide, so the command line applies it (`fpstab.cli`), not the library.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 1 << 30  # bytes; mallopt takes an int, so at most 2 GiB - 1
TRIM_THRESHOLD = 256 << 20
ENV = "FPSTAB_MALLOC"  # "default": leave glibc's settings alone
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h

_state = "glibc defaults (not tuned)"


def tune_malloc() -> str:
    """Apply the settings above where they apply; return what is in effect (also `malloc_state()`)."""
    global _state
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
    _state = ", ".join([f"mmap_threshold {MMAP_THRESHOLD >> 20} MiB" if mmap_ok else "mmap_threshold: refused",
                        f"trim_threshold {TRIM_THRESHOLD >> 20} MiB" if trim_ok else "trim_threshold: refused"])
    return _state


def malloc_state() -> str:
    """What `tune_malloc` left in effect ("glibc defaults (not tuned)" before it ran)."""
    return _state
