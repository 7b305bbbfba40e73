"""One entry point to the fixed-point solvers of torchdeq, with honest results.

`solve(f, h0, solver=...)` looks for h* = f(h*) for a batched map f acting on
(B, ...) tensors whose samples are independent. It wraps torchdeq's
`fixed_point_iter`, `anderson_solver` and `broyden_solver` and records, per
sample and per function evaluation, the relative residual

    r = ||f(h) - h|| / ||f(h)||        (norms over all non-batch dims)

at every point the solver evaluated (`trajectory.relative_residual`).
torchdeq's own traces are padded after an early stop and its returned
iterate is the lowest-residual one without saying so; here the result names
which state it returns (`returned`), keeps both the best and the final state,
and turns non-finite values and torchdeq's LinAlgError into a reported
divergence with the trace so far.

Host round trips: the recorder keeps traces, best points and divergence
flags on the device and looks at them from the host only every
`check_every` evaluations (to stop once every sample has diverged, or, for
"iterate", converged). torchdeq's Anderson and Broyden still read their own
stopping test once per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdeq.solver import anderson_solver, broyden_solver

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.settings import RETURNS, SOLVERS
from fpstab.fixedpoint.trajectory import relative_residual

Map = Callable[[Tensor], Tensor]

# torchdeq function per solver name; both take (func, x0, max_iter, tol, stop_mode).
_TORCHDEQ = {
    "anderson": anderson_solver,
    "broyden": broyden_solver,
}


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

    def estimate(self) -> Estimate:
        """The returned state as an Estimate: error is the relative residual of
        the point returned (best) or last evaluated (final); a diverged sample
        never counts as converged."""
        error = self.best_residual if self.returned == "best" else self.final_residual
        error = torch.where(self.diverged, torch.full_like(error, float("inf")), error)
        return Estimate.checked(self.state, error, self.tol, self.nfe, f"solve({self.solver})",
                                "relative residual |f(h)-h|/|f(h)|")


class _Stop(Exception):
    """Raised inside the solver loop once no sample needs more evaluations."""


class _Recorder:
    """Wraps f: records residuals, the best point and non-finite values, on the device."""

    def __init__(self, f: Map, h0: Tensor, blowup: float, check_every: int, stop_below: float | None) -> None:
        self.f = f
        self.shape = h0.shape
        self.rel: list[Tensor] = []
        self.abs: list[Tensor] = []
        batch = h0.shape[0]
        self.bad = torch.zeros(batch, dtype=torch.bool, device=h0.device)
        self.best = h0.detach().clone()
        self.best_res = torch.full((batch,), float("inf"), device=h0.device)
        self.limit = blowup * h0.detach().flatten(1).norm(dim=1).clamp_min(1.0)
        self.last_x = h0
        self.last_fx = h0
        self.check_every = check_every
        self.stop_below = stop_below  # stop once every sample is below (or diverged)
        self.stopped_by: str | None = None

    def __call__(self, x: Tensor) -> Tensor:
        x = x.reshape(self.shape)
        fx = self.f(x)
        rel, diff = relative_residual(x, fx)
        self.bad |= ~torch.isfinite(rel) | (fx.flatten(1).norm(dim=1) > self.limit)
        better = rel < self.best_res
        self.best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x.detach(), self.best)
        self.best_res = torch.where(better, rel, self.best_res)
        self.rel.append(rel)
        self.abs.append(diff)
        self.last_x, self.last_fx = x.detach(), fx.detach()
        if len(self.rel) % self.check_every == 0:
            self._maybe_stop(rel)
        return fx

    def _maybe_stop(self, rel: Tensor) -> None:
        """The only host round trip: every `check_every` evaluations."""
        if bool(self.bad.all()):
            self.stopped_by = "diverged"
            raise _Stop
        if self.stop_below is not None and bool(((rel < self.stop_below) | self.bad).all()):
            self.stopped_by = "converged"
            raise _Stop


def _iterate_solver(f: Map, x0: Tensor, max_iter: int, **_: float) -> None:
    """Plain fixed-point iteration; the recorder decides when to stop."""
    x = x0
    for _ in range(max_iter):
        x = f(x)


def solve(
    f: Map,
    h0: Tensor,
    solver: str = "anderson",
    max_iter: int = 100,
    tol: float = 1e-4,
    returns: str = "best",
    blowup: float = 1e6,
    check_every: int = 8,
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
        check_every: evaluations between host-side checks (stop when every
            sample diverged; for "iterate" also when every sample is below tol).
        solver_kwargs: passed to the torchdeq solver (e.g. m, lam, tau).
    """
    _check_solve_args(solver, max_iter, tol, returns, h0, check_every)
    rec = _Recorder(f, h0, blowup, check_every, stop_below=tol if solver == "iterate" else None)
    failure = _run_solver(rec, solver, h0, max_iter, tol, solver_kwargs)
    return _solve_result(rec, solver, h0, tol, returns, failure)


def _check_solve_args(solver: str, max_iter: int, tol: float, returns: str, h0: Tensor, check_every: int) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {list(SOLVERS)}")
    if returns not in RETURNS:
        raise ValueError(f"returns={returns!r} is not one of {list(RETURNS)}")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if not tol > 0:
        raise ValueError(f"tol={tol} must be > 0")
    if h0.dim() < 2:
        raise ValueError(f"h0 must be batched, shape (B, ...); got {tuple(h0.shape)}")
    if check_every < 1:
        raise ValueError(f"check_every={check_every} must be >= 1")


def _run_solver(rec: _Recorder, solver: str, h0: Tensor, max_iter: int, tol: float,
                solver_kwargs: dict[str, float]) -> str | None:
    """Run the solver on the recorder's map; its failure as a one-line message, or None."""
    run = _iterate_solver if solver == "iterate" else _TORCHDEQ[solver]
    with torch.no_grad():
        try:
            run(rec, h0.detach(), max_iter=max_iter, tol=tol, stop_mode="rel", **solver_kwargs)
        except _Stop:
            if rec.stopped_by == "diverged":
                return "every sample became non-finite or blew up"
        except (torch.linalg.LinAlgError, RuntimeError) as err:
            return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def _solve_result(rec: _Recorder, solver: str, h0: Tensor, tol: float, returns: str,
                  failure: str | None) -> SolveResult:
    """The SolveResult of a finished run from what the recorder saw."""
    if not rec.rel:  # the solver broke down before its first evaluation
        inf = torch.full((h0.shape[0], 1), float("inf"), device=h0.device)
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
