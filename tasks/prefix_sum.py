"""Prefix sums: bits b in {0,1}^L, target cumsum(b) mod 2 (Schwarzschild et al. 2021).

Ladder by length: train 32 bits, test 48 ... 512, with 1024 and 2048 beyond.
Encoding: one token per bit, one-hot over {0, 1} (in_dim 2); two classes
per token (out_dim 2). The looped core attends in a local window of 5
tokens, as the paper (NATTEN kernel 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpstab.tasks.base import Ladder, Task
from fpstab.tasks.parallel import stream_tag

LENGTHS = (16, 32, 48, 64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True, eq=False)
class PrefixSumSet:
    """bits and targets: int64 arrays (n, length), targets = cumsum(bits) mod 2."""

    bits: np.ndarray
    targets: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.bits)


def generate(n: int, length: int, seed: int) -> PrefixSumSet:
    """n uniform random bit strings of `length` bits and their prefix parities.

    Deterministic in (seed, length). Returns PrefixSumSet with bits, targets (n, length).
    """
    if n < 1 or length < 1:
        raise ValueError(f"n and length must be >= 1, got n={n}, length={length}")
    rng = np.random.default_rng([seed, stream_tag("prefix_sum"), length])
    bits = rng.integers(0, 2, size=(n, length), dtype=np.int64)
    return PrefixSumSet(bits, np.cumsum(bits, axis=1) % 2, seed)


def validate(bits: np.ndarray, targets: np.ndarray) -> None:
    """Raise ValueError unless bits are 0/1 arrays (n, length) and targets their prefix parities."""
    bits, targets = np.asarray(bits), np.asarray(targets)
    if bits.ndim != 2 or bits.shape != targets.shape:
        raise ValueError(
            f"bits and targets must be (n, length) arrays of one shape, got {bits.shape} and {targets.shape}"
        )
    if not np.isin(bits, (0, 1)).all():
        raise ValueError("bits must be 0 or 1")
    wrong = np.flatnonzero((np.cumsum(bits, axis=1) % 2 != targets).any(axis=1))
    if len(wrong):
        raise ValueError(f"targets are not cumsum(bits) mod 2 in rows {wrong[:10].tolist()}")


def encode(bits: np.ndarray) -> torch.Tensor:
    """bits int (n, length) -> one-hot float32 (n, length, 2)."""
    return F.one_hot(torch.as_tensor(np.asarray(bits), dtype=torch.long), 2).float()


class PrefixSumTask(Task[PrefixSumSet]):
    """Prefix parity of a bit string; levels are lengths ("16" ... "2048")."""

    name = "prefix_sum"
    in_dim = 2
    out_dim = 2
    attn_window = 5
    version = 1
    cached = False  # milliseconds to make; never touches the disk

    def ladder(self) -> Ladder:
        return Ladder(
            levels=tuple(str(n) for n in LENGTHS),
            train="32",
            test=("48", "64", "128", "256", "512"),
        )

    def _grid(self, level: str) -> tuple[int, ...]:
        return (int(level),)

    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> PrefixSumSet:
        return generate(n, int(level), seed)

    def _to_arrays(self, data: PrefixSumSet) -> dict[str, Any]:
        return {"bits": data.bits, "targets": data.targets}

    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> PrefixSumSet:
        return PrefixSumSet(arrays["bits"], arrays["targets"], seed)

    def encode_set(self, data: PrefixSumSet) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(data.bits), torch.as_tensor(data.targets, dtype=torch.long)

    def summarize(self, data: PrefixSumSet) -> dict[str, str]:
        return {
            "length": str(data.bits.shape[1]),
            "ones per string": f"mean {data.bits.sum(1).mean():.1f}",
            "final parity 1": f"{data.targets[:, -1].mean():.3f}",
        }

    def show(self, data: PrefixSumSet, index: int) -> str:
        bits = "".join(map(str, data.bits[index]))
        tgt = "".join(map(str, data.targets[index]))
        return f"bits:   {bits}\ntarget: {tgt}"
