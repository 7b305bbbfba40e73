"""Tasks: seeded generators, difficulty ladders, encodings and metrics.

Arrays in, arrays out; nothing here knows about models.

    from fpstab.tasks import get_task, TASK_NAMES
    task = get_task("sudoku")
    batch = task.make(task.ladder().train, n=1000, seed=0)
    batch.inputs   # float32 (n, n_tokens, task.in_dim)
    batch.targets  # int64 (n, n_tokens), classes 0..task.out_dim-1
    batch.answers  # every accepted answer (chess: all right first moves), or None
    task.metrics(logits, batch.targets, batch.answers)  # {"exact_match": ..., "token_acc": ...}

Task modules: `fpstab.tasks.prefix_sum`, `fpstab.tasks.sudoku` (solver in
`fpstab.tasks.sudoku_solver`, puzzle search in `fpstab.tasks.sudoku_search`),
`fpstab.tasks.chess` (mate search in `fpstab.tasks.mate_search`, positions from
games in `fpstab.tasks.chess_games`, encoding and scoring in
`fpstab.tasks.chess_encoding`, sets and validation in `fpstab.tasks.chess_data`,
the Lichess CSV in `fpstab.tasks.lichess`), `fpstab.tasks.markov` (the chains in
`fpstab.tasks.markov_chain`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpstab.tasks.base import LEVEL_SEP, Ladder, Provenance, Task, TaskBatch

TASK_NAMES: tuple[str, ...] = ("prefix_sum", "sudoku", "chess", "markov")

# name -> (module, class); imported on first use so python-chess loads only for chess.
_REGISTRY: dict[str, tuple[str, str]] = {
    "prefix_sum": ("fpstab.tasks.prefix_sum", "PrefixSumTask"),
    "sudoku": ("fpstab.tasks.sudoku", "SudokuTask"),
    "chess": ("fpstab.tasks.chess", "ChessTask"),
    "markov": ("fpstab.tasks.markov", "MarkovTask"),
}


def get_task(name: str) -> Task:
    """The task called `name` (one of TASK_NAMES); ValueError naming the allowed names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASK_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


# fpstab.tasks.base imports torch; it loads on first use, so the task names can be read (and a
# command line checked) without it.
_BASE_NAMES = ("LEVEL_SEP", "Ladder", "Provenance", "Task", "TaskBatch")


def __getattr__(name: str) -> Any:
    if name in _BASE_NAMES:
        from fpstab.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LEVEL_SEP", "TASK_NAMES", "Ladder", "Provenance", "Task", "TaskBatch", "get_task"]
