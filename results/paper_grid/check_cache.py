"""Does the data cache hold every set a grid reads, at full size? Exit 1 naming each missing set.

    python3 results/paper_grid/check_cache.py GRID_FILE CACHE_DIR      # repository root

A set the cache lacks is generated where it is first read: on the GPU machine that is device
time (20,000 mate-in-2 puzzles are about 2,200 CPU seconds). A run reads, per part of its training
level (a composite level "a+b" of k parts takes ceil(n / k) of each), its training set (data_seed),
its validation set (data_seed + 1), its evaluation sets (data_seed + 2, [eval] samples) and its
probe sets (data_seed + 3, [probe] samples). A cached set serves any request of its size or less.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from fpstab.grid import load_grid
from fpstab.tasks import get_task
from fpstab.tasks.cache import CacheKey

PROBE_SAMPLES_DEFAULT = 8  # fpstab probe --samples


def needs(grid_file: str) -> set[tuple[str, str, int, int]]:
    """(task, level, n, seed) of every cached set the grid's runs read."""
    grid = load_grid(grid_file)
    out: set[tuple[str, str, int, int]] = set()
    for spec in grid.runs:
        cfg = spec.config
        task = get_task(cfg["task"])
        if not task.cached:
            continue
        seed = cfg["data_seed"]

        def add(level: str, n: int, s: int) -> None:
            parts = task.level_parts(level)
            for part in parts:
                out.add((task.name, part, math.ceil(n / len(parts)), s))

        add(cfg["train_level"], cfg["n_train"], seed)
        add(cfg["train_level"], cfg["n_val"], seed + 1)
        for level in spec.eval_levels:
            add(level, int(grid.eval.get("samples", 0)) or cfg["n_val"], seed + 2)
        for level in spec.probe_levels:
            add(level, int(grid.probe.get("samples", PROBE_SAMPLES_DEFAULT)), seed + 3)
    return out


def largest_cached(task_name: str, level: str, seed: int, cache_dir: Path) -> int:
    """n of the largest cached set of (task, level, seed) at the task's current version, or 0."""
    task = get_task(task_name)
    stem = CacheKey(task.name, level, 1, seed, task.version, task.cache_variant).stem()
    pattern = re.compile(re.escape(stem) + r"-n(\d+)\.npz$")
    folder = cache_dir / task.name
    sizes = [int(m.group(1)) for p in folder.glob("*.npz") if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(sizes, default=0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    missing = []
    for task, level, n, seed in sorted(needs(argv[0])):
        have = largest_cached(task, level, seed, Path(argv[1]))
        if have < n:
            missing.append(f"  {task} {level} seed {seed}: the grid reads {n}, the cache holds {have or 'none'}")
    if missing:
        print(f"{argv[1]} lacks sets {argv[0]} reads (make them with results/paper_grid/make_data.sh):",
              *missing, sep="\n", file=sys.stderr)
        return 1
    print(f"{argv[1]} holds every cached set {argv[0]} reads")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
