"""Plots from run records: accuracy against iterations ("schoop" plots) and
training curves.

Reads the dicts that `fpstab eval` writes to eval.json (schema "fpstab.eval")
and the records of metrics.jsonl; imports no model or training code.
matplotlib runs headless (Agg).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fpstab.reports.records import check_eval_record


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))


def _title(record: Mapping[str, Any]) -> str:
    return f"{record['task']} · {record['arch']}+{record['norm']} · step {record.get('checkpoint_step', '?')}"


def _draw_level(ax: Any, record: Mapping[str, Any], level: Mapping[str, Any], label: str | None,
                markers: bool) -> None:
    acc = level["accuracy"]
    ts = list(range(1, len(acc) + 1))
    (line,) = ax.plot(ts, acc, label=label, lw=1.5)
    if not markers:
        return
    color = line.get_color()
    ax.plot([level["best_iteration"]], [level["best_accuracy"]], "o", color=color, ms=5,
            label="best iteration", clip_on=False)
    if level.get("halting"):
        h = level["halting"]
        ax.plot([h["mean_nfe"]], [h["accuracy"]], "s", color="black", ms=6, mfc="none",
                label=f"adaptive halting (tol {h['tol']:g}): mean nfe", clip_on=False)
    if level.get("solver"):
        s = level["solver"]
        ax.plot([max(s["nfe"], 1)], [s["accuracy"]], "^", color="tab:red", ms=7, mfc="none",
                label=f"{s['name']} (tol {s['tol']:g}): nfe", clip_on=False)


def _frame(ax: Any, record: Mapping[str, Any], n_iters: int) -> None:
    m = record.get("train_iters")
    if m and n_iters > 1:
        ax.axvspan(0, m, color="0.9", zorder=0, label=f"training iterations (≤{m})")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    if n_iters > 50:
        ax.set_xscale("log")
        ax.set_xlim(1, n_iters)
    ax.grid(alpha=0.3)


def save_figure(fig: Any, path: str | Path, dpi: float | None = None) -> Path:
    """Write the figure (parent folders made, at `dpi` or matplotlib's default) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_level(record: Mapping[str, Any], level: Mapping[str, Any], path: str | Path) -> Path:
    """One level's accuracy at every iteration, with best iteration, halting and solver points."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    _frame(ax, record, len(level["accuracy"]))
    _draw_level(ax, record, level, label=f"level {level['level']} (n={level['n_samples']})", markers=True)
    ax.set_title(_title(record) + f"\nlevel {level['level']}: acc@T {level['final_accuracy']:.3f}, "
                 f"overthinking {level['overthinking_penalty']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_levels(record: Mapping[str, Any], path: str | Path) -> Path:
    """All levels' accuracy-vs-iteration curves on one axis."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    n_iters = max(len(lv["accuracy"]) for lv in record["levels"])
    _frame(ax, record, n_iters)
    for lv in record["levels"]:
        _draw_level(ax, record, lv, label=f"level {lv['level']}", markers=False)
    ax.set_title(_title(record), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_eval(record: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """acc_vs_iters_<level>.png per level and acc_vs_iters.png (all levels) in out_dir."""
    check_eval_record(record)
    out_dir = Path(out_dir)
    paths = [plot_level(record, lv, out_dir / f"acc_vs_iters_{_slug(lv['level'])}.png") for lv in record["levels"]]
    paths.append(plot_levels(record, out_dir / "acc_vs_iters.png"))
    return paths


def plot_compare(records: Sequence[Mapping[str, Any]], level: Any, path: str | Path) -> Path:
    """Several runs' curves at one level (e.g. archs side by side)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    drawn = 0
    for rec in records:
        check_eval_record(rec)
        for lv in rec["levels"]:
            if str(lv["level"]) == str(level):
                if drawn == 0:
                    _frame(ax, rec, len(lv["accuracy"]))
                _draw_level(ax, rec, lv, label=f"{rec['arch']}+{rec['norm']}", markers=False)
                drawn += 1
    if drawn == 0:
        plt.close(fig)
        raise ValueError(f"no record has level {level!r}")
    ax.set_title(f"{records[0]['task']} level {level}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_training(metrics: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss and accuracy per logged step, validation accuracy per epoch,
    from metrics.jsonl records (kinds "train" and "epoch")."""
    train = [m for m in metrics if m.get("kind") == "train"]
    epochs = [m for m in metrics if m.get("kind") == "epoch" and "val_exact_match" in m]
    if not train:
        raise ValueError("no 'train' records to plot")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    ax1.plot([m["step"] for m in train], [m["loss"] for m in train], lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    ax2.plot([m["step"] for m in train], [m["acc"] for m in train], lw=1, label="train batch (n+k iterations)")
    if epochs:
        ax2.plot([m["step"] for m in epochs], [m["val_exact_match"] for m in epochs], "o-", ms=3,
                 label="val (train_iters)")
    ax2.set_xlabel("step")
    ax2.set_ylabel("exact-match accuracy")
    ax2.set_ylim(-0.02, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    diverged = [m for m in metrics if m.get("kind") == "diverged"]
    for d in diverged:
        for ax in (ax1, ax2):
            ax.axvline(d["step"], color="tab:red", ls="--", lw=1)
    return save_figure(fig, path)
