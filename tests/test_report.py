"""`fpstab report` on a synthetic results tree: tables, correlations, determinism, self-contained HTML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fpstab.cli import main
from fpstab.reports.grid_report import FITTING_SCOPE, accuracy_table, configuration_keys, correlations
from fpstab.reports.run_files import RunRecord, find_runs
from fpstab.reports.stats import spearman

T = 40


def write_run(tree: Path, name: str, arch: str, seed: int, hard_acc: float, rho: float) -> None:
    """A completed, evaluated and probed run whose records say what the arguments say."""
    run = tree / name
    run.mkdir(parents=True)
    train = {"task": "prefix_sum", "arch": arch, "norm": "outer", "seed": seed, "lr": 3e-4, "train_iters": 30,
             "d_model": 16, "n_heads": 2, "epochs": 1, "n_train": 64, "batch_size": 16, "train_level": None}
    (run / "config.json").write_text(json.dumps({"schema": "fpstab.run_config", "schema_version": 1, "train": train}))
    (run / "status.json").write_text(json.dumps({"state": "completed", "step": 4}))
    levels = []
    for level, acc in (("32", min(1.0, hard_acc + 0.1)), ("64", hard_acc)):
        curve = [acc * min(1.0, t / 20) for t in range(1, T + 1)]
        levels.append({"level": level, "n_samples": 10, "accuracy": curve, "final_accuracy": curve[-1],
                       "best_accuracy": max(curve), "best_iteration": curve.index(max(curve)) + 1,
                       "overthinking_penalty": max(curve) - curve[-1],
                       "halting": {"tol": 1e-3, "accuracy": acc, "mean_nfe": 21.0, "halted_fraction": 1.0}})
    (run / "eval.json").write_text(json.dumps({"schema": "fpstab.eval", "schema_version": 1, "task": "prefix_sum",
                                               "arch": arch, "norm": "outer", "iters": T, "levels": levels}))
    (run / "probe.json").write_text(json.dumps(probe_record("64", rho)))
    val = min(1.0, hard_acc + 0.1)  # fits (>= 0.5) for the recall runs below, not for no_recall
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "val_exact_match": val}) + "\n")


def probe_record(level: str, rho: float) -> dict:
    """A probe record (schema fpstab.probe/2) with one entry at `level` and two samples."""
    def axis(status: str, figures: dict, estimates: dict | None = None) -> dict:
        return {"verdict": {"status": status, "reason": ""}, "estimates": estimates or {},
                "figures": {k: {"label": k, "per_sample": v} for k, v in figures.items()}}
    converged = {"converged": [True, True]}
    axes = {"reachability": axis("pass" if rho < 1 else "fail",
                                 {"spectral_radius": [rho, rho - 0.1], "loop_converged": [True, True]},
                                 {"spectral_radius": converged}),
            "path_independence": axis("pass", {"path_distance": [0.0, 0.0]}),
            "input_dependence": axis("pass", {"ift_gain": [0.3, 0.3]}, {"ift_solve": converged}),
            "geometry": axis("pass", {"sigma_min": [1 - rho, 1.1 - rho]}, {"sigma_min": converged})}
    entry = {"map": {"source": "checkpoint", "arch": "a", "norm": "outer"}, "settings": {}, "thresholds": {},
             "inputs": {"task": "prefix_sum", "level": level, "data_seed": 3, "held_out": True},
             "axes": axes, "seconds": 1.0}
    return {"schema": "fpstab.probe/2", "probes": [entry]}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "runs"
    for i, (arch, seed, acc, rho) in enumerate([("standard_recall", 0, 0.9, 0.5), ("standard_recall", 1, 0.8, 0.6),
                                                ("no_recall", 0, 0.1, 0.95), ("no_recall", 1, 0.0, 1.2),
                                                ("internal_recall", 0, 0.7, 0.7)]):
        write_run(tree, f"r{i}-{arch}-s{seed}", arch, seed, acc, rho)
    return tree


def test_accuracy_table_groups_seeds_with_mean_sd_and_n(tree):
    runs = find_runs(tree)
    keys = configuration_keys(runs)
    assert keys == ["task", "arch", "norm"]  # seed varies but is what the cells average over
    header, rows = accuracy_table(runs, keys)
    assert header[1:4] == ["val (%)", "32 acc@T (%)", "64 acc@T (%)"]
    by = {r[0]: r for r in rows}
    assert by["standard_recall+outer"][3] == "85.0 ± 7.1 (n=2)"
    assert by["internal_recall+outer"][3] == "70.0 (n=1)" and by["no_recall+outer"][-1] == "2 completed"


def test_a_key_that_older_runs_lack_splits_runs_only_where_recorded_values_differ():
    def rec(name: str, **train) -> RunRecord:
        return RunRecord(name, Path(name), {"train": {"task": "prefix_sum", "arch": "no_recall", "norm": "outer",
                                                      "seed": 0, **train}})
    old, new = rec("old", d_model=64), rec("new", d_model=128, shift=False)  # shift: added after "old" trained
    assert configuration_keys([old, new]) == ["task", "arch", "norm", "d_model"]
    assert configuration_keys([old, new, rec("newer", d_model=128, shift=True)])[-1] == "shift"


def test_probe_figures_correlate_with_hard_accuracy_across_runs(tree):
    found = {(s, w, q): c for s, w, q, c in correlations(find_runs(tree))}
    rho = found[("all tasks", "hardest", "rho_max")]
    assert rho.n == 5 and rho.rho == pytest.approx(-1.0) and rho.hi < 0 and rho.excludes_zero()
    assert found[("all tasks", "hardest", "sigma_min")].rho == pytest.approx(1.0)
    assert found[("all tasks", "hardest", "input_dependence verdict")].rho is None  # constant: no rank
    fitting = found[(FITTING_SCOPE, "hardest", "rho_max")]  # the three recall runs; no_recall never fit
    assert fitting.n == 3 and fitting.rho == pytest.approx(-1.0)
    assert found[(FITTING_SCOPE, "hardest", "reachability verdict")].rho is None  # all pass


def test_spearman_matches_scipy_and_its_interval_covers_it():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    c = spearman(list(x), list(y), seed=1)
    assert c.rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert c.lo < c.rho < c.hi and c.boot_used == 2000
    assert spearman([1, 2, None, float("nan")], [1, 2, 3, 4]).n == 2  # only finite pairs count
    assert spearman(list(x), list(y), seed=1) == c  # seeded: reproducible


def test_report_is_deterministic_and_self_contained(tree, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(tree), "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(["report", str(tree), "--out", str(out)]) == 0
    again = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == again and {"index.md", "index.html", "schoop_prefix_sum.png", "scatter.png"} <= set(first)
    page = first["index.html"].decode()
    assert "data:image/png;base64," in page and 'src="figures' not in page
    md = first["index.md"].decode()
    assert "](figures/schoop_prefix_sum.png)" in md and "Do the probes predict extrapolation?" in md
    assert "The paper's claims in this grid" in md


def test_report_refuses_a_tree_without_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run directories" in capsys.readouterr().err


def test_record_writers_and_readers_agree_on_their_schema_strings() -> None:
    """fixedpoint writes the probe and Hessian records and reports reads them; as sibling packages
    they hold their own copies of each schema string, which must be the same."""
    from fpstab.fixedpoint.hessian import HESSIAN_SCHEMA as hessian_written
    from fpstab.fixedpoint.probes.records import SCHEMA_VERSION as probe_written
    from fpstab.reports.hessian_table import HESSIAN_SCHEMA as hessian_read
    from fpstab.reports.run_files import PROBE_SCHEMA as probe_read

    assert (probe_written, hessian_written) == (probe_read, hessian_read)


def test_a_malformed_eval_record_is_named_not_a_traceback(tree, capsys):
    path = sorted(tree.iterdir())[0] / "eval.json"
    record = json.loads(path.read_text())
    del record["levels"][1]["best_accuracy"]
    path.write_text(json.dumps(record))
    assert main(["report", str(tree), "--out", str(tree.parent / "report")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "level #1 lacks keys ['best_accuracy']" in err and "rerun `fpstab eval" in err


def test_the_protocol_line_names_the_runs_trained_with_another_setting():
    """A task whose runs differ in a setting (no_recall at its own lr and batch) says so, by run name,
    instead of printing the first run's value as the task's."""
    from fpstab.reports.grid_report import _protocol

    def run(name, **train):
        base = {"task": "chess", "d_model": 256, "n_heads": 8, "epochs": 16, "n_train": 40000, "batch_size": 100,
                "lr": 1e-3, "train_iters": 30}
        return RunRecord(name, Path(name), {"train": {**base, **train}})

    same = _protocol([run("a"), run("b")])
    assert "at batch 100, lr 0.001, 30 training iterations" in same and ": " not in same.split(";")[0]
    line = _protocol([run("a", lr=1e-4), run("b"), run("c"), run("d", lr=1e-4, batch_size=500), run("e")])
    assert "at batch 100 (500: d), lr 0.001 (0.0001: a, d)," in line
