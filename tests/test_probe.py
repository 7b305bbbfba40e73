"""`fpstab.fixedpoint.probe` on real cores and the `fpstab probe` command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fpstab.architectures import CoreConfig, build_core
from fpstab.fixedpoint import SCHEMA_VERSION, probe
from fpstab.cli import main
from fpstab.reports.probe_table import format_probe

FAST = ["--iters", "60", "--samples", "3"]


def small_core(arch: str, norm: str = "outer", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_core(CoreConfig(arch=arch, norm=norm, d_model=8, n_heads=2, in_dim=2, out_dim=2)).double()


def one_hot_bits(batch: int, n: int, seed: int) -> torch.Tensor:
    bits = torch.randint(0, 2, (batch, n), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(bits, 2).double()


def test_probe_of_a_recall_core_agrees_with_finite_differences() -> None:
    core = small_core("standard_recall")
    report = probe(core, one_hot_bits(3, 6, 0), iters=300, tol=1e-9)
    reach, dep = report.reachability, report.input_dependence
    assert all(reach.solver_converged)
    assert not dep.autonomous and min(dep.je_norm) > 0
    # float64, unique fixed point: the IFT derivative and central differences agree
    assert min(dep.fd_cosine) > 0.9999 and max(dep.fd_rel_error) < 1e-3
    assert dep.verdict.status == "pass"
    assert report.settings["dtype"] == "float64"
    assert "rho(W_x)" in report.geometry.weights


def test_probe_of_a_no_recall_core_says_autonomous() -> None:
    report = probe(small_core("no_recall"), one_hot_bits(3, 6, 1), iters=60)
    dep = report.input_dependence
    assert dep.autonomous and dep.verdict.status == "fail"
    assert max(dep.je_norm) == 0 and "autonomous map" in dep.note
    assert all(math.isnan(v) for v in dep.ift_gain)  # not estimated, and said so
    text = format_probe(report.to_dict())
    assert "autonomous map" in text and "IFT gain" not in text


def test_a_diverging_core_is_a_result_not_a_crash() -> None:
    core = small_core("no_recall", norm="inner")
    with torch.no_grad():
        core.blocks[0].mlp.fc2.bias.fill_(1e307)  # h_t = h_0 + t c overflows to inf, then nan
    report = probe(core, one_hot_bits(2, 5, 2), iters=40)
    assert all(report.reachability.nonfinite)
    assert report.reachability.verdict.status == "fail" and "non-finite" in report.reachability.verdict.reason
    record = json.loads(report.to_json())  # strict JSON: non-finite numbers become null
    assert record["reachability"]["final_residual"] == [None, None]


def test_one_pass_baselines_are_refused() -> None:
    with pytest.raises(ValueError, match="not a looped map"):
        probe(small_core("fixed_depth"), one_hot_bits(2, 4, 0), iters=40)


def test_cli_probe_prints_three_axes_and_writes_the_record(tmp_path, capsys) -> None:
    out = tmp_path / "probe.json"
    assert main(["probe", "--arch", "internal_recall", "--norm", "outer", *FAST, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for section in ("1. Reachability", "2. Input-dependence", "3. Geometry"):
        assert section in text
    assert "arch=internal_recall" in text and "norm=outer" in text
    record = json.loads(out.read_text())
    assert record["schema"] == SCHEMA_VERSION
    assert record["map"]["arch"] == "internal_recall" and record["settings"]["iters"] == 60
    assert {"status", "reason"} <= set(record["geometry"]["verdict"])
    assert len(record["reachability"]["spectral_radius"]) == 3


def test_cli_probe_float64_no_recall(capsys) -> None:
    assert main(["probe", "--arch", "no_recall", "--dtype", "float64", *FAST]) == 0
    text = capsys.readouterr().out
    assert "autonomous map" in text and "float64" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "fixed_depth"], "one-pass baseline"),
        (["--samples", "1"], "at least 2"),
        (["--checkpoint", "runs/x", "--arch", "no_recall"], "cannot be combined with --checkpoint"),
        (["--checkpoint", "/nonexistent/run"], "nonexistent"),
        (["--level", "7"], "level"),
    ],
)
def test_cli_probe_bad_input_is_a_clear_error(argv: list[str], message: str, capsys) -> None:
    assert main(["probe", *FAST, *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_probe_unknown_arch_lists_the_allowed_ones(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["probe", "--arch", "deep_recall"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and "internal_recall" in err


def test_cli_probe_a_trained_checkpoint(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--quiet", "--task", "prefix_sum", "--arch", "standard_recall",
                 "--train-level", "16", "--d-model", "16", "--n-heads", "2", "--n-train", "16", "--n-val", "4",
                 "--batch-size", "8", "--epochs", "1", "--train-iters", "2"]) == 0
    capsys.readouterr()
    out = tmp_path / "probe.json"
    assert main(["probe", "--checkpoint", str(run), *FAST, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["map"]["source"] == str(run) and record["map"]["arch"] == "standard_recall"
    assert record["map"]["d_model"] == 16 and record["map"]["task"] == "prefix_sum"
    assert record["map"]["level"] == "16" and record["settings"]["tokens"] == 16  # its training level
    assert main(["probe", "--checkpoint", str(run), "--task", "sudoku", *FAST]) == 2
    assert "trained on 'prefix_sum'" in capsys.readouterr().err
