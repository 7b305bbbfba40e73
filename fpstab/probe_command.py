"""`fpstab probe`: the stability axes on a fresh or trained core.

    fpstab probe --arch internal_recall --norm outer
    fpstab probe --checkpoint runs/NAME --level 512 --json probe.json

A fresh core is built from the same configuration `fpstab train` uses
(preset + explicit overrides, seeded); a trained core comes from a run
directory or checkpoint with its own config. The inputs are probed at the
core's training level and at every `--level` given. A trained core is probed
on held-out inputs: data seed = the run's data_seed + 3 (training uses
data_seed, validation + 1, evaluation + 2); a fresh core on data seed
`--seed`. Every level's probe goes into one record.

The arguments are checked before torch loads (bad input is refused in a
fraction of a second, and a --json path that cannot be written before the
probe runs). A run that diverged is probed as it is: the record names its
state and the checkpoint's step, and weights holding NaN or inf give
non-finite figures and failing verdicts, not a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fpstab.devices import DEVICE_FORMS, check_device_name, resolve_device
from fpstab.hessian_options import HESSIAN_KEYS, HessianOptions, hessian_options_of
from fpstab.options import add_options
from fpstab.outputs import check_output_file

CORE_KEYS = ("arch", "norm", "recall", "residual", "d_model", "n_heads", "layers_per_loop", "preset")
DTYPES = ("float32", "float64")
HELD_OUT_OFFSET = 3  # data seed offset of probe inputs from a run's data_seed (train 0, val 1, eval 2)
# ProbeSettings fields set from the command line (flag = --field-name).
SETTING_FLAGS = ("iters", "tol", "solver", "solver_iters", "fd_eps", "grad_steps", "krylov_steps",
                 "krylov_restarts", "gmres_steps", "gmres_restarts", "inverse_steps", "always_solve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Plain-Python names only (no torch): the command line is checked before torch loads.
    from fpstab.architectures import ARCHS, NORMS, RECALLS, RESIDUALS
    from fpstab.fixedpoint import SOLVERS, ProbeSettings
    from fpstab.tasks import TASK_NAMES

    from fpstab.config import PRESETS

    d = ProbeSettings()
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
    parser.add_argument("--level", action="append", default=[],
                        help="also probe inputs of this ladder level (repeatable); the training level is always probed")
    parser.add_argument("--samples", type=int, default=8, help="inputs probed per level (default: 8)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the fresh core, its inputs and the probe's directions (default: 0)")
    parser.add_argument("--device", default="cpu", help=f"torch device: {DEVICE_FORMS} (default: cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="probe precision (default: float32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 on cpu, where the probe's small tensors "
                        "gain nothing from more and contend on a busy machine)")
    parser.add_argument("--json", type=Path, help="write the probe record (JSON, schema fpstab.probe/2) to this "
                        "file; its folder must exist")
    hessian = parser.add_argument_group("Hessian of the training loss (at the training level; fpstab.hessian_probe)")
    hessian.add_argument("--hessian", action="store_true",
                         help="also read the training loss's Hessian: extreme eigenvalues, SLQ density, valley/river "
                         "split with kappa, matrix entropy (record key \"hessian\", schema fpstab.hessian/1); a "
                         "one-pass core gets this alone")
    add_options(hessian, HessianOptions, exclude=("hessian_every",))
    knobs = parser.add_argument_group("probe settings (cost against convergence)")
    knobs.add_argument("--iters", type=int, default=d.iters, help=f"iterations T of the loop (default: {d.iters})")
    knobs.add_argument("--tol", type=float, default=d.tol, help=f"relative residual of a fixed point (default: {d.tol})")
    knobs.add_argument("--solver", choices=SOLVERS, default=d.solver, help=f"solver polishing h_T (default: {d.solver})")
    knobs.add_argument("--solver-iters", type=int, default=d.solver_iters, help=f"(default: {d.solver_iters})")
    knobs.add_argument("--fd-eps", type=float, default=None,
                       help="finite-difference step in e-space (default: 1e-2 float32, 1e-4 float64)")
    knobs.add_argument("--grad-steps", type=int, default=d.grad_steps,
                       help=f"k, unrolled steps for gradient growth and the unrolled gradient (default: {d.grad_steps})")
    knobs.add_argument("--krylov-steps", type=int, default=d.krylov_steps,
                       help=f"Krylov dimension for rho, sigma_max, |J| (default: {d.krylov_steps})")
    knobs.add_argument("--krylov-restarts", type=int, default=d.krylov_restarts, help=f"(default: {d.krylov_restarts})")
    knobs.add_argument("--gmres-steps", type=int, default=d.gmres_steps,
                       help=f"GMRES Krylov dimension (default: {d.gmres_steps})")
    knobs.add_argument("--gmres-restarts", type=int, default=d.gmres_restarts, help=f"(default: {d.gmres_restarts})")
    knobs.add_argument("--inverse-steps", type=int, default=d.inverse_steps,
                       help=f"Golub-Kahan steps on (I - J)^-1 for sigma_min (default: {d.inverse_steps})")
    knobs.add_argument("--always-solve", dest="always_solve", action="store_true",
                       help="run the fixed-point solves (sigma_min of I - J, the IFT and implicit-gradient GMRES, "
                       "finite differences) even when too few samples reach an attracting fixed point; by default "
                       "they are left out there, since the verdict is already decided and on a loop that does not "
                       "converge they run to their limits")


def settings_from(args: argparse.Namespace) -> Any:
    """ProbeSettings from the flags; its errors name the flag, not the field."""
    from fpstab.fixedpoint import ProbeSettings

    with flags_named(SETTING_FLAGS + ("seed",)):
        return ProbeSettings(**{k: getattr(args, k) for k in SETTING_FLAGS}, seed=args.seed)


@contextlib.contextmanager
def flags_named(keys: tuple[str, ...]) -> Iterator[None]:
    """Re-raise a ValueError whose message says `key=value` (or `Class.key=value`) for one of `keys`
    as `--key-name value`."""
    try:
        yield
    except ValueError as err:
        message = re.sub(r"\b(?:[A-Za-z]+\.)?([a-z_]+)=", lambda m: f"--{m.group(1).replace('_', '-')} "
                         if m.group(1) in keys else m.group(0), str(err))
        raise ValueError(message) from None


def check_arguments(args: argparse.Namespace) -> Any:
    """Every check that needs no torch; the ProbeSettings of the flags. ValueError (or
    FileNotFoundError) naming the option and what is allowed."""
    check_device_name(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if args.samples < 2:
        raise ValueError(f"--samples {args.samples}: need at least 2 (path independence uses another input's state)")
    given = [k for k in CORE_KEYS if getattr(args, k) is not None]
    if args.checkpoint is not None and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} cannot be combined with --checkpoint: a trained core keeps its own architecture")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such run directory or checkpoint file")
    if args.checkpoint is None:
        fresh_config(args)
    if args.json is not None:
        check_output_file(args.json, "--json")
    with flags_named(HESSIAN_KEYS):
        hessian_options_of(args)
    return settings_from(args)


def fresh_config(args: argparse.Namespace) -> Any:
    """The TrainConfig a fresh core is built from: the preset (default tiny) and the core flags."""
    from fpstab.config import resolve_config

    overrides = {k: getattr(args, k) for k in CORE_KEYS if k != "preset"}
    overrides["task"] = args.task or "prefix_sum"
    overrides["seed"] = args.seed
    with flags_named(CORE_KEYS + ("task", "seed")):
        return resolve_config(args.preset or "tiny", overrides)


def build(args: argparse.Namespace, device: Any) -> tuple[Any, Any, str, int, dict[str, Any], Any]:
    """(core, task, training level, data seed of the probe's inputs, description, TrainConfig)."""
    import torch
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task

    from fpstab.config import core_config_for

    if args.checkpoint is not None:
        core, core_cfg, train_cfg, task_name, run_fields = trained(args, device)
        source, data_seed = str(args.checkpoint), train_cfg.data_seed + HELD_OUT_OFFSET
    else:
        train_cfg = fresh_config(args)
        task_name = train_cfg.task
        core_cfg = core_config_for(train_cfg, get_task(task_name))
        torch.manual_seed(args.seed)
        core = build_core(core_cfg).to(device).eval()
        source, data_seed, run_fields = f"fresh core (preset {train_cfg.preset}, seed {args.seed})", args.seed, {}
    task = get_task(task_name)
    describe = {
        "source": source,
        "task": task_name,
        "arch": core_cfg.arch,
        "norm": core_cfg.norm,
        "recall": core_cfg.recall if core_cfg.arch in ("standard_recall", "internal_recall") else "none",
        "residual": core_cfg.residual,
        "d_model": core_cfg.d_model,
        "n_heads": core_cfg.n_heads,
        **run_fields,
    }
    # The training level as the run stored it (a composite such as "easy+medium" included): task.make checks it.
    level = train_cfg.train_level if train_cfg.train_level is not None else task.ladder().train
    return core, task, str(level), data_seed, describe, train_cfg


def trained(args: argparse.Namespace, device: Any) -> tuple[Any, Any, Any, str, dict[str, Any]]:
    """(core, core config, train config, task, what the record says of the run) from --checkpoint.

    A diverged or unfinished run is probed as it is, with a note on stderr; its
    state, the checkpoint's step and whether every weight is finite go into the record.
    """
    from fpstab.runs import checkpoint_path_of, load_trained, run_dir_of, run_state, run_state_note
    from fpstab.shift import shift_note

    path = checkpoint_path_of(args.checkpoint)
    core, core_cfg, train_cfg, task_name, step, _ = load_trained(args.checkpoint, device=device, checkpoint=path)
    if args.task is not None and args.task != task_name:
        raise ValueError(f"--task {args.task}: the checkpoint was trained on {task_name!r}")
    state = run_state(run_dir_of(args.checkpoint))
    bad = nonfinite_tensors(core)
    notes = [run_state_note(state, step, "probing"), shift_note(run_dir_of(args.checkpoint), "probing")]
    if bad:
        notes.append(f"{len(bad)} weight tensor(s) of this checkpoint hold NaN or inf ({', '.join(bad[:3])}"
                     f"{', ...' if len(bad) > 3 else ''}): the probe reports the map as it is")
    for note in filter(None, notes):
        print(f"[probe] note: {note}", file=sys.stderr)
    fields = {"checkpoint_step": step, "run_state": state["state"], "weights_finite": not bad}
    return core, core_cfg, train_cfg, task_name, fields


def nonfinite_tensors(core: Any) -> list[str]:
    """Names of the core's floating-point parameters and buffers holding NaN or inf."""
    import torch

    return [name for name, t in core.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def levels_to_probe(train_level: str, extra: list[str], task: Any) -> list[str]:
    """The training level first, then each --level once, each checked against the ladder."""
    levels = [train_level]
    for level in extra:
        task.check_level(level)
        if level not in levels:
            levels.append(level)
    return levels


def run(args: argparse.Namespace) -> int:
    settings = check_arguments(args)
    import torch
    from fpstab.fixedpoint import probe, probe_record
    from fpstab.reports.probe_table import format_probe_record

    from fpstab.runs import atomic_write_json

    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    core, task, train_level, data_seed, describe, train_cfg = build(args, device)
    looped = bool(getattr(core, "looped", True))
    if not looped and not args.hessian:
        raise ValueError(f"arch {describe['arch']!r} is a one-pass baseline, not a looped map: there is no "
                         "fixed point to probe; choose a looped arch (no_recall, standard_recall, "
                         "internal_recall, fully_looped), or read its loss's Hessian alone with --hessian")
    dtype = getattr(torch, args.dtype)
    core = core.to(dtype=dtype)
    levels = levels_to_probe(train_level, args.level, task)
    reports = []
    for level in levels if looped else []:
        batch = task.make(level, args.samples, seed=data_seed)
        inputs = {"task": describe["task"], "level": level, "training_level": level == train_level,
                  "data_seed": data_seed, "held_out": args.checkpoint is not None}
        x = batch.inputs.to(device=device, dtype=dtype)
        reports.append(probe(core, x, batch.targets.to(device), settings=settings, describe=describe,
                             inputs=inputs))
    record = probe_record(reports)
    if reports:
        print(format_probe_record(record))
    if args.hessian:
        record["hessian"] = probe_hessian(args, core, task, train_cfg, train_level, data_seed, describe, looped)
    if args.json is not None:
        atomic_write_json(args.json, record)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def probe_hessian(args: argparse.Namespace, core: Any, task: Any, train_cfg: Any, level: str, data_seed: int,
                  describe: dict[str, Any], looped: bool) -> dict[str, Any]:
    """The Hessian record of the training loss on --hessian-samples inputs of the training level; prints its table."""
    from fpstab.hessian_probe import hessian_record
    from fpstab.reports.hessian_table import format_hessian_record

    opts = hessian_options_of(args)
    param = next(core.parameters())
    batch = task.make(level, opts.hessian_samples, seed=data_seed)
    x = batch.inputs.to(device=param.device, dtype=param.dtype)
    rec = hessian_record(core, task, train_cfg, x, batch.targets.to(param.device), opts, looped)
    rec = {**rec, "map": describe, "inputs": {"task": describe["task"], "level": level, "data_seed": data_seed,
                                              "held_out": args.checkpoint is not None}}
    print(format_hessian_record(rec))
    return rec
