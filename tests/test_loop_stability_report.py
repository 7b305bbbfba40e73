"""reports.loop_stability: the oscillation statistics and summaries of loop_diagnostics records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fpstab.reports.loop_stability import (
    diagnostic_records,
    oscillation,
    plot_gradient_norms,
    plot_stream_norms,
    run_summary,
)


def test_oscillation_statistics() -> None:
    zigzag = oscillation([1, 3, 1, 3, 1, 3])
    assert zigzag["sign_change_rate"] == 1.0 and zigzag["n"] == 6
    assert zigzag["cv"] == pytest.approx(0.5)  # mean 2, population std 1
    assert zigzag["rel_step"] == pytest.approx(1.0)  # |d| = 2 everywhere
    assert oscillation([1, 1, 1, 9, 1])["max_over_median"] == 9.0
    smooth = oscillation([1, 2, 4, 8, 16])
    assert smooth["sign_change_rate"] == 0.0
    once = oscillation([1, 2, 3, 2, 1])  # up, up, down, down: one change in three pairs
    assert once["sign_change_rate"] == pytest.approx(1 / 3)
    assert oscillation([2.0])["cv"] is None and oscillation([1, 1, 1])["sign_change_rate"] is None
    assert oscillation([1, math.nan, 3, 1])["n"] == 3


def records(k: int = 3) -> list[dict]:
    out = []
    for step, scale in ((10, 1.0), (5, 2.0), (15, 4.0)):  # out of order: sorted by step
        out.append({"kind": "loop_diagnostics", "step": step, "iters": k,
                    "stream_norm": [scale * (t + 1) for t in range(k)], "state_norm": [2.0] * k,
                    "state_grad_norm": [scale * 3, 2.0, scale],
                    "grad_norm": {"embed": 1.0, "blocks.0": scale, "blocks.0.attn": scale, "head": 1.0},
                    "loop_grad_norm": {"blocks.0": [1.0, 2.0, 1.0][:k], "blocks.0.attn": [1.0] * k}})
    return [{"kind": "train", "step": 5}] + out


def test_run_summary() -> None:
    recs = diagnostic_records(records())
    assert [r["step"] for r in recs] == [5, 10, 15]
    s = run_summary(recs, tail=1.0)
    assert s["stream_norm_first"] == [2.0, 4.0, 6.0] and s["stream_norm_last"] == [4.0, 8.0, 12.0]
    assert s["stream_growth"] == 3.0 and s["stream_max"] == 12.0
    assert list(s["grad_oscillation"]) == ["blocks.0"]  # whole blocks only
    assert s["grad_oscillation"]["blocks.0"]["sign_change_rate"] == 1.0  # 2, 1, 4
    assert s["loop_sign_change_rate"] == {"blocks.0": 1.0}
    late = run_summary(recs)  # the last half: steps 10 and 15
    assert late["grad_oscillation_steps"] == [10, 15] and late["grad_oscillation"]["blocks.0"]["n"] == 2
    assert late["grad_oscillation"]["blocks.0"]["log_jump"] == pytest.approx(math.log(4))
    assert late["backward_growth"] == 3.0
    with pytest.raises(ValueError, match="no loop_diagnostics records"):
        run_summary([])


def test_figures_are_written(tmp_path: Path) -> None:
    runs = {("LT", 3): diagnostic_records(records()), ("FLT", 6): diagnostic_records(records())}
    for plot, name in ((plot_stream_norms, "s.png"), (plot_gradient_norms, "g.png")):
        path = plot(runs, ["LT", "FLT"], [3, 6], tmp_path / name)
        assert path.read_bytes()[:4] == b"\x89PNG"
