"""Stability probes on three axes: reachability, input-dependence, geometry.

F(h) = step(h, e) at a fixed input encoding e. A "core" is any object with
`encode(x) -> e`, `init_state(e) -> h0`, `step(h, e) -> h` and
`readout(h) -> logits`; optional `looped`, `has_input_injection` and
`weight_matrices()` refine the report. Every figure is per sample; the report
keeps the per-sample values and summarises them (median, min, max).

Directions for input-dependence live in the space of the input encoding e
(the map's own input); x enters F only through e = encode(x).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from fpstab.fixedpoint.grad import implicit_gradient
from fpstab.fixedpoint.linalg import _forward_ad, gmres, jvp_operator, operator_norm, singular_values, spectral_radius
from fpstab.fixedpoint.solve import SOLVERS, iterate, solve

SCHEMA_VERSION = "fpstab.probe/1"
STARTS: tuple[str, ...] = ("default", "zeros", "random", "other")


class Core(Protocol):
    def encode(self, x: Tensor) -> Tensor: ...
    def init_state(self, e: Tensor) -> Tensor: ...
    def step(self, h: Tensor, e: Tensor) -> Tensor: ...
    def readout(self, h: Tensor) -> Tensor: ...


def implicit_input_jacobian(
    step: Callable[[Tensor, Tensor], Tensor],
    h_star: Tensor,
    e: Tensor,
    u: Tensor,
    steps: int = 60,
    restarts: int = 5,
    tol: float | None = None,
) -> Tensor:
    """dh*/de applied to u, by the implicit function theorem, per sample.

    Solves (I - J_h) w = J_e u matrix-free (GMRES on JVPs), J_h = dF/dh and
    J_e = dF/de at (h*, e), F(h) = step(h, e).

    Args:
        step: (h (B, ...), e (B, ...)) -> h (B, ...).
        h_star: (B, ...) fixed point of step(., e).
        e: (B, ...) input encoding.
        u: direction, same shape as e.
        steps, restarts: GMRES Krylov dimension and cycles.
        tol: GMRES relative residual (default 1e-10 in float64, 1e-5 below).
    Returns:
        w, same shape as h_star.
    """
    if u.shape != e.shape:
        raise ValueError(f"direction u has shape {tuple(u.shape)}; it must match e's {tuple(e.shape)}")
    h_star, e = h_star.detach(), e.detach()
    if tol is None:
        tol = 1e-10 if h_star.dtype == torch.float64 else 1e-5
    with _forward_ad():
        _, b = torch.func.jvp(lambda e_: step(h_star, e_), (e,), (u.to(e.dtype),))
    jv = jvp_operator(lambda h: step(h, e), h_star)
    flat = b.reshape(b.shape[0], -1)
    w, _ = gmres(lambda v: v - jv(v), flat, steps=steps, restarts=restarts, tol=tol)
    return w.reshape(h_star.shape)


@dataclass(frozen=True)
class Thresholds:
    """The numbers the verdicts are read against (stated in every report)."""

    converged_share: float = 0.9  # reachability passes at this share of samples converged
    path_distance: float = 1e-2  # largest relative distance between states from different starts
    fd_cosine: float = 0.99  # IFT vs finite differences must agree this well
    min_gain: float = 1e-3  # ||dh*/de u|| below this is no input-dependence
    sigma_min: float = 1e-2  # sigma_min(I - J) below this is ill-conditioned
    grad_growth: float = 1.05  # per-step backprop growth factor above this explodes
    grad_cosine: float = 0.9  # implicit vs unrolled parameter-gradient cosine


@dataclass(frozen=True)
class Verdict:
    status: str  # "pass" | "fail" | "undetermined"
    reason: str


@dataclass(frozen=True)
class Reachability:
    iters: int
    tol: float
    final_residual: list[float]  # r_T per sample, r = ||F(h)-h|| / ||F(h)||
    converged: list[bool]  # r_T < tol
    steps_to_tol: list[int]  # first t with r_t < tol, -1 if never
    tail_rate: list[float]  # geometric mean of r_{t+1}/r_t over the last `tail` steps
    residual_trace: list[float]  # median over samples of r_t, t = 1..T
    solver: str
    solver_converged: list[bool]  # the solver found a fixed point from h_T
    solver_nfe: int
    spectral_radius: list[float]  # rho(dF/dh) at h*
    path_starts: list[str]
    path_distance: list[float]  # per sample, max over start pairs of ||h_a - h_b|| / ||h_a||
    path_cosine: list[float]  # per sample, min over start pairs of cos(h_a, h_b)
    nonfinite: list[bool]
    verdict: Verdict


@dataclass(frozen=True)
class InputDependence:
    autonomous: bool
    note: str
    je_norm: list[float]  # ||J_e u|| for a unit direction u in e-space
    ift_gain: list[float]  # ||dh*/de u||
    readout_gain: list[float]  # ||d readout(h*) / de u||
    fd_cosine: list[float]  # cos(IFT estimate, central finite difference)
    fd_rel_error: list[float]
    fd_eps: float
    distinct_fixed_points: int
    distinct_readouts: int
    samples: int
    diversity_delta: float
    verdict: Verdict


@dataclass(frozen=True)
class Geometry:
    sigma_min: list[float]  # of I - dF/dh at h*
    sigma_max: list[float]
    cond: list[float]
    jacobian_norm: list[float]  # ||dF/dh||_2
    grad_steps: int
    grad_norm_trace: list[float]  # median over samples of ||dL/dh_t||, t = 0..k
    grad_growth: list[float]  # per sample (||dL/dh_0|| / ||dL/dh_k||)^(1/k)
    grad_cosine: float | None  # implicit vs unrolled parameter gradients
    grad_rel_diff: float | None
    weights: dict[str, float]
    verdict: Verdict


@dataclass(frozen=True)
class ProbeReport:
    schema: str
    map: dict[str, Any]  # what was probed: arch, norm, task, ...
    settings: dict[str, Any]
    thresholds: Thresholds
    reachability: Reachability
    input_dependence: InputDependence
    geometry: Geometry
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats become null."""
        return _finite(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def _list(t: Tensor) -> list:
    return t.detach().cpu().tolist()


def _median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return float("nan")
    return finite[len(finite) // 2] if len(finite) % 2 else 0.5 * (finite[len(finite) // 2 - 1] + finite[len(finite) // 2])


def _start_state(core: Core, e: Tensor, kind: str, seed: int, h_other: Tensor | None) -> Tensor:
    if kind == "default":
        return core.init_state(e)
    if kind == "zeros":
        return torch.zeros_like(e)
    if kind == "random":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(e.shape, generator=gen, dtype=torch.float64).to(e)
    if kind == "other":  # the fixed point reached by the next input in the batch
        assert h_other is not None
        return h_other.roll(1, dims=0)
    raise ValueError(f"start {kind!r} is not one of {list(STARTS)}")


def _tail_rate(trace: Tensor, tail: int, floor: float) -> Tensor:
    """(B,) geometric mean of r_{t+1}/r_t over each sample's last `tail` steps
    above the rounding floor (once r sits at machine precision its ratio is 1
    and says nothing about contraction); nan where no such step exists."""
    r = trace.nan_to_num(float("inf"))
    valid = (r[:, 1:] > floor) & (r[:, :-1] > floor) & torch.isfinite(r[:, 1:]) & torch.isfinite(r[:, :-1])
    from_end = valid.flip(1).cumsum(1).flip(1)
    use = valid & (from_end <= tail)
    log_ratio = torch.where(use, (r[:, 1:] / r[:, :-1].clamp_min(floor)).log(), torch.zeros_like(r[:, 1:]))
    return (log_ratio.sum(1) / use.sum(1)).exp()


def _count_distinct(states: Tensor, delta: float) -> int:
    """Greedy clustering: states (B, N) within relative distance delta share a cluster."""
    reps: list[Tensor] = []
    for s in states:
        if not all(torch.isfinite(s)):
            continue
        if not any((s - r).norm() <= delta * r.norm().clamp_min(1e-30) for r in reps):
            reps.append(s)
    return len(reps)


def probe(
    core: Core,
    x: Tensor,
    targets: Tensor | None = None,
    *,
    iters: int = 500,
    tol: float = 1e-4,
    solver: str = "anderson",
    solver_iters: int = 100,
    starts: Sequence[str] = STARTS,
    tail: int = 20,
    fd_eps: float | None = None,
    diversity_delta: float = 1e-2,
    grad_steps: int = 30,
    grad_unroll: int = 100,
    krylov_steps: int = 40,
    thresholds: Thresholds = Thresholds(),
    seed: int = 0,
    describe: dict[str, Any] | None = None,
) -> ProbeReport:
    """Run the three probe axes on a core at inputs x.

    Args:
        core: object with encode/init_state/step/readout (e.g. an
            `architectures` core); its parameters are used as they are.
        x: (B, n_tokens, in_dim) inputs, in the dtype/device to probe in.
        targets: optional (B, n_tokens) class targets for the backprop loss;
            without them the loss is <g, readout(h)> for a fixed random g.
        iters: T, iterations of the map from the core's own start.
        tol: relative residual that counts as a fixed point.
        solver: polishes h_T to a fixed point ("anderson", "broyden", "iterate").
        starts: initial states for path independence.
        fd_eps: finite-difference step in e-space (default 1e-2 fp32, 1e-4 fp64).
        grad_steps: k, unrolled steps from h0 for the gradient-norm trace.
        grad_unroll: unrolled steps for the implicit-vs-unrolled comparison.
        seed: directions, random starts and the random loss direction.
        describe: what the map is (arch, norm, task, ...), copied to the report.
    """
    import time

    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {list(SOLVERS)}")
    unknown = [s for s in starts if s not in STARTS]
    if unknown or len(starts) < 2:
        raise ValueError(f"starts={list(starts)}: need at least two of {list(STARTS)}")
    if getattr(core, "looped", True) is False:
        raise ValueError("this core is not a looped map (one pass): reachability and fixed-point probes do not apply")
    if iters < tail + 1:
        raise ValueError(f"iters={iters} must exceed tail={tail}")
    began = time.perf_counter()
    dtype = x.dtype
    fd_eps = fd_eps if fd_eps is not None else (1e-4 if dtype == torch.float64 else 1e-2)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    with torch.no_grad():
        e = core.encode(x)
        h0 = core.init_state(e)
    F = lambda h: core.step(h, e)  # noqa: E731

    # --- 1. Reachability ---------------------------------------------------
    h_T, trace = iterate(F, h0, iters)
    nonfinite = ~torch.isfinite(h_T.flatten(1)).all(dim=1)
    r_T = trace[:, -1]
    converged = r_T < tol
    below = trace < tol
    steps_to_tol = torch.where(below.any(1), below.float().argmax(1) + 1, torch.full_like(r_T, -1, dtype=torch.long))
    tail_rate = _tail_rate(trace, tail, floor=100 * torch.finfo(dtype).eps)
    safe_T = torch.where(nonfinite.view(-1, *[1] * (h_T.dim() - 1)), h0, h_T)
    sol = solve(F, safe_T, solver=solver, max_iter=solver_iters, tol=tol)
    use_sol = sol.converged.view(-1, *[1] * (h_T.dim() - 1))
    h_star = torch.where(use_sol, sol.best, safe_T)
    rho = spectral_radius(F, h_star, steps=krylov_steps, seed=seed)

    # The default start's trajectory is the one above; the others run as one
    # batch (k * B samples), which costs far less than k separate runs.
    others = [kind for kind in starts if kind != "default"]
    stacked = torch.cat([_start_state(core, e, kind, seed + 1, h_T) for kind in others])
    e_rep = e.repeat(len(others), *[1] * (e.dim() - 1))
    ends = iterate(lambda h: core.step(h, e_rep), stacked, iters)[0].chunk(len(others))
    reached = {"default": h_T} if "default" in starts else {}
    reached.update(zip(others, ends))
    names = list(reached)
    dist = torch.zeros_like(r_T)
    cos = torch.ones_like(r_T)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = _per_sample_norm(reached[a] - reached[b]) / _per_sample_norm(reached[a]).clamp_min(1e-30)
            dist = torch.maximum(dist, d.nan_to_num(float("inf")))
            cos = torch.minimum(cos, _cosine(reached[a], reached[b]).nan_to_num(-1.0))

    t = thresholds
    share = converged.float().mean().item()
    if nonfinite.any():
        reach_verdict = Verdict("fail", f"{int(nonfinite.sum())} sample(s) became non-finite (diverged)")
    elif share >= t.converged_share and rho.max().item() < 1 and dist.max().item() < t.path_distance:
        reach_verdict = Verdict(
            "pass",
            f"{share:.0%} converged to r<{tol:g} in {iters} iters, max rho(J_h)={rho.max():.3f}<1, "
            f"path distance {dist.max():.2e}<{t.path_distance:g}",
        )
    elif share < 0.5 or _median(_list(rho)) > 1:
        reach_verdict = Verdict(
            "fail", f"only {share:.0%} converged to r<{tol:g} in {iters} iters; median rho(J_h)={_median(_list(rho)):.3f}"
        )
    else:
        reach_verdict = Verdict(
            "undetermined",
            f"{share:.0%} converged (pass needs {t.converged_share:.0%}), max rho={rho.max():.3f}, "
            f"path distance {dist.max():.2e} (pass needs <{t.path_distance:g})",
        )
    reach = Reachability(
        iters=iters,
        tol=tol,
        final_residual=_list(r_T),
        converged=_list(converged),
        steps_to_tol=_list(steps_to_tol),
        tail_rate=_list(tail_rate),
        residual_trace=_list(trace.nan_to_num(float("inf")).median(dim=0).values),
        solver=solver,
        solver_converged=_list(sol.converged),
        solver_nfe=sol.nfe,
        spectral_radius=_list(rho),
        path_starts=names,
        path_distance=_list(dist),
        path_cosine=_list(cos),
        nonfinite=_list(nonfinite),
        verdict=reach_verdict,
    )

    # --- 2. Input-dependence -----------------------------------------------
    u = torch.randn(e.shape, generator=gen, dtype=torch.float64).to(e)
    u = u / _per_sample_norm(u).view(-1, *[1] * (u.dim() - 1))
    with _forward_ad():
        _, je_u = torch.func.jvp(lambda e_: core.step(h_star, e_), (e.detach(),), (u,))
    je_norm = _per_sample_norm(je_u)
    autonomous = getattr(core, "has_input_injection", None) is False or bool((je_norm == 0).all())
    n_states = h_star.flatten(1)
    distinct_fp = _count_distinct(n_states, diversity_delta)
    with torch.no_grad():
        logits = core.readout(h_star)
    predictions = logits.argmax(-1).flatten(1)
    distinct_readouts = len({tuple(p.tolist()) for p in predictions})
    nan = torch.full_like(je_norm, float("nan"))
    if autonomous:
        ift_gain = readout_gain = fd_cos = fd_err = nan
        note = (
            "autonomous map: J_e = dF/de = 0 by construction (no recall); x selects only the "
            "start h0 and so the basin, never the fixed point's position"
        )
        dep_verdict = Verdict("fail", "autonomous map: J_e = 0, no input-dependence through the map")
    else:
        w = implicit_input_jacobian(core.step, h_star, e, u)
        ift_gain = _per_sample_norm(w)
        with _forward_ad():
            _, dread = torch.func.jvp(core.readout, (h_star,), (w,))
        readout_gain = _per_sample_norm(dread)
        fd_tol = 1e-12 if dtype == torch.float64 else 1e-6
        e_pm = torch.cat([e + fd_eps * u, e - fd_eps * u])  # both sides in one batched solve
        shifted = solve(lambda h: core.step(h, e_pm), torch.cat([h_star, h_star]), solver=solver,
                        max_iter=solver_iters, tol=fd_tol)
        plus, minus = shifted.state.chunk(2)
        fd = (plus - minus) / (2 * fd_eps)
        fd_cos = _cosine(w, fd)
        fd_err = _per_sample_norm(w - fd) / _per_sample_norm(fd).clamp_min(1e-30)
        note = "J_e != 0: the fixed point moves with the input (IFT: dh*/de = (I - J_h)^-1 J_e)"
        med_gain, med_cos = _median(_list(ift_gain)), _median(_list(fd_cos))
        if reach_verdict.status == "fail" and not sol.converged.all():
            dep_verdict = Verdict("undetermined", "no fixed point reached for every sample: the IFT estimate is not valid there")
        elif med_gain >= t.min_gain and med_cos >= t.fd_cosine:
            dep_verdict = Verdict(
                "pass", f"median ||dh*/de u||={med_gain:.3g}>={t.min_gain:g}, IFT vs finite differences cos={med_cos:.4f}"
            )
        elif med_gain < t.min_gain:
            dep_verdict = Verdict("fail", f"median ||dh*/de u||={med_gain:.3g} < {t.min_gain:g}: the fixed point ignores the input")
        else:
            dep_verdict = Verdict(
                "undetermined", f"IFT and finite differences disagree (cos={med_cos:.3f} < {t.fd_cosine}): not locally smooth"
            )
    dep = InputDependence(
        autonomous=autonomous,
        note=note,
        je_norm=_list(je_norm),
        ift_gain=_list(ift_gain),
        readout_gain=_list(readout_gain),
        fd_cosine=_list(fd_cos),
        fd_rel_error=_list(fd_err),
        fd_eps=fd_eps,
        distinct_fixed_points=distinct_fp,
        distinct_readouts=distinct_readouts,
        samples=x.shape[0],
        diversity_delta=diversity_delta,
        verdict=dep_verdict,
    )

    # --- 3. Geometry ---------------------------------------------------------
    s_min, s_max = singular_values(F, h_star, steps=max(krylov_steps, 60), seed=seed)
    jnorm = operator_norm(F, h_star, seed=seed)
    g_dir = torch.randn(logits.shape, generator=gen, dtype=torch.float64).to(logits)

    def loss_of(out: Tensor) -> Tensor:
        if targets is None:
            return (out * g_dir).sum()
        return torch.nn.functional.cross_entropy(out.flatten(0, -2).float(), targets.flatten(), reduction="sum")

    states = [h0.detach().requires_grad_()]
    with torch.enable_grad():
        for _ in range(grad_steps):
            states.append(core.step(states[-1], e))
        # dL/dh_t for every t of one unrolled trajectory (intermediate tensors as inputs).
        grads = torch.autograd.grad(loss_of(core.readout(states[-1])), states, allow_unused=True)
    gnorms = torch.stack([_per_sample_norm(g) if g is not None else torch.zeros_like(r_T) for g in grads], dim=1)
    growth = (gnorms[:, 0].clamp_min(1e-30) / gnorms[:, -1].clamp_min(1e-30)) ** (1.0 / grad_steps)
    grad_cos, grad_rel = _implicit_vs_unrolled(core, x, h_star, h0, loss_of, grad_unroll)
    weights = _weight_spectra(core)
    smin_lo = s_min.min().item()
    grow_hi = growth.max().item()
    if not math.isfinite(smin_lo) or not math.isfinite(grow_hi):
        geo_verdict = Verdict("undetermined", "non-finite Jacobian figures (the map diverged)")
    elif smin_lo >= t.sigma_min and grow_hi <= t.grad_growth and (grad_cos is None or grad_cos >= t.grad_cosine):
        geo_verdict = Verdict(
            "pass",
            f"min sigma_min(I-J)={smin_lo:.3g}>={t.sigma_min:g}, max grad growth/step={grow_hi:.3f}<={t.grad_growth}"
            + (f", implicit~unrolled cos={grad_cos:.3f}" if grad_cos is not None else ""),
        )
    elif smin_lo < t.sigma_min or grow_hi > t.grad_growth:
        geo_verdict = Verdict(
            "fail", f"min sigma_min(I-J)={smin_lo:.3g} (needs >={t.sigma_min:g}), max grad growth/step={grow_hi:.3f} (needs <={t.grad_growth})"
        )
    else:
        geo_verdict = Verdict("undetermined", f"implicit and unrolled gradients disagree (cos={grad_cos:.3f} < {t.grad_cosine})")
    geo = Geometry(
        sigma_min=_list(s_min),
        sigma_max=_list(s_max),
        cond=_list(s_max / s_min.clamp_min(1e-30)),
        jacobian_norm=_list(jnorm),
        grad_steps=grad_steps,
        grad_norm_trace=_list(gnorms.median(dim=0).values),
        grad_growth=_list(growth),
        grad_cosine=grad_cos,
        grad_rel_diff=grad_rel,
        weights=weights,
        verdict=geo_verdict,
    )
    settings = dict(
        iters=iters, tol=tol, solver=solver, solver_iters=solver_iters, starts=list(starts), tail=tail,
        fd_eps=fd_eps, diversity_delta=diversity_delta, grad_steps=grad_steps, grad_unroll=grad_unroll,
        krylov_steps=krylov_steps, seed=seed, samples=x.shape[0], tokens=x.shape[1],
        dtype=str(dtype).replace("torch.", ""), device=str(x.device),
        loss="cross-entropy on targets" if targets is not None else "<g, readout(h)> for a fixed random g",
    )
    return ProbeReport(
        schema=SCHEMA_VERSION,
        map=dict(describe or {}),
        settings=settings,
        thresholds=thresholds,
        reachability=reach,
        input_dependence=dep,
        geometry=geo,
        seconds=time.perf_counter() - began,
    )


def _implicit_vs_unrolled(
    core: Core, x: Tensor, h_star: Tensor, h0: Tensor, loss_of: Callable[[Tensor], Tensor], unroll: int
) -> tuple[float | None, float | None]:
    """Cosine and relative norm difference of the parameter gradients of the
    readout loss: implicit (IFT at h*) vs backprop through `unroll` steps."""
    params = [p for p in getattr(core, "parameters", lambda: [])() if p.requires_grad]
    if not params or not torch.isfinite(h_star).all():
        return None, None
    with torch.enable_grad():
        e = core.encode(x)
        z = implicit_gradient(lambda h: core.step(h, e), h_star)
        g_imp = torch.autograd.grad(loss_of(core.readout(z)), params, allow_unused=True)
        e = core.encode(x)
        h = core.init_state(e)
        for _ in range(unroll):
            h = core.step(h, e)
        g_unr = torch.autograd.grad(loss_of(core.readout(h)), params, allow_unused=True)
    flat = lambda gs: torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params)])  # noqa: E731
    a, b = flat(g_imp).double(), flat(g_unr).double()
    cos = (a @ b / (a.norm() * b.norm()).clamp_min(1e-300)).item()
    rel = ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
    return cos, rel


def _weight_spectra(core: Core) -> dict[str, float]:
    """Weight-level diagnostics of the paper (REFERENCE 1.3) when the core exposes its matrices."""
    get = getattr(core, "weight_matrices", None)
    if get is None:
        return {}
    w = {k: v.detach().double() for k, v in get().items()}
    two = lambda m: torch.linalg.matrix_norm(m, 2).item()  # noqa: E731
    out: dict[str, float] = {}
    if "W_x" in w:
        out["rho(W_x)"] = torch.linalg.eigvals(w["W_x"]).abs().max().item() if w["W_x"].shape[0] == w["W_x"].shape[1] else float("nan")
        out["||W_x||_2"] = two(w["W_x"])
        if "W_e" in w:
            out["||W_x||_2/||W_e||_2"] = out["||W_x||_2"] / max(two(w["W_e"]), 1e-300)
        sv = torch.linalg.svdvals(w["W_x"])
        if sv.numel() >= 11:
            out["sigma_1/sigma_11(W_x)"] = (sv[0] / sv[10].clamp_min(1e-300)).item()
    if "W_Q" in w and "W_K" in w:
        out["||W_Q||_2*||W_K||_2"] = two(w["W_Q"]) * two(w["W_K"])
    if "W_O" in w:
        out["||W_O||_2"] = two(w["W_O"])
    if "W_1" in w and "W_2" in w:
        out["||W_1||_2*||W_2||_2"] = two(w["W_1"]) * two(w["W_2"])
    return out
