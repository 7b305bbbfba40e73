"""The few numbers a report needs from a probe record: each axis's verdict and the key figures.

Reads the JSON that `fpstab probe --json` writes (schema fpstab.probe/2) through
`reports.records.probe_summaries`, and names its figures for the report's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fpstab.reports.records import PROBE_AXES, probe_summaries

AXES = PROBE_AXES
# Key figures: max rho(dF/dh) over samples, min sigma_min(I - dF/dh), median IFT gain
# ||dh*/de u||, max path-independence distance, share of samples whose iteration converged.
FIGURES = ("rho_max", "sigma_min", "ift_gain", "path_distance", "converged_share")
_FROM_ROW = {"rho_max": "max_rho", "sigma_min": "min_sigma_min", "ift_gain": "median_ift_gain",
             "path_distance": "max_path_distance", "converged_share": "converged_share"}
# Verdicts as an ordinal for rank correlation.
VERDICT_SCORE = {"fail": 0.0, "undetermined": 1.0, "pass": 2.0}


def probe_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"level", "verdicts": {axis: status}, "figures": {name: float | None}, "unconverged": [figure]}
    of a one-level probe record (a record's first entry when it holds several).

    A figure that rests on an estimate which did not converge for every sample is
    reported as None: a correlation must not be computed from it.
    """
    row = probe_summaries(record)[0]
    unconverged = {_FIGURE_OF.get(name, name) for name in row["unconverged"]}
    figures = {f: (None if f in unconverged else row[_FROM_ROW[f]]) for f in FIGURES}
    return {"level": str(row["level"]), "verdicts": {a: row["verdicts"].get(a, "missing") for a in AXES},
            "figures": figures, "unconverged": sorted(unconverged)}


_FIGURE_OF = {v: k for k, v in _FROM_ROW.items()}
