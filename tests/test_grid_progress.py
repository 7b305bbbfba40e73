"""reports.grid_progress and the report of part of a grid: each planned run's state and next stage,
the same as the sweep's own decision, and claims that say "so far" while runs are to come."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpstab.cli import main
from fpstab.grid import load_grid
from fpstab.reports.claims import ClaimCheck, with_runs_to_come
from fpstab.reports.grid_progress import (DIVERGED, DONE, EVALUATED, NOT_STARTED, OTHER_CONFIG, TRAINED, TRAINING,
                                          grid_progress, run_progress)
from fpstab.reports.run_files import GRID_FILE, grid_plan, load_grid_plan, load_run_record
from fpstab.sweep import next_stage

SMOKE = Path(__file__).parent / "fixtures" / "grids" / "smoke.toml"


def write_state(run: Path, config: dict, state: str | None, checkpoint: bool = False, evaluated: bool = False,
                probed: tuple[str, ...] = ()) -> None:
    """A run directory in the given state: config.json, status.json, then the checkpoint, then the
    eval and probe records (written after the checkpoint, as a sweep writes them)."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"schema": "fpstab.run_config", "schema_version": 1,
                                                 "train": config}))
    if state is not None:
        (run / "status.json").write_text(json.dumps({"state": state, "step": 4 if state == "completed" else 2,
                                                     "total_steps": 4}))
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"")
    if evaluated:
        levels = [{"level": lv, "n_samples": 4, "accuracy": [acc], "final_accuracy": acc, "best_accuracy": acc,
                   "best_iteration": 1, "overthinking_penalty": 0.0} for lv, acc in (("16", 0.9), ("32", 0.8))]
        (run / "eval.json").write_text(json.dumps({"schema": "fpstab.eval", "schema_version": 1, "task": "prefix_sum",
                                                   "arch": config["arch"], "norm": config["norm"], "iters": 1,
                                                   "checkpoint_step": 4, "levels": levels}))
    if probed:
        (run / "probe.json").write_text(json.dumps({"schema": "fpstab.probe/2", "probes": [
            {"inputs": {"level": lv}} for lv in probed]}))


# state name -> (write_state arguments, the Progress state, the first word of the sweep's next stage)
CASES = {
    "fresh": (None, NOT_STARTED, "train"),
    "interrupted, checkpoint": (dict(state="interrupted", checkpoint=True), TRAINING, "train"),
    "interrupted, no checkpoint": (dict(state="interrupted"), TRAINING, "train"),
    "started, no status": (dict(state=None), TRAINING, "train"),
    "diverged": (dict(state="diverged"), DIVERGED, "nothing"),
    "trained, checkpoint": (dict(state="completed", checkpoint=True), TRAINED, "eval"),
    "trained, weights lost": (dict(state="completed"), TRAINED, "train"),
    "evaluated, checkpoint": (dict(state="completed", checkpoint=True, evaluated=True, probed=("16",)), EVALUATED,
                              "probe"),
    "evaluated, weights lost": (dict(state="completed", evaluated=True), EVALUATED, "train"),
    "done": (dict(state="completed", checkpoint=True, evaluated=True, probed=("16", "32")), DONE, "nothing"),
    "done, weights gone": (dict(state="completed", evaluated=True, probed=("16", "32")), DONE, "nothing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_progress_agrees_with_what_the_sweep_does_next(tmp_path, case):
    spec = load_grid(SMOKE).runs[0]
    plan = grid_plan(load_grid(SMOKE).to_dict(), SMOKE).runs[0]
    args, state, sweep_does = CASES[case]
    run = tmp_path / spec.name
    if args is not None:
        write_state(run, spec.config, **args)
    progress = run_progress(plan, load_run_record(run) if args is not None else None)
    assert progress.state == state
    sweep_next = next_stage(spec, run).split()[0].rstrip(",")
    assert sweep_next == sweep_does == (progress.next.split(",")[0] or "nothing")
    assert progress.to_come == (sweep_does != "nothing")


def test_a_run_of_another_config_under_a_grid_name_is_named_and_left_out(tmp_path):
    grid = load_grid(SMOKE)
    spec = grid.runs[0]
    write_state(tmp_path / spec.name, {**spec.config, "lr": 0.5}, "completed")
    write_state(tmp_path / "old-run", spec.config, "completed")
    runs = [load_run_record(tmp_path / spec.name), load_run_record(tmp_path / "old-run")]
    progress, outside = grid_progress(grid_plan(grid.to_dict(), SMOKE), runs)
    assert progress[0].state == OTHER_CONFIG and not progress[0].to_come
    assert f"lr 0.5 where the grid has {spec.config['lr']!r}" in progress[0].detail
    assert next_stage(spec, tmp_path / spec.name).startswith("refused")
    assert progress[1].state == NOT_STARTED
    assert [(r.name, why.split(":")[0]) for r, why in outside] == [("old-run", "not in the grid"),
                                                                    (spec.name, "another config")]
    # a key only one side records (added to TrainConfig in between) is not a difference, nor is a tuple
    # where the record has JSON's list
    newer = {**spec.config, "a_key_added_later": 1, "betas": tuple(spec.config["betas"])}
    assert run_progress(grid_plan({"runs": [{"name": "x", "config": newer, "eval_levels": [], "probe_levels": []}]},
                                  "g").runs[0], runs[1]).state != OTHER_CONFIG


def test_a_malformed_grid_description_is_refused_by_name(tmp_path):
    (tmp_path / GRID_FILE).write_text(json.dumps({"runs": [{"name": "a", "config": {}, "eval_levels": "16"}]}))
    with pytest.raises(ValueError, match=r"grid.json: run 0 must hold"):
        load_grid_plan(tmp_path)
    with pytest.raises(ValueError, match="not a grid description"):
        grid_plan([], "somewhere")
    assert load_grid_plan(tmp_path / "nothing here") is None


def test_claims_say_so_far_while_runs_are_to_come():
    plan = grid_plan(load_grid(SMOKE).to_dict(), SMOKE)
    coming = [run_progress(p, None) for p in plan.runs[:1]]
    held = with_runs_to_come(ClaimCheck("t", "c", "held", "1 of 1 runs fit (seeds 0); 1 of them extrapolate."),
                             coming)
    assert held.verdict == "held (so far; 1 grid run to come)"
    assert held.evidence.endswith(f"extrapolate. To come: {plan.runs[0].name} (not started, next: train, eval, probe).")
    none = with_runs_to_come(ClaimCheck("t", "c", "undetermined: no such run", "n = 0 in this tree"), coming * 2)
    assert none.verdict == "undetermined: not run yet" and "n = 0 in this tree. To come:" in none.evidence
    assert with_runs_to_come(held, []) is held


def test_the_report_of_part_of_a_grid_lists_what_is_to_come_and_leaves_out_other_runs(tmp_path, capsys):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(SMOKE.read_text().replace('levels = ["hardest"]', "levels = []"))  # eval is the last stage
    grid = load_grid(grid_file)
    tree = tmp_path / "runs"
    tree.mkdir()
    (tree / GRID_FILE).write_text(json.dumps(grid.to_dict()))
    done, later = grid.runs
    write_state(tree / done.name, done.config, "completed", checkpoint=True, evaluated=True)
    write_state(tree / "left-over", {**done.config, "arch": "internal_recall"}, "completed", evaluated=True)
    (tree / "left-over" / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "val_exact_match": 0.25}))
    assert main(["report", str(tree), "--out", str(tmp_path / "r1")]) == 0
    md = (tmp_path / "r1" / "index.md").read_text()
    assert "## The grid's progress" in md and "1 done, 1 not started" in md
    assert f"| {later.name} | not started | train, eval | — |" in md
    assert "| left-over | not in the grid | completed | 25.0 |" in md
    assert "internal_recall+outer" not in md.split("## The grid's progress")[1].split("Run directories left out")[1]
    assert "(so far; 1 grid run to come)" in md  # the recall claim: one recall + outer run still to come
    # --no-grid: every run directory, no progress section
    assert main(["report", str(tree), "--out", str(tmp_path / "r2"), "--no-grid"]) == 0
    md = (tmp_path / "r2" / "index.md").read_text()
    assert "The grid's progress" not in md and "internal_recall+outer" in md
    # the grid file edited since that sweep: a note, and --grid follows the file as it is now
    grid_file.write_text(grid_file.read_text() + "\n# edited\n")
    capsys.readouterr()
    assert main(["report", str(tree), "--out", str(tmp_path / "r3")]) == 0
    assert "was written from an earlier version of" in capsys.readouterr().err
    assert main(["report", str(tree), "--out", str(tmp_path / "r3"), "--grid", str(grid_file)]) == 0
    assert "1 done, 1 not started" in (tmp_path / "r3" / "index.md").read_text()
