"""Spectra of the Jacobian J = df/dh of a batched map, matrix-free, with error estimates.

- `spectral_radius`: rho(J) by Krylov-Schur (thick-restarted Arnoldi, Stewart
  2001) on JVPs. A thick restart keeps the invariant subspace of the
  largest-modulus Ritz values (a real Schur basis, so complex pairs stay
  together), which is what clustered pairs near the unit circle need; plain
  restarts from one Ritz vector stall there.
- `largest_singular_value`: Golub-Kahan-Lanczos bidiagonalization.
- `smallest_singular_value`: sigma_min(I - J) = 1 / ||(I - J)^-1||_2 by
  Golub-Kahan on the inverse, each step one GMRES solve with I - J (JVPs)
  and one with its transpose (VJPs). Lanczos on (I - J)^T (I - J) itself
  converges at a rate set by sigma_min^2 / sigma_max^2 (hopeless near a
  singular I - J); on the inverse the smallest singular values are the
  largest, far from the rest, and a few steps suffice even when clustered.
  Its error is the Ritz residual on the inverse, plus what the inexact
  solves and the products' rounding can move it.

Every function returns an `Estimate` (value, converged, error, products).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.krylov import Arnoldi, Operator, default_tol, gmres, orthogonalize, random_start, unit
from fpstab.fixedpoint.linalg import jvp_operator, vjp_operator

Map = Callable[[Tensor], Tensor]


def spectral_radius(
    f: Map, h: Tensor, steps: int = 40, restarts: int = 20, tol: float | None = None, seed: int = 0
) -> Estimate:
    """rho(df/dh) at h, per sample, by Krylov-Schur on JVPs.

    Args:
        f: batched map (B, ...) -> (B, ...).
        h: (B, ...) point of linearization.
        steps: Krylov dimension m (memory B * (m+1) * N); each restart keeps
            the m/2 largest-modulus Ritz values' Schur basis.
        restarts: cycles at most (products <= m + (restarts - 1) * m / 2).
        tol: relative Ritz residual ||J y - theta y|| / |theta| of the
            dominant Ritz pair that counts as converged (default:
            `default_tol` of h's dtype).
        seed: start vector.
    Returns:
        Estimate of |theta| (B,) with error = that relative Ritz residual.
    """
    tol = default_tol(h.dtype) if tol is None else tol
    arn = Arnoldi(jvp_operator(f, h), h.flatten(1), steps)
    arn.start(random_start(h, seed))
    for cycle in range(restarts):
        arn.extend(arn.m)
        hess = arn.hess.detach().to("cpu", torch.float64).numpy()
        theta, error = _dominant_ritz(hess)
        # error inf: the sample's products went non-finite, which no restart undoes
        if bool(((error <= tol) | np.isinf(error)).all()) or cycle + 1 == restarts or arn.m < steps:
            break
        _thick_restart(arn, hess, keep=max(arn.m // 2, 1))
    value = torch.as_tensor(np.abs(theta), dtype=h.dtype, device=h.device)
    error_t = torch.as_tensor(error, dtype=torch.float64, device=h.device)
    return Estimate.checked(value, error_t, tol, arn.products, f"krylov-schur(m={arn.m})",
                            "relative Ritz residual |Jy - theta y|/|theta|")


def _dominant_ritz(hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest-modulus Ritz value (B,) complex and its relative Ritz residual
    (B,) from hess (B, m+1, m) with A V_m = V_m H_m + h_{m+1,m} v_{m+1} e_m^T."""
    m = hess.shape[2]
    thetas, errors = [], []
    for hb in hess:
        if not np.isfinite(hb).all():  # this sample's products went non-finite
            thetas.append(complex("nan"))
            errors.append(np.inf)
            continue
        vals, vecs = np.linalg.eig(hb[:m, :m])
        i = int(np.argmax(np.abs(vals)))
        y = vecs[:, i] / max(np.linalg.norm(vecs[:, i]), 1e-300)
        theta = vals[i]
        thetas.append(theta)
        errors.append(abs(hb[m, m - 1]) * abs(y[-1]) / max(abs(theta), 1e-300))
    return np.array(thetas), np.array(errors)


def _thick_restart(arn: Arnoldi, hess: np.ndarray, keep: int) -> None:
    """Compress the decomposition to the real Schur basis of the `keep`
    largest-modulus Ritz values (more by one where that splits a complex
    pair); samples keeping fewer than the batch's most are padded with zero
    columns, which add only exact zero Ritz values."""
    m = arn.m
    kept = [_schur_head(hb[:m, :m], keep) for hb in hess]
    k = max(z.shape[1] for z, _ in kept)
    batch = hess.shape[0]
    q = np.zeros((batch, m, k))
    block = np.zeros((batch, k + 1, k))
    for b, (z, t) in enumerate(kept):
        kb = z.shape[1]
        q[b, :, :kb] = z
        block[b, :kb, :kb] = t
        block[b, k, :kb] = hess[b, m, m - 1] * z[m - 1, :]
    basis = arn.basis
    q_t = torch.as_tensor(q, dtype=basis.dtype, device=basis.device)
    head = torch.einsum("bmk,bmn->bkn", q_t, basis[:, :m])
    residual = basis[:, m].clone()
    basis.zero_()
    basis[:, :k] = head
    basis[:, k] = residual
    arn.hess.zero_()
    arn.hess[:, : k + 1, :k] = torch.as_tensor(block, dtype=basis.dtype, device=basis.device)
    arn.size = k


def _schur_head(h: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(Z (m, k), T (k, k)): an orthonormal basis of the invariant subspace of
    h's k >= keep largest-modulus eigenvalues (a complex pair is never
    split) and h restricted to it, Z^T h Z. A non-finite h (a sample whose
    products blew up) keeps its first basis vector only."""
    if not np.isfinite(h).all():
        return np.eye(h.shape[0])[:, :1], np.zeros((1, 1))
    moduli = np.sort(np.abs(np.linalg.eigvals(h)))[::-1]
    for p in range(min(keep, len(moduli) - 1), len(moduli)):
        if moduli[p - 1] - moduli[p] > 1e-9 * max(moduli[0], 1e-300):
            cut = 0.5 * (moduli[p - 1] + moduli[p])
            try:
                t, z, sdim = scipy.linalg.schur(h, output="real", sort=lambda re, im, c=cut: np.hypot(re, im) > c)
            except (np.linalg.LinAlgError, ValueError):
                continue  # reordering was ill-conditioned at this cut: keep more
            return z[:, :sdim], t[:sdim, :sdim]
    t, z = scipy.linalg.schur(h, output="real")
    return z, t


def largest_singular_value(
    a: Operator, at: Operator, v0: Tensor, steps: int = 30, restarts: int = 5, tol: float | None = None
) -> Estimate:
    """sigma_max of A per sample by Golub-Kahan-Lanczos bidiagonalization
    with full reorthogonalization, restarted from the top right Ritz vector.

    a, at: A and A^T, (B, N) -> (B, N); v0 (B, N) start. The residual of the
    Ritz triplet (s, u, v) is |beta_k p_k| = ||A^T u - s v|| (A v = s u holds
    exactly); error = it / s. Each step costs one product with A and one
    with A^T.
    """
    tol = default_tol(v0.dtype) if tol is None else tol
    products, v = 0, unit(v0)
    for _ in range(restarts):
        gk = _golub_kahan(a, at, v, steps, tol, check_every=5)
        products += 2 * gk.steps
        v = unit(torch.einsum("bk,bkn->bn", gk.right.to(gk.vs), gk.vs))
        if bool(((gk.error <= tol) | torch.isinf(gk.error)).all()):  # inf: non-finite products, for good
            break
    return Estimate.checked(gk.top.to(v0), gk.error.to(v0.device), tol, products, f"golub-kahan(k<={steps})",
                            "relative residual |A^T u - s v|/s")


class _Bidiagonal:
    """A Golub-Kahan run: bases U, V (B, k, N), all Ritz singular values
    (B, k) of B_k, descending, the top one `top` (B,) with its left/right
    coordinates (B, k) and its relative residual `error` (B,) (CPU float64)."""

    def __init__(self, us: Tensor, vs: Tensor, values: Tensor, left: Tensor, right: Tensor, error: Tensor) -> None:
        self.us, self.vs, self.values, self.left, self.right, self.error = us, vs, values, left, right, error
        self.top = values[:, 0]
        self.steps = us.shape[1]


def _golub_kahan(
    a: Operator,
    at: Operator,
    v: Tensor,
    steps: int,
    tol: float,
    check_every: int,
    extra_error: Callable[[Tensor], Tensor] | None = None,
    error_floor: Callable[[], Tensor] | None = None,
) -> _Bidiagonal:
    """Lower bidiagonalization A V_k = U_k B_k, A^T U_k = V_k B_k^T + beta_k v_{k+1} e_k^T.

    v (B, N) unit start. Every `check_every` steps the top singular triplet
    (s, p, q) of B_k is read (one host round trip) and the run stops once
    every sample's error |beta_k p_k| / s, plus extra_error(s) if given, is
    <= tol, or, given `error_floor` (B,), a part of the error that never
    decreases, once every sample not yet converged has a floor above tol: more
    steps cannot make it converge. A breakdown leaves zero vectors and exact
    zeros in B_k.
    """
    batch, n = v.shape
    steps = min(steps, n)
    us = torch.zeros(batch, steps, n, dtype=v.dtype, device=v.device)
    vs = torch.zeros_like(us)
    bd = torch.zeros(batch, steps, steps, dtype=v.dtype, device=v.device)
    for j in range(steps):
        vs[:, j] = v
        u, alpha = _next_unit(a(v), us[:, :j])
        bd[:, j, j] = alpha
        us[:, j] = u
        v, beta = _next_unit(at(u), vs[:, : j + 1])
        if j + 1 < steps:
            bd[:, j, j + 1] = beta
        if (j + 1) % check_every and j + 1 < steps:
            continue
        small = bd[:, : j + 1, : j + 1].detach().to("cpu", torch.float64)
        bad = ~torch.isfinite(small).all(dim=(1, 2))  # a sample whose products went non-finite
        p, s, qh = torch.linalg.svd(torch.where(bad[:, None, None], 0.0, small))
        top = s[:, 0]
        error = beta.detach().cpu().double().abs() * p[:, -1, 0].abs() / top.clamp_min(1e-300)
        if extra_error is not None:
            error = error + extra_error(top)
        error = torch.where(bad, float("inf"), error.nan_to_num(float("inf")))
        s = torch.where(bad[:, None], float("nan"), s)
        done = (error <= tol) | bad
        if error_floor is not None:
            done = done | (error_floor() > tol)
        if bool(done.all()) or j + 1 == steps:
            break
    k = j + 1
    return _Bidiagonal(us[:, :k], vs[:, :k], s, p[:, :, 0], qh[:, 0, :], error)


def _next_unit(w: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """w orthogonalized against basis (B, k, N) and normalized, and its norm
    (zero, with a zero vector, where only rounding noise is left)."""
    if basis.shape[1]:
        w_orth, _ = orthogonalize(w, basis)
    else:
        w_orth = w
    noise = 10 * w.shape[1] ** 0.5 * torch.finfo(w.dtype).eps * w.norm(dim=1)
    norm = w_orth.norm(dim=1)
    norm = torch.where(norm <= noise, torch.zeros_like(norm), norm)
    return torch.where((norm > 0)[:, None], w_orth / norm.clamp_min(torch.finfo(w.dtype).tiny)[:, None],
                       torch.zeros_like(w)), norm


def smallest_singular_value(
    f: Map,
    h: Tensor,
    steps: int = 20,
    solve_steps: int = 100,
    solve_restarts: int = 10,
    solve_tol: float | None = None,
    tol: float = 1e-2,
    seed: int = 0,
) -> Estimate:
    """sigma_min(I - df/dh) at h, per sample, by Golub-Kahan on (I - J)^-1.

    Args:
        f, h: the map and the point, as for `spectral_radius`.
        steps: Golub-Kahan steps on the inverse at most; each is one GMRES
            solve with I - J (JVPs) and one with I - J^T (VJPs).
        solve_steps, solve_restarts: GMRES Krylov dimension and cycles.
        solve_tol: GMRES relative residual (default: max(tol / 20, the
            dtype's `default_tol`)); it perturbs the inverse by that much
            relatively, which the error estimate includes.
        tol: relative error that counts as converged.
    Returns:
        Estimate of sigma = 1 / s, s the top Ritz singular value of the
        inverse, with error = |beta_k p_k| / s (the Ritz residual on the
        inverse) + the largest GMRES relative residual + eps * ||I - J|| / sigma
        (the rounding of one product, eps of h's dtype, relative to sigma).
        Some singular value of I - J lies within that relative error of
        sigma, to first order; that it is the smallest is what inverse
        iteration finds first from a random start, not a bound. The run
        stops early, unconverged, once an inner solve missed tol for every
        sample that has not converged (its residual is part of the error).
    """
    inner_tol = max(tol / 20, default_tol(h.dtype)) if solve_tol is None else solve_tol
    jv, jtv = jvp_operator(f, h), vjp_operator(f, h)
    log = _SolveLog(h.shape[0])

    def solver(op: Operator) -> Operator:
        return lambda rhs: log.add(gmres(op, rhs, steps=solve_steps, restarts=solve_restarts, tol=inner_tol))

    eps = torch.finfo(h.dtype).eps

    def extra_error(top: Tensor) -> Tensor:
        return log.worst_residual + eps * log.norm * top

    # The worst solve residual only grows and is part of the error: once it passes tol for every
    # unconverged sample, the estimate cannot converge and further (expensive) solves are wasted.
    gk = _golub_kahan(solver(lambda v: v - jv(v)), solver(lambda u: u - jtv(u)), unit(random_start(h, seed)),
                      steps, tol, check_every=1, extra_error=extra_error, error_floor=lambda: log.worst_residual)
    sigma = (1.0 / gk.top.clamp_min(1e-300)).to(h)
    return Estimate.checked(sigma, gk.error.to(h.device), tol, log.products,
                            f"inverse golub-kahan(k={gk.steps}) + gmres(m={solve_steps})",
                            "Ritz residual on (I-J)^-1 + solve residual + rounding, relative",
                            {"solve_residual": log.worst_residual.to(h.device)})


class _SolveLog:
    """What the inner solves of an inverse iteration cost and reached, per sample (CPU float64)."""

    def __init__(self, batch: int) -> None:
        self.products = 0
        self.worst_residual = torch.zeros(batch, dtype=torch.float64)
        self.norm = torch.zeros(batch, dtype=torch.float64)

    def add(self, est: Estimate) -> Tensor:
        self.products += est.products
        self.worst_residual = torch.maximum(self.worst_residual, est.error.detach().cpu().double())
        self.norm = torch.maximum(self.norm, est.details["norm_estimate"].detach().cpu().double())
        return est.value
