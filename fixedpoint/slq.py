"""Stochastic Lanczos quadrature (SLQ): spectral sums tr f(A) of a symmetric operator.

For a Rademacher probe z (N,), ||z||^2 = N and E[z^T f(A) z] = tr f(A)
(Hutchinson). m Lanczos steps from z give T_m = S diag(theta) S^T, and Gauss
quadrature z^T f(A) z ~= N sum_j tau_j f(theta_j) with tau_j = S_{0j}^2
(weights summing to 1), exact for polynomials of degree <= 2m - 1. Over n
probes, tr f(A) ~= (N / n) sum_i sum_j tau_ij f(theta_ij), and the spectral
density is phi(t) ~= (1/n) sum_i sum_j tau_ij delta(t - theta_ij) (Lin, Saad,
Yang 2016, "Approximating spectral densities of large matrices"; Ubaru, Chen,
Saad 2017; Ghorbani, Krishnan, Xiao 2019 for neural-network Hessians).

Every sum comes with two errors:
- standard_error: the spread across probes (jackknife, which for a plain
  trace is std / sqrt(n)); the whole error for a polynomial f of degree
  <= 2m - 1 (tr A, tr A^2);
- quadrature_change: |Q_m - Q_{m/2}|, the same probes' quadrature on the
  leading m/2 x m/2 block of T: an indicator of the Gauss quadrature error
  for a non-polynomial f (|x|, a step at eps). It measures the m/2-step
  error, so it overstates the m-step error where the quadrature converges.
error = standard_error + quadrature_change; relative_error = error / |value|,
converged where <= tol. One probe gives no spread: its error is inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fpstab.fixedpoint.lanczos import SymOperator, lanczos

Spectral = Callable[[Tensor], Tensor]  # elementwise f on eigenvalues (float64)


@dataclass(frozen=True)
class Quadrature:
    """SLQ nodes and weights of n probes, on the CPU in float64.

    nodes, weights: (n, m), probe i's Ritz values and Gauss weights (a probe
    whose Krylov space became invariant early is padded with zero weights);
    half_nodes, half_weights: (n, m), the same from the leading m // 2 block
    (zero-padded; the full ones where the space was invariant, being exact);
    dim: N; products: operator applications spent.
    """

    nodes: Tensor
    weights: Tensor
    half_nodes: Tensor
    half_weights: Tensor
    dim: int
    products: int
    steps: int
    seed: int

    def per_probe(self, fns: Sequence[Spectral], half: bool = False) -> Tensor:
        """(n, K): N sum_j tau_ij f_k(theta_ij), probe i's estimate of tr f_k(A)."""
        nodes, weights = (self.half_nodes, self.half_weights) if half else (self.nodes, self.weights)
        return torch.stack([self.dim * (weights * f(nodes)).sum(dim=1) for f in fns], dim=1)


def rademacher(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """(n,) entries +-1, drawn on the CPU (device-independent), in like's dtype and device."""
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64) * 2 - 1
    return signs.to(dtype=like.dtype, device=like.device)


def slq(apply: SymOperator, like: Tensor, probes: int, steps: int, seed: int) -> Quadrature:
    """SLQ of a symmetric operator on vectors like `like` (N,): `probes` Rademacher
    probes of `steps` Lanczos steps each (probes * steps products)."""
    if probes < 1 or steps < 2:
        raise ValueError(f"SLQ needs probes >= 1 and steps >= 2; got probes={probes}, steps={steps}")
    n = like.numel()
    m = min(steps, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = torch.zeros(4, probes, m, dtype=torch.float64)  # nodes, weights, half nodes, half weights
    products = 0
    for i in range(probes):
        tri = lanczos(apply, rademacher(n, gen, like), m)
        products += tri.products
        theta, s = tri.ritz()
        half_theta, half_s = (theta, s) if tri.invariant else tri.ritz(max(1, m // 2))
        out[0, i, : theta.numel()], out[1, i, : theta.numel()] = theta, s[0] ** 2
        out[2, i, : half_theta.numel()], out[3, i, : half_theta.numel()] = half_theta, half_s[0] ** 2
    return Quadrature(out[0], out[1], out[2], out[3], n, products, m, seed)


@dataclass(frozen=True)
class SpectralSum:
    """A scalar estimated from SLQ sums, with its errors (see the module docstring)."""

    value: float
    standard_error: float
    quadrature_change: float
    tol: float
    what: str

    @property
    def error(self) -> float:
        return self.standard_error + self.quadrature_change

    @property
    def relative_error(self) -> float:
        scale = abs(self.value)
        return self.error / scale if scale > 0 else (0.0 if self.error == 0 else math.inf)

    @property
    def converged(self) -> bool:
        return math.isfinite(self.relative_error) and self.relative_error <= self.tol

    def record(self) -> dict[str, Any]:
        return {"value": self.value, "error": self.error, "standard_error": self.standard_error,
                "quadrature_change": self.quadrature_change, "relative_error": self.relative_error,
                "converged": self.converged, "tol": self.tol, "what": self.what,
                "error_kind": "standard error across probes (jackknife) + |quadrature(m) - quadrature(m/2)|"}


def spectral_sum(quad: Quadrature, fns: Sequence[Spectral], what: str, tol: float,
                 combine: Callable[[Tensor], Tensor] | None = None) -> SpectralSum:
    """combine(tr f_1(A), ..., tr f_K(A)) (default: the one trace) with its errors.

    The standard error is the jackknife over probes (leave one out), which
    also covers non-linear combinations such as a ratio of traces.
    """
    combine = combine or (lambda t: t[0])
    full = quad.per_probe(fns)
    n = full.shape[0]
    value = float(combine(full.mean(dim=0)))
    change = abs(value - float(combine(quad.per_probe(fns, half=True).mean(dim=0))))
    if n < 2:
        return SpectralSum(value, math.inf, change, tol, what)
    loo = (full.sum(dim=0, keepdim=True) - full) / (n - 1)
    reps = torch.stack([combine(row) for row in loo])
    se = float(((n - 1) / n * ((reps - reps.mean()) ** 2).sum()).sqrt())
    return SpectralSum(value, se, change if math.isfinite(change) else math.inf, tol, what)
