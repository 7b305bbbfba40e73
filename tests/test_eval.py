"""`fpstab eval`: per-iteration accuracy from one trajectory, halting, solver,
the eval.json schema and its plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fpstab.cli import main as cli_main
from fpstab.config import Runtime, resolve_config
from fpstab.evaluate import EVAL_SCHEMA_VERSION, evaluate_run, halting_from_trajectory
from fpstab.runs import load_run
from fpstab.train import train
from fpstab.reports.records import check_eval_record

LEVEL_KEYS = {"level", "grid", "n_samples", "data_seed", "accuracy", "token_accuracy", "residual_median",
              "residual_p90", "final_accuracy", "best_accuracy", "best_iteration", "overthinking_penalty",
              "accuracy_at_train_iters", "halting", "solver", "compiled", "wall_s"}


def _train(out: Path, **changes: object) -> Path:
    cfg = resolve_config(None, {"task": "prefix_sum", "arch": "standard_recall", "d_model": 16, "n_heads": 2,
                                "n_train": 16, "n_val": 0, "batch_size": 8, "epochs": 1, "train_iters": 3,
                                "train_level": "16", "lr": 3e-3, **changes})
    train(cfg, out, Runtime(quiet=True))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("eval") / "run")


def test_eval_record_schema_and_plots(run_dir: Path) -> None:
    rec = evaluate_run(run_dir, levels=["16", "32"], iters=6, samples=6, batch_size=4, quiet=True)
    on_disk = json.loads((run_dir / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(rec))
    check_eval_record(on_disk)
    assert rec["schema"] == "fpstab.eval" and rec["schema_version"] == EVAL_SCHEMA_VERSION
    assert rec["iters"] == 6 and rec["looped"] and rec["train_iters"] == 3 and rec["checkpoint_step"] == 2
    assert [lv["level"] for lv in rec["levels"]] == ["16", "32"]
    for lv in rec["levels"]:
        assert set(lv) == LEVEL_KEYS
        assert lv["compiled"]["compile"] is False and lv["compiled"]["reason"].startswith("auto: ")
        assert len(lv["accuracy"]) == len(lv["token_accuracy"]) == len(lv["residual_median"]) == 6
        acc = lv["accuracy"]
        assert lv["final_accuracy"] == pytest.approx(acc[-1])
        assert lv["best_accuracy"] == pytest.approx(max(acc)) and acc[lv["best_iteration"] - 1] == max(acc)
        assert lv["overthinking_penalty"] == pytest.approx(max(acc) - acc[-1])
        assert lv["accuracy_at_train_iters"] == pytest.approx(acc[2])
        assert 1 <= lv["halting"]["mean_nfe"] <= 6 and 0 <= lv["halting"]["accuracy"] <= 1
        assert lv["solver"]["name"] == "anderson" and lv["solver"]["nfe"] >= 1
    assert sorted(rec["plots"]) == ["plots/acc_vs_iters.png", "plots/acc_vs_iters_16.png", "plots/acc_vs_iters_32.png"]
    for p in rec["plots"]:
        assert (run_dir / p).read_bytes()[:4] == b"\x89PNG"


def test_per_iteration_accuracy_matches_forward(run_dir: Path) -> None:
    """The single-trajectory sweep equals scoring core(x, T)'s logits of every iteration."""
    from fpstab.tasks import get_task

    rec = evaluate_run(run_dir, levels=["16"], iters=5, samples=8, batch_size=3, solver=None, plots=False,
                       out=run_dir / "e2.json", quiet=True)
    core, _, cfg, _ = load_run(run_dir)
    task = get_task("prefix_sum")
    data = task.make("16", 8, cfg.data_seed + 2)
    with torch.no_grad():
        logits = core(data.inputs, 5)
    expected_tok = [float(task.metrics(lg, data.targets)["token_acc"]) for lg in logits]
    expected_acc = [float(task.correct(lg, data.targets).float().mean()) for lg in logits]
    lv = rec["levels"][0]
    assert lv["token_accuracy"] == pytest.approx(expected_tok, abs=1e-5)
    assert lv["accuracy"] == pytest.approx(expected_acc)
    assert lv["solver"] is None and rec["solver"] is None


def test_trajectory_scoring_stays_on_the_device(run_dir: Path, host_syncs: list[str]) -> None:
    """No tensor is read back to Python inside the iteration loop: the counts do not grow with T."""
    from fpstab.evaluate import trajectory_metrics
    from fpstab.tasks import get_task

    core, _, _, _ = load_run(run_dir)
    data = get_task("prefix_sum").make("16", 4, 0)
    counts = []
    for iters in (2, 7):
        host_syncs.clear()
        out = trajectory_metrics(core, get_task("prefix_sum"), data.inputs, data.targets, iters)
        counts.append(len(host_syncs))
        assert out["token_acc"].shape == (iters,)
    assert counts == [0, 0], host_syncs


def test_halting_reads_first_converged_iteration() -> None:
    residual = torch.tensor([[0.5, 0.5, 0.5], [1e-4, 0.5, 0.2], [1e-5, 1e-5, 0.1], [1e-6, 1e-6, 0.1]])  # (T=4, B=3)
    correct = torch.tensor([[False, True, False], [True, False, False], [False, True, False], [True, True, True]])
    out = halting_from_trajectory(correct, residual, tol=1e-3)
    assert out["nfe"].tolist() == [2, 3, 4]
    assert out["correct"].tolist() == [True, True, True]
    assert out["halted"].tolist() == [True, True, False]


def test_one_pass_baseline_scored_at_one_iteration(tmp_path: Path) -> None:
    run = _train(tmp_path / "fixed", arch="fixed_depth", depth=2)
    rec = evaluate_run(run, levels=["16"], iters=50, samples=4, quiet=True, plots=False)
    assert rec["looped"] is False and rec["iters"] == 1 and len(rec["levels"][0]["accuracy"]) == 1
    assert rec["levels"][0]["halting"] is None and rec["levels"][0]["solver"] is None


def test_cli_eval_and_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.json"
    assert cli_main(["eval", str(run_dir), "--levels", "16", "--iters", "3", "--samples", "4",
                     "--solver", "none", "--no-plots", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["levels"][0]["level"] == "16"
    assert cli_main(["eval", str(run_dir), "--levels", "16", "--iters", "3", "--samples", "4", "--solver", "none",
                     "--no-plots", "--out", str(tmp_path / "loud.json")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[eval] level 16:"))
    token_acc = json.loads((tmp_path / "loud.json").read_text())["levels"][0]["token_accuracy"][-1]
    assert line.split("token acc@T ")[1].split()[0] == f"{token_acc:.4f}"
    assert cli_main(["eval", str(run_dir), "--levels", "33", "--iters", "3", "--samples", "4", "--quiet"]) == 2
    assert "level '33' is not a level of this task; allowed: ['16', '32'" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "nowhere"), "--quiet"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--device", "foo"], "--device 'foo': allowed: cpu, cuda or cuda:N"),
    (["--halt-tol", "-1"], "--halt-tol -1.0: must be a number > 0"),
    (["--solver-tol", "0"], "--solver-tol 0.0: must be a number > 0"),
    (["--iters", "0"], "--iters 0: must be an int >= 1"),
    (["--samples", "-3"], "--samples -3: must be an int >= 1"),
    (["--data-seed", "-1"], "--data-seed -1: must be >= 0"),
])
def test_eval_options_out_of_range_get_one_line_errors(run_dir: Path, capsys: pytest.CaptureFixture[str],
                                                       args: list[str], message: str) -> None:
    assert cli_main(["eval", str(run_dir), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eval_of_a_diverged_run_says_so_and_records_it(run_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    diverged = tmp_path / "diverged"
    shutil.copytree(run_dir, diverged)
    (diverged / "status.json").write_text(json.dumps({"state": "diverged", "step": 7,
                                                      "reason": "non-finite loss at step 7"}))
    rec = evaluate_run(diverged, levels=["16"], iters=3, samples=4, plots=False)
    assert rec["run_state"] == {"state": "diverged", "step": 7, "reason": "non-finite loss at step 7"}
    assert "this run diverged at step 7" in capsys.readouterr().out


def _same_scores(a: dict, b: dict) -> None:
    for la, lb in zip(a["levels"], b["levels"], strict=True):
        assert la["accuracy"] == lb["accuracy"] and la["halting"] == lb["halting"]
        assert la["solver"]["accuracy"] == lb["solver"]["accuracy"] and la["solver"]["nfe"] == lb["solver"]["nfe"]
        assert la["token_accuracy"] == pytest.approx(lb["token_accuracy"], abs=1e-6)
        assert la["residual_median"] == pytest.approx(lb["residual_median"], rel=1e-4)


def test_compiled_eval_scores_as_eager_does(run_dir: Path, tmp_path: Path) -> None:
    """--compile (the iteration and the solver's step compiled per level) gives eager's accuracies, halting
    and solver counts, and residuals to float32 rounding; the record says it compiled."""
    kw = dict(levels=["16"], iters=8, samples=6, batch_size=6, solver="anderson", quiet=True, plots=False)
    eager = evaluate_run(run_dir, out=tmp_path / "eager.json", compile=False, **kw)
    compiled = evaluate_run(run_dir, out=tmp_path / "compiled.json", compile=True, **kw)
    assert eager["levels"][0]["compiled"] == {"compile": False, "reason": "--no-compile given", "fallback": None}
    assert compiled["levels"][0]["compiled"] == {"compile": True, "reason": "--compile given", "fallback": None}
    _same_scores(eager, compiled)


def test_eval_whose_compiler_fails_falls_back_to_eager(run_dir: Path, tmp_path: Path, no_cxx_compiler: None) -> None:
    kw = dict(levels=["16"], iters=5, samples=4, batch_size=4, solver="anderson", quiet=True, plots=False)
    eager = evaluate_run(run_dir, out=tmp_path / "eager.json", compile=False, **kw)
    rec = evaluate_run(run_dir, out=tmp_path / "fallback.json", compile=True, **kw)
    compiled = rec["levels"][0]["compiled"]
    assert compiled["compile"] is True and "torch.compile failed" in compiled["fallback"]
    _same_scores(eager, rec)
