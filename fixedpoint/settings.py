"""The engine's settings as plain Python: solver names and how hard the probe
looks. Nothing here imports torch, so a command line can check its options
(and print its defaults) before torch loads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# `solvers.solve` runs these: "iterate" is the plain loop, the others torchdeq's.
SOLVERS: tuple[str, ...] = ("iterate", "anderson", "broyden")
RETURNS: tuple[str, ...] = ("best", "final")
# Starting states of the path-independence probe.
STARTS: tuple[str, ...] = ("default", "zeros", "random", "other")


@dataclass(frozen=True)
class ProbeSettings:
    """How hard the probe looks. Each Krylov knob trades cost for convergence;
    a verdict that needs more says which one to raise (as --flag-name)."""

    iters: int = 500  # T, iterations of the loop from h0 (and from each path start)
    tol: float = 1e-4  # relative residual of a fixed point
    solver: str = "anderson"  # polishes h_T; re-solves for finite differences
    solver_iters: int = 100
    starts: tuple[str, ...] = STARTS  # path-independence starts
    tail: int = 20  # steps of the tail contraction rate
    fd_eps: float | None = None  # finite-difference step in e-space (default 1e-2 fp32, 1e-4 fp64)
    diversity_delta: float = 1e-2  # relative distance that separates two fixed points
    grad_steps: int = 30  # k: unrolled steps for the gradient trace and the unrolled gradient (training's)
    growth_window: int = 5  # shortest window (steps back from the loss) of the worst backprop growth
    krylov_steps: int = 40  # Krylov dimension of Arnoldi (rho) and Golub-Kahan (sigma_max, ||J||)
    krylov_restarts: int = 20  # their restarts
    gmres_steps: int = 100  # GMRES Krylov dimension (IFT solves, implicit gradient, sigma_min's solves)
    gmres_restarts: int = 10
    inverse_steps: int = 20  # Golub-Kahan steps on (I - J)^-1 for sigma_min
    seed: int = 0  # directions, random starts, Krylov starts, the loss direction
    # Run the solves that describe a fixed point (sigma_min of I - J, the IFT and implicit-gradient
    # GMRES, the finite-difference re-solves) even when too few samples reach an attracting fixed
    # point, so that the verdict is already decided. Off by default: there those solves describe no
    # fixed point the model reaches, rarely converge, and took about half of such a probe's time.
    always_solve: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not one of {list(SOLVERS)}")
        unknown = [s for s in self.starts if s not in STARTS]
        if unknown or len(self.starts) < 2 or len(set(self.starts)) != len(self.starts):
            raise ValueError(f"starts={list(self.starts)}: need at least two distinct of {list(STARTS)}")
        minimum = {"iters": self.tail + 1, "solver_iters": 1, "tail": 1, "grad_steps": 1, "growth_window": 1,
                   "krylov_steps": 2, "krylov_restarts": 1, "gmres_steps": 1, "gmres_restarts": 1,
                   "inverse_steps": 1}
        for key, low in minimum.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key}={value!r} must be an int >= {low}")
        if self.growth_window > self.grad_steps:
            raise ValueError(f"growth_window={self.growth_window} must be <= grad_steps={self.grad_steps}")
        for key in ("tol", "diversity_delta") + (("fd_eps",) if self.fd_eps is not None else ()):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{key}={value!r} must be a finite number > 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an int")
        if not isinstance(self.always_solve, bool):
            raise ValueError(f"always_solve={self.always_solve!r} must be a bool")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["starts"] = list(self.starts)
        return out
