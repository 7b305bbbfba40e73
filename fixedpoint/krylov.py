"""Batched Krylov building blocks: orthogonalization, Arnoldi, GMRES.

Vectors are (B, N): B independent samples, each with its own operator; every
step applies the operator once to the whole batch, so a GPU sees one (B, N)
operation per step. Small projected problems (size ~ the Krylov dimension)
are solved on the CPU in float64 once per cycle: one host round trip per
cycle, none per operator application.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate

Operator = Callable[[Tensor], Tensor]  # (B, N) -> (B, N)


def default_tol(dtype: torch.dtype) -> float:
    """A relative residual a Krylov solve can reach with products computed in
    `dtype` (a few hundred ulps of the operator's rounding noise)."""
    return {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}.get(dtype, 1e-5)


def bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product of (B, N) tensors -> (B,)."""
    return (a * b).sum(dim=1)


def unit(v: Tensor) -> Tensor:
    """(B, N) rows scaled to norm 1 (zero rows stay zero)."""
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def random_start(like: Tensor, seed: int, columns: int | None = None) -> Tensor:
    """Seeded standard normal (B, N), or (B, columns, N), drawn on the CPU in
    float64 so the start does not depend on the device."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (like.shape[0], like[0].numel()) if columns is None else (like.shape[0], columns, like[0].numel())
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)


def orthogonalize(w: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """Two passes of classical Gram-Schmidt of w (B, N) against basis (B, k, N).

    Returns (w orthogonal to the basis, coefficients (B, k)). The second pass
    restores the orthogonality the first loses to rounding; zero rows of the
    basis (padding, breakdowns) contribute nothing.
    """
    coef = torch.einsum("bkn,bn->bk", basis, w)
    w = w - torch.einsum("bk,bkn->bn", coef, basis)
    again = torch.einsum("bkn,bn->bk", basis, w)
    return w - torch.einsum("bk,bkn->bn", again, basis), coef + again


def _breakdown(after: Tensor, before: Tensor) -> Tensor:
    """(B,) bool: orthogonalization left only rounding noise of `before`, so
    the Krylov space is invariant (its Ritz values are exact)."""
    noise = 10 * before.shape[1] ** 0.5 * torch.finfo(before.dtype).eps
    return after.norm(dim=1) <= noise * before.norm(dim=1)


class Arnoldi:
    """A batched Arnoldi decomposition A V_j = V_{j+1} H_j, grown in place.

    basis (B, m+1, N) and hess (B, m+1, m) are preallocated; `size` columns
    are built. A restart may set the first k columns and the leading
    (k+1) x k block of hess to anything satisfying A V_k = V_{k+1} H_k
    (thick restart), then `extend` continues from column k. After a
    breakdown a sample's later basis rows are zero, which adds only exact
    zeros to its projected matrix.
    """

    def __init__(self, apply: Operator, like: Tensor, m: int) -> None:
        batch, n = like.shape[0], like[0].numel()
        self.apply, self.m = apply, min(m, n)
        self.basis = torch.zeros(batch, self.m + 1, n, dtype=like.dtype, device=like.device)
        self.hess = torch.zeros(batch, self.m + 1, self.m, dtype=like.dtype, device=like.device)
        self.size = 0
        self.products = 0

    def start(self, v0: Tensor) -> None:
        """Begin a fresh decomposition from v0 (B, N)."""
        self.basis.zero_()
        self.hess.zero_()
        self.basis[:, 0] = unit(v0)
        self.size = 0

    def extend(self, until: int) -> None:
        """Arnoldi steps from column `size` up to `until` (<= m), one product each."""
        tiny = torch.finfo(self.basis.dtype).tiny  # the smallest normal: an absolute eps would mis-scale small operators
        for j in range(self.size, min(until, self.m)):
            aw = self.apply(self.basis[:, j])
            w, coef = orthogonalize(aw, self.basis[:, : j + 1])
            dead = _breakdown(w, aw)
            norm = torch.where(dead, torch.zeros_like(coef[:, 0]), w.norm(dim=1))
            self.hess[:, : j + 1, j] = coef
            self.hess[:, j + 1, j] = norm
            self.basis[:, j + 1] = torch.where(dead[:, None], torch.zeros_like(w), w / norm.clamp_min(tiny)[:, None])
            self.size = j + 1
            self.products += 1


def _least_squares(hess: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """min_y ||beta e_1 - H y|| per sample on the CPU in float64.

    hess (B, k+1, k), beta (B,). Returns y (B, k), the residual norm (B,) of
    the small problem (GMRES's residual estimate) and sigma_max(H) (B,), a
    lower bound on ||A||. SVD-based (gelsd), so a breakdown's zero columns
    are harmless; a sample whose products went non-finite gets y = 0 and
    residual inf, without disturbing the others.
    """
    h = hess.detach().to("cpu", torch.float64)
    rhs = torch.zeros(h.shape[0], h.shape[1], 1, dtype=torch.float64)
    rhs[:, 0, 0] = beta.detach().to("cpu", torch.float64)
    bad = ~(torch.isfinite(h).all(dim=(1, 2)) & torch.isfinite(rhs).all(dim=(1, 2)))
    h, rhs = torch.where(bad[:, None, None], 0.0, h), torch.where(bad[:, None, None], 0.0, rhs)
    fit = torch.linalg.lstsq(h, rhs, driver="gelsd")
    res = torch.where(bad, float("inf"), (rhs - h @ fit.solution).norm(dim=(1, 2)))
    return fit.solution[:, :, 0], res, fit.singular_values[:, 0]


def gmres(
    apply: Operator,
    b: Tensor,
    steps: int = 100,
    restarts: int = 10,
    tol: float | None = None,
    check_every: int = 10,
    stagnation: float = 0.9,
) -> Estimate:
    """Solve A x = b per sample by restarted GMRES.

    Args:
        apply: A, (B, N) -> (B, N).
        b: (B, N) right-hand sides.
        steps: Krylov dimension per cycle (memory: B * (steps + 1) * N).
        restarts: cycles at most.
        tol: relative residual ||b - A x|| / ||b|| to stop at (default:
            `default_tol` of b's dtype).
        check_every: steps between checks of the residual estimate inside a
            cycle (each check is one host round trip).
        stagnation: a sample whose true residual a whole cycle shrank by less
            than this factor has stagnated (at its precision floor, or the
            cycle is too short for its spectrum) and gets no more cycles.
    Returns:
        Estimate with value x (B, N) and error the true relative residual,
        recomputed from one product after each cycle (the cycle's own
        estimate drifts from it in low precision). A sample that converged or
        stagnated keeps its x while the others go on. details: "rhs_norm"
        ||b||, and "norm_estimate", the largest sigma_max of a cycle's
        Hessenberg matrix, a lower bound on ||A||_2 (0 where no cycle ran).
    """
    tol = default_tol(b.dtype) if tol is None else tol
    arn = Arnoldi(apply, b, steps)
    x = torch.zeros_like(b)
    bnorm = b.norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    rnorm = b.norm(dim=1)
    r, active, residual_products = b, rnorm > tol * bnorm, 0
    norm_a = torch.zeros(b.shape[0], dtype=torch.float64)
    for _ in range(restarts):
        if not bool(active.any()):
            break
        arn.start(r)
        y, sigma_h = _grow_until(arn, rnorm, torch.where(active, tol * bnorm, rnorm), check_every)
        norm_a = torch.maximum(norm_a, sigma_h)
        x = torch.where(active[:, None], x + torch.einsum("bk,bkn->bn", y, arn.basis[:, : y.shape[1]]), x)
        r = b - apply(x)
        residual_products += 1
        new = r.norm(dim=1)
        active = active & (new > tol * bnorm) & (new < stagnation * rnorm)
        rnorm = torch.where(new < rnorm, new, rnorm)
    return Estimate.checked(x, r.norm(dim=1) / bnorm, tol, arn.products + residual_products, f"gmres(m={arn.m})",
                            "relative residual |b-Ax|/|b|", {"norm_estimate": norm_a.to(b.device), "rhs_norm": bnorm})


def _grow_until(arn: Arnoldi, beta: Tensor, target: Tensor, check_every: int) -> tuple[Tensor, Tensor]:
    """Extend a GMRES cycle until its residual estimate is below target for
    every sample, or the cycle is full; returns the coefficients y (B, k) and
    sigma_max of the cycle's Hessenberg matrix (B,) on the CPU."""
    target = target.detach().to("cpu", torch.float64)
    while True:
        arn.extend(min(arn.size + check_every, arn.m))
        k = arn.size
        y, res, sigma_h = _least_squares(arn.hess[:, : k + 1, :k], beta)
        if k == arn.m or bool((res <= target).all()):
            return y.to(dtype=arn.basis.dtype, device=arn.basis.device), sigma_h
