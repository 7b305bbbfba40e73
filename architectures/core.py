"""Looped cores: encode -> init_state -> step (iterated) -> readout.

Shapes: x (B, n, in_dim); e, h (B, n, d); logits (B, n, out_dim). step,
readout and the blocks also accept any other leading shape (e.g. a single
sample (n, d) under torch.func.vmap).

Architectures (Labovich 2026, arXiv 2604.15259, and its code github.com/ashlab11/generalization,
deepthinking/models/transformer.py; Fu et al. 2026, arXiv 2605.18797; Gong et al. 2025, arXiv 2510.10089):
- no_recall:        h' = Block(h); x enters only through h0 = e.
- standard_recall:  h' = Block(R(h, e)): the recalled vector is the residual stream.
- internal_recall:  h' = Block(h) with R inside each branch after the pre-norm.
- fixed_depth:      `depth` untied no-recall blocks, one pass.
- single_attn:      the standard_recall block applied once (Gong et al.). Same
                    modules and state_dict keys as standard_recall, so its
                    weights load into the looped model (SHIFT); its one pass
                    equals standard_recall's first iteration.
- fully_looped:     Fu et al.: z = N(e); per layer z <- z + Attn(q=N(h), kv=N(z)),
                    z <- z + MLP(N(z)); h' = N(z_L). No parameters beyond the
                    pre-norm block's.
- norm="loop" (no_recall, standard_recall): pre-norm blocks and a gain-free N
                    around the whole iteration, z = N(R(h, e)) (R once per
                    iteration, the identity for no_recall), z <- Block(z) per
                    layer, h' = N(z_L). no_recall is Fu et al.'s LT, h(t) =
                    N(Stack(h(t-1))) with h(0) = N(x0): from h0 = e the first
                    step is N(Stack(N(e))), and later ones read N(h) = h (h is
                    on the RMS-1 sphere already; up to RMSNorm's eps).
                    standard_recall with recall="add" is their LT_i, loop input
                    N(x0 + h(t-1)): from h0 = zeros (or h0 = e, as N(2e) = N(e))
                    the first step is their plain first loop N(Stack(N(x0))).
                    `architectures.config.FU_VARIANTS` names the settings.

Where the state is normalized, `step_stream` also returns the residual stream
before that last normalization (Fu et al.'s per-loop "hidden norm" is its
token norm), for diagnostics; `step` is its first output.

Deviations from the official code, on purpose:
- The norm that normalizes the loop state (outer/post and sandwich output
  norms, norm="loop"'s entry and exit norms, fully_looped's restart N(e) and
  final N(z_L)) has no learnable gain,
  so every token of the state has RMS exactly 1 for any weights: "outer
  normalization" is then a projection onto the sphere, as the theory needs.
  The official RMSNorms all have gains (FastRMSNorm(nn.RMSNorm)). Branch
  norms (pre, peri, QK, readout) keep gains.
- QK-norm is applied before RoPE (official: RoPE, then QK-norm with gains,
  which breaks exact relative-position dependence once the gains move).
- Fu et al.'s variants (LT, LT_i, FLT) use no learnable gains anywhere, causal
  attention and a ReLU^2 MLP; here the blocks are the pre-norm blocks above.
  Their LT_ia and FLT_res ablations are not built.
- fully_looped: the official first loop is plain self-attention (no h yet);
  here every step, the first included, queries N(h) with h0 = init_state(e),
  so one map F(h, e) is iterated. For layers_per_loop=1 and h0 = e the first
  step equals the official loop 1 (then q = N(e) = N(z)); for more layers it
  differs. Its norms inside the layers are the block's pre-norm (with gain;
  official: parameter-free); attention is non-causal unless config.causal
  (official: causal LM).
- config.causal masks attention to keys j <= i in every arch (fully_looped's
  injected attention too); everything else in a step and the readout acts
  per token, so logits at i never depend on inputs after i.
- Local attention has NATTEN's border semantics (official: NATTEN na1d/na2d,
  kernel 5) but runs on SDPA: a dense bool mask for short sequences, tiles
  for long ones (neighborhood.py).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .attention import RMSNorm, position_shape
from .block import Block, Recall
from .config import INIT_STATES, ONE_PASS_ARCHS, CoreConfig

_PLACEMENT = {"no_recall": "none", "standard_recall": "external", "internal_recall": "internal",
              "fixed_depth": "none", "single_attn": "external"}


class Core(nn.Module):
    """A looped core; `step` is the map F(h, e) whose fixed points the probes study."""

    def __init__(self, cfg: CoreConfig, blocks: list[Block]):
        super().__init__()
        d = cfg.d_model
        self.config = cfg
        self.embed = nn.Linear(cfg.in_dim, d)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(RMSNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.out_dim))

    @property
    def looped(self) -> bool:
        """False for the one-pass baselines (fixed_depth, single_attn)."""
        return self.config.arch not in ONE_PASS_ARCHS

    @property
    def has_input_injection(self) -> bool:
        """False when step(h, e) does not depend on e (no_recall, fixed_depth): an autonomous map."""
        return self.config.arch not in ("no_recall", "fixed_depth")

    def encode(self, x: Tensor) -> Tensor:
        """x (B, n, in_dim) -> e (B, n, d) = Linear(in_dim, d)(x), no norm."""
        if x.dim() < 2 or x.shape[-1] != self.config.in_dim:
            raise ValueError(f"input x has shape {tuple(x.shape)}; expected (B, n_tokens, in_dim={self.config.in_dim})")
        position_shape(x.shape[-2], self.config.grid)
        return self.embed(x)

    def init_state(self, e: Tensor, kind: str | None = None, seed: int | None = None) -> Tensor:
        """h0 like e: "embedding" (e itself), "zeros", or "random" (standard normal, seeded by
        `seed` or config.init_seed; deterministic, drawn on the CPU in float32/float64)."""
        kind = self.config.init_state if kind is None else kind
        if kind not in INIT_STATES:
            raise ValueError(f"init_state kind={kind!r}; allowed: {INIT_STATES}")
        if kind == "embedding":
            return e
        if kind == "zeros":
            return torch.zeros_like(e)
        g = torch.Generator().manual_seed(self.config.init_seed if seed is None else seed)
        dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
        return torch.randn(e.shape, generator=g, dtype=dtype).to(device=e.device, dtype=e.dtype)

    def step(self, h: Tensor, e: Tensor) -> Tensor:
        """One loop iteration: h, e (B, n, d) -> h' (B, n, d)."""
        return self.step_stream(h, e)[0]

    def step_stream(self, h: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """(h', the residual stream at the end of the iteration before the state's normalization), both
        (B, n, d). Where nothing normalizes the state (norm inner or peri) the stream is h' itself; for
        norm outer or both it is the last branch's s + f(...) before its post-norm."""
        self._check_state(h, e)
        return self.step_stream_from(h, self.loop_input(e))

    # ---- the loop with its input-only part computed once -------------------------------------
    # step(h, e) is step_from(h, loop_input(e)), so the loop and the probes use one map. (Concat recall
    # multiplies [s; e] as two products, W_s s + (W_e e + b), which rounds differently from one product
    # over the concatenation: ~4e-7 in float32, ~2x the error of one product under bf16.) A loop that
    # iterates with one e (training, evaluation) computes u = loop_input(e) once, not per iteration:
    # linear recall's W_e e (one of its six matrix products per iteration), internal concat recall's
    # e-columns of qkv and the first MLP layer, fully_looped's N(e).

    def loop_input(self, e: Tensor) -> Tensor:
        """u (B, n, loop_input_dim): what an iteration reads of e, which does not change between
        iterations. With recall, each recalling block's `Block.loop_input(e)` (concatenated over
        blocks); without, e itself (the step does not read it)."""
        parts = [u for u in (block.loop_input(e) for block in self.blocks) if u is not None]
        if not parts:
            return e
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    @property
    def loop_input_dim(self) -> int:
        """The width of `loop_input(e)`: the recalling blocks' `Block.loop_input_dim` summed (d_model
        each, (3 + mlp_ratio) d_model for internal concat recall), d_model where no block recalls
        (fully_looped's N(e) and norm="loop"'s recall included: their blocks do not recall)."""
        return sum(block.loop_input_dim for block in self.blocks) or self.config.d_model

    def step_from(self, h: Tensor, u: Tensor) -> Tensor:
        """One loop iteration from u = loop_input(e): h (B, n, d), u (B, n, loop_input_dim) -> h'."""
        return self.step_stream_from(h, u)[0]

    def step_stream_from(self, h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """`step_stream` from u = loop_input(e) (B, n, loop_input_dim)."""
        self._check_loop_input(h, u)
        inputs = self._block_inputs(u)
        for block, part in zip(self.blocks[:-1], inputs):
            h = block(h, part)
        return self.blocks[-1].forward_stream(h, inputs[-1])

    def _block_inputs(self, u: Tensor) -> list[Tensor | None]:
        """Each block's part of u (None for a block without recall); a single recalling block takes u
        whole (no split view and its backward node per iteration)."""
        widths = [block.loop_input_dim for block in self.blocks]
        recalling = [w for w in widths if w]
        if len(recalling) <= 1:  # u whole to the one recalling block, or e unread by all
            return [u if w else None for w in widths]
        parts = iter(u.split(recalling, dim=-1))
        return [next(parts) if w else None for w in widths]

    def readout(self, h: Tensor) -> Tensor:
        """h (B, n, d) -> logits (B, n, out_dim): RMSNorm -> Linear(d, d) -> GELU -> Linear(d, out_dim)."""
        return self.head(h)

    def forward(self, x: Tensor, iters: int, h0: Tensor | None = None) -> Tensor:
        """Logits of every iteration, (iters, B, n, out_dim), in train and eval mode alike.

        h0 (B, n, d) replaces init_state(e). Iterating a one-pass baseline
        (looped=False) just repeats its map, as the official code does.
        """
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ValueError(f"iters={iters!r}; allowed: an int >= 1")
        e = self.encode(x)
        h = self.init_state(e) if h0 is None else h0
        u = self.loop_input(e)
        logits = []
        for _ in range(iters):
            h = self.step_from(h, u)
            logits.append(self.readout(h))
        return torch.stack(logits)

    def weight_matrices(self) -> dict[str, Tensor]:
        """2-D weights of the step's blocks (views of the parameters, not detached):
        W_Q, W_K, W_V (d, d_in), W_O (d, d), W_1 (ratio*d, d_in), W_2 (d, ratio*d), and
        W_x, W_e (d, d) for linear recall. Block i > 0 of a step gets the suffix ".i"."""
        out = {}
        for i, block in enumerate(self.blocks):
            sfx = "" if i == 0 else f".{i}"
            mats = dict(zip(("W_Q", "W_K", "W_V"), block.attn.qkv.weight.split(self.config.d_model)))
            mats.update(W_O=block.attn.proj.weight, W_1=block.mlp.fc1.weight, W_2=block.mlp.fc2.weight)
            recall = block.recall if block.recall is not None else getattr(self, "recall", None) if i == 0 else None
            if recall is not None and recall.kind == "linear":
                mats.update(W_x=recall.W_x.weight, W_e=recall.W_e.weight)
            out.update({k + sfx: v for k, v in mats.items()})
        return out

    def _check_state(self, h: Tensor, e: Tensor) -> None:
        if h.shape != e.shape or h.shape[-1] != self.config.d_model:
            raise ValueError(f"state h {tuple(h.shape)} and encoding e {tuple(e.shape)} must have the same "
                             f"shape (..., n_tokens, d_model={self.config.d_model})")

    def _check_loop_input(self, h: Tensor, u: Tensor) -> None:
        width = self.loop_input_dim
        if h.shape[-1] != self.config.d_model or u.shape[:-1] != h.shape[:-1] or u.shape[-1] != width:
            raise ValueError(f"state h {tuple(h.shape)} and loop input u {tuple(u.shape)} must be (..., n_tokens, "
                             f"d_model={self.config.d_model}) and (..., n_tokens, {width}) (u = loop_input(e))")


class FullyLoopedCore(Core):
    """Fu et al.'s Fully Looped Transformer: every step restarts from N(e); h enters only as queries."""

    def __init__(self, cfg: CoreConfig):
        super().__init__(cfg, [Block(cfg, "none", norm="inner") for _ in range(cfg.layers_per_loop)])
        self.state_norm = RMSNorm(cfg.d_model, gain=False)

    def loop_input(self, e: Tensor) -> Tensor:
        """u = N(e) (B, n, d), where every step restarts."""
        return self.state_norm(e)

    def step_stream_from(self, h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """h, u = N(e) (B, n, d) -> (h' = N(z_L), every token at RMS 1; the residual stream z_L)."""
        self._check_loop_input(h, u)
        z = u
        for block in self.blocks:
            z = z + block.attn(block.pre_norm(h), kv=block.pre_norm(z))
            z = z + block.mlp(block.pre_norm(z))
        return self.state_norm(z), z


class LoopNormCore(Core):
    """norm="loop": pre-norm blocks, the state normalized where the iteration starts (after the
    recall, applied once per iteration) and where it ends; no_recall is Fu et al.'s LT, standard_recall
    with recall="add" their LT_i."""

    def __init__(self, cfg: CoreConfig):
        super().__init__(cfg, [Block(cfg, "none", norm="inner") for _ in range(cfg.layers_per_loop)])
        self.recall = Recall(cfg.recall, cfg.d_model, external=True) if cfg.arch == "standard_recall" else None
        self.state_norm = RMSNorm(cfg.d_model, gain=False)

    def loop_input(self, e: Tensor) -> Tensor:
        """u (B, n, d): the recall's `Recall.loop_input(e)`; e itself (unread) without recall."""
        return e if self.recall is None else self.recall.loop_input(e)

    def step_stream_from(self, h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """h, u = loop_input(e) (B, n, d) -> (h' = N(z_L), every token at RMS 1; the residual stream z_L)."""
        self._check_loop_input(h, u)
        z = self.state_norm(h if self.recall is None else self.recall.from_input(h, u))
        for block in self.blocks:
            z = block(z, None)
        return self.state_norm(z), z


def build_core(cfg: CoreConfig) -> Core:
    """The nn.Module for `cfg` (see the module docstring for every arch)."""
    if cfg.arch == "fully_looped":
        return FullyLoopedCore(cfg)
    if cfg.norm == "loop":
        return LoopNormCore(cfg)
    n_blocks = cfg.depth if cfg.arch == "fixed_depth" else cfg.layers_per_loop
    return Core(cfg, [Block(cfg, _PLACEMENT[cfg.arch], norm=cfg.norm) for _ in range(n_blocks)])


# Archs built from the same modules with the same state_dict keys: single_attn is standard_recall's
# block applied once (Gong et al.), so one can become the other without touching a parameter.
SAME_MODULES: tuple[str, ...] = ("single_attn", "standard_recall")


def set_arch(core: Core, arch: str) -> None:
    """Make `core` a single_attn or a standard_recall core in place (Gong et al.'s SHIFT switch).

    Only its config changes (and with it `looped`): the modules, the Parameter objects, and so an
    optimizer's state over them, continue as they are. Raises ValueError for any other pair of archs.
    """
    if core.config.arch not in SAME_MODULES or arch not in SAME_MODULES:
        raise ValueError(f"set_arch: cannot turn arch={core.config.arch!r} into arch={arch!r}; only "
                         f"{' and '.join(SAME_MODULES)} share their modules")
    core.config = dataclasses.replace(core.config, arch=arch)
