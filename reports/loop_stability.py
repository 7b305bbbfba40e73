"""Loop-stability summaries and figures from a run's "loop_diagnostics" records (metrics.jsonl).

The records (written by `fpstab train --loop-diagnostics-every N`) hold per-iteration token norms
and per-group gradient norms; see fpstab.loop_diagnostics for every field. Plain numbers in,
numbers and PNGs out: no model or training code is imported.

Oscillation of a series g_1..g_T (a group's gradient norm over the logged steps, or the
per-iteration contributions g(1..K) within one step), with d_i = g_{i+1} - g_i:
    sign_change_rate  fraction of successive differences (d_i, d_{i+1}) of opposite signs: 0 for a
                      monotone or smooth series, ~2/3 for independent noise, 1 for a strict zigzag
    cv                std(g) / mean(g) (population std)
    rel_step          mean |d_i| / mean(g): the typical step-to-step jump relative to the level
    max_over_median   max(g) / median(g): the largest spike relative to the typical value
    log_jump          mean |log(g_{i+1} / g_i)| (positive values only): the typical factor
                      between successive values, exp(log_jump), independent of the level
A trend (gradient norms often grow 100-fold while a model learns) inflates cv and
max_over_median, so run_summary measures the gradient series over the last part of training only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fpstab.reports.plots import save_figure

RECORD_KIND = "loop_diagnostics"


def diagnostic_records(metrics: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The loop_diagnostics records of a run's metrics, by step."""
    return sorted((m for m in metrics if m.get("kind") == RECORD_KIND), key=lambda m: m["step"])


def oscillation(series: Sequence[float]) -> dict[str, float | int | None]:
    """n, sign_change_rate, cv and rel_step of a series (module docstring); None where undefined
    (fewer than 3 finite values for the sign changes, 2 for the rest, or a zero mean)."""
    g = np.array([v for v in series if v is not None and math.isfinite(v)], dtype=float)
    out: dict[str, float | int | None] = {"n": int(g.size), "sign_change_rate": None, "cv": None, "rel_step": None,
                                          "max_over_median": None, "log_jump": None}
    if g.size < 2 or g.mean() == 0:
        return out
    d = np.diff(g)
    out["cv"] = float(g.std() / g.mean())
    out["max_over_median"] = float(g.max() / np.median(g)) if np.median(g) > 0 else None
    out["rel_step"] = float(np.abs(d).mean() / g.mean())
    if (g > 0).all():
        out["log_jump"] = float(np.abs(np.diff(np.log(g))).mean())
    signs = np.sign(d)
    pairs = [(a, b) for a, b in zip(signs[:-1], signs[1:]) if a != 0 and b != 0]
    if pairs:
        out["sign_change_rate"] = sum(1 for a, b in pairs if a != b) / len(pairs)
    return out


def gradient_series(records: Sequence[Mapping[str, Any]], group: str) -> list[float]:
    """A group's training-gradient norm (before clipping) at every logged step."""
    return [float(r["grad_norm"].get(group, math.nan)) for r in records]


def block_groups(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The whole-block groups ("blocks.0", "blocks.1", ...) the records name."""
    if not records:
        return []
    return [g for g in records[0]["grad_norm"] if g.startswith("blocks.") and g.count(".") == 1]


def run_summary(records: Sequence[Mapping[str, Any]], tail: float = 0.5) -> dict[str, Any]:
    """Residual growth and gradient oscillation of one run's records.

    stream_norm_first / _last: the per-iteration stream norms of the first and last record;
    stream_growth: the largest stream_norm[K-1] / stream_norm[0] over the records; stream_max:
    the largest stream norm of any iteration and record; grad_oscillation: oscillation() of each
    block's gradient-norm series over the last `tail` fraction of the records (steps given in
    grad_oscillation_steps); loop_sign_change_rate: per block, the mean over all records of the
    sign-change rate of its per-iteration contributions (None when K < 3); backward_growth: the
    median over the same late records of |dL/dh(1)| / |dL/dh(K)|, how the backward signal grows
    from the last iteration to the first (1 for K = 1).
    """
    if not records:
        raise ValueError("no loop_diagnostics records (train with --loop-diagnostics-every N)")
    streams = [r["stream_norm"] for r in records]
    finite = [v for s in streams for v in s if math.isfinite(v)]
    growth = [s[-1] / s[0] for s in streams if s[0] > 0 and math.isfinite(s[-1])]
    blocks = block_groups(records)
    late = records[min(len(records) - 1, int(len(records) * (1 - tail))):]
    loop_rates = {}
    for b in blocks:
        rates = [oscillation(r["loop_grad_norm"][b])["sign_change_rate"] for r in records]
        rates = [v for v in rates if v is not None]
        loop_rates[b] = float(np.mean(rates)) if rates else None
    return {"records": len(records), "iters": records[0]["iters"], "steps": [records[0]["step"], records[-1]["step"]],
            "stream_norm_first": streams[0], "stream_norm_last": streams[-1],
            "stream_growth": max(growth) if growth else None, "stream_max": max(finite) if finite else None,
            "state_norm_last": records[-1]["state_norm"],
            "grad_oscillation": {b: oscillation(gradient_series(late, b)) for b in blocks},
            "grad_oscillation_steps": [late[0]["step"], late[-1]["step"]],
            "backward_growth": _median_ratio([r["state_grad_norm"] for r in late]),
            "loop_sign_change_rate": loop_rates}


def _median_ratio(series: Sequence[Sequence[float]]) -> float | None:
    ratios = [s[0] / s[-1] for s in series if s[-1] > 0 and math.isfinite(s[0])]
    return float(np.median(ratios)) if ratios else None


def _panels(runs: Mapping[tuple[str, Any], Sequence[Mapping[str, Any]]], rows: Sequence[str], cols: Sequence[Any],
            title: str) -> tuple[Any, list[tuple[Any, Sequence[Mapping[str, Any]]]]]:
    """A figure of len(rows) x len(cols) panels and (axes, records) for each run, keyed (row, col)."""
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols) + 0.6, 2.2 * len(rows) + 0.6),
                             dpi=110, squeeze=False, sharex="col")
    fig.suptitle(title, fontsize=10)
    for i, row in enumerate(rows):
        axes[i][0].set_ylabel(row, fontsize=9)
    for j, col in enumerate(cols):
        axes[0][j].set_title(f"K = {col}", fontsize=9)
    return fig, [(axes[rows.index(r)][list(cols).index(c)], recs) for (r, c), recs in runs.items()]


def _finish(fig: Any, panels: Sequence[tuple[Any, Any]], xlabel: str, path: str | Path) -> Path:
    for ax, _ in panels:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.set_xlabel(xlabel, fontsize=8)
    return save_figure(fig, path)


def plot_stream_norms(runs: Mapping[tuple[str, Any], Sequence[Mapping[str, Any]]], rows: Sequence[str],
                      cols: Sequence[Any], path: str | Path) -> Path:
    """Per-iteration residual-stream token norm (before the state's last norm), at the first, middle
    and last record of each run; runs keyed (row, col) = (variant, K)."""
    fig, panels = _panels(runs, rows, cols, "residual stream before the state norm: mean token L2 norm")
    for ax, records in panels:
        for k in sorted({0, len(records) // 2, len(records) - 1}) if records else []:
            r = records[k]
            ax.plot(range(1, r["iters"] + 1), r["stream_norm"], marker=".", lw=1, label=f"step {r['step']}")
    return _finish(fig, panels, "iteration t", path)


def plot_gradient_norms(runs: Mapping[tuple[str, Any], Sequence[Mapping[str, Any]]], rows: Sequence[str],
                        cols: Sequence[Any], path: str | Path) -> Path:
    """Each block's training-gradient norm (before clipping) over the logged steps; runs keyed (variant, K)."""
    fig, panels = _panels(runs, rows, cols, "gradient L2 norm per block (before clipping)")
    for ax, records in panels:
        for b in block_groups(records):
            ax.plot([r["step"] for r in records], gradient_series(records, b), lw=0.8, label=b)
    return _finish(fig, panels, "optimizer step", path)
