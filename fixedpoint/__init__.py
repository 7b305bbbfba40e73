"""Fixed-point engine: solvers, gradients and stability probes for ANY map.

Nothing here knows of transformers: a map is a callable on batched tensors
(B, ...) -> (B, ...) whose samples do not interact, and a "core" is any object
with encode / init_state / step / readout. Every iterative numerical result
(Krylov, GMRES, solver) comes back as an `Estimate` with its convergence,
error estimate and cost.
"""

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.grad import implicit_gradient, phantom_gradient
from fpstab.fixedpoint.krylov import default_tol, gmres
from fpstab.fixedpoint.linalg import dense_jacobian, jvp_operator, vjp_operator
from fpstab.fixedpoint.probes import (
    AXES,
    SCHEMA_VERSION,
    STARTS,
    AxisReport,
    ProbeReport,
    ProbeSettings,
    Thresholds,
    Verdict,
    implicit_input_jacobian,
    probe,
    probe_record,
)
from fpstab.fixedpoint.solve import RETURNS, SOLVERS, SolveResult, solve
from fpstab.fixedpoint.spectra import largest_singular_value, smallest_singular_value, spectral_radius
from fpstab.fixedpoint.trajectory import Trajectory, iterate, relative_residual

__all__ = [
    "AXES",
    "RETURNS",
    "SCHEMA_VERSION",
    "SOLVERS",
    "STARTS",
    "AxisReport",
    "Estimate",
    "ProbeReport",
    "ProbeSettings",
    "SolveResult",
    "Thresholds",
    "Trajectory",
    "Verdict",
    "default_tol",
    "dense_jacobian",
    "gmres",
    "implicit_gradient",
    "implicit_input_jacobian",
    "iterate",
    "jvp_operator",
    "largest_singular_value",
    "phantom_gradient",
    "probe",
    "probe_record",
    "relative_residual",
    "smallest_singular_value",
    "solve",
    "spectral_radius",
    "vjp_operator",
]
