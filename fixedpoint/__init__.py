"""Fixed-point engine: solvers, gradients and stability probes for ANY map.

Nothing here knows of transformers: a map is a callable on batched tensors
(B, ...) -> (B, ...) whose samples do not interact, and a "core" is any object
with encode / init_state / step / readout.
"""

from fpstab.fixedpoint.grad import implicit_gradient, phantom_gradient
from fpstab.fixedpoint.linalg import (
    dense_jacobian,
    gmres,
    jvp_operator,
    operator_norm,
    singular_values,
    spectral_radius,
    vjp_operator,
)
from fpstab.fixedpoint.probes import (
    SCHEMA_VERSION,
    STARTS,
    Geometry,
    InputDependence,
    ProbeReport,
    Reachability,
    Thresholds,
    Verdict,
    implicit_input_jacobian,
    probe,
)
from fpstab.fixedpoint.solve import RETURNS, SOLVERS, SolveResult, iterate, solve

__all__ = [
    "SCHEMA_VERSION",
    "STARTS",
    "Geometry",
    "InputDependence",
    "ProbeReport",
    "Reachability",
    "Thresholds",
    "Verdict",
    "implicit_input_jacobian",
    "probe",
    "RETURNS",
    "SOLVERS",
    "SolveResult",
    "dense_jacobian",
    "gmres",
    "implicit_gradient",
    "iterate",
    "jvp_operator",
    "operator_norm",
    "phantom_gradient",
    "singular_values",
    "solve",
    "spectral_radius",
    "vjp_operator",
]
