"""What every probe axis reads: the settings, the map, the loop's trajectory,
the fixed point it reaches and the spectra there, each computed once on
first use (`functools.cached_property`) and shared by the axes.

A "core" is any object with `encode(x) -> e`, `init_state(e) -> h0`,
`step(h, e) -> h` and `readout(h) -> logits`; optional `looped`,
`has_input_injection` and `weight_matrices()` refine the report. The map is
F(h) = step(h, e) at the fixed input encoding e of each sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.linalg import jvp_operator, vjp_operator
from fpstab.fixedpoint.probes.records import Thresholds, Verdict, fixed_point_verdict
from fpstab.fixedpoint.settings import ProbeSettings
from fpstab.fixedpoint.solvers import SolveResult, solve
from fpstab.fixedpoint.spectra import largest_singular_value, smallest_singular_value, spectral_radius
from fpstab.fixedpoint.krylov import random_start
from fpstab.fixedpoint.trajectory import Trajectory, iterate

# sigma_max(I - J) and ||J||_2 only describe (no verdict reads them): 0.1 % is plenty.
NORM_TOL = 1e-3


class Core(Protocol):
    def encode(self, x: Tensor) -> Tensor: ...
    def init_state(self, e: Tensor) -> Tensor: ...
    def step(self, h: Tensor, e: Tensor) -> Tensor: ...
    def readout(self, h: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class FixedPoint:
    """The fixed point the loop reaches from h0, per sample.

    state:    (B, ...) h*: the solver's polish of h_T where it converged, else h_T.
    loop_converged: (B,) bool, r_T < tol.
    polish:   the solver run from h_T.
    distance: (B,) ||h* - h_T|| / ||h_T||.
    reached:  (B,) bool, the loop converged and the polished point is within
              path_distance of h_T (the solver did not jump elsewhere).
    """

    state: Tensor
    loop_converged: Tensor
    polish: SolveResult
    distance: Tensor
    reached: Tensor


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


class ProbeContext:
    """The probe's shared state for one input batch x (B, n_tokens, in_dim)."""

    def __init__(self, core: Core, x: Tensor, targets: Tensor | None, settings: ProbeSettings,
                 thresholds: Thresholds) -> None:
        self.core, self.x, self.targets = core, x, targets
        self.settings, self.thresholds = settings, thresholds
        self.dtype = x.dtype
        with torch.no_grad():
            self.e = core.encode(x).detach()
            self.h0 = core.init_state(self.e).detach()

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def step(self, h: Tensor) -> Tensor:
        """F(h) = step(h, e) at this batch's e."""
        return self.core.step(h, self.e)

    def generator(self, purpose: int) -> torch.Generator:
        """A CPU generator for one purpose (directions, starts, ...), derived from the seed."""
        return torch.Generator(device="cpu").manual_seed(self.settings.seed * 1009 + purpose)

    @cached_property
    def loop(self) -> Trajectory:
        """T iterations of the model's own loop from h0."""
        return iterate(self.step, self.h0, self.settings.iters)

    @cached_property
    def fixed_point(self) -> FixedPoint:
        s, loop = self.settings, self.loop
        start = torch.where(_expand(loop.nonfinite, loop.final), self.h0, loop.final)
        polish = solve(self.step, start, solver=s.solver, max_iter=s.solver_iters, tol=s.tol)
        state = torch.where(_expand(polish.converged, start), polish.state, start)
        size = start.flatten(1).norm(dim=1).clamp_min(torch.finfo(start.dtype).tiny)
        distance = (state - start).flatten(1).norm(dim=1) / size
        reached = loop.converged(s.tol) & polish.converged & (distance <= self.thresholds.path_distance)
        return FixedPoint(state, loop.converged(s.tol), polish, distance, reached)

    @cached_property
    def spectral_radius(self) -> Estimate:
        """rho(dF/dh) at h*."""
        s = self.settings
        return spectral_radius(self.step, self.fixed_point.state, steps=s.krylov_steps, restarts=s.krylov_restarts,
                               seed=s.seed)

    @cached_property
    def sigma_min(self) -> Estimate:
        """sigma_min(I - dF/dh) at h*."""
        s = self.settings
        return smallest_singular_value(self.step, self.fixed_point.state, steps=s.inverse_steps,
                                       solve_steps=s.gmres_steps, solve_restarts=s.gmres_restarts, seed=s.seed)

    @cached_property
    def sigma_max(self) -> Estimate:
        """sigma_max(I - dF/dh) at h*."""
        jv, jtv = self._operators
        return largest_singular_value(lambda v: v - jv(v), lambda u: u - jtv(u), self._krylov_start,
                                      steps=self.settings.krylov_steps, restarts=self.settings.krylov_restarts,
                                      tol=NORM_TOL)

    @cached_property
    def jacobian_norm(self) -> Estimate:
        """||dF/dh||_2 at h*."""
        jv, jtv = self._operators
        return largest_singular_value(jv, jtv, self._krylov_start, steps=self.settings.krylov_steps,
                                      restarts=self.settings.krylov_restarts, tol=NORM_TOL)

    @cached_property
    def _operators(self) -> tuple[Any, Any]:
        h = self.fixed_point.state
        return jvp_operator(self.step, h), vjp_operator(self.step, h)

    @property
    def _krylov_start(self) -> Tensor:
        return random_start(self.fixed_point.state, self.settings.seed + 1)

    @cached_property
    def fixed_point_status(self) -> list[str]:
        """Per sample, one of records.FIXED_POINT_STATUSES (see there)."""
        fp, rho, loop = self.fixed_point, self.spectral_radius, self.loop
        tail = tail_rate(loop.residuals, self.settings.tail, floor=100 * torch.finfo(self.dtype).eps)
        margin = rho.value.double().cpu() * (1 + rho.error.cpu().clamp_max(1.0))
        out = []
        for b in range(self.batch):
            if bool(loop.nonfinite[b]):
                out.append("diverged")
            elif not bool(rho.converged[b]):
                out.append("rho unconverged")
            elif float(rho.value[b]) >= 1:
                out.append("repelling")
            elif float(margin[b]) >= 1:  # rho < 1, but not by more than its error
                out.append("rho unconverged")
            elif bool(fp.reached[b]):
                out.append("attracting")
            elif float(tail[b]) < 1 - 1e-3:  # a limit cycle's residual ratio sits at 1
                out.append("still contracting")
            else:
                out.append("not reached")
        return out

    @cached_property
    def gate(self) -> Verdict | None:
        """The verdict the fixed points alone decide, for every axis that needs
        one: too few samples reach an attracting fixed point (and why); None
        when enough do."""
        return fixed_point_verdict(self.fixed_point_status, self.spectral_radius.value,
                                   self.thresholds.converged_share)

    @property
    def skips_solves(self) -> bool:
        """True when the axes leave out their fixed-point solves (sigma_min of
        I - J, the IFT and implicit-gradient GMRES, finite differences): the
        gate has decided the verdict and `always_solve` is off."""
        return self.gate is not None and not self.settings.always_solve

    @cached_property
    def attracting(self) -> Tensor:
        """(B,) bool: the loop reached an attracting fixed point."""
        return torch.tensor([s == "attracting" for s in self.fixed_point_status])

    def loss(self, logits: Tensor) -> Tensor:
        """The backprop loss of the geometry axis: summed cross-entropy on the
        targets, or <g, logits> for a fixed seeded g without them."""
        if self.targets is not None:
            return torch.nn.functional.cross_entropy(logits.flatten(0, -2).float(), self.targets.flatten(),
                                                     reduction="sum")
        g = torch.randn(logits.shape, generator=self.generator(7), dtype=torch.float64).to(logits)
        return (logits * g).sum()


def tail_rate(trace: Tensor, tail: int, floor: float) -> Tensor:
    """(B,) geometric mean of r_{t+1}/r_t over each sample's last `tail` steps
    above the rounding floor (once r sits at machine precision its ratio is 1
    and says nothing about contraction); nan where no such step exists."""
    r = trace.nan_to_num(float("inf"))
    valid = (r[:, 1:] > floor) & (r[:, :-1] > floor) & torch.isfinite(r[:, 1:]) & torch.isfinite(r[:, :-1])
    from_end = valid.flip(1).cumsum(1).flip(1)
    use = valid & (from_end <= tail)
    log_ratio = torch.where(use, (r[:, 1:] / r[:, :-1].clamp_min(floor)).log(), torch.zeros_like(r[:, 1:]))
    return (log_ratio.sum(1) / use.sum(1)).exp()
