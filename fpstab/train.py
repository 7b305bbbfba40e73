"""`fpstab train`: train a looped core on a task, the paper's protocol by default.

    fpstab train --task prefix_sum --arch internal_recall --norm outer --preset tiny --out runs/NAME

Protocol (REFERENCE 1.4; every knob is a TrainConfig key and a flag):
- AdamW, weight decay on matrices only (biases and norm weights excluded),
  exponential warm-up, step decay, gradient-norm clip 1.
- bf16 autocast on cuda (precision "auto"), optional torch.compile of the
  loop step (--compile).
- Loss, grad_mode "progressive" (Bansal et al. 2022, alpha = 1 by default):
  for each batch draw (n, k) with `progressive_depths`, run n iterations
  without gradients from h0, detach, then k iterations with gradients, and
  take the task loss on the readout after n + k iterations. When n = 0 the k
  steps start from h0 undetached, so gradients reach the encoder through the
  initial state too (as in Bansal et al.'s code; for no_recall it is the only
  way the input encoder learns). With alpha < 1 the loss is
  (1 - alpha) * loss(m iterations, all with gradients) + alpha * that.
  grad_mode "implicit" / "phantom" solve for the fixed point without
  gradients and backpropagate by the implicit function theorem / through a
  few damped steps (fixedpoint.implicit_gradient / phantom_gradient).

A run directory (fpstab.runs) gets config.json, status.json, metrics.jsonl and
checkpoints/last.pt. `--resume` continues a killed run exactly: model,
optimizer, step counters, loss-sampler RNG and data order (a function of
(seed, epoch)) are restored, and metrics written after the checkpoint are
dropped. Exit codes: 0 completed, 3 diverged (non-finite loss or gradient;
the last finite checkpoint is kept), 130 interrupted by Ctrl-C (a checkpoint
is written at the next step boundary).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fpstab import __version__
from fpstab.config import (
    FIELDS,
    GRAD_MODES,
    PRECISIONS,
    PRESETS,
    SOLVERS,
    TrainConfig,
    config_diff,
    core_config_for,
    resolve_config,
    resolve_precision,
    train_level_for,
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

EXIT_COMPLETED, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_KILLED = 0, 3, 130, 137

StepFn = Callable[[Tensor, Tensor], Tensor]


class RunKilled(RuntimeError):
    """Raised by `--stop-after-steps`: the run stops as a kill would, saving nothing."""


# ---- the pieces of the protocol ---------------------------------------------
def progressive_depths(m: int, generator: torch.Generator) -> tuple[int, int]:
    """The progressive loss's iteration counts for one batch.

    n ~ U{0, ..., m-1} iterations run without gradients, then
    k ~ U{1, ..., m-n} iterations with gradients, so 1 <= n + k <= m and the
    loss always sees at least one differentiable step. (n, k) is drawn once per
    batch, shared by its samples, from `generator` (its state is checkpointed).
    """
    if m < 1:
        raise ValueError(f"train_iters m={m} must be >= 1")
    n = int(torch.randint(0, m, (1,), generator=generator))
    k = int(torch.randint(1, m - n + 1, (1,), generator=generator))
    return n, k


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): lr * warm-up(epoch) * decay(epoch).

    epoch = step // steps_per_epoch. Both factors change once per epoch, as in
    the official code (github.com/ashlab11/generalization, grown out of
    github.com/aks2203/deep-thinking; the same schedule in both):
    - warm-up: `ExponentialWarmup` of deepthinking/utils/warmup.py (a copy of
      the pytorch_warmup package's ExponentialWarmup with a cap added),
      warmup_factor(e) = 1 - exp(-(e + 1) / W) while e + 1 < W, else 1, with
      W = warmup_period = 10 (config/problem/hyp/_default_hyperparameters.yaml).
      Its `dampen()` runs once when the scheduler is built (epoch 0) and then
      once at the end of every epoch (train_* in deepthinking/utils/training.py),
      so epoch e trains at that factor: 0.095, 0.18, ..., 0.59 for epochs 0-8,
      then 1 from epoch 9 on. W = cfg.warmup_epochs here; any W <= 1 means
      no warm-up (epoch 0 already has e + 1 >= W), as in the official rule.
    - decay: MultiStepLR(milestones, gamma) stepped at the end of every epoch
      (deepthinking/utils/tools.py get_optimizer): lr_decay ** (number of
      lr_milestones <= epoch).
    """
    epoch = step // cfg.steps_per_epoch
    w = cfg.warmup_epochs
    warm = 1.0 - math.exp(-(epoch + 1) / w) if epoch + 1 < w else 1.0
    decay = cfg.lr_decay ** sum(1 for m in cfg.lr_milestones if m <= epoch)
    return cfg.lr * warm * decay


def is_no_decay(name: str, param: nn.Parameter, owner: nn.Module) -> bool:
    """Biases, norm weights and other vectors/scalars get no weight decay."""
    return param.ndim < 2 or "norm" in type(owner).__name__.lower() or name.endswith("bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices with `weight_decay`, the rest (biases, norms) without.

    Each group has "names" (parameter names, for inspection and tests).
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            if is_no_decay(pname, p, module):
                no_decay.append(p)
                no_decay_names.append(full)
            else:
                decay.append(p)
                decay_names.append(full)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups` with the config's betas, eps and lr."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg.weight_decay)]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when precision == 'bf16', else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def checkpointed(step_fn: StepFn) -> StepFn:
    """step_fn whose differentiable calls keep only their inputs (h, e) for backward and recompute
    the step there (torch.utils.checkpoint, non-reentrant): the same gradients, with a k-step unroll
    holding k states instead of k steps' activations (at the paper's shape ~18 KB per token and
    iteration). Calls without gradients run step_fn as is."""
    def step(h: Tensor, e: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step_fn, h, e, use_reentrant=False)
        return step_fn(h, e)

    return step


def run_iters(step_fn: StepFn, h: Tensor, e: Tensor, iters: int) -> Tensor:
    """`iters` applications of h <- step(h, e). h, e: (B, n_tokens, d_model).

    A step_fn with a `run_iters(h, e, iters)` method runs the loop itself
    (e.g. a compiled fixed-length chunk of steps: benchmarks/train_speed.py).
    """
    loop = getattr(step_fn, "run_iters", None)
    if loop is not None:
        return loop(h, e, iters)
    for _ in range(iters):
        h = step_fn(h, e)
    return h


@dataclass
class LossOutput:
    """loss: scalar; logits: (B, n_tokens, out_dim) of the state the loss saw;
    info: per-batch scalars for the metrics log (n, k, solver nfe, ...)."""

    loss: Tensor
    logits: Tensor
    info: dict[str, float]


def compute_loss(core: nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig,
                 x: Tensor, y: Tensor, depths: tuple[int, int]) -> LossOutput:
    """The training loss of one batch under cfg.grad_mode.

    x: (B, n_tokens, in_dim) float; y: (B, n_tokens) long; depths: (n, k)
    from `progressive_depths` (used by the progressive mode only).
    """
    e = core.encode(x)
    h0 = core.init_state(e)
    if cfg.grad_mode == "progressive":
        n, k = depths
        if n > 0:
            with torch.no_grad():
                h = run_iters(step_fn, h0, e, n)
            h = h.detach()
        else:
            # n = 0: start from h0 itself, so the embedding also learns through
            # h0 (Bansal et al.'s code does the same); the only path for no_recall.
            h = h0
        logits = core.readout(run_iters(step_fn, h, e, k))
        loss = task.loss(logits, y)
        info = {"n": float(n), "k": float(k)}
        if cfg.alpha < 1.0:
            full = core.readout(run_iters(step_fn, h0, e, cfg.train_iters))
            loss = (1.0 - cfg.alpha) * task.loss(full, y) + cfg.alpha * loss
        return LossOutput(loss, logits, info)

    from fpstab.fixedpoint import implicit_gradient, phantom_gradient, solve

    def f(h: Tensor) -> Tensor:
        return step_fn(h, e)

    # The forward solve runs without autocast: Anderson's least squares in
    # bf16 is not trustworthy; the differentiable part keeps the autocast.
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        e32 = e.detach().float()
        res = solve(lambda h: step_fn(h, e32), h0.detach().float(), solver=cfg.solver,
                    max_iter=cfg.solve_max_iter, tol=cfg.solver_tol)
    h_star = res.state.to(e.dtype)
    if cfg.grad_mode == "implicit":
        z = implicit_gradient(f, h_star)
    else:
        z = phantom_gradient(f, h_star, steps=cfg.phantom_steps, damping=cfg.phantom_damping)
    logits = core.readout(z)
    info = {"nfe": float(res.nfe), "converged": float(res.converged.float().mean()),
            "solver_diverged": float(res.diverged.float().mean())}
    return LossOutput(task.loss(logits, y), logits, info)


@dataclass
class StepStats:
    """One optimizer step: the loss output, loss / grad-norm / batch exact-match
    as floats, and whether the parameters were updated (False when the loss or
    the gradient norm is non-finite: the step is skipped, parameters untouched)."""

    out: LossOutput
    loss: float
    grad_norm: float
    acc: float
    stepped: bool


def train_step(core: nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig, optimizer: torch.optim.Optimizer,
               x: Tensor, y: Tensor, depths: tuple[int, int], precision: str,
               answers: Tensor | None = None) -> StepStats:
    """Forward (autocast per `precision`), backward, clip, and AdamW step if finite.

    x: (B, n_tokens, in_dim); y: (B, n_tokens); answers: the batch's rows of
    `TaskBatch.answers` (or None), for the accuracy. One host sync per step (the
    finiteness check reads loss, grad norm and accuracy together).
    """
    with autocast(x.device.type, precision):
        out = compute_loss(core, step_fn, task, cfg, x, y, depths)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if cfg.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    acc = task.correct(out.logits.detach().float(), y, answers).float().mean()
    loss_v, gn_v, acc_v = torch.stack([out.loss.detach().float(), grad_norm.float(), acc]).tolist()
    finite = math.isfinite(loss_v) and math.isfinite(gn_v)
    if finite:
        optimizer.step()
    return StepStats(out, loss_v, gn_v, acc_v, finite)


@torch.no_grad()
def evaluate_at(core: nn.Module, step_fn: StepFn, task: Any, inputs: Tensor, targets: Tensor,
                iters: int, batch_size: int, device: torch.device, precision: str,
                answers: Tensor | None = None) -> dict[str, float]:
    """Exact-match accuracy, token accuracy and loss after `iters` iterations.

    inputs: (N, n_tokens, in_dim); targets: (N, n_tokens); answers: (N, k, ...) every
    answer the task accepts (`TaskBatch.answers`) or None. Batched, no gradients.
    """
    was_training = core.training
    core.eval()
    n_all = inputs.shape[0]
    total = torch.zeros(3, dtype=torch.float64, device=device)  # summed on the device: one host sync at the end
    for start in range(0, n_all, batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = targets[start:start + batch_size].to(device)
        a = answers[start:start + batch_size].to(device) if answers is not None else None
        with autocast(device.type, precision):
            e = core.encode(x)
            logits = core.readout(run_iters(step_fn, core.init_state(e), e, iters)).float()
        batch = [task.correct(logits, y, a).float().mean(), task.token_accuracy(logits, y), task.loss(logits, y)]
        total += torch.stack(batch).double() * x.shape[0]
    core.train(was_training)
    exact, token, loss = (total / max(n_all, 1)).tolist()
    return {"exact_match": exact, "token_acc": token, "loss": loss}


def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The permutation of the n training samples used in `epoch`: a pure
    function of (seed, epoch), so a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


# ---- the run ----------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """How a run ended. state: completed | diverged | interrupted."""

    state: str
    run_dir: Path
    epoch: int
    step: int
    elapsed_s: float
    val: dict[str, float] | None


@dataclass(frozen=True)
class Runtime:
    """Options that do not change a run's numbers (kept out of TrainConfig)."""

    device: str = "cpu"
    compile: bool = False
    log_every: int = 10
    print_every_s: float = 10.0
    quiet: bool = False
    data_cache: str | None = None
    stop_after_steps: int | None = None
    activation_checkpointing: bool = False


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


def _format_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device={name!r} is not one of ['cpu', 'cuda', 'cuda:N']")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def _run_config_record(cfg: TrainConfig, core_cfg: Any, level: Any, runtime: Runtime, precision: str) -> dict[str, Any]:
    return {
        "schema": CONFIG_SCHEMA,
        "schema_version": CONFIG_VERSION,
        "task": cfg.task,
        "train_level": level,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "train": cfg.to_dict(),
        "core": core_cfg.to_dict(),
        "runtime": {
            "device": runtime.device,
            "precision": precision,
            "compile": runtime.compile,
            "activation_checkpointing": runtime.activation_checkpointing,
            "torch": torch.__version__,
            "fpstab": __version__,
            "python": sys.version.split()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }


def _refuse_mismatch(what: str, stored: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    diff = config_diff(stored, current)
    if diff:
        detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"cannot resume {where}: its {what} was made with a different config ({detail}); "
            "rerun with the original settings or start a new run with another --out"
        )


def train(cfg: TrainConfig, out: str | Path, runtime: Runtime = Runtime(), resume: bool = False) -> TrainResult:
    """Train per `cfg` into run directory `out`; see the module docstring.

    Raises ValueError (bad config, existing run without resume),
    CheckpointError (unusable or mismatched checkpoint), RunKilled
    (runtime.stop_after_steps reached).
    """
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task

    out = Path(out)
    device = _resolve_device(runtime.device)
    precision = resolve_precision(cfg.precision, device.type)
    task = get_task(cfg.task)
    level = train_level_for(cfg, task)
    core_cfg = core_config_for(cfg, task)
    say = (lambda msg: None) if runtime.quiet else (lambda msg: print(msg, flush=True))

    ckpt_path = last_checkpoint_path(out)
    ckpt: dict[str, Any] | None = None
    if resume:
        if (out / CONFIG_FILE).is_file():
            stored = read_json(out / CONFIG_FILE)
            _refuse_mismatch("config.json", stored.get("train", {}), cfg.to_dict(), out)
        if ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path, map_location=device)
            _refuse_mismatch("checkpoint", ckpt["config"], cfg.to_dict(), ckpt_path)
            _refuse_mismatch("checkpoint's core config", ckpt["core_config"], core_cfg.to_dict(), ckpt_path)
        else:
            say(f"[train] {out}: no checkpoint yet, starting from step 0")
    elif ckpt_path.exists() or ((out / METRICS_FILE).is_file() and (out / METRICS_FILE).stat().st_size > 0):
        raise ValueError(f"run directory {out} already holds a run; pass --resume to continue it "
                         "or choose another --out")

    torch.manual_seed(cfg.seed)
    core = build_core(core_cfg).to(device)
    optimizer = make_optimizer(core, cfg)
    sampler = torch.Generator().manual_seed(cfg.seed + 7919)
    step_fn: StepFn = torch.compile(core.step) if runtime.compile else core.step
    if runtime.activation_checkpointing:
        step_fn = checkpointed(step_fn)
    # One-pass baselines (fixed_depth, single_attn) are trained and validated at one application.
    looped = bool(getattr(core, "looped", True))
    if not looped and cfg.grad_mode != "progressive":
        raise ValueError(f"grad_mode={cfg.grad_mode!r} needs a looped core; arch={cfg.arch!r} is one pass "
                         "(use grad_mode='progressive', which trains it at one application)")
    val_iters = cfg.train_iters if looped else 1

    out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(out / METRICS_FILE)
    step, elapsed_before = 0, 0.0
    best_val: dict[str, float] | None = None
    if ckpt is not None:
        core.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.set_state(ckpt["sampler_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        step = int(ckpt["step"])
        elapsed_before = float(ckpt["elapsed_s"])
        best_val = ckpt.get("val")
        metrics.truncate(int(ckpt["metrics_bytes"]))
        metrics.append({"kind": "resume", "step": step, "epoch": step // cfg.steps_per_epoch})
        say(f"[train] resumed {out} at step {step} (epoch {step // cfg.steps_per_epoch})")
    else:
        metrics.truncate(0)  # a resumed run killed before its first checkpoint starts over
        atomic_write_json(out / CONFIG_FILE, _run_config_record(cfg, core_cfg, level, runtime, precision))

    say(f"[train] {cfg.task} level {level} | {cfg.arch}+{cfg.norm} d{cfg.d_model} h{cfg.n_heads} | "
        f"{sum(p.numel() for p in core.parameters()):,} params | {cfg.grad_mode} loss, m={cfg.train_iters} | "
        f"{device} {precision}{' compiled' if runtime.compile else ''} | -> {out}")
    t_data = time.perf_counter()
    train_set = task.make(level, cfg.n_train, cfg.data_seed, cache_dir=runtime.data_cache)
    val_set = task.make(level, cfg.n_val, cfg.data_seed + 1, cache_dir=runtime.data_cache) if cfg.n_val else None
    x_all, y_all = train_set.inputs.to(device), train_set.targets.to(device)
    a_all = train_set.answers.to(device) if train_set.answers is not None else None
    say(f"[train] data: {cfg.n_train} train + {cfg.n_val} val samples in {time.perf_counter() - t_data:.1f}s")

    spe, total = cfg.steps_per_epoch, cfg.total_steps
    t0 = time.perf_counter()
    last_print = t0
    # metric sums since the last record; "timed" counts the steps this process timed
    window: dict[str, float] = {"loss": 0.0, "acc": 0.0, "grad_norm": 0.0, "steps": 0, "timed": 0, "t": t0}
    if ckpt is not None:
        window.update(ckpt.get("log_window", {}))
    sec_per_step: float | None = None

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    last_ckpt_step: int | None = step if ckpt is not None else None

    def checkpoint(epoch_done: bool) -> None:
        nonlocal last_ckpt_step
        last_ckpt_step = step
        save_checkpoint(ckpt_path, {
            "config": cfg.to_dict(),
            "core_config": core_cfg.to_dict(),
            "task": cfg.task,
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": step // spe,
            "epoch_done": epoch_done,
            "sampler_rng": sampler.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "elapsed_s": elapsed(),
            "val": best_val,
            "metrics_bytes": metrics.size(),
            # partial sums of the current metrics window, so a resumed run logs the same averages
            "log_window": {k: float(window[k]) for k in ("loss", "acc", "grad_norm", "steps")},
            "fpstab_version": __version__,
        })

    write_status(out, "running", step=step, total_steps=total)
    stop = _StopFlag()
    order, order_epoch = torch.empty(0, dtype=torch.long), -1
    core.train()
    with stop.installed():
        while step < total:
            epoch, i = divmod(step, spe)
            if order_epoch != epoch:
                order, order_epoch = epoch_order(cfg.seed, epoch, cfg.n_train).to(device), epoch
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            a = a_all[idx] if a_all is not None else None
            lr = lr_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            depths = progressive_depths(cfg.train_iters, sampler) if looped else (0, 1)
            stats = train_step(core, step_fn, task, cfg, optimizer, x, y, depths, precision, a)
            out_, loss_v, gn_v, acc_v = stats.out, stats.loss, stats.grad_norm, stats.acc
            if not stats.stepped:
                what = "loss" if not math.isfinite(loss_v) else "gradient norm"
                record = {"kind": "diverged", "step": step, "epoch": epoch, "loss": loss_v,
                          "grad_norm": gn_v, "lr": lr, "reason": f"non-finite {what}"}
                metrics.append(record)
                write_status(out, "diverged", step=step, total_steps=total, reason=f"non-finite {what} at step {step}",
                             checkpoint_step=last_ckpt_step)
                say(f"[train] DIVERGED at step {step} (epoch {epoch}): {what} = {loss_v if what == 'loss' else gn_v}; "
                    f"run stopped, last finite checkpoint kept in {ckpt_path if ckpt_path.is_file() else '(none)'}")
                return TrainResult("diverged", out, epoch, step, elapsed(), best_val)
            step += 1

            window["loss"] += loss_v
            window["acc"] += acc_v
            window["grad_norm"] += gn_v
            window["steps"] += 1
            window["timed"] += 1
            now = time.perf_counter()
            if window["steps"] >= runtime.log_every or step % spe == 0:
                dt = now - window["t"]
                per = dt / window["timed"]
                sec_per_step = per if sec_per_step is None else 0.7 * sec_per_step + 0.3 * per
                rec = {"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                       "loss": window["loss"] / window["steps"], "acc": window["acc"] / window["steps"],
                       "grad_norm": window["grad_norm"] / window["steps"],
                       "samples_per_s": window["timed"] * cfg.batch_size / max(dt, 1e-9),
                       "elapsed_s": elapsed(), **out_.info}
                metrics.append(rec)
                if now - last_print >= runtime.print_every_s or step % spe == 0 or step == total:
                    left = (total - step) * (sec_per_step or 0.0)
                    say(f"[train] epoch {epoch + 1}/{cfg.epochs} step {step}/{total} loss {rec['loss']:.4f} "
                        f"acc {rec['acc']:.3f} lr {lr:.2e} | {rec['samples_per_s']:.0f} samples/s | "
                        f"{_format_s(elapsed())} elapsed, ~{_format_s(left)} left")
                    last_print = now
                window = {"loss": 0.0, "acc": 0.0, "grad_norm": 0.0, "steps": 0, "timed": 0, "t": now}

            if step % spe == 0:
                done_epoch = step // spe
                rec = {"kind": "epoch", "epoch": done_epoch, "step": step, "elapsed_s": elapsed()}
                if val_set is not None and cfg.val_every and (done_epoch % cfg.val_every == 0 or step == total):
                    val = evaluate_at(core, step_fn, task, val_set.inputs, val_set.targets, val_iters,
                                      cfg.batch_size, device, precision, val_set.answers)
                    best_val = {"epoch": done_epoch, **val}
                    rec.update({f"val_{k}": v for k, v in val.items()})
                    say(f"[train] epoch {done_epoch}/{cfg.epochs} val exact_match {val['exact_match']:.4f} "
                        f"token_acc {val['token_acc']:.4f} loss {val['loss']:.4f} (at {val_iters} iterations)")
                metrics.append(rec)
                checkpoint(epoch_done=True)
            elif cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(epoch_done=False)

            if stop.set:
                checkpoint(epoch_done=step % spe == 0)
                write_status(out, "interrupted", step=step, total_steps=total)
                say(f"[train] interrupted at step {step}; resume with --resume --out {out}")
                return TrainResult("interrupted", out, step // spe, step, elapsed(), best_val)
            if runtime.stop_after_steps is not None and step >= runtime.stop_after_steps:
                raise RunKilled(f"stopped after {step} steps (--stop-after-steps), nothing saved since the last checkpoint")

    metrics.append({"kind": "done", "step": step, "epoch": step // spe, "elapsed_s": elapsed()})
    write_status(out, "completed", step=step, total_steps=total, elapsed_s=elapsed(), val=best_val)
    say(f"[train] done: {step} steps in {_format_s(elapsed())}; run in {out}")
    return TrainResult("completed", out, step // spe, step, elapsed(), best_val)


# ---- command line -----------------------------------------------------------
_HELP: dict[str, str] = {
    "task": "task name (tasks.TASK_NAMES)",
    "arch": "no_recall | standard_recall | internal_recall | fixed_depth | single_attn | fully_looped",
    "norm": "inner | outer | both | peri",
    "recall": "recall map: linear | add | concat",
    "residual": "add | gru",
    "attn_window": "'task' (task default), 'full', or an odd window",
    "train_level": "ladder level to train on (default: the ladder's training level)",
    "n_train": "training samples", "n_val": "held-out samples at the training level",
    "data_seed": "seed of the training data (val: +1, eval: +2)",
    "lr": "peak learning rate (paper preset: prefix_sum/chess 3e-4, sudoku 1e-3)",
    "warmup_epochs": "exponential warm-up period W in epochs (epoch e at 1 - exp(-(e+1)/W) while e+1 < W; 0: none)",
    "lr_milestones": "epochs at which the LR is multiplied by --lr-decay",
    "train_iters": "m: loop iterations in training",
    "alpha": "progressive-loss weight (1: progressive only)",
    "grad_mode": "progressive | implicit | phantom",
    "solver": "fixed-point solver for implicit/phantom modes",
    "precision": "auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16",
    "seed": "seed of initialization, data order and the loss sampler",
    "checkpoint_every": "also checkpoint every N steps (0: end of each epoch only)",
    "val_every": "validate every N epochs (0: never)",
}


def _level_or_int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab train`: every TrainConfig key plus runtime options."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a preset (paper: the paper's protocol; tiny: a CPU model)")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON file of TrainConfig keys (between the preset and the flags)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/TASK-ARCH-NORM-sSEED)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loop step")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="keep only each iteration's input state for backward and recompute the step "
                             "(same gradients; ~1/30 of the activation memory for one more forward per step)")
    parser.add_argument("--log-every", type=int, default=10, help="steps per metrics.jsonl train record")
    parser.add_argument("--print-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    parser.add_argument("--data-cache", default=None, help="cache folder for generated task data")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="testing: stop abruptly after N steps, saving nothing (as a kill would)")
    g = parser.add_argument_group("training config (TrainConfig keys; default: the preset, else the paper)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"default": None, "dest": f.name, "help": _HELP.get(f.name)}
        if f.name in ("betas",):
            kw.update(type=float, nargs=2)
        elif f.name == "lr_milestones":
            kw.update(type=int, nargs="*")
        elif f.name == "attn_window":
            kw.update(type=_level_or_int)
        elif f.name == "train_level":
            kw.update(type=str)
        elif f.name == "grad_mode":
            kw.update(choices=GRAD_MODES)
        elif f.name == "solver":
            kw.update(choices=SOLVERS)
        elif f.name == "precision":
            kw.update(choices=PRECISIONS)
        elif isinstance(f.default, bool):
            kw.update(type=bool)
        elif isinstance(f.default, int):
            kw.update(type=int)
        elif isinstance(f.default, float):
            kw.update(type=float)
        else:
            kw.update(type=str)
        g.add_argument(flag, **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve the TrainConfig: defaults <- preset <- --config file <- flags.

    With --resume and an existing run, the stored config is used and any
    preset, file or flag given must agree with it (else ValueError naming
    the keys).
    """
    explicit: dict[str, Any] = {}
    if args.config is not None:
        explicit.update(read_json(args.config))
    explicit.update({k: getattr(args, k) for k in FIELDS if k != "preset" and getattr(args, k, None) is not None})
    out = args.out
    stored_path = out / CONFIG_FILE if out is not None else None
    if args.resume and stored_path is not None and stored_path.is_file():
        stored = TrainConfig.from_dict(read_json(stored_path)["train"])
        asked = {**explicit, **({"preset": args.preset} if args.preset else {})}
        diff = {k: (getattr(stored, k), v) for k, v in asked.items()
                if config_diff({k: getattr(stored, k)}, {k: v})}
        if diff:
            detail = ", ".join(f"{k}: {a!r} in the run vs {b!r} given" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume {out} with a different config ({detail}); "
                             "drop those flags or start a new run with another --out")
        return stored
    return resolve_config(args.preset, explicit)


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab train`. Returns the exit code (see module docstring)."""
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    cfg = config_from_args(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out or Path("runs") / f"{cfg.task}-{cfg.arch}-{cfg.norm}-s{cfg.seed}"
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be >= 1")
        torch.set_num_threads(args.threads)
    runtime = Runtime(device=device, compile=args.compile, activation_checkpointing=args.activation_checkpointing,
                      log_every=args.log_every,
                      print_every_s=args.print_every, quiet=args.quiet, data_cache=args.data_cache,
                      stop_after_steps=args.stop_after_steps)
    try:
        result = train(cfg, out, runtime, resume=args.resume)
    except RunKilled as err:
        print(f"fpstab train: {err}", file=sys.stderr)
        return EXIT_KILLED
    return {"completed": EXIT_COMPLETED, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}[result.state]
