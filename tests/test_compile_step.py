"""The compile choice (auto / --compile / --no-compile) and the compiled step's eager fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fpstab import compile_step
from fpstab.compile_step import (
    AUTO_MIN_STEPS,
    FallbackStep,
    choose_compile,
    choose_eval_compile,
    find_fallback_step,
)
from fpstab.config import Runtime, resolve_config
from fpstab.protocol import checkpointed, check_step_fn
from fpstab.runs import METRICS_FILE
from fpstab.train import train


def test_given_choice_wins_over_auto() -> None:
    assert choose_compile(True, "cpu", 10).compile
    assert choose_compile(True, "cuda", 10).compile
    assert not choose_compile(False, "cpu", 10 * AUTO_MIN_STEPS).compile


def test_auto_compiles_only_long_cpu_runs_with_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_step, "cxx_compiler_problem", lambda: None)
    assert choose_compile(None, "cpu", AUTO_MIN_STEPS).compile
    short = choose_compile(None, "cpu", AUTO_MIN_STEPS - 1)
    assert not short.compile and f"{AUTO_MIN_STEPS - 1} steps" in short.reason
    gpu = choose_compile(None, "cuda", 10 * AUTO_MIN_STEPS)
    assert not gpu.compile and "cuda" in gpu.reason
    monkeypatch.setattr(compile_step, "cxx_compiler_problem", lambda: "no working C++ compiler")
    missing = choose_compile(None, "cpu", 10 * AUTO_MIN_STEPS)
    assert not missing.compile and "C++" in missing.reason


def test_eval_compiles_only_when_asked() -> None:
    assert choose_eval_compile(True, "cpu").compile and not choose_eval_compile(False, "cuda").compile
    auto = choose_eval_compile(None, "cpu")
    assert not auto.compile and auto.reason.startswith("auto: eager")


def test_compiler_search_reports_a_missing_compiler(no_cxx_compiler: None) -> None:
    problem = compile_step.cxx_compiler_problem()
    assert problem is not None and "C++ compiler" in problem


def _broken_compile(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    raise torch._inductor.exc.InductorError(RuntimeError("InvalidCxxCompiler: none found"), "")


def test_fallback_runs_eagerly_and_reports_once() -> None:
    calls: list[str] = []
    step = FallbackStep(lambda h, u: h + u, compiled=_broken_compile, on_fallback=calls.append)
    h, u = torch.ones(2, 3, 4), torch.full((2, 3, 4), 2.0)
    assert torch.equal(step(h, u), h + u)
    assert torch.equal(step(h, u), h + u)
    assert len(calls) == 1 and "InductorError" in calls[0] and step.fallback == calls[0]


def test_an_error_of_the_step_itself_still_raises() -> None:
    """A shape error raises as it would uncompiled, and is not mistaken for a compiler failure."""
    calls: list[str] = []
    step = FallbackStep(lambda h, u: h @ u, compiled=_broken_compile, on_fallback=calls.append)
    with pytest.raises(RuntimeError, match="cannot be multiplied|size mismatch|shapes"):
        step(torch.ones(2, 3), torch.ones(4, 5))
    assert calls == [] and step.fallback is None


def test_wrappers_are_seen_through() -> None:
    from fpstab.architectures import CoreConfig, build_core

    core = build_core(CoreConfig(arch="standard_recall", norm="outer", d_model=16, n_heads=2, in_dim=3, out_dim=2,
                                 grid=(16,)))
    wrapped = checkpointed(FallbackStep(core.step_from))
    assert isinstance(find_fallback_step(wrapped), FallbackStep)
    assert find_fallback_step(core.step_from) is None
    check_step_fn(core, wrapped)
    with pytest.raises(ValueError, match="step_from"):
        check_step_fn(core, checkpointed(FallbackStep(core.step)))


def test_a_run_whose_compiler_fails_trains_eagerly_and_records_why(tmp_path: Path, no_cxx_compiler: None) -> None:
    """--compile on a machine without a working C++ compiler: the run completes, eagerly, with
    a compile_fallback record; config.json says the step was meant to be compiled and why."""
    cfg = resolve_config(None, dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2,
                                    n_train=16, n_val=8, batch_size=8, epochs=1, train_iters=2, train_level="16"))
    result = train(cfg, tmp_path / "run", Runtime(quiet=True, compile=True))
    assert result.state == "completed"
    records = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    fallbacks = [r for r in records if r["kind"] == "compile_fallback"]
    assert len(fallbacks) == 1 and fallbacks[0]["step"] == 0 and "torch.compile failed" in fallbacks[0]["reason"]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["runtime"]
    assert stored["compile"] is True and stored["compiled"] == {"compile": True, "reason": "--compile given"}


def test_auto_is_the_default_and_recorded(tmp_path: Path) -> None:
    """A short CPU run under the default (auto) trains eagerly and says why in config.json."""
    assert Runtime().compile is None
    cfg = resolve_config(None, dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2,
                                    n_train=16, n_val=0, batch_size=8, epochs=1, train_iters=2, train_level="16"))
    train(cfg, tmp_path / "run", Runtime(quiet=True))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["runtime"]
    assert stored["compile"] is None and stored["compiled"]["compile"] is False
    assert stored["compiled"]["reason"].startswith("auto: 2 steps")
