"""Reading run records (eval.json, metrics.jsonl, probe records) and summarizing them as tables.

Plain JSON in, plain text out: no model or training code is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fpstab.reports.run_files import (EVAL_FILE, EVAL_SCHEMA, EVAL_SCHEMA_VERSION, PROBE_FILE,  # noqa: F401
                                      PROBE_SCHEMA, check_eval_record, load_metrics)


def _read_record(path: str | Path, name: str, command: str) -> dict[str, Any]:
    """The JSON at path, or at path/name for a run directory; a missing file names the command that writes it."""
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run `{command}` first)")
    return json.loads(path.read_text())


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read and check an eval.json (a file, or a run directory holding one)."""
    record = _read_record(path, EVAL_FILE, "fpstab eval")
    check_eval_record(record)
    return record


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def eval_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table, one row per (run, level): accuracy at T and at training
    depth, best iteration, overthinking, adaptive halting and solver results
    (accuracies in %)."""
    head = ("| arch | norm | level | n | acc@T (%) | acc@m (%) | best (%) @ t | overthinking (pp) "
            "| halting acc (%) / nfe | solver acc (%) / nfe |")
    rows = [head, "|" + "---|" * 10]
    for rec in records:
        check_eval_record(rec)
        for lv in rec["levels"]:
            h, s = lv.get("halting"), lv.get("solver")
            rows.append(
                f"| {rec['arch']} | {rec['norm']} | {lv['level']} | {lv['n_samples']} "
                f"| {_pct(lv['final_accuracy'])} | {_pct(lv.get('accuracy_at_train_iters'))} "
                f"| {_pct(lv['best_accuracy'])} @ {lv['best_iteration']} "
                f"| {100 * lv['overthinking_penalty']:.1f} "
                f"| {(_pct(h['accuracy']) + ' / ' + format(h['mean_nfe'], '.1f')) if h else '—'} "
                f"| {(_pct(s['accuracy']) + ' / ' + format(s['nfe'], '.1f')) if s else '—'} |"
            )
    return "\n".join(rows)


def accuracy_by_level(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: rows = runs (arch+norm), columns = levels, cells = acc@T (%)."""
    levels: list[str] = []
    for rec in records:
        check_eval_record(rec)
        for lv in rec["levels"]:
            if str(lv["level"]) not in levels:
                levels.append(str(lv["level"]))
    rows = ["| run | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    for rec in records:
        by = {str(lv["level"]): lv["final_accuracy"] for lv in rec["levels"]}
        rows.append(f"| {rec['arch']}+{rec['norm']} | " + " | ".join(_pct(by.get(lv)) for lv in levels) + " |")
    return "\n".join(rows)


# ---- probe records (`fpstab probe --json`) ------------------------------------
PROBE_AXES: tuple[str, ...] = ("reachability", "path_independence", "input_dependence", "geometry")
_PROBE_ENTRY_KEYS = ("map", "inputs", "settings", "thresholds", "axes", "seconds")


def check_probe_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong if `record` is not a probe record we read."""
    if record.get("schema") != PROBE_SCHEMA:
        raise ValueError(f"not an fpstab probe record: schema={record.get('schema')!r}, expected {PROBE_SCHEMA!r}")
    if not isinstance(record.get("probes"), list) or not record["probes"]:
        raise ValueError("probe record has no 'probes' list")
    for i, entry in enumerate(record["probes"]):
        missing = [k for k in _PROBE_ENTRY_KEYS if k not in entry]
        if missing:
            raise ValueError(f"probe record entry #{i} lacks keys {missing}")
        for name, axis in entry["axes"].items():
            if axis.get("verdict", {}).get("status") not in ("pass", "fail", "undetermined"):
                raise ValueError(f"probe record entry #{i} axis {name!r} has no valid verdict")


def load_probe(path: str | Path) -> dict[str, Any]:
    """Read and check a probe record (a file, or a run directory holding probe.json)."""
    record = _read_record(path, PROBE_FILE, "fpstab probe --json")
    check_probe_record(record)
    return record


def _samples(axis: Mapping[str, Any] | None, figure: str) -> list[float]:
    if axis is None or figure not in axis["figures"]:
        return []
    return [float(v) for v in axis["figures"][figure]["per_sample"] if v is not None]


def _all_converged(axis: Mapping[str, Any] | None, estimate: str) -> bool:
    return axis is not None and estimate in axis.get("estimates", {}) and all(axis["estimates"][estimate]["converged"])


def probe_summaries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per probed input batch (e.g. per ladder level).

    Keys: task, level, data_seed, held_out, source, arch, norm; verdicts
    {axis: "pass" | "fail" | "undetermined"}; max_rho, min_sigma_min,
    median_ift_gain, max_path_distance (None where not measured, e.g. the
    IFT gain of an autonomous map), converged_share (share of samples whose
    loop reached r_T < tol); unconverged, the names of those figures that
    rest on an estimate that did not converge for every sample.
    """
    check_probe_record(record)
    rows = []
    for entry in record["probes"]:
        axes = entry["axes"]
        reach, paths, dep, geo = (axes.get(a) for a in PROBE_AXES)
        rho, smin = _samples(reach, "spectral_radius"), _samples(geo, "sigma_min")
        gains, dist = _samples(dep, "ift_gain"), _samples(paths, "path_distance")
        loops = reach["figures"]["loop_converged"]["per_sample"] if reach else []
        unconverged = [name for name, axis, est in (("max_rho", reach, "spectral_radius"),
                                                     ("min_sigma_min", geo, "sigma_min"),
                                                     ("median_ift_gain", dep, "ift_solve"))
                       if axis is not None and est in axis.get("estimates", {}) and not _all_converged(axis, est)]
        rows.append({
            **{k: entry["inputs"].get(k) for k in ("task", "level", "data_seed", "held_out")},
            **{k: entry["map"].get(k) for k in ("source", "arch", "norm")},
            "verdicts": {name: axis["verdict"]["status"] for name, axis in axes.items()},
            "max_rho": max(rho) if rho else None,
            "min_sigma_min": min(smin) if smin else None,
            "median_ift_gain": _median(gains),
            "max_path_distance": max(dist) if dist else None,
            "converged_share": sum(bool(v) for v in loops) / len(loops) if loops else None,
            "unconverged": unconverged,
        })
    return rows


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])
