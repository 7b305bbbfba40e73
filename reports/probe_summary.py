"""The few numbers a report needs from a probe record: each axis's verdict and the key figures.

Reads the JSON that `fpstab probe --json` writes (schema fpstab.probe/1) as a plain dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

AXES = ("reachability", "input_dependence", "geometry")
# Key figures: max rho(dF/dh) over samples, min sigma_min(I - dF/dh), median IFT gain
# ||dh*/de u||, max path-independence distance, share of samples whose iteration converged.
FIGURES = ("rho_max", "sigma_min", "ift_gain", "path_distance", "converged_share")
# Verdicts as an ordinal for rank correlation.
VERDICT_SCORE = {"fail": 0.0, "undetermined": 1.0, "pass": 2.0}


def probe_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"level", "verdicts": {axis: status}, "figures": {name: float | None}} of one probe record."""
    schema = record.get("schema")
    if schema != "fpstab.probe/1":
        raise ValueError(f"probe record schema {schema!r}; this reader knows 'fpstab.probe/1'")
    reach, inp, geo = (record.get(a) or {} for a in AXES)
    verdicts = {a: str(((record.get(a) or {}).get("verdict") or {}).get("status", "missing")) for a in AXES}
    figures = {
        "rho_max": _agg(reach.get("spectral_radius"), max),
        "sigma_min": _agg(geo.get("sigma_min"), min),
        "ift_gain": _agg(inp.get("ift_gain"), _median),
        "path_distance": _agg(reach.get("path_distance"), max),
        "converged_share": _share(reach.get("converged")),
    }
    return {"level": str((record.get("map") or {}).get("level")), "verdicts": verdicts, "figures": figures}


def _finite(values: Sequence[Any] | None) -> list[float]:
    return [float(v) for v in values or [] if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


def _agg(values: Sequence[Any] | None, how: Any) -> float | None:
    vals = _finite(values)
    return how(vals) if vals else None


def _median(vals: list[float]) -> float:
    s = sorted(vals)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _share(flags: Sequence[Any] | None) -> float | None:
    return sum(bool(f) for f in flags) / len(flags) if flags else None
