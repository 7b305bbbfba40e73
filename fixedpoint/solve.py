"""One entry point to the fixed-point solvers of torchdeq, with honest results.

`solve(f, h0, solver=...)` looks for h* = f(h*) for a batched map f acting on
(B, ...) tensors whose samples are independent. It wraps torchdeq's
`fixed_point_iter`, `anderson_solver` and `broyden_solver` and records, per
sample and per function evaluation, the relative residual

    r = ||f(h) - h|| / ||f(h)||        (norms over all non-batch dims)

at every point the solver evaluated. torchdeq's own traces are padded after an
early stop and its returned iterate is the lowest-residual one without saying
so; here the result names which state it returns (`returned`), keeps both the
best and the final state, and turns non-finite values and torchdeq's
LinAlgError into a reported divergence with the trace so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torchdeq.solver import anderson_solver, broyden_solver, fixed_point_iter

Map = Callable[[Tensor], Tensor]

# torchdeq function per solver name; all take (func, x0, max_iter, tol, stop_mode).
_TORCHDEQ = {
    "iterate": fixed_point_iter,
    "anderson": anderson_solver,
    "broyden": broyden_solver,
}
SOLVERS: tuple[str, ...] = tuple(_TORCHDEQ)
RETURNS: tuple[str, ...] = ("best", "final")


@dataclass(frozen=True)
class SolveResult:
    """What a solve did, per sample.

    state:      (B, ...) the state returned, `best` or `final` as `returned` says.
    best:       (B, ...) the evaluated point with the lowest relative residual.
    final:      (B, ...) the solver's last iterate.
    residuals:  (B, nfe) relative residual at each function evaluation, in order
                (inf where f returned a non-finite value).
    abs_residuals: (B, nfe) the same, absolute: ||f(h) - h||.
    steps:      (B,) long, 1-based evaluation at which the residual first fell
                below tol; -1 where it never did.
    converged:  (B,) bool, some evaluated point had residual < tol and the
                sample never diverged.
    diverged:   (B,) bool, a non-finite value, a state norm beyond `blowup`
                times its start, or a solver breakdown (see `failure`).
    nfe:        function evaluations made (each one on the whole batch).
    failure:    the solver's error message if it broke down, else None.
    """

    state: Tensor
    best: Tensor
    final: Tensor
    returned: str
    residuals: Tensor
    abs_residuals: Tensor
    steps: Tensor
    converged: Tensor
    diverged: Tensor
    nfe: int
    solver: str
    tol: float
    failure: str | None = None

    @property
    def final_residual(self) -> Tensor:
        """(B,) relative residual at the last evaluation."""
        return self.residuals[:, -1]

    @property
    def best_residual(self) -> Tensor:
        """(B,) lowest relative residual reached."""
        return self.residuals.nan_to_num(nan=float("inf")).min(dim=1).values


class _AllDiverged(Exception):
    """Raised inside the solver loop once no sample can recover."""


class _Recorder:
    """Wraps f: records residuals, the best point and non-finite values."""

    def __init__(self, f: Map, h0: Tensor, blowup: float) -> None:
        self.f = f
        self.shape = h0.shape
        self.rel: list[Tensor] = []
        self.abs: list[Tensor] = []
        batch = h0.shape[0]
        self.bad = torch.zeros(batch, dtype=torch.bool, device=h0.device)
        self.best = h0.detach().clone()
        self.best_res = torch.full((batch,), float("inf"), dtype=h0.dtype, device=h0.device)
        self.limit = blowup * h0.detach().flatten(1).norm(dim=1).clamp_min(1.0)
        self.last_x = h0
        self.last_fx = h0

    def __call__(self, x: Tensor) -> Tensor:
        x = x.reshape(self.shape)
        fx = self.f(x)
        diff = (fx - x).flatten(1).norm(dim=1)
        size = fx.flatten(1).norm(dim=1)
        rel = diff / (size + torch.finfo(fx.dtype).tiny)
        finite = torch.isfinite(fx.flatten(1)).all(dim=1) & torch.isfinite(x.flatten(1)).all(dim=1)
        self.bad |= ~finite | (size > self.limit)
        rel = torch.where(finite, rel, torch.full_like(rel, float("inf")))
        diff = torch.where(finite, diff, torch.full_like(diff, float("inf")))
        better = rel < self.best_res
        self.best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x.detach(), self.best)
        self.best_res = torch.where(better, rel, self.best_res)
        self.rel.append(rel.detach())
        self.abs.append(diff.detach())
        self.last_x, self.last_fx = x.detach(), fx.detach()
        if bool(self.bad.all()):
            raise _AllDiverged
        return fx


def solve(
    f: Map,
    h0: Tensor,
    solver: str = "anderson",
    max_iter: int = 100,
    tol: float = 1e-4,
    returns: str = "best",
    blowup: float = 1e6,
    **solver_kwargs: float,
) -> SolveResult:
    """Find h* = f(h*) for every sample of a batch, without gradients.

    Args:
        f: batched map (B, ...) -> (B, ...); samples must not interact.
        h0: (B, ...) initial state.
        solver: "iterate" (plain fixed-point iteration), "anderson" or "broyden".
        max_iter: solver iterations (Anderson/Broyden: at most this many steps).
        tol: relative residual ||f(h) - h|| / ||f(h)|| that counts as converged.
            The solver stops once every sample is below it.
        returns: "best" (lowest residual point) or "final" (last iterate).
        blowup: a sample whose ||f(h)|| exceeds blowup * max(||h0||, 1) is
            reported diverged.
        solver_kwargs: passed to the torchdeq solver (e.g. m, lam, tau).
    """
    if solver not in _TORCHDEQ:
        raise ValueError(f"solver={solver!r} is not one of {list(SOLVERS)}")
    if returns not in RETURNS:
        raise ValueError(f"returns={returns!r} is not one of {list(RETURNS)}")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if not tol > 0:
        raise ValueError(f"tol={tol} must be > 0")
    if h0.dim() < 2:
        raise ValueError(f"h0 must be batched, shape (B, ...); got {tuple(h0.shape)}")

    rec = _Recorder(f, h0, blowup)
    failure: str | None = None
    with torch.no_grad():
        try:
            _TORCHDEQ[solver](rec, h0.detach(), max_iter=max_iter, tol=tol, stop_mode="rel", **solver_kwargs)
        except _AllDiverged:
            failure = "every sample became non-finite or blew up"
        except (torch.linalg.LinAlgError, RuntimeError) as err:
            failure = f"{type(err).__name__}: {err}".splitlines()[0]
    if not rec.rel:  # the solver broke down before its first evaluation
        inf = torch.full((h0.shape[0], 1), float("inf"), dtype=h0.dtype, device=h0.device)
        rec.rel, rec.abs = [inf[:, 0]], [inf[:, 0]]
    residuals = torch.stack(rec.rel, dim=1)
    abs_residuals = torch.stack(rec.abs, dim=1)

    # The solver's last iterate: fixed-point iteration and Anderson step to
    # f(x); Broyden's iterate is the point it evaluated last.
    final = rec.last_x if solver == "broyden" else rec.last_fx
    below = residuals < tol
    first = below.float().argmax(dim=1) + 1
    steps = torch.where(below.any(dim=1), first, torch.full_like(first, -1))
    diverged = rec.bad.clone()
    if failure is not None:
        diverged |= ~below.any(dim=1)
    converged = below.any(dim=1) & ~diverged
    state = rec.best if returns == "best" else final
    return SolveResult(
        state=state,
        best=rec.best,
        final=final,
        returned=returns,
        residuals=residuals,
        abs_residuals=abs_residuals,
        steps=steps.long(),
        converged=converged,
        diverged=diverged,
        nfe=len(rec.rel),
        solver=solver,
        tol=tol,
        failure=failure,
    )


def iterate(f: Map, h0: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Plain iteration h_{t+1} = f(h_t) for exactly `iters` steps, no gradients.

    Returns (h_T (B, ...), residuals (B, iters)) where residuals[:, t] is
    ||h_{t+1} - h_t|| / ||h_{t+1}|| (inf once a sample is non-finite). Unlike
    `solve`, it never stops early: probes use it to measure the trajectory
    the model itself runs.
    """
    h = h0.detach()
    trace = []
    with torch.no_grad():
        for _ in range(iters):
            nxt = f(h)
            diff = (nxt - h).flatten(1).norm(dim=1)
            rel = diff / (nxt.flatten(1).norm(dim=1) + torch.finfo(nxt.dtype).tiny)
            finite = torch.isfinite(nxt.flatten(1)).all(dim=1)
            trace.append(torch.where(finite, rel, torch.full_like(rel, float("inf"))))
            h = nxt
    return h, torch.stack(trace, dim=1)
