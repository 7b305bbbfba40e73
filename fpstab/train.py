"""A training run: set up or resume, loop, finish.

    train(cfg, "runs/NAME", Runtime(device="cuda"))  # -> TrainResult

The protocol (loss, sampler, optimizer, schedule, one step) is
`fpstab.protocol`; the command line `fpstab train` is `fpstab.train_command`.

A run directory (fpstab.runs) gets config.json, status.json, metrics.jsonl and
checkpoints/last.pt. `resume=True` continues a killed run exactly: model,
optimizer, step counters, loss-sampler RNG and data order (a function of
(seed, epoch)) are restored, and metrics written after the checkpoint are
dropped. status.json names the step and epoch of the last checkpoint while
the run is going. A run ends completed, diverged (non-finite loss or
gradient; the last finite checkpoint is kept) or interrupted (Ctrl-C: a
checkpoint is written at the next step boundary).

A SHIFT run (cfg.shift) trains the one-pass single_attn core, then the looped
standard_recall core on the same parameters (fpstab.shift); its checkpoints hold the
criterion's state, so a resumed run continues in its stage.

Data parallel (`ranks`, fpstab.distributed): every rank trains on its share of
each batch with gradients averaged over the ranks; rank 0 alone validates and
writes the run's files.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fpstab import __version__
from fpstab.config import (
    Runtime,
    TrainConfig,
    config_diff,
    core_config_for,
    resolve_precision,
    train_level_for,
    with_defaults,
)
from fpstab.compile_step import CompileChoice, FallbackStep, choose_compile, find_fallback_step
from fpstab.cpu_allocator import malloc_state
from fpstab.devices import resolve_device
from fpstab.distributed import SINGLE, Ranks, data_parallel
from fpstab.hessian_probe import HessianLog
from fpstab.loop_diagnostics import LoopTrace, due, step_grad_norms, trace_loop
from fpstab.protocol import (
    DataParallel,
    StepFn,
    StepStats,
    autocast,
    checkpointed,
    compute_loss,
    epoch_order,
    evaluate_at,
    loss_depths,
    lr_at,
    make_optimizer,
    param_groups,
    progressive_depths,
    run_iters,
    train_step,
)
from fpstab.runs import (
    CONFIG_FILE,
    CONFIG_SCHEMA,
    CONFIG_VERSION,
    METRICS_FILE,
    CheckpointError,
    MetricsLog,
    atomic_write_json,
    last_checkpoint_path,
    load_checkpoint,
    read_json,
    save_checkpoint,
    write_status,
)
from fpstab.shift import ShiftSchedule


# The protocol's pieces stay importable from here, where they lived before the split: the
# training benchmark imports them from fpstab.train, also when it measures an older checkout.
__all__ = ["RunKilled", "Runtime", "TrainResult", "train", "autocast", "checkpointed", "compute_loss",
           "epoch_order", "evaluate_at", "lr_at", "make_optimizer", "param_groups", "progressive_depths",
           "run_iters", "train_step"]


class RunKilled(RuntimeError):
    """Raised by `Runtime.stop_after_steps`: the run stops as a kill would, saving nothing."""


@dataclass(frozen=True)
class TrainResult:
    """How a run ended. state: completed | diverged | interrupted."""

    state: str
    run_dir: Path
    epoch: int
    step: int
    elapsed_s: float
    val: dict[str, float] | None


class _StopFlag:
    """Ctrl-C sets the flag; the loop saves and stops at the next step boundary.
    A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self._old: Any = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            if self.set:
                raise KeyboardInterrupt
            self.set = True
            print("\n[train] interrupt: saving a checkpoint at the end of this step "
                  "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

        self._old = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._old)


class Batches:
    """The training set on the device and each step's batch: the samples of the epoch's permutation
    (a function of (seed, epoch)) at the step's slot, this rank's share of them.

    inputs: (N, n_tokens, in_dim); targets: (N, n_tokens); answers: (N, k, ...) or None
    (`TaskBatch.answers`, for the accuracy).
    """

    def __init__(self, inputs: Tensor, targets: Tensor, cfg: TrainConfig, ranks: Ranks,
                 answers: Tensor | None = None) -> None:
        self.inputs, self.targets, self.answers, self.cfg, self.ranks = inputs, targets, answers, cfg, ranks
        self._order, self._epoch = torch.empty(0, dtype=torch.long), -1

    def at(self, step: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x, y, answers) of optimizer step `step`: (batch_size / world, n_tokens, in_dim),
        (.., n_tokens), (.., k, ...) or None."""
        epoch, i = divmod(step, self.cfg.steps_per_epoch)
        if self._epoch != epoch:
            self._order = epoch_order(self.cfg.seed, epoch, self.cfg.n_train).to(self.inputs.device)
            self._epoch = epoch
        b = self.cfg.batch_size
        idx = self.ranks.shard(self._order[i * b:(i + 1) * b])
        return self.inputs[idx], self.targets[idx], self.answers[idx] if self.answers is not None else None


class MetricsWindow:
    """Sums of the train metrics since the last record. Its partial sums go into checkpoints,
    so a resumed run logs the same averages; `timed` counts the steps this process timed."""

    SUMS = ("loss", "acc", "grad_norm", "steps")

    def __init__(self, saved: dict[str, float] | None = None) -> None:
        self.sums = {k: 0.0 for k in self.SUMS}
        self.sums.update(saved or {})
        self.timed, self.t = 0, time.perf_counter()
        self.sec_per_step: float | None = None

    def add(self, stats: StepStats) -> None:
        for key, value in (("loss", stats.loss), ("acc", stats.acc), ("grad_norm", stats.grad_norm), ("steps", 1)):
            self.sums[key] += value
        self.timed += 1

    def record(self, step: int, epoch: int, lr: float, batch_size: int, elapsed_s: float,
               info: dict[str, float]) -> dict[str, Any]:
        """The train record of the window (averages, throughput); starts the next window."""
        now = time.perf_counter()
        dt = now - self.t
        per = dt / self.timed
        self.sec_per_step = per if self.sec_per_step is None else 0.7 * self.sec_per_step + 0.3 * per
        n = self.sums["steps"]
        rec = {"kind": "train", "step": step, "epoch": epoch, "lr": lr, "loss": self.sums["loss"] / n,
               "acc": self.sums["acc"] / n, "grad_norm": self.sums["grad_norm"] / n,
               "samples_per_s": self.timed * batch_size / max(dt, 1e-9), "elapsed_s": elapsed_s, **info}
        self.sums = {k: 0.0 for k in self.SUMS}
        self.timed, self.t = 0, now
        return rec

    def state(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}


@dataclass(eq=False)
class _Run:
    """A run in progress: what setup built and the counters the loop moves."""

    cfg: TrainConfig
    runtime: Runtime
    out: Path
    ranks: Ranks
    device: torch.device
    precision: str
    task: Any
    level: Any
    core_cfg: Any
    core: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    step_fn: StepFn
    looped: bool
    say: Callable[[str], None]
    metrics: MetricsLog | None  # rank 0 only
    parallel: DataParallel | None = None  # the DistributedDataParallel loss when distributed
    shift: ShiftSchedule | None = None  # a SHIFT run's stage and criterion (fpstab.shift)
    compiling: CompileChoice | None = None  # whether the step is compiled, and why
    step: int = 0
    elapsed_before: float = 0.0
    best_val: dict[str, float] | None = None
    last_ckpt_step: int | None = None
    window: MetricsWindow = field(default_factory=MetricsWindow)
    t0: float = field(default_factory=time.perf_counter)
    last_print: float = field(default_factory=time.perf_counter)

    @property
    def val_iters(self) -> int:
        """One-pass baselines (fixed_depth, single_attn) are trained and validated at one application."""
        return self.cfg.train_iters if self.looped else 1

    def elapsed(self) -> float:
        """Seconds of training so far, over all sessions (setup and data loading not counted)."""
        return self.elapsed_before + time.perf_counter() - self.t0

    def start_clock(self) -> None:
        self.t0 = self.last_print = self.window.t = time.perf_counter()

    def record(self, rec: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.append(rec)

    def status(self, state: str, **fields: Any) -> None:
        if self.ranks.is_main:
            write_status(self.out, state, step=self.step, epoch=self.step // self.cfg.steps_per_epoch,
                         total_steps=self.cfg.total_steps, **fields)


def train(cfg: TrainConfig, out: str | Path, runtime: Runtime = Runtime(), resume: bool = False,
          ranks: Ranks = SINGLE) -> TrainResult:
    """Train per `cfg` into run directory `out`; see the module docstring.

    ranks: this process's place in a data-parallel run (its process group
    initialized: fpstab.distributed.process_group); SINGLE for one process.
    Raises ValueError (bad config, existing run without resume),
    CheckpointError (unusable or mismatched checkpoint), RunKilled
    (runtime.stop_after_steps reached).
    """
    run = _setup(cfg, Path(out), runtime, resume, ranks)
    batches, val_set = _load_data(run)
    run.status("running", checkpoint_step=run.last_ckpt_step)
    run.start_clock()
    stop = _StopFlag()
    run.core.train()
    hessian = HessianLog.of(run, batches)  # None unless runtime.hessian_every
    with stop.installed():
        while run.step < cfg.total_steps:
            if hessian is not None:
                hessian.at(run)
            ended = _train_one_step(run, batches, val_set, stop)
            if ended is not None:
                return ended
    if hessian is not None:
        hessian.at(run, final=True)
    return _finish(run)


# ---- setup ----------------------------------------------------------------------------------
def _setup(cfg: TrainConfig, out: Path, runtime: Runtime, resume: bool, ranks: Ranks) -> _Run:
    """Build the core, optimizer and sampler; restore them from the checkpoint when resuming,
    else record the run's config."""
    from fpstab.tasks import get_task

    ranks.check_batch(cfg.batch_size)
    torch.set_num_threads(runtime.threads)
    device = _resolve_device(runtime.device, ranks)
    task = get_task(cfg.task)
    core_cfg = core_config_for(cfg, task)
    say = print_flushed if ranks.is_main and not runtime.quiet else _silent
    ckpt = _checkpoint_to_resume(cfg, core_cfg, out, device, say) if resume else _refuse_existing_run(out)
    compiling = choose_compile(runtime.compile, device.type, cfg.total_steps)
    core, optimizer, sampler, step_fn = build_training(cfg, core_cfg, runtime, device, compiling)
    shift = ShiftSchedule.for_config(cfg)
    if shift is not None:
        shift.apply(core)  # the single_attn stage; _restore moves a resumed run to its stage
    looped = bool(getattr(core, "looped", True))
    if not looped and cfg.grad_mode != "progressive":
        raise ValueError(f"grad_mode={cfg.grad_mode!r} needs a looped core; arch={cfg.arch!r} is one pass "
                         "(use grad_mode='progressive', which trains it at one application)")
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, runtime, out, ranks, device, resolve_precision(cfg.precision, device.type), task,
               train_level_for(cfg, task), core_cfg, core, optimizer, sampler, step_fn, looped, say,
               MetricsLog(out / METRICS_FILE) if ranks.is_main else None, shift=shift, compiling=compiling)
    _watch_compile_fallback(run)
    if ckpt is not None:
        _restore(run, ckpt)
    if ranks.distributed:
        run.parallel = data_parallel(core, step_fn, run.task, cfg, ranks, device)
    if ckpt is None:
        if run.metrics is not None:
            run.metrics.truncate(0)  # a resumed run killed before its first checkpoint starts over
        _write_config_record(run, started=True)
    if shift is not None and ranks.is_main:
        shift.write(out)
        say(f"[train] SHIFT: {shift.stage} now; check every {shift.check_every} steps (delta1 {cfg.shift_delta1:g}, "
            f"delta2 {cfg.shift_delta2:g}, patience {cfg.shift_patience}), switch by step {shift.max_steps} at the latest")
    say(f"[train] {cfg.task} level {run.level} | {cfg.arch}+{cfg.norm} d{cfg.d_model} h{cfg.n_heads} | "
        f"{sum(p.numel() for p in core.parameters()):,} params | {cfg.grad_mode} loss, m={cfg.train_iters} | "
        f"{device} {run.precision} {'compiled' if compiling.compile else 'eager'} ({compiling.reason})"
        f"{f' x{ranks.world} processes' if ranks.distributed else ''} | -> {out}")
    return run


def _watch_compile_fallback(run: _Run) -> None:
    """A compiled step that turns eager (fpstab.compile_step.FallbackStep) says so and records it."""
    fallback = find_fallback_step(run.step_fn)
    if fallback is None:
        return

    def fell_back(reason: str) -> None:
        run.say(f"[train] step {run.step}: {reason}")
        run.record({"kind": "compile_fallback", "step": run.step, "reason": reason})

    fallback.on_fallback = fell_back


def print_flushed(msg: str) -> None:
    print(msg, flush=True)


def _silent(msg: str) -> None:
    pass


def _resolve_device(name: str, ranks: Ranks) -> torch.device:
    """The torch.device of `name` for this rank ('cuda' is this rank's GPU when distributed)."""
    return resolve_device(ranks.device(name))


def build_training(cfg: TrainConfig, core_cfg: Any, runtime: Runtime, device: torch.device,
                   compiling: CompileChoice | None = None,
                   ) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator, StepFn]:
    """The seeded core on `device`, its optimizer, the loss sampler and the step function to train
    (compiled per `compiling`, by default `choose_compile(runtime.compile, ...)`, falling back to
    eager if compiling fails)."""
    from fpstab.architectures import build_core

    torch.manual_seed(cfg.seed)
    core = build_core(core_cfg).to(device)
    optimizer = make_optimizer(core, cfg)
    sampler = torch.Generator().manual_seed(cfg.seed + 7919)
    compiling = compiling or choose_compile(runtime.compile, device.type, cfg.total_steps)
    step_fn: StepFn = FallbackStep(core.step_from) if compiling.compile else core.step_from
    if runtime.activation_checkpointing:
        step_fn = checkpointed(step_fn)
    return core, optimizer, sampler, step_fn


def _refuse_existing_run(out: Path) -> None:
    metrics = out / METRICS_FILE
    if last_checkpoint_path(out).exists() or (metrics.is_file() and metrics.stat().st_size > 0):
        raise ValueError(f"run directory {out} already holds a run; pass --resume to continue it "
                         "or choose another --out")


def _checkpoint_to_resume(cfg: TrainConfig, core_cfg: Any, out: Path, device: torch.device,
                          say: Callable[[str], None]) -> dict[str, Any] | None:
    """The run's last checkpoint (None if it has none yet), refused if made with another config."""
    if (out / CONFIG_FILE).is_file():
        stored = read_json(out / CONFIG_FILE)
        _refuse_mismatch("config.json", with_defaults(stored.get("train", {})), cfg.to_dict(), out)
    ckpt_path = last_checkpoint_path(out)
    if not ckpt_path.is_file():
        say(f"[train] {out}: no checkpoint yet, starting from step 0")
        return None
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    _refuse_mismatch("checkpoint", with_defaults(ckpt["config"]), cfg.to_dict(), ckpt_path)
    _refuse_mismatch("checkpoint's core config", ckpt["core_config"], core_cfg.to_dict(), ckpt_path)
    return ckpt


def _refuse_mismatch(what: str, stored: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    diff = config_diff(stored, current)
    if diff:
        detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"cannot resume {where}: its {what} was made with a different config ({detail}); "
            "rerun with the original settings or start a new run with another --out"
        )


def _restore(run: _Run, ckpt: dict[str, Any]) -> None:
    """Model, optimizer, RNG states, counters and the metrics log as they were at the checkpoint."""
    run.core.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.sampler.set_state(ckpt["sampler_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if run.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], run.device)
    run.step = run.last_ckpt_step = int(ckpt["step"])
    run.elapsed_before = float(ckpt["elapsed_s"])
    run.best_val = ckpt.get("val")
    run.window = MetricsWindow(ckpt.get("log_window"))
    if run.shift is not None:
        run.shift.load_state(ckpt["shift"])
        run.shift.apply(run.core)
        run.looped = bool(run.core.looped)
    epoch = run.step // run.cfg.steps_per_epoch
    if run.metrics is not None:
        run.metrics.truncate(int(ckpt["metrics_bytes"]))
    run.record({"kind": "resume", "step": run.step, "epoch": epoch})
    _write_config_record(run, started=False)
    run.say(f"[train] resumed {run.out} at step {run.step} (epoch {epoch})")


def _write_config_record(run: _Run, started: bool) -> None:
    """config.json: the resolved configs, seeds and runtime. On resume only its runtime changes
    (the options this session runs with, which the next --resume reuses)."""
    if not run.ranks.is_main:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = run.out / CONFIG_FILE
    old_runtime = {} if started or not path.is_file() else read_json(path).get("runtime", {})
    runtime = {**old_runtime, **run.runtime.persisted(), "precision": run.precision, "world_size": run.ranks.world,
               **({"compiled": run.compiling.to_dict()} if run.compiling is not None else {}),
               "malloc": malloc_state(),
               "torch": torch.__version__, "fpstab": __version__, "python": sys.version.split()[0],
               **({"started": now} if started or "started" not in old_runtime else {"resumed": now})}
    cfg = run.cfg
    atomic_write_json(path, {
        "schema": CONFIG_SCHEMA, "schema_version": CONFIG_VERSION, "task": cfg.task, "train_level": run.level,
        "seed": cfg.seed, "data_seed": cfg.data_seed, "train": cfg.to_dict(), "core": run.core_cfg.to_dict(),
        "runtime": runtime,
    })


def _load_data(run: _Run) -> tuple[Batches, Any]:
    """The training batches on the device and the validation set (rank 0 only; None without one)."""
    cfg, t = run.cfg, time.perf_counter()
    cache = run.runtime.data_cache
    train_set = run.task.make(run.level, cfg.n_train, cfg.data_seed, cache_dir=cache)
    val_set = None
    if cfg.n_val and run.ranks.is_main:
        val_set = run.task.make(run.level, cfg.n_val, cfg.data_seed + 1, cache_dir=cache)
    run.say(f"[train] data: {cfg.n_train} train + {cfg.n_val} val samples in {time.perf_counter() - t:.1f}s")
    answers = train_set.answers.to(run.device) if train_set.answers is not None else None
    batches = Batches(train_set.inputs.to(run.device), train_set.targets.to(run.device), cfg, run.ranks, answers)
    return batches, val_set


# ---- the loop -------------------------------------------------------------------------------
def _train_one_step(run: _Run, batches: Batches, val_set: Any, stop: _StopFlag) -> TrainResult | None:
    """One optimizer step with its records and checkpoints; a TrainResult when the run ends here."""
    cfg = run.cfg
    x, y, answers = batches.at(run.step)
    lr = lr_at(cfg, run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    # every rank draws the same (n, k): the sampler is seeded alike and checkpointed
    depths = loss_depths(cfg, run.sampler, run.looped, run.step)
    trace = _trace_loop(run, x, y)
    stats = train_step(run.core, run.step_fn, run.task, cfg, run.optimizer, x, y, depths, run.precision,
                       parallel=run.parallel, answers=answers)
    if trace is not None:
        run.record(trace.record(run.step + 1, stats.stepped, step_grad_norms(run.core, stats.grad_norm)))
    if not stats.stepped:
        return _diverged(run, stats, lr)
    run.step += 1
    run.window.add(stats)
    if run.shift is not None:
        _observe_shift(run, stats)
    spe = cfg.steps_per_epoch
    if run.window.sums["steps"] >= run.runtime.log_every or run.step % spe == 0:
        _log_window(run, lr, stats.out.info)
    if run.step % spe == 0:
        _end_epoch(run, val_set)
    elif cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
        _checkpoint(run, epoch_done=False)
    if run.ranks.any(stop.set, run.device):
        return _interrupted(run)
    if run.runtime.stop_after_steps is not None and run.step >= run.runtime.stop_after_steps:
        raise RunKilled(f"stopped after {run.step} steps (--stop-after-steps), nothing saved since the last checkpoint")
    return None


def _observe_shift(run: _Run, stats: StepStats) -> None:
    """Feed the SHIFT criterion this step; record its checks and switch the core when it says so
    (before the epoch's validation and checkpoint, which then see the new stage)."""
    assert run.shift is not None
    event = run.shift.observe(run.step, stats.loss, stats.grad_norm, run.elapsed())
    for rec in event.records:
        run.record(rec)
    if event.switched:
        run.shift.apply(run.core)
        run.looped = bool(run.core.looped)
        how = "forced: shift_max_steps reached" if event.forced else "criterion fired"
        run.say(f"[train] SHIFT: single_attn -> standard_recall at step {run.step} ({how})")
    if event.records and run.ranks.is_main:
        run.shift.write(run.out)


def _trace_loop(run: _Run, x: Tensor, y: Tensor) -> LoopTrace | None:
    """The loop diagnostics of this step when due (rank 0): fpstab.loop_diagnostics."""
    if not run.ranks.is_main or not due(run.runtime.loop_diagnostics_every, run.step):
        return None
    return trace_loop(run.core, run.task, x, y, run.val_iters, run.precision)


def _log_window(run: _Run, lr: float, info: dict[str, float]) -> None:
    """Record the metrics window; print a progress line when one is due."""
    cfg, step = run.cfg, run.step
    epoch = (step - 1) // cfg.steps_per_epoch
    rec = run.window.record(step, epoch, lr, cfg.batch_size, run.elapsed(), info)
    run.record(rec)
    now = time.perf_counter()
    if now - run.last_print >= run.runtime.print_every or step % cfg.steps_per_epoch == 0 or step == cfg.total_steps:
        left = (cfg.total_steps - step) * (run.window.sec_per_step or 0.0)
        run.say(f"[train] epoch {epoch + 1}/{cfg.epochs} step {step}/{cfg.total_steps} loss {rec['loss']:.4f} "
                f"acc {rec['acc']:.3f} lr {lr:.2e} | {rec['samples_per_s']:.0f} samples/s | "
                f"{_format_s(run.elapsed())} elapsed, ~{_format_s(left)} left")
        run.last_print = now


def _end_epoch(run: _Run, val_set: Any) -> None:
    """The epoch record, validation when due (rank 0), and the end-of-epoch checkpoint."""
    cfg = run.cfg
    done_epoch = run.step // cfg.steps_per_epoch
    rec: dict[str, Any] = {"kind": "epoch", "epoch": done_epoch, "step": run.step, "elapsed_s": run.elapsed()}
    if val_set is not None and cfg.val_every and (done_epoch % cfg.val_every == 0 or run.step == cfg.total_steps):
        val = evaluate_at(run.core, run.step_fn, run.task, val_set.inputs, val_set.targets, run.val_iters,
                          cfg.batch_size, run.device, run.precision, val_set.answers)
        run.best_val = {"epoch": done_epoch, **val}
        rec.update({f"val_{k}": v for k, v in val.items()})
        run.say(f"[train] epoch {done_epoch}/{cfg.epochs} val exact_match {val['exact_match']:.4f} "
                f"token_acc {val['token_acc']:.4f} loss {val['loss']:.4f} (at {run.val_iters} iterations)")
    run.record(rec)
    _checkpoint(run, epoch_done=True)


def _checkpoint(run: _Run, epoch_done: bool) -> None:
    """Save the training state (rank 0) and bring status.json to this step."""
    run.last_ckpt_step = run.step
    if not run.ranks.is_main:
        return
    save_checkpoint(last_checkpoint_path(run.out), {
        "config": run.cfg.to_dict(),
        "core_config": run.core_cfg.to_dict(),
        "task": run.cfg.task,
        "model": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "epoch": run.step // run.cfg.steps_per_epoch,
        "epoch_done": epoch_done,
        "sampler_rng": run.sampler.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "elapsed_s": run.elapsed(),
        "val": run.best_val,
        "metrics_bytes": run.metrics.size() if run.metrics is not None else 0,
        # partial sums of the current metrics window, so a resumed run logs the same averages
        "log_window": run.window.state(),
        "shift": run.shift.state() if run.shift is not None else None,
        "fpstab_version": __version__,
    })
    run.status("running", checkpoint_step=run.step)


# ---- how a run ends ---------------------------------------------------------------------------
def _diverged(run: _Run, stats: StepStats, lr: float) -> TrainResult:
    what = "loss" if not math.isfinite(stats.loss) else "gradient norm"
    epoch = run.step // run.cfg.steps_per_epoch
    run.record({"kind": "diverged", "step": run.step, "epoch": epoch, "loss": stats.loss,
                "grad_norm": stats.grad_norm, "lr": lr, "reason": f"non-finite {what}"})
    run.status("diverged", reason=f"non-finite {what} at step {run.step}", checkpoint_step=run.last_ckpt_step)
    ckpt_path = last_checkpoint_path(run.out)
    run.say(f"[train] DIVERGED at step {run.step} (epoch {epoch}): {what} = "
            f"{stats.loss if what == 'loss' else stats.grad_norm}; run stopped, last finite checkpoint kept in "
            f"{ckpt_path if ckpt_path.is_file() else '(none)'}")
    return TrainResult("diverged", run.out, epoch, run.step, run.elapsed(), run.best_val)


def _interrupted(run: _Run) -> TrainResult:
    _checkpoint(run, epoch_done=run.step % run.cfg.steps_per_epoch == 0)
    run.status("interrupted", checkpoint_step=run.step)
    run.say(f"[train] interrupted at step {run.step}; resume with --resume --out {run.out}")
    return TrainResult("interrupted", run.out, run.step // run.cfg.steps_per_epoch, run.step, run.elapsed(),
                       run.best_val)


def _finish(run: _Run) -> TrainResult:
    epoch = run.step // run.cfg.steps_per_epoch
    run.record({"kind": "done", "step": run.step, "epoch": epoch, "elapsed_s": run.elapsed()})
    run.status("completed", elapsed_s=run.elapsed(), val=run.best_val)
    if run.shift is not None and run.ranks.is_main:
        run.shift.write(run.out, state="completed")
        if run.shift.switch is None:
            run.say("[train] SHIFT: the run ended before the switch (shift_max_steps >= its steps): "
                    "its weights were only trained as single_attn")
    run.say(f"[train] done: {run.step} steps in {_format_s(run.elapsed())}; run in {run.out}")
    return TrainResult("completed", run.out, epoch, run.step, run.elapsed(), run.best_val)


def _format_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
