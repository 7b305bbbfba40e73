"""Krylov estimates against dense linear algebra, with Krylov dimensions far
below the state size, on maps built to be hard: I - J near singular,
clustered complex pairs near the unit circle, non-normal Jacobians. Each
estimate must be right to its stated error, or say it did not converge."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toymaps import linear_map, random_matrices, spectrum_matrices

from fpstab.fixedpoint import (
    dense_jacobian,
    gmres,
    largest_singular_value,
    smallest_singular_value,
    spectral_radius,
)
from fpstab.fixedpoint.linalg import jvp_operator, vjp_operator

N = 400  # state size; the Krylov dimensions below stay <= 100
seeds = st.integers(0, 10_000)


def dense_rho(mats: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvals(mats).abs().amax(dim=1)


def dense_sigma_min(mats: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(torch.eye(mats.shape[1], dtype=mats.dtype) - mats)[:, -1]


@pytest.mark.parametrize("rho", [0.99, 0.999])
def test_sigma_min_of_a_near_singular_i_minus_j(rho: float) -> None:
    # Two close real eigenvalues at the edge of a non-normal J: sigma_min(I - J)
    # is below 1 - rho and, for one sample, clustered with the next one.
    mats = spectrum_matrices(N, 2, top=(rho, 0.995 * rho), bulk=0.6, nonnormal=1.0, seed=1)
    truth = dense_sigma_min(mats)
    est = smallest_singular_value(linear_map(mats), torch.zeros(2, N, dtype=torch.float64))
    assert est.converged.all()
    assert ((est.value - truth).abs() / truth).max() < 0.02
    assert truth.max() < 1 - rho  # the case is what it claims


def test_spectral_radius_of_clustered_complex_pairs_beyond_one() -> None:
    pairs = tuple((1.02 - 0.004 * i, 0.05 + 0.013 * i) for i in range(8))
    mats = spectrum_matrices(N, 2, pairs=pairs, bulk=0.9, nonnormal=0.3, seed=2)
    est = spectral_radius(linear_map(mats), torch.zeros(2, N, dtype=torch.float64), steps=40)
    assert est.converged.all() and est.products < N
    assert torch.allclose(est.value, dense_rho(mats), rtol=1e-6)


def test_gmres_at_rho_0_9999() -> None:
    mats = spectrum_matrices(N, 2, top=(0.9999, 0.99), bulk=0.6, nonnormal=0.5, seed=3)
    b = torch.randn(2, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = gmres(lambda v: v - linear_map(mats)(v), b)
    truth = torch.linalg.solve(torch.eye(N, dtype=torch.float64) - mats, b)
    assert est.converged.all()
    assert ((est.value - truth).norm(dim=1) / truth.norm(dim=1)).max() < 0.02
    # error is the true relative residual, not the cycle's own estimate
    recomputed = (b - (est.value - linear_map(mats)(est.value))).norm(dim=1) / b.norm(dim=1)
    assert torch.allclose(est.error.double(), recomputed, rtol=1e-3, atol=1e-14)


def test_too_small_a_budget_says_unconverged() -> None:
    mats = spectrum_matrices(N, 2, top=(0.999, 0.998), pairs=((0.9985, 0.03),), bulk=0.9, nonnormal=0.5, seed=4)
    f, h = linear_map(mats), torch.zeros(2, N, dtype=torch.float64)
    rho = spectral_radius(f, h, steps=4, restarts=1)
    assert not rho.converged.any() and (rho.error > rho.tol).all()
    smin = smallest_singular_value(f, h, steps=1, solve_steps=5, solve_restarts=1)
    assert not smin.converged.any()
    solve = gmres(lambda v: v - f(v), torch.ones(2, N, dtype=torch.float64), steps=3, restarts=1)
    assert not solve.converged.any() and solve.products == 4


@settings(max_examples=8)
@given(seed=seeds, rho=st.floats(0.3, 1.1), nonnormal=st.floats(0.0, 1.0))
def test_spectral_radius_matches_dense(seed: int, rho: float, nonnormal: float) -> None:
    mats = spectrum_matrices(N, 2, top=(rho,), pairs=((0.97 * rho, 0.4),), bulk=0.8 * rho, nonnormal=nonnormal,
                             seed=seed)
    est = spectral_radius(linear_map(mats), torch.zeros(2, N, dtype=torch.float64), steps=30)
    assert est.converged.all()
    assert torch.allclose(est.value, dense_rho(mats), rtol=1e-6)


@pytest.mark.parametrize("c", [2e-5, 2e-3, 0.2])
def test_rho_of_a_small_operator_computed_with_cancellation(c: float) -> None:
    """J v = -2 v + (2 - c) v = c v: the Krylov space is one-dimensional and the rest is rounding
    noise, far below eps in absolute size; normalizing it by an absolute floor corrupts the basis."""
    rho = spectral_radius(lambda h: -2.0 * h + (2.0 - c) * h, torch.zeros(2, 12, dtype=torch.float64))
    assert rho.converged.all()
    assert torch.allclose(rho.value, torch.full((2,), c, dtype=torch.float64), rtol=1e-9)


@settings(max_examples=8)
@given(seed=seeds, scale=st.sampled_from([1e-8, 1e-5, 1e-3, 1.0, 1e4]))
def test_krylov_results_scale_with_the_operator(seed: int, scale: float) -> None:
    """rho(sJ) = s rho(J) and sigma_max(sJ) = s sigma_max(J) at every scale: a tiny operator
    (a core whose branches cancel) must not be mistaken for a breakdown or mis-normalized."""
    mats = random_matrices(seed, 2, 60, gain=1.0)
    h = torch.zeros(2, 60, dtype=torch.float64)
    rho = spectral_radius(linear_map(scale * mats), h, steps=60)
    assert rho.converged.all()
    assert torch.allclose(rho.value, scale * dense_rho(mats), rtol=1e-6)
    a = scale * mats
    smax = largest_singular_value(lambda v: torch.einsum("bij,bj->bi", a, v),
                                  lambda v: torch.einsum("bji,bj->bi", a, v), torch.randn(2, 60, dtype=torch.float64),
                                  steps=60)
    assert smax.converged.all() and torch.allclose(smax.value, torch.full((2,), scale, dtype=torch.float64), rtol=1e-6)


@settings(max_examples=8)
@given(seed=seeds, gain=st.floats(0.2, 2.5), n=st.integers(60, 120))
def test_krylov_matches_dense_on_a_nonlinear_map(seed: int, gain: float, n: int) -> None:
    a = random_matrices(seed, 2, n, gain)
    c = torch.randn(2, n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    f = lambda h: torch.tanh(torch.einsum("bij,bj->bi", a, h) + c)  # noqa: E731
    h = torch.randn(2, n, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    jac = dense_jacobian(f, h)
    sv = torch.linalg.svdvals(torch.eye(n, dtype=torch.float64) - jac)
    start = torch.randn(2, n, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
    smax = largest_singular_value(lambda v: v - jvp_operator(f, h)(v), lambda u: u - vjp_operator(f, h)(u),
                                  start, steps=20)
    smin = smallest_singular_value(f, h, steps=20)
    # 20 steps, far below n: at a small gain the top singular values of I - J cluster (seed 10000,
    # gain 0.2, n 119: 1.0996, 1.0990, 1.0978), and 20 steps may stop at a relative residual of ~2e-8,
    # above tol 1e-10. It must then say so; where it converged it matches, and either way it lies
    # within its stated error of a singular value.
    assert torch.allclose(smax.value[smax.converged], sv[smax.converged, 0], rtol=1e-6)
    smax_gap = (smax.value[:, None] - sv).abs().min(dim=1).values
    assert (smax_gap <= 2 * smax.error * smax.value + 1e-12).all()
    # Where it says it converged, sigma_min is within its stated error of a
    # singular value of I - J. (That it is the smallest one is what inverse
    # iteration finds first: a start nearly orthogonal to the smallest
    # singular vector, with the next one close, can return the next one.)
    gap = (smin.value[:, None] - sv).abs().min(dim=1).values
    assert ((gap <= 2 * smin.error * smin.value + 1e-12) | ~smin.converged).all()
    # 1 / (a Ritz value of the inverse) undershoots only by what the inexact solves perturb
    assert (smin.value >= sv[:, -1] * (1 - smin.error)).all()
    rho = spectral_radius(f, h, steps=24)
    close = (rho.value - torch.linalg.eigvals(jac).abs().amax(1)).abs() <= 1e-6 * rho.value
    assert (close | ~rho.converged).all()


def test_a_sample_whose_map_goes_non_finite_is_reported_not_raised() -> None:
    mats = spectrum_matrices(40, 2, top=(0.6,), bulk=0.3, seed=5)

    def f(h: torch.Tensor) -> torch.Tensor:
        out = linear_map(mats)(h)
        return torch.cat([out[:1], out[1:] * float("nan")])

    h = torch.ones(2, 40, dtype=torch.float64)
    for est in (spectral_radius(f, h, steps=10), smallest_singular_value(f, h, steps=10),
                gmres(lambda v: v - f(v), h, steps=10)):
        assert est.converged.tolist() == [True, False] and torch.isinf(est.error[1])
    assert torch.allclose(spectral_radius(f, h, steps=10).value[0], dense_rho(mats)[0])


def test_restarts_stop_once_every_sample_went_non_finite() -> None:
    # NaN never leaves a Krylov basis: restarting could only spend products (a diverged run's weights).
    poisoned = lambda v: v * float("nan")  # noqa: E731
    h = torch.ones(2, 40, dtype=torch.float64)
    rho = spectral_radius(poisoned, h, steps=10, restarts=20)
    smax = largest_singular_value(poisoned, poisoned, h, steps=10, restarts=20)
    for est in (rho, smax):
        assert not est.converged.any() and torch.isinf(est.error).all()
    assert rho.products == 10 and smax.products <= 2 * 10


def test_sigma_min_stops_once_an_inner_solve_has_missed_its_tolerance() -> None:
    """A failed GMRES solve bounds the estimate's error from below for good: the inverse
    iteration must stop there, unconverged, not spend its other 19 steps' solves."""
    mats = spectrum_matrices(N, 2, top=(0.999, 0.998), pairs=((0.9985, 0.03),), bulk=0.9, nonnormal=0.5, seed=4)
    f, h = linear_map(mats), torch.zeros(2, N, dtype=torch.float64)
    smin = smallest_singular_value(f, h, steps=20, solve_steps=5, solve_restarts=2)
    assert not smin.converged.any() and (smin.details["solve_residual"] > smin.tol).all()
    one_step = 2 * 2 * (5 + 1) + 4  # two solves of 2 cycles of 5 (+1) products, with residual checks
    assert smin.products <= one_step, smin.products
    good = smallest_singular_value(f, h, steps=20)  # with the default budget the same case converges
    assert good.converged.all() and good.products > one_step
