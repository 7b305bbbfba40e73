"""The device session's benchmark scripts still run (on the CPU, at a toy size): a broken one would
only show on a GPU machine, where every minute is scarce. Speed is not checked here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_train_speed_measures_both_models_and_their_ratio(tmp_path):
    out = tmp_path / "bench.json"
    assert load("train_speed").main(["--small", "--device", "cpu", "--batch", "2", "--iters", "2", "--steps", "1",
                                     "--warmup", "0", "--variants", "eager_fp32", "--threads", "1",
                                     "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {r["model"]: r for r in record["rows"]}
    assert set(rows) == {"plain", "fpstab"} and not any(r["error"] for r in rows.values())
    assert rows["fpstab"]["per_flop_vs_plain"] > 0 and record["gflop_per_step"]["fpstab"] > 0


def test_gpu_sharing_reports_every_worker(tmp_path):
    # As a script, the way device.sh runs it: its spawned workers import it as the main module.
    out = tmp_path / "sharing.json"
    subprocess.run([sys.executable, str(BENCH / "gpu_sharing.py"), "--device", "cpu", "--tiny", "--batch", "2",
                    "--jobs", "2", "--seconds", "0.5", "--warmup", "1", "--threads", "1", "--label", "test",
                    "--json", str(out)], check=True, capture_output=True, timeout=300)
    row = json.loads(out.read_text())["rows"][0]
    assert row["jobs"] == 2 and row["ok"] == 2 and not row["errors"]
    assert all(w["steps"] >= 1 for w in row["workers"]) and row["total_steps_per_s"] > 0
