"""`fpstab eval`: accuracy at every iteration 1..T and every ladder level.

    fpstab eval runs/NAME [--levels 32 64 128 512] [--iters 500] [--samples N] [--device cpu]

For each level, one pass per batch runs h_t = step(h_{t-1}, e) for
t = 1..T and reads out every h_t, so accuracy at every iteration comes from a
single trajectory (nothing is re-run). From the same trajectory:

- best iteration (first t of maximal accuracy) and the overthinking penalty
  max_t acc(t) - acc(T);
- adaptive halting: sample i stops at the first t with relative residual
  r_t = ||h_t - h_{t-1}|| / ||h_t|| < tol (else at T); its prediction is the
  readout of h_t and it used t function evaluations (calls of `step`).

Then a fixed-point solver at test time (fixedpoint.solve, Anderson by
default) from the same h0: accuracy of the readout of the returned state and
the function evaluations it used.

Writes RUN/eval.json (schema "fpstab.eval", version EVAL_SCHEMA_VERSION; see
`evaluate_run`) and RUN/plots/acc_vs_iters*.png (reports.plots).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fpstab import __version__
from fpstab.compile_step import CompileChoice, FallbackStep, choose_eval_compile
from fpstab.cpu_allocator import trimming
from fpstab.devices import check_device_name, default_device, resolve_device
from fpstab.runs import (
    EVAL_FILE,
    PLOTS_DIR,
    atomic_write_json,
    checkpoint_path_of,
    load_trained,
    run_dir_of,
    run_state,
    run_state_note,
)

from fpstab.shift import shift_note
from fpstab.reports.run_files import EVAL_SCHEMA, EVAL_SCHEMA_VERSION


Iteration = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], tuple[Tensor, Tensor, Tensor, Tensor]]


def eval_iteration(core: nn.Module, task: Any) -> Iteration:
    """One scored iteration, (h, u, y, answers) -> (h_next, residual, correct, token_acc): h, h_next
    (B, n_tokens, d_model); u = core.loop_input(e); y (B, n_tokens); answers as in `trajectory_metrics`;
    residual (B,) ||h_next - h|| / ||h_next|| (inf if non-finite); correct (B,) bool; token_acc ().
    One function, so that torch.compile can fuse the step with its scoring."""
    tiny = torch.finfo(torch.float32).tiny

    def iteration(h: Tensor, u: Tensor, y: Tensor, answers: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        nxt = core.step_from(h, u)
        rel = (nxt - h).flatten(1).float().norm(dim=1) / (nxt.flatten(1).float().norm(dim=1) + tiny)
        rel = torch.where(torch.isfinite(rel), rel, torch.full_like(rel, float("inf")))
        logits = core.readout(nxt).float()
        return nxt, rel, task.correct(logits, y, answers), task.token_accuracy(logits, y)

    return iteration


@torch.no_grad()
def trajectory_metrics(core: nn.Module, task: Any, x: Tensor, y: Tensor, iters: int,
                       answers: Tensor | None = None, iteration: Iteration | None = None) -> dict[str, Tensor]:
    """Run one batch for `iters` iterations and score every iteration.

    x: (B, n_tokens, in_dim); y: (B, n_tokens); answers: the batch's rows of
    `TaskBatch.answers` (every answer the task accepts) or None; iteration:
    `eval_iteration(core, task)` (the default) or a compiled form of it.
    Returns (all on CPU):
        correct:   (iters, B) bool, exact match of readout(h_t), t = 1..iters
        token_acc: (iters,) float, the task's token accuracy over the batch
        residual:  (iters, B) float, ||h_t - h_{t-1}|| / ||h_t|| (inf if non-finite)
    """
    iteration = eval_iteration(core, task) if iteration is None else iteration
    e = core.encode(x)
    h, u = core.init_state(e), core.loop_input(e)
    # Filled in place: no host sync per iteration, and no small tensor per iteration left between the
    # large temporaries, where it fragmented the CPU heap (a compiled evaluation grew ~30 MB an iteration).
    correct = torch.empty(iters, x.shape[0], dtype=torch.bool, device=x.device)
    token_acc = torch.empty(iters, device=x.device)
    residual = torch.empty(iters, x.shape[0], device=x.device)
    for t in range(iters):
        h, residual[t], correct[t], token_acc[t] = iteration(h, u, y, answers)
    return {"correct": correct.cpu(), "token_acc": token_acc.cpu(), "residual": residual.cpu()}


def halting_from_trajectory(correct: Tensor, residual: Tensor, tol: float) -> dict[str, Tensor]:
    """Adaptive halting read off a recorded trajectory.

    correct, residual: (T, B). Sample i halts at the first t (1-based) with
    residual[t-1, i] < tol, else at T. Returns nfe (B,) long (= halting t),
    correct (B,) bool at that t, halted (B,) bool (residual fell below tol).
    """
    T = residual.shape[0]
    below = residual < tol
    halted = below.any(dim=0)
    first = torch.where(halted, below.float().argmax(dim=0), torch.full_like(halted, T - 1, dtype=torch.long))
    return {"nfe": first + 1, "correct": correct.gather(0, first[None]).squeeze(0), "halted": halted}


@torch.no_grad()
def solver_metrics(core: nn.Module, task: Any, x: Tensor, y: Tensor, solver: str, max_iter: int,
                   tol: float, answers: Tensor | None = None,
                   step: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, Any]:
    """Test-time fixed-point solve from h0 = init_state(encode(x)).

    x: (B, n_tokens, in_dim); y: (B, n_tokens); answers: as in `trajectory_metrics`;
    step: core.step_from (the default) or a compiled form of it.
    Returns per-batch counts:
    correct (B,) bool, nfe (int, evaluations of `step` on the batch),
    steps (B,) long (evaluation at which the sample reached tol; -1 never),
    converged (B,) bool, diverged (B,) bool, failure (str | None).
    """
    from fpstab.fixedpoint import solve

    e = core.encode(x)
    h0, u = core.init_state(e), core.loop_input(e)
    step_from = core.step_from if step is None else step

    def fn(h: Tensor) -> Tensor:
        return step_from(h, u)

    # On a CPU the solver's varied temporaries fragment the heap (fpstab.cpu_allocator.trimming).
    res = solve(trimming(fn) if h0.device.type == "cpu" else fn, h0, solver=solver, max_iter=max_iter, tol=tol)
    logits = core.readout(res.state).float()
    return {"correct": task.correct(logits, y, answers).cpu(), "nfe": int(res.nfe), "steps": res.steps.cpu(),
            "converged": res.converged.cpu(), "diverged": res.diverged.cpu(), "failure": res.failure}


def _level_record(level: Any, grid: Any, n: int, seed: int, correct: Tensor, token_acc: Tensor,
                  residual: Tensor, train_iters: int) -> dict[str, Any]:
    """Per-level summary (see evaluate_run for the schema).

    correct, residual: (T, N); token_acc: (T,) mean over the N samples.
    """
    acc = correct.float().mean(dim=1)
    T = acc.shape[0]
    best = int(torch.argmax(acc))  # first maximum
    finite = torch.where(torch.isfinite(residual), residual, torch.full_like(residual, float("nan")))
    return {
        "level": level,
        "grid": list(grid) if grid is not None else None,
        "n_samples": n,
        "data_seed": seed,
        "accuracy": [round(float(a), 6) for a in acc],
        "token_accuracy": [round(float(a), 6) for a in token_acc],
        "residual_median": [_num(v) for v in finite.nanquantile(0.5, dim=1)],
        "residual_p90": [_num(v) for v in finite.nanquantile(0.9, dim=1)],
        "final_accuracy": float(acc[-1]),
        "best_accuracy": float(acc[best]),
        "best_iteration": best + 1,
        "overthinking_penalty": float(acc[best] - acc[-1]),
        "accuracy_at_train_iters": float(acc[train_iters - 1]) if T >= train_iters else None,
    }


def _num(v: Tensor) -> float | None:
    f = float(v)
    return None if math.isnan(f) else f  # NaN -> null (JSON has no NaN)


def parse_levels(values: Sequence[str] | None, ladder: Any) -> list[Any]:
    """Level names from the command line -> ladder levels (ints where the ladder has ints).

    None -> the training level followed by the ladder's test levels.
    """
    allowed = list(ladder.levels)
    if not values:
        test = list(ladder.test) if isinstance(ladder.test, (list, tuple)) else [ladder.test]
        return [ladder.train] + [lv for lv in test if lv != ladder.train]
    out = []
    for v in values:
        match = [lv for lv in allowed if str(lv) == str(v)]
        if not match:
            raise ValueError(f"level {v!r} is not a level of this task; allowed: {allowed}")
        out.append(match[0])
    return out


@dataclass(frozen=True)
class EvalPlan:
    """What one evaluation measures: T = `iters` iterations (1 for a one-pass core), `samples` per level
    in batches of `batch_size`, halting at `halt_tol`, the test-time `solver` (or None) with its
    `max_iter` and `tol`, on test data drawn with `seed`."""

    iters: int
    samples: int
    batch_size: int
    halt_tol: float
    solver: str | None
    max_iter: int
    solver_tol: float
    seed: int
    looped: bool
    train_iters: int
    data_cache: str | None = None
    compile: bool | None = None  # None: auto, eager (fpstab.compile_step.choose_eval_compile)

    def halting(self) -> dict[str, Any] | None:
        """The halting settings a record names (None for a one-pass core)."""
        return {"tol": self.halt_tol} if self.looped else None

    def solver_settings(self) -> dict[str, Any] | None:
        """The solver settings a record names (None without a solver or for a one-pass core)."""
        if not (self.looped and self.solver):
            return None
        return {"name": self.solver, "max_iter": self.max_iter, "tol": self.solver_tol}


def _one_pass_metrics(core: nn.Module, task: Any, x: Tensor, y: Tensor, answers: Tensor | None) -> dict[str, Tensor]:
    """`trajectory_metrics` of a one-pass core: its single output, T = 1, no residual."""
    with torch.no_grad():
        logits = core(x, 1)[-1].float()
    return {"correct": task.correct(logits, y, answers).cpu()[None],
            "token_acc": task.token_accuracy(logits, y).cpu()[None],
            "residual": torch.full((1, x.shape[0]), float("nan"))}


@dataclass
class _LevelFunctions:
    """What one level iterates: the scored iteration and the solver's step, compiled or eager."""

    iteration: Iteration
    step: Callable[[Tensor, Tensor], Tensor]
    choice: CompileChoice

    @classmethod
    def build(cls, core: nn.Module, task: Any, choice: CompileChoice) -> _LevelFunctions:
        iteration, step = eval_iteration(core, task), core.step_from
        if choice.compile:  # one graph per shape: levels differ in length, batches of a level do not
            iteration = FallbackStep(iteration, torch.compile(iteration, dynamic=False))
            step = FallbackStep(step, torch.compile(step, dynamic=False))
        return cls(iteration, step, choice)

    def record(self) -> dict[str, Any]:
        """The level record's "compiled": the choice, its reason, and why it fell back to eager (or None)."""
        fallbacks = [f.fallback for f in (self.iteration, self.step) if isinstance(f, FallbackStep) and f.fallback]
        return {**self.choice.to_dict(), "fallback": fallbacks[0] if fallbacks else None}


class _LevelTally:
    """Per-batch results of one level, merged into its record at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[Tensor]] = {"correct": [], "token_acc": [], "residual": []}
        self.halt: dict[str, list[Tensor]] = {"nfe": [], "correct": [], "halted": []}
        self.sol: dict[str, Any] = {"correct": [], "nfe": 0, "steps": [], "converged": [], "diverged": [],
                                    "failures": 0}

    def add_batch(self, core: nn.Module, task: Any, x: Tensor, y: Tensor, answers: Tensor | None,
                  plan: EvalPlan, fns: _LevelFunctions) -> None:
        """Score one batch x (B, n_tokens, in_dim), y (B, n_tokens): trajectory, halting, solver."""
        tr = (trajectory_metrics(core, task, x, y, plan.iters, answers, fns.iteration) if plan.looped
              else _one_pass_metrics(core, task, x, y, answers))
        self.parts["correct"].append(tr["correct"])
        self.parts["residual"].append(tr["residual"])
        self.parts["token_acc"].append(tr["token_acc"] * x.shape[0])  # batch sums, divided in `record`
        if not plan.looped:
            return
        for k, v in halting_from_trajectory(tr["correct"], tr["residual"], plan.halt_tol).items():
            self.halt[k].append(v)
        if plan.solver:
            s = solver_metrics(core, task, x, y, plan.solver, plan.max_iter, plan.solver_tol, answers, fns.step)
            for k in ("correct", "steps", "converged", "diverged"):
                self.sol[k].append(s[k])
            self.sol["nfe"] += s["nfe"] * x.shape[0]
            self.sol["failures"] += int(s["failure"] is not None)

    def record(self, level: Any, grid: Any, plan: EvalPlan) -> dict[str, Any]:
        """The level's entry of the eval record (see `evaluate_run`), without wall_s."""
        rec = _level_record(level, grid, plan.samples, plan.seed, torch.cat(self.parts["correct"], dim=1),
                            torch.stack(self.parts["token_acc"]).sum(dim=0) / plan.samples,
                            torch.cat(self.parts["residual"], dim=1), plan.train_iters)
        halting, solver = plan.halting(), plan.solver_settings()
        rec["halting"] = None if halting is None else {**halting, **self._halting()}
        rec["solver"] = None if solver is None else {**solver, **self._solver(plan.samples)}
        return rec

    def _halting(self) -> dict[str, Any]:
        h = {k: torch.cat(v) for k, v in self.halt.items()}
        return {"accuracy": float(h["correct"].float().mean()), "mean_nfe": float(h["nfe"].float().mean()),
                "halted_fraction": float(h["halted"].float().mean())}

    def _solver(self, samples: int) -> dict[str, Any]:
        sol = self.sol
        steps = torch.cat(sol["steps"])
        reached = steps[steps > 0]
        return {
            "accuracy": float(torch.cat(sol["correct"]).float().mean()),
            "nfe": sol["nfe"] / samples,
            "mean_steps_to_tol": float(reached.float().mean()) if reached.numel() else None,
            "converged_fraction": float(torch.cat(sol["converged"]).float().mean()),
            "diverged_fraction": float(torch.cat(sol["diverged"]).float().mean()),
            "failures": sol["failures"],
        }


def evaluate_level(core: nn.Module, task: Any, level: Any, plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """One level's entry of the eval record: `plan.samples` test samples of `level`, scored in batches."""
    t_level = time.perf_counter()
    data = task.make(level, plan.samples, plan.seed, cache_dir=plan.data_cache)
    choice = (choose_eval_compile(plan.compile, device.type) if plan.looped
              else CompileChoice(False, "one pass: nothing to iterate"))
    fns = _LevelFunctions.build(core, task, choice)
    tally = _LevelTally()
    for start in range(0, plan.samples, plan.batch_size):
        rows = slice(start, start + plan.batch_size)
        answers = data.answers[rows].to(device) if data.answers is not None else None
        tally.add_batch(core, task, data.inputs[rows].to(device), data.targets[rows].to(device), answers, plan, fns)
    rec = tally.record(level, data.grid, plan)
    rec["compiled"] = fns.record()
    rec["wall_s"] = round(time.perf_counter() - t_level, 2)
    return rec


def _level_message(rec: dict[str, Any]) -> str:
    msg = (f"[eval] level {rec['level']}: acc@T {rec['final_accuracy']:.4f} best {rec['best_accuracy']:.4f} "
           f"@ t={rec['best_iteration']} overthinking {rec['overthinking_penalty']:.4f} "
           f"token acc@T {rec['token_accuracy'][-1]:.4f}")
    if rec["halting"]:
        msg += f" | halting acc {rec['halting']['accuracy']:.4f} nfe {rec['halting']['mean_nfe']:.1f}"
    if rec["solver"]:
        msg += f" | {rec['solver']['name']} acc {rec['solver']['accuracy']:.4f} nfe {rec['solver']['nfe']:.1f}"
    return msg + f" ({rec['wall_s']:.1f}s)"


def _record_header(run_dir: Path, ckpt_path: Path, ckpt_step: int, state: Any, task_name: str, cfg: Any,
                   train_level: Any, plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """The eval record's fields before "levels" (see `evaluate_run`)."""
    return {
        "schema": EVAL_SCHEMA,
        "schema_version": EVAL_SCHEMA_VERSION,
        "fpstab": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_path),
        "checkpoint_step": ckpt_step,
        "run_state": state,
        "task": task_name,
        "arch": cfg.arch,
        "norm": cfg.norm,
        "train_level": train_level,
        "train_iters": cfg.train_iters,
        "looped": plan.looped,
        "iters": plan.iters,
        "device": str(device),
        "halting": plan.halting(),
        "solver": plan.solver_settings(),
        "levels": [],
    }


def _finish(record: dict[str, Any], out_path: Path, plots: bool, t_start: float) -> list[Path]:
    """Plot (unless `plots` is False), stamp wall_s and write the record atomically; the plot paths."""
    record["plots"] = []
    record["wall_s"] = round(time.perf_counter() - t_start, 2)
    paths: list[Path] = []
    if plots:
        from fpstab.reports.plots import plot_eval

        paths = plot_eval(record, out_path.parent / PLOTS_DIR)
        record["plots"] = [str(p.relative_to(out_path.parent)) for p in paths]
    atomic_write_json(out_path, record)
    return paths


def evaluate_run(run: str | Path, levels: Sequence[Any] | None = None, iters: int = 500,
                 samples: int = 1000, batch_size: int = 250, device: str = "cpu",
                 halt_tol: float = 1e-3, solver: str | None = "anderson", solver_max_iter: int | None = None,
                 solver_tol: float = 1e-3, data_seed: int | None = None, checkpoint: str | Path | None = None,
                 data_cache: str | None = None, plots: bool = True, out: str | Path | None = None,
                 quiet: bool = False, compile: bool | None = None) -> dict[str, Any]:
    """Evaluate a trained run; write and return the eval record.

    Args:
        run: run directory (or a checkpoint file inside one).
        levels: ladder levels (default: training level + the ladder's test levels).
        iters: T, iterations scored (1..T). Non-looped cores are scored at 1.
        samples: test samples per level; batch_size: samples per forward.
        halt_tol: relative-residual threshold of adaptive halting.
        solver: test-time solver ("anderson", "broyden", "iterate") or None to skip;
            solver_max_iter defaults to T; solver_tol its relative-residual tol.
        data_seed: test data seed (default: the run's data_seed + 2).
        out: where eval.json goes (default: RUN/eval.json); plots go beside it.
        compile: torch.compile each level's iteration and solver step (True), never (False),
            or auto (None: eager, fpstab.compile_step.choose_eval_compile).
    Returns the record written to eval.json:
        {"schema": "fpstab.eval", "schema_version": 1, "fpstab", "created",
         "run_dir", "checkpoint", "checkpoint_step", "task", "arch", "norm",
         "train_level", "train_iters", "looped", "iters", "device",
         "halting": {"tol"}, "solver": {"name", "max_iter", "tol"} | null,
         "levels": [{"level", "grid", "n_samples", "data_seed",
                     "accuracy": [T], "token_accuracy": [T],
                     "residual_median": [T], "residual_p90": [T],
                     "final_accuracy", "best_accuracy", "best_iteration",
                     "overthinking_penalty", "accuracy_at_train_iters",
                     "halting": {"tol", "accuracy", "mean_nfe", "halted_fraction"} | null,
                     "solver": {"name", "max_iter", "tol", "accuracy", "nfe",
                                "mean_steps_to_tol", "converged_fraction",
                                "diverged_fraction", "failures"} | null,
                     "compiled": {"compile", "reason", "fallback"}, "wall_s"}],
         "plots": [paths relative to the run dir], "wall_s"}
    """
    from fpstab.tasks import get_task

    check_eval_options(iters=iters, samples=samples, batch_size=batch_size, halt_tol=halt_tol, solver=solver,
                       solver_max_iter=solver_max_iter, solver_tol=solver_tol, data_seed=data_seed)
    t_start = time.perf_counter()
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    ckpt_path = Path(checkpoint) if checkpoint is not None else checkpoint_path_of(run)
    run_dir = run_dir_of(run)
    dev = resolve_device(device)
    core, _, cfg, task_name, ckpt_step, _ = load_trained(run_dir, device=dev, checkpoint=ckpt_path)
    state = run_state(run_dir)
    for note in filter(None, (run_state_note(state, ckpt_step, "evaluating"), shift_note(run_dir, "evaluating"))):
        say(f"[eval] note: {note}")
    task = get_task(task_name)
    ladder = task.ladder()
    levels = parse_levels([str(lv) for lv in levels] if levels else None, ladder)
    looped = bool(getattr(core, "looped", True))
    T = iters if looped else 1
    plan = EvalPlan(iters=T, samples=samples, batch_size=batch_size, halt_tol=halt_tol, solver=solver,
                    max_iter=solver_max_iter or T, solver_tol=solver_tol,
                    seed=cfg.data_seed + 2 if data_seed is None else data_seed, looped=looped,
                    train_iters=cfg.train_iters, data_cache=data_cache, compile=compile)
    train_level = cfg.train_level if cfg.train_level is not None else ladder.train
    record = _record_header(run_dir, ckpt_path, ckpt_step, state, task_name, cfg, train_level, plan, dev)
    say(f"[eval] {run_dir} step {ckpt_step}: {task_name} {cfg.arch}+{cfg.norm}, levels {levels}, "
        f"T={T}, {samples} samples/level on {dev}")
    for level in levels:
        record["levels"].append(evaluate_level(core, task, level, plan, dev))
        say(_level_message(record["levels"][-1]))
    out_path = Path(out) if out is not None else run_dir / EVAL_FILE
    paths = _finish(record, out_path, plots, t_start)
    say(f"[eval] wrote {out_path}" + (f" and {len(paths)} plots in {out_path.parent / PLOTS_DIR}" if plots else ""))
    return record


def check_eval_options(iters: int, samples: int, batch_size: int, halt_tol: float, solver: str | None,
                       solver_max_iter: int | None, solver_tol: float, data_seed: int | None) -> None:
    """ValueError naming the first option out of its range (the CLI calls this before importing torch)."""
    for name, value in (("iters", iters), ("samples", samples), ("batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} {value!r}: must be an int >= 1")
    if solver_max_iter is not None and solver_max_iter < 1:
        raise ValueError(f"--solver-max-iter {solver_max_iter}: must be >= 1")
    for name, value in (("halt-tol", halt_tol), ("solver-tol", solver_tol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"--{name} {value!r}: must be a number > 0 (a relative residual)")
    if data_seed is not None and data_seed < 0:
        raise ValueError(f"--data-seed {data_seed}: must be >= 0")
    if solver is not None and solver not in ("anderson", "broyden", "iterate"):
        raise ValueError(f"--solver {solver!r}: allowed: anderson, broyden, iterate, none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab eval`."""
    parser.add_argument("run", type=Path, help="run directory (or a checkpoint file inside one)")
    parser.add_argument("--levels", nargs="+", default=None,
                        help="ladder levels (default: the training level and the ladder's test levels)")
    parser.add_argument("--iters", type=int, default=500, help="T: iterations scored, 1..T")
    parser.add_argument("--samples", type=int, default=1000, help="test samples per level")
    parser.add_argument("--batch-size", type=int, default=250, help="samples per forward pass")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--halt-tol", type=float, default=1e-3,
                        help="adaptive halting: stop a sample when ||h_t - h_{t-1}|| / ||h_t|| < tol")
    parser.add_argument("--solver", default="anderson", choices=["anderson", "broyden", "iterate", "none"],
                        help="test-time fixed-point solver ('none' to skip)")
    parser.add_argument("--solver-max-iter", type=int, default=None, help="solver evaluations (default: T)")
    parser.add_argument("--solver-tol", type=float, default=1e-3, help="solver relative-residual tolerance")
    parser.add_argument("--data-seed", type=int, default=None, help="test data seed (default: run's data_seed + 2)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (default: RUN/checkpoints/last.pt)")
    parser.add_argument("--data-cache", default=None, help="cache folder for generated task data")
    parser.add_argument("--out", type=Path, default=None, help="eval JSON path (default: RUN/eval.json)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile each level's iteration and solver step, eager again if compiling fails "
                             "(default: auto, eager: compiling measured no faster on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab eval`."""
    if args.device is not None:
        check_device_name(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    check_eval_options(iters=args.iters, samples=args.samples, batch_size=args.batch_size, halt_tol=args.halt_tol,
                       solver=None if args.solver == "none" else args.solver, solver_max_iter=args.solver_max_iter,
                       solver_tol=args.solver_tol, data_seed=args.data_seed)
    device = args.device or default_device()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    evaluate_run(args.run, levels=args.levels, iters=args.iters, samples=args.samples,
                 batch_size=args.batch_size, device=device, halt_tol=args.halt_tol,
                 solver=None if args.solver == "none" else args.solver, solver_max_iter=args.solver_max_iter,
                 solver_tol=args.solver_tol, data_seed=args.data_seed, checkpoint=args.checkpoint,
                 data_cache=args.data_cache, plots=not args.no_plots, out=args.out, quiet=args.quiet,
                 compile=args.compile)
    return 0

