"""How far a grid has got: each planned run's state and what the sweep does next, read from records.

A grid is trained over several sittings (a sweep stopped by a deadline continues from its records),
so a report of a results tree is often a report of part of a grid. With the grid's plan (the
grid.json a sweep writes into its --out, or the grid file itself), `grid_progress` says for every
planned run whether it is done, diverged, still to train, trained but not evaluated, or evaluated
but not probed, and which run directories in the tree are not runs of the grid (left over from an
earlier version of it) or hold another config under a grid run's name (the sweep refuses those).

This reads only records and whether a checkpoint file is there, as `fpstab sweep --dry-run` does;
the sweep's own decision also compares file times, so where the two differ the sweep is right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpstab.reports.document import Block
from fpstab.reports.run_files import GridPlan, PlannedRun, RunRecord, last_checkpoint_file

DONE, DIVERGED, OTHER_CONFIG = "done", "diverged", "another config"
NOT_STARTED, TRAINING, TRAINED, EVALUATED = "not started", "training", "trained, not evaluated", "evaluated, not probed"


@dataclass(frozen=True)
class Progress:
    """One planned run: its record (None when not started), state, what the sweep does next ("" for
    nothing) and a detail (steps, missing levels, the config difference)."""

    planned: PlannedRun
    run: RunRecord | None
    state: str
    next: str
    detail: str = ""

    @property
    def to_come(self) -> bool:
        """True while the sweep still has stages to run for this run."""
        return self.state not in (DONE, DIVERGED, OTHER_CONFIG)

    @property
    def arch(self) -> str:
        return str(self.planned.config.get("arch"))

    @property
    def norm(self) -> str:
        return str(self.planned.config.get("norm"))


def config_differences(planned: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key -> (recorded, planned) for every TrainConfig key both hold with different values (a key
    only one side holds was added to TrainConfig in between and is not compared; a tuple equals the
    list JSON makes of it)."""
    return {k: (recorded[k], planned[k]) for k in planned
            if k in recorded and _plain(recorded[k]) != _plain(planned[k])}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _evaluated(planned: PlannedRun, run: RunRecord) -> bool:
    """eval.json covers every planned eval level, at the step training ended."""
    rec = run.eval or {}
    have = {str(lv.get("level")) for lv in rec.get("levels", [])}
    return rec.get("checkpoint_step") == run.status.get("step") and set(planned.eval_levels) <= have


def _stages_from(first: str, planned: PlannedRun) -> str:
    stages = ["train", "eval", "probe"] if planned.probe_levels else ["train", "eval"]
    return ", ".join(stages[stages.index(first):])


def run_progress(planned: PlannedRun, run: RunRecord | None) -> Progress:
    """Where one planned run stands, from its record (None: no run directory with a config yet)."""
    if run is None:
        return Progress(planned, None, NOT_STARTED, _stages_from("train", planned))
    diff = config_differences(planned.config, run.train)
    if diff:
        detail = "; ".join(f"{k} {a!r} where the grid has {b!r}" for k, (a, b) in sorted(diff.items()))
        return Progress(planned, run, OTHER_CONFIG, "", f"{detail} (the sweep refuses to continue it)")
    state, step, total = run.state, run.status.get("step"), run.status.get("total_steps")
    if state == "diverged":
        return Progress(planned, run, DIVERGED, "", f"at step {step}")
    ckpt = last_checkpoint_file(run.path).is_file()
    if state != "completed":
        where = "resumes from its checkpoint" if ckpt else "no checkpoint here, so it trains from step 0"
        at = f"{state} at step {step} of {total}" if run.status else "started, no status written"
        return Progress(planned, run, TRAINING, _stages_from("train", planned), f"{at}; {where}")
    if not _evaluated(planned, run):
        if not ckpt:
            return Progress(planned, run, TRAINED, _stages_from("train", planned), "its checkpoint is not here: trains again")
        return Progress(planned, run, TRAINED, _stages_from("eval", planned))
    missing = [lv for lv in planned.probe_levels if lv not in run.probes]
    if missing:
        again = "" if ckpt else "; its checkpoint is not here: trains again"
        return Progress(planned, run, EVALUATED, _stages_from("probe" if ckpt else "train", planned),
                        f"levels {', '.join(missing)} not probed{again}")
    return Progress(planned, run, DONE, "")


def grid_progress(plan: GridPlan, runs: Sequence[RunRecord]) -> tuple[list[Progress], list[tuple[RunRecord, str]]]:
    """Every planned run's progress (in grid order), and the run directories of the tree that are
    not runs of the grid, each with why: not in the grid, or another config under a grid run's name."""
    by_name = {r.name: r for r in runs}
    progress = [run_progress(p, by_name.get(p.name)) for p in plan.runs]
    planned = {p.name for p in plan.runs}
    outside = [(r, "not in the grid") for r in runs if r.name not in planned]
    outside += [(p.run, f"another config: {p.detail}") for p in progress if p.state == OTHER_CONFIG and p.run]
    return progress, outside


def runs_of_the_grid(runs: Sequence[RunRecord], progress: Sequence[Progress]) -> list[RunRecord]:
    """The records among `runs` (in their order) that belong to the grid, by name and config: what the
    report analyses."""
    names = {p.planned.name for p in progress if p.run is not None and p.state != OTHER_CONFIG}
    return [r for r in runs if r.name in names]


def progress_blocks(plan: GridPlan, progress: Sequence[Progress], outside: Sequence[tuple[RunRecord, str]],
                    tree: Path, val_text: Callable[[RunRecord], str]) -> list[Block]:
    """The report's section on the grid: counts per task, the runs still to come and those left out
    (with their validation exact match as `val_text` formats it, so what they showed stays in view)."""
    states = [p.state for p in progress]
    counts = ", ".join(f"{states.count(s)} {s}" for s in (DONE, DIVERGED, TRAINED, EVALUATED, TRAINING, NOT_STARTED,
                                                          OTHER_CONFIG) if s in states)
    source = plan.source or "the grid"
    to_come = [p for p in progress if p.to_come]
    text = f"The grid ({source}; {len(progress)} runs): {counts}. "
    if to_come:
        text += (f"`fpstab sweep {source} --out {tree}` continues it from these records (`--dry-run` lists what "
                 "each run would do next); the tables and claims below use only the grid's runs that have records.")
    else:
        text += "Nothing is left to run; the tables and claims below use the grid's runs."
    if outside:
        text += (f" {len(outside)} run director{'y' if len(outside) == 1 else 'ies'} here "
                 f"{'is' if len(outside) == 1 else 'are'} not (a run of) this grid and "
                 f"{'is' if len(outside) == 1 else 'are'} left out of them, listed last.")
    blocks: list[Block] = [("h", 2, "The grid's progress"), ("p", text), ("table", *_counts_table(progress))]
    if to_come:
        blocks += [("p", "Runs still to come, in the grid's order:"),
                   ("table", ["run", "state", "next", "detail"], [[p.planned.name, p.state, p.next, p.detail or "—"]
                                                                for p in to_come])]
    if outside:
        blocks += [("p", "Run directories left out:"),
                   ("table", ["run", "why", "state", "val (%)"],
                    [[r.name, why, r.state, val_text(r)] for r, why in outside])]
    return blocks


def _counts_table(progress: Sequence[Progress]) -> tuple[list[str], list[list[str]]]:
    tasks = list(dict.fromkeys(p.planned.task for p in progress))
    rows = []
    for task in tasks:
        members = [p for p in progress if p.planned.task == task]
        done = sum(p.state == DONE for p in members)
        diverged = sum(p.state == DIVERGED for p in members)
        refused = sum(p.state == OTHER_CONFIG for p in members)
        rows.append([task, str(len(members)), str(done), str(diverged), str(sum(p.to_come for p in members)),
                     str(refused)])
    return ["task", "runs", "done", "diverged", "to come", "refused (another config)"], rows
