"""`fpstab probe`: the three stability axes on a fresh or trained core.

    fpstab probe --arch internal_recall --norm outer
    fpstab probe --checkpoint runs/NAME --json probe.json

A fresh core is built from the same configuration `fpstab train` uses
(preset + explicit overrides, seeded), for the task's training level; a
trained core comes from a run directory or checkpoint with its own config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

CORE_KEYS = ("arch", "norm", "recall", "residual", "d_model", "n_heads", "layers_per_loop", "preset")
DTYPES = ("float32", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fpstab.architectures import ARCHS, NORMS, RECALLS, RESIDUALS
    from fpstab.fixedpoint import SOLVERS
    from fpstab.tasks import TASK_NAMES

    from fpstab.config import PRESETS

    core = parser.add_argument_group("the core (a fresh, seeded one; not with --checkpoint)")
    core.add_argument("--arch", choices=ARCHS, help="looped core (default: internal_recall)")
    core.add_argument("--norm", choices=NORMS, help="normalization placement (default: outer)")
    core.add_argument("--recall", choices=RECALLS, help="recall map (default: linear)")
    core.add_argument("--residual", choices=RESIDUALS, help="residual update (default: add)")
    core.add_argument("--d-model", dest="d_model", type=int, help="width (default: the preset's)")
    core.add_argument("--n-heads", dest="n_heads", type=int, help="attention heads (default: the preset's)")
    core.add_argument("--layers-per-loop", dest="layers_per_loop", type=int)
    core.add_argument("--preset", choices=tuple(PRESETS), default=None,
                      help="size preset of `fpstab train` (default: tiny)")
    parser.add_argument("--checkpoint", type=Path, help="a run directory or checkpoint file of `fpstab train`")
    parser.add_argument("--task", choices=TASK_NAMES, help="task whose inputs are probed (default: prefix_sum, "
                        "or the checkpoint's task)")
    parser.add_argument("--level", help="ladder level of the inputs (default: the task's training level)")
    parser.add_argument("--samples", type=int, default=8, help="inputs probed (default: 8)")
    parser.add_argument("--iters", type=int, default=500, help="iterations T of the map (default: 500)")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative residual of a fixed point (default: 1e-4)")
    parser.add_argument("--solver", choices=SOLVERS, default="anderson", help="solver polishing h_T (default: anderson)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fresh core, the inputs and the probe (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="probe precision (default: float32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 on cpu, where the probe's small tensors "
                        "gain nothing from more and contend on a busy machine)")
    parser.add_argument("--json", type=Path, help="write the probe record (JSON, schema fpstab.probe/1) here")


def _check(args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if args.samples < 2:
        raise ValueError(f"--samples {args.samples}: need at least 2 (path independence uses another input's state)")
    if args.iters < 30:
        raise ValueError(f"--iters {args.iters}: need at least 30 (the tail rate uses the last 20 steps)")
    if not args.tol > 0:
        raise ValueError(f"--tol {args.tol}: must be > 0")
    given = [k for k in CORE_KEYS if getattr(args, k) is not None]
    if args.checkpoint is not None and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} cannot be combined with --checkpoint: a trained core keeps its own architecture")


def build(args: argparse.Namespace) -> tuple[Any, Any, str, dict[str, Any]]:
    """(core, task, level, description) for the arguments; the level defaults
    to the one the core was (or would be) trained on."""
    import torch
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task

    from fpstab.config import core_config_for, resolve_config, train_level_for

    if args.checkpoint is not None:
        from fpstab.runs import load_run

        core, core_cfg, train_cfg, task_name = load_run(args.checkpoint, device=args.device)
        if args.task is not None and args.task != task_name:
            raise ValueError(f"--task {args.task}: the checkpoint was trained on {task_name!r}")
        source = str(args.checkpoint)
    else:
        overrides = {k: getattr(args, k) for k in CORE_KEYS if k != "preset"}
        overrides["task"] = args.task or "prefix_sum"
        overrides["seed"] = args.seed
        train_cfg = resolve_config(args.preset or "tiny", overrides)
        task_name = train_cfg.task
        core_cfg = core_config_for(train_cfg, get_task(task_name))
        torch.manual_seed(args.seed)
        core = build_core(core_cfg).to(args.device).eval()
        source = f"fresh core (preset {train_cfg.preset}, seed {args.seed})"
    task = get_task(task_name)
    level = args.level or str(train_level_for(train_cfg, task))
    describe = {
        "source": source,
        "task": task_name,
        "arch": core_cfg.arch,
        "norm": core_cfg.norm,
        "recall": core_cfg.recall if core_cfg.arch in ("standard_recall", "internal_recall") else "none",
        "residual": core_cfg.residual,
        "d_model": core_cfg.d_model,
        "n_heads": core_cfg.n_heads,
        "level": level,
    }
    return core, task, level, describe


def run(args: argparse.Namespace) -> int:
    import torch
    from fpstab.fixedpoint import probe
    from fpstab.reports.probe_table import format_probe

    from fpstab.runs import atomic_write_json

    _check(args)
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    core, task, level, describe = build(args)
    if not getattr(core, "looped", True):
        raise ValueError(f"arch {describe['arch']!r} is a one-pass baseline, not a looped map: there is no "
                         "fixed point to probe; choose a looped arch (no_recall, standard_recall, "
                         "internal_recall, fully_looped)")
    batch = task.make(level, args.samples, seed=args.seed)
    dtype = getattr(torch, args.dtype)
    core = core.to(dtype=dtype)
    x = batch.inputs.to(device=args.device, dtype=dtype)
    report = probe(core, x, batch.targets.to(args.device), iters=args.iters, tol=args.tol, solver=args.solver,
                   seed=args.seed, describe=describe)
    record = report.to_dict()
    print(format_probe(record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, record)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
