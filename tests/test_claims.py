"""reports.claims: the paper's three claims per task, with fit and extrapolation thresholds at their edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpstab.reports.claims import FIT_MIN, KEEP_MIN, check_claims, comparison_claim, extrapolation_claim
from fpstab.reports.run_files import RunRecord

SCORES: dict[str, tuple[float | None, float | None]] = {}


def run(arch: str, norm: str, seed: int, val: float | None, hard: float | None, task: str = "sudoku",
        lr: float = 1e-3, d_model: int = 64) -> RunRecord:
    name = f"{task}-{arch}-{norm}-lr{lr}-d{d_model}-s{seed}"
    SCORES[name] = (val, hard)
    return RunRecord(name, Path(name), {"train": {"task": task, "arch": arch, "norm": norm, "seed": seed, "lr": lr,
                                                  "d_model": d_model}})


def val(r: RunRecord) -> float | None:
    return SCORES[r.name][0]


def hard(r: RunRecord) -> float | None:
    return SCORES[r.name][1]


def recall_claim(runs: list[RunRecord]):
    return extrapolation_claim("sudoku", runs, "recall + outer", "recall + outer norm extrapolates", True, val, hard)


def no_recall_claim(runs: list[RunRecord]):
    return extrapolation_claim("sudoku", runs, "no_recall", "no recall does not extrapolate", False, val, hard)


def test_thresholds_are_inclusive_at_their_edges():
    edge = run("standard_recall", "outer", 0, FIT_MIN, KEEP_MIN * FIT_MIN)
    below = run("standard_recall", "outer", 1, FIT_MIN, KEEP_MIN * FIT_MIN - 1e-9)
    assert recall_claim([edge]).verdict == "held"
    assert recall_claim([edge, below]).verdict == "mixed: 1 of 2"
    assert recall_claim([below]).verdict == "did not hold"


def test_runs_that_did_not_fit_are_listed_but_not_counted():
    fit = run("internal_recall", "outer", 0, 0.9, 0.8)
    unfit = run("internal_recall", "outer", 1, FIT_MIN - 1e-9, 0.0)
    check = recall_claim([fit, unfit])
    assert check.verdict == "held" and "1 of 2 runs fit" in check.evidence and "s1" in check.evidence


def test_no_recall_that_never_fit_is_undetermined_not_evidence():
    runs = [run("no_recall", "outer", s, 0.0, 0.0, lr=lr) for s, lr in ((0, 1e-3), (1, 3e-4))]
    check = no_recall_claim(runs)
    assert check.verdict == "undetermined: no run fit"
    assert "optimization failure" in check.evidence and "best val 0.0 %" in check.evidence and "n = 2" in check.evidence


def test_no_recall_claim_holds_when_fitting_runs_lose_the_hard_level_and_fails_when_they_keep_it():
    collapses = run("no_recall", "inner", 0, 0.95, 0.1)
    keeps = run("no_recall", "inner", 1, 0.95, 0.9)
    assert no_recall_claim([collapses]).verdict == "held"
    assert no_recall_claim([keeps]).verdict == "did not hold"
    assert no_recall_claim([collapses, keeps]).verdict == "mixed: 1 of 2"
    unevaluated = run("no_recall", "inner", 2, 0.95, None)
    assert no_recall_claim([unevaluated]).verdict == "undetermined: not evaluated"
    assert no_recall_claim([]).verdict == "undetermined: no such run"


def test_comparison_pairs_by_seed_and_reports_n_and_the_sign_test():
    runs = [run("internal_recall", "outer", s, 0.9, 0.6 + 0.1 * s) for s in range(3)]
    runs += [run("standard_recall", "outer", s, 0.9, 0.5) for s in range(3)]
    runs.append(run("standard_recall", "outer", 7, 0.9, 0.9))  # no internal partner: not a pair
    runs.append(run("internal_recall", "inner", 0, 0.9, 0.0))  # another norm: not compared
    check = comparison_claim("sudoku", runs, val, hard)
    assert check.verdict == "held" and "n = 3 seed pairs" in check.evidence
    assert "+20.0 points" in check.evidence and "p = 0.125" in check.evidence
    assert "states it for sudoku" not in check.claim


def test_comparison_pairs_only_runs_that_differ_in_arch_alone():
    runs = [run("internal_recall", "outer", 0, 0.9, 0.8), run("standard_recall", "outer", 0, 0.9, 0.4),
            run("standard_recall", "outer", 0, 0.9, 0.95, d_model=128),  # same seed, another width
            run("internal_recall", "outer", 0, 0.9, 0.1, lr=3e-4)]  # same seed, another lr
    check = comparison_claim("sudoku", runs, val, hard)
    assert check.verdict == "held" and "n = 1 seed pairs" in check.evidence
    assert "80.0 % vs 40.0 %" in check.evidence and "+40.0 points" in check.evidence


def test_comparison_needs_a_fitting_core_in_each_pair():
    runs = [run("internal_recall", "outer", 0, 0.1, 0.05, task="chess"),
            run("standard_recall", "outer", 0, 0.2, 0.0, task="chess")]
    check = comparison_claim("chess", runs, val, hard)
    assert check.verdict == "undetermined: no run fit" and "(the paper states it for sudoku)" in check.claim
    assert comparison_claim("chess", runs[:1], val, hard).verdict == "undetermined: no pair"


@pytest.mark.parametrize("task", ["prefix_sum", "sudoku"])
def test_check_claims_gives_three_claims_per_task(task):
    runs = [run("standard_recall", "outer", 0, 0.99, 0.9, task=task), run("no_recall", "outer", 0, 0.0, 0.0, task=task),
            run("internal_recall", "outer", 0, 0.99, 0.95, task=task), run("fixed_depth", "inner", 0, 0.9, 0.0, task=task)]
    checks = check_claims(runs, val, hard)
    assert [c.task for c in checks] == [task] * 3
    assert [c.verdict for c in checks] == ["held", "undetermined: no run fit", "held"]
