"""The run-record format: file names and schemas of a run directory, and one reader for a whole run.

A run directory (written by `fpstab train`, `eval`, `probe` and `sweep`) holds:

    config.json          resolved TrainConfig + CoreConfig, seeds, runtime   (schema fpstab.run_config/1)
    status.json          {"state": running | completed | diverged | interrupted, "step", ...}
    metrics.jsonl        one JSON object a line (kind: train | epoch | resume | diverged | done;
                         shift_check | shift in a SHIFT run, whose shift.json holds the trace)
    checkpoints/last.pt  the training state (torch; read by fpstab.runs, never here)
    eval.json            accuracy at every iteration per level           (schema fpstab.eval/1)
    probe.json           the probe record: one entry per probed level       (schema fpstab.probe/2)
    sweep.json           the sweep's stages for this run                    (schema fpstab.sweep_run/1)
    plots/               eval's figures

and a sweep's results tree holds grid.json plus one such directory per run.
Everything here is plain JSON: no model, training or torch code is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
PLOTS_DIR = "plots"
SWEEP_RUN_FILE = "sweep.json"
GRID_FILE = "grid.json"
PROBE_FILE = "probe.json"

CONFIG_SCHEMA = "fpstab.run_config"
CONFIG_VERSION = 1
EVAL_SCHEMA = "fpstab.eval"
EVAL_SCHEMA_VERSION = 1
SWEEP_RUN_SCHEMA = "fpstab.sweep_run/1"


# The writer (fixedpoint.probes.records.SCHEMA_VERSION) holds the same string; tests/test_report.py checks.
PROBE_SCHEMA = "fpstab.probe/2"


def probe_entries(record: Any, path: str | Path) -> dict[str, dict[str, Any]]:
    """Level -> a one-entry probe record, from a record holding several levels; ValueError naming the file."""
    if not isinstance(record, Mapping) or record.get("schema") != PROBE_SCHEMA:
        schema = record.get("schema") if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"{path} is not a probe record this reader knows (schema {schema!r}, "
                         f"expected {PROBE_SCHEMA!r}): rerun `fpstab probe --json`")
    entries = record.get("probes")
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) and isinstance(e.get("inputs"), Mapping)
                                                   for e in entries):
        raise ValueError(f"{path}: 'probes' must be a list of entries, each with its 'inputs'")
    return {str(e["inputs"].get("level")): {"schema": PROBE_SCHEMA, "probes": [dict(e)]} for e in entries}


def read_json_file(path: str | Path) -> Any:
    """Parse a JSON file; ValueError naming the file when it is not JSON, FileNotFoundError when absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err


def load_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (a file, or a run directory holding one); a bad line names its number."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n} is not a JSON record ({err})") from err
    return out


@dataclass
class RunRecord:
    """Everything a run directory records, read without importing models.

    config: config.json; status: status.json ({} if absent); eval: eval.json or None;
    probes: level -> that level's probe record (one entry); sweep: sweep.json or None; metrics: metrics.jsonl records.
    """

    name: str
    path: Path
    config: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def train(self) -> dict[str, Any]:
        """The run's resolved TrainConfig (config.json's "train")."""
        return dict(self.config.get("train", {}))

    @property
    def state(self) -> str:
        return str(self.status.get("state", "unknown"))


def load_run_record(run_dir: str | Path) -> RunRecord:
    """Read a run directory's records; ValueError naming the file when one is malformed."""
    run_dir = Path(run_dir)
    config = read_json_file(run_dir / CONFIG_FILE)
    if not isinstance(config, Mapping) or config.get("schema") != CONFIG_SCHEMA:
        raise ValueError(f"{run_dir / CONFIG_FILE} is not an fpstab run config (schema {CONFIG_SCHEMA!r})")
    rec = RunRecord(run_dir.name, run_dir, dict(config))
    if (run_dir / STATUS_FILE).is_file():
        rec.status = read_json_file(run_dir / STATUS_FILE)
    if (run_dir / EVAL_FILE).is_file():
        rec.eval = read_json_file(run_dir / EVAL_FILE)
    if (run_dir / SWEEP_RUN_FILE).is_file():
        rec.sweep = read_json_file(run_dir / SWEEP_RUN_FILE)
    if (run_dir / METRICS_FILE).is_file():
        rec.metrics = load_metrics(run_dir)
    if (run_dir / PROBE_FILE).is_file():
        rec.probes = probe_entries(read_json_file(run_dir / PROBE_FILE), run_dir / PROBE_FILE)
    return rec


def find_runs(tree: str | Path) -> list[RunRecord]:
    """Every run directory (one holding config.json) directly under `tree`, or `tree` itself, by name."""
    tree = Path(tree)
    if not tree.is_dir():
        raise FileNotFoundError(f"{tree} is not a directory of runs")
    if (tree / CONFIG_FILE).is_file():
        return [load_run_record(tree)]
    runs = [load_run_record(d) for d in sorted(tree.iterdir()) if (d / CONFIG_FILE).is_file()]
    if not runs:
        raise FileNotFoundError(f"{tree} holds no run directories (none has {CONFIG_FILE})")
    return runs
