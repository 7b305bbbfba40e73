"""Does the data cache hold every set a grid reads, at full size? Exit 1 naming each missing set.

    python3 results/paper_grid/check_cache.py GRID_FILE CACHE_DIR      # repository root

A set the cache lacks is generated where it is first read: on the GPU machine that is device
time (20,000 mate-in-2 puzzles are about 2,200 CPU seconds). A run reads, per part of its training
level (a composite level "a+b" of k parts takes ceil(n / k) of each), its training set (data_seed),
its validation set (data_seed + 1), its evaluation sets (data_seed + 2, [eval] samples) and its
probe sets (data_seed + 3, [probe] samples). A cached set serves any request of its size or less.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from fpstab import evaluate, probe_command
from fpstab.grid import load_grid
from fpstab.tasks import get_task
from fpstab.tasks.cache import CacheKey, cache_path, larger_cached


def command_default(add_arguments: Callable[[argparse.ArgumentParser], None], option: str) -> object:
    """The default of one option of a subcommand (`fpstab eval` or `fpstab probe`), read from its parser."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default(option)


def needs(grid_file: str) -> set[CacheKey]:
    """The key of every cached set the grid's runs read (n: the size read)."""
    grid = load_grid(grid_file)
    eval_n = int(grid.eval.get("samples", command_default(evaluate.add_arguments, "samples")))
    probe_n = int(grid.probe.get("samples", command_default(probe_command.add_arguments, "samples")))
    out: set[CacheKey] = set()
    for spec in grid.runs:
        cfg = spec.config
        task = get_task(cfg["task"])
        if not task.cached:
            continue
        seed = cfg["data_seed"]

        def add(level: str, n: int, s: int) -> None:
            parts = task.level_parts(level)
            for part in parts:
                out.add(CacheKey(task.name, part, math.ceil(n / len(parts)), s, task.version, task.cache_variant))

        add(cfg["train_level"], cfg["n_train"], seed)
        add(cfg["train_level"], cfg["n_val"], seed + 1)
        for level in spec.eval_levels:
            add(level, eval_n, seed + 2)
        for level in spec.probe_levels:
            add(level, probe_n, seed + 3)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    missing = [f"  {k.task} {k.level} seed {k.seed}: the grid reads {k.n}, the cache holds no set that large"
               for k in sorted(needs(argv[0]), key=lambda k: (k.task, k.level, k.seed))
               if larger_cached(k, cache_path(k, argv[1]).parent) is None]
    if missing:
        print(f"{argv[1]} lacks sets {argv[0]} reads (make them with results/paper_grid/make_data.sh):",
              *missing, sep="\n", file=sys.stderr)
        return 1
    print(f"{argv[1]} holds every cached set {argv[0]} reads")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
