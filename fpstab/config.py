"""Training configuration: one frozen, validated dataclass and its presets.

`TrainConfig` holds everything that determines a training run's numbers: the
task, the core's shape, the data, the optimizer and schedule, the loss and the
seeds. Runtime choices that do not change the science (device, torch.compile,
logging cadence, output folder) are command-line options of `fpstab train`,
recorded in the run's config.json but not part of this object.

Validation happens on construction: an unknown key or a bad value raises
ValueError naming the key and what is allowed. Keys of the core (arch, norm,
recall, residual, ...) are checked again by `fpstab.architectures.CoreConfig` when
`core_config_for` builds it, so the allowed values live in one place.

Presets (`PRESETS`) are partial dicts applied over the dataclass defaults;
explicit overrides win over the preset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Learning rate of the `paper` preset per task: the middle of the paper's sweep
# grid (REFERENCE 1.4: {1e-4, 3e-4, 1e-3} for chess and prefix sums,
# {3e-4, 1e-3, 3e-3} for sudoku).
PAPER_LR: dict[str, float] = {"prefix_sum": 3e-4, "chess": 3e-4, "sudoku": 1e-3}
PAPER_LR_GRID: dict[str, tuple[float, ...]] = {
    "prefix_sum": (1e-4, 3e-4, 1e-3),
    "chess": (1e-4, 3e-4, 1e-3),
    "sudoku": (3e-4, 1e-3, 3e-3),
}

GRAD_MODES: tuple[str, ...] = ("progressive", "implicit", "phantom")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
SOLVERS: tuple[str, ...] = ("anderson", "broyden", "iterate")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that fixes a training run's numbers. Defaults: the paper.

    Core shape (passed to architectures.CoreConfig):
        arch, norm, recall, residual, d_model, n_heads, layers_per_loop,
        depth (blocks of the `fixed_depth` baseline), init_state,
        attn_window: "task" (the task's default: 5 for prefix sums, full for
        grids), "full", or an odd window size.
    Data:
        task; train_level (None: the ladder's training level; several levels
        joined by '+', e.g. "easy+medium", train on an even mix); n_train
        training samples, n_val held-out samples at the training level;
        data_seed seeds the training set (val uses data_seed + 1, `fpstab
        eval` data_seed + 2), so runs with different `seed` see the same data.
    Optimization (REFERENCE 1.4):
        AdamW(lr, betas, eps, weight_decay) with no decay on biases and norm
        weights; at epoch e the lr is lr * warm-up * lr_decay ** (number of
        lr_milestones <= e), warm-up = 1 - exp(-(e + 1) / warmup_epochs) while
        e + 1 < warmup_epochs, else 1 (the official code's exponential warm-up,
        stepped per epoch: fpstab.train.lr_at); gradient-norm clip grad_clip
        (0 disables).
    Loss:
        train_iters (m) loop iterations; grad_mode "progressive" uses the
        progressive loss with weight alpha (see fpstab.train.progressive_depths);
        "implicit" solves to a fixed point (solver, solver_tol, at most
        solve_max_iter evaluations) and backpropagates by the implicit function
        theorem; "phantom" solves likewise, then backpropagates through
        phantom_steps damped steps (phantom_damping).
    Numerics and seeds:
        precision "auto" (bf16 autocast on cuda, fp32 elsewhere), "fp32" or
        "bf16"; seed fixes initialization, data order and the loss sampler.
    Checkpoints:
        checkpoint_every optimizer steps (0: at the end of each epoch only);
        val_every epochs between validation passes (0: never).
    """

    preset: str | None = None
    task: str = "prefix_sum"
    # core
    arch: str = "internal_recall"
    norm: str = "outer"
    recall: str = "linear"
    residual: str = "add"
    d_model: int = 256
    n_heads: int = 8
    layers_per_loop: int = 1
    depth: int = 15
    init_state: str = "embedding"
    attn_window: str | int = "task"
    # data
    train_level: str | None = None
    n_train: int = 40_000
    n_val: int = 1_000
    data_seed: int = 0
    # optimization
    batch_size: int = 500
    epochs: int = 100
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_epochs: float = 10.0
    lr_milestones: tuple[int, ...] = (60, 100)
    lr_decay: float = 0.1
    grad_clip: float = 1.0
    # loss
    train_iters: int = 30
    alpha: float = 1.0
    grad_mode: str = "progressive"
    solver: str = "anderson"
    solver_tol: float = 1e-3
    solve_max_iter: int = 30
    phantom_steps: int = 5
    phantom_damping: float = 1.0
    # numerics, seeds, cadence
    precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    val_every: int = 1

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; store tuples.
        object.__setattr__(self, "betas", tuple(float(b) for b in _as_seq("betas", self.betas)))
        object.__setattr__(
            self, "lr_milestones", tuple(_as_int("lr_milestones", m) for m in _as_seq("lr_milestones", self.lr_milestones))
        )
        _check_choice("preset", self.preset, (None, *PRESETS))
        for key in ("task", "arch", "norm", "recall", "residual", "init_state"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key}={getattr(self, key)!r} must be a non-empty string")
        for key in ("d_model", "n_heads", "layers_per_loop", "depth", "n_train", "n_val",
                    "batch_size", "epochs", "train_iters", "solve_max_iter", "phantom_steps"):
            _check_int(key, getattr(self, key), low=1 if key != "n_val" else 0)
        for key in ("data_seed", "seed", "checkpoint_every", "val_every"):
            _check_int(key, getattr(self, key), low=0)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.attn_window not in ("task", "full"):
            if isinstance(self.attn_window, bool) or not isinstance(self.attn_window, int) or self.attn_window < 1 or self.attn_window % 2 == 0:
                raise ValueError(f"attn_window={self.attn_window!r} must be 'task', 'full' or an odd positive int")
        if self.train_level is not None:
            if isinstance(self.train_level, bool) or not isinstance(self.train_level, (int, str)):
                raise ValueError(f"train_level={self.train_level!r} must be a ladder level name or None")
            object.__setattr__(self, "train_level", str(self.train_level))  # ladder levels are strings
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} exceeds n_train={self.n_train}")
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("eps", self.eps, low=0.0, low_open=True)
        _check_float("warmup_epochs", self.warmup_epochs, low=0.0)
        _check_float("lr_decay", self.lr_decay, low=0.0, high=1.0, low_open=True)
        _check_float("grad_clip", self.grad_clip, low=0.0)
        _check_float("alpha", self.alpha, low=0.0, high=1.0)
        _check_float("solver_tol", self.solver_tol, low=0.0, low_open=True)
        _check_float("phantom_damping", self.phantom_damping, low=0.0, high=1.0, low_open=True)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas={self.betas!r} must be two floats in [0, 1)")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones={self.lr_milestones!r} must be increasing positive epochs")
        _check_choice("grad_mode", self.grad_mode, GRAD_MODES)
        _check_choice("solver", self.solver, SOLVERS)
        _check_choice("precision", self.precision, PRECISIONS)

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

# Partial configs; a value that is a dict keyed by task name is resolved per task.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's protocol (REFERENCE 1.4): d 256, 8 heads, batch 500, 100
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


def resolve_config(preset: str | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """Defaults <- preset <- overrides (None values in overrides are ignored).

    Raises ValueError for an unknown preset or key, or a bad value.
    """
    _check_choice("preset", preset, (None, *PRESETS))
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
    _check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def core_config_for(cfg: TrainConfig, task: Any) -> Any:
    """The architectures.CoreConfig that `cfg` describes for `task`.

    task: a tasks object (in_dim, out_dim, attn_window, ladder(), grid(level)).
    Raises ValueError (from CoreConfig) for a bad arch/norm/recall/residual.
    """
    from fpstab.architectures import CoreConfig

    level = train_level_for(cfg, task)
    window = task.attn_window if cfg.attn_window == "task" else (None if cfg.attn_window == "full" else cfg.attn_window)
    return CoreConfig(
        arch=cfg.arch,
        norm=cfg.norm,
        recall=cfg.recall,
        residual=cfg.residual,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        in_dim=task.in_dim,
        out_dim=task.out_dim,
        layers_per_loop=cfg.layers_per_loop,
        depth=cfg.depth,
        grid=_grid_for_core(task.grid(level)),
        attn_window=window,
        init_state=cfg.init_state,
        init_seed=cfg.seed,
    )


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


# ---- validation helpers -------------------------------------------------
def _check_choice(key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {list(allowed)}")


def _check_int(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}={value!r} must be an int >= {low}")


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} items must be ints, got {value!r}")
    return value


def _as_seq(key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key}={value!r} must be a list of numbers")
    return tuple(value)


def _check_float(key: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{key}={value!r} must be {bound}" + (f" and <= {high}" if high is not None else ""))
    if high is not None and value > high:
        raise ValueError(f"{key}={value!r} must be <= {high}")
