"""The CLI's glibc malloc settings: applied where they apply, off with FPSTAB_MALLOC=default, and
effective (large blocks reused instead of mapped afresh at every allocation)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from fpstab import cpu_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# 30 allocations of a 64 MiB tensor, each written and freed: the minor page faults they cost.
_FAULTS = """
import resource, sys, torch
from fpstab.cpu_allocator import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    x = torch.ones(16 << 20)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_the_environment_can_leave_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_allocator.ENV, "default")
    assert cpu_allocator.tune_malloc() == "glibc defaults (FPSTAB_MALLOC=default)"
    assert cpu_allocator.malloc_state() == "glibc defaults (FPSTAB_MALLOC=default)"


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's (Linux); elsewhere tune_malloc changes nothing")
def test_tuning_reuses_large_blocks_instead_of_faulting_them_in_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu_allocator.ENV, raising=False)
    assert cpu_allocator.tune_malloc() == "mmap_threshold 1024 MiB, trim_threshold 256 MiB"
    plain, tuned = _faults("plain"), _faults("tuned")
    # plain: each 64 MiB tensor is a fresh mmap, ~16k faults (4 KiB pages) each; tuned: the heap's blocks
    # are reused (measured 492k against 131k faults)
    assert plain > 30 * 10_000 and tuned < plain / 2, (plain, tuned)


class _CountingLibc:
    def __init__(self) -> None:
        self.trims = 0

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


def test_trimming_releases_the_heap_every_nth_call_only_when_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    def double(x: int) -> int:
        return 2 * x

    monkeypatch.setattr(cpu_allocator, "_libc", None)
    assert cpu_allocator.trimming(double) is double and not cpu_allocator.release_free_heap()
    libc = _CountingLibc()
    monkeypatch.setattr(cpu_allocator, "_libc", libc)
    wrapped = cpu_allocator.trimming(double, every=10)
    assert [wrapped(i) for i in range(25)] == [2 * i for i in range(25)] and libc.trims == 2
    with pytest.raises(ValueError, match="every"):
        cpu_allocator.trimming(double, every=0)


def test_leaving_glibc_alone_also_turns_trimming_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_allocator, "_libc", _CountingLibc())
    monkeypatch.setenv(cpu_allocator.ENV, "default")
    cpu_allocator.tune_malloc()
    assert cpu_allocator._libc is None and not cpu_allocator.release_free_heap()
