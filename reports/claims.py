"""The paper's claims (Labovich 2026) checked on a results tree, stated plainly with n and seeds.

Per task, from the run records alone:

1. "Recall with outer normalization extrapolates": standard_recall + outer and
   internal_recall + outer runs that fit the training level keep their accuracy
   at the hardest eval level.
2. "No recall does not extrapolate": no_recall runs that fit the training level
   do not keep it at the hardest level.
3. "Internal recall with outer normalization beats standard recall" (the paper
   states it for sudoku; other tasks are shown for comparison): internal_recall +
   outer against standard_recall + outer, paired by seed, at the hardest level.

Definitions (module constants, printed with the verdicts):
- a run *fits* when its validation exact match at the training level and depth,
  last epoch, is at least FIT_MIN;
- a fitting run *extrapolates* when its exact match at the last evaluated
  iteration on its hardest eval level is at least KEEP_MIN times its validation
  exact match.

Verdicts: "held" (every counted run or pair agrees with the claim), "did not hold"
(none does), "mixed: k of n" and "undetermined" with the reason, e.g. no run of
the kind fit the training level, which is an optimization failure and says
nothing about extrapolation. On part of a grid (runs of the kind still to train,
evaluate or probe, from reports.grid_progress) a verdict says "so far" and how
many runs are to come, and a kind with no record yet is "undetermined: not run yet".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fpstab.reports.grid_progress import Progress
from fpstab.reports.run_files import RunRecord

FIT_MIN = 0.5
KEEP_MIN = 0.5
RECALL_ARCHS = ("standard_recall", "internal_recall")
NO_SUCH_RUN = "undetermined: no such run"

Accuracy = Callable[[RunRecord], float | None]


@dataclass(frozen=True)
class ClaimCheck:
    """One claim on one task: its verdict and the evidence behind it (n, seeds, numbers)."""

    task: str
    claim: str
    verdict: str
    evidence: str


def _seeds(runs: Sequence[RunRecord]) -> str:
    return "seeds " + ", ".join(str(s) for s in sorted({r.train.get("seed") for r in runs}, key=str))


def _label(run: RunRecord) -> str:
    t = run.train
    lr = f" lr {t.get('lr'):g}" if isinstance(t.get("lr"), (int, float)) else ""
    width = f" d{t.get('d_model')}" if t.get("d_model") is not None else ""
    return f"{t.get('arch')}+{t.get('norm')}{width}{lr} s{t.get('seed')}"


# Training keys that change neither the model nor its numbers: two runs differing only in these
# (and the arch) form a comparison pair.
_NOT_SETUP = ("arch", "checkpoint_every")


def _setup_key(run: RunRecord, keys: Sequence[str]) -> str:
    """The run's training setup over `keys` (seed included, arch not): runs that differ in arch alone
    share it, so a d 128 run never pairs with a d 64 one of the same seed."""
    return json.dumps({k: run.train[k] for k in keys}, sort_keys=True, default=str)


def _shared_setup_keys(runs: Sequence[RunRecord]) -> list[str]:
    """The training keys every run records, less _NOT_SETUP: a key that older runs lack (added to
    TrainConfig after they trained) does not keep runs apart, as in the report's configurations."""
    shared = set.intersection(*(set(r.train) for r in runs)) if runs else set()
    return sorted(shared - set(_NOT_SETUP))


def _is_recall_outer(arch: Any, norm: Any) -> bool:
    return arch in RECALL_ARCHS and norm == "outer"


def _recall_outer(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The standard_recall and internal_recall runs with outer normalization."""
    return [r for r in runs if _is_recall_outer(r.train.get("arch"), r.train.get("norm"))]


def with_runs_to_come(check: ClaimCheck, to_come: Sequence[Progress]) -> ClaimCheck:
    """The check qualified by the grid's runs of its kind still to come: "so far", and which they are."""
    if not to_come:
        return check
    k = len(to_come)
    if check.verdict == NO_SUCH_RUN:
        verdict = "undetermined: not run yet"
    else:
        verdict = f"{check.verdict} (so far; {k} grid run{'' if k == 1 else 's'} to come)"
    said = check.evidence.rstrip().rstrip(";")
    said += "" if not said else " " if said.endswith(".") else ". "
    evidence = said + "To come: " + "; ".join(f"{p.planned.name} ({p.state}, next: {p.next})" for p in to_come) + "."
    return ClaimCheck(check.task, check.claim, verdict, evidence)


def fits(run: RunRecord, val: Accuracy) -> bool:
    """True when the run's validation exact match (by `val`) is at least FIT_MIN."""
    v = val(run)
    return v is not None and v >= FIT_MIN


def _extrapolates(run: RunRecord, val: Accuracy, hard: Accuracy) -> bool:
    v, h = val(run), hard(run)
    return v is not None and h is not None and h >= KEEP_MIN * v


def _count_verdict(agree: int, n: int) -> str:
    if agree == n:
        return "held"
    if agree == 0:
        return "did not hold"
    return f"mixed: {agree} of {n}"


def _runs_detail(runs: Sequence[RunRecord], val: Accuracy, hard: Accuracy) -> str:
    parts = []
    for r in runs:
        v, h = val(r), hard(r)
        parts.append(f"{_label(r)}: val {_pct(v)}, hard {_pct(h)}")
    return "; ".join(parts)


def _not_fitting(kind: str, runs: Sequence[RunRecord], val: Accuracy) -> str:
    best = max((v for v in map(val, runs) if v is not None), default=None)
    return (f"No {kind} run fit the training level (val >= {100 * FIT_MIN:.0f} %; best val {_pct(best)}, "
            f"n = {len(runs)}, {_seeds(runs)}): an optimization failure, not evidence either way. ")


def extrapolation_claim(task: str, runs: Sequence[RunRecord], kind: str, claim: str, expect: bool,
                        val: Accuracy, hard: Accuracy) -> ClaimCheck:
    """Claims 1 and 2: among `runs` (one kind of core) that fit and were evaluated, do they extrapolate
    (expect=True) or not (expect=False)?"""
    if not runs:
        return ClaimCheck(task, claim, NO_SUCH_RUN, "n = 0 in this tree")
    evaluated = [r for r in runs if hard(r) is not None]
    fitting = [r for r in evaluated if fits(r, val)]
    if not fitting:
        if not evaluated:
            return ClaimCheck(task, claim, "undetermined: not evaluated", _runs_detail(runs, val, hard))
        return ClaimCheck(task, claim, "undetermined: no run fit",
                          _not_fitting(kind, runs, val) + _runs_detail(runs, val, hard))
    kept = sum(_extrapolates(r, val, hard) for r in fitting)
    evidence = (f"{len(fitting)} of {len(runs)} runs fit ({_seeds(fitting)}); {kept} of them extrapolate. "
                + _runs_detail(runs, val, hard))
    return ClaimCheck(task, claim, _count_verdict(kept if expect else len(fitting) - kept, len(fitting)), evidence)


def comparison_claim(task: str, runs: Sequence[RunRecord], val: Accuracy, hard: Accuracy) -> ClaimCheck:
    """Claim 3: internal_recall+outer against standard_recall+outer at the hardest level, paired by
    seed and every other training key they all record (`_setup_key`); a pair counts when both were evaluated and at
    least one of the two fits."""
    claim = "internal recall + outer beats standard recall + outer" + ("" if task == "sudoku" else
                                                                      " (the paper states it for sudoku)")
    evaluated = [r for r in _recall_outer(runs) if hard(r) is not None]
    keys = _shared_setup_keys(evaluated)
    by_setup: dict[str, dict[str, RunRecord]] = {}
    for r in evaluated:
        by_setup.setdefault(_setup_key(r, keys), {})[str(r.train.get("arch"))] = r
    pairs = [(p["internal_recall"], p["standard_recall"]) for p in by_setup.values() if len(p) == 2]
    counted = [(i, s) for i, s in pairs if fits(i, val) or fits(s, val)]
    if not counted:
        why = ("no seed has both cores evaluated" if not pairs else
               f"in none of the {len(pairs)} seed pairs did either core fit the training level")
        return ClaimCheck(task, claim, "undetermined: no pair" if not pairs else "undetermined: no run fit", why)
    diffs = [hard(i) - hard(s) for i, s in counted]  # type: ignore[operator]
    wins = sum(d > 0 for d in diffs)
    mean = sum(diffs) / len(diffs)
    sign_p = 0.5 ** len(diffs) if wins in (0, len(diffs)) else None
    evidence = (f"n = {len(counted)} seed pairs ({_seeds([i for i, _ in counted])}); internal ahead in {wins}, "
                f"mean difference {100 * mean:+.1f} points at the hardest level"
                + (f"; a one-sided sign test gives p = {sign_p:.3g}" if sign_p is not None else "") + ". "
                + "; ".join(f"s{i.train.get('seed')}: {_pct(hard(i))} vs {_pct(hard(s))}" for i, s in counted))
    return ClaimCheck(task, claim, _count_verdict(wins, len(counted)), evidence)


def check_claims(runs: Sequence[RunRecord], val: Accuracy, hard: Accuracy,
                 to_come: Sequence[Progress] = ()) -> list[ClaimCheck]:
    """The three claims on every task of `runs` and of `to_come`. val: validation exact match at the
    training level; hard: exact match at the last evaluated iteration on the hardest eval level (None:
    not evaluated); to_come: a grid's runs still to train, evaluate or probe (reports.grid_progress)."""
    out = []
    for task in sorted({str(r.train.get("task")) for r in runs} | {p.planned.task for p in to_come}):
        members = [r for r in runs if r.train.get("task") == task]
        no_recall = [r for r in members if r.train.get("arch") == "no_recall"]
        coming = [p for p in to_come if p.planned.task == task]
        coming_recall = [p for p in coming if _is_recall_outer(p.arch, p.norm)]
        out += [
            with_runs_to_come(extrapolation_claim(task, _recall_outer(members), "recall + outer",
                                                  "recall + outer norm extrapolates", True, val, hard), coming_recall),
            with_runs_to_come(extrapolation_claim(task, no_recall, "no_recall", "no recall does not extrapolate",
                                                  False, val, hard), [p for p in coming if p.arch == "no_recall"]),
            with_runs_to_come(comparison_claim(task, members, val, hard), coming_recall),
        ]
    return out


def claims_table(checks: Sequence[ClaimCheck]) -> tuple[list[str], list[list[str]]]:
    return ["task", "claim", "verdict", "evidence"], [[c.task, c.claim, c.verdict, c.evidence] for c in checks]


def definitions() -> str:
    return (f"A run fits when its validation exact match (training level and depth, last epoch) is at least "
            f"{100 * FIT_MIN:.0f} %; a fitting run extrapolates when its exact match at the last evaluated "
            f"iteration on its hardest eval level is at least {KEEP_MIN:g} times its validation exact match. "
            "A claim held when every counted run (or seed pair) agrees with it. Runs that did not fit are "
            "listed but not counted: a core that never learned the training level is an optimization failure, "
            "not evidence about extrapolation. With one or two seeds a verdict describes these runs, not the "
            "architecture.")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"
