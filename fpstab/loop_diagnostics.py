"""Loop-stability diagnostics during training: residual explosion and gradient oscillation.

Fu et al. 2026 ("Simply Stabilizing the Loop via Fully Looped Transformer", arXiv 2605.18797; their
check script in github.com/FuRuF-11/FullyLoopedTransformer) trace two things while training a looped
transformer: the mean token norm of each loop's residual stream, and the L2 norm of each layer's
parameter gradient per step. `fpstab train --loop-diagnostics-every N` records both every N
optimizer steps as a metrics.jsonl record of kind "loop_diagnostics":

    step             the optimizer step the gradient belongs to (1-based, as "train" records)
    stepped          False when the step was skipped (non-finite loss or gradient)
    iters            K, the iterations of the diagnostic pass (train_iters; 1 for one-pass cores)
    loss             the diagnostic pass's loss (after K iterations)
    state_norm       [K] mean over samples and tokens of ||h(t)||_2, the state after iteration t.
                     Where the state is normalized (norm outer/both/loop, fully_looped) this is
                     sqrt(d_model) by construction, whatever the weights do.
    stream_norm      [K] the same mean token L2 norm of the residual stream at the end of iteration
                     t before the state's last normalization (`Core.step_stream`; Fu et al.'s
                     "hidden norm"). Residual explosion shows here. Without a state norm (inner,
                     peri) it equals state_norm.
    grad_norm        {group: norm} of the training step's gradient before clipping (p.grad after
                     the step, rescaled by the clip factor), per parameter group
    unrolled_grad_norm  {group: norm} of the diagnostic loss's gradient, loop groups only
    loop_grad_norm   {group: [K]} the norm of iteration t's contribution to that gradient: the
                     weights are tied, so a group's gradient is the sum over iterations of the
                     gradients its K uses receive
    state_grad_norm  [K] ||dloss/dh(t)|| over the whole batch, the backward signal at each iteration

Groups: "embed", "head", "blocks.i" (block i: everything in it) with "blocks.i.attn" and
"blocks.i.mlp", and any other module of the loop step (e.g. "recall" of norm="loop").

The diagnostic pass runs before the optimizer step, on that step's batch and weights: K
iterations from h0, every one with gradients, loss on the last, with each iteration's step
parameters replaced by its own copy (torch.func.functional_call) so each copy's gradient is that
iteration's contribution. Under grad_mode "unrolled" that is the training loss itself, so
unrolled_grad_norm equals grad_norm; under "progressive" it is the loss of the full K-step unroll,
not the (n, k) draw the step trained on. It uses torch.autograd.grad, which leaves p.grad alone,
and draws no random numbers, so the training run is the same with or without it. Its cost on the
steps it runs: one more forward and backward of K iterations and K copies of the step's parameters.
Data parallel runs record rank 0's share of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fpstab.protocol import autocast

RECORD_KIND = "loop_diagnostics"


def due(every: int, step: int) -> bool:
    """Whether 0-based optimizer step `step` is traced (steps every, 2*every, ... counted from 1)."""
    return every > 0 and (step + 1) % every == 0


def groups_of(name: str) -> list[str]:
    """The groups a parameter name belongs to: "blocks.0.attn.qkv.weight" -> ["blocks.0", "blocks.0.attn"]."""
    parts = name.split(".")
    if parts[0] != "blocks" or len(parts) < 3:
        return [parts[0]]
    block = f"blocks.{parts[1]}"
    return [block, f"{block}.{parts[2]}"] if parts[2] in ("attn", "mlp") else [block]


def group_norms(named: Iterable[tuple[str, Tensor | None]]) -> dict[str, float]:
    """{group: L2 norm over its tensors}; None tensors count as zero. Groups in first-seen order."""
    squares: dict[str, Tensor] = {}
    for name, g in named:
        sq = torch.zeros(()) if g is None else g.detach().double().pow(2).sum().cpu()
        for group in groups_of(name):
            squares[group] = squares.get(group, torch.zeros((), dtype=torch.float64)) + sq
    return {k: math.sqrt(float(v)) for k, v in squares.items()}


def token_norm(h: Tensor) -> float:
    """Mean over every leading index of the L2 norm over the last dim; h (..., d)."""
    return float(h.detach().float().norm(dim=-1).mean())


class _Stepper(nn.Module):
    """core.step_stream as a forward, so functional_call can swap the step's parameters."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, h: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        return self.core.step_stream(h, e)


def loop_parameters(core: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The named parameters that the loop step uses: all but the encoder's and the readout's."""
    outside = {id(p) for m in (core.embed, core.head) for p in m.parameters()}
    return [(n, p) for n, p in core.named_parameters() if id(p) not in outside]


@dataclass
class LoopTrace:
    """What the diagnostic pass measured before the step (see the module docstring)."""

    iters: int
    loss: float
    state_norm: list[float]
    stream_norm: list[float]
    unrolled_grad_norm: dict[str, float]
    loop_grad_norm: dict[str, list[float]]
    state_grad_norm: list[float]

    def record(self, step: int, stepped: bool, grad_norm: dict[str, float]) -> dict[str, Any]:
        """The metrics.jsonl record, with the training step's per-group gradient norms."""
        return {"kind": RECORD_KIND, "step": step, "stepped": stepped, "iters": self.iters, "loss": self.loss,
                "state_norm": self.state_norm, "stream_norm": self.stream_norm, "grad_norm": grad_norm,
                "unrolled_grad_norm": self.unrolled_grad_norm, "loop_grad_norm": self.loop_grad_norm,
                "state_grad_norm": self.state_grad_norm}


def trace_loop(core: nn.Module, task: Any, x: Tensor, y: Tensor, iters: int, precision: str = "fp32") -> LoopTrace:
    """The diagnostic pass on one batch: x (B, n_tokens, in_dim), y (B, n_tokens); see the module docstring."""
    stepper, named = _Stepper(core), loop_parameters(core)
    copies: list[dict[str, Tensor]] = []
    states: list[Tensor] = []
    state_norm, stream_norm = [], []
    with autocast(x.device.type, precision):
        e = core.encode(x)
        h = core.init_state(e)
        for _ in range(iters):
            params = {"core." + n: p.detach().clone().requires_grad_(True) for n, p in named}
            h, stream = torch.func.functional_call(stepper, params, (h, e))
            copies.append(params)
            states.append(h)
            state_norm.append(token_norm(h))
            stream_norm.append(token_norm(stream))
        loss = task.loss(core.readout(h), y)
    leaves = [p for c in copies for p in c.values()]
    grads = torch.autograd.grad(loss, leaves + states, allow_unused=True)
    per_iter = [grads[i * len(named):(i + 1) * len(named)] for i in range(iters)]
    loop_grad: dict[str, list[float]] = {}
    for g in per_iter:
        for group, v in group_norms(zip((n for n, _ in named), g)).items():
            loop_grad.setdefault(group, []).append(v)
    total = [_sum_or_none([g[j] for g in per_iter]) for j in range(len(named))]
    return LoopTrace(iters, float(loss.detach()), state_norm, stream_norm,
                     group_norms(zip((n for n, _ in named), total)), loop_grad,
                     [0.0 if g is None else float(g.detach().float().norm()) for g in grads[len(leaves):]])


def _sum_or_none(tensors: list[Tensor | None]) -> Tensor | None:
    present = [t for t in tensors if t is not None]
    return torch.stack(present).sum(0) if present else None


def step_grad_norms(core: nn.Module, grad_norm: float) -> dict[str, float]:
    """{group: norm} of the gradient the last step computed, before clipping.

    p.grad holds the clipped gradient c * g (one factor c for all parameters); `grad_norm` is
    ||g||, so each group's ||g_group|| = ||c g_group|| * ||g|| / ||c g||.
    """
    named = [(n, p.grad) for n, p in core.named_parameters()]
    clipped = group_norms(named)
    total = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for _, g in named if g is not None))
    scale = grad_norm / total if total > 0 and math.isfinite(grad_norm) else 1.0
    return {k: v * scale for k, v in clipped.items()}
