"""`fpstab data`: make (or reuse the cached) task set and summarize it, or show one instance.

    fpstab data --task sudoku --level hard --n 1000 --seed 0
    fpstab data show --task chess --level mate2 --seed 0 --index 3
"""

from __future__ import annotations

import argparse

from fpstab.tasks import TASK_NAMES, get_task
from fpstab.tasks.base import Task
from fpstab.tasks.parallel import available_cores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("make", "show"), default="make",
                        help="make: generate or load the set and print a summary (default); "
                             "show: print one instance as text")
    parser.add_argument("--task", required=True, choices=TASK_NAMES, help="the task")
    parser.add_argument("--level", help="ladder level (default: the task's training level)")
    parser.add_argument("--n", type=int, default=100, help="instances to make (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    parser.add_argument("--index", type=int, default=0, help="show: which instance (default 0)")
    parser.add_argument("--cache-dir", help="cache folder (default $FPSTAB_CACHE or ~/.cache/fpstab)")
    parser.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    parser.add_argument("--prefilter", choices=("stockfish",),
                        help="chess only: discard candidates Stockfish does not score as mate in N "
                             "before the exact search (changes the set; part of the cache key)")


def _task(args: argparse.Namespace) -> Task:
    if args.prefilter is not None:
        if args.task != "chess":
            raise ValueError(f"--prefilter applies to the chess task only, not {args.task}")
        from fpstab.tasks.chess import ChessTask

        return ChessTask(prefilter=args.prefilter)
    return get_task(args.task)


def run(args: argparse.Namespace) -> int:
    task = _task(args)
    ladder = task.ladder()
    level = args.level if args.level is not None else ladder.train
    task.check_level(level)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.action == "show":
        if args.index < 0:
            raise ValueError(f"--index must be >= 0, got {args.index}")
        # Instance i does not depend on n: make only the first index + 1
        # (or slice a cached larger set with the same seed).
        data, _ = task.generate_set(level, args.index + 1, args.seed, args.cache_dir, args.workers)
        print(task.show(data, args.index))
        return 0

    data, prov = task.generate_set(level, args.n, args.seed, args.cache_dir, args.workers)
    inputs, targets = task.encode_set(data)
    workers = min(args.workers or available_cores(), args.n)
    print(f"{task.name} level {level}: n {prov.n}, seed {prov.seed}, generator v{prov.version}"
          + (f", {task.cache_variant}" if task.cache_variant else ""))
    print(f"ladder: {' < '.join(ladder.levels)}; train {ladder.train}; test {', '.join(ladder.test)}")
    if prov.from_cache:
        print(f"read from cache in {prov.seconds:.2f} s")
    elif not task.cached:
        print(f"made in {prov.seconds * 1000:.1f} ms (generated on the fly, not cached)")
    else:
        print(f"made in {prov.seconds:.1f} s with {workers} worker{'s' * (workers > 1)}: "
              f"{prov.n / prov.seconds:.1f} per second")
    if prov.cache_path is not None:
        print(f"cache: {prov.cache_path}")
    print(f"tensors: inputs {tuple(inputs.shape)} {str(inputs.dtype).replace('torch.', '')}, "
          f"targets {tuple(targets.shape)} {str(targets.dtype).replace('torch.', '')}, "
          f"grid {task.grid(level)}, {task.out_dim} classes per token"
          + (f", attention window {task.attn_window}" if task.attn_window else ""))
    for name, value in task.summarize(data).items():
        print(f"{name}: {value}")
    return 0
