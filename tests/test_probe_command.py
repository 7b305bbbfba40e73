"""The `fpstab probe` command: fresh and trained cores, levels, held-out inputs, errors."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toymaps import TanhCore

import torch
import fpstab.outputs
import fpstab.probe_command
from fpstab.cli import main
from fpstab.fixedpoint import SCHEMA_VERSION, probe, probe_record
from fpstab.probe_command import add_arguments, settings_from
from fpstab.reports.probe_table import probe_summary_table
from fpstab.reports.records import check_probe_record, load_probe, probe_summaries
from fpstab.runs import last_checkpoint_path, load_checkpoint, save_checkpoint, write_status

FAST = ["--iters", "60", "--samples", "3", "--inverse-steps", "6"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch prefix-sum run (training level 16, data seed 5)."""
    run = tmp_path_factory.mktemp("probe") / "run"
    assert main(["train", "--out", str(run), "--quiet", "--task", "prefix_sum", "--arch", "standard_recall",
                 "--train-level", "16", "--d-model", "16", "--n-heads", "2", "--n-train", "16", "--n-val", "4",
                 "--batch-size", "8", "--epochs", "1", "--train-iters", "2", "--data-seed", "5"]) == 0
    return run


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
    assert entry["settings"]["always_solve"] is False
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
        (["--device", "foo"], "--device 'foo': allowed: cpu, cuda or cuda:N"),
        (["--d-model", "0"], "--d-model 0 is invalid; allowed: an int >= 1"),
        (["--n-heads", "3"], "--n-heads 3 is invalid; allowed: a divisor of --d-model 64"),
        (["--threads", "0"], "--threads 0: must be >= 1"),
    ],
)
def test_cli_probe_bad_input_is_a_clear_error(argv: list[str], message: str, capsys) -> None:
    assert main(["probe", *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_probe_cuda_without_cuda_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        assert main(["probe", *FAST, "--device", device]) == 2
        assert f"--device {device}: torch sees no CUDA device here; use --device cpu" in capsys.readouterr().err


def _never_built(*args: object) -> None:
    raise AssertionError("the core was built before the arguments were checked")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda tmp: tmp, "is a folder; give a file path inside it"),
        (lambda tmp: tmp / "missing" / "probe.json", "does not exist; create it first"),
        (lambda tmp: tmp / "file.txt" / "probe.json", "is not a folder"),
        # a pipe here stands for a device such as /dev/null, which an atomic rename would replace
        (lambda tmp: tmp / "pipe", "exists and is not a regular file"),
    ],
)
def test_cli_probe_json_path_is_refused_before_the_probe_runs(tmp_path, monkeypatch, capsys, where, message) -> None:
    (tmp_path / "file.txt").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.setattr(fpstab.probe_command, "build", _never_built)
    assert main(["probe", *FAST, "--json", str(where(tmp_path))]) == 2
    assert f"--json {where(tmp_path)}: " in (err := capsys.readouterr().err) and message in err


def _permission_denied(**kwargs: object) -> None:
    raise PermissionError(13, "Permission denied")


def test_cli_probe_json_in_a_folder_it_cannot_write_is_refused(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes through permission bits: fail the write as a read-only mount would
        monkeypatch.setattr(fpstab.outputs.tempfile, "mkstemp", _permission_denied)
    monkeypatch.setattr(fpstab.probe_command, "build", _never_built)
    try:
        assert main(["probe", *FAST, "--json", str(folder / "probe.json")]) == 2
    finally:
        folder.chmod(0o700)
    assert f"cannot write in {folder} (Permission denied)" in capsys.readouterr().err


def test_cli_probe_always_solve_reaches_the_settings() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from(parser.parse_args(["--always-solve"])).always_solve is True
    assert settings_from(parser.parse_args([])).always_solve is False


def test_cli_probe_arguments_are_checked_before_torch_loads() -> None:
    code = ("import sys; from fpstab.cli import main; rc = main(['probe', '--samples', '-1']); "
            "assert rc == 2 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--samples -1: need at least 2" in done.stderr


def test_cli_probe_unknown_arch_lists_the_allowed_ones(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["probe", "--arch", "deep_recall"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and "internal_recall" in err


def test_cli_probe_a_trained_checkpoint_on_held_out_inputs_at_two_levels(trained_run, tmp_path, capsys) -> None:
    run = trained_run
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


def test_cli_probe_a_diverged_run_with_non_finite_weights_is_a_record_not_a_crash(trained_run, tmp_path,
                                                                                    capsys) -> None:
    run = tmp_path / "diverged"
    shutil.copytree(trained_run, run)
    ckpt = load_checkpoint(last_checkpoint_path(run))
    for tensor in ckpt["model"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    save_checkpoint(last_checkpoint_path(run), ckpt)
    write_status(run, "diverged", step=9, reason="non-finite loss at step 9")
    out = tmp_path / "probe.json"
    assert main(["probe", "--checkpoint", str(run), *FAST, "--json", str(out)]) == 0
    err = capsys.readouterr().err
    step = ckpt["step"]
    assert f"this run diverged at step 9 (non-finite loss at step 9); probing its last saved checkpoint, step {step}" in err
    assert "weight tensor(s) of this checkpoint hold NaN or inf" in err
    (entry,) = load_probe(out)["probes"]
    assert entry["map"]["run_state"] == "diverged" and entry["map"]["checkpoint_step"] == step
    assert entry["map"]["weights_finite"] is False
    reach = entry["axes"]["reachability"]["verdict"]
    assert reach["status"] == "fail" and "non-finite" in reach["reason"]
    assert {a["verdict"]["status"] for a in entry["axes"].values()} <= {"fail", "undetermined"}


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
