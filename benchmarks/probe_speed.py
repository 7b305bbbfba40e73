"""Matrix-free vs dense probes on a sudoku-sized state: time ratio and agreement.

For a fresh seeded core on 81 tokens (9x9 grid) at the state reached after T
iterations, computes rho(J_h), sigma_min(I - J_h) and one implicit-function
solve dh*/de u both ways:
  matrix-free: Krylov-Schur / Golub-Kahan on (I - J)^-1 through GMRES / GMRES
               on JVPs and VJPs (fixedpoint), with their products and whether
               they converged;
  dense:       the Jacobian by vmapped VJPs (as jacrev), then eigvals,
               svdvals and a dense solve.
The dense column's time includes building the Jacobian (shown on its own row).

`--full-probe` instead times the whole `fixedpoint.probe` (every axis, default
settings) on a batch of `--batch` samples: the paper's size is d_model 256,
81 tokens, batch 8 (20,736 state dims).

    python benchmarks/probe_speed.py                      # d_model 64 and 256
    python benchmarks/probe_speed.py --d-models 64 --device cuda
    python benchmarks/probe_speed.py --full-probe --d-models 256 --batch 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch

from fpstab.architectures import CoreConfig, build_core
from fpstab.fixedpoint import dense_jacobian, implicit_input_jacobian, iterate, probe, smallest_singular_value, spectral_radius


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def bench(d_model: int, args: argparse.Namespace) -> list[dict]:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    cfg = CoreConfig(arch=args.arch, norm=args.norm, d_model=d_model, n_heads=args.heads, in_dim=10, out_dim=9, grid=(9, 9))
    core = build_core(cfg).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(args.seed)
    digits = torch.randint(0, 10, (1, 81), generator=gen)
    x = torch.nn.functional.one_hot(digits, 10).to(device=device, dtype=dtype)
    with torch.no_grad():
        e = core.encode(x)
        h = iterate(lambda s: core.step(s, e), core.init_state(e), args.iters).final
    f = lambda s: core.step(s, e)  # noqa: E731
    n = h[0].numel()
    u = torch.randn(e.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    u = u / u.norm()

    rho_est, t_rho = timed(lambda: spectral_radius(f, h, steps=args.krylov), device)
    smin_est, t_sv = timed(lambda: smallest_singular_value(f, h), device)
    ift_est, t_ift = timed(lambda: implicit_input_jacobian(core.step, h, e, u), device)
    w_mf = ift_est.value
    rows = [dict(d_model=d_model, N=n, quantity=q, matrix_free=est.value.norm().item(), mf_s=t,
                 converged=bool(est.converged.all()), products=est.products)
            for q, est, t in (("rho(J_h)", rho_est, t_rho), ("sigma_min(I-J_h)", smin_est, t_sv),
                              ("IFT |dh*/de u|", ift_est, t_ift))]
    if n > args.dense_max_n:
        for r in rows:
            r.update(dense=None, dense_s=None, note=f"dense skipped: N={n} > --dense-max-n {args.dense_max_n}")
        return rows
    jac, t_jac = timed(lambda: dense_jacobian(f, h, chunk_size=args.chunk)[0], device)
    eye = torch.eye(n, dtype=dtype, device=device)
    nan = torch.tensor(float("nan"))
    # eigvals/svdvals are O(N^3) with large constants: --dense-only ift skips them at big N.
    rho_d, t_eig = timed(lambda: torch.linalg.eigvals(jac).abs().max(), device) if "rho" in args.dense_only else (nan, None)
    smin_d, t_svd = timed(lambda: torch.linalg.svdvals(eye - jac)[-1], device) if "sigma" in args.dense_only else (nan, None)

    def dense_ift() -> torch.Tensor:
        je_u = torch.func.jvp(lambda ee: core.step(h, ee), (e,), (u,))[1]
        return torch.linalg.solve(eye - jac, je_u.reshape(n))

    from fpstab.fixedpoint.linalg import _forward_ad

    with _forward_ad():
        w_d, t_solve = timed(dense_ift, device)
    rows.insert(0, dict(d_model=d_model, N=n, quantity="dense Jacobian (jacrev)", matrix_free=None, mf_s=None, dense=None, dense_s=t_jac))
    for r, val, t in zip(rows[1:], (rho_d.item(), smin_d.item(), w_d.norm().item()), (t_eig, t_svd, t_solve)):
        if t is None:
            r.update(dense=None, dense_s=None, note="dense skipped (--dense-only)")
        else:
            r.update(dense=val, dense_s=t_jac + t)
    rows[-1]["direction_rel_err"] = ((w_mf.reshape(n) - w_d).norm() / w_d.norm()).item()
    return rows


def full_probe(d_model: int, args: argparse.Namespace) -> list[dict]:
    """Wall time of every probe axis with default settings on --batch sudoku-sized inputs."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    cfg = CoreConfig(arch=args.arch, norm=args.norm, d_model=d_model, n_heads=args.heads, in_dim=10, out_dim=9, grid=(9, 9))
    core = build_core(cfg).to(device=device, dtype=dtype).eval()
    digits = torch.randint(0, 10, (args.batch, 81), generator=torch.Generator().manual_seed(args.seed))
    x = torch.nn.functional.one_hot(digits, 10).to(device=device, dtype=dtype)
    report, total = timed(lambda: probe(core, x, targets=(digits % 9).to(device)), device)
    n = 81 * d_model
    rows = [dict(d_model=d_model, N=n, quantity=f"axis {name}: {axis.verdict.status}", matrix_free=None, mf_s=axis.seconds,
                 note="; ".join(f"{k} {sum(v['converged'])}/{len(v['converged'])} conv, {v['products']} products"
                                for k, v in axis.estimates.items()))
            for name, axis in report.axes.items()]
    rows.append(dict(d_model=d_model, N=n, quantity=f"whole probe, batch {args.batch}", matrix_free=None, mf_s=total))
    return rows


def fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-models", type=int, nargs="+", default=[64, 256])
    p.add_argument("--arch", default="internal_recall")
    p.add_argument("--norm", default="outer")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--iters", type=int, default=100, help="iterations before probing")
    p.add_argument("--krylov", type=int, default=40, help="Arnoldi steps per cycle")
    p.add_argument("--full-probe", action="store_true", help="time the whole probe instead (see above)")
    p.add_argument("--batch", type=int, default=8, help="samples of --full-probe")
    p.add_argument("--chunk", type=int, default=256, help="VJPs per vmap chunk of the dense Jacobian")
    p.add_argument("--dense-max-n", type=int, default=25_000, help="skip the dense path above this state size")
    p.add_argument("--dense-only", nargs="+", choices=["rho", "sigma", "ift"], default=["rho", "sigma", "ift"],
                   help="dense reference for these quantities only (the Jacobian is built whenever one is asked)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    print(f"device {args.device}, {args.dtype}, {args.arch}/{args.norm}, 81 tokens, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    head = f"{'d':>4} {'N':>6}  {'quantity':<24} {'matrix-free':>12} {'dense':>12} {'rel diff':>9} {'mf s':>8} {'dense s':>8} {'dense/mf':>8}"
    print(head)
    print("-" * len(head), flush=True)
    rows = []
    for d in args.d_models:  # print each width's rows as soon as they are measured
        measured = full_probe(d, args) if args.full_probe else bench(d, args)
        print_rows(measured)
        rows += measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(dict(args=vars(args), rows=rows, torch=torch.__version__), fh, indent=2)


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        diff = rel(r["matrix_free"], r["dense"]) if r.get("dense") is not None and r["matrix_free"] is not None else None
        ratio = r["dense_s"] / r["mf_s"] if r.get("dense_s") and r.get("mf_s") else None
        print(f"{r['d_model']:>4} {r['N']:>6}  {r['quantity']:<24} {fmt(r['matrix_free'], '12.6g')} {fmt(r.get('dense'), '12.6g')} "
              f"{fmt(diff, '9.2e')} {fmt(r['mf_s'], '8.2f')} {fmt(r.get('dense_s'), '8.2f')} {fmt(ratio, '8.1f')}"
              + (f"  converged {r['converged']}, {r['products']} products" if "products" in r else "")
              + (f"  {r['note']}" if r.get("note") else "")
              + (f"  direction rel. err {r['direction_rel_err']:.1e}" if "direction_rel_err" in r else ""), flush=True)


if __name__ == "__main__":
    main()
