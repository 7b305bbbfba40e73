"""A trained markov core's scores per level: realized and Bayes-optimal accuracy, loss over the
Bayes floor, and the simple / complex split by information content.

    python benchmarks/markov_scores.py RUN [--levels 32 low32 high32 64] [--iters 30] [--n 500]

For each level it makes n sequences (seed: the run's data_seed + 2, as `fpstab eval`), runs the
core for `iters` iterations (default: the run's train_iters) and prints the task's metrics
(`MarkovTask.metrics` with each sequence's information per token): token_acc (realized next
token), bayes_token_acc, exact_match (every position Bayes-optimal), nll and the Bayes nll
(nats per token), and the accuracies of the simple (info <= lower band edge) and complex
(> upper edge) sequences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: measure the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from fpstab.runs import load_run  # noqa: E402
from fpstab.tasks import get_task  # noqa: E402

COLUMNS = ("token_acc", "bayes_token_acc", "exact_match", "nll", "bayes_nll", "share_simple",
           "token_acc_simple", "token_acc_complex", "bayes_token_acc_simple", "bayes_token_acc_complex")


@torch.no_grad()
def level_scores(core: torch.nn.Module, task, level: str, n: int, seed: int, iters: int) -> dict[str, float]:
    """The task's metrics of one level after `iters` iterations (one batch)."""
    batch = task.make(level, n, seed)
    logits = core(batch.inputs, iters)[-1].float()
    return task.metrics(logits, batch.targets, batch.answers, batch.labels["info_per_token"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a run directory of a markov training run")
    p.add_argument("--levels", nargs="+", help="ladder levels (default: the train and test levels)")
    p.add_argument("--iters", type=int, help="loop iterations (default: the run's train_iters)")
    p.add_argument("--n", type=int, default=500, help="sequences per level (default 500)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    core, _, cfg, task_name = load_run(a.run)
    if task_name != "markov":
        p.error(f"{a.run} trained on {task_name!r}; this script scores markov runs")
    task = get_task(task_name)
    ladder = task.ladder()
    levels = a.levels or [cfg.train_level or ladder.train, *ladder.test]
    iters = a.iters or cfg.train_iters
    print(f"{a.run}: {cfg.arch}, {iters} iterations, {a.n} sequences per level, seed {cfg.data_seed + 2}")
    print("level    " + " ".join(f"{c:>{max(len(c), 7)}}" for c in COLUMNS))
    for level in levels:
        m = level_scores(core, task, level, a.n, cfg.data_seed + 2, iters)
        print(f"{level:<8} " + " ".join(f"{m[c]:>{max(len(c), 7)}.3f}" for c in COLUMNS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
