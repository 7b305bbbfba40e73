"""SHIFT: train the one-pass single_attn core first, then the looped core on the same weights.

Gong, Teng and Liu 2025, "What Makes Looped Transformers Perform Better Than
Non-Recursive Ones" (arXiv 2510.10089): SHIFT (Staged HIerarchical Framework
for progressive Training) trains the cheap one-pass model (Single-Attn) until
it plateaus, then continues with the looped model (Looped-Attn). The switch is
the SHIFT Criterion with Patience (SCP), with thresholds delta1, delta2 and
patience W. The paper's exact inequality is not public; this is our reading:

    every C optimizer steps (a check), with L and g the mean training loss and
    the mean pre-clip gradient norm over the C steps since the previous check,
        plateau:  (L_prev - L_now) / |L_prev| < delta1
        stable:   |g_now - g_prev| / g_prev  < delta2
    a check meeting both raises the patience counter by one, any other check
    resets it to 0; the switch happens when the counter reaches W. The first
    check has no previous one and counts as a violation.

Choices (TrainConfig keys shift_*, flags --shift-*):
- The target is named by the run's arch: `--arch standard_recall --shift`.
  single_attn is standard_recall's block applied once, with the same modules
  and state_dict keys (architectures.core.set_arch), so the switch changes no
  parameter: the same tensors continue, with their AdamW state, and the lr
  schedule goes on as a function of the global step (no new warm-up): a SHIFT
  run and a looped-from-scratch run of the same config see the same lr at
  every step. Checkpoints always record the looped core's config, so
  `fpstab eval` and `fpstab probe` load a SHIFT run as standard_recall.
- Defaults: C = one epoch (shift_check_every 0), so each check averages the
  loss over one pass of the training set and successive checks compare like
  with like; delta1 = 0.01 (less than 1 % loss improvement per epoch is a
  plateau); delta2 = 0.1 (the gradient norm of a plateaued run drifts by a few
  percent per epoch, and clipping at 1 bounds the steps anyway); W = 3 checks,
  so one noisy epoch neither fires nor hides the plateau. None of these is from
  the paper (it reports no values); `benchmarks/shift_vs_looped.py` compares
  the outcome with training the looped core from scratch.
- A single_attn stage that reaches shift_max_steps (0: half the run's steps)
  switches anyway, recorded as forced, so the looped stage gets at least the
  other half. A run that ends before any switch (shift_max_steps >= its
  steps) completes as it is; its record says it never looped, and its
  checkpoint is still loaded as standard_recall (the one-pass weights, iterated).
- Validation follows the stage: one application before the switch, train_iters after.

Run records: a `shift_check` line in metrics.jsonl per check (step, loss, grad norm,
both relative changes, the patience counter) and a `shift` line at the switch;
shift.json (atomic) holds the criterion, the stage, the switch and the whole
trace; checkpoints hold the criterion's state, so a resumed run continues in its
stage with its counter and partial window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fpstab.config import TrainConfig
from fpstab.runs import atomic_write_json

SHIFT_FILE = "shift.json"
SHIFT_SCHEMA, SHIFT_VERSION = "fpstab.shift", 1
SINGLE, LOOPED = "single_attn", "standard_recall"  # the stages, named by the core's arch


def relative_improvement(prev: float, now: float) -> float:
    """(prev - now) / |prev|: the loss's relative decrease (negative when it rose).
    prev = 0: 0 when now = 0 too, else -inf (the loss rose from zero)."""
    if prev == 0.0:
        return 0.0 if now == 0.0 else -math.inf
    return (prev - now) / abs(prev)


def relative_change(prev: float, now: float) -> float:
    """|now - prev| / prev for a norm prev >= 0; prev = 0: 0 when now = 0 too, else inf."""
    if prev == 0.0:
        return 0.0 if now == 0.0 else math.inf
    return abs(now - prev) / prev


@dataclass(frozen=True)
class Criterion:
    """The SHIFT criterion with patience (our reading: module docstring)."""

    delta1: float
    delta2: float
    patience: int

    def check(self, prev: Check | None, step: int, loss: float, grad_norm: float) -> Check:
        """The check at optimizer step `step` of a window with mean `loss` and mean `grad_norm`,
        following `prev` (None: the first check, which cannot count)."""
        if prev is None:
            return Check(step, loss, grad_norm, None, None, False, False, 0, False)
        rel_loss = relative_improvement(prev.loss, loss)
        rel_grad = relative_change(prev.grad_norm, grad_norm)
        plateau, stable = rel_loss < self.delta1, rel_grad < self.delta2
        counter = prev.patience + 1 if plateau and stable else 0
        return Check(step, loss, grad_norm, rel_loss, rel_grad, plateau, stable, counter, counter >= self.patience)


@dataclass(frozen=True)
class Check:
    """One check: the window's mean loss and gradient norm, the relative changes from the previous
    check (None at the first), whether each condition held, the patience counter after it, and
    whether the criterion fired here."""

    step: int
    loss: float
    grad_norm: float
    rel_loss_improvement: float | None
    rel_grad_change: float | None
    plateau: bool
    stable: bool
    patience: int
    fired: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def criterion_trace(criterion: Criterion, losses: Sequence[float], grad_norms: Sequence[float],
                    steps: Sequence[int] | None = None) -> list[Check]:
    """The checks of a series of window means, up to and including the one that fires.

    losses, grad_norms: (n_checks,) means per window; steps: the optimizer step of each check
    (default 1, 2, ...). The last Check has fired=True iff the criterion fired.
    """
    if len(losses) != len(grad_norms):
        raise ValueError(f"{len(losses)} losses but {len(grad_norms)} gradient norms; give one of each per check")
    steps = list(steps) if steps is not None else list(range(1, len(losses) + 1))
    trace: list[Check] = []
    for step, loss, grad_norm in zip(steps, losses, grad_norms):
        trace.append(criterion.check(trace[-1] if trace else None, step, float(loss), float(grad_norm)))
        if trace[-1].fired:
            break
    return trace


@dataclass(frozen=True)
class ShiftEvent:
    """What one optimizer step did to the schedule: metrics records, whether the core switched
    here, and whether that switch was forced (shift_max_steps reached before the criterion fired)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    switched: bool = False
    forced: bool = False


class ShiftSchedule:
    """A SHIFT run's stage and criterion state: fed every step's loss and gradient norm (`observe`),
    it checks every `check_every` steps and says when to switch; `state`/`load_state` round-trip
    it through a checkpoint (plain Python values)."""

    def __init__(self, criterion: Criterion, check_every: int, max_steps: int) -> None:
        self.criterion, self.check_every, self.max_steps = criterion, check_every, max_steps
        self.stage = SINGLE
        self.switch: dict[str, Any] | None = None  # {"step", "forced", "elapsed_s"} once switched
        self.checks: list[Check] = []
        self._sums = [0.0, 0.0, 0]  # loss, grad norm, steps of the current window

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> ShiftSchedule | None:
        """The schedule of a shift=True config; None otherwise."""
        if not cfg.shift:
            return None
        return cls(Criterion(cfg.shift_delta1, cfg.shift_delta2, cfg.shift_patience), cfg.shift_check_steps,
                   cfg.shift_max_stage1_steps)

    def apply(self, core: nn.Module) -> None:
        """Make `core` the current stage's arch (same modules: architectures.core.set_arch)."""
        from fpstab.architectures.core import set_arch

        set_arch(core, self.stage)

    def observe(self, step: int, loss: float, grad_norm: float, elapsed_s: float) -> ShiftEvent:
        """Account optimizer step `step` (1-based: steps done) with its loss and pre-clip gradient
        norm; check when a window is full, switch when the criterion fires or max_steps is reached."""
        if self.stage == LOOPED:
            return ShiftEvent()
        self._sums = [self._sums[0] + loss, self._sums[1] + grad_norm, self._sums[2] + 1]
        records: list[dict[str, Any]] = []
        fired = False
        if self._sums[2] >= self.check_every:
            n = self._sums[2]
            check = self.criterion.check(self.checks[-1] if self.checks else None, step,
                                         self._sums[0] / n, self._sums[1] / n)
            self.checks.append(check)
            self._sums = [0.0, 0.0, 0]
            records.append({"kind": "shift_check", "check": len(self.checks), **check.to_dict()})
            fired = check.fired
        if not (fired or step >= self.max_steps):
            return ShiftEvent(records)
        self.stage = LOOPED
        self.switch = {"step": step, "forced": not fired, "elapsed_s": elapsed_s}
        records.append({"kind": "shift", "to": LOOPED, **self.switch})
        return ShiftEvent(records, switched=True, forced=not fired)

    # ---- checkpoint and record ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain Python values for a checkpoint (torch.load(weights_only=True) reads them)."""
        return {"stage": self.stage, "switch": self.switch, "checks": [c.to_dict() for c in self.checks],
                "window": list(self._sums)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.stage, self.switch = str(state["stage"]), state["switch"]
        self.checks = [Check(**c) for c in state["checks"]]
        loss, grad_norm, n = state["window"]
        self._sums = [float(loss), float(grad_norm), int(n)]

    def record(self, state: str = "running") -> dict[str, Any]:
        """shift.json: the criterion, the run's stage, the switch (None before it) and every check.
        state: "running", or "completed" once the run ended (then `never_looped` says whether it
        ended before the switch)."""
        c = self.criterion
        return {"schema": SHIFT_SCHEMA, "schema_version": SHIFT_VERSION,
                "criterion": {"delta1": c.delta1, "delta2": c.delta2, "patience": c.patience,
                              "check_every": self.check_every, "max_steps": self.max_steps},
                "state": state, "stage": self.stage, "switch": self.switch,
                **({"never_looped": self.stage == SINGLE} if state == "completed" else {}),
                "checks": [{"check": i + 1, **ch.to_dict()} for i, ch in enumerate(self.checks)]}

    def write(self, run_dir: Path, state: str = "running") -> None:
        atomic_write_json(Path(run_dir) / SHIFT_FILE, self.record(state))


def shift_note(run_dir: str | Path, doing: str) -> str | None:
    """What a reader of a SHIFT run's results must know when the run never reached the looped
    stage: its checkpoint loads as the looped core, whose loop it never trained. None for a run
    without shift.json or one that switched. doing: "evaluating", "probing"."""
    path = Path(run_dir) / SHIFT_FILE
    if not path.is_file():
        return None
    from fpstab.runs import read_json

    record = read_json(path)
    if record.get("stage") != SINGLE:
        return None
    ended = "ended" if record.get("state") == "completed" else "is so far"
    return (f"this SHIFT run {ended} in its single-pass stage ({SINGLE}): the switch criterion never fired "
            f"and shift_max_steps was not reached; {doing} its weights as the looped {LOOPED} core, "
            "whose loop they were never trained in")
