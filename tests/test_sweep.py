"""`fpstab sweep` end to end on a 2-run grid of tiny cores: records, skipping, resuming, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from fpstab.cli import main
from fpstab.grid import load_grid
from fpstab.grid import parse_grid
from fpstab.runs import last_checkpoint_path
from fpstab.sweep import SweepOptions, check_only, eval_command, only_matches, parse_shard, shard_runs, train_command

SMOKE = Path(__file__).parent / "fixtures" / "grids" / "smoke.toml"
REPO = Path(__file__).resolve().parent.parent


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def commands_in(log: Path) -> int:
    return sum(line.startswith("$ ") for line in log.read_text().splitlines())


def test_smoke_grid_trains_evaluates_probes_then_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["sweep", str(SMOKE), "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    assert [r["name"] for r in read(out / "grid.json")["runs"]] == [
        "prefix_sum-no_recall-outer-s0", "prefix_sum-standard_recall-outer-s0"]
    for name in ("prefix_sum-no_recall-outer-s0", "prefix_sum-standard_recall-outer-s0"):
        run = out / name
        assert read(run / "status.json")["state"] == "completed"
        assert [lv["level"] for lv in read(run / "eval.json")["levels"]] == ["16", "32"]
        assert [e["inputs"]["level"] for e in read(run / "probe.json")["probes"]] == ["16", "32"]
        record = read(run / "sweep.json")
        assert record["state"] == "done"
        assert {k: v["state"] for k, v in record["stages"].items()} == {"train": "ok", "eval": "ok", "probe": "ok"}
    first = read(out / "prefix_sum-no_recall-outer-s0" / "sweep.json")["stages"]["train"]

    assert main(["sweep", str(SMOKE), "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    run = out / "prefix_sum-no_recall-outer-s0"
    assert commands_in(run / "logs" / "train.log") == 1 and commands_in(run / "logs" / "eval.log") == 1
    again = read(run / "sweep.json")["stages"]["train"]
    assert again["skipped"] == "already completed" and again["wall_s"] == first["wall_s"]
    assert main(["sweep", str(SMOKE), "--out", str(out), "--dry-run"]) == 0
    assert "prefix_sum-no_recall-outer-s0: next nothing (done);" in capsys.readouterr().out
    # the records make a report without any model code
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "index.md").read_text()
    assert "prefix_sum: accuracy by level" in md and f"The grid ({SMOKE}; 2 runs): 2 done. Nothing is left to run" in md


def test_a_killed_run_resumes_from_its_checkpoint_in_its_own_shard(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(SMOKE.read_text().replace('levels = ["hardest"]', "levels = []")
                         + "\n[runtime]\nlog_every = 1\n")
    spec = load_grid(grid_file).runs[1]
    out = tmp_path / "runs"
    run = out / spec.name
    request = tmp_path / "request.json"
    request.write_text(json.dumps({k: v for k, v in spec.train.items() if k != "preset"} | {"checkpoint_every": 1}))
    # a training killed after 2 steps, with a checkpoint at each step
    assert main(["train", "--config", str(request), "--preset", "tiny", "--out", str(run), "--quiet",
                 "--threads", "1", "--stop-after-steps", "2"]) == 137
    grid_file.write_text(grid_file.read_text().replace("epochs = 1", "epochs = 1\ncheckpoint_every = 1"))
    assert main(["sweep", str(grid_file), "--out", str(out), "--shard", "1/2", "--quiet"]) == 0
    assert "--resume" in (run / "logs" / "train.log").read_text()
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "resume" in kinds and kinds[-1] == "done"
    assert not (out / load_grid(grid_file).runs[0].name).exists()  # shard 0's run was left alone


def test_a_completed_training_without_weights_or_records_is_trained_again(tmp_path):
    """Records copied back from another machine without checkpoints: a run with eval and probes done
    is complete; one that still needs them must train again, from step 0."""
    from fpstab.sweep import weights_lost

    spec = load_grid(SMOKE).runs[0]
    run = tmp_path / spec.name
    run.mkdir()
    status = {"state": "completed", "step": 4}
    assert weights_lost(spec, run, status)
    (run / "eval.json").write_text(json.dumps({"checkpoint_step": 4, "levels": [{"level": "16"}, {"level": "32"}]}))
    assert weights_lost(spec, run, status)  # the probe is still missing
    (run / "probe.json").write_text(json.dumps({"probes": [{"inputs": {"level": "32"}}]}))
    assert not weights_lost(spec, run, status)
    assert not weights_lost(spec, run, {"state": "interrupted", "step": 2})  # --resume handles that one
    # a run with nothing to probe (a one-pass baseline) is complete once evaluated, with no probe.json
    unprobed = parse_grid(tomllib.loads(SMOKE.read_text().replace('levels = ["hardest"]', "levels = []"))).runs[0]
    other = tmp_path / "unprobed"
    other.mkdir()
    (other / "eval.json").write_text((run / "eval.json").read_text())
    assert unprobed.probe_levels == () and not weights_lost(unprobed, other, status)


def test_records_older_than_the_checkpoint_are_not_current(tmp_path):
    """A run trained again from step 0 reaches the same final step with new weights: its old eval
    and probe records must not pass for the new checkpoint's."""
    from fpstab.sweep import eval_is_current, probe_is_current

    spec = load_grid(SMOKE).runs[0]
    run = tmp_path / spec.name
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"checkpoint_step": 4, "levels": [{"level": lv}
                                                                                 for lv in spec.eval_levels]}))
    (run / "probe.json").write_text(json.dumps({"probes": [{"inputs": {"level": lv}} for lv in spec.probe_levels]}))
    assert eval_is_current(run, spec.eval_levels, 4) and probe_is_current(run, spec.probe_levels)  # no checkpoint
    ckpt = last_checkpoint_path(run)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"weights trained again")
    for name in ("eval.json", "probe.json"):
        os.utime(run / name, (ckpt.stat().st_mtime - 60, ckpt.stat().st_mtime - 60))
    assert not eval_is_current(run, spec.eval_levels, 4) and not probe_is_current(run, spec.probe_levels)
    for name in ("eval.json", "probe.json"):
        os.utime(run / name, (ckpt.stat().st_mtime + 1, ckpt.stat().st_mtime + 1))
    assert eval_is_current(run, spec.eval_levels, 4) and probe_is_current(run, spec.probe_levels)
    assert not eval_is_current(run, spec.eval_levels, 5)  # another step


def test_a_run_directory_of_another_config_is_refused_before_anything_runs(tmp_path, capsys):
    """A grid changed after its runs started (here the lr): the dry run names the run and the key,
    and the sweep refuses at once, before it writes or trains anything."""
    from fpstab.config import TrainConfig
    from fpstab.sweep import config_conflict

    runs = load_grid(SMOKE).runs
    spec, out = runs[1], tmp_path / "runs"
    cfg = TrainConfig.from_dict(spec.config)
    run = out / spec.name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
    assert config_conflict(spec, run) is None  # the same config: resumable
    (run / "config.json").write_text(json.dumps({"train": cfg.replace(lr=cfg.lr * 10).to_dict()}))
    assert main(["sweep", str(SMOKE), "--out", str(out), "--dry-run"]) == 1
    listed = capsys.readouterr().out
    assert f"{spec.name}: next refused: its config.json has lr={cfg.lr * 10!r} where the grid has {cfg.lr!r}" in listed
    assert f"{runs[0].name}: next train from step 0;" in listed and "1 refused" in listed
    assert main(["sweep", str(SMOKE), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert spec.name in err and "move them away" in err
    assert not (out / "grid.json").exists() and not (out / runs[0].name).exists()  # nothing ran
    (run / "config.json").write_text("{}")
    assert "is not a readable run config" in config_conflict(spec, run)


def test_shards_partition_the_grid():
    runs = load_grid(SMOKE).runs
    assert [r.index for r in shard_runs(runs, (0, 2))] == [0] and [r.index for r in shard_runs(runs, (1, 2))] == [1]
    assert parse_shard("3/4") == (3, 4)
    assert [r.index for r in shard_runs(runs, (0, 1), [("arch", "no_recall"), ("arch", "standard_recall")])] == [0, 1]
    assert [r.index for r in shard_runs(runs, (0, 1), [("arch", "no_recall"), ("norm", "inner")])] == []
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_only_compares_numbers_by_value_and_refuses_a_filter_that_keeps_nothing(tmp_path, capsys):
    runs = load_grid(SMOKE).runs
    lr = runs[0].config["lr"]
    assert [r.index for r in shard_runs(runs, (0, 1), [("lr", f"{lr:e}")])] == [r.index for r in runs]
    assert only_matches(0.0003, "3e-4") and only_matches(16, "16.0") and only_matches(True, "true")
    assert not only_matches(0.0003, "1e-4") and not only_matches(16, "sixteen") and not only_matches(False, "1")
    check_only(runs, [("arch", "no_recall")])  # keeps a run: no error
    with pytest.raises(ValueError, match=r"--only lr=1e-9: no run of the grid matches; its runs have lr in"):
        check_only(runs, [("lr", "1e-9")])
    assert main(["sweep", str(SMOKE), "--out", str(tmp_path), "--dry-run", "--only", "arch=no_recal"]) == 2
    err = capsys.readouterr().err
    assert "arch=no_recal" in err and "no_recall" in err and "standard_recall" in err


def test_sweep_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["sweep", str(SMOKE), "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig, started_ignoring_sigint",
                         [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)])
def test_an_interrupted_sweep_stops_at_once_and_starts_nothing_more(tmp_path, sig, started_ignoring_sigint):
    """Ctrl-C (or a scheduler's SIGTERM) sent to the sweep alone: the running training checkpoints
    and stops, the next run never starts, and the sweep exits 130 without waiting for the grid. Also
    for a sweep started with SIGINT ignored, as a non-interactive shell starts a background job."""
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(SMOKE.read_text().replace("epochs = 1", "epochs = 50") + "\n[runtime]\nlog_every = 1\n")
    out = tmp_path / "runs"
    first, second = (out / spec.name for spec in load_grid(grid_file).runs)
    proc = subprocess.Popen([sys.executable, "-m", "fpstab.cli", "sweep", str(grid_file), "--out", str(out),
                             "--jobs", "1", "--quiet"], cwd=REPO, start_new_session=True,
                            preexec_fn=_ignore_sigint if started_ignoring_sigint else None)
    deadline = time.monotonic() + 120
    metrics = first / "metrics.jsonl"
    # the first step's record: the training's interrupt handler is in place
    while not (metrics.is_file() and metrics.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 130
    assert read(first / "status.json")["state"] == "interrupted"
    assert read(first / "sweep.json")["state"] == "stopped"
    assert not (second / "config.json").exists()


def test_an_evaluation_cut_off_by_the_sweeps_end_is_stopped_not_failed(tmp_path, capsys):
    """A scheduler's SIGTERM while a trained run is evaluated: the run is recorded as stopped (the
    next sweep redoes its eval), and no failure is reported for the stage the sweep itself ended."""
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(SMOKE.read_text().replace("iters = 40", "iters = 100000")
                         .replace('arch = ["no_recall", "standard_recall"]', 'arch = ["standard_recall"]'))
    out = tmp_path / "runs"
    run = out / load_grid(grid_file).runs[0].name
    proc = subprocess.Popen([sys.executable, "-m", "fpstab.cli", "sweep", str(grid_file), "--out", str(out)],
                            cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (run / "logs" / "eval.log").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # the eval is under way
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    said = proc.stdout.read().decode()
    record = read(run / "sweep.json")
    assert record["state"] == "stopped" and record["stages"]["eval"]["state"] == "failed", record
    assert f"{run.name}: stopped (" in said and "(0 failed)" in said and "exited" not in said, said
    assert main(["sweep", str(grid_file), "--out", str(out), "--dry-run"]) == 0
    assert f"{run.name}: next eval, then probe;" in capsys.readouterr().out


@pytest.mark.parametrize("runtime, flags", [({}, []), ({"compile": True}, ["--compile"]),
                                            ({"compile": False}, ["--no-compile"]),
                                            ({"activation_checkpointing": True}, ["--activation-checkpointing"])])
def test_train_commands_pass_the_compile_choice_only_when_the_grid_makes_one(tmp_path, runtime, flags):
    """Without [runtime] compile each run makes its own auto choice; true / false force it."""
    g = parse_grid({"base": {"preset": "tiny"}, "runtime": runtime})
    cmd = train_command(g.runs[0], tmp_path / "run", SweepOptions(), g)
    assert [c for c in cmd if c in ("--compile", "--no-compile", "--activation-checkpointing")] == flags


@pytest.mark.parametrize("opts, flags", [({}, []), ({"compile": True}, ["--compile"]),
                                         ({"compile": False}, ["--no-compile"])])
def test_eval_commands_pass_the_compile_choice_only_when_the_grid_makes_one(tmp_path, opts, flags):
    g = parse_grid({"base": {"preset": "tiny"}, "eval": opts})
    cmd = eval_command(g.runs[0], tmp_path / "run", SweepOptions(), g)
    assert [c for c in cmd if c in ("--compile", "--no-compile")] == flags
