"""Run directories, atomic files and checkpoints.

A run directory written by `fpstab train` holds:

    config.json          resolved TrainConfig, CoreConfig, task, seeds, runtime
    status.json          state: running | completed | diverged | interrupted
    metrics.jsonl        one JSON object per line (kind: train | epoch | resume | diverged | done,
                         and shift_check | shift for a SHIFT run)
    shift.json           a SHIFT run's criterion, stage, switch and checks (fpstab.shift)
    checkpoints/last.pt  the latest consistent training state (atomic)
    eval.json            written by `fpstab eval`
    plots/               written by `fpstab eval` (reports.plots)

Every file is written atomically (temporary file in the same folder, fsync,
os.replace), so a kill leaves either the old or the new version, never half.
Checkpoints hold only tensors and plain Python values and load with
`torch.load(path, weights_only=True)`.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

# The record files' names and schemas belong to reports (which reads them); a checkpoint's contents are torch's, here.
from fpstab.reports.run_files import (  # noqa: F401  (re-exported for the writers in fpstab)
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONFIG_SCHEMA,
    CONFIG_VERSION,
    EVAL_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    STATUS_FILE,
)
from fpstab.reports.run_files import last_checkpoint_file
from fpstab.reports.run_files import load_metrics as read_metrics  # noqa: F401
from fpstab.reports.run_files import read_json_file as read_json
from fpstab.tasks.cache import atomic_write_bytes  # the one atomic writer (fsyncs the file and its folder)

CHECKPOINT_FORMAT = "fpstab.checkpoint"
CHECKPOINT_VERSION = 1
STATES: tuple[str, ...] = ("running", "completed", "diverged", "interrupted")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not ours, or from another config."""


# ---- atomic files ---------------------------------------------------------
def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """JSON (indent 2, keys in insertion order) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


# ---- checkpoints ----------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors and plain Python values only)."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; a bad file raises CheckpointError.

    Raises FileNotFoundError when `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "delete it to start the run over, or point to another checkpoint"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an fpstab checkpoint (no format={CHECKPOINT_FORMAT!r} entry)")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version={ckpt.get('format_version')!r}; "
            f"this fpstab reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("config", "core_config", "task", "model", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks entries {missing}")
    return ckpt


def last_checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return last_checkpoint_file(run_dir)


def checkpoint_path_of(path: str | os.PathLike[str]) -> Path:
    """A run directory -> its last checkpoint; a file path -> itself."""
    path = Path(path)
    if path.is_dir():
        ckpt = last_checkpoint_path(path)
        if not ckpt.is_file():
            raise FileNotFoundError(f"run directory {path} has no checkpoint ({ckpt} is missing)")
        return ckpt
    if not path.exists():
        raise FileNotFoundError(f"{path} is neither a run directory nor a checkpoint file")
    return path


def run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run directory a path (directory or checkpoint inside it) belongs to."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.parent.name == CHECKPOINT_DIR:
        return path.parent.parent
    return path.parent


# ---- status and metrics ---------------------------------------------------
def write_status(run_dir: str | os.PathLike[str], state: str, **fields: Any) -> None:
    """status.json: {"state": one of STATES, ...fields}."""
    if state not in STATES:
        raise ValueError(f"state={state!r} is not one of {list(STATES)}")
    atomic_write_json(Path(run_dir) / STATUS_FILE, {"state": state, **fields})


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(Path(run_dir) / STATUS_FILE)


def run_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """{"state", "step", "reason"} from status.json; state "unknown" where the run has none."""
    status = read_status(run_dir) if (Path(run_dir) / STATUS_FILE).is_file() else {}
    return {"state": status.get("state", "unknown"), "step": status.get("step"), "reason": status.get("reason")}


def run_state_note(state: Mapping[str, Any], checkpoint_step: int, doing: str) -> str | None:
    """What a reader of a diverged or unfinished run's results must know: which checkpoint
    `doing` ("evaluating", "probing") used. None for a completed run."""
    if state["state"] == "diverged":
        return (f"this run diverged at step {state['step']} ({state['reason']}); {doing} its last "
                f"saved checkpoint, step {checkpoint_step}")
    if state["state"] in ("running", "interrupted"):
        return f"this run's training is {state['state']} (step {state['step']}); {doing} its checkpoint at step {checkpoint_step}"
    return None


class MetricsLog:
    """Append-only JSON-lines file, flushed after every record.

    On resume, `truncate(nbytes)` drops records written after the checkpoint
    being resumed, so the log reads as if the run had never been killed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record; non-finite floats are written as the strings "nan", "inf", "-inf"
        (strict JSON has no NaN)."""
        clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, nbytes: int) -> None:
        with self.path.open("r+b") as f:
            f.truncate(nbytes)


# ---- loading a trained core -------------------------------------------------
def check_task_shapes(core_config: Any, task_name: str, ckpt_path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint whose core does not read this fpstab's encoding of its task.

    A task's encoding can change between versions (chess went from 12 input
    planes and 2 classes to 15 planes and 6 classes); such a core would fail
    later with a bare shape error, or worse, read tensors it was not trained on.
    Raises CheckpointError naming both shapes and what to do.
    """
    from fpstab.tasks import TASK_NAMES, get_task

    if task_name not in TASK_NAMES:
        raise CheckpointError(f"checkpoint {ckpt_path} was trained on task {task_name!r}, which this fpstab "
                              f"does not know (known: {', '.join(TASK_NAMES)})")
    task = get_task(task_name)
    theirs = (core_config.in_dim, core_config.out_dim)
    ours = (task.in_dim, task.out_dim)
    if theirs != ours:
        encoding = getattr(task, "encoding_version", None)
        now = f" (encoding v{encoding})" if encoding is not None else ""
        raise CheckpointError(
            f"checkpoint {ckpt_path} holds a core for an older {task_name} encoding: it reads "
            f"in_dim={theirs[0]} and predicts out_dim={theirs[1]} classes, while this fpstab encodes "
            f"{task_name} as in_dim={ours[0]}, out_dim={ours[1]}{now}; retrain the run with this version, "
            "or evaluate it with the fpstab version that trained it")


class TrainedRun(NamedTuple):
    """A trained core as `load_trained` returns it: the core in eval mode with the checkpoint's
    weights, its architectures.CoreConfig, the fpstab.config.TrainConfig it was trained with, the
    task name, the optimizer step the checkpoint was written at, and the checkpoint file."""

    core: Any
    core_config: Any
    train_config: Any
    task: str
    step: int
    checkpoint: Path


def load_run(path: str | os.PathLike[str], device: str | torch.device = "cpu",
             checkpoint: str | os.PathLike[str] | None = None) -> tuple[Any, Any, Any, str]:
    """(core, core_config, train_config, task_name) of a trained run: `load_trained` without the step."""
    run = load_trained(path, device=device, checkpoint=checkpoint)
    return run.core, run.core_config, run.train_config, run.task


def load_trained(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 checkpoint: str | os.PathLike[str] | None = None) -> TrainedRun:
    """Load a trained core from a run directory or a checkpoint file (the file is read once).

    Args:
        path: a run directory (its checkpoints/last.pt is used) or a checkpoint file.
        device: where to put the core.
        checkpoint: an explicit checkpoint file, overriding the one `path` implies.
    Returns:
        TrainedRun(core, core_config, train_config, task, step, checkpoint).
    Raises:
        FileNotFoundError: no such run or checkpoint.
        CheckpointError (a ValueError): unreadable or incompatible checkpoint.
    """
    from fpstab.architectures import CoreConfig, build_core
    from fpstab.config import TrainConfig

    ckpt_path = Path(checkpoint) if checkpoint is not None else checkpoint_path_of(path)
    ckpt = load_checkpoint(ckpt_path)
    try:
        core_config = CoreConfig.from_dict(ckpt["core_config"])
        train_config = TrainConfig.from_dict(ckpt["config"])
    except ValueError as err:
        raise CheckpointError(f"checkpoint {ckpt_path} holds a config this fpstab cannot read: {err}") from err
    check_task_shapes(core_config, str(ckpt["task"]), ckpt_path)
    core = build_core(core_config)
    try:
        core.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match its core config: {err}") from err
    core.to(device).eval()
    return TrainedRun(core, core_config, train_config, str(ckpt["task"]), int(ckpt["step"]), ckpt_path)
