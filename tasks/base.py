"""What every task shares: the ladder, the encoded batch, metrics and the loss.

A task turns a generated (or loaded) set into tensors:
inputs (n, n_tokens, in_dim) float32 and targets (n, n_tokens) int64, one
class per token. Models see only these; the task scores their logits
(B, n_tokens, out_dim).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F

from fpstab.tasks import cache


LEVEL_SEP = "+"  # joins ladder levels into a composite (mixed) level, e.g. "easy+medium"


@dataclass(frozen=True)
class Ladder:
    """Difficulty levels, easiest first, with the default train and test levels."""

    levels: tuple[str, ...]
    train: str
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [lv for lv in (self.train, *self.test) if lv not in self.levels]
        if unknown:
            raise ValueError(f"ladder levels {unknown} are not in {self.levels}")


@dataclass(frozen=True, eq=False)
class TaskBatch:
    """An encoded set.

    inputs: float32 (n, n_tokens, in_dim); targets: int64 (n, n_tokens);
    grid: the token layout, prod(grid) == n_tokens; level and seed: where it came from.
    answers: int64 (n, k, ...), every answer `Task.correct` accepts per instance, in the
    task's own layout (padded with -1), for tasks where more than the target is right;
    None where only the target is. Pass it to `correct` / `metrics` with the targets.
    labels: per-instance tensors (n,) a task attaches for reports (markov: each
    sequence's information content); empty for most tasks.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    grid: tuple[int, ...]
    level: str
    seed: int
    answers: torch.Tensor | None = None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class Provenance:
    """Where a set came from: its key, the cache file and how long it took.
    variant: the task's `cache_variant` (generator options, e.g. markov's chain seed)."""

    task: str
    level: str
    n: int
    seed: int
    version: int
    cache_path: Path | None
    from_cache: bool
    seconds: float
    variant: str = ""


SetT = TypeVar("SetT")


class Task(ABC, Generic[SetT]):
    """A task: generator, ladder, encoding and metrics.

    Subclasses set `name`, `in_dim`, `out_dim`, `attn_window`, `causal`
    (True: a next-token task, whose core must not let token i read later
    inputs), `version`
    (bump it when generation changes, it is part of the cache key) and
    `cached` (slow generators cache on disk), and implement `ladder`,
    `grid`, `_generate`, `_to_arrays`, `_from_arrays`, `encode_set`,
    `summarize` and `show`; a task where more than the target is right
    also implements `answers_of` and a `correct` that reads the answers.
    """

    name: str
    in_dim: int
    out_dim: int
    attn_window: int | None = None
    causal: bool = False
    version: int = 1
    cached: bool = False

    @property
    def cache_variant(self) -> str:
        """Generator options that change the data, as a cache-key tag ('' = defaults)."""
        return ""

    # --- ladder ----------------------------------------------------------
    @abstractmethod
    def ladder(self) -> Ladder:
        """The difficulty levels, easiest first, and the default train/test levels."""

    @abstractmethod
    def _grid(self, level: str) -> tuple[int, ...]:
        """Token layout of one ladder level (already checked)."""

    def grid(self, level: str) -> tuple[int, ...]:
        """Token layout of a level: (length,) for sequences, (rows, cols) for boards.
        A composite level has the layout its parts share."""
        return self._grid(self.level_parts(self.check_level(level))[0])

    def level_parts(self, level: str) -> tuple[str, ...]:
        """The ladder levels that `level` names: "easy+medium" -> ("easy", "medium"), "easy" -> ("easy",).

        Raises ValueError for an unknown part or a part named twice.
        """
        levels = self.ladder().levels
        parts = tuple(str(level).split(LEVEL_SEP))
        for part in parts:
            if part not in levels:
                raise ValueError(
                    f"unknown {self.name} level {part!r}"
                    + (f" in {level!r}" if len(parts) > 1 else "")
                    + f"; allowed: {', '.join(levels)}, or several joined by '{LEVEL_SEP}' (e.g. "
                    f"'{levels[0]}{LEVEL_SEP}{levels[1] if len(levels) > 1 else levels[0]}')"
                )
        if len(set(parts)) != len(parts):
            raise ValueError(f"{self.name} level {level!r} names a level twice")
        return parts

    def check_level(self, level: str) -> str:
        """Return `level` if it is a ladder level, or several joined by '+' that share one token
        layout; else raise ValueError naming the allowed levels."""
        parts = self.level_parts(level)
        if len(parts) > 1:
            grids = {part: self._grid(part) for part in parts}
            if len(set(grids.values())) > 1:
                raise ValueError(f"{self.name} level {level!r} mixes token layouts {grids}; "
                                 "the parts of a composite level must share one")
        return level

    # --- data ------------------------------------------------------------
    @abstractmethod
    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> SetT:
        """Generate n instances of `level` from `seed`."""

    @abstractmethod
    def _to_arrays(self, data: SetT) -> dict[str, Any]:
        """The set as numpy arrays (for the on-disk cache)."""

    @abstractmethod
    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> SetT:
        """Inverse of `_to_arrays` (level and seed come from the cache key)."""

    @abstractmethod
    def encode_set(self, data: SetT) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs float32 (n, n_tokens, in_dim), targets int64 (n, n_tokens)."""

    def answers_of(self, data: SetT) -> torch.Tensor | None:
        """Every answer `correct` accepts per instance, int64 (n, k, ...) padded with -1,
        or None when only the target is right (the default)."""
        return None

    def labels_of(self, data: SetT) -> dict[str, torch.Tensor]:
        """Per-instance labels for reports, name -> tensor (n,); none by default."""
        return {}

    @abstractmethod
    def summarize(self, data: SetT) -> dict[str, str]:
        """A few statistics of a set, for `fpstab data` (name -> formatted value)."""

    @abstractmethod
    def show(self, data: SetT, index: int) -> str:
        """One instance as text."""

    def generate_set(
        self,
        level: str,
        n: int,
        seed: int,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
    ) -> tuple[SetT, Provenance]:
        """The raw set for (level, n, seed), from the cache when there is one.

        Instance i depends only on (seed, level, i), so a set is a prefix of
        any larger set with the same seed, whatever the number of workers; a
        cached larger set is sliced. workers: processes (None = all cores).
        """
        if len(self.level_parts(level)) > 1:
            raise ValueError(f"{self.name} level {level!r} is composite: make() builds it from its parts; "
                             "generate_set takes one ladder level")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        t0 = time.perf_counter()
        if not self.cached:
            data = self._generate(level, n, seed, workers)
            return data, Provenance(self.name, level, n, seed, self.version, None, False,
                                    time.perf_counter() - t0, self.cache_variant)
        key = cache.CacheKey(self.name, level, n, seed, self.version, self.cache_variant)
        arrays, path, hit = cache.load_or_build(
            key,
            lambda: self._to_arrays(self._generate(level, n, seed, workers)),
            cache_dir,
        )
        data = self._from_arrays(arrays, level, seed)
        return data, Provenance(self.name, level, n, seed, self.version, path, hit,
                                time.perf_counter() - t0, self.cache_variant)

    def make(
        self, level: str, n: int, seed: int, cache_dir: str | Path | None = None
    ) -> TaskBatch:
        """n encoded instances of `level`, deterministic in `seed`.

        A composite level ("easy+medium", k parts) interleaves its parts:
        instance j is instance j // k of part j % k (each part made from the
        same seed), so every prefix is balanced and a set is a prefix of any
        larger one. Slow sets are cached under `cache_dir` (default
        $FPSTAB_CACHE or ~/.cache/fpstab). Returns TaskBatch(inputs
        (n, n_tokens, in_dim), targets (n, n_tokens), grid, level, seed,
        answers (n, k, ...) or None: see `answers_of`; labels: see `labels_of`).
        """
        grid = self.grid(level)
        parts = self.level_parts(level)
        if len(parts) == 1:
            data, _ = self.generate_set(level, n, seed, cache_dir)
            inputs, targets = self.encode_set(data)
            return TaskBatch(inputs, targets, grid, level, seed, self.answers_of(data), self.labels_of(data))
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = len(parts)
        made = [self.make(part, len(range(i, n, k)), seed, cache_dir) for i, part in enumerate(parts) if i < n]
        inputs = _interleave([b.inputs for b in made], n)
        targets = _interleave([b.targets for b in made], n)
        answers = None
        if any(b.answers is not None for b in made):
            answers = _interleave(_pad_answers([self._answer_table(b) for b in made]), n)
        labels = {name: _interleave([b.labels[name] for b in made], n) for name in made[0].labels}
        return TaskBatch(inputs, targets, grid, level, seed, answers, labels)

    def _answer_table(self, batch: TaskBatch) -> torch.Tensor:
        if batch.answers is None:
            raise ValueError(f"{self.name}: a composite level mixes parts with and without answer tables")
        return batch.answers

    # --- scoring ---------------------------------------------------------
    def _check_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
            raise ValueError(
                f"{self.name}: expected logits (B, n_tokens, {self.out_dim}) and targets "
                f"(B, n_tokens), got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        if logits.shape[-1] != self.out_dim:
            raise ValueError(
                f"{self.name}: logits have {logits.shape[-1]} classes per token, "
                f"the task has out_dim={self.out_dim}"
            )

    def correct(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Exact match per sample: every token's argmax equals its target.

        logits (B, n_tokens, out_dim), targets (B, n_tokens) -> bool (B,). answers: the
        batch's `TaskBatch.answers` rows (tasks with several right answers use them).
        """
        self._check_logits(logits, targets)
        return (logits.argmax(-1) == targets).all(-1)

    def token_accuracy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Share of the B * n_tokens tokens whose argmax is the target: a float32
        scalar tensor on the logits' device (no host sync; `metrics` gives floats).
        logits (B, n_tokens, out_dim), targets (B, n_tokens)."""
        self._check_logits(logits, targets)
        with torch.no_grad():
            return (logits.argmax(-1) == targets).float().mean()

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                ) -> dict[str, float]:
        """exact_match (share of samples with `correct`) and token_acc (share of
        tokens whose argmax is the target). logits (B, n_tokens, out_dim)."""
        with torch.no_grad():
            exact = self.correct(logits, targets, answers).float().mean()
            exact, token = torch.stack([exact, self.token_accuracy(logits, targets)]).tolist()
        return {"exact_match": exact, "token_acc": token}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean per-token cross-entropy over all B * n_tokens tokens (scalar)."""
        self._check_logits(logits, targets)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def _interleave(parts: list[torch.Tensor], n: int) -> torch.Tensor:
    """Row j of the result is row j // k of part j % k (k parts, n rows in all)."""
    out = torch.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for i, part in enumerate(parts):
        out[i::len(parts)] = part
    return out


def _pad_answers(tables: list[torch.Tensor]) -> list[torch.Tensor]:
    """Answer tables (n_i, k_i, ...) padded with -1 rows to the largest k."""
    k = max(t.shape[1] for t in tables)
    return [torch.cat([t, t.new_full((t.shape[0], k - t.shape[1], *t.shape[2:]), -1)], 1) for t in tables]
