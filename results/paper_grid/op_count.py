"""Aten operator calls per training step of a looped core: the dispatch floor of a small-batch step.

At a small batch a GPU step is bound by how many operators the host dispatches, not by arithmetic,
so the count of aten calls per optimizer step, times a per-call cost, bounds an eager step's time
from below. This counts them (torch's dispatch mode, fp32, on the CPU; the count does not depend on
the width or the batch) for the progressive loss's depths (n iterations without gradients, then k
with), with and without activation checkpointing. The loss draws n ~ U{0..29}, k ~ U{1..30-n}
(E[n] = 14.5, E[k] = 8.25), so (14, 8) is about its mean step.

Run from the repository root: `python3 results/paper_grid/op_count.py [--task chess] [--arch ...]`.
Under bf16 autocast on a GPU a step also dispatches casts, so the count there is higher.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fpstab.architectures import CoreConfig, build_core  # noqa: E402
from fpstab.config import TrainConfig  # noqa: E402
from fpstab.protocol import checkpointed, make_optimizer, train_step  # noqa: E402
from fpstab.tasks import get_task  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts every aten operator call made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(task_name: str, arch: str, norm: str, depths: tuple[int, int], checkpoint: bool) -> int:
    """Aten calls in one training step (forward, backward, clip, AdamW) at `depths` = (n, k)."""
    task = get_task(task_name)
    grid = tuple(task.grid(task.ladder().train))
    tokens = int(torch.tensor(grid).prod())
    batch, d, heads = 4, 32, 4
    cfg = TrainConfig(task=task_name, arch=arch, norm=norm, d_model=d, n_heads=heads, batch_size=batch,
                      n_train=batch, train_iters=30)
    torch.manual_seed(0)
    core = build_core(CoreConfig(arch=arch, norm=norm, d_model=d, n_heads=heads, in_dim=task.in_dim,
                                 out_dim=task.out_dim, grid=grid, attn_window=task.attn_window))
    opt = make_optimizer(core, cfg)
    x = torch.nn.functional.one_hot(torch.randint(0, task.in_dim, (batch, tokens)), task.in_dim).float()
    y = torch.randint(0, task.out_dim, (batch, tokens))
    step = checkpointed(core.step_from) if checkpoint else core.step_from
    train_step(core, step, task, cfg, opt, x, y, depths, "fp32")  # the optimizer's state exists from here on
    counter = OpCounter()
    with counter:
        train_step(core, step, task, cfg, opt, x, y, depths, "fp32")
    return counter.calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="chess")
    ap.add_argument("--arch", default="standard_recall")
    ap.add_argument("--norm", default="outer")
    a = ap.parse_args(argv)
    print(f"{a.task} {a.arch}+{a.norm}, torch {torch.__version__}: aten calls per training step")
    depths = ((0, 1), (14, 8), (0, 30), (29, 1))
    print("depths (n, k): " + ", ".join(map(str, depths)) + "   ((14, 8) is about the mean draw)")
    for checkpoint in (False, True):
        counts = [ops_per_step(a.task, a.arch, a.norm, nk, checkpoint) for nk in depths]
        print(f"activation checkpointing {'on ' if checkpoint else 'off'}: " + ", ".join(f"{c:,}" for c in counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
