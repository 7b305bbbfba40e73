"""Hessian spectra of a scalar function of a flat vector, matrix-free.

`hvp_operator(loss_of, theta)` turns loss_of: R^P -> R into the symmetric
operator v -> H v (H the Hessian at theta); `hessian_spectrum` reads that
operator with Lanczos (`fixedpoint.lanczos`) and stochastic Lanczos quadrature
(`fixedpoint.slq`) and returns a `HessianSpectrum`. Nothing here knows what
the parameters are.

Definitions (H is symmetric and indefinite in general):
- extreme eigenvalues: the k largest and the k smallest *algebraic*
  eigenvalues, from one Lanczos run; `top_magnitude` merges them by |lambda|.
- eps: the valley threshold, absolute, or relative (eps * max|lambda|, max
  |lambda| from Lanczos, so then an estimate with an error).
- valley: eigen-directions with |lambda| > eps ("walls"); river: |lambda| <=
  eps (Gong, Teng, Liu 2025, arXiv 2510.10089, Def. 1, thresholding at eps).
- kappa(H_valley) = max valley |lambda| / min valley |lambda|.
- matrix entropy: of the normalized *absolute* spectrum, p_i = |lambda_i| /
  sum_j |lambda_j| over all P eigenvalues, H = -sum_i p_i log p_i (nats;
  0 log 0 = 0), i.e. the von Neumann entropy of |H| / tr|H| (|H| the matrix
  absolute value; for a PSD H the usual lambda / tr H). Computed as
  log A - B / A with A = tr|H|, B = tr(|H| log|H|). Also reported divided by
  log P (in [0, 1]) and as exp(H), an effective rank.

What is exact and what is estimated:
- each extreme Ritz value carries its residual; some eigenvalue of H lies
  within residual + operator noise of it (the noise: the rounding of the
  products, measured by `operator_noise`: their asymmetry, their distance
  from the other AD mode's where a cross-check is given, and at least the
  given precision floor times max|theta|);
- kappa needs the smallest valley |lambda|, usually interior to the
  spectrum. It is determined only when the Ritz values from each end are
  converged and consecutive down to one within [-eps, eps] (or to the other
  end), none within its error of eps; then kappa comes with an interval from
  the Ritz errors. Otherwise kappa is UNDETERMINED with the reason, and
  max|theta| / min resolved valley |theta| is reported as a lower bound;
- trace, tr H^2, the valley dimension (SLQ count of |lambda| > eps), the
  share of eigenvalues < -eps and the entropy are SLQ estimates with a
  standard error across probes and a quadrature-change indicator; the
  valley dimension counts multiplicity, which Lanczos from one start cannot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from fpstab.fixedpoint.lanczos import ExtremeEigenvalues, SymOperator, extreme_eigenvalues
from fpstab.fixedpoint.slq import Quadrature, SpectralSum, slq, spectral_sum

# The reader (reports.hessian_table) holds its own copy: fixedpoint and reports are siblings that do not
# import each other; tests/test_report.py checks the two agree.
HESSIAN_SCHEMA = "fpstab.hessian/1"
EPS_KINDS: tuple[str, ...] = ("relative", "absolute")
HVP_METHODS: tuple[str, ...] = ("double-backward", "forward-over-reverse")


@dataclass(frozen=True)
class SpectrumSettings:
    """k: extreme eigenvalues per end; steps: Lanczos steps at most; tol: Ritz residual / max|theta|
    that converges; probes, slq_steps: SLQ; slq_tol: relative error an SLQ figure must meet to
    count as converged; eps, eps_kind: the valley threshold; seed: all random vectors."""

    k: int = 5
    steps: int = 80
    tol: float = 1e-4
    probes: int = 8
    slq_steps: int = 30
    slq_tol: float = 0.1
    eps: float = 1e-2
    eps_kind: str = "relative"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.eps_kind not in EPS_KINDS:
            raise ValueError(f"eps_kind={self.eps_kind!r} is not one of {list(EPS_KINDS)}")
        if self.eps_kind == "relative" and not 0 <= self.eps < 1:
            raise ValueError(f"eps={self.eps!r}: a relative threshold must be in [0, 1)")
        for key in ("k", "steps", "probes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} must be >= 1")
        if self.slq_steps < 2:
            raise ValueError(f"slq_steps={self.slq_steps!r} must be >= 2")


# ---- the operator --------------------------------------------------------------------------
def hvp_operator(loss_of: Callable[[Tensor], Tensor], theta: Tensor,
                 method: str = "double-backward") -> tuple[SymOperator, Tensor, Tensor]:
    """(v -> H v on (P,) vectors, loss, gradient (P,)) of loss_of at theta (P,).

    "double-backward" builds loss and gradient graph once and spends one
    backward pass per product (the graph stays in memory: about two
    training steps' activations); "forward-over-reverse" is torch.func
    jvp(grad(loss_of)), a forward and a backward per product, holding nothing
    between products (loss_of must then be a pure function of its argument).
    """
    if method == "forward-over-reverse":
        grad_of = torch.func.grad_and_value(loss_of)
        grad, loss = grad_of(theta.detach())
        return (lambda v: torch.func.jvp(lambda t: grad_of(t)[0], (theta.detach(),), (v,))[1]), loss, grad
    if method != "double-backward":
        raise ValueError(f"hvp method={method!r} is not one of {list(HVP_METHODS)}")
    t = theta.detach().clone().requires_grad_(True)
    loss = loss_of(t)
    (grad,) = torch.autograd.grad(loss, t, create_graph=True)
    if not grad.requires_grad:  # loss linear in theta: H = 0
        return torch.zeros_like, loss.detach(), grad.detach()

    def apply(v: Tensor) -> Tensor:
        (hv,) = torch.autograd.grad(grad, t, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv

    return apply, loss.detach(), grad.detach()


def operator_noise(apply: SymOperator, like: Tensor, seed: int,
                   check: SymOperator | None = None) -> dict[str, float]:
    """The products' rounding error on unit vectors, measured: "asymmetry" |u.Av - v.Au| for
    seeded random unit u, v (N,) (2 products), and with `check` (H v by another route, e.g.
    the other AD mode) "cross_check" ||Au - check(u)||, which also sees the symmetric part of
    the rounding; "value" is the larger (the noise added to every eigenvalue's error bound)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u, v = (torch.randn(like.numel(), generator=gen, dtype=torch.float64) for _ in range(2))
    u, v = (w.div(w.norm()).to(dtype=like.dtype, device=like.device) for w in (u, v))
    au = apply(u)
    out = {"asymmetry": abs(float(torch.dot(u, apply(v)).double() - torch.dot(v, au).double()))}
    if check is not None:
        out["cross_check"] = float((au - check(u)).double().norm())
    return {"value": max(out.values()), **out}


# ---- the valley ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """eps as used (value), its error (from max|lambda| where relative), as given (factor, kind)."""

    value: float
    error: float
    factor: float
    kind: str


def threshold(settings: SpectrumSettings, ends: ExtremeEigenvalues, noise: float) -> Threshold:
    if settings.eps_kind == "absolute":
        return Threshold(settings.eps, 0.0, settings.eps, "absolute")
    top = int(ends.theta.abs().argmax()) if ends.theta.numel() else 0
    err = float(ends.residual[top]) + noise if ends.theta.numel() else math.inf
    return Threshold(settings.eps * ends.norm, settings.eps * err, settings.eps, "relative to max|lambda|")


def _walk(values: Tensor, bound: Tensor, converged: Tensor, eps: float) -> tuple[list[int], str | None]:
    """From one end inwards: (indices of valley members, None) when resolved, else (those so far, why).

    values: signed distances from that end's side, descending (theta from the top, -theta from the
    bottom); a member has value - bound > eps; the walk ends resolved at a converged value with
    value + bound <= eps, or at the last value (the other end of the spectrum)."""
    members: list[int] = []
    for j in range(values.numel()):
        v, b = float(values[j]), float(bound[j])
        if not bool(converged[j]) or not math.isfinite(v):
            return members, f"Ritz value no. {j + 1} from this end ({v:.4g}) has not converged"
        if v + b <= eps:
            return members, None
        if v - b <= eps:
            return members, f"Ritz value no. {j + 1} from this end ({v:.4g} +- {b:.2g}) is within its error of eps"
        members.append(j)
    return members, None


def valley_condition(ends: ExtremeEigenvalues, eps: Threshold, noise: float, tol: float) -> dict[str, Any]:
    """kappa(H_valley) from the ends of the spectrum (see the module docstring), as a record."""
    theta, bound = ends.theta, ends.residual + noise
    conv = ends.residual <= tol * max(ends.norm, torch.finfo(torch.float64).tiny)
    top, why_top = _walk(theta.flip(0), bound.flip(0), conv.flip(0), eps.value)
    bottom, why_bottom = _walk(-theta, bound, conv, eps.value)
    n = theta.numel()
    idx = sorted({n - 1 - j for j in top} | set(bottom))
    absv, b = theta[idx].abs(), bound[idx]
    out: dict[str, Any] = {"resolved_valley_eigenvalues": [float(theta[i]) for i in idx],
                           "eps": eps.value}
    reasons = [f"{side}: {why}" for side, why in (("top", why_top), ("bottom", why_bottom)) if why]
    if not idx:
        return {**out, "status": "undetermined", "value": None,
                "reason": "no eigenvalue resolved above eps" + (f" ({'; '.join(reasons)})" if reasons else "")}
    hi, lo = int(absv.argmax()), int(absv.argmin())
    big, small = float(absv[hi]), float(absv[lo])
    out.update(lambda_max_abs=big, lambda_min_valley_abs=small)
    if reasons:
        return {**out, "status": "undetermined", "value": None, "lower_bound": big / small,
                "reason": "the smallest valley eigenvalue is not resolved (" + "; ".join(reasons) +
                          f"); {len(idx)} valley eigenvalues resolved in {ends.steps} Lanczos steps: "
                          "raise the Lanczos steps, or eps"}
    interval = [max(big - float(b[hi]), 0.0) / (small + float(b[lo])), (big + float(b[hi])) / (small - float(b[lo]))]
    return {**out, "status": "determined", "value": big / small, "interval": interval, "reason":
            f"all {len(idx)} distinct valley eigenvalues resolved from both ends of the spectrum"}


# ---- the whole reading ----------------------------------------------------------------------
@dataclass(frozen=True)
class HessianSpectrum:
    """One reading of a Hessian: the ends of its spectrum, its SLQ density and the figures
    read from them (see the module docstring); `record()` is the JSON-ready form."""

    settings: SpectrumSettings
    dim: int
    hvp: str
    noise_parts: dict[str, float]
    ends: ExtremeEigenvalues
    eps: Threshold
    quad: Quadrature
    sums: dict[str, SpectralSum]
    kappa: dict[str, Any]
    products: int
    seconds: float

    @property
    def noise(self) -> float:
        return self.noise_parts["value"]

    def record(self) -> dict[str, Any]:
        entropy = self.sums["entropy"]
        log_p = math.log(self.dim) if self.dim > 1 else math.nan
        return {
            "schema": HESSIAN_SCHEMA, "dim": self.dim, "settings": asdict(self.settings), "hvp": self.hvp,
            "operator_noise": self.noise, "operator_noise_parts": self.noise_parts, "products": self.products,
            "seconds": self.seconds,
            "lanczos": {"steps": self.ends.steps, "invariant": self.ends.invariant, "norm_estimate": self.ends.norm},
            "largest": _ends_record(self.ends.largest.value, self.ends.largest.details["residual"], self),
            "smallest": _ends_record(self.ends.smallest.value, self.ends.smallest.details["residual"], self),
            "top_magnitude": top_magnitude(self),
            "eps": asdict(self.eps),
            "density": {"nodes": self.quad.nodes.tolist(), "weights": self.quad.weights.tolist(),
                        "probes": int(self.quad.nodes.shape[0]), "steps": self.quad.steps, "seed": self.quad.seed},
            **{key: s.record() for key, s in self.sums.items() if key not in ("entropy", "valley_dimension",
                                                                              "negative_dimension")},
            "entropy": {**entropy.record(), "normalized": entropy.value / log_p, "effective_rank":
                        math.exp(entropy.value) if math.isfinite(entropy.value) else math.nan},
            "valley": {"dimension": self.sums["valley_dimension"].record(),
                       "negative_dimension": self.sums["negative_dimension"].record(),
                       "river_dimension": self.dim - self.sums["valley_dimension"].value, "kappa": self.kappa},
        }


def _ends_record(values: Tensor, residuals: Tensor, spec: HessianSpectrum) -> dict[str, Any]:
    tol, norm = spec.settings.tol, max(spec.ends.norm, torch.finfo(torch.float64).tiny)
    return {"method": spec.ends.largest.method, "tol": tol,
            "error_kind": "an eigenvalue lies within error_bound = residual + operator noise; "
                          "converged: residual <= tol * max|theta|",
            "eigenvalues": [{"value": float(v), "residual": float(r), "error_bound": float(r) + spec.noise,
                             "converged": bool(r <= tol * norm)} for v, r in zip(values, residuals)]}


def top_magnitude(spec: HessianSpectrum) -> list[dict[str, Any]]:
    """The k extreme Ritz values largest in |lambda|, from both ends, each with its bound."""
    ends = spec.ends
    pairs = {float(v): float(r) for part in (ends.largest, ends.smallest)
             for v, r in zip(part.value, part.details["residual"])}
    ranked = sorted(pairs.items(), key=lambda p: -abs(p[0]))[: spec.settings.k]
    norm = max(ends.norm, torch.finfo(torch.float64).tiny)
    return [{"value": v, "error_bound": r + spec.noise, "converged": r <= spec.settings.tol * norm} for v, r in ranked]


def spectral_sums(quad: Quadrature, eps: float, tol: float) -> dict[str, SpectralSum]:
    """The SLQ figures of the record: traces, the entropy and the valley counts."""
    def absolute(x: Tensor) -> Tensor:
        return x.abs()

    return {
        "trace": spectral_sum(quad, [lambda x: x], "tr H", tol),
        "frobenius_sq": spectral_sum(quad, [lambda x: x * x], "tr H^2 = ||H||_F^2", tol),
        "abs_trace": spectral_sum(quad, [absolute], "tr|H| = sum |lambda|", tol),
        "entropy": spectral_sum(quad, [absolute, lambda x: torch.xlogy(x.abs(), x.abs())],
                                "-sum p log p, p = |lambda| / sum|lambda| (nats)", tol,
                                combine=lambda t: torch.log(t[0]) - t[1] / t[0]),
        "valley_dimension": spectral_sum(quad, [lambda x: (x.abs() > eps).double()], "#{|lambda| > eps}", tol),
        "negative_dimension": spectral_sum(quad, [lambda x: (x < -eps).double()], "#{lambda < -eps}", tol),
    }


def hessian_spectrum(apply: SymOperator, like: Tensor, settings: SpectrumSettings, hvp: str = "double-backward",
                     check: SymOperator | None = None, floor: float = 0.0) -> HessianSpectrum:
    """Read the Hessian behind `apply` (v -> H v on vectors like `like`, (P,)).

    check: optional H v by another route, for the noise estimate (`operator_noise`).
    floor: the relative rounding of the products where their precision is known to be lower
    than like's (e.g. the machine epsilon of a float32 loss inside a float64 probe). The noise
    is at least max(floor, sqrt(P) * eps(like's dtype)) * max|theta| ("rounding_floor"): the
    rounding of a length-P inner product, which no measurement of a product can show.
    Costs 2 (+1 of check) + (Lanczos steps, at most settings.steps) + probes * slq_steps products.
    """
    began = time.perf_counter()
    measured = operator_noise(apply, like, settings.seed, check)
    floor = max(floor, like.numel() ** 0.5 * torch.finfo(like.dtype).eps)

    def noise_at(ends: ExtremeEigenvalues) -> float:
        return max(measured["value"], floor * ends.norm)

    def valley_resolved(ends: ExtremeEigenvalues) -> bool:
        eps = threshold(settings, ends, noise_at(ends))
        return valley_condition(ends, eps, noise_at(ends), settings.tol)["status"] == "determined"

    gen = torch.Generator(device="cpu").manual_seed(settings.seed + 1)
    v0 = torch.randn(like.numel(), generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
    # Lanczos goes on past the k extreme eigenvalues until kappa is resolved or the steps run out.
    ends = extreme_eigenvalues(apply, v0, settings.k, settings.steps, settings.tol, until=valley_resolved)
    noise = noise_at(ends)
    parts = {**measured, "rounding_floor": floor * ends.norm, "value": noise}
    eps = threshold(settings, ends, noise)
    quad = slq(apply, like, settings.probes, settings.slq_steps, settings.seed + 2)
    sums = spectral_sums(quad, eps.value, settings.slq_tol)
    kappa = valley_condition(ends, eps, noise, settings.tol)
    products = 2 + (check is not None) + ends.largest.products + quad.products
    return HessianSpectrum(settings, like.numel(), hvp, parts, ends, eps, quad, sums, kappa, products,
                           time.perf_counter() - began)
