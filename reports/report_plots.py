"""Figures of a results tree: accuracy against iterations per configuration, and probe scatter plots.

Reads run records only (reports.run_files.RunRecord); matplotlib headless.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fpstab.reports.run_files import RunRecord

PNG_META = {"Software": None}  # no version string in the file: the same records give the same bytes


def schoop_figure(runs: Sequence[RunRecord], label: Callable[[RunRecord], str], path: Path) -> Path | None:
    """One panel per eval level: each configuration's accuracy at every iteration (mean over its runs),
    log-scaled iterations, the training iterations shaded. None if no run was evaluated."""
    evaluated = [r for r in runs if r.eval and r.eval.get("levels")]
    if not evaluated:
        return None
    levels: list[str] = []
    for r in evaluated:
        levels += [str(lv["level"]) for lv in r.eval["levels"] if str(lv["level"]) not in levels]
    names = sorted({label(r) for r in evaluated})
    styles = {name: _line_style(i) for i, name in enumerate(names)}
    ncol = min(len(names), 3)
    legend_h = 0.1 + 0.16 * -(-len(names) // ncol)  # inches: the legend's rows under the panels
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2 + legend_h), dpi=110, squeeze=False)
    for ax, level in zip(axes[0], levels):
        curves: dict[str, list[list[float]]] = defaultdict(list)
        for r in evaluated:
            for lv in r.eval["levels"]:
                if str(lv["level"]) == level:
                    curves[label(r)].append(lv["accuracy"])
        for name, accs in curves.items():
            T = min(len(a) for a in accs)
            mean = [sum(a[t] for a in accs) / len(accs) for t in range(T)]
            ax.plot(range(1, T + 1), mean, lw=1.3, label=name, **styles[name])
        m = evaluated[0].train.get("train_iters")
        if m:
            ax.axvspan(1, m, color="0.9", zorder=0)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"level {level}", fontsize=9)
        ax.set_xlabel("iteration t", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact-match accuracy", fontsize=8)
    _legend_below(fig, axes[0], ncol)
    return _save(fig, path, bottom=legend_h / fig.get_figheight())


def _line_style(i: int) -> dict[str, str]:
    """A distinct line for configuration i: the 10 default colors, then again dashed, dotted, ..."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}


def _legend_below(fig: Any, axes: Sequence[Any], ncol: int) -> None:
    """One legend for the row of panels, under them, where it hides no curve (every label once, in
    the panels' order)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, handle)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=ncol, fontsize=7, frameon=False)


def scatter_figure(points: Sequence[tuple[RunRecord, Mapping[str, Any]]], accuracy: Callable[[RunRecord], Any],
                   figures: Sequence[str], path: Path) -> Path | None:
    """One panel per probe figure: its value (x, log scale where positive) against hard-level accuracy (y),
    one marker per run, colored by task. None when there are no points."""
    if not points:
        return None
    tasks = sorted({str(r.train.get("task")) for r, _ in points})
    colors = {t: f"C{i}" for i, t in enumerate(tasks)}
    fig, axes = plt.subplots(1, len(figures), figsize=(3.0 * len(figures), 3.0), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], figures):
        xs = [s["figures"][name] for _, s in points]
        for task in tasks:
            pts = [(x, accuracy(r)) for (r, _), x in zip(points, xs) if str(r.train.get("task")) == task
                   and x is not None and math.isfinite(x)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=4, color=colors[task], label=task)
        finite = [x for x in xs if x is not None and math.isfinite(x)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
            ax.set_xscale("log")
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("hard-level accuracy", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="best")
    return _save(fig, path)


def _save(fig: Any, path: Path, bottom: float = 0.0) -> Path:
    """Lay out (leaving the bottom fraction free for a figure legend) and write the PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, metadata=PNG_META)
    plt.close(fig)
    return path
