"""How fast several training runs share one GPU: the aggregate optimizer steps/s of N processes.

    python benchmarks/gpu_sharing.py --jobs 1,3,6 --seconds 30 --json sharing.json      # paper shape, cuda
    python benchmarks/gpu_sharing.py --device cpu --tiny --jobs 1,2 --seconds 5         # a dry run on a CPU

`fpstab sweep --jobs N` trains N runs at once, each in its own process. On one GPU
without MPS the processes' kernels are time-sliced, so N processes may train no faster
together than one; with MPS (NVIDIA's Multi-Process Service, started outside this script:
results/paper_grid/device.sh) their kernels can run side by side. This measures what the
grid gets: for each N in --jobs, N processes each train their own core with fpstab's
training step (`fpstab.protocol.train_step`: the progressive loss with its depths drawn per
step, bf16 autocast on cuda, AdamW, activation checkpointing as the paper grid runs it),
on random inputs of the task's shape. Every process warms up, waits for the others, then
counts its steps for --seconds. The table gives, per N, the aggregate steps/s (the sum of
the processes' own rates), the per-process rate, the mean number of loop iterations a step
ran (n + k; process i trains with seed i, so it draws the same depths at every N), and
each process's peak GPU memory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fpstab.runs import atomic_write_json  # noqa: E402

TASK_LEVELS = {"prefix_sum": "32", "sudoku": "easy+medium", "chess": "mate1+mate2"}


@dataclass(frozen=True)
class Setting:
    """What every worker trains: the task's shape at the preset's size, and how it runs."""

    task: str
    arch: str
    norm: str
    preset: str  # "paper" (d 256, 8 heads, batch 500) or "tiny" (d 64, 4 heads, batch 32)
    batch: int | None  # None: the preset's
    device: str
    threads: int
    compile: bool
    checkpointing: bool
    warmup: int
    seconds: float


@dataclass
class WorkerResult:
    """One process's measurement (error set when it failed)."""

    index: int
    steps: int = 0
    seconds: float = 0.0
    mean_iters: float = 0.0
    peak_mem_gb: float | None = None
    error: str | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def _train_fn(s: Setting, index: int) -> tuple[Callable[[], int], torch.device]:
    """(one optimizer step on a fixed random batch, returning its loop iterations n + k; the device)."""
    from fpstab.config import Runtime, core_config_for, resolve_config, resolve_precision
    from fpstab.protocol import loss_depths, train_step
    from fpstab.tasks import get_task
    from fpstab.train import build_training

    task = get_task(s.task)
    cfg = resolve_config(s.preset, {"task": s.task, "arch": s.arch, "norm": s.norm, "seed": index,
                                    "train_level": TASK_LEVELS[s.task], "batch_size": s.batch})
    device = torch.device(s.device)
    runtime = Runtime(device=s.device, compile=s.compile, activation_checkpointing=s.checkpointing)
    # what `fpstab train` builds: the core seeded by cfg.seed, AdamW, the depth sampler, the step function
    core, optimizer, sampler, step_fn = build_training(cfg, core_config_for(cfg, task), runtime, device)
    precision = resolve_precision(cfg.precision, device.type)
    looped = bool(getattr(core, "looped", True))
    n_tokens = int(torch.tensor(task.grid(TASK_LEVELS[s.task])).prod())
    gen = torch.Generator().manual_seed(index)
    x = F.one_hot(torch.randint(0, task.in_dim, (cfg.batch_size, n_tokens), generator=gen), task.in_dim).float()
    y = torch.randint(0, task.out_dim, (cfg.batch_size, n_tokens), generator=gen)
    x, y = x.to(device), y.to(device)

    def step() -> int:
        depths = loss_depths(cfg, sampler, looped)
        train_step(core, step_fn, task, cfg, optimizer, x, y, depths, precision)  # syncs with the host once
        return sum(depths)

    return step, device


def _worker(s: Setting, index: int, barrier: Any, results: Any) -> None:
    """Build, warm up, wait for every worker, then count steps for s.seconds; put a WorkerResult."""
    res = WorkerResult(index)
    try:
        torch.set_num_threads(s.threads)
        step, device = _train_fn(s, index)
        for _ in range(s.warmup):
            step()
    except Exception as err:  # reported in the table; the others still run
        res.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        traceback.print_exc(limit=4, file=sys.stderr)
        barrier.abort()
        results.put(res)
        return
    try:
        barrier.wait(timeout=600)
    except Exception:
        res.error = "another worker failed before the timed window"
        results.put(res)
        return
    iters, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < s.seconds:
        iters.append(step())
    res.steps, res.seconds = len(iters), time.perf_counter() - t0
    res.mean_iters = statistics.fmean(iters) if iters else 0.0
    if device.type == "cuda":
        res.peak_mem_gb = torch.cuda.max_memory_allocated(device) / 2**30
    results.put(res)


def measure(s: Setting, jobs: int) -> list[WorkerResult]:
    """`jobs` worker processes (spawned: CUDA needs a fresh process) training at once."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(s, i, barrier, results)) for i in range(jobs)]
    for p in procs:
        p.start()
    out: dict[int, WorkerResult] = {}
    while len(out) < jobs:
        try:
            res = results.get(timeout=5)
            out[res.index] = res
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break  # a process died without reporting (killed, out of memory)
    for p in procs:
        p.join()
    for i, p in enumerate(procs):
        if i not in out:
            out[i] = WorkerResult(i, error=f"process exited with code {p.exitcode} before reporting")
    return [out[i] for i in range(jobs)]


def summary(jobs: int, results: list[WorkerResult]) -> dict[str, Any]:
    """One table row: aggregate and per-process rates over the workers that measured."""
    ok = [r for r in results if r.error is None]
    rates = [r.steps_per_s for r in ok]
    return {
        "jobs": jobs, "ok": len(ok), "total_steps_per_s": sum(rates),
        "per_process_steps_per_s": statistics.fmean(rates) if rates else None,
        "mean_iters_per_step": statistics.fmean(r.mean_iters for r in ok) if ok else None,
        "peak_mem_gb": max((r.peak_mem_gb for r in ok if r.peak_mem_gb is not None), default=None),
        "errors": [r.error for r in results if r.error is not None],
        "workers": [asdict(r) for r in results],
    }


def print_row(row: dict[str, Any], label: str) -> None:
    per = row["per_process_steps_per_s"]
    mem = row["peak_mem_gb"]
    print(f"{label:<12} {row['jobs']:>4} {row['ok']:>4} {row['total_steps_per_s']:>12.2f} "
          f"{per if per is not None else float('nan'):>14.2f} "
          f"{row['mean_iters_per_step'] if row['mean_iters_per_step'] is not None else float('nan'):>10.1f} "
          f"{'-' if mem is None else f'{mem:.1f}':>9}" + (f"  errors: {row['errors']}" if row["errors"] else ""),
          flush=True)


def parse_jobs(text: str) -> list[int]:
    try:
        jobs = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--jobs {text!r}: comma-separated process counts >= 1, e.g. 1,3,6") from None
    if not jobs or min(jobs) < 1:
        raise SystemExit(f"--jobs {text!r}: comma-separated process counts >= 1, e.g. 1,3,6")
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", default="1,3,6", help="comma-separated numbers of processes at once")
    p.add_argument("--seconds", type=float, default=30.0, help="timed window per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per process before the window")
    p.add_argument("--task", default="sudoku", choices=sorted(TASK_LEVELS))
    p.add_argument("--arch", default="standard_recall")
    p.add_argument("--norm", default="outer")
    p.add_argument("--tiny", action="store_true", help="the tiny preset's size (d 64, batch 32): a CPU dry run")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    p.add_argument("--compile", action="store_true", help="torch.compile the loop step")
    p.add_argument("--no-checkpointing", action="store_true", help="keep every iteration's activations")
    p.add_argument("--label", default="", help="a name for this measurement in the table and JSON (e.g. mps)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here (after every row)")
    a = p.parse_args(argv)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = Setting(a.task, a.arch, a.norm, "tiny" if a.tiny else "paper", a.batch, device, a.threads, a.compile,
                not a.no_checkpointing, a.warmup, a.seconds)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    header = {"setting": asdict(s), "label": a.label, "device_name": name, "torch": torch.__version__,
              "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"), "command": " ".join(sys.argv)}
    print(f"{name}; torch {torch.__version__}; {s.task} {s.arch}+{s.norm} {s.preset} preset"
          f"{'' if a.batch is None else f' batch {a.batch}'}; {s.threads} threads/process; "
          f"{'compiled' if s.compile else 'eager'}; checkpointing {s.checkpointing}; {a.label or 'no label'}")
    print(f"{'label':<12} {'jobs':>4} {'ok':>4} {'total step/s':>12} {'per-proc step/s':>14} "
          f"{'iters/step':>10} {'peak GB':>9}")
    rows: list[dict[str, Any]] = []
    for jobs in parse_jobs(a.jobs):
        rows.append(summary(jobs, measure(s, jobs)))
        print_row(rows[-1], a.label or "-")
        if a.json:
            atomic_write_json(a.json, {**header, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
