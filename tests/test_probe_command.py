"""The `fpstab probe` command: fresh and trained cores, levels, held-out inputs, errors."""

from __future__ import annotations

import json

import pytest
from toymaps import TanhCore

import torch
from fpstab.cli import main
from fpstab.fixedpoint import SCHEMA_VERSION, probe, probe_record
from fpstab.reports.probe_table import probe_summary_table
from fpstab.reports.records import check_probe_record, load_probe, probe_summaries

FAST = ["--iters", "60", "--samples", "3", "--inverse-steps", "6"]


def test_cli_probe_prints_every_axis_and_writes_the_record(tmp_path, capsys) -> None:
    out = tmp_path / "probe.json"
    assert main(["probe", "--arch", "internal_recall", "--norm", "outer", *FAST, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for section in ("1. Reachability", "2. Path independence", "3. Input-dependence", "4. Geometry"):
        assert section in text
    assert "arch=internal_recall" in text and "norm=outer" in text
    record = json.loads(out.read_text())
    check_probe_record(record)
    assert record["schema"] == SCHEMA_VERSION and len(record["probes"]) == 1
    entry = record["probes"][0]
    assert entry["map"]["arch"] == "internal_recall" and entry["settings"]["iters"] == 60
    assert entry["inputs"]["data_seed"] == 0 and entry["inputs"]["held_out"] is False  # --seed 0, fresh core
    rho = entry["axes"]["reachability"]["estimates"]["spectral_radius"]
    assert len(rho["value"]) == len(rho["converged"]) == len(rho["error"]) == 3 and rho["products"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "fixed_depth"], "one-pass baseline"),
        (["--samples", "1"], "at least 2"),
        (["--checkpoint", "runs/x", "--arch", "no_recall"], "cannot be combined with --checkpoint"),
        (["--checkpoint", "/nonexistent/run"], "nonexistent"),
        (["--level", "7"], "level"),
        (["--krylov-steps", "1"], "--krylov-steps 1 must be an int >= 2"),
        (["--gmres-restarts", "0"], "--gmres-restarts"),
        (["--fd-eps", "-1"], "--fd-eps"),
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


def test_cli_probe_a_trained_checkpoint_on_held_out_inputs_at_two_levels(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--quiet", "--task", "prefix_sum", "--arch", "standard_recall",
                 "--train-level", "16", "--d-model", "16", "--n-heads", "2", "--n-train", "16", "--n-val", "4",
                 "--batch-size", "8", "--epochs", "1", "--train-iters", "2", "--data-seed", "5"]) == 0
    capsys.readouterr()
    out = tmp_path / "probe.json"
    assert main(["probe", "--checkpoint", str(run), *FAST, "--level", "32", "--level", "16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "level 16:" in text and "level 32:" in text
    record = load_probe(out)
    levels = [(p["inputs"]["level"], p["inputs"]["training_level"], p["inputs"]["tokens"]) for p in record["probes"]]
    assert levels == [("16", True, 16), ("32", False, 32)]  # the training level first, each level once
    for entry in record["probes"]:
        assert entry["map"]["source"] == str(run) and entry["map"]["arch"] == "standard_recall"
        assert entry["inputs"]["data_seed"] == 5 + 3 and entry["inputs"]["held_out"] is True
    rows = probe_summaries(record)
    assert [r["level"] for r in rows] == ["16", "32"]
    assert "| standard_recall+outer | 32 |" in probe_summary_table(rows)
    assert main(["probe", "--checkpoint", str(run), "--task", "sudoku", *FAST]) == 2
    assert "trained on 'prefix_sum'" in capsys.readouterr().err


def test_probe_summaries_read_the_key_figures() -> None:
    core = TanhCore(d=6, in_dim=3, gain=0.5, recall=True, seed=0)
    x = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = probe(core, x, iters=100, inputs={"level": "easy+medium", "data_seed": 3})
    (row,) = probe_summaries(json.loads(json.dumps(probe_record([report]))))
    reach = report.axes["reachability"]
    assert row["level"] == "easy+medium" and row["data_seed"] == 3
    assert row["max_rho"] == max(reach.figures["spectral_radius"].per_sample) < 0.5 + 1e-9
    assert row["min_sigma_min"] == min(report.axes["geometry"].figures["sigma_min"].per_sample)
    assert row["converged_share"] == 1.0 and row["unconverged"] == []
    assert row["verdicts"] == report.verdicts()
    with pytest.raises(ValueError, match="schema"):
        check_probe_record({"schema": "fpstab.probe/1"})
