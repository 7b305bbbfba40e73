"""Axis 2, input-dependence: does the fixed point the loop reaches move with the input, smoothly?

At the loop's fixed point h*, for a random unit direction u in the space of
the input encoding e (x enters F only through e = encode(x)): ||J_e u||; the
implicit-function derivative dh*/de u = (I - J_h)^-1 J_e u (GMRES on JVPs)
with an error bound |r| / (sigma_min |w|) from the solve's residual r; the
change it induces in the readout; the central finite difference from
re-solves at e +- eps u (the loop warm-started at h*), used only where both re-solves
converged and accurate enough; the number of distinct fixed points and readouts in the batch.
A `no_recall` core is an autonomous map, J_e = 0 by construction: the report
says so and estimates nothing. Where too few samples reach an attracting fixed
point the verdict says so, and the solves (IFT, finite differences) are left
out unless `always_solve` asks for them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.krylov import gmres
from fpstab.fixedpoint.linalg import _forward_ad, jvp_operator
from fpstab.fixedpoint.probes.context import ProbeContext
from fpstab.fixedpoint.probes.records import (
    AxisReport,
    Figure,
    Verdict,
    estimate_entry,
    per_sample,
    skipped_solves,
    unconverged_verdict,
)
from fpstab.fixedpoint.solvers import solve

AUTONOMOUS_NOTE = ("autonomous map: J_e = dF/de = 0 by construction (no recall); x selects only the start h0 and "
                   "so the basin, never the fixed point's position")
INJECTION_NOTE = "J_e != 0: the fixed point moves with the input (IFT: dh*/de = (I - J_h)^-1 J_e)"
# What the axis leaves out when the fixed-point gate decides its verdict.
INPUT_SOLVES = ("IFT dh*/de u and its error bound", "readout gain", "finite-difference cross-check")


def implicit_input_jacobian(
    step: Callable[[Tensor, Tensor], Tensor],
    h_star: Tensor,
    e: Tensor,
    u: Tensor,
    steps: int = 100,
    restarts: int = 10,
    tol: float | None = None,
) -> Estimate:
    """dh*/de applied to u, by the implicit function theorem, per sample.

    Solves (I - J_h) w = J_e u matrix-free (GMRES on JVPs), J_h = dF/dh and
    J_e = dF/de at (h*, e), F(h) = step(h, e).

    Args:
        step: (h (B, ...), e (B, ...)) -> h (B, ...).
        h_star: (B, ...) fixed point of step(., e).
        e: (B, ...) input encoding.
        u: direction, same shape as e.
        steps, restarts, tol: GMRES settings (tol default: the dtype's `default_tol`).
    Returns:
        GMRES's Estimate; value w has h_star's shape.
    """
    if u.shape != e.shape:
        raise ValueError(f"direction u has shape {tuple(u.shape)}; it must match e's {tuple(e.shape)}")
    h_star, e = h_star.detach(), e.detach()
    with _forward_ad():
        _, b = torch.func.jvp(lambda e_: step(h_star, e_), (e,), (u.to(e.dtype),))
    jv = jvp_operator(lambda h: step(h, e), h_star)
    est = gmres(lambda v: v - jv(v), b.reshape(b.shape[0], -1), steps=steps, restarts=restarts, tol=tol)
    return replace(est, value=est.value.reshape(h_star.shape))


def _norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def _count_distinct(states: Tensor, delta: float) -> int:
    """Greedy clustering: states (B, N) within relative distance delta share a cluster."""
    reps: list[Tensor] = []
    for s in states:
        if not bool(torch.isfinite(s).all()):
            continue
        if not any(bool((s - r).norm() <= delta * r.norm().clamp_min(1e-30)) for r in reps):
            reps.append(s)
    return len(reps)


def input_dependence(ctx: ProbeContext) -> AxisReport:
    h_star = ctx.fixed_point.state
    u = torch.randn(ctx.e.shape, generator=ctx.generator(3), dtype=torch.float64).to(ctx.e)
    u = u / _norm(u).view(-1, *[1] * (u.dim() - 1))
    with _forward_ad():
        _, je_u = torch.func.jvp(lambda e_: ctx.core.step(h_star, e_), (ctx.e,), (u,))
    je_norm = _norm(je_u)
    with torch.no_grad():
        predictions = ctx.core.readout(h_star).argmax(-1).flatten(1)
    figures = {
        "je_norm": per_sample("|J_e u|, u unit in e-space", je_norm),
        "distinct_fixed_points": Figure(f"distinct fixed points (rel. dist > {ctx.settings.diversity_delta:g})",
                                        value=_count_distinct(h_star.flatten(1), ctx.settings.diversity_delta)),
        "distinct_readouts": Figure("distinct readouts (argmax)", value=len({tuple(p.tolist()) for p in predictions})),
        "samples": Figure("samples", value=ctx.batch),
    }
    if getattr(ctx.core, "has_input_injection", None) is False or bool((je_norm == 0).all()):
        verdict = Verdict("fail", "autonomous map: J_e = 0, no input-dependence through the map")
        return AxisReport("input_dependence", "Input-dependence", verdict, figures, note=AUTONOMOUS_NOTE)
    if ctx.skips_solves:
        figures["skipped"] = skipped_solves(INPUT_SOLVES)
        return AxisReport("input_dependence", "Input-dependence", ctx.gate, figures, note=INJECTION_NOTE)
    return _with_injection(ctx, u, figures)


def _with_injection(ctx: ProbeContext, u: Tensor, figures: dict[str, Figure]) -> AxisReport:
    s, h_star = ctx.settings, ctx.fixed_point.state
    ift = implicit_input_jacobian(ctx.core.step, h_star, ctx.e, u, steps=s.gmres_steps, restarts=s.gmres_restarts)
    w = ift.value
    bound = ift_error_bound(ift, ctx.sigma_min)
    with _forward_ad():
        _, dread = torch.func.jvp(ctx.core.readout, (h_star,), (w,))
    fd, fd_bound, fd_ok, fd_solve = _finite_difference(ctx, u)
    figures.update({
        "ift_gain": per_sample("IFT gain |dh*/de u|", _norm(w)),
        "ift_error_bound": per_sample("IFT relative error bound |r|/(sigma_min |w|)", bound),
        "readout_gain": per_sample("readout gain |d readout/de u|", _norm(dread)),
        "fd_error_bound": per_sample("finite-difference error bound (|r+|+|r-|)/(2 eps sigma_min |fd|)", fd_bound),
        "fd_usable": per_sample(f"finite difference usable (re-solves converged, bound <= {FD_ACCURACY})", fd_ok),
        "fd_cosine": per_sample(f"IFT vs finite diff. cosine (eps {_fd_eps(ctx):g})", _cosine(w, fd)),
        "fd_rel_error": per_sample("IFT vs finite diff. relative error", _norm(w - fd) / _norm(fd).clamp_min(1e-30)),
    })
    estimates = {"ift_solve": estimate_entry("GMRES for (I - J_h) w = J_e u", ift),
                 "fd_solve": estimate_entry("loop re-solves at e +- eps u (from h*)", fd_solve)}
    verdict = _verdict(ctx, ift, bound, figures, fd_ok)
    return AxisReport("input_dependence", "Input-dependence", verdict, figures, estimates, INJECTION_NOTE)


def ift_error_bound(ift: Estimate, sigma_min: Estimate) -> Tensor:
    """(B,) |w - w_true| / |w| <= |r| / (sigma_min |w|), r the solve's residual;
    inf where sigma_min did not converge."""
    residual = ift.error.cpu().double() * ift.details["rhs_norm"].cpu().double()
    bound = residual / (sigma_min.value.cpu().double() * _norm(ift.value).cpu().double()).clamp_min(1e-300)
    return torch.where(sigma_min.converged.cpu(), bound, torch.full_like(bound, float("inf")))


def _fd_eps(ctx: ProbeContext) -> float:
    if ctx.settings.fd_eps is not None:
        return ctx.settings.fd_eps
    return 1e-4 if ctx.dtype == torch.float64 else 1e-2


# Relative error bound a finite difference needs to cross-check the IFT: an
# error of 0.1 moves a cosine of 1 by at most 0.005, well inside fd_cosine.
FD_ACCURACY = 0.1


def _finite_difference(ctx: ProbeContext, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Estimate]:
    """Central difference (h*(e + eps u) - h*(e - eps u)) / 2 eps, both sides
    in one batch of the model's own loop warm-started at h* (at most `iters`
    steps). The loop, not Anderson: torchdeq's Anderson regularizes its
    mixing by an absolute lam and stalls near residual 1e-6 even in float64,
    which would pass for a disagreement of the map with the IFT.

    Returns (difference, its relative error bound (B,), usable (B,), the
    solve). A re-solve ending with residual r is off its fixed point by at
    most |r| / sigma_min(I - J) (to first order), so the difference is off by
    (|r+| + |r-|) / (2 eps sigma_min); usable where both solves converged
    and that bound is <= FD_ACCURACY.
    """
    s, eps, h_star = ctx.settings, _fd_eps(ctx), ctx.fixed_point.state
    e_pm = torch.cat([ctx.e + eps * u, ctx.e - eps * u])
    fd_tol = 1e-12 if ctx.dtype == torch.float64 else 1e-6
    shifted = solve(lambda h: ctx.core.step(h, e_pm), torch.cat([h_star, h_star]), solver="iterate",
                    max_iter=s.iters, tol=fd_tol)
    plus, minus = shifted.state.chunk(2)
    fd = (plus - minus) / (2 * eps)
    residual = (shifted.best_residual.double().cpu() * _norm(shifted.state).double().cpu()).chunk(2)
    smin = ctx.sigma_min.value.double().cpu()
    bound = (residual[0] + residual[1]) / (2 * eps * smin * _norm(fd).double().cpu()).clamp_min(1e-300)
    bound = torch.where(ctx.sigma_min.converged.cpu(), bound, torch.full_like(bound, float("inf")))
    converged = torch.stack(shifted.converged.cpu().chunk(2)).all(dim=0)
    return fd, bound, converged & (bound <= FD_ACCURACY), shifted.estimate()


def _verdict(ctx: ProbeContext, ift: Estimate, bound: Tensor, figures: dict[str, Figure], fd_ok: Tensor) -> Verdict:
    t = ctx.thresholds
    if ctx.gate is not None:
        return ctx.gate
    usable = ctx.attracting
    solved = Estimate.checked(ift.value, torch.minimum(ift.error.cpu().double(), bound), t.ift_error,
                              ift.products, ift.method, "relative residual, or error bound where smaller")
    undetermined = unconverged_verdict(
        [("the IFT solve dh*/de u", solved, ("--gmres-steps", "--gmres-restarts", "--dtype float64"))], usable)
    if undetermined is not None:
        return undetermined
    gains = [g for g, ok in zip(figures["ift_gain"].per_sample, usable.tolist()) if ok]
    med_gain = statistics.median(gains)
    if med_gain < t.min_gain:
        return Verdict("fail", f"median |dh*/de u|={med_gain:.3g} < {t.min_gain:g}: the fixed point ignores the input")
    checked = (usable & fd_ok.cpu()).tolist()
    if sum(checked) < t.converged_share * len(checked):
        return Verdict("undetermined", f"the finite difference is accurate enough (re-solves converged, error "
                       f"bound <= {FD_ACCURACY}) for only {sum(checked)}/{len(checked)} samples: the cross-check is "
                       "missing", ("finite-difference re-solve",), ("--iters", "--fd-eps", "--dtype float64"))
    cosines = [c for c, ok in zip(figures["fd_cosine"].per_sample, checked) if ok]
    med_cos = statistics.median(cosines)
    if med_cos >= t.fd_cosine:
        return Verdict("pass", f"median |dh*/de u|={med_gain:.3g} >= {t.min_gain:g}, IFT vs finite differences "
                       f"cos={med_cos:.4f} >= {t.fd_cosine}")
    return Verdict("undetermined", f"IFT and finite differences disagree (median cos={med_cos:.3f} < {t.fd_cosine}) "
                   "although every solve converged: not linear at the finite-difference scale; try a smaller --fd-eps")
