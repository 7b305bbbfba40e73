"""Hessian probe accuracy against a dense Hessian, and its cost, on tiny cores.

    python3 -m benchmarks.hessian_accuracy                       # d_model 4 and 8 (P = 322, 1114), CPU
    PYTHONPATH=/path/to/libs python3 -m benchmarks.hessian_accuracy --libs   # + curvlinops, PyHessian
    python3 -m benchmarks.hessian_accuracy --device cuda --d-model 16 32      # GPU variant

For each core (prefix_sum, internal_recall, float64, the training loss of
`--samples` inputs at `--iters` iterations) it prints one row per method:
- the largest error of the k largest and k smallest eigenvalues against
  torch.func.hessian + eigvalsh, next to the largest error bound the method
  reports (ours: residual + operator noise; the libraries report none);
- |trace error| / reported error, |entropy error| / reported error (ours: SLQ);
- kappa(H_valley) (eps = 0.1 max|lambda|) against dense, or UNDETERMINED;
- milliseconds per Hessian-vector product and seconds in all.
Libraries (with --libs, where importable): curvlinops-for-pytorch
(HessianLinearOperator, forward-over-reverse products, + scipy eigsh/ARPACK)
and PyHessian (power iteration with deflation, top |lambda| only). Neither
reports an error bound, so their bound / trace / entropy cells are nan.
Measured output: results/hessian_accuracy/README.md.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fpstab.hessian_options import HessianOptions
from fpstab.hessian_probe import flat_loss, hessian_record


def tiny_problem(d_model: int, iters: int, samples: int, device: str) -> dict[str, Any]:
    from fpstab.architectures import build_core
    from fpstab.config import core_config_for, resolve_config
    from fpstab.tasks import get_task

    cfg = resolve_config(None, dict(task="prefix_sum", arch="internal_recall", norm="outer", d_model=d_model,
                                    n_heads=max(1, d_model // 4), train_iters=iters, train_level="16"))
    task = get_task("prefix_sum")
    torch.manual_seed(0)
    core = build_core(core_config_for(cfg, task)).double().to(device)
    batch = task.make("16", samples, seed=0)
    x, y = batch.inputs.double().to(device), batch.targets.to(device)
    loss_of, theta = flat_loss(core, task, cfg, x, y)
    began = time.perf_counter()
    dense = torch.func.hessian(loss_of)(theta)
    eig = torch.linalg.eigvalsh((dense + dense.T) / 2).cpu()
    return {"cfg": cfg, "task": task, "core": core, "x": x, "y": y, "loss_of": loss_of, "theta": theta,
            "eig": eig, "dense_s": time.perf_counter() - began}


def ends_error(got_top: list[float], got_bottom: list[float], eig: Tensor) -> float:
    want = torch.cat([eig.flip(0)[: len(got_top)], eig[: len(got_bottom)]])
    return float((torch.tensor(got_top + got_bottom, dtype=torch.float64) - want).abs().max())


def dense_figures(eig: Tensor, eps_factor: float) -> dict[str, float]:
    a = eig.abs()
    p = a / a.sum()
    valley = a[a > eps_factor * a.max()]
    return {"trace": float(eig.sum()), "entropy": float(-torch.xlogy(p, p).sum()),
            "kappa": float(valley.max() / valley.min())}


def ours(prob: dict[str, Any], k: int, hvp: str) -> dict[str, Any]:
    opts = HessianOptions(hessian_k=k, hessian_steps=120, hessian_probes=10, hessian_slq_steps=30, hessian_eps=0.1)
    began = time.perf_counter()
    rec = hessian_record(prob["core"], prob["task"], prob["cfg"], prob["x"], prob["y"], opts, hvp=hvp)
    seconds = time.perf_counter() - began
    top = [e["value"] for e in rec["largest"]["eigenvalues"]]
    bottom = [e["value"] for e in rec["smallest"]["eigenvalues"]]
    bound = max(e["error_bound"] for p in ("largest", "smallest") for e in rec[p]["eigenvalues"])
    dense = dense_figures(prob["eig"], 0.1)
    kappa = rec["valley"]["kappa"]
    return {"method": f"fpstab lanczos+slq ({hvp})", "ends_err": ends_error(top, bottom, prob["eig"]),
            "bound": bound, "trace": abs(rec["trace"]["value"] - dense["trace"]) / rec["trace"]["error"],
            "entropy": abs(rec["entropy"]["value"] - dense["entropy"]) / rec["entropy"]["error"],
            "kappa": f"{kappa['value']:.4g} vs {dense['kappa']:.4g}" if kappa["status"] == "determined"
            else "UNDETERMINED", "ms": 1e3 * seconds / rec["products"], "s": seconds}


class Logits(nn.Module):
    """x -> the core's logits after `iters` iterations from h0 (flat: (B * n_tokens, classes)),
    the model-then-loss form the libraries take."""

    def __init__(self, core: nn.Module, iters: int, flat: bool = False) -> None:
        super().__init__()
        self.core, self.iters, self.flat = core, iters, flat

    def forward(self, x: Tensor) -> Tensor:
        e = self.core.encode(x)
        h = self.core.init_state(e)
        for _ in range(self.iters):
            h = self.core.step(h, e)
        logits = self.core.readout(h)
        return logits.reshape(-1, logits.shape[-1]) if self.flat else logits


def curvlinops_eigsh(prob: dict[str, Any], k: int) -> dict[str, Any]:
    import numpy as np
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    core = prob["core"]
    model, params = Logits(core, prob["cfg"].train_iters, flat=True), [p for p in core.parameters() if p.requires_grad]
    counter = [0]
    began = time.perf_counter()
    op = HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(prob["x"], prob["y"].reshape(-1))],
                               check_deterministic=False, batch_size_fn=lambda x: x.shape[0]).to_scipy()
    scipy_op = op

    def matvec(v: Any) -> Any:
        counter[0] += 1 if v.ndim == 1 else v.shape[1]
        return scipy_op @ v

    from scipy.sparse.linalg import LinearOperator
    counted = LinearOperator(op.shape, matvec=matvec, matmat=matvec, dtype=np.float64)
    top = np.sort(eigsh(counted, k=k, which="LA", tol=1e-8)[0])[::-1].tolist()
    bottom = np.sort(eigsh(counted, k=k, which="SA", tol=1e-8)[0]).tolist()
    seconds = time.perf_counter() - began
    return {"method": "curvlinops + scipy eigsh (ARPACK)", "ends_err": ends_error(top, bottom, prob["eig"]),
            "bound": math.nan, "trace": math.nan, "entropy": math.nan, "kappa": "-",
            "ms": 1e3 * seconds / max(counter[0], 1), "s": seconds}


def pyhessian_power(prob: dict[str, Any], k: int) -> dict[str, Any]:
    from pyhessian import hessian as PyHessian

    torch.manual_seed(0)
    began = time.perf_counter()
    with sdpa_kernel(SDPBackend.MATH):
        ph = PyHessian(Logits(prob["core"], prob["cfg"].train_iters), prob["task"].loss, data=(prob["x"], prob["y"]), cuda=prob["x"].is_cuda)
        top, _ = ph.eigenvalues(maxIter=200, tol=1e-6, top_n=k)
    seconds = time.perf_counter() - began
    want = prob["eig"][prob["eig"].abs().argsort(descending=True)[:k]]
    err = float((torch.tensor(sorted(top, key=abs, reverse=True)) - want).abs().max())
    return {"method": "pyhessian power iteration (top-|lambda|)", "ends_err": err, "bound": math.nan,
            "trace": math.nan, "entropy": math.nan, "kappa": "-",
            "ms": math.nan, "s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--libs", action="store_true", help="also curvlinops and PyHessian (must be importable)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the libraries' deprecation notes
    methods: list[Callable[[dict[str, Any], int], dict[str, Any]]] = [
        lambda p, k: ours(p, k, "double-backward"), lambda p, k: ours(p, k, "forward-over-reverse")]
    if args.libs:
        methods += [curvlinops_eigsh, pyhessian_power]
    print(f"{'P':>6} {'method':<42} {'max|ends err|':>13} {'bound':>9} {'tr err/err':>10} {'H err/err':>9} "
          f"{'kappa (eps 0.1)':>20} {'ms/HVP':>7} {'s':>6}")
    for d in args.d_model:
        prob = tiny_problem(d, args.iters, args.samples, args.device)
        print(f"{prob['theta'].numel():>6} {'dense torch.func.hessian + eigvalsh':<42} {0:>13.1e} {'':>9} {'':>10} "
              f"{'':>9} {'':>20} {'':>7} {prob['dense_s']:>6.1f}")
        for method in methods:
            try:
                r = method(prob, args.k)
            except Exception as err:  # a library that cannot run this model is a row, not a crash
                print(f"{prob['theta'].numel():>6} {'failed: ' + type(err).__name__ + ': ' + str(err)[:80]}")
                continue
            print(f"{prob['theta'].numel():>6} {r['method']:<42} {r['ends_err']:>13.1e} {r['bound']:>9.1e} "
                  f"{r['trace']:>10.2f} {r['entropy']:>9.2f} {r['kappa']:>20} {r['ms']:>7.1f} {r['s']:>6.1f}")


if __name__ == "__main__":
    main()
