"""Terminal table of a probe record (the JSON written by `fpstab probe --json`).

Reads the plain dict only: no torch, no models. `format_probe` formats one
entry of the record's "probes" list (the probe of one input batch, e.g. one
ladder level); `format_probe_record` formats all of them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "undetermined": "UNDETERMINED"}


def format_number(v: Any) -> str:
    """A figure as the probe tables print it: 4 significant digits, "n/a" for None."""
    if v is None:
        return "n/a"
    if isinstance(v, (bool, int, str)):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def summarize(values: Sequence[Any]) -> str:
    """Per-sample values in one cell: k/n for flags, counts for labels,
    median [min, max] for numbers ('n/a' when none is finite)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return f"{sum(present)}/{len(values)}"
    if present and all(isinstance(v, str) for v in present):
        return ", ".join(f"{n} {k}" for k, n in Counter(present).most_common())
    finite = sorted(float(v) for v in present if math.isfinite(float(v)))
    if not finite:
        return "n/a"
    mid = _median(finite)
    if finite[0] == finite[-1]:
        return format_number(mid)
    return f"{format_number(mid)}  [{format_number(finite[0])}, {format_number(finite[-1])}]"


def _figure_rows(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for fig in figures.values():
        if fig.get("per_sample") is not None:
            rows.append((fig["label"], summarize(fig["per_sample"])))
        elif isinstance(fig.get("value"), Mapping):
            rows += [(f"{k}" if fig["label"] == "weight spectra" else f"{fig['label']}: {k}", format_number(v))
                     for k, v in fig["value"].items()]
        elif isinstance(fig.get("value"), list) and fig["value"] and not isinstance(fig["value"][0], str):
            trace = fig["value"]  # a trace: first and last point only
            ends = f"{format_number(trace[0])} ... {format_number(trace[-1])}"
            rows.append((fig["label"], f"{ends} ({len(trace)} points)"))
        else:
            value = fig.get("value")
            rows.append((fig["label"], "/".join(value) if isinstance(value, list) else format_number(value)))
    return rows


def _estimate_rows(estimates: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for est in estimates.values():
        errors = [e for e in est["error"] if e is not None]
        worst = format_number(max(errors)) if errors else "inf"
        rows.append((f"[{est['method']}] {est['label']}",
                     f"converged {summarize(est['converged'])}, max error {worst} (tol {format_number(est['tol'])}), "
                     f"{est['products']} products"))
    return rows


def _axis_lines(number: int, axis: Mapping[str, Any]) -> list[str]:
    verdict = axis["verdict"]
    out = [f"{number}. {axis['title']}: {VERDICT_MARK.get(verdict['status'], verdict['status'])}",
           f"  {verdict['reason']}"]
    if axis.get("note"):
        out.append(f"  note: {axis['note']}")
    rows = _figure_rows(axis["figures"]) + _estimate_rows(axis.get("estimates", {}))
    width = max((len(k) for k, _ in rows), default=0)
    out += [f"    {k:<{width}}  {v}" for k, v in rows]
    out.append(f"    ({axis['seconds']:.1f}s)")
    return out


def format_probe(entry: Mapping[str, Any]) -> str:
    """Human-readable report of one probed input batch: one section per axis,
    its verdict, its figures and the convergence of its estimates."""
    m, i, s = entry["map"], entry["inputs"], entry["settings"]
    what = ", ".join(f"{k}={v}" for k, v in m.items()) or "map"
    where = ", ".join(f"{k}={v}" for k, v in i.items() if k not in ("samples", "tokens", "dtype", "device", "loss"))
    lines = [
        f"map F(h) = step(h, e): {what}",
        f"inputs: {i['samples']} samples x {i['tokens']} tokens{', ' + where if where else ''}; "
        f"{i['dtype']} on {i['device']}, probe seed {s['seed']}; per-sample figures: median [min, max]",
        "",
    ]
    for n, axis in enumerate(entry["axes"].values(), start=1):
        lines += _axis_lines(n, axis) + [""]
    t = entry["thresholds"]
    lines += ["thresholds: " + ", ".join(f"{k}={v}" for k, v in t.items()), f"took {entry['seconds']:.1f}s"]
    return "\n".join(lines)


def format_probe_record(record: Mapping[str, Any]) -> str:
    """Every probed input batch of a record, with a one-line summary each first."""
    parts = [f"fpstab probe  ({record['schema']})"]
    for entry in record["probes"]:
        level = entry["inputs"].get("level", "?")
        verdicts = ", ".join(f"{k} {VERDICT_MARK.get(a['verdict']['status'])}" for k, a in entry["axes"].items())
        parts.append(f"  level {level}: {verdicts}")
    for entry in record["probes"]:
        parts += ["", "=" * 72, f"level {entry['inputs'].get('level', '?')}", "=" * 72, format_probe(entry)]
    return "\n".join(parts)


def probe_summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of `reports.records.probe_summaries` rows: one line per
    probed level, the verdict per axis and the key figures (a figure resting
    on an unconverged estimate is marked *)."""
    axes = ("reachability", "path_independence", "input_dependence", "geometry")
    keys = ("max_rho", "min_sigma_min", "median_ift_gain", "max_path_distance", "converged_share")
    head = "| run | level | " + " | ".join(axes) + " | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (2 + len(axes) + len(keys))]
    for r in rows:
        marks = [VERDICT_MARK.get(r["verdicts"].get(a, ""), "—") for a in axes]
        figs = [format_number(r[k]) + ("*" if k in r["unconverged"] else "") for k in keys]
        lines.append(f"| {r['arch']}+{r['norm']} | {r['level']} | " + " | ".join(marks) + " | " + " | ".join(figs) + " |")
    return "\n".join(lines)
