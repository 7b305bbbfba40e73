"""Summarize the loop-stability sweep: PYTHONPATH=. python3 results/loop_stability/analyze.py [RUNS] [OUT]

Reads every run under RUNS (default results/loop_stability/runs), names its Fu et al. variant from
its core config (architectures.config.FU_VARIANTS) and its K (train_iters), and writes to OUT
(default results/loop_stability): summary.json (per run: training outcome, evaluation at
K iterations, reports.loop_stability.run_summary of its loop_diagnostics records),
stream_norms.png, grad_norms.png, losses.png; prints a Markdown table.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fpstab.architectures.config import FU_VARIANTS
from fpstab.reports.loop_stability import diagnostic_records, plot_gradient_norms, plot_stream_norms, run_summary
from fpstab.reports.run_files import RunRecord, find_runs

VARIANTS = list(FU_VARIANTS)


def variant_of(run: RunRecord) -> str:
    core = run.config["core"]
    for name, keys in FU_VARIANTS.items():
        if all(core.get(k) == v for k, v in keys.items()):
            return name
    raise ValueError(f"{run.name}: core {core} is none of {VARIANTS}")


def outcome(run: RunRecord) -> dict[str, Any]:
    """Training outcome: last train-window loss/accuracy, last validation, eval at K iterations."""
    train = [m for m in run.metrics if m.get("kind") == "train"]
    val = [m for m in run.metrics if m.get("kind") == "epoch" and "val_exact_match" in m]
    out: dict[str, Any] = {"state": run.state, "lr": run.train["lr"], "seed": run.train["seed"],
                           "train_loss_last": train[-1]["loss"], "train_acc_last": train[-1]["acc"],
                           "grad_norm_last": train[-1]["grad_norm"],
                           "val_exact_match": val[-1]["val_exact_match"] if val else None,
                           "val_token_acc": val[-1]["val_token_acc"] if val else None,
                           "train_s": next((m["elapsed_s"] for m in run.metrics if m.get("kind") == "done"), None)}
    for level in (run.eval or {}).get("levels", []):
        k = run.train["train_iters"]
        out[f"eval_{level['level']}_at_K"] = level["accuracy"][k - 1]
        out[f"eval_{level['level']}_token_at_K"] = level["token_accuracy"][k - 1]
        out[f"eval_{level['level']}_best"] = [level["best_accuracy"], level["best_iteration"]]
    return out


def plot_losses(runs: dict[tuple[str, int], RunRecord], ks: list[int], path: Path) -> None:
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(4 * len(VARIANTS), 3.2), dpi=110, sharey=True)
    for ax, name in zip(axes, VARIANTS):
        for k in ks:
            run = runs.get((name, k))
            if run is None:
                continue
            train = [m for m in run.metrics if m.get("kind") == "train"]
            ax.plot([m["step"] for m in train], [m["loss"] for m in train], lw=1, label=f"K = {k}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss (per token, 10-step windows)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| variant | K | val exact | val token | train loss | stream norm t=1 -> K (last record) | max growth "
            "| blocks.0 grad, 2nd half: sign-chg / CV / max:median / e^log_jump | per-loop sign-chg blocks.0 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        d = r["diagnostics"]
        osc = d["grad_oscillation"]["blocks.0"]
        sn = d["stream_norm_last"]
        lines.append(f"| {r['variant']} | {r['K']} | {fmt(r['val_exact_match'])} | {fmt(r['val_token_acc'])} | "
                     f"{fmt(r['train_loss_last'])} | {sn[0]:.2f} -> {sn[-1]:.2f} | {fmt(d['stream_growth'])} | "
                     f"{fmt(osc['sign_change_rate'], 2)} / {fmt(osc['cv'], 2)} / {fmt(osc['max_over_median'], 2)} / "
                     f"{fmt(math.exp(osc['log_jump']), 2)} | "
                     f"{fmt(d['loop_sign_change_rate']['blocks.0'], 2)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    runs_dir = Path(argv[0]) if argv else Path("results/loop_stability/runs")
    out = Path(argv[1]) if len(argv) > 1 else Path("results/loop_stability")
    by_key: dict[tuple[str, int], RunRecord] = {}
    rows = []
    for run in find_runs(runs_dir):
        key = (variant_of(run), int(run.train["train_iters"]))
        records = diagnostic_records(run.metrics)
        by_key[key] = run
        rows.append({"run": run.name, "variant": key[0], "K": key[1], **outcome(run),
                     "diagnostics": run_summary(records)})
    rows.sort(key=lambda r: (VARIANTS.index(r["variant"]), r["K"], r["seed"]))
    ks = sorted({k for _, k in by_key})
    diag = {key: diagnostic_records(run.metrics) for key, run in by_key.items()}
    plot_stream_norms(diag, VARIANTS, ks, out / "stream_norms.png")
    plot_gradient_norms(diag, VARIANTS, ks, out / "grad_norms.png")
    plot_losses(by_key, ks, out / "losses.png")
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
