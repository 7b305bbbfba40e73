"""Generated task ladders: generation speed on one core and each level's statistics.

    python benchmarks/task_ladders.py --task sudoku --n 20
    python benchmarks/task_ladders.py --task chess --levels mate1 mate2 --n 50 --seed 1

For each level, generates n instances with one worker (into an empty cache) and prints
the CPU seconds it took (process time: the rate one free core would reach,
whatever else the machine runs), instances per CPU second, and the task's
own summary of the set (`Task.summarize`: for sudoku the clue and backtrack
distributions, for chess piece counts, checks, castling rights).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: measure the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fpstab.tasks import TASK_NAMES, get_task  # noqa: E402


def measure(task_name: str, level: str, n: int, seed: int) -> dict[str, object]:
    """Generate n instances of one level inline; CPU and wall seconds, and the set's summary."""
    task = get_task(task_name)
    task.check_level(level)
    with tempfile.TemporaryDirectory() as fresh:  # an empty cache: every instance is generated
        cpu0, wall0 = time.process_time(), time.perf_counter()
        data, _ = task.generate_set(level, n, seed, cache_dir=fresh, workers=1)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"task": task_name, "level": level, "n": n, "seed": seed, "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "per_cpu_s": round(n / cpu, 4), "summary": task.summarize(data)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--levels", nargs="+", help="ladder levels (default: all)")
    p.add_argument("--n", type=int, default=20, help="instances per level (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error(f"--n must be >= 1, got {a.n}")
    levels = a.levels or list(get_task(a.task).ladder().levels)
    rows = []
    for level in levels:
        row = measure(a.task, level, a.n, a.seed)
        rows.append(row)
        print(f"{a.task} {level}: n {row['n']}, seed {row['seed']}, {row['cpu_s']} CPU s "
              f"({row['per_cpu_s']} per CPU second), {row['wall_s']} s wall", flush=True)
        for name, value in row["summary"].items():
            print(f"    {name}: {value}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
