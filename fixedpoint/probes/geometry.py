"""Axis 3, geometry: is backpropagation through the loop and its fixed point well conditioned?

At the loop's fixed point h*: sigma_min and sigma_max of I - dF/dh (inverse
Golub-Kahan through GMRES, and Golub-Kahan), their ratio, ||dF/dh||_2. Along
the loop from h_1 = F(h0) (on the state manifold: h0 = e need not be, e.g.
off the RMS-1 sphere of an outer-norm core): ||dL/dh_t|| through k unrolled
steps, its per-step growth over the whole run and over the worst window.
The implicit (IFT at h*) parameter gradient against what training computes:
k unrolled steps from the detached h*, on the step's own parameters only
(readout and encoder gradients agree trivially). Weight spectra when the
core exposes its matrices. Where too few samples reach an attracting fixed
point the verdict says so, and sigma_min and the implicit gradient (GMRES
solves) are left out unless `always_solve` asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.grad import implicit_gradient
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


def gradient_growth(ctx: ProbeContext) -> tuple[Tensor, Tensor, Tensor]:
    """||dL/dh_t|| (B, k+1) for t = 1..k+1 of the loop from h_1, L the loss at
    readout(h_{k+1}); the per-step growth over the whole run,
    (||g_1|| / ||g_{k+1}||)^(1/k) (B,); and the worst per-step growth over
    the last m >= w steps back from the loss, max_m (||g_{k+1-m}|| /
    ||g_{k+1}||)^(1/m) (B,). Growth compounds from the loss backwards, so
    windows end at the loss: a wiggle deep in the trace, where the gradient
    has already shrunk by orders of magnitude, is no explosion."""
    k, w = ctx.settings.grad_steps, ctx.settings.growth_window
    with torch.no_grad():
        h1 = ctx.step(ctx.h0)
    states = [h1.detach().requires_grad_()]
    with torch.enable_grad():
        for _ in range(k):
            states.append(ctx.step(states[-1]))
        grads = torch.autograd.grad(ctx.loss(ctx.core.readout(states[-1])), states, allow_unused=True)
    zero = torch.zeros(ctx.batch, device=h1.device)
    norms = torch.stack([g.flatten(1).norm(dim=1).float() if g is not None else zero for g in grads], dim=1)
    norms = norms.double().cpu().clamp_min(1e-300)
    whole = (norms[:, 0] / norms[:, -1]) ** (1.0 / k)
    back = torch.arange(k, 0, -1, dtype=torch.float64)  # m = k+1-t for t = 1..k
    windows = (norms[:, :-1] / norms[:, -1:]) ** (1.0 / back)
    return norms, whole, windows[:, back >= w].max(dim=1).values


def _step_parameters(ctx: ProbeContext) -> list[torch.nn.Parameter]:
    """The parameters the step itself uses (those F(h, e) at fixed e sends gradient to)."""
    params = [p for p in getattr(ctx.core, "parameters", lambda: [])() if p.requires_grad]
    if not params:
        return []
    with torch.enable_grad():
        out = ctx.step(ctx.fixed_point.state.detach())
        used = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    return [p for p, g in zip(params, used) if g is not None]


def implicit_vs_unrolled(ctx: ProbeContext) -> tuple[float | None, float | None, Estimate | None]:
    """(cosine, relative difference) of the implicit and k-step unrolled
    gradients of the loss w.r.t. the step's parameters, and the implicit
    backward solve's Estimate; Nones where there is nothing to compare."""
    params = _step_parameters(ctx)
    h_star = ctx.fixed_point.state.detach()
    if not params or not bool(torch.isfinite(h_star).all()):
        return None, None, None
    solves: list[Estimate] = []
    s = ctx.settings
    with torch.enable_grad():
        z = implicit_gradient(ctx.step, h_star, steps=s.gmres_steps, restarts=s.gmres_restarts, on_solve=solves.append)
        g_imp = torch.autograd.grad(ctx.loss(ctx.core.readout(z)), params, allow_unused=True)
        h = h_star
        for _ in range(s.grad_steps):
            h = ctx.step(h)
        g_unr = torch.autograd.grad(ctx.loss(ctx.core.readout(h)), params, allow_unused=True)

    def flat(gs: tuple[Tensor | None, ...]) -> Tensor:
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params)]).double()

    a, b = flat(g_imp), flat(g_unr)
    cos = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))
    rel = float((a - b).norm() / b.norm().clamp_min(1e-300))
    return cos, rel, solves[0] if solves else None


def weight_spectra(core: object) -> dict[str, float]:
    """Weight-level diagnostics of Labovich (2026) when the core exposes its matrices.

    A figure of a matrix holding NaN or inf (the weights of a diverged run) is
    NaN: LAPACK refuses such matrices, and the probe reports, not raises.
    """
    get = getattr(core, "weight_matrices", None)
    if get is None:
        return {}
    w = {k: v.detach().double().cpu() for k, v in get().items()}
    bad = {k for k, m in w.items() if not bool(torch.isfinite(m).all())}

    def two(name: str) -> float:
        return float("nan") if name in bad else torch.linalg.matrix_norm(w[name], 2).item()

    out: dict[str, float] = {}
    if "W_x" in w:
        square = w["W_x"].shape[0] == w["W_x"].shape[1]
        finite = "W_x" not in bad
        out["rho(W_x)"] = torch.linalg.eigvals(w["W_x"]).abs().max().item() if square and finite else float("nan")
        out["||W_x||_2"] = two("W_x")
        if "W_e" in w:
            out["||W_x||_2/||W_e||_2"] = out["||W_x||_2"] / max(two("W_e"), 1e-300)
        sv = torch.linalg.svdvals(w["W_x"]) if finite else torch.full((0,), float("nan"))
        if sv.numel() >= 11:
            out["sigma_1/sigma_11(W_x)"] = (sv[0] / sv[10].clamp_min(1e-300)).item()
    if "W_Q" in w and "W_K" in w:
        out["||W_Q||_2*||W_K||_2"] = two("W_Q") * two("W_K")
    if "W_O" in w:
        out["||W_O||_2"] = two("W_O")
    if "W_1" in w and "W_2" in w:
        out["||W_1||_2*||W_2||_2"] = two("W_1") * two("W_2")
    return out


# What the geometry axis leaves out when the fixed-point gate decides its verdict.
GEOMETRY_SOLVES = ("sigma_min(I - dF/dh)", "cond(I - dF/dh)", "implicit vs unrolled gradient")


def geometry(ctx: ProbeContext) -> AxisReport:
    s = ctx.settings
    smax, jnorm = ctx.sigma_max, ctx.jacobian_norm
    norms, whole, worst = gradient_growth(ctx)
    figures = {
        "sigma_max": per_sample("sigma_max(I - dF/dh)", smax.value),
        "jacobian_norm": per_sample("|dF/dh|_2", jnorm.value),
        "grad_norm_trace": Figure(f"median |dL/dh_t|, t = 1..{s.grad_steps + 1}",
                                  value=norms.median(dim=0).values.tolist()),
        "grad_growth": per_sample(f"grad growth per step from h_1 (k={s.grad_steps})", whole),
        "grad_growth_worst": per_sample(f"worst growth per step over the last m >= {s.growth_window} steps", worst),
        "weights": Figure("weight spectra", value=weight_spectra(ctx.core)),
    }
    estimates = {
        "sigma_max": estimate_entry("sigma_max(I - dF/dh) at h*", smax),
        "jacobian_norm": estimate_entry("|dF/dh|_2 at h*", jnorm),
    }
    if ctx.skips_solves:
        figures["skipped"] = skipped_solves(GEOMETRY_SOLVES)
        return AxisReport("geometry", "Geometry (backprop)", ctx.gate, figures, estimates)
    smin = ctx.sigma_min
    cos, rel, backward = implicit_vs_unrolled(ctx)
    figures = {
        "sigma_min": per_sample("sigma_min(I - dF/dh)", smin.value),
        "cond": per_sample("cond(I - dF/dh)", smax.value.double().cpu() / smin.value.double().cpu().clamp_min(1e-300)),
        **figures,
        "grad_cosine": Figure(f"implicit vs {s.grad_steps}-step unrolled grad cosine (step params)", value=cos),
        "grad_rel_diff": Figure("implicit vs unrolled grad relative difference", value=rel),
    }
    estimates = {"sigma_min": estimate_entry("sigma_min(I - dF/dh) at h*", smin), **estimates}
    if backward is not None:
        estimates["implicit_backward"] = estimate_entry("GMRES for (I - J^T) y = dL/dz", backward)
    verdict = _verdict(ctx, worst, cos, backward)
    return AxisReport("geometry", "Geometry (backprop)", verdict, figures, estimates)


def _verdict(ctx: ProbeContext, worst: Tensor, cos: float | None, backward: Estimate | None) -> Verdict:
    t = ctx.thresholds
    if ctx.gate is not None:
        return ctx.gate
    usable = ctx.attracting
    smin = ctx.sigma_min
    undetermined = unconverged_verdict(
        [("sigma_min(I - J_h)", smin, ("--inverse-steps", "--gmres-steps", "--gmres-restarts"))], usable)
    if undetermined is not None:
        return undetermined
    low = float(smin.value.double().cpu()[usable].min())
    grow = float(worst.max())
    figures = f"min sigma_min(I-J)={low:.3g} (needs >={t.sigma_min:g}), worst grad growth/step={grow:.3f} " \
              f"(needs <={t.grad_growth})"
    if low < t.sigma_min or grow > t.grad_growth:
        return Verdict("fail", figures)
    if backward is not None:
        undetermined = unconverged_verdict([("the implicit backward solve", backward,
                                             ("--gmres-steps", "--gmres-restarts"))], usable)
        if undetermined is not None:
            return undetermined
    if cos is not None and cos < t.grad_cosine:
        return Verdict("undetermined", f"{figures}; the {ctx.settings.grad_steps}-step unrolled gradient (as "
                       f"training computes it) disagrees with the implicit one: cos={cos:.3f} < {t.grad_cosine}")
    return Verdict("pass", figures + (f", implicit~unrolled cos={cos:.3f}" if cos is not None else ""))
