"""Training-step speed: fpstab's training step beside a plain looped block, in one run.

    python benchmarks/train_speed.py                        # paper shape on cuda (all variants, ~3 min)
    python benchmarks/train_speed.py --small --threads 1    # CPU shape: d 64, 4 heads, batch 16
    python benchmarks/train_speed.py --small --variants compile_fp32,compile_chunk_fp32 --batch 2 --iters 4

Both models run the same shape: batch B of n tokens (the sudoku task's 81
tokens, 10 input channels, 9 classes), d_model d, the same heads, the same
fully differentiable unroll (progressive depths fixed to n=0, k=iters),
cross-entropy on the last readout, backward, gradient clip 1 and the same
AdamW (`fpstab.train.make_optimizer`). Variants are `MODE_PRECISION`:

    MODE       eager | compile (torch.compile of the step, default mode)
               | compile_ro (mode="reduce-overhead": CUDA graphs on cuda)
               | compile_chunk (a compiled loop of --chunk steps plus the
                 compiled single step for the remainder: two graphs, no
                 recompilation per iteration count)
    PRECISION  fp32 | bf16 (autocast)

- "plain": h <- h + Attn(N(h)); h <- h + MLP(N(h)): one weight-tied pre-norm
  block, full attention by SDPA, no recall, no RoPE, no QK-norm; readout
  RMSNorm + Linear.
- "fpstab": `fpstab.train.train_step` on a core from `architectures`
  (default standard_recall + outer norm, as the paper's grid trains).

Timing: per variant both models are warmed up (compilation happens here; its
wall time is the `setup s` column; no variant starts after --budget-s, 170 s
on cuda by default, so a default GPU run ends in about 3 minutes), then their
timed steps alternate
(plain, fpstab, plain, ...) so load on a shared machine hits both alike; the
median step time is reported. FLOPs per step are counted once per model by
torch.utils.flop_counter on an eager fp32 forward+backward under SDPA's MATH
backend, so attention counts as its matmuls for both models alike (the CPU
flash kernel has no FLOP formula). `per-FLOP` is fpstab's achieved FLOP/s
over the plain block's in the same variant. A variant that fails (e.g. a
compiler error) is reported and the others still run. On cuda, `peak GiB`
is the peak allocated memory of a model's warm-up steps (one model at a
time, the whole unroll differentiated, no activation checkpointing): what
one training run at this shape needs at its deepest progressive-loss draw.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def _checkout() -> Path:
    """The fpstab source tree measured: --checkout PATH, else the one this script lives in."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    return pre.parse_known_args()[0].checkout.resolve()


if __name__ == "__main__":
    sys.path.insert(0, str(_checkout()))

from fpstab.config import TrainConfig  # noqa: E402
from fpstab.runs import atomic_write_json  # noqa: E402
from fpstab.train import autocast, make_optimizer, run_iters, train_step  # noqa: E402

MODES = ("eager", "compile", "compile_ro", "compile_chunk")
PRECISIONS = ("fp32", "bf16")
StepFn = Callable[[Tensor, Tensor], Tensor]


# ---- the plain reference ------------------------------------------------------
class Norm(nn.RMSNorm):
    """nn.RMSNorm with its gain cast to the input's dtype, as fpstab's RMSNorm does: under bf16 autocast
    a float32 gain on a bf16 input keeps torch off its fused RMSNorm kernel, which would slow the
    plain block for a reason fpstab does not share."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, w, self.eps)


class PlainBlock(nn.Module):
    """Pre-norm block: h + Attn(N(h)), then + MLP(N(h)). h: (B, n, d) -> (B, n, d)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = Norm(d), Norm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h: Tensor) -> Tensor:
        B, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, n, d)
        h = h + self.proj(a)
        return h + self.mlp(self.norm2(h))


class PlainLooped(nn.Module):
    """Embed -> iters x PlainBlock (tied) -> RMSNorm + Linear readout."""

    def __init__(self, in_dim: int, out_dim: int, d: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d)
        self.block = PlainBlock(d, heads)
        self.head = nn.Sequential(Norm(d), nn.Linear(d, out_dim))

    def step(self, h: Tensor, e: Tensor) -> Tensor:
        """The loop map; e is unused (no recall), kept for fpstab's step signature."""
        return self.block(h)


# ---- compiled loops -------------------------------------------------------------
class ChunkedLoop:
    """A compiled loop of `chunk` steps and a compiled single step: k iterations are
    k // chunk chunk calls plus k % chunk step calls, so any k reuses two graphs.

    Called as a step function it is the compiled single step; `fpstab.train.run_iters`
    uses its `run_iters`.
    """

    def __init__(self, step: StepFn, chunk: int) -> None:
        self.chunk = chunk

        def loop(h: Tensor, e: Tensor) -> Tensor:
            for _ in range(chunk):
                h = step(h, e)
            return h

        self.step, self.loop = torch.compile(step), torch.compile(loop)

    def __call__(self, h: Tensor, e: Tensor) -> Tensor:
        return self.step(h, e)

    def run_iters(self, h: Tensor, e: Tensor, iters: int) -> Tensor:
        chunks, rest = divmod(iters, self.chunk)
        for _ in range(chunks):
            h = self.loop(h, e)
        for _ in range(rest):
            h = self.step(h, e)
        return h


def step_function(step: StepFn, mode: str, chunk: int) -> StepFn:
    """The model's loop step as the variant's MODE runs it."""
    if mode == "eager":
        return step
    if mode == "compile":
        return torch.compile(step)
    if mode == "compile_ro":
        return torch.compile(step, mode="reduce-overhead")
    return ChunkedLoop(step, chunk)


# ---- one optimizer step per model -------------------------------------------------
TrainFn = Callable[[Tensor, Tensor], None]


def plain_train_fn(model: PlainLooped, cfg: TrainConfig, step_fn: StepFn, precision: str) -> TrainFn:
    opt = make_optimizer(model, cfg)

    def train(x: Tensor, y: Tensor) -> None:
        with autocast(x.device.type, precision):
            e = model.embed(x)
            logits = model.head(run_iters(step_fn, e, e, cfg.train_iters)).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        float(loss.detach())  # one host sync per step, as fpstab's step has

    return train


def fpstab_train_fn(core: nn.Module, task: Any, cfg: TrainConfig, step_fn: StepFn, precision: str) -> TrainFn:
    opt = make_optimizer(core, cfg)

    def train(x: Tensor, y: Tensor) -> None:
        train_step(core, step_fn, task, cfg, opt, x, y, (0, cfg.train_iters), precision)

    return train


# ---- measurement ----------------------------------------------------------------
@dataclass
class Row:
    model: str
    variant: str
    ms_per_step: float | None = None
    samples_per_s: float | None = None
    gflop_per_s: float | None = None
    frac_peak: float | None = None
    setup_s: float | None = None
    per_flop_vs_plain: float | None = None
    peak_gib: float | None = None  # cuda: peak allocated memory of the warm-up steps (one model at a time)
    error: str | None = None


def count_flops(run: Callable[[], None]) -> int:
    """FLOPs of one eager forward+backward, attention counted as the MATH backend's matmuls."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        run()
    return int(counter.get_total_flops())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} torch threads"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def git_commit(path: Path) -> str:
    """The checkout's commit (with '+changes' when the tree differs from it), or 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def short_error(err: BaseException) -> str:
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def run_variant(variant: str, makers: dict[str, Callable[[str, str], TrainFn]], x: Tensor, y: Tensor,
                warmup: int, steps: int) -> dict[str, tuple[list[float], float, float | None] | str]:
    """Warm up every model, then alternate their timed steps.

    Returns model -> (step seconds, warm-up seconds, peak GiB allocated during the warm-up on cuda, where
    one model runs at a time: a full unroll's activations, what activation checkpointing would save) or an
    error string.
    """
    mode, precision = variant.rsplit("_", 1)
    cuda = x.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    mark = torch.compiler.cudagraph_mark_step_begin if mode == "compile_ro" else (lambda: None)
    torch._dynamo.reset()  # a fresh cache: earlier variants' graphs must not count against recompile limits
    fns: dict[str, TrainFn] = {}
    out: dict[str, tuple[list[float], float, float | None] | str] = {}
    for model, make in makers.items():
        try:
            fn = make(mode, precision)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(warmup):
                mark()
                fn(x, y)
            sync()
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            fns[model], out[model] = fn, ([], time.perf_counter() - t0, peak)
        except Exception as err:  # a variant that cannot run here is reported, not fatal
            out[model] = short_error(err)
            traceback.print_exc(limit=3, file=sys.stderr)
    for _ in range(steps):
        for model in list(fns):
            try:
                mark()
                t0 = time.perf_counter()
                fns[model](x, y)
                sync()
                out[model][0].append(time.perf_counter() - t0)  # type: ignore[index,union-attr]
            except Exception as err:
                out[model] = short_error(err)
                del fns[model]
    return out


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    for v in variants:
        mode, _, precision = v.rpartition("_")
        if mode not in MODES or precision not in PRECISIONS:
            raise SystemExit(f"--variants: {v!r} is not MODE_PRECISION with MODE in {MODES} and PRECISION in "
                             f"{PRECISIONS} (e.g. eager_fp32, compile_chunk_bf16)")
    return variants


def print_table(rows: list[Row], cuda: bool) -> None:
    print(f"\n{'model':<8} {'variant':<20} {'ms/step':>9} {'samples/s':>10} {'GFLOP/s':>9} "
          f"{'% peak':>7} {'setup s':>8} {'per-FLOP vs plain':>18} {'peak GiB':>9}")
    for r in rows:
        if r.error:
            print(f"{r.model:<8} {r.variant:<20} FAILED: {r.error}")
            continue
        peak = f"{100 * r.frac_peak:>6.2f}%" if cuda and r.frac_peak is not None else f"{'-':>7}"
        ratio = f"{r.per_flop_vs_plain:>18.2f}" if r.per_flop_vs_plain is not None else f"{'':>18}"
        mem = f"{r.peak_gib:>9.2f}" if r.peak_gib is not None else f"{'-':>9}"
        print(f"{r.model:<8} {r.variant:<20} {r.ms_per_step:>9.1f} {r.samples_per_s:>10.1f} {r.gflop_per_s:>9.1f} "
              f"{peak} {r.setup_s:>8.1f} {ratio} {mem}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="CPU shape: d 64, 4 heads, batch 16, 30 iterations")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=None, help="unrolled iterations (default 30)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model and variant")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per model and variant (compile happens here)")
    p.add_argument("--chunk", type=int, default=5, help="steps per compiled chunk (compile_chunk variants)")
    p.add_argument("--peak-tflops", type=float, default=795.0, help="peak for the %% peak column (H100 bf16: 795)")
    p.add_argument("--variants", default=None,
                   help="comma-separated MODE_PRECISION (default cuda: eager_fp32,eager_bf16,compile_bf16,"
                        "compile_ro_bf16,compile_chunk_bf16; cpu: eager_fp32)")
    p.add_argument("--models", default="plain,fpstab")
    p.add_argument("--arch", default="standard_recall")
    p.add_argument("--norm", default="outer")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no further variant after this many seconds (default: 170 on cuda, none on cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--checkout", type=Path, default=None,
                   help="measure the fpstab source tree at PATH (e.g. another git worktree) instead of this one")
    return p


@dataclass(frozen=True)
class Shape:
    """What one benchmark run measures: the step's shape, the device and the timing plan."""

    d: int
    heads: int
    batch: int
    iters: int
    steps: int
    warmup: int
    device: torch.device
    variants: list[str]


def resolve_shape(a: argparse.Namespace) -> Shape:
    """The command line's shape over the --small (CPU) or the paper (GPU) defaults."""
    size = dict(d=64, heads=4, batch=16, iters=30, steps=5, warmup=1) if a.small else \
        dict(d=256, heads=8, batch=500, iters=30, steps=10, warmup=3)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    default_variants = ("eager_fp32,eager_bf16,compile_bf16,compile_ro_bf16,compile_chunk_bf16"
                        if device.type == "cuda" else "eager_fp32")
    return Shape(a.d_model or size["d"], a.heads or size["heads"], a.batch or size["batch"],
                 a.iters or size["iters"], a.steps or size["steps"],
                 a.warmup if a.warmup is not None else size["warmup"], device,
                 parse_variants(a.variants or default_variants))


class Models:
    """Both models at the sudoku task's shape (81 tokens, 10 input channels, 9 classes) on a fixed
    random batch: `make(model)` gives a variant's TrainFn for a freshly seeded model."""

    def __init__(self, shape: Shape, arch: str, norm: str, chunk: int) -> None:
        from fpstab.architectures import CoreConfig
        from fpstab.tasks import get_task

        self.shape, self.arch, self.chunk = shape, arch, chunk
        self.task = task = get_task("sudoku")
        grid = tuple(task.grid(task.ladder().train))
        self.n_tokens = int(torch.tensor(grid).prod())
        gen = torch.Generator().manual_seed(0)
        x = F.one_hot(torch.randint(0, task.in_dim, (shape.batch, self.n_tokens), generator=gen), task.in_dim)
        self.x = x.float().to(shape.device)
        self.y = torch.randint(0, task.out_dim, (shape.batch, self.n_tokens), generator=gen).to(shape.device)
        self.cfg = TrainConfig(task="sudoku", arch=arch, norm=norm, d_model=shape.d, n_heads=shape.heads,
                               batch_size=shape.batch, n_train=shape.batch, train_iters=shape.iters)
        self.core_cfg = CoreConfig(arch=arch, norm=norm, d_model=shape.d, n_heads=shape.heads, in_dim=task.in_dim,
                                   out_dim=task.out_dim, grid=grid, attn_window=task.attn_window)

    def build(self, model: str) -> nn.Module:
        from fpstab.architectures import build_core

        torch.manual_seed(0)
        if model == "plain":
            return PlainLooped(self.task.in_dim, self.task.out_dim, self.shape.d, self.shape.heads).to(self.shape.device)
        return build_core(self.core_cfg).to(self.shape.device)

    def maker(self, model: str) -> Callable[[str, str], TrainFn]:
        def make(mode: str, precision: str) -> TrainFn:
            m = self.build(model)
            # fpstab's loop passes u = core.loop_input(e) to core.step_from; a --checkout from before
            # step_from existed passes e to core.step.
            step = m.step if model == "plain" else getattr(m, "step_from", m.step)
            step_fn = step_function(step, mode, self.chunk)
            if model == "plain":
                return plain_train_fn(m, self.cfg, step_fn, precision)  # type: ignore[arg-type]
            return fpstab_train_fn(m, self.task, self.cfg, step_fn, precision)
        return make

    def count(self, models: Sequence[str]) -> dict[str, int]:
        """FLOPs per step of each model that can be counted (a failure is printed and the model dropped)."""
        flops: dict[str, int] = {}
        for model in models:
            params = sum(q.numel() for q in self.build(model).parameters())
            try:
                flops[model] = count_flops(lambda: self.maker(model)("eager", "fp32")(self.x, self.y))
            except Exception as err:
                print(f"{model}: FLOP count failed: {short_error(err)}")
                continue
            print(f"{model}: {params:,} params, {flops[model] / 1e9:.2f} GFLOP per step (fwd+bwd, counted)")
        return flops


def measure_variant(variant: str, models: Models, flops: dict[str, int], peak_tflops: float) -> list[Row]:
    """One variant's rows, fpstab's with its per-FLOP ratio to the plain block's."""
    s = models.shape
    results = run_variant(variant, {m: models.maker(m) for m in flops}, models.x, models.y, s.warmup, s.steps)
    rows, gflops = [], {}
    for model, res in results.items():
        if isinstance(res, str):
            rows.append(Row(model, variant, error=res))
            continue
        sec = statistics.median(res[0])
        gflops[model] = flops[model] / sec / 1e9
        rows.append(Row(model, variant, 1e3 * sec, s.batch / sec, gflops[model], gflops[model] / 1e3 / peak_tflops,
                        res[1], peak_gib=res[2]))
    if "plain" in gflops and "fpstab" in gflops:
        next(r for r in rows if r.model == "fpstab").per_flop_vs_plain = gflops["fpstab"] / gflops["plain"]
    return rows


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = resolve_shape(a)
    cuda = shape.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    models = Models(shape, a.arch, a.norm, a.chunk)
    import fpstab

    code = Path(fpstab.__file__).resolve().parent.parent
    dev_name, commit = device_name(shape.device), git_commit(code)
    print(f"device {shape.device}: {dev_name}; torch {torch.__version__}; fpstab from {code} ({commit})")
    print(f"shape: batch {shape.batch} x {models.n_tokens} tokens, d {shape.d}, {shape.heads} heads, "
          f"{shape.iters}-iteration unroll + AdamW; fpstab {a.arch}+{a.norm}; {shape.warmup} warm-up + "
          f"{shape.steps} timed steps per model, alternating")
    flops = models.count([m.strip() for m in a.models.split(",") if m.strip()])
    header = {
        "device": str(shape.device), "device_name": dev_name, "torch": torch.__version__,
        "fpstab_checkout": str(code), "fpstab_commit": commit,
        "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
        "batch": shape.batch, "tokens": models.n_tokens, "d_model": shape.d, "heads": shape.heads,
        "iters": shape.iters, "arch": a.arch, "norm": a.norm, "warmup": shape.warmup, "steps": shape.steps,
        "chunk": a.chunk, "peak_tflops": a.peak_tflops, "gflop_per_step": {k: v / 1e9 for k, v in flops.items()}}
    budget = a.budget_s if a.budget_s is not None else (170.0 if cuda else float("inf"))
    t_start, rows = time.perf_counter(), []
    for variant in shape.variants:
        if time.perf_counter() - t_start > budget:
            rows += [Row(m, variant, error=f"skipped: past the {budget:.0f} s budget (--budget-s)") for m in flops]
        else:
            print(f"[{variant}] ...", flush=True)
            rows += measure_variant(variant, models, flops, a.peak_tflops)
            if cuda:
                torch.cuda.empty_cache()
        if a.json:  # after every variant: a run cut short keeps what it measured
            atomic_write_json(a.json, {**header, "rows": [asdict(r) for r in rows]})
    print_table(rows, cuda)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
