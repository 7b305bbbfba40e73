"""Fixed-point engine: solvers, gradients and stability probes for ANY map.

Nothing here knows of transformers: a map is a callable on batched tensors
(B, ...) -> (B, ...) whose samples do not interact, and a "core" is any object
with encode / init_state / step / readout. Every iterative numerical result
(Krylov, GMRES, solver) comes back as an `Estimate` with its convergence,
error estimate and cost.

The settings (solver names, ProbeSettings) are plain Python and load with the
package; everything else imports torch (seconds) and loads on first use, so a
command line can check its options first.
"""

from __future__ import annotations

import importlib
from typing import Any

from fpstab.fixedpoint.settings import RETURNS, SOLVERS, STARTS, ProbeSettings

# name -> the module defining it (under fpstab.fixedpoint).
_LAZY: dict[str, str] = {
    "Estimate": "estimate",
    "implicit_gradient": "grad",
    "phantom_gradient": "grad",
    "default_tol": "krylov",
    "gmres": "krylov",
    "dense_jacobian": "linalg",
    "jvp_operator": "linalg",
    "vjp_operator": "linalg",
    **{name: "probes" for name in ("AXES", "SCHEMA_VERSION", "AxisReport", "ProbeReport", "Thresholds", "Verdict",
                                   "implicit_input_jacobian", "probe", "probe_record")},
    "SolveResult": "solvers",
    "solve": "solvers",
    **{name: "hessian" for name in ("HessianSpectrum", "SpectrumSettings", "hessian_spectrum", "hvp_operator")},
    "largest_singular_value": "spectra",
    "smallest_singular_value": "spectra",
    "spectral_radius": "spectra",
    "Trajectory": "trajectory",
    "iterate": "trajectory",
    "relative_residual": "trajectory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"fpstab.fixedpoint.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(["RETURNS", "SOLVERS", "STARTS", "ProbeSettings", *_LAZY])
