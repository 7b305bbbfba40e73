"""Axis 1, reachability: does the model's own loop reach a fixed point, and is it attracting?

T iterations from h0: relative residual r_t = ||F(h_t) - h_t|| / ||F(h_t)||,
converged if r_T < tol, steps to tol, tail contraction rate; the solver's
polish of h_T; rho(dF/dh) at the point (Krylov-Schur on JVPs) and each
sample's fixed-point status.
"""

from __future__ import annotations

import statistics

import torch

from fpstab.fixedpoint.probes.context import ProbeContext, tail_rate
from fpstab.fixedpoint.probes.records import AxisReport, Figure, Verdict, estimate_entry, per_sample, unconverged_verdict


def reachability(ctx: ProbeContext) -> AxisReport:
    s, loop, fp, rho = ctx.settings, ctx.loop, ctx.fixed_point, ctx.spectral_radius
    tail = tail_rate(loop.residuals, s.tail, floor=100 * torch.finfo(ctx.dtype).eps)
    figures = {
        "loop_converged": per_sample(f"loop converged (r_T < {s.tol:g}, T={s.iters})", loop.converged(s.tol)),
        "final_residual": per_sample("final residual r_T = |F(h)-h|/|F(h)|", loop.final_residual),
        "steps_to_tol": per_sample("steps to tol (-1: never)", loop.steps_to(s.tol)),
        "tail_rate": per_sample(f"tail contraction rate r_(t+1)/r_t (last {s.tail})", tail),
        "residual_trace": Figure("median r_t over samples, t = 1..T",
                                 value=loop.residuals.nan_to_num(float("inf")).median(dim=0).values.cpu().tolist()),
        "solver_converged": per_sample(f"{s.solver} polish of h_T converged", fp.polish.converged),
        "polish_distance": per_sample("|h* - h_T| / |h_T|", fp.distance),
        "spectral_radius": per_sample("spectral radius rho(dF/dh) at h*", rho.value),
        "fixed_point_status": per_sample("fixed point the loop reaches", ctx.fixed_point_status),
        "nonfinite": per_sample("non-finite (diverged)", loop.nonfinite),
    }
    estimates = {
        "spectral_radius": estimate_entry("rho(dF/dh) at h*", rho),
        "polish": estimate_entry(f"{s.solver} from h_T", fp.polish.estimate()),
    }
    return AxisReport("reachability", "Reachability", _verdict(ctx), figures, estimates)


def _verdict(ctx: ProbeContext) -> Verdict:
    s, t, loop, rho = ctx.settings, ctx.thresholds, ctx.loop, ctx.spectral_radius
    nonfinite = int(loop.nonfinite.sum())
    if nonfinite:
        return Verdict("fail", f"{nonfinite} sample(s) became non-finite (diverged)")
    share = float(loop.converged(s.tol).float().mean())
    converged_text = f"{share:.0%} of loops converged to r<{s.tol:g} in {s.iters} iters"
    if share < 0.5:
        return Verdict("fail", f"only {converged_text}", remedies=("--iters",))
    undetermined = unconverged_verdict([("rho(dF/dh)", rho, ("--krylov-steps", "--krylov-restarts"))])
    if undetermined is not None:
        return undetermined
    values = rho.value.double().cpu().tolist()
    median, top = statistics.median(values), max(values)
    if median > 1:
        return Verdict("fail", f"{converged_text}; median rho(J_h)={median:.4f} > 1: the points are repelling")
    upper = float((rho.value.double().cpu() * (1 + rho.error.cpu())).max())
    if top < 1 <= upper:
        return Verdict("undetermined", f"max rho(J_h)={top:.6f} is within its error of 1", ("rho(dF/dh)",),
                       ("--krylov-steps", "--krylov-restarts"))
    if share >= t.converged_share and top < 1:
        return Verdict("pass", f"{converged_text}, max rho(J_h)={top:.4f} < 1")
    return Verdict("undetermined", f"{converged_text} (pass needs {t.converged_share:.0%}), max rho(J_h)={top:.4f}",
                   remedies=("--iters",) if share < t.converged_share else ())
