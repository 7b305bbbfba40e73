"""Training configuration: the validated dataclasses of a run and the presets.

`TrainConfig` holds everything that determines a training run's numbers: the
task, the core's shape, the data, the optimizer and schedule, the loss and the
seeds. `Runtime` holds the options that change a run's speed or output, not
its numbers (device, threads, torch.compile, logging cadence); the run records
them in its config.json and `--resume` reuses them.

Each field's metadata (fpstab.options.Option) says what it is and what is
allowed: it validates the field on construction (ValueError naming the key and
what is allowed) and makes its `fpstab train` flag. The core's keys (arch,
norm, recall, ...) are CoreConfig's: their defaults and allowed values come
from `fpstab.architectures.config`, and CoreConfig validates them. Plain
Python: importing this module does not import torch.

Presets (`PRESETS`) are partial dicts applied over the dataclass defaults;
explicit overrides win over the preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# architectures.config and tasks' names are plain Python: nothing here imports torch.
from fpstab.architectures.config import CHOICES, KEY_HELP, CoreConfig
from fpstab.devices import DEVICE_FORMS, check_device_name
from fpstab.hessian_options import HESSIAN_KEYS, HessianOptions
from fpstab.options import check_choice, check_options, option
from fpstab.tasks import TASK_NAMES

# Learning rate of the `paper` preset per task: the middle of the paper's sweep
# grid ({1e-4, 3e-4, 1e-3} for chess and prefix sums,
# {3e-4, 1e-3, 3e-3} for sudoku).
PAPER_LR: dict[str, float] = {"prefix_sum": 3e-4, "chess": 3e-4, "sudoku": 1e-3}
PAPER_LR_GRID: dict[str, tuple[float, ...]] = {
    "prefix_sum": (1e-4, 3e-4, 1e-3),
    "chess": (1e-4, 3e-4, 1e-3),
    "sudoku": (3e-4, 1e-3, 3e-3),
}

GRAD_MODES: tuple[str, ...] = ("progressive", "unrolled", "implicit", "phantom")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
SOLVERS: tuple[str, ...] = ("anderson", "broyden", "iterate")

# Partial configs; a value that is a dict keyed by task name is resolved per task.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's protocol: d 256, 8 heads, batch 500, 100
    # epochs on 40k samples, warm-up 10 epochs, x0.1 at epochs 60 and 100.
    "paper": {
        "d_model": 256,
        "n_heads": 8,
        "batch_size": 500,
        "epochs": 100,
        "n_train": 40_000,
        "n_val": 1_000,
        "lr": PAPER_LR,
        "warmup_epochs": 10.0,
        "lr_milestones": (60, 100),
        "train_iters": 30,
    },
    # A CPU-sized model that learns 32-bit prefix sums in minutes on 2 cores
    # (measured: results/prefix_tiny/README.md). Found by a small search on
    # standard_recall+outer, seed 0: d 32 with lr 1e-3..3e-3 stayed at chance
    # (ln 2 per token) for 1000+ steps for some seeds; at d 64, lr 5e-4
    # learned and then fell back to chance, lr 3e-4 and 2e-4 reached 97.8 %
    # validation exact match in 5 epochs.
    "tiny": {
        "d_model": 64,
        "n_heads": 4,
        "batch_size": 32,
        "epochs": 5,
        "n_train": 8_000,
        "n_val": 500,
        "lr": 3e-4,
        "warmup_epochs": 2.0,  # epoch 0 at 1 - e^-0.5 = 39 % of the lr, then the full lr
        "lr_milestones": (4,),
        "train_iters": 30,
    },
}

# The core's keys: TrainConfig names them as CoreConfig does and takes their defaults and allowed
# values from there; CoreConfig validates them (TrainConfig.__post_init__).
CORE_KEYS: tuple[str, ...] = ("arch", "norm", "recall", "residual", "d_model", "n_heads", "layers_per_loop",
                              "depth", "init_state")
_CORE_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(CoreConfig)}
# Training's default core is the paper's proposal (internal recall); CoreConfig's own default
# arch is the standard-recall baseline.
TRAIN_ARCH = "internal_recall"


def _core(name: str, default: Any = None) -> Any:
    """A TrainConfig field for CoreConfig key `name`: CoreConfig's help, default and allowed values
    (its ints are >= 1); CoreConfig checks it."""
    value = _CORE_FIELDS[name].default if default is None else default
    low = 1 if isinstance(value, int) else None
    return field(default=value, metadata=option(KEY_HELP[name], choices=CHOICES.get(name), low=low,
                                                checked_by="CoreConfig"))


def _window(text: str) -> int | str:
    """--attn-window: 'task', 'full' or an int."""
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class TrainConfig:
    """Everything that fixes a training run's numbers. Defaults: the paper.

    Each field's metadata (fpstab.options.Option) says what it is and what is
    allowed; `fpstab train` makes one flag per field from it.
    Core shape: the CoreConfig keys of CORE_KEYS (checked by CoreConfig),
        and attn_window: "task" (the task's default: 5 for prefix sums, full
        for grids), "full", or an odd window size.
    Data: task; train_level (None: the ladder's training level; several
        levels joined by '+', e.g. "easy+medium", train on an even mix);
        data_seed seeds the training set (val uses data_seed + 1, `fpstab
        eval` data_seed + 2), so runs with different `seed` see the same data.
    Optimization (the paper's protocol): AdamW(lr, betas, eps, weight_decay) with no
        decay on biases and norm weights; at epoch e the lr is lr * warm-up *
        lr_decay ** (number of lr_milestones <= e), warm-up = 1 - exp(-(e + 1)
        / warmup_epochs) while e + 1 < warmup_epochs, else 1 (the official
        code's exponential warm-up, stepped per epoch: fpstab.protocol.lr_at).
    Loss: grad_mode "progressive" uses the progressive loss with weight alpha
        (fpstab.protocol.progressive_depths); "unrolled" runs train_iters
        iterations from h0, all with gradients, with the loss on the last
        (Fu et al. 2026's END loss; alpha must stay 1); "implicit" solves to a fixed
        point and backpropagates by the implicit function theorem; "phantom"
        solves likewise, then backpropagates through phantom_steps damped steps.
    """

    preset: str | None = field(default=None, metadata=option(
        "preset the config started from (paper: the paper's protocol; tiny: a CPU model)",
        choices=(None, *PRESETS)))
    task: str = field(default="prefix_sum", metadata=option("task to train on", choices=TASK_NAMES))
    # core
    arch: str = _core("arch", default=TRAIN_ARCH)
    norm: str = _core("norm")
    recall: str = _core("recall")
    residual: str = _core("residual")
    d_model: int = _core("d_model")
    n_heads: int = _core("n_heads")
    layers_per_loop: int = _core("layers_per_loop")
    depth: int = _core("depth")
    init_state: str = _core("init_state")
    attn_window: str | int = field(default="task", metadata=option(
        "'task' (the task's default), 'full', or an odd window size", parse=_window, checked_by="__post_init__"))
    # data
    train_level: str | None = field(default=None, metadata=option(
        "ladder level to train on; levels joined by '+' train on an even mix", checked_by="__post_init__",
        default_text="the ladder's training level"))
    n_train: int = field(default=40_000, metadata=option("training samples", low=1))
    n_val: int = field(default=1_000, metadata=option("held-out samples at the training level", low=0))
    data_seed: int = field(default=0, metadata=option("seed of the training data (val: +1, eval: +2)", low=0))
    # optimization
    batch_size: int = field(default=500, metadata=option("samples per optimizer step (at most n_train)", low=1))
    epochs: int = field(default=100, metadata=option("passes over the training set", low=1))
    lr: float = field(default=3e-4, metadata=option("peak learning rate", low=0.0, low_open=True))
    weight_decay: float = field(default=0.01, metadata=option("AdamW weight decay (matrices only)", low=0.0))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=option(
        "AdamW betas, two numbers in [0, 1)", checked_by="__post_init__"))
    eps: float = field(default=1e-8, metadata=option("AdamW eps", low=0.0, low_open=True))
    warmup_epochs: float = field(default=10.0, metadata=option(
        "exponential warm-up period W in epochs (epoch e at 1 - exp(-(e+1)/W) while e+1 < W; <= 1: none)", low=0.0))
    lr_milestones: tuple[int, ...] = field(default=(60, 100), metadata=option(
        "increasing epochs at which the lr is multiplied by lr_decay", checked_by="__post_init__"))
    lr_decay: float = field(default=0.1, metadata=option("lr factor at each milestone", low=0.0, high=1.0,
                                                          low_open=True))
    grad_clip: float = field(default=1.0, metadata=option("gradient-norm clip (0: none)", low=0.0))
    # loss
    train_iters: int = field(default=30, metadata=option("m: loop iterations in training", low=1))
    alpha: float = field(default=1.0, metadata=option("progressive-loss weight (1: progressive only)",
                                                      low=0.0, high=1.0))
    depth_warmup_epochs: float = field(default=0.0, metadata=option(
        "epochs over which the progressive loss's largest depth grows linearly from 1 to train_iters "
        "(0: train_iters from the first step, the paper's protocol)", low=0.0))
    grad_mode: str = field(default="progressive", metadata=option("how gradients are taken", choices=GRAD_MODES))
    solver: str = field(default="anderson", metadata=option("fixed-point solver of the implicit and phantom modes",
                                                            choices=SOLVERS))
    solver_tol: float = field(default=1e-3, metadata=option("solver tolerance", low=0.0, low_open=True))
    solve_max_iter: int = field(default=30, metadata=option("solver's most map evaluations", low=1))
    phantom_steps: int = field(default=5, metadata=option("damped steps backpropagated by phantom", low=1))
    phantom_damping: float = field(default=1.0, metadata=option("damping of the phantom steps", low=0.0, high=1.0,
                                                                low_open=True))
    # numerics, seeds, cadence
    precision: str = field(default="auto", metadata=option("auto: bf16 autocast on cuda, fp32 elsewhere",
                                                           choices=PRECISIONS))
    seed: int = field(default=0, metadata=option("seed of initialization, data order and the loss sampler", low=0))
    checkpoint_every: int = field(default=0, metadata=option(
        "also checkpoint every N optimizer steps (0: at the end of each epoch only)", low=0))
    val_every: int = field(default=1, metadata=option("validate every N epochs (0: never)", low=0))
    # SHIFT (Gong et al. 2025, arXiv 2510.10089): fpstab.shift
    shift: bool = field(default=False, metadata=option(
        "SHIFT: train the one-pass single_attn core, then continue on the same weights, Adam state and lr "
        "schedule as the looped standard_recall core once the SHIFT criterion with patience fires: at W "
        "consecutive checks (L_prev - L_now) / |L_prev| < delta1 and |g_now - g_prev| / g_prev < delta2, "
        "L and g the mean training loss and pre-clip gradient norm over the C steps since the previous "
        "check; needs --arch standard_recall (the looped target, which evaluation and probes load)"))
    shift_delta1: float = field(default=0.01, metadata=option(
        "SHIFT delta1: the relative training-loss improvement per check below which the loss has plateaued",
        low=0.0))
    shift_delta2: float = field(default=0.1, metadata=option(
        "SHIFT delta2: the relative change of the gradient norm per check below which it is stable", low=0.0))
    shift_patience: int = field(default=3, metadata=option(
        "SHIFT patience W: consecutive checks meeting both conditions before the switch", low=1))
    shift_check_every: int = field(default=0, metadata=option(
        "SHIFT check interval C in optimizer steps, also the window the loss and gradient norm are averaged "
        "over (0: one epoch)", low=0))
    shift_max_steps: int = field(default=0, metadata=option(
        "SHIFT: switch anyway after this many single_attn steps, recorded as forced (0: half the run's steps)",
        low=0))

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; store tuples.
        object.__setattr__(self, "betas", tuple(float(b) for b in _as_seq("betas", self.betas)))
        object.__setattr__(
            self, "lr_milestones", tuple(_as_int("lr_milestones", m) for m in _as_seq("lr_milestones", self.lr_milestones))
        )
        check_options(self)
        if self.attn_window not in ("task", "full"):
            if isinstance(self.attn_window, bool) or not isinstance(self.attn_window, int) or self.attn_window < 1 or self.attn_window % 2 == 0:
                raise ValueError(f"attn_window={self.attn_window!r} must be 'task', 'full' or an odd positive int")
        if self.train_level is not None:
            if isinstance(self.train_level, bool) or not isinstance(self.train_level, (int, str)):
                raise ValueError(f"train_level={self.train_level!r} must be a ladder level name or None")
            object.__setattr__(self, "train_level", str(self.train_level))  # ladder levels are strings
        if self.grad_mode == "unrolled" and self.alpha != 1.0:
            raise ValueError(f"alpha={self.alpha} must be 1 with grad_mode='unrolled' (its loss already sees all "
                             "train_iters iterations); alpha weighs the progressive loss only")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} exceeds n_train={self.n_train}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas={self.betas!r} must be two floats in [0, 1)")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones={self.lr_milestones!r} must be increasing positive epochs")
        self.core_config(in_dim=1, out_dim=1, grid=None, task_window=None)  # CoreConfig checks the core keys
        self._check_shift()

    def _check_shift(self) -> None:
        """SHIFT needs the looped target arch and the progressive loss; its knobs need --shift."""
        if not self.shift:
            changed = [k for k in SHIFT_KEYS if getattr(self, k) != _FIELD_DEFAULTS[k]]
            if changed:
                raise ValueError(f"SHIFT's knobs apply only with shift=True, and {', '.join(changed)} "
                                 "differ from their defaults; set shift=True or drop them")
            return
        if self.arch != "standard_recall":
            raise ValueError(f"shift=True with arch={self.arch!r}: SHIFT trains single_attn, then the looped "
                             "standard_recall core on the same weights; name the looped target: arch='standard_recall'")
        if self.grad_mode != "progressive":
            raise ValueError(f"shift=True with grad_mode={self.grad_mode!r}: the single_attn stage trains at one "
                             "application; use grad_mode='progressive'")

    @property
    def shift_check_steps(self) -> int:
        """SHIFT's check interval C in optimizer steps (shift_check_every, 0: one epoch)."""
        return self.shift_check_every or self.steps_per_epoch

    @property
    def shift_max_stage1_steps(self) -> int:
        """SHIFT's longest single_attn stage in optimizer steps (shift_max_steps, 0: half the run)."""
        return self.shift_max_steps or self.total_steps // 2

    def core_config(self, in_dim: int, out_dim: int, grid: tuple[int, ...] | None,
                    task_window: int | None, causal: bool = False) -> CoreConfig:
        """The CoreConfig of this config's core for a task's dimensions, token grid (None: a
        sequence), default attention window and causality (next-token tasks). Raises
        ValueError (from CoreConfig)."""
        window = task_window if self.attn_window == "task" else (None if self.attn_window == "full" else self.attn_window)
        core = {key: getattr(self, key) for key in CORE_KEYS}
        return CoreConfig(**core, in_dim=in_dim, out_dim=out_dim, grid=grid, attn_window=window, causal=causal,
                          init_seed=self.seed)

    # ---- conversion -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ValueError naming them."""
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; allowed: {sorted(FIELDS)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ---- derived --------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the last partial batch is dropped."""
        return self.n_train // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
_FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
SHIFT_KEYS: tuple[str, ...] = ("shift_delta1", "shift_delta2", "shift_patience", "shift_check_every",
                               "shift_max_steps")


def with_defaults(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored TrainConfig dict with the keys added since it was written at their defaults, so a
    run recorded by an older fpstab still compares equal to its config (resume)."""
    return {**{k: v for k, v in TrainConfig().to_dict().items() if k not in stored}, **stored}


def preset_note(key: str) -> str:
    """What the presets set `key` to, where it differs from the default (for --help)."""
    default = getattr(TrainConfig, key, None)
    notes = []
    for name, values in PRESETS.items():
        if key in values and values[key] != default:
            v = values[key]
            shown = ", ".join(f"{t} {x:g}" for t, x in v.items()) if isinstance(v, dict) else (
                " ".join(map(str, v)) if isinstance(v, tuple) else str(v))
            notes.append(f"{name}: {shown}")
    return ("preset " + "; ".join(notes)) if notes else ""


# Options of a run that change its speed or its output, not its numbers. The persisted ones are
# recorded in the run's config.json ("runtime") and reused by --resume unless given again.
PERSISTED_RUNTIME: tuple[str, ...] = ("device", "threads", "compile", "activation_checkpointing", "log_every",
                                      "print_every", "data_cache", *HESSIAN_KEYS, "loop_diagnostics_every")


@dataclass(frozen=True)
class Runtime(HessianOptions):
    """Options that do not change a run's numbers (kept out of TrainConfig); the Hessian
    record's options (`--hessian-every K` ...) come from HessianOptions."""

    # None: the command picks (fpstab.devices.default_device) once torch is loaded.
    device: str | None = field(default="cpu", metadata=option(
        f"torch device: {DEVICE_FORMS}", checked_by="__post_init__", default_text="cuda if torch sees one, else cpu"))
    threads: int = field(default=1, metadata=option(
        "CPU threads for torch (1 is fastest on a busy machine, where more threads contend)", low=1))
    compile: bool | None = field(default=None, metadata=option(
        "torch.compile the loop step (eager again if compiling fails); --no-compile: eager",
        default_text="auto: compiled on a CPU for runs of 1000+ steps where a C++ compiler works, "
                     "else eager (fpstab.compile_step)"))
    activation_checkpointing: bool = field(default=False, metadata=option(
        "keep only each iteration's input state for backward and recompute the step (same gradients; "
        "~1/30 of the activation memory for one more forward per step)"))
    log_every: int = field(default=10, metadata=option("optimizer steps per metrics.jsonl train record", low=1))
    print_every: float = field(default=10.0, metadata=option("seconds between progress lines", low=0.0))
    loop_diagnostics_every: int = field(default=0, metadata=option(
        "every N optimizer steps, record per-iteration token norms and per-layer gradient norms in metrics.jsonl "
        "(kind loop_diagnostics: fpstab.loop_diagnostics; one more forward and backward of train_iters iterations "
        "on those steps); 0: off", low=0))
    data_cache: str | None = field(default=None, metadata=option(
        "cache folder for generated task data", default_text="$FPSTAB_CACHE or ~/.cache/fpstab"))
    quiet: bool = field(default=False, metadata=option("no progress lines"))
    stop_after_steps: int | None = field(default=None, metadata=option(
        "testing: stop abruptly after N steps, saving nothing (as a kill would)", low=1))

    def __post_init__(self) -> None:
        HessianOptions.__post_init__(self)  # checks every Option field, these and the Hessian's
        if self.device is not None:
            check_device_name(self.device)

    def persisted(self) -> dict[str, Any]:
        """The options config.json records and --resume reuses."""
        return {key: getattr(self, key) for key in PERSISTED_RUNTIME}


def resolve_config(preset: str | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """Defaults <- preset <- overrides (None values in overrides are ignored).

    Raises ValueError for an unknown preset or key, or a bad value.
    """
    check_choice("preset", preset, (None, *PRESETS))
    explicit = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(explicit) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown TrainConfig keys {unknown}; allowed: {sorted(FIELDS)}")
    task = explicit.get("task", TrainConfig.task)
    values: dict[str, Any] = {}
    for key, value in (PRESETS.get(preset, {}) if preset else {}).items():
        values[key] = value.get(task, value.get("prefix_sum")) if isinstance(value, dict) else value
    values.update(explicit)
    values["preset"] = preset
    return TrainConfig.from_dict(values)


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two config dicts: key -> (a, b).

    Tuples and lists compare equal when their items do (JSON round trips).
    """
    def norm(v: Any) -> Any:
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else (
            {k: norm(x) for k, x in v.items()} if isinstance(v, dict) else v)

    keys = sorted(set(a) | set(b))
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in keys if norm(a.get(k, "<absent>")) != norm(b.get(k, "<absent>"))}


def resolve_precision(precision: str, device_type: str) -> str:
    """'auto' -> 'bf16' on cuda, 'fp32' elsewhere; other values pass through."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def core_config_for(cfg: TrainConfig, task: Any) -> CoreConfig:
    """The architectures.CoreConfig that `cfg` describes for `task`.

    task: a tasks object (in_dim, out_dim, attn_window, causal, ladder(), grid(level)).
    Raises ValueError (from CoreConfig), e.g. for a head size the task's grid cannot rotate.
    """
    level = train_level_for(cfg, task)
    return cfg.core_config(task.in_dim, task.out_dim, _grid_for_core(task.grid(level)), task.attn_window,
                           bool(getattr(task, "causal", False)))


def _grid_for_core(grid: Any) -> Any:
    """Sequences (n,) get grid None (1-D RoPE over any length); 2-D grids stay."""
    if grid is None:
        return None
    grid = tuple(int(g) for g in grid)
    return grid if len(grid) >= 2 else None


def train_level_for(cfg: TrainConfig, task: Any) -> Any:
    """cfg.train_level, or the task ladder's training level; checked against the ladder."""
    level = task.ladder().train if cfg.train_level is None else cfg.train_level
    try:
        return task.check_level(level)
    except ValueError as err:
        raise ValueError(f"train_level={level!r}: {err}") from None


# ---- conversion helpers -------------------------------------------------
def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} items must be ints, got {value!r}")
    return value


def _as_seq(key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key}={value!r} must be a list of numbers")
    return tuple(value)
