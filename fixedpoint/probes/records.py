"""The probe's records and the rules its verdicts follow.

A probe of one input batch is a `ProbeReport`: what was probed, with which
settings and thresholds, and one `AxisReport` per axis. An axis report holds
its verdict, its figures (per sample, in batch order) and the record of
every iterative estimate it rests on (`Estimate.record()`), so a reader sees
the value, whether it converged, its error estimate and its cost side by
side. `probe_record` wraps one or more reports (e.g. one per ladder level)
in the versioned JSON object the command line writes.

Verdict rules shared by the axes live here: a verdict never rests on an
unconverged estimate (`unconverged_verdict`), and figures taken at the fixed
point need the loop to reach an attracting one (`fixed_point_verdict`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate

# The reader (reports.run_files.PROBE_SCHEMA) holds the same string; tests/test_report.py checks.
SCHEMA_VERSION = "fpstab.probe/2"
STATUSES: tuple[str, ...] = ("pass", "fail", "undetermined")


@dataclass(frozen=True)
class Thresholds:
    """The numbers the verdicts are read against (stated in every report)."""

    converged_share: float = 0.9  # share of samples that must reach an attracting fixed point
    path_distance: float = 1e-2  # relative distance between states from different starts
    fd_cosine: float = 0.99  # IFT vs finite differences must agree this well
    min_gain: float = 1e-3  # ||dh*/de u|| below this is no input-dependence
    ift_error: float = 1e-2  # relative error bound an IFT solve must meet
    sigma_min: float = 1e-2  # sigma_min(I - J) below this is ill-conditioned
    grad_growth: float = 1.05  # per-step backprop growth (worst window) above this explodes
    grad_cosine: float = 0.9  # implicit vs k-step unrolled parameter-gradient cosine

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"threshold {key}={value!r} must be a number > 0")


@dataclass(frozen=True)
class Verdict:
    """status: "pass" | "fail" | "undetermined"; reason: the figures and
    thresholds it was decided on; unconverged: the quantities that did not
    converge; remedies: the settings to raise (as command-line flags)."""

    status: str
    reason: str
    unconverged: tuple[str, ...] = ()
    remedies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {list(STATUSES)}")


@dataclass(frozen=True)
class Figure:
    """A reported figure: `per_sample` (batch order) or one `value`."""

    label: str
    per_sample: list[Any] | None = None
    value: Any = None


def per_sample(label: str, values: Tensor | Sequence[Any]) -> Figure:
    """A per-sample figure from a (B,) tensor or a list."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().tolist()
    return Figure(label, per_sample=list(values))


@dataclass(frozen=True)
class AxisReport:
    """One axis: its verdict, figures, estimates (Estimate.record() plus a
    "label"), an optional note and the seconds it took."""

    axis: str
    title: str
    verdict: Verdict
    figures: dict[str, Figure]
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0


def skipped_solves(names: Sequence[str]) -> Figure:
    """The figure that lists what an axis left out because the fixed-point
    gate had decided its verdict (no attracting fixed point to describe)."""
    return Figure("not computed: no attracting fixed point to describe (--always-solve computes them)",
                  value=list(names))


def estimate_entry(label: str, est: Estimate) -> dict[str, Any]:
    """An estimate as an axis stores it: its record and what it is."""
    return {"label": label, **est.record()}


@dataclass(frozen=True)
class ProbeReport:
    """The probe of one input batch."""

    map: dict[str, Any]  # what was probed: arch, norm, task, ...
    inputs: dict[str, Any]  # which inputs: samples, tokens, and (from the caller) task, level, data_seed
    settings: dict[str, Any]
    thresholds: Thresholds
    axes: dict[str, AxisReport]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats become null."""
        return _finite(asdict(self))

    def verdicts(self) -> dict[str, str]:
        """axis -> status."""
        return {name: axis.verdict.status for name, axis in self.axes.items()}


def probe_record(reports: Sequence[ProbeReport]) -> dict[str, Any]:
    """The JSON object of `fpstab probe --json`: {"schema", "probes": [...]}, one entry per probed input batch."""
    return {"schema": SCHEMA_VERSION, "probes": [r.to_dict() for r in reports]}


def to_json(record: dict[str, Any], indent: int = 2) -> str:
    """Strict JSON (no NaN/inf literals)."""
    return json.dumps(_finite(record), indent=indent, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---- verdict rules -------------------------------------------------------------


def unconverged_verdict(checks: Sequence[tuple[str, Estimate, Sequence[str]]], mask: Tensor | None = None) -> Verdict | None:
    """UNDETERMINED naming every estimate that did not converge on a sample of
    `mask` (all samples by default), and what to raise; None if all did.

    checks: (what it is, its Estimate, the settings that buy convergence).
    """
    names, remedies, parts = [], [], []
    for name, est, knobs in checks:
        bad = ~est.converged.cpu()
        if mask is not None:
            bad &= mask.cpu()
        if bool(bad.any()):
            worst = float(est.error.cpu()[bad].max())
            names.append(name)
            remedies += [k for k in knobs if k not in remedies]
            parts.append(f"{name} did not converge for {int(bad.sum())}/{bad.numel()} samples "
                         f"({est.error_kind} up to {worst:.2g} > tol {est.tol:g})")
    if not names:
        return None
    return Verdict("undetermined", "; ".join(parts) + "; raise " + ", ".join(remedies), tuple(names), tuple(remedies))


def fixed_point_verdict(status: Sequence[str], rho: Tensor, converged_share: float) -> Verdict | None:
    """None if enough samples' loops reach an attracting fixed point, else
    the verdict that says why not. UNDETERMINED only where the undecided
    samples (rho unconverged, still contracting) could still make up the
    share; when the decided ones already rule it out the verdict is FAIL.

    status: per-sample fixed-point status (`FIXED_POINT_STATUSES`);
    rho: (B,) spectral radius at each sample's point (for the reason).
    """
    n = len(status)
    count = {s: sum(1 for v in status if v == s) for s in FIXED_POINT_STATUSES}
    if count["attracting"] >= converged_share * n:
        return None
    summary = ", ".join(f"{count[s]} {s}" for s in FIXED_POINT_STATUSES if count[s])
    head = f"the loop reaches an attracting fixed point for {count['attracting']}/{n} samples ({summary})"
    undecided = count["rho unconverged"] + count["still contracting"]
    if count["diverged"]:
        return Verdict("fail", head)
    if undecided and count["attracting"] + undecided < converged_share * n:
        return Verdict("fail", head + f"; the {undecided} undecided could not make up the {converged_share:.0%} "
                       "needed" + _repelling_reason(status, rho))
    if count["rho unconverged"]:
        return Verdict("undetermined", head + "; rho did not converge: raise --krylov-steps, --krylov-restarts",
                       ("spectral_radius",), ("--krylov-steps", "--krylov-restarts"))
    if count["still contracting"]:
        return Verdict("undetermined", head + "; the loop still contracts: raise --iters", (), ("--iters",))
    return Verdict("fail", head + _repelling_reason(status, rho))


def _repelling_reason(status: Sequence[str], rho: Tensor) -> str:
    repelling = [float(r) for r, s in zip(rho.cpu().tolist(), status) if s == "repelling"]
    return f"; rho at the repelling points up to {max(repelling):.3f} >= 1" if repelling else ""


FIXED_POINT_STATUSES: tuple[str, ...] = (
    "attracting",  # the loop reached it and rho < 1
    "repelling",  # rho >= 1 at the point (found by the solver, or reached only marginally)
    "rho unconverged",  # Krylov could not tell
    "still contracting",  # the loop has not reached a fixed point, but its residual still shrinks
    "not reached",  # the loop does not converge to it
    "diverged",  # non-finite state
)
