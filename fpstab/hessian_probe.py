"""The Hessian of a core's training loss on a batch, and its record during training.

The loss is `protocol.compute_loss` with every iteration differentiated: the
progressive loss at depths (n, k) = (0, train_iters) (one application for a
one-pass baseline), i.e. the task loss of readout(f^m(h0)) as a function of
every trainable parameter, flattened in `named_parameters` order into one
vector of P entries. A run trained with grad_mode implicit or phantom gets the
Hessian of this same unrolled loss (its own backward is not a function's
second derivative). The task's loss takes the logits to float32, so a float64
probe reads products with float32 rounding in them: the record's
`operator_noise` measures it.

`hessian_record` reads the spectrum (fixedpoint.hessian) and adds what the
loss was; `HessianLog` writes one record per K optimizer steps to
RUN/hessian.jsonl during `fpstab train --hessian-every K`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fpstab.fixedpoint.hessian import SpectrumSettings, hessian_spectrum, hvp_operator
from fpstab.fixedpoint.probes.records import to_json
from fpstab.hessian_options import HessianOptions, hessian_options_of
from fpstab.protocol import LossModule

HESSIAN_FILE = "hessian.jsonl"


def flat_loss(core: nn.Module, task: Any, cfg: Any, x: Tensor, y: Tensor,
              looped: bool = True) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """(loss_of, theta): the unrolled training loss as a function of the flat parameters (P,), and
    the core's own flat parameters. x: (B, n_tokens, in_dim); y: (B, n_tokens)."""
    named = [(name, p) for name, p in core.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    unrolled = cfg.replace(grad_mode="progressive", alpha=1.0)
    module = LossModule(core, core.step_from, task, unrolled)
    depths = (0, cfg.train_iters if looped else 1)

    def loss_of(flat: Tensor) -> Tensor:
        views, start = {}, 0
        for name, p in named:
            views["core." + name] = flat[start:start + p.numel()].view_as(p)
            start += p.numel()
        return torch.func.functional_call(module, views, (x, y, depths)).loss

    return loss_of, theta


def hessian_record(core: nn.Module, task: Any, cfg: Any, x: Tensor, y: Tensor, opts: HessianOptions,
                   looped: bool = True, hvp: str = "double-backward") -> dict[str, Any]:
    """The Hessian record (schema fpstab.hessian/1) of the unrolled training loss at x, y.

    Runs in x's dtype without autocast, attention on the composite kernel (the
    fused ones have no double backward); the core's weights and gradients are untouched.
    """
    loss_of, theta = flat_loss(core, task, cfg, x, y, looped)
    other = "forward-over-reverse" if hvp == "double-backward" else "double-backward"
    with sdpa_kernel(SDPBackend.MATH), torch.autocast(device_type=x.device.type, enabled=False):
        apply, loss, grad = hvp_operator(loss_of, theta.to(x.dtype), hvp)
        check = hvp_operator(loss_of, theta.to(x.dtype), other)[0]  # the noise estimate's cross-check
        # the task loss may round in a lower precision than the probe's (float32 cross-entropy)
        floor = torch.finfo(loss.dtype).eps if loss.dtype.is_floating_point else 0.0
        spec = hessian_spectrum(apply, theta.to(x.dtype), SpectrumSettings(**opts.spectrum_settings()), hvp, check,
                                floor=max(floor, torch.finfo(x.dtype).eps))
    iters = cfg.train_iters if looped else 1
    return {**spec.record(), "loss": {
        "what": f"task loss after {iters} loop iteration(s) from h0, all differentiated "
                f"(compute_loss at depths (0, {iters}))",
        "value": float(loss), "grad_norm": float(grad.norm()), "samples": int(x.shape[0]), "iterations": iters,
        "params": int(theta.numel()), "dtype": str(x.dtype).replace("torch.", ""), "device": str(x.device)}}


class HessianLog:
    """RUN/hessian.jsonl during training: one record at step 0, every K optimizer steps and at the
    last step.

    The loss is taken on the first `hessian_samples` training samples, the
    same batch for every record. Resume-safe: records after the resumed
    step are dropped (the resumed run writes them again, from the same
    weights), and a step already recorded is not recorded twice. The probe's
    seconds are kept out of the run's training time. Only rank 0 records.
    """

    def __init__(self, path: Path, opts: HessianOptions, x: Tensor, y: Tensor, from_step: int) -> None:
        self.path, self.opts, self.x, self.y = path, opts, x, y
        self.steps = _keep_records_until(path, from_step)

    @staticmethod
    def of(run: Any, batches: Any) -> HessianLog | None:
        """The log of a run (fpstab.train's), or None without --hessian-every or off rank 0."""
        opts = hessian_options_of(run.runtime)
        if not opts.hessian_every or not run.ranks.is_main:
            return None
        n = min(opts.hessian_samples, batches.inputs.shape[0])
        return HessianLog(run.out / HESSIAN_FILE, opts, batches.inputs[:n], batches.targets[:n], run.step)

    def at(self, run: Any, final: bool = False) -> None:
        """Record the Hessian at run.step when it is due (every K steps, and at the end of
        training: `final`) and not yet recorded."""
        step = run.step
        if (step % self.opts.hessian_every and not final) or step in self.steps:
            return
        began = time.perf_counter()
        rec = hessian_record(run.core, run.task, run.cfg, self.x.float(), self.y, self.opts, run.looped)
        line = {"kind": "hessian", "step": step, "epoch": step // run.cfg.steps_per_epoch, **rec}
        with self.path.open("a") as f:
            f.write(to_json(line, indent=None) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.steps.add(step)
        spent = time.perf_counter() - began
        run.t0 += spent  # the run's clocks (training time, samples/s) leave the probe out
        run.window.t += spent
        run.say(f"[train] hessian at step {step}: {summary_line(rec)} ({spent:.1f}s)")


def _keep_records_until(path: Path, step: int) -> set[int]:
    """Drop the records of `path` after `step` (and a torn last line), atomically; the steps kept."""
    import json

    from fpstab.tasks.cache import atomic_write_bytes

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return set()
    kept, steps = [], set()
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            kept.append(line)
            steps.add(rec["step"])
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return steps


def summary_line(rec: dict[str, Any]) -> str:
    """lambda_max, lambda_min, kappa and entropy of a record, in one line."""
    top, bottom = rec["largest"]["eigenvalues"][0], rec["smallest"]["eigenvalues"][0]
    kappa = rec["valley"]["kappa"]
    kappa_text = f"{kappa['value']:.3g}" if kappa["status"] == "determined" else (
        f"undetermined (>= {kappa['lower_bound']:.3g})" if kappa.get("lower_bound") else "undetermined")
    return (f"lambda_max {top['value']:.4g}{'' if top['converged'] else '?'} lambda_min {bottom['value']:.4g}"
            f"{'' if bottom['converged'] else '?'} kappa_valley {kappa_text} entropy "
            f"{rec['entropy']['value']:.4g}+-{rec['entropy']['error']:.2g}")
