"""The solver, the matrix-free linear algebra and the gradients, on maps with known answers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toymaps import TanhCore, random_matrices

from fpstab import fixedpoint
from fpstab.fixedpoint import dense_jacobian, gmres, implicit_gradient, iterate, phantom_gradient, solve, spectral_radius
from fpstab.fixedpoint.krylov import default_tol
from fpstab.fixedpoint.linalg import jvp_operator

seeds = st.integers(0, 10_000)


def tanh_map(seed: int, batch: int, n: int, gain: float):
    a = random_matrices(seed, batch, n, gain)
    c = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return lambda h: torch.tanh(torch.einsum("bij,bj->bi", a, h) + c)


@settings(max_examples=15)
@given(seed=seeds, gain=st.floats(0.1, 0.8))
def test_solvers_agree_on_contractions(seed: int, gain: float) -> None:
    f = tanh_map(seed, 3, 12, gain)
    h0 = torch.zeros(3, 12, dtype=torch.float64)
    results = {s: solve(f, h0, solver=s, tol=1e-10, max_iter=300) for s in fixedpoint.SOLVERS}
    for name, res in results.items():
        assert res.converged.all(), name
        assert not res.diverged.any(), name
        assert (f(res.state) - res.state).norm(dim=1).max() < 1e-8, name
    ref = results["iterate"].state
    for name, res in results.items():
        assert torch.allclose(res.state, ref, atol=1e-8), name


def test_result_is_explicit_about_the_state_it_returns() -> None:
    f = tanh_map(0, 2, 6, 0.5)
    h0 = torch.zeros(2, 6, dtype=torch.float64)
    best = solve(f, h0, solver="iterate", tol=1e-6, returns="best")
    final = solve(f, h0, solver="iterate", tol=1e-6, returns="final")
    assert best.returned == "best" and torch.equal(best.state, best.best)
    assert final.returned == "final" and torch.equal(final.state, final.final)
    assert best.residuals.shape == (2, best.nfe)
    # steps: first evaluation below tol, consistent with the trace
    for b in range(2):
        s = int(best.steps[b])
        assert best.residuals[b, s - 1] < 1e-6 and (best.residuals[b, : s - 1] >= 1e-6).all()


def test_expanding_map_is_reported_diverged_not_raised() -> None:
    f = lambda h: 3.0 * h + 1.0  # noqa: E731  repelling fixed point, iteration escapes
    res = solve(f, torch.ones(2, 4), solver="iterate", max_iter=200)
    assert res.diverged.all() and not res.converged.any()
    assert res.failure is not None and res.nfe < 200  # stopped once every sample blew up


def test_nan_map_is_reported_diverged_per_sample() -> None:
    def f(h: torch.Tensor) -> torch.Tensor:
        out = 0.5 * h + 1.0  # fixed point 2
        out[1] = float("nan")  # sample 1 breaks, sample 0 contracts
        return out

    for solver in fixedpoint.SOLVERS:
        res = solve(f, torch.ones(2, 3), solver=solver, tol=1e-5, max_iter=60)
        assert res.diverged.tolist() == [False, True], solver
        assert res.converged[0] and not res.converged[1], solver
        assert torch.isinf(res.residuals[1]).all(), solver


def test_bad_arguments_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="anderson"):
        solve(lambda h: h, torch.zeros(1, 2), solver="newton")
    with pytest.raises(ValueError, match="best"):
        solve(lambda h: h, torch.zeros(1, 2), returns="lowest")
    with pytest.raises(ValueError, match="batched"):
        solve(lambda h: h, torch.zeros(3))


def test_spectral_radius_sees_a_complex_pair() -> None:
    # A rotation by 90 degrees scaled by 0.9: eigenvalues +-0.9i. Power
    # iteration on it never settles; Arnoldi gets the modulus exactly.
    rot = torch.tensor([[0.0, -0.9], [0.9, 0.0]], dtype=torch.float64)
    f = lambda h: h @ rot.T  # noqa: E731
    est = spectral_radius(f, torch.ones(3, 2, dtype=torch.float64))
    assert est.converged.all() and torch.allclose(est.value, torch.full((3,), 0.9, dtype=torch.float64))


def test_dense_jacobian_matches_jacrev() -> None:
    f = tanh_map(3, 2, 5, 0.7)
    h = torch.randn(2, 5, dtype=torch.float64)
    full = torch.func.jacrev(f)(h)  # (B, N, B, N), block diagonal
    jac = dense_jacobian(f, h)
    for b in range(2):
        assert torch.allclose(jac[b], full[b, :, b, :])


def test_gmres_solves_i_minus_j() -> None:
    f = tanh_map(5, 3, 20, 1.5)  # rho may exceed 1: GMRES does not need a contraction
    h = torch.randn(3, 20, dtype=torch.float64)
    jac = dense_jacobian(f, h)
    b = torch.randn(3, 20, dtype=torch.float64)
    jv = jvp_operator(f, h)
    est = gmres(lambda v: v - jv(v), b, steps=20, tol=1e-12)
    ref = torch.linalg.solve(torch.eye(20, dtype=torch.float64) - jac, b)
    assert est.converged.all() and est.error.max() < 1e-12 and torch.allclose(est.value, ref, atol=1e-8)


@settings(max_examples=10)
@given(seed=seeds, gain=st.floats(0.1, 0.7))
def test_implicit_gradient_equals_unrolled_in_the_limit(seed: int, gain: float) -> None:
    core = TanhCore(d=6, in_dim=3, gain=gain, recall=True, seed=seed)
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    params = list(core.parameters())

    def loss(h: torch.Tensor) -> torch.Tensor:
        return core.readout(h).pow(2).sum()

    e = core.encode(x)
    star = solve(lambda h: core.step(h, e.detach()), e.detach(), solver="anderson", tol=1e-13, max_iter=300)
    assert star.converged.all()
    g_imp = torch.autograd.grad(loss(implicit_gradient(lambda h: core.step(h, e), star.state)), params, allow_unused=True)
    e = core.encode(x)  # a fresh graph: the implicit backward freed the first one
    h = core.init_state(e)
    for _ in range(200):  # contraction <= 0.7: 0.7^200 ~ 1e-31
        h = core.step(h, e)
    g_unr = torch.autograd.grad(loss(h), params, allow_unused=True)
    for gi, gu, p in zip(g_imp, g_unr, params):
        gi = torch.zeros_like(p) if gi is None else gi
        gu = torch.zeros_like(p) if gu is None else gu
        assert torch.allclose(gi, gu, atol=1e-9, rtol=1e-7)


def test_phantom_gradient_with_many_steps_approaches_implicit() -> None:
    core = TanhCore(d=5, in_dim=2, gain=0.5, recall=True, seed=1)
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    e = core.encode(x).detach()
    star = solve(lambda h: core.step(h, e), e, tol=1e-13, max_iter=200).state
    grads = []
    for z in (implicit_gradient(lambda h: core.step(h, e), star), phantom_gradient(lambda h: core.step(h, e), star, steps=60, damping=1.0)):
        grads.append(torch.autograd.grad(z.pow(2).sum(), core.W)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-10)
    with pytest.raises(ValueError, match="damping"):
        phantom_gradient(lambda h: h, star, damping=0.0)


def test_iterate_records_the_loop_and_shows_every_state() -> None:
    f = tanh_map(2, 3, 8, 0.5)
    h0 = torch.zeros(3, 8, dtype=torch.float64)
    seen = []
    traj = iterate(f, h0, 40, observe=lambda t, h: seen.append((t, h.clone())))
    h, expected = h0, []
    for _ in range(40):
        nxt = f(h)
        expected.append((nxt - h).norm(dim=1) / nxt.norm(dim=1))
        h = nxt
    assert torch.equal(traj.final, h) and [t for t, _ in seen] == list(range(1, 41))
    assert torch.allclose(traj.residuals, torch.stack(expected, dim=1))
    first = traj.steps_to(1e-6)
    assert (traj.residuals[torch.arange(3), first - 1] < 1e-6).all() and traj.converged(1e-6).all()


def test_solver_looks_at_the_host_only_every_check_every_evaluations() -> None:
    res = solve(lambda h: h * float("nan"), torch.ones(2, 3), solver="iterate", max_iter=100, check_every=8)
    assert res.diverged.all() and res.nfe == 8  # every sample diverged at once; noticed at the first check
    res = solve(lambda h: 0.5 * h + 1.0, torch.ones(2, 3, dtype=torch.float64), solver="iterate", tol=1e-3, check_every=4)
    assert res.converged.all() and res.nfe % 4 == 0 and res.nfe < 20


def test_implicit_gradient_under_bf16_autocast_solves_in_float32() -> None:
    core = TanhCore(d=6, in_dim=3, gain=0.5, recall=True, seed=0, dtype=torch.float32)
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    e = core.encode(x).detach()
    star = solve(lambda h: core.step(h, e), e, tol=1e-6, max_iter=200).state
    solves = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = implicit_gradient(lambda h: core.step(h, e), star, on_solve=solves.append)
        loss = core.readout(z).float().pow(2).sum()
    loss.backward()
    (est,) = solves
    assert est.value.dtype == torch.float32 and est.tol == default_tol(torch.bfloat16)
    assert est.converged.all() and torch.isfinite(core.W.grad).all()
