"""Symmetric Lanczos with full reorthogonalization, for one operator on flat vectors.

For a symmetric operator A on R^N (e.g. a Hessian applied by Hessian-vector
products), m Lanczos steps from v0 build an orthonormal basis Q_m of the
Krylov space K_m(A, v0) and the tridiagonal T_m = Q_m^T A Q_m with
A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T. Every step reorthogonalizes the new
vector against the whole basis (two classical Gram-Schmidt passes), so Ritz
values do not come back as spurious copies, at O(m N) memory.

What is exact and what is estimated (symmetric A):
- Ritz pair (theta_i, y_i = Q_m s_i) has residual ||A y_i - theta_i y_i|| =
  |beta_m s_{m,i}| (exact in exact arithmetic). Some eigenvalue of A lies
  within that residual of theta_i (Kahan / Bauer-Fike for symmetric A): that
  is the error bound every Ritz value carries.
- Which eigenvalue it approximates is not proven: converged Ritz values from
  an end of the spectrum are, in Lanczos practice, the consecutive extreme
  eigenvalues, since a random start has a component along every
  eigenvector almost surely; a repeated eigenvalue shows once.
- Ritz values interlace: the j-th largest Ritz value is <= the j-th largest
  eigenvalue (and symmetrically at the bottom), whatever the convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.krylov import orthogonalize

SymOperator = Callable[[Tensor], Tensor]  # (N,) -> (N,), symmetric


@dataclass(frozen=True)
class Tridiagonal:
    """The Lanczos recurrence of one start vector, on the CPU in float64.

    alpha: (m,) diagonal of T_m. beta: (m,) beta[j] couples q_j and q_{j+1};
    beta[m-1] is the norm of the last residual (0 when the Krylov space is
    invariant, and then every Ritz value is exact). products: operator
    applications spent.
    """

    alpha: Tensor
    beta: Tensor
    products: int
    invariant: bool

    @property
    def size(self) -> int:
        return int(self.alpha.numel())

    def ritz(self, size: int | None = None) -> tuple[Tensor, Tensor]:
        """(theta (s,), S (s, s)) of the leading s x s block of T (default all m), ascending theta."""
        s = self.size if size is None else min(size, self.size)
        t = torch.diag(self.alpha[:s])
        if s > 1:
            off = self.beta[: s - 1]
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        if not bool(torch.isfinite(t).all()):  # a diverged operator: its figures are NaN, not an error
            return torch.full((s,), math.nan, dtype=t.dtype), torch.full((s, s), math.nan, dtype=t.dtype)
        return torch.linalg.eigh(t)

    def residuals(self) -> tuple[Tensor, Tensor]:
        """(theta (m,), ||A y_i - theta_i y_i|| (m,)) of the full T_m, ascending theta."""
        theta, s = self.ritz()
        last = 0.0 if self.invariant else float(self.beta[-1])
        return theta, (last * s[-1, :]).abs()


def lanczos(apply: SymOperator, v0: Tensor, steps: int,
            stop: Callable[[Tridiagonal], bool] | None = None, check_every: int = 10) -> Tridiagonal:
    """Lanczos with full reorthogonalization from v0 (N,), at most `steps` products.

    stop: called every `check_every` steps with the recurrence so far; True
    ends the run (e.g. once the wanted Ritz values converged). The run also
    ends at an invariant subspace (the new vector is rounding noise).
    """
    n = v0.numel()
    m = min(steps, n)
    basis = torch.zeros(m, n, dtype=v0.dtype, device=v0.device)
    q = v0.reshape(-1) / v0.norm().clamp_min(torch.finfo(v0.dtype).tiny)
    alpha, beta = [], []
    noise = 10 * n ** 0.5 * torch.finfo(v0.dtype).eps
    for j in range(m):
        basis[j] = q
        aq = apply(q)
        w, coef = (t[0] for t in orthogonalize(aq[None], basis[None, : j + 1]))
        alpha.append(float(coef[j]))
        b = float(w.norm())
        dead = not math.isfinite(b) or b <= noise * float(aq.norm())
        beta.append(0.0 if dead else b)
        tri = Tridiagonal(torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64),
                          j + 1, dead)
        if dead or j + 1 == m:
            return tri
        if stop is not None and (j + 1) % check_every == 0 and stop(tri):
            return tri
        q = w / b
    raise AssertionError("unreachable: the loop returns at its last step")


@dataclass(frozen=True)
class ExtremeEigenvalues:
    """The ends of a symmetric spectrum from one Lanczos run.

    largest: Estimate of the k largest Ritz values (descending); smallest: of
    the k smallest (ascending). Their error is the Ritz residual relative to
    `norm` (max |theta|, a lower bound on ||A||_2), converged where <= tol;
    details "residual" holds the absolute residuals. theta, residual: (m,)
    every Ritz value (ascending) and its residual, for what reads further in.
    """

    largest: Estimate
    smallest: Estimate
    theta: Tensor
    residual: Tensor
    norm: float
    steps: int
    invariant: bool


def extreme_eigenvalues(apply: SymOperator, v0: Tensor, k: int, steps: int, tol: float, check_every: int = 10,
                        until: Callable[[ExtremeEigenvalues], bool] | None = None) -> ExtremeEigenvalues:
    """The k largest and k smallest (algebraic) eigenvalues of a symmetric operator.

    Stops once both ends' k Ritz values have relative residual <= tol and
    `until` (if given) holds for the reading so far, or after `steps`
    products. v0: (N,) start (a seeded random vector).
    """
    if k < 1 or steps < 1:
        raise ValueError(f"k={k} and steps={steps} must be >= 1")

    def done(tri: Tridiagonal) -> bool:
        ends = _read(tri, k, tol)
        return bool(torch.cat([ends.largest.converged, ends.smallest.converged]).all()) and (
            until is None or until(ends))

    return _read(lanczos(apply, v0, steps, stop=done, check_every=check_every), k, tol)


def _read(tri: Tridiagonal, k: int, tol: float) -> ExtremeEigenvalues:
    theta, res = tri.residuals()
    norm = float(theta.abs().max()) if theta.numel() else 0.0
    method = f"lanczos(full reorthogonalization, {tri.size} steps)"
    kind = "Ritz residual |Ay - theta y| / max|theta|"
    scale = max(norm, torch.finfo(torch.float64).tiny)

    def end(th: Tensor, r: Tensor) -> Estimate:
        return Estimate.checked(th[:k], r[:k] / scale, tol, tri.products, method, kind, {"residual": r[:k]})

    return ExtremeEigenvalues(end(theta.flip(0), res.flip(0)), end(theta, res), theta, res, norm, tri.size,
                              tri.invariant)
