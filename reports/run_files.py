"""The run-record format: file names and schemas of a run directory, and one reader for a whole run.

A run directory (written by `fpstab train`, `eval`, `probe` and `sweep`) holds:

    config.json          resolved TrainConfig + CoreConfig, seeds, runtime   (schema fpstab.run_config/1)
    status.json          {"state": running | completed | diverged | interrupted, "step", ...}
    metrics.jsonl        one JSON object a line (kind: train | epoch | resume | diverged | done;
                         shift_check | shift in a SHIFT run, whose shift.json holds the trace)
    checkpoints/last.pt  the training state (torch; read by fpstab.runs; here only whether it is there)
    eval.json            accuracy at every iteration per level           (schema fpstab.eval/1)
    probe.json           the probe record: one entry per probed level       (schema fpstab.probe/2)
    sweep.json           the sweep's stages for this run                    (schema fpstab.sweep_run/1)
    plots/               eval's figures

and a sweep's results tree holds grid.json (the expanded grid: every run's name, resolved config and
levels) plus one such directory per run.
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
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"

CONFIG_SCHEMA = "fpstab.run_config"
CONFIG_VERSION = 1
EVAL_SCHEMA = "fpstab.eval"
EVAL_SCHEMA_VERSION = 1
SWEEP_RUN_SCHEMA = "fpstab.sweep_run/1"


# The writer (fixedpoint.probes.records.SCHEMA_VERSION) holds the same string; tests/test_report.py checks.
PROBE_SCHEMA = "fpstab.probe/2"


EVAL_SCHEMA_VERSIONS: tuple[int, ...] = (EVAL_SCHEMA_VERSION,)
_EVAL_KEYS = ("task", "arch", "norm", "iters", "levels")
_LEVEL_KEYS = ("level", "n_samples", "accuracy", "final_accuracy", "best_accuracy", "best_iteration",
               "overthinking_penalty")


def check_eval_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong if `record` is not an eval.json we read."""
    if not isinstance(record, Mapping):
        raise ValueError(f"not an fpstab eval record: a JSON object is expected, not {type(record).__name__}")
    if record.get("schema") != EVAL_SCHEMA:
        raise ValueError(f"not an fpstab eval record: schema={record.get('schema')!r}, expected {EVAL_SCHEMA!r}")
    if record.get("schema_version") not in EVAL_SCHEMA_VERSIONS:
        raise ValueError(f"eval schema_version={record.get('schema_version')!r}; "
                         f"this reader knows {list(EVAL_SCHEMA_VERSIONS)}")
    missing = [k for k in _EVAL_KEYS if k not in record]
    if missing:
        raise ValueError(f"eval record lacks keys {missing}")
    if not isinstance(record["levels"], list) or not all(isinstance(lv, Mapping) for lv in record["levels"]):
        raise ValueError("eval record 'levels' must be a list of objects, one a level")
    for i, lv in enumerate(record["levels"]):
        missing = [k for k in _LEVEL_KEYS if k not in lv]
        if missing:
            raise ValueError(f"eval record level #{i} lacks keys {missing}")


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
        try:
            check_eval_record(rec.eval)
        except ValueError as err:
            raise ValueError(f"{run_dir / EVAL_FILE}: {err} (rerun `fpstab eval {run_dir}`)") from err
    if (run_dir / SWEEP_RUN_FILE).is_file():
        rec.sweep = read_json_file(run_dir / SWEEP_RUN_FILE)
    if (run_dir / METRICS_FILE).is_file():
        rec.metrics = load_metrics(run_dir)
    if (run_dir / PROBE_FILE).is_file():
        rec.probes = probe_entries(read_json_file(run_dir / PROBE_FILE), run_dir / PROBE_FILE)
    return rec


@dataclass(frozen=True)
class PlannedRun:
    """One run of a grid as the sweep will run it: config is the resolved TrainConfig (a dict)."""

    name: str
    config: dict[str, Any]
    eval_levels: tuple[str, ...]
    probe_levels: tuple[str, ...]

    @property
    def task(self) -> str:
        return str(self.config.get("task"))


@dataclass(frozen=True)
class GridPlan:
    """A grid's runs (grid.json, or `fpstab.grid.Grid.to_dict()`): where it came from and what it runs."""

    source: str
    digest: str
    runs: tuple[PlannedRun, ...]


def grid_plan(record: Any, where: str | Path) -> GridPlan:
    """A grid description -> GridPlan; ValueError naming `where` and the first malformed run."""
    if not isinstance(record, Mapping) or not isinstance(record.get("runs"), list):
        raise ValueError(f"{where} is not a grid description (a JSON object with a 'runs' list, as `fpstab sweep` "
                         "writes into its --out)")
    planned = []
    for i, run in enumerate(record["runs"]):
        ok = (isinstance(run, Mapping) and isinstance(run.get("name"), str) and isinstance(run.get("config"), Mapping)
              and all(isinstance(run.get(k), list) for k in ("eval_levels", "probe_levels")))
        if not ok:
            raise ValueError(f"{where}: run {i} must hold 'name' (text), 'config' (an object), 'eval_levels' and "
                             "'probe_levels' (lists)")
        planned.append(PlannedRun(run["name"], dict(run["config"]), tuple(map(str, run["eval_levels"])),
                                  tuple(map(str, run["probe_levels"]))))
    return GridPlan(str(record.get("source", "")), str(record.get("digest", "")), tuple(planned))


def load_grid_plan(tree: str | Path) -> GridPlan | None:
    """The grid a sweep wrote into `tree` (tree/grid.json), or None when there is none."""
    path = Path(tree) / GRID_FILE
    return grid_plan(read_json_file(path), path) if path.is_file() else None


def last_checkpoint_file(run_dir: str | Path) -> Path:
    """Where a run directory keeps its last training checkpoint (read by fpstab.runs, not here)."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


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
