"""Single-Attn vs Looped-Attn on the markov task: simple / complex accuracy and the Hessian over training.

    python benchmarks/markov_two_phase.py --out results/markov/two_phase --seeds 0 1 --threads 1
    python benchmarks/markov_two_phase.py --out /tmp/mtp --epochs 1 --n-train 256 --eval-every 4 \\
        --hessian-every 4 --eval-n 32 --seeds 0 --threads 1               # a dry run (seconds)
    python benchmarks/markov_two_phase.py --out results/markov/two_phase --plot-only

Gong, Teng and Liu (arXiv 2510.10089) report that a one-pass attention model
(Single-Attn) learns the simple sequences of a Markov language perfectly and
plateaus on the complex ones, while the looped model (Looped-Attn) learns in
two phases (simple first, then a late rise on complex sequences), and that
the looped model's Hessian spectrum goes through Collapse -> Diversification
-> Stabilization. This script measures both on fpstab's markov task.

For every arch (single_attn: standard_recall's block applied once;
standard_recall: the same block looped train_iters times) and seed it trains
with fpstab.protocol's own pieces (make_optimizer, lr_at, progressive_depths,
train_step; the data order of epoch_order) and, every --eval-every optimizer
steps and at the last, scores held-out sets of each --eval-levels level
(data seed + 2, as `fpstab eval`) with MarkovTask.metrics: realized and
Bayes-optimal token accuracy, nll over the Bayes floor (excess nll), and the
simple (info <= lower band edge) / complex (> upper edge) split. Every
--hessian-every steps (and at step 0 and the last) it records the Hessian of
the training loss on the first --hessian-samples training sequences
(fpstab.hessian_probe.hessian_record: Lanczos extreme eigenvalues with
residual bounds, kappa(H_valley) or UNDETERMINED, SLQ matrix entropy with
its error), with its CPU seconds.

Records: OUT/ARCH-sSEED.json (atomic, rewritten at every evaluation: config,
seeds, evaluations, Hessian records, training and probe seconds). A run
checkpoints to OUT/checkpoints/ARCH-sSEED.pt at every evaluation and resumes
from there; a completed run is reused. Plots (benchmarks/markov_two_phase_plots.py):
OUT/accuracy.png, OUT/excess_nll.png, OUT/hessian.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: measure the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from fpstab.config import TrainConfig, core_config_for, resolve_config  # noqa: E402
from fpstab.protocol import epoch_order, lr_at, make_optimizer, progressive_depths, train_step  # noqa: E402
from fpstab.runs import atomic_write_json, load_checkpoint, save_checkpoint  # noqa: E402
from fpstab.tasks import get_task  # noqa: E402

SCHEMA, VERSION = "fpstab.markov_two_phase", 1
ARCHS = ("single_attn", "standard_recall")
# Modest probe settings: seconds per record at d 32 (measured: `probe_s` in every record).
HESSIAN_DEFAULTS = {"hessian_samples": 16, "hessian_steps": 30, "hessian_probes": 4, "hessian_slq_steps": 15}


@dataclass
class RunState:
    """A run in progress: its core, optimizer, loss sampler, step and records so far."""

    cfg: TrainConfig
    core: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    step: int = 0
    train_s: float = 0.0  # CPU seconds in train_step (this process), summed over sessions
    train_wall_s: float = 0.0
    window: list[tuple[float, float]] = field(default_factory=list)  # (loss, grad norm) since the last eval
    evals: list[dict[str, Any]] = field(default_factory=list)
    hessian: list[dict[str, Any]] = field(default_factory=list)
    ceilings: dict[str, float] = field(default_factory=dict)  # per eval level: the Bayes predictor's token_acc


def run_config(a: argparse.Namespace, arch: str, seed: int) -> TrainConfig:
    """The TrainConfig of one run: the tiny preset with the script's overrides."""
    return resolve_config("tiny", {
        "task": "markov", "arch": arch, "seed": seed, "data_seed": a.data_seed, "d_model": a.d_model,
        "n_heads": a.n_heads, "train_iters": a.train_iters, "n_train": a.n_train, "n_val": 0,
        "batch_size": a.batch_size, "epochs": a.epochs, "lr": a.lr, "warmup_epochs": a.warmup_epochs,
        "lr_milestones": tuple(a.lr_milestones), "precision": "fp32"})


def new_state(cfg: TrainConfig, task: Any) -> RunState:
    """The seeded core, its optimizer and loss sampler (as fpstab.train builds them)."""
    from fpstab.architectures import build_core

    torch.manual_seed(cfg.seed)
    core = build_core(core_config_for(cfg, task))
    return RunState(cfg, core, make_optimizer(core, cfg), torch.Generator().manual_seed(cfg.seed + 7919))


def iters_of(core: torch.nn.Module, cfg: TrainConfig) -> int:
    """Loop iterations the core is trained and scored at: train_iters, or 1 for a one-pass core."""
    return cfg.train_iters if core.looped else 1


def one_step(state: RunState, task: Any, train: Any) -> None:
    """One optimizer step at state.step on its batch of the epoch's order; its CPU and wall time."""
    cfg = state.cfg
    spe = cfg.steps_per_epoch
    order = epoch_order(cfg.seed, state.step // spe, cfg.n_train)
    idx = order[(state.step % spe) * cfg.batch_size:(state.step % spe + 1) * cfg.batch_size]
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(cfg, state.step)
    depths = progressive_depths(cfg.train_iters, state.sampler) if state.core.looped else (0, 1)
    cpu, wall = time.process_time(), time.perf_counter()
    stats = train_step(state.core, state.core.step_from, task, cfg, state.optimizer, train.inputs[idx],
                       train.targets[idx], depths, "fp32", answers=train.answers[idx])
    state.train_s += time.process_time() - cpu
    state.train_wall_s += time.perf_counter() - wall
    if not stats.stepped:
        raise FloatingPointError(f"non-finite loss or gradient at step {state.step} (loss {stats.loss})")
    state.window.append((stats.loss, stats.grad_norm))
    state.step += 1


@torch.no_grad()
def score(core: torch.nn.Module, task: Any, batch: Any, iters: int) -> dict[str, float]:
    """MarkovTask.metrics of a held-out set after `iters` iterations (one batch)."""
    core.eval()
    logits = core(batch.inputs, iters)[-1]
    core.train()
    return task.metrics(logits, batch.targets, batch.answers, batch.labels["info_per_token"])


def bayes_ceiling(batch: Any) -> float:
    """The share of realized next tokens that are Bayes-optimal: the ceiling of token_acc on the set."""
    return float((batch.answers == batch.targets[:, None, :]).any(1).float().mean())


def evaluation(state: RunState, task: Any, sets: dict[str, Any]) -> dict[str, Any]:
    """One evaluation record: the step, the training loss / grad norm since the last one, each level's metrics."""
    losses = [w[0] for w in state.window] or [float("nan")]
    norms = [w[1] for w in state.window] or [float("nan")]
    cpu = time.process_time()
    levels = {level: score(state.core, task, batch, iters_of(state.core, state.cfg)) for level, batch in sets.items()}
    state.window = []
    return {"step": state.step, "epoch": state.step / state.cfg.steps_per_epoch, "lr": lr_at(state.cfg, max(
        state.step - 1, 0)), "train_loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms),
        "eval_s": time.process_time() - cpu, "levels": levels}


def hessian_at(state: RunState, task: Any, train: Any, opts: Any) -> dict[str, Any]:
    """The Hessian record of the training loss on the first opts.hessian_samples training sequences."""
    from fpstab.hessian_probe import hessian_record

    n = opts.hessian_samples
    cpu, wall = time.process_time(), time.perf_counter()
    rec = hessian_record(state.core, task, state.cfg, train.inputs[:n].float(), train.targets[:n], opts,
                         looped=state.core.looped)
    return {"step": state.step, "probe_s": time.process_time() - cpu, "probe_wall_s": time.perf_counter() - wall,
            **rec}


def checkpoint(state: RunState, path: Path) -> None:
    """Everything a resumed run needs (the records live in the run's JSON)."""
    save_checkpoint(path, {
        "config": state.cfg.to_dict(), "core_config": state.core.config.to_dict(), "task": "markov",
        "model": state.core.state_dict(), "optimizer": state.optimizer.state_dict(),
        "sampler_rng": state.sampler.get_state(), "torch_rng": torch.get_rng_state(), "step": state.step,
        "train_s": state.train_s, "train_wall_s": state.train_wall_s})


def resume(state: RunState, path: Path, record: dict[str, Any]) -> None:
    """Restore a checkpointed run and keep the records up to its step."""
    ckpt = load_checkpoint(path)
    if ckpt["config"] != state.cfg.to_dict():
        raise ValueError(f"{path} was made with another config; delete it (and its JSON) to start over")
    state.core.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.sampler.set_state(ckpt["sampler_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    state.step, state.train_s, state.train_wall_s = int(ckpt["step"]), ckpt["train_s"], ckpt["train_wall_s"]
    state.evals = [e for e in record.get("evals", []) if e["step"] <= state.step]
    state.hessian = [h for h in record.get("hessian", []) if h["step"] <= state.step]


def record_of(state: RunState, a: argparse.Namespace, opts: Any, done: bool) -> dict[str, Any]:
    """The run's JSON record."""
    cfg = state.cfg
    return {"schema": SCHEMA, "schema_version": VERSION, "state": "completed" if done else "running",
            "arch": cfg.arch, "seed": cfg.seed, "data_seed": cfg.data_seed, "train": cfg.to_dict(),
            "core": state.core.config.to_dict(), "params": sum(p.numel() for p in state.core.parameters()),
            "iters": iters_of(state.core, cfg), "total_steps": cfg.total_steps, "step": state.step,
            "eval": {"levels": a.eval_levels, "n": a.eval_n, "seed": cfg.data_seed + 2, "every": a.eval_every,
                     "bayes_ceiling": state.ceilings},
            "hessian_options": dataclasses.asdict(opts) if opts is not None else None,
            "band_edges": list(get_task("markov").band_edges()), "train_s": state.train_s,
            "train_wall_s": state.train_wall_s, "torch": torch.__version__, "evals": state.evals,
            "hessian": state.hessian}


def hessian_options(a: argparse.Namespace) -> Any:
    """The HessianOptions of the flags, or None without --hessian-every."""
    if not a.hessian_every:
        return None
    from fpstab.hessian_options import HESSIAN_KEYS, HessianOptions

    return HessianOptions(**{k: getattr(a, k) for k in HESSIAN_KEYS if getattr(a, k, None) is not None})


def train_run(a: argparse.Namespace, arch: str, seed: int) -> dict[str, Any]:
    """Train (or resume, or reuse) one run with its evaluations and Hessian records; its record."""
    path, ckpt = a.out / f"{arch}-s{seed}.json", a.out / "checkpoints" / f"{arch}-s{seed}.pt"
    old = json.loads(path.read_text()) if path.is_file() else {}
    cfg, task, opts = run_config(a, arch, seed), get_task("markov"), hessian_options(a)
    if old.get("state") == "completed" and old.get("train") == cfg.to_dict():
        return old
    state = new_state(cfg, task)
    if ckpt.is_file():
        resume(state, ckpt, old)
    train = task.make("32", cfg.n_train, cfg.data_seed)
    sets = {level: task.make(level, a.eval_n, cfg.data_seed + 2) for level in a.eval_levels}
    state.ceilings = {level: bayes_ceiling(batch) for level, batch in sets.items()}
    print(f"[two_phase] {arch} seed {seed}: steps {state.step}..{cfg.total_steps} -> {path}", flush=True)
    while True:
        last = state.step == cfg.total_steps
        if opts is not None and (state.step % a.hessian_every == 0 or last) and all(
                h["step"] != state.step for h in state.hessian):
            state.hessian.append(hessian_at(state, task, train, opts))
        if (state.step % a.eval_every == 0 or last) and all(e["step"] != state.step for e in state.evals):
            state.evals.append(evaluation(state, task, sets))
            print(progress_line(state), flush=True)
            checkpoint(state, ckpt)
            atomic_write_json(path, record_of(state, a, opts, last))
        if last:
            return record_of(state, a, opts, True)
        one_step(state, task, train)


def progress_line(state: RunState) -> str:
    """One evaluation in a line: step, training loss, Bayes token accuracy per level."""
    e = state.evals[-1]
    accs = " ".join(f"{lv} {m['bayes_token_acc']:.3f}" for lv, m in e["levels"].items())
    return (f"  step {e['step']:>5} loss {e['train_loss']:.4f} bayes_token_acc: {accs} "
            f"(train {state.train_s:.0f} CPU s)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, required=True, help="folder of the run records")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="init / data-order seeds (default 0)")
    p.add_argument("--data-seed", type=int, default=0, help="training data seed (eval sets: +2)")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--train-iters", type=int, default=8, help="loop iterations of the looped core")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--lr-milestones", type=int, nargs="*", default=[], help="epochs of x0.1 (default none)")
    p.add_argument("--eval-every", type=int, default=100, help="optimizer steps between evaluations")
    p.add_argument("--eval-levels", nargs="+", default=["low32", "high32", "32", "64"])
    p.add_argument("--eval-n", type=int, default=256, help="held-out sequences per level")
    p.add_argument("--hessian-every", type=int, default=500, help="steps between Hessian records (0: none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot-only", action="store_true", help="redraw the plots and table from OUT's records")
    add_hessian_flags(p)
    a = p.parse_args(argv)
    if a.hessian_every and a.hessian_every % a.eval_every:
        p.error(f"--hessian-every {a.hessian_every} must be a multiple of --eval-every {a.eval_every}")
    return a


def add_hessian_flags(p: argparse.ArgumentParser) -> None:
    """HessianOptions' flags (not --hessian-every, ours), at this script's modest defaults."""
    try:
        from fpstab.hessian_options import HessianOptions
        from fpstab.options import add_options
    except ImportError:  # a checkout without the Hessian probe: --hessian-every 0 still works
        return
    add_options(p.add_argument_group("Hessian probe"), HessianOptions, exclude=("hessian_every",))
    p.set_defaults(**HESSIAN_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    from markov_two_phase_plots import plot_all, print_summary

    a.out.mkdir(parents=True, exist_ok=True)
    if not a.plot_only:
        for seed in a.seeds:
            for arch in a.archs:
                train_run(a, arch, seed)
    records = [json.loads(p.read_text()) for p in sorted(a.out.glob("*-s*.json"))]
    print_summary(records)
    for path in plot_all(records, a.out):
        print(f"[two_phase] wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
