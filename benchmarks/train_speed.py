"""Training-step speed: a plain looped pre-norm block vs fpstab's training step.

    python benchmarks/train_speed.py                 # paper shape, on cuda if present
    python benchmarks/train_speed.py --small         # CPU-sized smoke run

Both models run the same shape: batch B of n tokens (in_dim/out_dim of the
sudoku task: 81 tokens, 10 channels), d_model d, 8 heads, a 30-iteration
fully differentiable unroll (progressive depths fixed to n=0, k=30), cross
entropy on the last readout, backward, gradient clip and an AdamW step.

- "plain": the reference of issue 5 — h <- h + Attn(N(h)); h <- h + MLP(N(h)),
  one weight-tied block, full attention via SDPA, no recall, no RoPE.
- "fpstab": `fpstab.train.train_step` on a core from `architectures`
  (default arch no_recall + norm inner, the same math as "plain" plus RoPE
  and QK-norm; --arch/--norm to change).

Variants: eager fp32, eager bf16 autocast, torch.compile (of the loop step)
bf16. FLOPs per step are counted once per model from its shapes
(torch.utils.flop_counter on an eager fp32 forward+backward: matmuls and
attention); fraction of peak = FLOPs / time / (--peak-tflops, default 795 =
a measured H100 bf16 dense matmul peak).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fpstab.config import TrainConfig
from fpstab.train import autocast, make_optimizer, train_step


# ---- the plain reference ------------------------------------------------------
class PlainBlock(nn.Module):
    """Pre-norm block: h + Attn(N(h)), then + MLP(N(h)). h: (B, n, d) -> (B, n, d)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h: Tensor) -> Tensor:
        B, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, n, d)
        h = h + self.proj(a)
        return h + self.mlp(self.norm2(h))


class PlainLooped(nn.Module):
    """Embed -> T x PlainBlock (tied) -> RMSNorm + Linear readout."""

    def __init__(self, in_dim: int, out_dim: int, d: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d)
        self.block = PlainBlock(d, heads)
        self.head = nn.Sequential(nn.RMSNorm(d), nn.Linear(d, out_dim))


def plain_step_fn(model: PlainLooped, iters: int, compiled: bool, clip: float) -> Callable[[Tensor, Tensor, str], None]:
    block = torch.compile(model.block) if compiled else model.block
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(x: Tensor, y: Tensor, precision: str) -> None:
        with autocast(x.device.type, precision):
            h = model.embed(x)
            for _ in range(iters):
                h = block(h)
            logits = model.head(h).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        float(loss.detach())  # one host sync per step, as fpstab's step has

    return step


# ---- fpstab's step --------------------------------------------------------------
def fpstab_step_fn(core: nn.Module, task: Any, cfg: TrainConfig, iters: int,
                   compiled: bool) -> Callable[[Tensor, Tensor, str], None]:
    step_fn = torch.compile(core.step) if compiled else core.step
    opt = make_optimizer(core, cfg)

    def step(x: Tensor, y: Tensor, precision: str) -> None:
        train_step(core, step_fn, task, cfg, opt, x, y, (0, iters), precision)

    return step


# ---- measurement ----------------------------------------------------------------
@dataclass
class Row:
    model: str
    variant: str
    ms_per_step: float
    samples_per_s: float
    iters_per_s: float
    tflops: float
    frac_peak: float


def count_flops(fwd_bwd: Callable[[], None]) -> int:
    """FLOPs of one eager forward+backward, from the shapes of its matmuls/attention."""
    counter = FlopCounterMode(display=False)
    with counter:
        fwd_bwd()
    return int(counter.get_total_flops())


def time_steps(step: Callable[[Tensor, Tensor, str], None], x: Tensor, y: Tensor, precision: str,
               warmup: int, steps: int) -> float:
    """Mean seconds per step after `warmup` steps (cuda-synchronized)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step(x, y, precision)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y, precision)
    sync()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="CPU smoke size: d 64, 4 heads, batch 16, 6 iterations")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=None, help="unrolled iterations (default 30)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (compile happens here)")
    p.add_argument("--peak-tflops", type=float, default=795.0, help="peak for the fraction column (H100 bf16: 795)")
    p.add_argument("--variants", default="eager_fp32,eager_bf16,compile_bf16")
    p.add_argument("--models", default="plain,fpstab")
    p.add_argument("--arch", default="no_recall")
    p.add_argument("--norm", default="inner")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from fpstab.architectures import CoreConfig, build_core
    from fpstab.tasks import get_task

    size = dict(d=64, heads=4, batch=16, iters=6, steps=3, warmup=1) if a.small else \
        dict(d=256, heads=8, batch=500, iters=30, steps=20, warmup=5)
    d = a.d_model or size["d"]
    heads = a.heads or size["heads"]
    batch = a.batch or size["batch"]
    iters = a.iters or size["iters"]
    steps = a.steps or size["steps"]
    warmup = a.warmup if a.warmup is not None else size["warmup"]
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    task = get_task("sudoku")
    grid = tuple(task.grid(task.ladder().train))
    n_tokens = 1
    for g in grid:
        n_tokens *= g
    gen = torch.Generator().manual_seed(0)
    x = F.one_hot(torch.randint(0, task.in_dim, (batch, n_tokens), generator=gen), task.in_dim).float().to(device)
    y = torch.randint(0, task.out_dim, (batch, n_tokens), generator=gen).to(device)
    cfg = TrainConfig(task="sudoku", arch=a.arch, norm=a.norm, d_model=d, n_heads=heads, batch_size=batch,
                      n_train=batch, train_iters=iters)

    def build(model: str) -> nn.Module:
        torch.manual_seed(0)
        if model == "plain":
            return PlainLooped(task.in_dim, task.out_dim, d, heads).to(device)
        core_cfg = CoreConfig(arch=a.arch, norm=a.norm, d_model=d, n_heads=heads, in_dim=task.in_dim,
                              out_dim=task.out_dim, grid=grid if len(grid) > 1 else None,
                              attn_window=task.attn_window)
        return build_core(core_cfg).to(device)

    def make_step(model: str, m: nn.Module, compiled: bool) -> Callable[[Tensor, Tensor, str], None]:
        if model == "plain":
            return plain_step_fn(m, iters, compiled, 1.0)  # type: ignore[arg-type]
        return fpstab_step_fn(m, task, cfg, iters, compiled)

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}; batch {batch} x {n_tokens} tokens, d {d}, {heads} heads, "
          f"{iters}-iteration unroll + AdamW; {warmup} warm-up + {steps} timed steps; peak {a.peak_tflops} TFLOP/s")
    rows: list[Row] = []
    for model in a.models.split(","):
        m = build(model)
        flops = count_flops(lambda model=model: make_step(model, build(model), False)(x, y, "fp32"))
        print(f"{model}: {sum(q.numel() for q in m.parameters()):,} params, "
              f"{flops / 1e9:.1f} GFLOP per step (fwd+bwd, counted)")
        for variant in a.variants.split(","):
            compiled = variant.startswith("compile")
            precision = "bf16" if variant.endswith("bf16") else "fp32"
            m = build(model)
            try:
                sec = time_steps(make_step(model, m, compiled), x, y, precision, warmup, steps)
            except Exception as err:  # a variant that cannot run here (e.g. no compiler) is reported, not fatal
                print(f"  {model} {variant}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                continue
            tflops = flops / sec / 1e12
            rows.append(Row(model, variant, 1e3 * sec, batch / sec, iters / sec, tflops, tflops / a.peak_tflops))

    print()
    print(f"{'model':<8} {'variant':<13} {'ms/step':>9} {'samples/s':>10} {'iters/s':>8} {'TFLOP/s':>8} {'% peak':>7}")
    for r in rows:
        print(f"{r.model:<8} {r.variant:<13} {r.ms_per_step:>9.1f} {r.samples_per_s:>10.0f} {r.iters_per_s:>8.0f} "
              f"{r.tflops:>8.3f} {100 * r.frac_peak:>6.2f}%")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"device": str(device), "batch": batch, "tokens": n_tokens, "d_model": d,
                                      "heads": heads, "iters": iters, "peak_tflops": a.peak_tflops,
                                      "rows": [r.__dict__ for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
