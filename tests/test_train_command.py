"""`fpstab train`'s command line: flags made from the config dataclasses, bad input refused in one
line before torch loads, runtime options kept by the run and reused on resume."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fpstab.cli import main
from fpstab.config import Runtime, TrainConfig
from fpstab.options import options_of
from fpstab.runs import read_json, read_metrics, read_status

ROOT = Path(__file__).resolve().parents[1]
# 4 steps an epoch, 2 epochs, seconds on a CPU
TINY = ["--quiet", "--task", "prefix_sum", "--arch", "standard_recall", "--train-level", "16", "--d-model", "16",
        "--n-heads", "2", "--n-train", "32", "--n-val", "8", "--batch-size", "8", "--epochs", "2",
        "--train-iters", "2"]


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line error `fpstab` prints for argv (exit code 2; argparse's own errors exit)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_help_shows_every_default_and_every_allowed_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    body = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]  # argparse wraps lines
    fields = [(f.name, opt) for cls in (TrainConfig, Runtime) for f, opt, _ in options_of(cls) if f.name != "preset"]
    starts = sorted((re.search(f" --{name.replace('_', '-')}[ ,]", body).start(), name, opt) for name, opt in fields)
    for (start, _, opt), (end, _, _) in zip(starts, starts[1:] + [(len(body), "", None)]):
        entry = body[start:end]
        assert "default: " in entry, entry
        assert all(str(value) in entry for value in opt.choices or () if value is not None), entry
    assert "one of embedding | zeros | random; default: embedding" in body  # --init-state
    assert "default: 256; preset tiny: 64" in body  # --d-model


def test_bad_arguments_are_refused_before_torch_loads() -> None:
    probe = ("import sys; from fpstab.cli import main\n"
             "codes = [main(a.split()) for a in sys.argv[1:]]\n"
             "print(codes, 'torch' in sys.modules)")
    bad = ["train --lr -1", "train --log-every 0", "train --threads 0", "train --d-model 30",
           "train --resume --out /nonexistent/run"]
    done = subprocess.run([sys.executable, "-c", probe, *bad], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"{[2] * len(bad)} False", done.stdout + done.stderr


@pytest.mark.parametrize("flags, message", [
    (["--log-every", "0"], "log_every=0 must be an int >= 1"),
    (["--print-every", "-1"], "print_every=-1.0 must be >= 0.0"),
    (["--threads", "0"], "threads=0 must be an int >= 1"),
    (["--stop-after-steps", "0"], "stop_after_steps=0 must be an int >= 1"),
    (["--device", "gpu"], "--device 'gpu': allowed: cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "--device 'cuda:x': allowed: cpu, cuda or cuda:N"),
    (["--lr", "0"], "lr=0.0 must be > 0.0"),
    (["--epochs", "0"], "epochs=0 must be an int >= 1"),
    (["--batch-size", "0"], "batch_size=0 must be an int >= 1"),
    (["--n-val", "-1"], "n_val=-1 must be an int >= 0"),
    (["--alpha", "1.5"], "alpha=1.5 must be <= 1.0"),
    (["--d-model", "0"], "CoreConfig.d_model=0 is invalid; allowed: an int >= 1"),
    (["--arch", "recall"], "argument --arch: invalid choice: 'recall'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
])
def test_numeric_and_runtime_ranges(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert message in error_of(["train", *flags], capsys)


def test_config_file_must_be_an_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.json").write_text("[1, 2]")
    err = error_of(["train", "--config", str(tmp_path / "c.json")], capsys)
    assert f"--config {tmp_path / 'c.json'}: expected a JSON object of TrainConfig keys, got a JSON list" in err


def test_config_file_keys_must_be_train_config_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.json").write_text('{"lr": 1e-3, "learning_rate": 1e-3}')
    err = error_of(["train", "--config", str(tmp_path / "c.json")], capsys)
    assert f"--config {tmp_path / 'c.json'}: unknown key(s) ['learning_rate']; allowed: the TrainConfig keys" in err


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    assert "exists and is not a directory" in error_of(["train", "--out", str(tmp_path / "f")], capsys)
    err = error_of(["train", "--out", str(tmp_path / "f" / "run")], capsys)
    assert f"--out {tmp_path / 'f' / 'run'}: {tmp_path / 'f'} exists and is not a directory" in err


def test_resume_of_a_missing_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_run"
    err = error_of(["train", "--out", str(missing), "--resume"], capsys)
    assert f"run directory {missing} does not exist" in err and not missing.exists()
    (tmp_path / "empty").mkdir()
    err = error_of(["train", "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert f"{tmp_path / 'empty' / 'config.json'} is missing" in err


def test_runtime_is_recorded_and_reused_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--log-every", "3", "--stop-after-steps", "5"]) == 137
    first = read_json(run / "config.json")["runtime"]
    assert (first["threads"], first["device"], first["activation_checkpointing"]) == (1, "cpu", False)  # defaults
    record = json.loads((run / "config.json").read_text())  # as if the first session had asked for these
    record["runtime"].update(activation_checkpointing=True, print_every=5.0)
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    runtime = read_json(run / "config.json")["runtime"]
    assert runtime["log_every"] == 3 and "resumed" in runtime and "started" in runtime
    assert (runtime["activation_checkpointing"], runtime["print_every"], runtime["threads"]) == (True, 5.0, 1)
    # train records every 3 steps or at an epoch's end, in both sessions
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "train"] == [3, 4, 7, 8]


def test_resume_with_runtime_flags_overrides_the_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--log-every", "3", "--stop-after-steps", "4"]) == 137
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--log-every", "1"]) == 0
    assert read_json(run / "config.json")["runtime"]["log_every"] == 1
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "train"] == [3, 4, 5, 6, 7, 8]


def test_status_follows_the_checkpoints_of_a_killed_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--checkpoint-every", "3", "--stop-after-steps", "7"]) == 137
    status = read_status(run)
    assert (status["state"], status["step"], status["epoch"], status["checkpoint_step"]) == ("running", 6, 1, 6)


def test_old_run_records_without_runtime_options_resume(tmp_path: Path) -> None:
    """A config.json written before the runtime options were recorded resumes with their defaults."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--stop-after-steps", "4"]) == 137
    record = json.loads((run / "config.json").read_text())
    record["runtime"] = {k: record["runtime"][k] for k in ("device", "precision", "compile", "torch", "fpstab",
                                                            "python", "started")}
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert read_json(run / "config.json")["runtime"]["log_every"] == Runtime().log_every
