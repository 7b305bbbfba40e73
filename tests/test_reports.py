"""reports/: reading eval and metrics records, tables and plots, from fixture records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpstab.reports.plots import plot_compare, plot_eval, plot_training
from fpstab.reports.records import (
    accuracy_by_level,
    check_eval_record,
    eval_table,
    load_eval,
    load_metrics,
)


def fixture_eval(arch: str = "standard_recall", iters: int = 60) -> dict:
    """A schema-1 eval record as `fpstab eval` writes it (two levels)."""
    def level(name: int, peak_at: int) -> dict:
        acc = [min(1.0, t / peak_at) if t <= peak_at else max(0.5, 1.0 - (t - peak_at) / 100) for t in range(1, iters + 1)]
        best = max(range(iters), key=lambda i: (acc[i], -i))
        return {
            "level": name, "grid": [name], "n_samples": 100, "data_seed": 2,
            "accuracy": acc, "token_accuracy": [min(1.0, a + 0.1) for a in acc],
            "residual_median": [0.5 ** t for t in range(1, iters + 1)],
            "residual_p90": [0.6 ** t for t in range(1, iters + 1)],
            "final_accuracy": acc[-1], "best_accuracy": acc[best], "best_iteration": best + 1,
            "overthinking_penalty": acc[best] - acc[-1], "accuracy_at_train_iters": acc[29],
            "halting": {"tol": 1e-3, "accuracy": 0.9, "mean_nfe": 12.5, "halted_fraction": 1.0},
            "solver": {"name": "anderson", "max_iter": iters, "tol": 1e-3, "accuracy": 0.95, "nfe": 8.0,
                       "mean_steps_to_tol": 7.0, "converged_fraction": 1.0, "diverged_fraction": 0.0,
                       "failures": 0},
            "wall_s": 1.0,
        }

    return {
        "schema": "fpstab.eval", "schema_version": 1, "fpstab": "0.1.0", "created": "2026-01-01T00:00:00",
        "run_dir": "runs/x", "checkpoint": "runs/x/checkpoints/last.pt", "checkpoint_step": 100,
        "task": "prefix_sum", "arch": arch, "norm": "outer", "train_level": 32, "train_iters": 30,
        "looped": True, "iters": iters, "device": "cpu", "halting": {"tol": 1e-3},
        "solver": {"name": "anderson", "max_iter": iters, "tol": 1e-3},
        "levels": [level(32, 16), level(64, 40)], "plots": [], "wall_s": 2.0,
    }


def test_eval_plots_written(tmp_path: Path) -> None:
    paths = plot_eval(fixture_eval(), tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == ["acc_vs_iters.png", "acc_vs_iters_32.png", "acc_vs_iters_64.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_load_eval_from_run_dir_and_tables(tmp_path: Path) -> None:
    (tmp_path / "eval.json").write_text(json.dumps(fixture_eval()))
    rec = load_eval(tmp_path)
    table = eval_table([rec, fixture_eval("no_recall")])
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    assert "| standard_recall | outer | 32 | 100 | 56.0 | 86.0 | 100.0 @ 16 | 44.0 | 90.0 / 12.5 | 95.0 / 8.0 |" in lines[2]
    by_level = accuracy_by_level([rec, fixture_eval("no_recall")])
    assert by_level.splitlines()[0] == "| run | 32 | 64 |"
    assert by_level.splitlines()[3].startswith("| no_recall+outer | 56.0 |")


def test_check_eval_record_names_the_problem() -> None:
    rec = fixture_eval()
    with pytest.raises(ValueError, match="schema_version=99"):
        check_eval_record({**rec, "schema_version": 99})
    with pytest.raises(ValueError, match="not an fpstab eval record"):
        check_eval_record({**rec, "schema": "other"})
    broken = fixture_eval()
    del broken["levels"][1]["best_iteration"]
    with pytest.raises(ValueError, match=r"level #1 lacks keys \['best_iteration'\]"):
        check_eval_record(broken)


def test_missing_eval_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fpstab eval"):
        load_eval(tmp_path)


def test_compare_and_training_plots(tmp_path: Path) -> None:
    p = plot_compare([fixture_eval(), fixture_eval("no_recall")], 64, tmp_path / "cmp.png")
    assert p.is_file()
    with pytest.raises(ValueError, match="no record has level 512"):
        plot_compare([fixture_eval()], 512, tmp_path / "none.png")
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": s, "epoch": 0, "loss": 1.0 / s, "acc": s / 10} for s in range(1, 10)]
    lines += [{"kind": "epoch", "epoch": 1, "step": 9, "val_exact_match": 0.8},
              {"kind": "diverged", "step": 9, "loss": float("nan")}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = plot_training(load_metrics(tmp_path), tmp_path / "training.png")
    assert out.is_file() and out.stat().st_size > 5000
