"""SHIFT (Gong et al. 2025): the criterion with patience on synthetic traces, the stage switch in
a tiny run (recomputed from its recorded losses), weights continuing, and resume in either stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fpstab.cli import main as cli_main
from fpstab.config import Runtime, TrainConfig, resolve_config
from fpstab.runs import last_checkpoint_path, load_run, read_metrics
from fpstab.evaluate import evaluate_run
from fpstab.shift import SHIFT_FILE, Criterion, ShiftSchedule, criterion_trace, shift_note
from fpstab.train import RunKilled, train

QUIET = Runtime(quiet=True)


def shift_cfg(**changes: Any) -> TrainConfig:
    """16 steps (4 per epoch), a check every 2 steps. The deltas let the criterion fire at step 8
    after a reset at step 4 on this machine's numbers (its relative loss improvements there are
    0.017 and 0.011, gradient-norm changes 0.26-0.40); the tests below assert only what the run
    records, and that the switch was not forced."""
    base = dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2,
                n_train=32, n_val=8, batch_size=8, epochs=4, lr=3e-3, warmup_epochs=1.5,
                lr_milestones=[1], train_iters=4, train_level="16", shift=True, shift_check_every=2,
                shift_delta1=0.015, shift_delta2=0.5, shift_patience=2)
    return resolve_config(None, {**base, **changes})


def shift_record(run: Path) -> dict[str, Any]:
    return json.loads((run / SHIFT_FILE).read_text())


# ---- the criterion as a pure function ----------------------------------------------------------
CRIT = Criterion(delta1=0.01, delta2=0.1, patience=3)


def test_fires_exactly_at_the_wth_consecutive_check() -> None:
    """A flat trace: the first check has no predecessor, then 1, 2, 3 -> fires at the 4th check."""
    trace = criterion_trace(CRIT, [1.0] * 10, [2.0] * 10)
    assert [c.patience for c in trace] == [0, 1, 2, 3]
    assert [c.fired for c in trace] == [False, False, False, True]
    assert trace[0].rel_loss_improvement is None and trace[1].rel_loss_improvement == 0.0


def test_a_violation_resets_the_counter() -> None:
    losses = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]  # the loss halves at check 4
    grads = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]  # the gradient norm doubles at check 6
    trace = criterion_trace(CRIT, losses + [0.5], grads)
    assert [c.patience for c in trace] == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert [c.plateau for c in trace][3:6] == [False, True, True] and [c.stable for c in trace][3:6] == [True, True, False]
    assert trace[-1].fired and not any(c.fired for c in trace[:-1])


@pytest.mark.parametrize("delta1, delta2, counts", [
    (0.25, 0.6, False),   # rel loss improvement 0.25 is not < 0.25
    (0.2500001, 0.6, True),
    (0.3, 0.5, False),    # rel grad change 0.5 is not < 0.5
    (0.3, 0.5000001, True),
])
def test_thresholds_are_strict(delta1: float, delta2: float, counts: bool) -> None:
    check = Criterion(delta1, delta2, 1).check(Criterion(0, 0, 1).check(None, 1, 1.0, 1.0), 2, 0.75, 0.5)
    assert check.rel_loss_improvement == 0.25 and check.rel_grad_change == 0.5
    assert check.fired == counts and check.patience == int(counts)


def test_rising_loss_counts_as_plateau_and_zero_norms_do_not_divide() -> None:
    c = Criterion(0.0, 0.0, 1)
    rising = c.check(c.check(None, 1, 1.0, 1.0), 2, 1.5, 1.0)
    assert rising.rel_loss_improvement == -0.5 and rising.plateau and not rising.stable  # 0 is not < delta2 = 0
    zero = Criterion(0.1, 0.1, 1).check(Criterion(0.1, 0.1, 1).check(None, 1, 0.0, 0.0), 2, 0.0, 0.0)
    assert zero.fired and zero.rel_grad_change == 0.0
    jump = Criterion(0.1, 0.1, 1).check(Criterion(0.1, 0.1, 1).check(None, 1, 0.0, 0.0), 2, 0.1, 0.1)
    assert jump.rel_loss_improvement == -math.inf and jump.rel_grad_change == math.inf and not jump.fired


@given(st.lists(st.tuples(st.floats(0.5, 1.5), st.floats(0.5, 1.5)), min_size=1, max_size=25),
       st.floats(0.0, 0.3), st.floats(0.0, 0.3), st.integers(1, 4))
def test_fires_where_the_definition_says(values: list[tuple[float, float]], d1: float, d2: float, w: int) -> None:
    """Against a direct reading of the rule: the first check i >= W whose W last checks
    (never the first) each improved the loss by < d1 and changed the gradient norm by < d2."""
    losses, grads = [v[0] for v in values], [v[1] for v in values]
    ok = [False] + [(losses[i - 1] - losses[i]) / losses[i - 1] < d1 and abs(grads[i] - grads[i - 1]) / grads[i - 1] < d2
                    for i in range(1, len(values))]
    expected = next((i for i in range(len(ok)) if i + 1 >= w and all(ok[i - w + 1:i + 1])), None)
    trace = criterion_trace(Criterion(d1, d2, w), losses, grads)
    fired = len(trace) - 1 if trace[-1].fired else None
    assert fired == expected


def test_schedule_windows_force_and_state_round_trip() -> None:
    """Checks every 3 steps on the window means; the switch is forced at max_steps when the
    criterion has not fired; a schedule restored mid-window continues identically."""
    sched = ShiftSchedule(Criterion(0.0, 0.0, 1), check_every=3, max_steps=7)
    events = [sched.observe(s, float(s), 1.0, 0.0) for s in range(1, 6)]
    assert [c.step for c in sched.checks] == [3] and sched.checks[0].loss == 2.0  # mean of 1, 2, 3
    copy = ShiftSchedule(Criterion(0.0, 0.0, 1), check_every=3, max_steps=7)
    copy.load_state(json.loads(json.dumps(sched.state())))
    for s in (6, 7, 8):
        a, b = sched.observe(s, float(s), 1.0, 0.0), copy.observe(s, float(s), 1.0, 0.0)
        assert a == b
        events.append(a)
    assert [e.switched for e in events] == [False] * 6 + [True, False]
    assert events[6].forced and sched.switch == {"step": 7, "forced": True, "elapsed_s": 0.0}
    assert [c.loss for c in sched.checks] == [2.0, 5.0] and sched.stage == "standard_recall"


def test_config_names_the_looped_target() -> None:
    with pytest.raises(ValueError, match="name the looped target: arch='standard_recall'"):
        shift_cfg(arch="internal_recall", recall="linear")
    with pytest.raises(ValueError, match="shift_patience differ from their defaults; set shift=True"):
        shift_cfg(shift=False, shift_delta1=0.01, shift_delta2=0.1, shift_check_every=0)
    assert shift_cfg().shift_max_stage1_steps == 8 and shift_cfg(shift_check_every=0).shift_check_steps == 4


# ---- a tiny run -----------------------------------------------------------------------------
def test_switch_happens_where_the_recorded_losses_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recompute the criterion from the per-step losses and gradient norms in metrics.jsonl:
    it fires at the recorded switch step; stage II starts from the very Parameter objects of
    stage I, holding the weights a plain single_attn run has after the same steps."""
    import fpstab.architectures.core as core_module

    seen: list[tuple[str, list[int], dict[str, torch.Tensor]]] = []
    real_set_arch = core_module.set_arch

    def spy(core: torch.nn.Module, arch: str) -> None:
        seen.append((arch, [id(p) for p in core.parameters()],
                     {k: v.detach().clone() for k, v in core.state_dict().items()}))
        real_set_arch(core, arch)

    monkeypatch.setattr(core_module, "set_arch", spy)
    run = tmp_path / "shift"
    cfg = shift_cfg()
    assert train(cfg, run, Runtime(quiet=True, log_every=1)).state == "completed"
    rec = shift_record(run)
    switch = rec["switch"]
    assert not switch["forced"] and rec["stage"] == "standard_recall" and rec["never_looped"] is False
    assert shift_note(run, "evaluating") is None  # it switched: nothing to warn of

    steps = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert [r["step"] for r in steps] == list(range(1, 17))
    c = cfg.shift_check_every
    windows = [steps[i:i + c] for i in range(0, switch["step"], c)]
    losses = [sum(r["loss"] for r in w) / c for w in windows]
    grads = [sum(r["grad_norm"] for r in w) / c for w in windows]
    trace = criterion_trace(Criterion(cfg.shift_delta1, cfg.shift_delta2, cfg.shift_patience), losses, grads,
                            [w[-1]["step"] for w in windows])
    assert trace[-1].fired and trace[-1].step == switch["step"]
    assert [ch.to_dict() for ch in trace] == [{k: v for k, v in ch.items() if k != "check"} for ch in rec["checks"]]
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "shift"] == [switch["step"]]
    # one application before the switch, the full progressive loss after it
    assert all(r["k"] == 1.0 for r in steps[:switch["step"]]) and any(r["k"] > 1 for r in steps[switch["step"]:])

    assert [arch for arch, _, _ in seen] == ["single_attn", "standard_recall"]
    assert seen[0][1] == seen[1][1]  # the same Parameter objects (and so their AdamW state) continue
    plain = tmp_path / "plain"
    assert switch["step"] % cfg.steps_per_epoch == 0, "compare with a plain run of whole epochs"
    epochs = switch["step"] // cfg.steps_per_epoch
    train(cfg.replace(arch="single_attn", shift=False, shift_check_every=0, shift_delta1=0.01, shift_delta2=0.1,
                      shift_patience=3, epochs=epochs), plain, QUIET)
    plain_weights = torch.load(last_checkpoint_path(plain), weights_only=True)["model"]
    assert all(torch.equal(seen[1][2][k], plain_weights[k]) for k in plain_weights)


def test_checkpoints_load_as_the_looped_core(tmp_path: Path) -> None:
    """Killed in stage I or finished: `fpstab eval` / probes load standard_recall, looped."""
    run = tmp_path / "run"
    with pytest.raises(RunKilled):
        train(shift_cfg(checkpoint_every=2), run, Runtime(quiet=True, stop_after_steps=3))
    core, core_cfg, cfg, _ = load_run(run)
    assert core_cfg.arch == "standard_recall" and core.looped and cfg.shift
    assert torch.load(last_checkpoint_path(run), weights_only=True)["shift"]["stage"] == "single_attn"


def test_run_ending_before_the_switch_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    cfg = shift_cfg(epochs=2, shift_max_steps=100, shift_delta2=0.0)  # no gradient norm is that stable
    train(cfg, run, Runtime())
    rec = shift_record(run)
    assert rec["state"] == "completed" and rec["never_looped"] and rec["switch"] is None
    assert "ended before the switch" in capsys.readouterr().out
    assert all(r["k"] == 1.0 for r in read_metrics(run) if r["kind"] == "train")
    evaluate_run(run, levels=["16"], iters=3, samples=4, solver=None, plots=False)
    assert ("note: this SHIFT run ended in its single-pass stage (single_attn): the switch criterion never fired"
            in capsys.readouterr().out)


# ---- resume -----------------------------------------------------------------------------------
def _deterministic(rec: dict[str, Any]) -> dict[str, Any]:
    return {**rec, "switch": {k: v for k, v in rec["switch"].items() if k != "elapsed_s"}}


@pytest.mark.parametrize("kill_at", [5, 11])
def test_resume_in_either_stage_matches_uninterrupted(tmp_path: Path, kill_at: int) -> None:
    """Killed at step 5 (stage I, checkpoint at 3: mid check window) or 11 (stage II, checkpoint
    at 9): the resumed run switches at the same step with the same trace and ends with the same
    weights, AdamW state and losses."""
    cfg = shift_cfg(checkpoint_every=3)
    train(cfg, tmp_path / "full", QUIET)
    with pytest.raises(RunKilled):
        train(cfg, tmp_path / "killed", Runtime(quiet=True, stop_after_steps=kill_at))
    stage = torch.load(last_checkpoint_path(tmp_path / "killed"), weights_only=True)["shift"]["stage"]
    assert stage == ("single_attn" if kill_at < shift_record(tmp_path / "full")["switch"]["step"] else "standard_recall")
    assert train(cfg, tmp_path / "killed", QUIET, resume=True).state == "completed"
    assert _deterministic(shift_record(tmp_path / "full")) == _deterministic(shift_record(tmp_path / "killed"))
    a, b = (torch.load(last_checkpoint_path(tmp_path / r), weights_only=True) for r in ("full", "killed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["optimizer"]["state"][i]["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
               for i in a["optimizer"]["state"])

    def logged(run: Path) -> list[tuple[Any, ...]]:
        return [(r["kind"], r["step"], r.get("loss")) for r in read_metrics(run) if r["kind"] != "resume"]

    assert logged(tmp_path / "full") == logged(tmp_path / "killed")


def test_run_recorded_before_shift_existed_resumes(tmp_path: Path) -> None:
    """A run whose config.json and checkpoint lack the shift keys (an older fpstab) still resumes."""
    cfg = shift_cfg(shift=False, shift_check_every=0, shift_delta1=0.01, shift_delta2=0.1, shift_patience=3)
    run = tmp_path / "old"
    with pytest.raises(RunKilled):
        train(cfg, run, Runtime(quiet=True, stop_after_steps=5))
    drop = ("shift", "shift_delta1", "shift_delta2", "shift_patience", "shift_check_every", "shift_max_steps")
    record = json.loads((run / "config.json").read_text())
    record["train"] = {k: v for k, v in record["train"].items() if k not in drop}
    (run / "config.json").write_text(json.dumps(record))
    ckpt = torch.load(last_checkpoint_path(run), weights_only=True)
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in drop}
    torch.save(ckpt, last_checkpoint_path(run))
    assert train(cfg, run, QUIET, resume=True).state == "completed"


def test_cli_shift_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "cli"
    flags = ["train", "--out", str(run), "--quiet", "--task", "prefix_sum", "--train-level", "16", "--d-model", "16",
             "--n-heads", "2", "--n-train", "16", "--n-val", "4", "--batch-size", "8", "--epochs", "3",
             "--train-iters", "2", "--threads", "1", "--shift", "--shift-check-every", "1", "--shift-max-steps", "2"]
    assert cli_main(flags) == 2  # the default arch is internal_recall: one line naming the target
    assert cli_main(flags + ["--arch", "standard_recall", "--stop-after-steps", "3"]) == 137
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    rec = shift_record(run)
    assert rec["switch"]["step"] == 2 and rec["switch"]["forced"] and rec["state"] == "completed"


def test_benchmark_compares_and_reuses_its_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/shift_vs_looped.py on a seconds-sized config: one row per variant, the switch
    in the shift row; run again, it reuses the finished runs (same recorded wall times)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "shift_vs_looped.py"
    spec = importlib.util.spec_from_file_location("shift_vs_looped", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--task", "prefix_sum", "--preset", "tiny", "--train-level", "16", "--d-model", "16", "--n-heads", "2",
            "--n-train", "16", "--n-val", "4", "--batch-size", "8", "--epochs", "2", "--train-iters", "2",
            "--shift-check-every", "1", "--eval-samples", "4", "--out", str(tmp_path / "b"), "--json",
            str(tmp_path / "rows.json")]
    assert bench.main(argv) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["variant"], r["state"]) for r in rows] == [("shift", "completed"), ("looped", "completed")]
    assert rows[0]["switch_step"] == 2 and rows[0]["forced"] and "switch_step" not in rows[1]
    assert set(rows[0]["eval"]) == {"16"} and "time ratio to looped" in capsys.readouterr().out
    assert bench.main(argv) == 0
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
