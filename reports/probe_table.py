"""Terminal table of a probe record (the JSON written by `fpstab probe --json`).

Reads the plain dict only: no torch, no models.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "undetermined": "UNDETERMINED"}


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _summary(values: Sequence[Any]) -> str:
    """median [min, max] of the finite values; 'n/a' when there are none."""
    finite = sorted(float(v) for v in values if v is not None and not isinstance(v, bool) and math.isfinite(v))
    if not finite:
        return "n/a"
    mid = finite[len(finite) // 2] if len(finite) % 2 else 0.5 * (finite[len(finite) // 2 - 1] + finite[len(finite) // 2])
    if finite[0] == finite[-1]:
        return _num(mid)
    return f"{_num(mid)}  [{_num(finite[0])}, {_num(finite[-1])}]"


def _share(flags: Sequence[bool]) -> str:
    return f"{sum(bool(f) for f in flags)}/{len(flags)}"


def _rows(title: str, verdict: dict[str, str], rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    out = [f"{title}: {VERDICT_MARK.get(verdict['status'], verdict['status'])}", f"  {verdict['reason']}"]
    out += [f"    {k:<{width}}  {v}" for k, v in rows]
    return out


def format_probe(record: dict[str, Any]) -> str:
    """Human-readable report: one section per axis, its verdict, its figures."""
    m, s = record["map"], record["settings"]
    r, d, g = record["reachability"], record["input_dependence"], record["geometry"]
    what = ", ".join(f"{k}={v}" for k, v in m.items()) or "map"
    lines = [
        f"fpstab probe  ({record['schema']})",
        f"map F(h) = step(h, e): {what}",
        f"{s['samples']} samples x {s['tokens']} tokens, {s['dtype']} on {s['device']}, seed {s['seed']}; "
        f"per-sample figures shown as median [min, max]",
        "",
    ]
    lines += _rows(
        "1. Reachability",
        r["verdict"],
        [
            (f"converged (r_T < {r['tol']:g}, T={r['iters']})", _share(r["converged"])),
            ("final residual r_T = |F(h)-h|/|F(h)|", _summary(r["final_residual"])),
            ("steps to tol (-1: never)", _summary(r["steps_to_tol"])),
            ("tail contraction rate r_{t+1}/r_t", _summary(r["tail_rate"])),
            (f"{r['solver']} found a fixed point (nfe {r['solver_nfe']})", _share(r["solver_converged"])),
            ("spectral radius rho(dF/dh) at h*", _summary(r["spectral_radius"])),
            (f"path distance over starts {'/'.join(r['path_starts'])}", _summary(r["path_distance"])),
            ("path alignment cosine (min over pairs)", _summary(r["path_cosine"])),
            ("non-finite (diverged)", _share(r["nonfinite"])),
        ],
    )
    lines.append("")
    dep_rows = [
        ("note", d["note"]),
        ("|J_e u|, u unit in e-space", _summary(d["je_norm"])),
    ]
    if not d["autonomous"]:
        dep_rows += [
            ("IFT gain |dh*/de u|", _summary(d["ift_gain"])),
            ("readout gain |d readout/de u|", _summary(d["readout_gain"])),
            (f"IFT vs finite diff. cosine (eps {d['fd_eps']:g})", _summary(d["fd_cosine"])),
            ("IFT vs finite diff. relative error", _summary(d["fd_rel_error"])),
        ]
    dep_rows += [
        (f"distinct fixed points (rel. dist > {d['diversity_delta']:g})", f"{d['distinct_fixed_points']}/{d['samples']}"),
        ("distinct readouts (argmax)", f"{d['distinct_readouts']}/{d['samples']}"),
    ]
    lines += _rows("2. Input-dependence", d["verdict"], dep_rows)
    lines.append("")
    geo_rows = [
        ("sigma_min(I - dF/dh)", _summary(g["sigma_min"])),
        ("sigma_max(I - dF/dh)", _summary(g["sigma_max"])),
        ("cond(I - dF/dh)", _summary(g["cond"])),
        ("|dF/dh|_2", _summary(g["jacobian_norm"])),
        (f"grad growth per step (k={g['grad_steps']} unrolled)", _summary(g["grad_growth"])),
        ("implicit vs unrolled grad cosine", _num(g["grad_cosine"])),
        ("implicit vs unrolled grad rel. diff", _num(g["grad_rel_diff"])),
    ]
    geo_rows += [(k, _num(v)) for k, v in g["weights"].items()]
    lines += _rows("3. Geometry (backprop)", g["verdict"], geo_rows)
    t = record["thresholds"]
    lines += ["", "thresholds: " + ", ".join(f"{k}={v}" for k, v in t.items()), f"took {record['seconds']:.1f}s"]
    return "\n".join(lines)
