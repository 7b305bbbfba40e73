"""Tables and plots of benchmarks/markov_two_phase.py's run records (schema fpstab.markov_two_phase).

Reads the JSON records only (no model code). Per arch, each seed is a thin
line and the mean over seeds a thick one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fpstab.reports.plots import save_figure  # noqa: E402

COLORS = {"single_attn": "tab:blue", "standard_recall": "tab:red"}
LABELS = {"single_attn": "Single-Attn (single_attn)", "standard_recall": "Looped-Attn (standard_recall)"}
Record = dict[str, Any]


def by_arch(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by arch, in ARCH order then seed."""
    out: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: (r["arch"] != "single_attn", r["seed"])):
        out.setdefault(r["arch"], []).append(r)
    return out


def _curve(rows: Sequence[Record], value: Callable[[Record], float | None]) -> tuple[list[int], list[float]]:
    pairs = [(row["step"], value(row)) for row in rows]
    pairs = [(s, v) for s, v in pairs if v is not None and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _mean_curve(curves: Sequence[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """Mean over the curves at the steps all of them have."""
    steps = sorted(set.intersection(*(set(c[0]) for c in curves))) if curves else []
    lookup = [dict(zip(*c)) for c in curves]
    return steps, [statistics.fmean(d[s] for d in lookup) for s in steps]


def _draw(ax: Any, records: Sequence[Record], rows_of: Callable[[Record], Sequence[Record]],
          value: Callable[[Record], float | None]) -> None:
    """Per arch: one thin line per seed, a thick mean."""
    for arch, runs in by_arch(records).items():
        curves = [_curve(rows_of(r), value) for r in runs]
        for steps, values in curves:
            ax.plot(steps, values, color=COLORS.get(arch), lw=0.7, alpha=0.45)
        steps, mean = _mean_curve(curves)
        ax.plot(steps, mean, color=COLORS.get(arch), lw=2, label=f"{LABELS.get(arch, arch)}, n={len(runs)}")
    ax.grid(alpha=0.3)
    ax.set_xlabel("optimizer step")


def _level(level: str, key: str) -> Callable[[Record], float | None]:
    return lambda e: e["levels"].get(level, {}).get(key)


def plot_accuracy(records: Sequence[Record], path: Path) -> Path:
    """Realized and Bayes-optimal token accuracy on the simple (low32) and complex (high32) sets."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for col, (level, name) in enumerate((("low32", "simple (low32)"), ("high32", "complex (high32)"))):
        for row, (key, what) in enumerate((("token_acc", "token accuracy (realized next token)"),
                                           ("bayes_token_acc", "Bayes-optimal token accuracy"))):
            ax = axes[row][col]
            _draw(ax, records, lambda r: r["evals"], _level(level, key))
            ceiling = records[0]["eval"].get("bayes_ceiling", {}).get(level) if records else None
            if key == "token_acc" and ceiling is not None:
                ax.axhline(ceiling, color="0.3", ls="--", lw=1, label=f"Bayes predictor {ceiling:.3f}")
            ax.set_title(f"{name}: {what}", fontsize=10)
            ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path, dpi=110)


def plot_excess(records: Sequence[Record], path: Path) -> Path:
    """nll over the Bayes floor (nats per token) on every evaluated level, log scale."""
    levels = records[0]["eval"]["levels"] if records else []
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.8), squeeze=False)
    for ax, level in zip(axes[0], levels):
        _draw(ax, records, lambda r: r["evals"], _level(level, "excess_nll"))
        ax.set_yscale("log")
        ax.set_title(f"{level}: excess nll (nats/token)", fontsize=10)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def hessian_values(h: Record) -> dict[str, float | None]:
    """The figures of one Hessian record that the plot and the table show."""
    kappa = h["valley"]["kappa"]
    return {"lambda_max": h["largest"]["eigenvalues"][0]["value"],
            "lambda_min": h["smallest"]["eigenvalues"][0]["value"],
            "entropy_norm": h["entropy"]["normalized"], "entropy": h["entropy"]["value"],
            "entropy_err": h["entropy"]["error"], "valley_dim": h["valley"]["dimension"]["value"],
            "negative_dim": h["valley"]["negative_dimension"]["value"],
            "kappa": kappa["value"] if kappa["status"] == "determined" else None,
            "kappa_lower": kappa.get("lower_bound"), "loss": h["loss"]["value"],
            "lambda_max_ok": h["largest"]["eigenvalues"][0]["converged"],
            "lambda_min_ok": h["smallest"]["eigenvalues"][0]["converged"], "entropy_ok": h["entropy"]["converged"]}


def plot_hessian(records: Sequence[Record], path: Path) -> Path:
    """lambda_max, lambda_min, normalized matrix entropy, valley dimension and kappa(H_valley) vs step."""
    panels = (("lambda_max", "largest eigenvalue", False), ("lambda_min", "smallest eigenvalue", False),
              ("entropy_norm", "matrix entropy / log P (SLQ)", False), ("valley_dim", "valley dimension (SLQ)", True),
              ("kappa_lower", "kappa(H_valley): lower bound (undetermined)", True), ("loss", "loss on the probe batch",
                                                                                   True))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title, log) in zip(axes.flat, panels):
        _draw(ax, records, lambda r: r["hessian"], lambda h, k=key: hessian_values(h)[k])
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def plot_all(records: Sequence[Record], out: Path) -> list[Path]:
    """Every plot of the records into `out` (none without records)."""
    if not records:
        return []
    paths = [plot_accuracy(records, out / "accuracy.png"), plot_excess(records, out / "excess_nll.png")]
    if any(r["hessian"] for r in records):
        paths.append(plot_hessian(records, out / "hessian.png"))
    return paths


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_summary(records: Sequence[Record], fractions: Sequence[float] = (0, 0.1, 0.25, 0.5, 0.75, 1),
                  tail: int = 5) -> None:
    """Per run: the evaluations nearest each fraction of training, the mean of the last `tail`
    evaluations (the scores move from one evaluation to the next), then its Hessian records
    ('?': not converged to the probe's tolerance)."""
    for r in sorted(records, key=lambda r: (r["arch"], r["seed"])):
        print(f"\n{r['arch']} seed {r['seed']} ({r['state']}, step {r['step']}/{r['total_steps']}, "
              f"train {r['train_s']:.0f} CPU s): token_acc / bayes_token_acc / excess_nll per level")
        print("step  | " + " | ".join(r["eval"]["levels"]))
        evals = r["evals"]
        picks = sorted({min(evals, key=lambda e, f=f: abs(e["step"] - f * r["total_steps"]))["step"]
                        for f in fractions}) if evals else []
        for e in (e for e in evals if e["step"] in picks):
            cells = [f"{_fmt(m['token_acc'])} / {_fmt(m['bayes_token_acc'])} / {_fmt(m['excess_nll'])}"
                     for m in e["levels"].values()]
            print(f"{e['step']:>5} | " + " | ".join(cells))
        if r["state"] == "completed" and len(evals) >= tail:
            means = [{k: statistics.fmean(e["levels"][lv][k] for e in evals[-tail:])
                      for k in ("token_acc", "bayes_token_acc", "excess_nll")} for lv in r["eval"]["levels"]]
            print(f"last {tail} | " + " | ".join(
                f"{_fmt(m['token_acc'])} / {_fmt(m['bayes_token_acc'])} / {_fmt(m['excess_nll'])}" for m in means))
        if r["hessian"]:
            print("hessian step | lambda_max | lambda_min | entropy (nats) +- err | /log P | valley dim | "
                  "kappa (lower bound) | probe CPU s")
        for h in r["hessian"]:
            v = hessian_values(h)
            mark = {k: "" if v[f"{k}_ok"] else "?" for k in ("lambda_max", "lambda_min", "entropy")}
            print(f"{h['step']:>12} | {_fmt(v['lambda_max'], '.4g')}{mark['lambda_max']} | "
                  f"{_fmt(v['lambda_min'], '.4g')}{mark['lambda_min']} | {_fmt(v['entropy'], '.3f')} +- "
                  f"{_fmt(v['entropy_err'], '.2f')}{mark['entropy']} | {_fmt(v['entropy_norm'])} | "
                  f"{_fmt(v['valley_dim'], '.0f')} | {_fmt(v['kappa'], '.3g')} ({_fmt(v['kappa_lower'], '.3g')}) | "
                  f"{h['probe_s']:.1f}")
