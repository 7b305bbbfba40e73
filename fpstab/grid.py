"""Grid files for `fpstab sweep`: parse, cross and check them before anything runs.

A grid file is TOML (read with the standard library's tomllib):

    [base]                      # TrainConfig keys for every run, and "preset"
    preset = "paper"
    epochs = 30

    [axes]                      # key = [values]: the runs are the cross product
    task = ["prefix_sum", "sudoku"]
    arch = ["no_recall", "standard_recall", "internal_recall"]
    norm = ["inner", "outer"]
    seed = [0, 1, 2]

    [[include]]                 # more runs: these keys replace their axes (a value
    arch = "fixed_depth"        # or a list), the other axes are still crossed
    norm = "inner"

    [[exclude]]                 # drop the runs that match every key given
    task = "sudoku"
    arch = "no_recall"

    [task.sudoku]               # for the runs of one task: TrainConfig keys, and
    train_level = "easy+medium" # eval_levels / probe_levels (lists of level names)
    eval_levels = ["easy", "medium", "hard", "extreme"]

    [eval]                      # options of `fpstab eval` for every run
    iters = 500
    samples = 500
    solver = "anderson"         # or "none"
    plots = false               # skip eval's PNGs (the report draws its own)
    compile = false             # eval's torch.compile (leave out for auto: eager)

    [probe]                     # options of `fpstab probe` for every run
    levels = ["train", "hardest"]
    samples = 8

    [runtime]                   # options that change speed or memory, not results
    compile = false             # leave out for auto (fpstab.compile_step)
    activation_checkpointing = false
    loop_diagnostics_every = 10 # fpstab.loop_diagnostics records (0: off)

Eval levels default to the parts of the training level followed by the task
ladder's test levels. One-pass baselines (fixed_depth, single_attn) are not
probed: they have no fixed point. Probe levels name ladder levels, or "train" (the run's
training level) and "hardest" (its last eval level); probes use held-out
inputs (the probe's own data seed).

Every run is checked here: unknown keys (naming the table and the allowed
keys), bad values and impossible combinations (e.g. recall="add" with
arch="no_recall") raise GridError naming the run and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpstab.architectures import ONE_PASS_ARCHS
from fpstab.config import FIELDS, TrainConfig, core_config_for, resolve_config, train_level_for
from fpstab.options import sequence_fields

TABLES = ("base", "axes", "include", "exclude", "task", "eval", "probe", "runtime")
EVAL_KEYS = ("iters", "samples", "batch_size", "halt_tol", "solver", "solver_max_iter", "solver_tol", "plots",
             "compile")
EVAL_SOLVERS = ("anderson", "broyden", "iterate", "none")
PROBE_KEYS = ("levels", "samples", "iters", "tol", "solver", "dtype", "seed", "extra_args")
RUNTIME_KEYS = ("compile", "activation_checkpointing", "log_every", "print_every", "loop_diagnostics_every")
TASK_KEYS = ("eval_levels", "probe_levels")
PROBE_LEVEL_ALIASES = ("train", "hardest")
# Axis keys that always appear in a run's name, in this order; others appear when they vary.
NAME_KEYS = ("task", "arch", "norm")


class GridError(ValueError):
    """A grid file that cannot run as written; the message names the run and key."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: its directory name, TrainConfig overrides and what to run after training.

    train: the run's TrainConfig keys as given (with "preset"), validated;
    config: the resolved TrainConfig as a dict (what `fpstab train` will record);
    eval_levels, probe_levels: ladder level names.
    """

    name: str
    index: int
    train: dict[str, Any]
    config: dict[str, Any]
    eval_levels: tuple[str, ...]
    probe_levels: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """A parsed grid: its runs (in file order) and the shared options of each stage."""

    runs: tuple[RunSpec, ...]
    eval: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the sweep writes it as grid.json)."""
        return {"source": self.source, "digest": self.digest, "eval": self.eval, "probe": self.probe,
                "runtime": self.runtime,
                "runs": [{"name": r.name, "index": r.index, "train": r.train, "config": r.config,
                          "eval_levels": list(r.eval_levels), "probe_levels": list(r.probe_levels)}
                         for r in self.runs]}


def load_grid(path: str | Path) -> Grid:
    """Read, cross and check a grid file; GridError (a ValueError) says what is wrong and where."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    text = path.read_text()
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise GridError(f"{path} is not valid TOML ({err})") from None
    grid = parse_grid(spec, where=str(path))
    return Grid(grid.runs, grid.eval, grid.probe, grid.runtime, str(path), text_digest(text))


def text_digest(text: str) -> str:
    """A grid file's digest as Grid.digest (and grid.json) record it: sha256 of its text."""
    return hashlib.sha256(text.encode()).hexdigest()


def parse_grid(spec: Mapping[str, Any], where: str = "grid") -> Grid:
    """The runs and stage options of a parsed grid (a dict as tomllib returns it)."""
    _check_keys(where, spec, TABLES)
    base = _table(spec, "base", where)
    axes = _table(spec, "axes", where)
    _check_keys(f"{where} [base]", base, (*FIELDS,))
    _check_keys(f"{where} [axes]", axes, (*FIELDS,))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{where} [axes] {key} = {values!r}: an axis is a non-empty list of values")
    combos = _cross(axes, _list_of_tables(spec, "include", where), where)
    combos = _drop_excluded(combos, _list_of_tables(spec, "exclude", where), where)
    per_task = _task_tables(spec, where)
    eval_opts = _eval_options(_table(spec, "eval", where), where)
    probe_opts = _probe_options(_table(spec, "probe", where), where)
    runtime = _runtime_options(_table(spec, "runtime", where), where)
    varying = [k for k in _varying_keys(combos) if k not in NAME_KEYS]
    runs = [_run_spec(i, {**base, **per_task.get(c.get("task", base.get("task", "prefix_sum")), {}), **c},
                      varying, probe_opts["levels"], where)
            for i, c in enumerate(combos)]
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GridError(f"{where}: runs {dupes} are listed twice (an include repeats a crossed run?)")
    if not runs:
        raise GridError(f"{where}: the grid has no runs (empty axes, or everything excluded)")
    return Grid(tuple(runs), eval_opts, probe_opts, runtime)


# ---- crossing -----------------------------------------------------------------------------
def _cross(axes: Mapping[str, list[Any]], includes: Sequence[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    """The axes' cross product, then each include crossed with the axes it does not name."""
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else [{}]
    for n, inc in enumerate(includes):
        _check_keys(f"{where} [[include]] #{n + 1}", inc, (*FIELDS,))
        merged = {**axes, **{k: v if isinstance(v, list) else [v] for k, v in inc.items()}}
        combos += [dict(zip(merged, values)) for values in itertools.product(*merged.values())]
    unique: list[dict[str, Any]] = []
    for c in combos:
        if c not in unique:
            unique.append(c)
    return unique


def _drop_excluded(combos: list[dict[str, Any]], excludes: Sequence[Mapping[str, Any]],
                   where: str) -> list[dict[str, Any]]:
    for n, exc in enumerate(excludes):
        _check_keys(f"{where} [[exclude]] #{n + 1}", exc, (*FIELDS,))
    return [c for c in combos if not any(all(c.get(k) == v for k, v in exc.items()) for exc in excludes)]


def _varying_keys(combos: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for c in combos:
        keys += [k for k in c if k not in keys]
    return [k for k in keys if len({json.dumps(c.get(k)) for c in combos}) > 1]


# ---- one run ------------------------------------------------------------------------------
def _run_spec(index: int, values: dict[str, Any], varying: Sequence[str], probe_levels: Sequence[str],
              where: str) -> RunSpec:
    """Validate one run's TrainConfig (and its core) and name it."""
    from fpstab.tasks import get_task

    eval_levels = values.pop("eval_levels", None)
    run_probe_levels = values.pop("probe_levels", None) or list(probe_levels)
    preset = values.pop("preset", None)
    label = ", ".join(f"{k}={v!r}" for k, v in values.items() if k in NAME_KEYS or k in varying)
    try:
        cfg = resolve_config(preset, values)
        task = get_task(cfg.task)
        train_level = str(train_level_for(cfg, task))
        core_config_for(cfg, task)
        levels = _eval_levels(task, train_level, eval_levels)
        # A one-pass baseline has no fixed point: it is trained and evaluated, not probed.
        probes = [] if cfg.arch in ONE_PASS_ARCHS else _probe_levels(task, train_level, levels, run_probe_levels)
    except ValueError as err:
        raise GridError(f"{where}: run {index} ({label}): {err}{_list_value_hint(values)}") from None
    name = "-".join(_slug(cfg.to_dict()[k]) for k in NAME_KEYS)
    name += "".join(f"-{_short(k)}{_slug(values[k])}" for k in varying if k in values and k != "seed")
    name += f"-s{cfg.seed}"
    return RunSpec(name, index, {"preset": preset, **values}, cfg.to_dict(), tuple(levels), tuple(probes))


def _list_value_hint(values: Mapping[str, Any]) -> str:
    """A hint for a list-valued key (lr_milestones) that arrived as one item: in [axes] and
    [[include]] a list holds alternatives, so `lr_milestones = [12]` is the one run lr_milestones=12."""
    listed = sequence_fields(TrainConfig)
    keys = [k for k, v in values.items() if k in listed and not isinstance(v, (list, tuple))]
    if not keys:
        return ""
    key, item = keys[0], json.dumps(values[keys[0]])
    return (f" ({key} takes a list, and in [axes] and [[include]] a list holds alternatives: for one run with "
            f"{key} [{item}] write {key} = [[{item}]]; [base] and [task.*] take [{item}] as it is)")


def _eval_levels(task: Any, train_level: str, given: Sequence[str] | None) -> list[str]:
    ladder = task.ladder()
    if given is None:
        levels = list(task.level_parts(train_level)) + [lv for lv in ladder.test]
    else:
        if not isinstance(given, list) or not given:
            raise ValueError(f"eval_levels={given!r}: a non-empty list of level names")
        levels = [task.check_level(str(lv)) for lv in given]
    return list(dict.fromkeys(levels))


def _probe_levels(task: Any, train_level: str, eval_levels: Sequence[str], given: Sequence[str]) -> list[str]:
    out = []
    for lv in given:
        lv = str(lv)
        out.append(train_level if lv == "train" else eval_levels[-1] if lv == "hardest" else task.check_level(lv))
    return list(dict.fromkeys(out))


def _slug(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_]+", "_", text).strip("_") or "none"


def _short(key: str) -> str:
    return {"learning_rate": "lr", "d_model": "d", "n_heads": "h", "train_level": "L"}.get(key, key.replace("_", ""))


# ---- stage options ------------------------------------------------------------------------
def _eval_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(f"{where} [eval]", opts, EVAL_KEYS)
    if "solver" in opts and opts["solver"] not in EVAL_SOLVERS:
        raise GridError(f"{where} [eval] solver = {opts['solver']!r}; allowed: {list(EVAL_SOLVERS)}")
    for key in ("iters", "samples", "batch_size", "solver_max_iter"):
        if key in opts and (isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1):
            raise GridError(f"{where} [eval] {key} = {opts[key]!r}; allowed: an int >= 1")
    for key in ("plots", "compile"):
        if key in opts and not isinstance(opts[key], bool):
            raise GridError(f"{where} [eval] {key} = {opts[key]!r}; allowed: true or false")
    for key in ("halt_tol", "solver_tol"):
        if key in opts and not (isinstance(opts[key], (int, float)) and opts[key] > 0):
            raise GridError(f"{where} [eval] {key} = {opts[key]!r}; allowed: a number > 0")
    return dict(opts)


def _probe_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(f"{where} [probe]", opts, PROBE_KEYS)
    levels = opts.get("levels", list(PROBE_LEVEL_ALIASES))
    if not isinstance(levels, list):
        raise GridError(f"{where} [probe] levels = {levels!r}: a list of level names, 'train' or 'hardest'")
    extra = opts.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise GridError(f"{where} [probe] extra_args = {extra!r}: a list of strings (more `fpstab probe` flags)")
    return {**opts, "levels": [str(lv) for lv in levels], "extra_args": extra}


def _task_tables(spec: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    from fpstab.tasks import TASK_NAMES

    tables = _table(spec, "task", where)
    _check_keys(f"{where} [task]", tables, TASK_NAMES)
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise GridError(f"{where} [task.{name}] must be a table")
        _check_keys(f"{where} [task.{name}]", table, (*FIELDS, *TASK_KEYS))
        if "task" in table:
            raise GridError(f"{where} [task.{name}] cannot set 'task'")
    return tables


# ---- helpers ------------------------------------------------------------------------------
def _table(spec: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = spec.get(name, {})
    if not isinstance(value, dict):
        raise GridError(f"{where}: [{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def _list_of_tables(spec: Mapping[str, Any], name: str, where: str) -> list[dict[str, Any]]:
    value = spec.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise GridError(f"{where}: [[{name}]] must be an array of tables")
    return value


def _runtime_options(runtime: dict[str, Any], where: str) -> dict[str, Any]:
    """[runtime] checked: known keys, true / false for the switches (compile absent: each run's auto choice)."""
    _check_keys(f"{where} [runtime]", runtime, RUNTIME_KEYS)
    for key in ("compile", "activation_checkpointing"):
        if key in runtime and not isinstance(runtime[key], bool):
            raise GridError(f"{where} [runtime] {key} = {runtime[key]!r}: must be true or false"
                            + (" (leave it out for the run's auto choice)" if key == "compile" else ""))
    return runtime


def _check_keys(where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
