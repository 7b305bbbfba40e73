"""The loop as the model runs it: h_{t+1} = f(h_t), and its residual trace.

`relative_residual` is the one definition of "how far from a fixed point"
used by the solvers, the probes and evaluation:

    r = ||f(h) - h|| / ||f(h)||        (norms over all non-batch dims)

`iterate` runs the plain loop for exactly T steps without host round trips
(the trace stays on the device), optionally handing every state to an
observer (e.g. to score the readout of each iteration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Map = Callable[[Tensor], Tensor]


def relative_residual(h: Tensor, fh: Tensor) -> tuple[Tensor, Tensor]:
    """(relative (B,), absolute (B,)) residual of the step h -> fh.

    relative = ||fh - h|| / ||fh||, absolute = ||fh - h||, over all non-batch
    dims, computed in at least float32; inf where h or fh is non-finite.
    """
    work = torch.promote_types(fh.dtype, torch.float32)
    diff = (fh - h).flatten(1).to(work).norm(dim=1)
    size = fh.flatten(1).to(work).norm(dim=1)
    finite = torch.isfinite(fh.flatten(1)).all(dim=1) & torch.isfinite(h.flatten(1)).all(dim=1)
    inf = torch.full_like(diff, float("inf"))
    rel = torch.where(finite, diff / (size + torch.finfo(work).tiny), inf)
    return rel, torch.where(finite, diff, inf)


@dataclass(frozen=True)
class Trajectory:
    """T steps of the plain loop from h0, per sample.

    final:     (B, ...) h_T.
    residuals: (B, T) r_t = ||h_t - h_{t-1}|| / ||h_t||, t = 1..T (inf once non-finite).
    """

    final: Tensor
    residuals: Tensor

    @property
    def final_residual(self) -> Tensor:
        """(B,) r_T."""
        return self.residuals[:, -1]

    @property
    def nonfinite(self) -> Tensor:
        """(B,) bool: h_T has a non-finite entry."""
        return ~torch.isfinite(self.final.flatten(1)).all(dim=1)

    def converged(self, tol: float) -> Tensor:
        """(B,) bool: r_T < tol (the loop ends at a fixed point)."""
        return self.final_residual < tol

    def steps_to(self, tol: float) -> Tensor:
        """(B,) long: first t with r_t < tol, -1 if never."""
        below = self.residuals < tol
        first = below.float().argmax(dim=1) + 1
        return torch.where(below.any(dim=1), first, torch.full_like(first, -1)).long()


def iterate(f: Map, h0: Tensor, iters: int, observe: Callable[[int, Tensor], None] | None = None) -> Trajectory:
    """Plain iteration h_{t+1} = f(h_t) for exactly `iters` steps, no gradients.

    Unlike `solve` it never stops early: it is the trajectory the model runs.
    observe(t, h_t), if given, sees every state t = 1..iters (on the device;
    keep its work there to avoid host round trips).
    """
    if iters < 1:
        raise ValueError(f"iters={iters} must be >= 1")
    h = h0.detach()
    trace = []
    with torch.no_grad():
        for t in range(1, iters + 1):
            nxt = f(h)
            trace.append(relative_residual(h, nxt)[0])
            if observe is not None:
                observe(t, nxt)
            h = nxt
    return Trajectory(h, torch.stack(trace, dim=1))
