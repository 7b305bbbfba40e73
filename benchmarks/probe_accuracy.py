"""Krylov estimates near rho = 1 and sigma_min = 0 against dense linear algebra.

A core's map is pushed toward the edge without moving its fixed point h*:

    F_c(h) = (1 - c) h* + c G(h),   dF_c/dh = c dG/dh,

with c per sample so that rho(dF_c/dh) is exactly 0.99, 0.999, 0.9999.
G is one loop step (`--map step`) or two (`--map step2`: the trained prefix
cores' dominant eigenvalues are negative, so I - c J stays far from singular;
J^2's are positive and I - c J^2 nears singular). The dense reference is
float64 (the Jacobian by vmapped VJPs, then eigvals / svdvals / solve).

For each edge value it prints, per method, the worst relative error over the
samples, how many said converged, the largest error estimate, the products
(JVPs + VJPs, batch-wide) and seconds:
  rho:       Krylov-Schur (fixedpoint.spectral_radius, defaults);
  sigma_min: Golub-Kahan on (I - J)^-1 through GMRES (fixedpoint default),
             plain Golub-Kahan on I - J with k steps (the old method), and
             scipy.sparse.linalg.svds(which="SM") on one sample's
             LinearOperator (ARPACK on A^T A, CPU, per sample);
  GMRES:     (I - J_c) x = b, defaults.

    python benchmarks/probe_accuracy.py --checkpoint runs/prefix_tiny/standard_recall
    python benchmarks/probe_accuracy.py --checkpoint RUN --dtypes float32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import numpy as np
import scipy.sparse.linalg as sla
import torch

from fpstab.fixedpoint import dense_jacobian, gmres, iterate, smallest_singular_value, spectral_radius
from fpstab.fixedpoint.krylov import random_start, unit
from fpstab.fixedpoint.linalg import jvp_operator, vjp_operator
from fpstab.fixedpoint.spectra import _golub_kahan
from probe_speed import timed  # the sibling benchmark's synchronizing timer (run as a script from benchmarks/)


def load(args: argparse.Namespace) -> tuple[object, torch.Tensor]:
    """The core (float64, eval) and its probe inputs (held-out, data seed + 3)."""
    from fpstab.tasks import get_task

    from fpstab.config import train_level_for
    from fpstab.runs import load_run

    core, _, cfg, task_name = load_run(args.checkpoint, device=args.device)
    task = get_task(task_name)
    batch = task.make(str(train_level_for(cfg, task)), args.samples, seed=cfg.data_seed + 3)
    return core.double().eval(), batch.inputs.to(args.device, torch.float64)


def reference(core: object, x: torch.Tensor, two_steps: bool) -> dict[str, torch.Tensor]:
    """float64 h*, e and the dense Jacobian of G at h* (B, N, N)."""
    with torch.no_grad():
        e = core.encode(x)
        h = iterate(lambda s: core.step(s, e), core.init_state(e), 2000).final
    jac = dense_jacobian(lambda s: core.step(s, e), h, chunk_size=256)
    return {"h": h, "e": e, "J": jac @ jac if two_steps else jac}


def plain_golub_kahan_min(f: Callable, h: torch.Tensor, steps: int) -> torch.Tensor:
    """sigma_min of the k-step bidiagonal of I - J (the old probe's method)."""
    jv, jtv = jvp_operator(f, h), vjp_operator(f, h)
    gk = _golub_kahan(lambda v: v - jv(v), lambda u: u - jtv(u), unit(random_start(h, 0)), steps, 0.0, steps)
    return gk.values[:, -1]


def scipy_svds_min(f: Callable, h0: torch.Tensor, maxiter: int) -> tuple[float, int, bool]:
    """sigma_min of I - J for one sample (f, h0 of batch 1) by scipy svds(which="SM"): (value, products, converged)."""
    h = h0
    jv, jtv = jvp_operator(f, h0), vjp_operator(f, h0)
    n = h0[0].numel()
    count = [0]

    def mv(v: np.ndarray, op: Callable) -> np.ndarray:
        count[0] += 1
        t = torch.as_tensor(np.asarray(v).reshape(1, n), dtype=h.dtype, device=h.device)
        return (t - op(t)).double().cpu().numpy().reshape(n)

    lin = sla.LinearOperator((n, n), matvec=lambda v: mv(v, jv), rmatvec=lambda v: mv(v, jtv), dtype=np.float64)
    try:
        s = sla.svds(lin, k=1, which="SM", maxiter=maxiter, return_singular_vectors=False, random_state=0)
        return float(s[0]), count[0], True
    except sla.ArpackNoConvergence as err:
        vals = err.eigenvalues
        return (float(np.sqrt(np.abs(vals).min())) if len(vals) else float("nan")), count[0], False


def rows_for(core: object, ref: dict[str, torch.Tensor], rho_target: float, dtype: torch.dtype,
             args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    n = ref["J"].shape[1]
    rho0 = torch.linalg.eigvals(ref["J"]).abs().amax(dim=1)
    c64 = rho_target / rho0
    a64 = torch.eye(n, dtype=torch.float64, device=device) - c64[:, None, None] * ref["J"]
    smin_true = torch.linalg.svdvals(a64)[:, -1]
    b64 = random_start(ref["h"], 5).reshape(ref["h"].shape[0], n)
    x_true = torch.linalg.solve(a64, b64)
    core_d = core.to(dtype)

    def edge_map(rows: slice) -> tuple[Callable, torch.Tensor]:
        """F_c for the samples `rows`, and their h*."""
        h, e = ref["h"][rows].to(dtype), ref["e"][rows].to(dtype)
        c = c64[rows].to(dtype).view(-1, *[1] * (h.dim() - 1))
        g = (lambda s: core_d.step(core_d.step(s, e), e)) if args.map == "step2" else (lambda s: core_d.step(s, e))
        return (lambda s: (1 - c) * h + c * g(s)), h

    f, h = edge_map(slice(None))
    base = dict(map=args.map, rho=rho_target, dtype=str(dtype).replace("torch.", ""), N=n, B=h.shape[0],
                true_sigma_min=smin_true.tolist())
    out = []

    def add(quantity: str, method: str, est, truth: torch.Tensor, seconds: float) -> None:
        err = ((est.value.double() - truth).abs() / truth.abs()) if est.value.dim() == 1 else \
            ((est.value.double() - truth).norm(dim=1) / truth.norm(dim=1))
        out.append(dict(base, quantity=quantity, method=method, max_rel_err=float(err.max()),
                        rel_err=err.tolist(), converged=int(est.converged.sum()), max_error_estimate=float(est.error.max()),
                        products=est.products, seconds=seconds,
                        converged_within_2pct=bool(((err <= 0.02) | ~est.converged.cpu()).all())))

    est, t = timed(lambda: spectral_radius(f, h), device)
    add("rho", "krylov-schur (default)", est, torch.full_like(rho0, rho_target), t)
    est, t = timed(lambda: smallest_singular_value(f, h), device)
    add("sigma_min", "inverse golub-kahan + gmres (default)", est, smin_true, t)
    for k in args.gk_steps:
        val, t = timed(lambda k=k: plain_golub_kahan_min(f, h, k), device)
        err = (val.double() - smin_true).abs() / smin_true
        out.append(dict(base, quantity="sigma_min", method=f"plain golub-kahan k={k} (old)", max_rel_err=float(err.max()),
                        rel_err=err.tolist(), converged=None, max_error_estimate=None, products=2 * k, seconds=t))
    if args.svds_maxiter:
        (val, products, ok), t = timed(lambda: scipy_svds_min(*edge_map(slice(0, 1)), args.svds_maxiter), device)
        out.append(dict(base, quantity="sigma_min", method=f"scipy svds SM (sample 0, maxiter {args.svds_maxiter})",
                        max_rel_err=abs(val - float(smin_true[0])) / float(smin_true[0]), converged=int(ok),
                        max_error_estimate=None, products=products, seconds=t))
    est, t = timed(lambda: gmres(lambda v: v - jvp_operator(f, h)(v), b64.to(dtype)), device)
    add("gmres", "gmres (default)", est, x_true, t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory of `fpstab train` (e.g. the tiny prefix core)")
    p.add_argument("--map", choices=["step", "step2"], default="step2")
    p.add_argument("--rhos", type=float, nargs="+", default=[0.99, 0.999, 0.9999])
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--gk-steps", type=int, nargs="*", default=[60, 200], help="plain Golub-Kahan steps to compare")
    p.add_argument("--svds-maxiter", type=int, default=0, help="also run scipy svds with this maxiter (0: skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    core, x = load(args)
    ref = reference(core, x, args.map == "step2")
    print(f"{args.checkpoint}: map {args.map}, N={ref['J'].shape[1]}, B={x.shape[0]}, device {args.device}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'rho':>7} {'dtype':>8} {'quantity':<10} {'method':<44} {'max rel err':>11} {'conv':>5} "
          f"{'max err est':>11} {'products':>8} {'s':>7}", flush=True)
    rows = []
    for rho in args.rhos:
        for dt in args.dtypes:
            for r in rows_for(core, ref, rho, getattr(torch, dt), args):
                rows.append(r)
                est = "-" if r["max_error_estimate"] is None else f"{r['max_error_estimate']:.1e}"
                conv = "-" if r["converged"] is None else f"{r['converged']}"
                print(f"{rho:>7} {r['dtype']:>8} {r['quantity']:<10} {r['method']:<44} {r['max_rel_err']:>11.2e} "
                      f"{conv:>5} {est:>11} {r['products']:>8} {r['seconds']:>7.1f}", flush=True)
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(dict(args=vars(args), rows=rows, torch=torch.__version__), fh, indent=2)


if __name__ == "__main__":
    main()
