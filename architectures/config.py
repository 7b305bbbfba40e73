"""CoreConfig: the one validated description of a looped core.

Every invalid value raises ValueError naming the key, the value and what is
allowed. A knob that has no effect for the chosen `arch` must stay at its
default (nothing is silently ignored); see `APPLIES_TO`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ARCHS = ("no_recall", "standard_recall", "internal_recall", "fixed_depth", "single_attn", "fully_looped")
# One-pass baselines: their map is applied once, so they have no fixed point to iterate to.
ONE_PASS_ARCHS = ("fixed_depth", "single_attn")
NORMS = ("inner", "outer", "both", "peri", "loop")  # pre, post, sandwich, peri, around the loop
# "loop" wraps a whole loop iteration (its recall and all its blocks), so only archs whose
# iteration is a plain stack of blocks take it.
LOOP_NORM_ARCHS = ("no_recall", "standard_recall")
RECALLS = ("linear", "add", "concat")
RESIDUALS = ("add", "gru")
INIT_STATES = ("embedding", "zeros", "random")
# The allowed values of the keys that take names.
CHOICES: dict[str, tuple[str, ...]] = {"arch": ARCHS, "norm": NORMS, "recall": RECALLS, "residual": RESIDUALS,
                                       "init_state": INIT_STATES}
# What each key is, for the command lines that offer CoreConfig keys as flags (fpstab train).
KEY_HELP: dict[str, str] = {
    "arch": "looped core, or a one-pass baseline (fixed_depth, single_attn)",
    "norm": "normalization placement: inner (pre-norm), outer (post-norm), both (sandwich), peri, "
            "loop (pre-norm blocks; the state normalized where each loop iteration starts and ends: Fu et al.'s LT)",
    "recall": "recall map R(s, e) that mixes the input embedding e into each iteration: linear (W_x s + W_e e), add (s + e), concat ([s; e])",
    "residual": "residual update of the state: add, or a GRU gate",
    "d_model": "width of the state and the blocks (a multiple of n_heads)",
    "n_heads": "attention heads (head size d_model / n_heads even per RoPE axis)",
    "layers_per_loop": "transformer blocks per loop iteration",
    "depth": "untied blocks of the fixed_depth baseline",
    "init_state": "initial loop state h0: the input embedding, zeros, or seeded noise",
    "causal": "causal attention: token i attends tokens j <= i only (next-token prediction)",
}

# Knobs that only some architectures read. Any other arch must leave them at their default.
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "recall": ("standard_recall", "internal_recall", "single_attn"),
    "norm": ("no_recall", "standard_recall", "internal_recall", "fixed_depth", "single_attn"),
    "residual": ("no_recall", "standard_recall", "internal_recall", "fixed_depth", "single_attn"),
    "layers_per_loop": ("no_recall", "standard_recall", "internal_recall", "single_attn", "fully_looped"),
    "depth": ("fixed_depth",),
}
WHY_NOT: dict[str, str] = {
    "recall": "R is the identity there",
    "norm": "Fu et al. fix it: pre-norm layers and an outer-normalized state h = N(z_L)",
    "residual": "Fu et al.'s layers add",
    "layers_per_loop": "its one pass has `depth` untied blocks",
    "depth": "only fixed_depth stacks untied blocks",
}


# Fu et al. 2026 (arXiv 2605.18797, github.com/FuRuF-11/FullyLoopedTransformer)'s variants as
# CoreConfig keys, for layers_per_loop = L layers per iteration; their equations: architectures.core.
#   LT:   h(t) = N(Stack(h(t-1))), h(0) = N(x0)
#   LT_i: h(t) = N(Stack(N(x0 + h(t-1))))       (additive input injection)
#   FLT:  z = N(x0); per layer z <- z + Attn(q=N(h(t-1)), kv=N(z)), z <- z + MLP(N(z)); h(t) = N(z_L)
FU_VARIANTS: dict[str, dict[str, str]] = {
    "LT": {"arch": "no_recall", "norm": "loop"},
    "LT_i": {"arch": "standard_recall", "norm": "loop", "recall": "add"},
    "FLT": {"arch": "fully_looped"},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Architecture of a looped core (the archs' equations: `architectures.core`).

    grid: None for 1-D token positions, or the row-major shape of the token
    grid (e.g. (9, 9)) for axial RoPE; its product must equal n_tokens.
    attn_window: None for full attention, or an odd neighborhood size per axis.
    causal: token i attends tokens j <= i only (row-major order), so logits at i
    never read a later input; full attention and 1-D sequences only.
    """

    in_dim: int
    out_dim: int
    arch: str = "standard_recall"
    norm: str = "outer"
    recall: str = "linear"
    residual: str = "add"
    d_model: int = 256
    n_heads: int = 8
    layers_per_loop: int = 1
    depth: int = 15
    grid: tuple[int, ...] | None = None
    attn_window: int | None = None
    causal: bool = False
    init_state: str = "embedding"
    init_seed: int = 0
    mlp_ratio: int = 4
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if isinstance(self.grid, list):
            object.__setattr__(self, "grid", tuple(self.grid))
        if _is_int(self.rope_base):
            object.__setattr__(self, "rope_base", float(self.rope_base))
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                _fail(key, getattr(self, key), f"one of {allowed}")
        for key in ("in_dim", "out_dim", "d_model", "n_heads", "layers_per_loop", "depth", "mlp_ratio"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                _fail(key, getattr(self, key), "an int >= 1")
        if not _is_int(self.init_seed) or self.init_seed < 0:
            _fail("init_seed", self.init_seed, "an int >= 0")
        if not isinstance(self.rope_base, float) or not math.isfinite(self.rope_base) or self.rope_base <= 1:
            _fail("rope_base", self.rope_base, "a finite float > 1")
        if self.grid is not None and not (
            isinstance(self.grid, tuple) and len(self.grid) >= 1 and all(_is_int(g) and g >= 1 for g in self.grid)
        ):
            _fail("grid", self.grid, "None or a non-empty tuple of ints >= 1, e.g. (9, 9)")
        if self.attn_window is not None and not (
            _is_int(self.attn_window) and self.attn_window >= 1 and self.attn_window % 2 == 1
        ):
            _fail("attn_window", self.attn_window, "None (full attention) or an odd int >= 1")
        if not isinstance(self.causal, bool):
            _fail("causal", self.causal, "True or False")
        if self.causal and (self.attn_window is not None or self.grid is not None):
            # A centred NATTEN window shifted inward at borders has no agreed causal form.
            _fail("causal", self.causal, "False with a local attn_window or a 2-D grid "
                  f"(got attn_window={self.attn_window!r}, grid={self.grid!r}); causal attention is full "
                  "attention over a 1-D sequence")
        if self.d_model % self.n_heads:
            _fail("n_heads", self.n_heads, f"a divisor of d_model={self.d_model}")
        axes = 1 if self.grid is None else len(self.grid)
        if (self.d_model // self.n_heads) % (2 * axes):
            _fail("n_heads", self.n_heads,
                  f"a value whose head_dim = d_model/n_heads = {self.d_model // self.n_heads} is a multiple of "
                  f"2 * {axes} (RoPE rotates pairs of channels per position axis)")
        if self.norm == "loop" and self.arch not in LOOP_NORM_ARCHS:
            _fail("norm", self.norm, f"one of {NORMS[:-1]} for arch={self.arch!r}; 'loop' normalizes a whole "
                  f"loop iteration and is read only by arch in {LOOP_NORM_ARCHS}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key, archs in APPLIES_TO.items():
            if self.arch not in archs and getattr(self, key) != defaults[key]:
                _fail(key, getattr(self, key),
                      f"its default {defaults[key]!r} for arch={self.arch!r} ({WHY_NOT[key]}); "
                      f"it is read only by arch in {archs}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (grid as a list); `from_dict(to_dict())` round-trips."""
        d = dataclasses.asdict(self)
        d["grid"] = None if self.grid is None else list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoreConfig:
        """Build from a dict; unknown or missing keys raise ValueError naming them."""
        fields = dataclasses.fields(cls)
        allowed = [f.name for f in fields]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"CoreConfig: unknown key(s) {unknown}; allowed keys: {allowed}")
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ValueError(f"CoreConfig: missing required key(s) {missing}")
        return cls(**d)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"CoreConfig.{key}={value!r} is invalid; allowed: {allowed}")
