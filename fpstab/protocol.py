"""The training protocol: loss, progressive sampler, optimizer groups, lr schedule, one step.

The paper's protocol by default (its official code: github.com/ashlab11/generalization); every
knob is a TrainConfig key:
- AdamW, weight decay on matrices only (biases and norm weights excluded),
  exponential warm-up, step decay, gradient-norm clip 1.
- bf16 autocast on cuda (precision "auto").
- Loss, grad_mode "progressive" (Bansal et al. 2022, alpha = 1 by default):
  for each batch draw (n, k) with `progressive_depths`, run n iterations
  without gradients from h0, detach, then k iterations with gradients, and
  take the task loss on the readout after n + k iterations. When n = 0 the k
  steps start from h0 undetached, so gradients reach the encoder through the
  initial state too (as in Bansal et al.'s code; for no_recall it is the only
  way the input encoder learns). With alpha < 1 the loss is
  (1 - alpha) * loss(m iterations, all with gradients) + alpha * that.
- grad_mode "unrolled": always (n, k) = (0, m), i.e. m iterations from h0, all
  with gradients, loss on the last (Fu et al. 2026, arXiv 2605.18797: END loss).
  grad_mode "implicit" / "phantom" solve for the fixed point without
  gradients and backpropagate by the implicit function theorem / through a
  few damped steps (fixedpoint.implicit_gradient / phantom_gradient).

The loop runs `core.step_from(h, u)` with u = core.loop_input(e) computed once per batch: what an
iteration reads of the input alone (linear recall's W_e e) is not recomputed at every iteration.

Data parallel training runs `train_step`'s forward through DistributedDataParallel,
so each rank steps with the gradient of the whole batch (fpstab.distributed).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fpstab.config import TrainConfig

# step_fn(h, u) -> h': core.step_from, or a compiled or checkpointed form of it; h (B, n_tokens, d_model),
# u = core.loop_input(e) (B, n_tokens, core.loop_input_dim).
StepFn = Callable[[Tensor, Tensor], Tensor]
# A mean over the data-parallel ranks of a tensor of the same shape on every rank (fpstab.distributed).
RankMean = Callable[[Tensor], Tensor]


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


def max_depth_at(cfg: TrainConfig, step: int) -> int:
    """The progressive loss's largest depth m at optimizer step `step` (0-based): train_iters, or
    during a depth warm-up of D = cfg.depth_warmup_epochs > 0 epochs,
    m = ceil(train_iters * (step + 1) / (D * steps_per_epoch)), at least 1 and at most train_iters."""
    if cfg.depth_warmup_epochs <= 0:
        return cfg.train_iters
    ramp_steps = cfg.depth_warmup_epochs * cfg.steps_per_epoch
    return max(1, min(cfg.train_iters, math.ceil(cfg.train_iters * (step + 1) / ramp_steps)))


def loss_depths(cfg: TrainConfig, generator: torch.Generator, looped: bool = True,
                step: int | None = None) -> tuple[int, int]:
    """(n, k) of one batch: (0, 1) for a one-pass core, (0, train_iters) for grad_mode "unrolled",
    else `progressive_depths` at m = `max_depth_at(cfg, step)` (train_iters when step is None), drawn
    also for the modes that ignore them, so their sampler states stay as they were."""
    if not looped:
        return 0, 1
    if cfg.grad_mode == "unrolled":
        return 0, cfg.train_iters
    return progressive_depths(cfg.train_iters if step is None else max_depth_at(cfg, step), generator)


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
    @functools.wraps(step_fn)
    def step(h: Tensor, u: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step_fn, h, u, use_reentrant=False)
        return step_fn(h, u)

    return step


def run_iters(step_fn: StepFn, h: Tensor, u: Tensor, iters: int) -> Tensor:
    """`iters` applications of h <- step_fn(h, u). h: (B, n_tokens, d_model); u: the step's second
    argument (core.loop_input(e) for core.step_from).

    A step_fn with a `run_iters(h, u, iters)` method runs the loop itself
    (e.g. a compiled fixed-length chunk of steps: benchmarks/train_speed.py).
    """
    loop = getattr(step_fn, "run_iters", None)
    if loop is not None:
        return loop(h, u, iters)
    for _ in range(iters):
        h = step_fn(h, u)
    return h


def check_step_fn(core: nn.Module, step_fn: StepFn) -> None:
    """Refuse the core's own `step` (or `step_stream`), compiled or checkpointed, where the loop
    passes u = core.loop_input(e) and so needs `core.step_from`: with linear recall u has e's shape,
    and core.step would silently apply W_e twice."""
    fn: Any = step_fn
    for _ in range(3):  # checkpointed(torch.compile(core.step)) is the deepest wrapping fpstab makes
        fn = getattr(fn, "_torchdynamo_orig_callable", None) or getattr(fn, "__wrapped__", None) or fn
    if getattr(fn, "__self__", None) is core and getattr(fn, "__name__", "") in ("step", "step_stream"):
        raise ValueError(f"step_fn is core.{fn.__name__}(h, e); the training loop passes u = core.loop_input(e) "
                         "and needs core.step_from(h, u) (or a compiled / checkpointed form of it)")


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
    from `loss_depths` (used by the progressive and unrolled modes only); step_fn: core.step_from
    or a compiled / checkpointed form of it (`check_step_fn`).
    """
    check_step_fn(core, step_fn)
    e = core.encode(x)
    h0, u = core.init_state(e), core.loop_input(e)
    if cfg.grad_mode in ("progressive", "unrolled"):
        return _progressive_loss(core, step_fn, task, cfg, u, h0, y, depths)
    return _fixed_point_loss(core, step_fn, task, cfg, e, u, h0, y)


def _progressive_loss(core: nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig, u: Tensor, h0: Tensor,
                      y: Tensor, depths: tuple[int, int]) -> LossOutput:
    """n steps without gradients, k with; u = core.loop_input(e), h0: (B, n_tokens, d_model)."""
    n, k = depths
    if n > 0:
        with torch.no_grad():
            h = run_iters(step_fn, h0, u, n)
        h = h.detach()
    else:
        # n = 0: start from h0 itself, so the embedding also learns through
        # h0 (Bansal et al.'s code does the same); the only path for no_recall.
        h = h0
    logits = core.readout(run_iters(step_fn, h, u, k))
    loss = task.loss(logits, y)
    if cfg.alpha < 1.0:
        full = core.readout(run_iters(step_fn, h0, u, cfg.train_iters))
        loss = (1.0 - cfg.alpha) * task.loss(full, y) + cfg.alpha * loss
    return LossOutput(loss, logits, {"n": float(n), "k": float(k)})


def _fixed_point_loss(core: nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig, e: Tensor, u: Tensor,
                      h0: Tensor, y: Tensor) -> LossOutput:
    """Solve for h* without gradients, then backpropagate through it by the implicit function
    theorem (grad_mode "implicit") or a few damped steps ("phantom"). e, h0: (B, n_tokens, d_model);
    u = core.loop_input(e) (the solve recomputes it from e in float32)."""
    from fpstab.fixedpoint import implicit_gradient, phantom_gradient, solve

    def f(h: Tensor) -> Tensor:
        return step_fn(h, u)

    # The forward solve runs without autocast: Anderson's least squares in
    # bf16 is not trustworthy; the differentiable part keeps the autocast.
    with torch.no_grad(), torch.autocast(device_type=e.device.type, enabled=False):
        u32 = core.loop_input(e.detach().float())
        res = solve(lambda h: step_fn(h, u32), h0.detach().float(), solver=cfg.solver,
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


class LossModule(nn.Module):
    """`compute_loss` as a module, forward(x, y, depths) -> LossOutput: what
    DistributedDataParallel wraps, since it averages gradients over the ranks in
    the backward of a forward it ran (the core's own methods bypass it)."""

    def __init__(self, core: nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig) -> None:
        super().__init__()
        self.core = core
        self.step_fn, self.task, self.cfg = step_fn, task, cfg

    def forward(self, x: Tensor, y: Tensor, depths: tuple[int, int]) -> LossOutput:
        return compute_loss(self.core, self.step_fn, self.task, self.cfg, x, y, depths)


@dataclass(frozen=True)
class DataParallel:
    """What a data-parallel step adds (fpstab.distributed.data_parallel): `loss`, the
    DistributedDataParallel-wrapped LossModule, averages the gradients over the ranks during
    backward; `mean` averages the logged scalars over them."""

    loss: Callable[[Tensor, Tensor, tuple[int, int]], LossOutput]
    mean: RankMean


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
               parallel: DataParallel | None = None, answers: Tensor | None = None) -> StepStats:
    """Forward (autocast per `precision`), backward, clip, and AdamW step if finite.

    x: (B, n_tokens, in_dim); y: (B, n_tokens); answers: the batch's rows of
    `TaskBatch.answers` (or None), for the accuracy. One host sync per step (the
    finiteness check reads loss, grad norm and accuracy together).
    parallel: data parallel training, where x, y are this rank's equal share of
    the batch: the gradients, loss and accuracy are averaged over the ranks
    (task losses are means, so the mean over equal shares is the batch's), so
    every rank clips, checks and steps alike.
    """
    with autocast(x.device.type, precision):
        if parallel is None:
            out = compute_loss(core, step_fn, task, cfg, x, y, depths)
        else:
            out = parallel.loss(x, y, depths)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if cfg.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    acc = task.correct(out.logits.detach().float(), y, answers).float().mean()
    stats = torch.stack([out.loss.detach().float(), grad_norm.float(), acc])
    if parallel is not None:
        stats = parallel.mean(stats)  # grad_norm is the same on every rank already
    loss_v, gn_v, acc_v = stats.tolist()
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
    answer the task accepts (`TaskBatch.answers`) or None. Batched, no gradients. step_fn: as for
    `compute_loss`.
    """
    check_step_fn(core, step_fn)
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
            logits = core.readout(run_iters(step_fn, core.init_state(e), core.loop_input(e), iters)).float()
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
