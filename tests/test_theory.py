"""Property tests of the theory's claims (Labovich 2026, arXiv 2604.15259: no recall gives no
strong input-dependence; recall with outer normalization gives reachable, input-smooth fixed points).

Each draws its weights and inputs with hypothesis and asserts the claim on
the real cores of `architectures` where the claim is about them, and on
small maps with a known contraction factor where it is about any map.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toymaps import TanhCore
from torch import nn

from fpstab.architectures import CoreConfig, build_core
from fpstab.architectures.block import Block
from fpstab.fixedpoint import (
    dense_jacobian,
    implicit_input_jacobian,
    iterate,
    probe,
    smallest_singular_value,
    solve,
    spectral_radius,
)

seeds = st.integers(0, 10_000)
D, HEADS, TOKENS = 8, 2, 5


def tiny_core(arch: str, norm: str = "outer", seed: int = 0, scale: float = 1.0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    core = build_core(CoreConfig(arch=arch, norm=norm, d_model=D, n_heads=HEADS, in_dim=3, out_dim=2, **kw)).double()
    with torch.no_grad():
        for p in core.parameters():
            p.mul_(scale)
    return core


def inputs(seed: int, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, TOKENS, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- no recall: an autonomous map -------------------------------------------------


@settings(max_examples=12)
@given(seed=seeds, scale=st.floats(0.3, 3.0), norm=st.sampled_from(["inner", "outer", "both", "peri"]))
def test_no_recall_step_ignores_the_input(seed: int, scale: float, norm: str) -> None:
    core = tiny_core("no_recall", norm, seed, scale)
    e1, e2 = core.encode(inputs(seed)), core.encode(inputs(seed + 1))
    h = torch.randn_like(e1)
    assert torch.equal(core.step(h, e1), core.step(h, e2))
    # and so the whole trajectory from a fixed h0 does not depend on x
    traj = [iterate(lambda s, e=e: core.step(s, e), h, 20).final for e in (e1, e2)]
    assert torch.equal(traj[0], traj[1])
    # J_e is exactly zero: the probe says "autonomous map" instead of estimating it
    jv = torch.func.jvp(lambda e: core.step(h, e), (e1,), (torch.randn_like(e1),))[1]
    assert torch.count_nonzero(jv) == 0


@settings(max_examples=10)
@given(seed=seeds, gain=st.floats(0.05, 0.9))
def test_contractive_no_recall_map_has_one_fixed_point_for_all_inputs(seed: int, gain: float) -> None:
    core = TanhCore(d=6, in_dim=3, gain=gain, recall=False, seed=seed)
    x = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    e = core.encode(x)
    fixed = solve(lambda h: core.step(h, e), core.init_state(e), solver="iterate", tol=1e-12, max_iter=2000).state
    assert torch.allclose(fixed, fixed[:1].expand_as(fixed), atol=1e-9)  # h0 = e(x) differs; h* does not


def test_probe_reports_the_collapse_of_a_contractive_no_recall_map() -> None:
    core = TanhCore(d=6, in_dim=3, gain=0.6, recall=False, seed=0)
    x = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dep = probe(core, x, iters=100, axes=["input_dependence"]).axes["input_dependence"]
    assert dep.verdict.status == "fail" and "autonomous map" in dep.note
    assert dep.figures["distinct_fixed_points"].value == 1 and dep.figures["samples"].value == 6


# --- normalization placement -------------------------------------------------------


@settings(max_examples=12)
@given(seed=seeds, scale=st.floats(0.5, 20.0), arch=st.sampled_from(["no_recall", "standard_recall", "internal_recall"]))
def test_outer_norm_keeps_every_token_at_rms_one(seed: int, scale: float, arch: str) -> None:
    core = tiny_core(arch, "outer", seed, scale)
    e = core.encode(inputs(seed) * scale)
    h = core.init_state(e)
    for _ in range(25):
        h = core.step(h, e)
        rms = h.pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.ones_like(rms), atol=1e-6)


@settings(max_examples=10)
@given(seed=seeds, drift=st.floats(0.1, 5.0), steps=st.integers(10, 100))
def test_inner_norm_admits_weights_under_which_the_state_grows_without_bound(seed: int, drift: float, steps: int) -> None:
    # Zero the branch weights and give the MLP a constant output bias c: under
    # inner (pre) norm h_t = h_0 + t c, so ||h_t|| grows linearly in t, past any
    # bound. The same weights under outer norm stay on the RMS-1 sphere.
    norms = {}
    for norm in ("inner", "outer"):
        core = tiny_core("no_recall", norm, seed)
        block = core.blocks[0]
        with torch.no_grad():
            for p in block.parameters():
                p.zero_()
            block.mlp.fc2.bias.fill_(drift)
        e = core.encode(inputs(seed))
        h = iterate(lambda s: core.step(s, e), core.init_state(e), steps).final
        norms[norm] = h.pow(2).mean(-1).sqrt()
        if norm == "inner":
            expected = (core.init_state(e) + steps * drift)
            assert torch.allclose(h, expected, atol=1e-8 * steps * drift)
    assert (norms["inner"] >= steps * drift - norms["inner"].new_tensor(10.0)).all()
    assert torch.allclose(norms["outer"], torch.ones_like(norms["outer"]), atol=1e-6)


# --- recall: the fixed point depends smoothly on the input --------------------------


@settings(max_examples=8)
@given(seed=seeds, gain=st.floats(0.1, 0.85))
def test_ift_equals_dense_jacobian_and_finite_differences(seed: int, gain: float) -> None:
    core = TanhCore(d=5, in_dim=2, gain=gain, recall=True, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 2, generator=gen, dtype=torch.float64)
    e = core.encode(x).detach()
    star = solve(lambda h: core.step(h, e), e, solver="anderson", tol=1e-13, max_iter=500)
    assert star.converged.all()
    # unique fixed point: every start reaches the same state
    other = solve(lambda h: core.step(h, e), torch.randn_like(e), solver="iterate", tol=1e-13, max_iter=2000)
    assert torch.allclose(star.state, other.state, atol=1e-10)
    u = torch.randn(e.shape, generator=gen, dtype=torch.float64)
    est = implicit_input_jacobian(core.step, star.state, e, u, tol=1e-12)
    assert est.converged.all()
    w = est.value
    # dense: (I - J_h)^-1 J_e u, with both Jacobians from jacrev
    n = e[0].numel()
    j_h = dense_jacobian(lambda h: core.step(h, e), star.state)
    j_e = dense_jacobian(lambda ee: core.step(star.state, ee), e)
    dense = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - j_h, (j_e @ u.reshape(2, n, 1)))
    assert torch.allclose(w.reshape(2, n), dense[..., 0], atol=1e-9)
    eps = 1e-5
    plus = solve(lambda h: core.step(h, e + eps * u), star.state, tol=1e-14, max_iter=500).state
    minus = solve(lambda h: core.step(h, e - eps * u), star.state, tol=1e-14, max_iter=500).state
    assert torch.allclose(w, (plus - minus) / (2 * eps), atol=1e-7)


@settings(max_examples=4)
@given(seed=seeds, arch=st.sampled_from(["standard_recall", "internal_recall", "fully_looped"]))
def test_krylov_spectra_equal_dense_on_a_real_core(seed: int, arch: str) -> None:
    core = tiny_core(arch, seed=seed)
    e = core.encode(inputs(seed, batch=2)).detach()
    h = iterate(lambda s: core.step(s, e), core.init_state(e), 30).final
    f = lambda s: core.step(s, e)  # noqa: E731
    n = e[0].numel()
    jac = dense_jacobian(f, h)
    rho = torch.linalg.eigvals(jac).abs().amax(1)
    sv = torch.linalg.svdvals(torch.eye(n, dtype=torch.float64) - jac)
    est = spectral_radius(f, h, steps=24)  # << n = 40
    assert est.converged.all() and torch.allclose(est.value, rho, rtol=1e-5)
    s_min = smallest_singular_value(f, h, steps=20)
    assert s_min.converged.all() and torch.allclose(s_min.value, sv[:, -1], rtol=2 * s_min.tol)


# --- the scalar stability model (Labovich App. B.2) ---------------------------------


class Scale(nn.Module):
    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gain * z


def scalar_block(placement: str, x: float, y: float) -> Block:
    """The real Block with its branches linearized: recall gain x (W_x = x I),
    attention branch gain y, MLP branch zero, no norms."""
    cfg = CoreConfig(arch="standard_recall", norm="inner", d_model=4, n_heads=1, in_dim=1, out_dim=1)
    block = Block(cfg, placement, norm="inner").double()
    block.pre_norm = nn.Identity()
    block.attn, block.mlp = Scale(y), Scale(0.0)
    with torch.no_grad():
        block.recall.W_x.weight.copy_(x * torch.eye(4))
        block.recall.W_x.bias.zero_()
    return block


@settings(max_examples=40)
@given(x=st.floats(-3, 3), y=st.floats(-3, 3))
def test_scalar_model_stability_sets(x: float, y: float) -> None:
    gains = {"external": abs((1 + y) * x), "internal": abs(1 + x * y)}
    e = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for placement, gain in gains.items():
        block = scalar_block(placement, x, y)
        f = lambda h, b=block: b(h, b.loop_input(e))  # noqa: E731
        h = torch.zeros_like(e)
        rho = spectral_radius(f, h)
        assert rho.converged.all(), placement
        assert torch.allclose(rho.value, torch.full_like(rho.value, gain), atol=1e-9), placement
        if abs(gain - 1) < 0.05:
            continue  # too close to the boundary to tell in a few hundred steps
        res = solve(f, h + 1.0, solver="iterate", tol=1e-8, max_iter=600)
        assert bool(res.converged.all()) == (gain < 1), (placement, gain)
