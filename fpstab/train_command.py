"""`fpstab train`: train a looped core on a task, the paper's protocol by default.

    fpstab train --task prefix_sum --arch internal_recall --norm outer --preset tiny --out runs/NAME
    fpstab train --out runs/NAME --resume
    torchrun --nproc_per_node N -m fpstab.cli train ...   # data parallel (fpstab.distributed)

Every TrainConfig key is a flag (defaults <- --preset <- --config FILE.json <-
flags), and so is every runtime option (fpstab.config.Runtime). The arguments
are checked before torch is imported, so bad input is refused at once, in one
line (exit code 2).

--resume continues the run in --out: its config.json fixes the config (flags
may only repeat it) and the runtime options it recorded (device, threads,
compile, ...) are reused unless given again.

Exit codes: 0 completed, 3 diverged (non-finite loss or gradient; the last
finite checkpoint is kept), 130 interrupted by Ctrl-C (a checkpoint is written
at the next step boundary), 137 stopped by --stop-after-steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from fpstab.config import (
    FIELDS,
    PERSISTED_RUNTIME,
    PRESETS,
    Runtime,
    TrainConfig,
    config_diff,
    preset_note,
    resolve_config,
)
from fpstab.devices import default_device
from fpstab.distributed import process_group, ranks_from_env
from fpstab.hessian_options import HESSIAN_KEYS, HessianOptions
from fpstab.options import add_options
from fpstab.reports.run_files import CONFIG_FILE
from fpstab.reports.run_files import read_json_file as read_json

EXIT_COMPLETED, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_KILLED = 0, 3, 130, 137
RUNTIME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Runtime))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab train`: the run's files, the runtime options and every TrainConfig key."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, metavar="PRESET",
                        help=f"start from a preset: {' | '.join(sorted(PRESETS))} (paper: the paper's protocol; "
                             "tiny: a CPU model) (default: none, the TrainConfig defaults: the paper's)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="JSON object of TrainConfig keys, applied over the preset, under the flags")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="run directory (default: runs/TASK-ARCH-NORM-sSEED)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with its config and its recorded "
                             "runtime options (flags given override those)")
    add_options(parser.add_argument_group("runtime (speed and output, not results; recorded in config.json and "
                                          "reused by --resume unless given again)"), Runtime, exclude=HESSIAN_KEYS)
    add_options(parser.add_argument_group("Hessian of the training loss (fpstab.hessian_probe; runtime options, "
                                          "recorded and reused like those)"), HessianOptions)
    add_options(parser.add_argument_group("training config (TrainConfig keys; default: the preset's, else below)"),
                TrainConfig, exclude=("preset",), note=preset_note)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve the TrainConfig: defaults <- preset <- --config file <- flags.

    With --resume the run's stored config is used, and any preset, file or
    flag given must agree with it (else ValueError naming the keys).
    """
    explicit: dict[str, Any] = {}
    if args.config is not None:
        explicit.update(_config_file(args.config))
    explicit.update({k: getattr(args, k) for k in FIELDS if k != "preset" and getattr(args, k, None) is not None})
    if not args.resume:
        return resolve_config(args.preset, explicit)
    stored = TrainConfig.from_dict(_stored_record(args.out)["train"])
    asked = {**explicit, **({"preset": args.preset} if args.preset else {})}
    diff = {k: (getattr(stored, k), v) for k, v in asked.items() if config_diff({k: getattr(stored, k)}, {k: v})}
    if diff:
        detail = ", ".join(f"{k}: {a!r} in the run vs {b!r} given" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume {args.out} with a different config ({detail}); "
                         "drop those flags or start a new run with another --out")
    return stored


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    """The runtime options: defaults <- those the run recorded (with --resume) <- flags.

    A device neither given nor recorded is left None, for `run` to pick once torch is loaded.
    """
    values: dict[str, Any] = {"device": None}
    if args.resume:
        recorded = _stored_record(args.out).get("runtime", {})
        values.update({k: recorded[k] for k in PERSISTED_RUNTIME if k in recorded})
    values.update({k: getattr(args, k) for k in RUNTIME_FIELDS if getattr(args, k, None) is not None})
    try:
        return Runtime(**values)
    except ValueError as err:
        if not args.resume:
            raise
        raise ValueError(f"{err} (given, or recorded in {args.out / CONFIG_FILE}'s runtime)") from None


def check_paths(args: argparse.Namespace) -> None:
    """--out must be a directory, or not exist; --resume needs a run there."""
    if args.out is not None:
        existing = next(p for p in (args.out, *args.out.parents) if p.exists())
        if not existing.is_dir():
            where = "" if existing == args.out else f": {existing}"
            raise ValueError(f"--out {args.out}{where} exists and is not a directory; give a run directory")
    if not args.resume:
        return
    if args.out is None:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    if not args.out.is_dir():
        raise ValueError(f"--resume: run directory {args.out} does not exist; "
                         "check the path, or start a new run without --resume")
    if not (args.out / CONFIG_FILE).is_file():
        raise ValueError(f"--resume: {args.out} holds no run ({args.out / CONFIG_FILE} is missing); "
                         "start a new run there without --resume")


def _config_file(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of TrainConfig keys, got a JSON {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {unknown}; allowed: the TrainConfig keys {sorted(FIELDS)}")
    return data


def _stored_record(out: Path) -> dict[str, Any]:
    record = read_json(out / CONFIG_FILE)
    if not isinstance(record, dict) or not isinstance(record.get("train"), dict):
        raise ValueError(f"{out / CONFIG_FILE} is not a run record (no \"train\" object of TrainConfig keys)")
    return record


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab train`. Returns the exit code (see the module docstring)."""
    check_paths(args)
    ranks = ranks_from_env()
    cfg = config_from_args(args)
    runtime = runtime_from_args(args)
    ranks.check_batch(cfg.batch_size)
    out = args.out or Path("runs") / f"{cfg.task}-{cfg.arch}-{cfg.norm}-s{cfg.seed}"

    from fpstab.train import RunKilled, train  # torch loads only now: everything above is checked without it

    runtime = dataclasses.replace(runtime, device=runtime.device or default_device())
    try:
        with process_group(ranks, runtime.device.split(":")[0]):
            result = train(cfg, out, runtime, resume=args.resume, ranks=ranks)
    except RunKilled as err:
        print(f"fpstab train: {err}", file=sys.stderr)
        return EXIT_KILLED
    return {"completed": EXIT_COMPLETED, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}[result.state]
