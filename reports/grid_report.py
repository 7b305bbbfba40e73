"""The extrapolation report of a results tree: do the probe's verdicts predict which cores extrapolate?

`write_report(tree, out)` reads only run records (reports.run_files) and writes
out/index.md, a self-contained out/index.html and out/figures/*.png:

- per task, an accuracy table (rows: configurations, columns: eval levels; the
  accuracy at the last iteration T as mean +- standard deviation over seeds,
  n seeds per cell), with best iteration, overthinking and halting nfe at the
  hardest level, and accuracy-vs-iteration ("schoop") plots with the training
  iterations shaded;
- the probe table: each run's verdicts and key figures at every probed level,
  next to its accuracy at its hardest level;
- the paper's claims (reports.claims), each with a verdict, n and seeds;
- with the grid's plan (the tree's grid.json, written by `fpstab sweep`, or one given): how far
  the grid has got and what is still to come (reports.grid_progress); the tables and claims then
  use only the grid's runs, and a claim with runs still to come says "so far";
- the headline: Spearman's rho (95 % percentile bootstrap interval, seeded)
  between each probe figure or verdict and hard-level accuracy across runs,
  pooled and per task, with scatter plots, and a paragraph generated from
  those numbers saying what they support and what they do not.

The output depends only on the records: the same tree gives the same bytes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fpstab.reports.claims import FIT_MIN, check_claims, claims_table, definitions, fits
from fpstab.reports.document import Block, to_html, to_markdown
from fpstab.reports.grid_progress import Progress, grid_progress, progress_blocks, runs_of_the_grid
from fpstab.reports.probe_summary import AXES, FIGURES, VERDICT_SCORE, probe_summary
from fpstab.reports.report_plots import scatter_figure, schoop_figure
from fpstab.reports.run_files import GridPlan, RunRecord, find_runs
from fpstab.reports.stats import Correlation, spearman

ALWAYS = ("task", "arch", "norm")
SEED_KEYS = ("seed",)


# ---- what a run is and what it scored ----------------------------------------------------------
def configuration_keys(runs: Sequence[RunRecord]) -> list[str]:
    """task, arch, norm, then every other TrainConfig key whose value differs between the runs that
    record it (not seeds). A key that older runs lack (added to TrainConfig after they trained) and
    newer runs all hold at one value does not split the runs."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.train if k not in keys]
    varying = [k for k in keys if k not in ALWAYS and k not in SEED_KEYS and k != "preset"
               and len({repr(r.train[k]) for r in runs if k in r.train}) > 1]
    return [*ALWAYS, *varying]


def configuration(run: RunRecord, keys: Sequence[str]) -> str:
    """The run's configuration label: arch+norm and the other varying keys (its task is a section)."""
    t = run.train
    extra = [f"{k}={t.get(k)}" for k in keys if k not in ALWAYS]
    return f"{t.get('arch')}+{t.get('norm')}" + (" " + " ".join(extra) if extra else "")


def eval_levels(run: RunRecord) -> list[str]:
    return [str(lv["level"]) for lv in (run.eval or {}).get("levels", [])]


def level_record(run: RunRecord, level: str) -> Mapping[str, Any] | None:
    for lv in (run.eval or {}).get("levels", []):
        if str(lv["level"]) == level:
            return lv
    return None


def last_validation(run: RunRecord) -> float | None:
    """Exact match on the held-out validation set at the training level and depth, at the last epoch logged."""
    vals = [m["val_exact_match"] for m in run.metrics if m.get("kind") == "epoch" and "val_exact_match" in m]
    return vals[-1] if vals else None


def hard_accuracy(run: RunRecord) -> float | None:
    """Exact-match accuracy at the last iteration T on the run's hardest (last) eval level."""
    levels = eval_levels(run)
    return level_record(run, levels[-1])["final_accuracy"] if levels else None


# ---- tables --------------------------------------------------------------------------------------
def accuracy_table(runs: Sequence[RunRecord], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Rows: configurations of one task; cells: acc@T mean +- sd over seeds (n)."""
    levels: list[str] = []
    for run in runs:
        levels += [lv for lv in eval_levels(run) if lv not in levels]
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[configuration(run, keys)].append(run)
    header = ["configuration", "val (%)", *[f"{lv} acc@T (%)" for lv in levels], "hardest: best (%) @ t",
              "overthinking (pp)", "halting acc (%) / nfe", "state"]
    rows = []
    for label, members in groups.items():
        evaluated = [r for r in members if r.eval]
        cells = [_mean_sd([_acc(r, lv) for r in evaluated]) for lv in levels]
        hard = [level_record(r, levels[-1]) for r in evaluated] if levels else []
        hard = [h for h in hard if h]
        rows.append([label, _mean_sd([last_validation(r) for r in members]), *cells, _best(hard),
                     _mean_sd([h["overthinking_penalty"] for h in hard]), _halting(hard), _states(members)])
    return header, rows


def probe_table(runs: Sequence[RunRecord],
                keys_by_task: Mapping[str, Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """One row per (run, probed level): verdicts, key figures and the run's hard-level accuracy."""
    header = ["run", "level", *[a.replace("_", "-") for a in AXES], "max rho", "min sigma_min(I-J)",
              "median IFT gain", "max path distance", "converged", "hard acc@T (%)"]
    rows = []
    for run in runs:
        keys = keys_by_task[str(run.train.get("task"))]
        for level, record in run.probes.items():
            s = probe_summary(record)
            rows.append([f"{run.train.get('task')} {configuration(run, keys)} s{run.train.get('seed')}", level,
                         *[s["verdicts"][a] for a in AXES],
                         *[("unconverged" if f in s["unconverged"] else _num(s["figures"][f]))
                           for f in ("rho_max", "sigma_min", "ift_gain", "path_distance")],
                         _pct(s["figures"]["converged_share"]), _pct(hard_accuracy(run))])
    return header, rows


# ---- correlations --------------------------------------------------------------------------------
def probe_points(runs: Sequence[RunRecord], which: str) -> list[tuple[RunRecord, dict[str, Any]]]:
    """(run, summary) of each run's probe at its training level ("train") or its last probed level ("hardest")."""
    out = []
    for run in runs:
        if not run.probes or hard_accuracy(run) is None:
            continue
        levels = list(run.probes)
        train = str(run.train.get("train_level") or (run.config.get("train_level")))
        level = (train if train in run.probes else levels[0]) if which == "train" else levels[-1]
        out.append((run, probe_summary(run.probes[level])))
    return out


FITTING_SCOPE = f"fitting runs (val >= {100 * FIT_MIN:.0f} %)"


def correlations(runs: Sequence[RunRecord], seed: int = 0) -> list[tuple[str, str, str, Correlation]]:
    """(scope, probed level, quantity, Spearman vs hard acc) for every figure and verdict: pooled, over the
    runs that fit the training level only (a run that never learned it scores 0 at every level, whatever
    its fixed points), and per task."""
    scopes = ([("all tasks", list(runs)), (FITTING_SCOPE, [r for r in runs if fits(r, last_validation)])]
              + [(t, [r for r in runs if r.train.get("task") == t])
                 for t in sorted({str(r.train.get("task")) for r in runs})])
    out = []
    for scope, members in scopes:
        for which in ("train", "hardest"):
            points = probe_points(members, which)
            acc = [hard_accuracy(r) for r, _ in points]
            for f in FIGURES:
                out.append((scope, which, f, spearman([s["figures"][f] for _, s in points], acc, seed=seed)))
            for a in AXES:
                out.append((scope, which, f"{a} verdict", spearman(
                    [VERDICT_SCORE.get(s["verdicts"][a]) for _, s in points], acc, seed=seed)))
    return out


def correlation_table(found: Sequence[tuple[str, str, str, Correlation]]) -> tuple[list[str], list[list[str]]]:
    """Rows: (quantity, probed level); columns: scopes; cells: rho [95 % interval] (n), * when it excludes 0."""
    scopes = list(dict.fromkeys(scope for scope, _, _, _ in found))
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for scope, which, what, c in found:
        mark = " *" if c.excludes_zero() else ""
        cells[(what, which)][scope] = "—" if c.rho is None else f"{c.rho:+.2f} [{c.lo:+.2f}, {c.hi:+.2f}] (n={c.n}){mark}"
    rows = [[what, which, *[cell.get(s, "—") for s in scopes]] for (what, which), cell in cells.items()]
    return ["quantity", "probed level", *scopes], rows


def findings(runs: Sequence[RunRecord], found: Sequence[tuple[str, str, str, Correlation]]) -> str:
    """A plain-language paragraph generated from the numbers (no claim beyond them)."""
    probed = [r for r in runs if r.probes and hard_accuracy(r) is not None]
    seeds = sorted({r.train.get("seed") for r in runs})
    tasks = sorted({str(r.train.get("task")) for r in runs})
    text = (f"{len(runs)} runs ({len(probed)} trained, evaluated and probed) on {', '.join(tasks)}, "
            f"seeds {seeds}. Hard-level accuracy is exact match at the last evaluated iteration on each run's "
            "hardest eval level. ")
    if not any(s == "all tasks" and c.rho is not None for s, _, _, c in found):
        return text + "Too few probed runs with varying figures to correlate anything."
    text += _strong(found, "all tasks", "Pooled over tasks") + " " + _strong(
        found, FITTING_SCOPE, "Over the runs that fit the training level only (the column that says something "
        "about extrapolation; the pooled one also ranks runs that never learned the task)")
    return text + (" Pooling mixes tasks of different difficulty, so read the per-task rows too; with a handful of "
                   "runs per task an interval that includes zero means the grid cannot tell, not that there is no "
                   "relation, and an interval that excludes it is evidence about these runs, not a law.")


def _strong(found: Sequence[tuple[str, str, str, Correlation]], scope: str, where: str) -> str:
    """One sentence naming the quantities of `scope` whose interval excludes zero."""
    rows = [(w, q, c) for s, w, q, c in found if s == scope and c.rho is not None]
    if not rows:
        return f"{where}: too few runs with varying figures to correlate anything."
    strong = [f"{q} at the {w} level (rho {c.rho:+.2f}, interval [{c.lo:+.2f}, {c.hi:+.2f}], n={c.n})"
              for w, q, c in rows if c.excludes_zero()]
    if not strong:
        return f"{where}, no probe figure or verdict has a 95 % bootstrap interval that excludes zero."
    return f"{where}, the 95 % bootstrap interval excludes zero for: " + "; ".join(strong) + "."


# ---- the whole report ------------------------------------------------------------------------------
def build_report(runs: Sequence[RunRecord], out: Path, title: str, seed: int = 0, plan: GridPlan | None = None,
                 tree: Path | None = None) -> list[Block]:
    """The report's blocks; figures are written under out/figures. With `plan` (the grid the runs
    belong to; `tree` is where they are), a section on its progress, and only its runs analysed."""
    to_come: list[Progress] = []
    grid_section: list[Block] = []
    if plan is not None:
        progress, outside = grid_progress(plan, runs)
        runs = runs_of_the_grid(runs, progress)
        to_come = [p for p in progress if p.to_come]
        grid_section = progress_blocks(plan, progress, outside, tree or out.parent,
                                       lambda r: _pct(last_validation(r)))
    blocks: list[Block] = [("h", 1, title), ("p", _overview(runs)), *grid_section]
    tasks = sorted({str(r.train.get("task")) for r in runs})
    keys_by_task = {t: configuration_keys([r for r in runs if r.train.get("task") == t]) for t in tasks}
    for task in tasks:
        members = [r for r in runs if r.train.get("task") == task]
        keys = keys_by_task[task]
        header, rows = accuracy_table(members, keys)
        blocks += [("h", 2, f"{task}: accuracy by level"), ("p", _protocol(members)), ("table", header, rows)]
        fig = schoop_figure(members, lambda r: configuration(r, keys), out / "figures" / f"schoop_{task}.png")
        if fig is not None:
            blocks.append(("img", fig, f"{task}: exact-match accuracy against iterations, mean over seeds; "
                                       "shaded: the iterations seen in training"))
    blocks += [("h", 2, "The paper's claims in this grid"), ("p", definitions()),
               ("table", *claims_table(check_claims(runs, last_validation, hard_accuracy, to_come)))]
    header, rows = probe_table(runs, keys_by_task)
    blocks += [("h", 2, "Probe verdicts and figures"), ("table", header, rows)]
    found = correlations(runs, seed=seed)
    blocks += [("h", 2, "Do the probes predict extrapolation?"), ("p", findings(runs, found)),
               ("p", "Spearman's rho between each quantity (verdicts as fail 0 < undetermined 1 < pass 2) and "
                     "hard-level accuracy across runs, with its 95 % percentile bootstrap interval (2000 resamples); "
                     "* marks an interval that excludes 0; — where fewer than 3 runs or a constant side."),
               ("table", *correlation_table(found))]
    fig = scatter_figure(probe_points(runs, "hardest"), hard_accuracy, FIGURES, out / "figures" / "scatter.png")
    if fig is not None:
        blocks.append(("img", fig, "Probe figures at each run's hardest probed level against its hard-level accuracy"))
    return blocks


def write_report(tree: str | Path, out: str | Path, title: str | None = None, seed: int = 0,
                 plan: GridPlan | None = None) -> tuple[Path, Path]:
    """Read the runs under `tree`, write out/index.md and out/index.html; returns their paths. With
    `plan` (e.g. `load_grid_plan(tree)`, the grid a sweep wrote there), the report follows that grid;
    without, it reports every run directory."""
    runs = find_runs(tree)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    blocks = build_report(runs, out, title or f"fpstab report: {Path(tree).name}", seed=seed, plan=plan,
                          tree=Path(tree))
    md, page = out / "index.md", out / "index.html"
    md.write_text(to_markdown(blocks, out))
    page.write_text(to_html(blocks, title or f"fpstab report: {Path(tree).name}"))
    return md, page


# ---- formatting helpers --------------------------------------------------------------------------
def _acc(run: RunRecord, level: str) -> float | None:
    rec = level_record(run, level)
    return None if rec is None else rec["final_accuracy"]


def _mean_sd(values: Sequence[float | None]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "—"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{100 * mean:.1f} (n=1)"
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{100 * mean:.1f} ± {100 * sd:.1f} (n={len(vals)})"


def _best(levels: Sequence[Mapping[str, Any]]) -> str:
    if not levels:
        return "—"
    return ", ".join(f"{100 * lv['best_accuracy']:.1f} @ {lv['best_iteration']}" for lv in levels)


def _halting(levels: Sequence[Mapping[str, Any]]) -> str:
    h = [lv["halting"] for lv in levels if lv.get("halting")]
    if not h:
        return "—"
    return ", ".join(f"{100 * x['accuracy']:.1f} / {x['mean_nfe']:.0f}" for x in h)


def _states(members: Sequence[RunRecord]) -> str:
    """'1 completed', or '1 interrupted at step 397/640' for runs that stopped early."""
    parts = []
    for r in members:
        step, total = r.status.get("step"), r.status.get("total_steps")
        early = r.state != "completed" and step is not None and total
        parts.append(f"{r.state} at step {step}/{total}" if early else r.state)
    return ", ".join(f"{parts.count(s)} {s}" for s in sorted(set(parts)))


def _overview(runs: Sequence[RunRecord]) -> str:
    states = [r.state for r in runs]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    counted = f"{len(runs)} run{'' if len(runs) == 1 else 's'}" + (f" ({counts})" if runs else "")
    return (f"{counted}. Accuracy is exact match (every token right); acc@T is measured at the "
            "last evaluated iteration T. Cells give mean ± standard deviation over seeds and n, the number of runs.")


def _protocol(members: Sequence[RunRecord]) -> str:
    t = members[0].train
    level = t.get("train_level") or members[0].config.get("train_level") or "(ladder default)"
    iters = sorted({r.eval.get("iters") for r in members if r.eval})
    n = sorted({lv.get("n_samples") for r in members for lv in (r.eval or {}).get("levels", [])})
    evaluated = (f"evaluated to T = {iters[-1]} iterations (one-pass baselines at 1) on {' or '.join(map(str, n))} samples per level"
                 if iters else "not evaluated")
    s = {key: _setting(members, key) for key in ("d_model", "n_heads", "epochs", "n_train", "batch_size", "lr",
                                                  "train_iters")}
    return (f"Trained on level {level}, d_model {s['d_model']}, {s['n_heads']} heads, {s['epochs']} "
            f"epochs of {s['n_train']} at batch {s['batch_size']}, lr {s['lr']}, {s['train_iters']} training iterations; "
            f"{evaluated}. val: exact match on held-out inputs at the training level and depth, last epoch.")


def _setting(members: Sequence[RunRecord], key: str) -> str:
    """A training setting of a task's runs: the value most runs share, then each other value with the
    runs that have it, by name, e.g. "0.001 (0.0001: chess-no_recall-inner-lr0.0001-s0, ...)"."""
    values = [r.train.get(key) for r in members]
    common = max(values, key=lambda v: (values.count(v), -values.index(v)))
    others: dict[str, list[str]] = {}
    for r, v in zip(members, values):
        if v != common:
            others.setdefault(str(v), []).append(r.name)
    return str(common) + (f" ({'; '.join(f'{v}: ' + ', '.join(names) for v, names in others.items())})"
                          if others else "")


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"
