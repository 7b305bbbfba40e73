"""The Hessian probe's options, as flags of `fpstab probe --hessian` and `fpstab train --hessian-every K`.

Plain Python (no torch): a command line checks them before torch loads.
`fpstab.hessian_probe` reads them; `fpstab.config.Runtime` holds them for
training (they change no training number: the probe runs on its own seeded
generators and leaves the core's weights and the run's RNG states as they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fpstab.options import check_options, option

EPS_KINDS: tuple[str, ...] = ("relative", "absolute")  # as fixedpoint.hessian.EPS_KINDS (that one loads torch)


@dataclass(frozen=True)
class HessianOptions:
    """What the Hessian of the training loss is read from, and how hard."""

    hessian_every: int = field(default=0, metadata=option(
        "record the training loss's Hessian spectrum into RUN/hessian.jsonl at step 0, every K optimizer "
        "steps and the last step (0: never)", low=0))
    hessian_samples: int = field(default=64, metadata=option(
        "samples the Hessian's loss is taken over (training: the first N of the training set, the same for "
        "every record)", low=1))
    hessian_k: int = field(default=5, metadata=option(
        "extreme eigenvalues reported at each end (the k largest and the k smallest, algebraic)", low=1))
    hessian_steps: int = field(default=80, metadata=option(
        "Lanczos steps (Hessian-vector products) at most for the extreme eigenvalues", low=2))
    hessian_tol: float = field(default=1e-4, metadata=option(
        "Ritz residual / max|lambda| at which an extreme eigenvalue counts as converged", low=0.0, low_open=True))
    hessian_probes: int = field(default=8, metadata=option("Rademacher probes of the SLQ density", low=2))
    hessian_slq_steps: int = field(default=30, metadata=option("Lanczos steps per SLQ probe", low=2))
    hessian_slq_tol: float = field(default=0.1, metadata=option(
        "relative error at which an SLQ figure (trace, entropy, valley dimension) counts as converged",
        low=0.0, low_open=True))
    hessian_eps: float = field(default=1e-2, metadata=option(
        "valley threshold: |lambda| > eps is valley, the rest river (relative: a fraction of max|lambda|)",
        low=0.0))
    hessian_eps_kind: str = field(default="relative", metadata=option(
        "whether --hessian-eps is relative to max|lambda| or absolute", choices=EPS_KINDS))
    hessian_seed: int = field(default=0, metadata=option("seed of the probe's random vectors", low=0))

    def __post_init__(self) -> None:
        check_options(self)
        if self.hessian_eps_kind == "relative" and self.hessian_eps >= 1:
            raise ValueError(f"hessian_eps={self.hessian_eps!r}: a relative threshold must be < 1 "
                             "(or set --hessian-eps-kind absolute)")

    def spectrum_settings(self) -> dict[str, Any]:
        """The keyword arguments of fixedpoint.hessian.SpectrumSettings."""
        return {"k": self.hessian_k, "steps": self.hessian_steps, "tol": self.hessian_tol,
                "probes": self.hessian_probes, "slq_steps": self.hessian_slq_steps,
                "slq_tol": self.hessian_slq_tol, "eps": self.hessian_eps, "eps_kind": self.hessian_eps_kind,
                "seed": self.hessian_seed}


HESSIAN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(HessianOptions))


def hessian_options_of(obj: Any) -> HessianOptions:
    """The HessianOptions fields of any object holding them (a Runtime; parsed flags, where None
    means not given: the default)."""
    return HessianOptions(**{k: getattr(obj, k) for k in HESSIAN_KEYS if getattr(obj, k, None) is not None})
