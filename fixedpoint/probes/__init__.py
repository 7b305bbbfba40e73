"""Stability probes of a looped map, one module per axis.

`probe` runs the registered axes in order on one input batch; each axis is a
function `ProbeContext -> AxisReport` that reads what it needs from the
shared context (the loop, its fixed point, the spectra there, each computed
once). A new probe is a new module with such a function and one line in
`AXES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor

from fpstab.fixedpoint.probes.context import Core, ProbeContext
from fpstab.fixedpoint.probes.geometry import geometry
from fpstab.fixedpoint.probes.input_dependence import implicit_input_jacobian, input_dependence
from fpstab.fixedpoint.probes.paths import path_independence
from fpstab.fixedpoint.probes.reachability import reachability
from fpstab.fixedpoint.probes.records import (
    SCHEMA_VERSION,
    AxisReport,
    Figure,
    ProbeReport,
    Thresholds,
    Verdict,
    probe_record,
    to_json,
)
from fpstab.fixedpoint.settings import STARTS, ProbeSettings

Axis = Callable[[ProbeContext], AxisReport]

# Run order; later axes reuse what earlier ones computed through the context.
AXES: dict[str, Axis] = {
    "reachability": reachability,
    "path_independence": path_independence,
    "input_dependence": input_dependence,
    "geometry": geometry,
}


def probe(
    core: Core,
    x: Tensor,
    targets: Tensor | None = None,
    *,
    settings: ProbeSettings | None = None,
    thresholds: Thresholds | None = None,
    axes: Sequence[str] | None = None,
    describe: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    **overrides: Any,
) -> ProbeReport:
    """Run the probe axes on a core at inputs x.

    Args:
        core: object with encode/init_state/step/readout (e.g. an
            `architectures` core); its parameters are used as they are.
        x: (B, n_tokens, in_dim) inputs, in the dtype/device to probe in.
        targets: optional (B, n_tokens) class targets for the backprop loss;
            without them the loss is <g, readout(h)> for a fixed random g.
        settings: a ProbeSettings; `overrides` (its field names, e.g.
            iters=100, krylov_steps=60) replace single fields.
        thresholds: the verdict thresholds (default Thresholds()).
        axes: names from AXES to run (default all, in AXES order).
        describe: what the map is (arch, norm, task, ...), copied to the report.
        inputs: where x came from (task, level, data_seed, ...), copied to the report.
    """
    unknown = [k for k in overrides if k not in ProbeSettings.keys()]
    if unknown:
        raise ValueError(f"unknown probe settings {unknown}; allowed: {list(ProbeSettings.keys())}")
    settings = replace(settings or ProbeSettings(), **overrides)
    chosen = list(AXES) if axes is None else list(axes)
    missing = [a for a in chosen if a not in AXES]
    if missing:
        raise ValueError(f"unknown axes {missing}; allowed: {list(AXES)}")
    if getattr(core, "looped", True) is False:
        raise ValueError("this core is not a looped map (one pass): reachability and fixed-point probes do not apply")
    began = time.perf_counter()
    ctx = ProbeContext(core, x, targets, settings, thresholds or Thresholds())
    reports = {}
    for name in chosen:
        start = time.perf_counter()
        reports[name] = replace(AXES[name](ctx), seconds=time.perf_counter() - start)
    batch_inputs = {"samples": x.shape[0], "tokens": x.shape[1], "dtype": str(x.dtype).replace("torch.", ""),
                    "device": str(x.device), "loss": "cross-entropy on targets" if targets is not None
                    else "<g, readout(h)> for a fixed random g", **(inputs or {})}
    return ProbeReport(dict(describe or {}), batch_inputs, settings.record(), ctx.thresholds, reports,
                       time.perf_counter() - began)


__all__ = [
    "AXES",
    "SCHEMA_VERSION",
    "STARTS",
    "AxisReport",
    "Figure",
    "ProbeContext",
    "ProbeReport",
    "ProbeSettings",
    "Thresholds",
    "Verdict",
    "implicit_input_jacobian",
    "probe",
    "probe_record",
    "to_json",
]
