"""The weight-tied block: recall map, attention branch, MLP branch.

With N = RMSNorm, f a branch, R the recall map (R? = only for internal recall),
one branch updates the stream s as
    inner (pre):      s <- s + f(R?(N(s)))
    outer (post):     s <- N(s + f(R?(s)))
    both (sandwich):  s <- N(s + f(R?(N(s))))
    peri:             s <- s + N(f(R?(N(s))))
and a `gru` residual replaces "s + u" by GRUCell(input=u, hidden=s).
External (standard) recall sets s = R(h, e) before the block.

As in the official code (ashlab11/generalization, AttentionBlock), the pre,
peri and post norms, the recall map and the GRU are each one module shared by
the attention and MLP branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention, RMSNorm
from .config import CoreConfig
from .split_linear import apply_split, input_term

PLACEMENTS = ("none", "external", "internal")


class Recall(nn.Module):
    """R(s, e), s and e (..., n, d).

    linear: W_x s + W_e e (two Linear(d, d) with bias).  add: s + e.
    concat: [s; e] (..., n, 2d) inside a branch (internal recall; the branch
    reads 2d, as in the official code), Linear(2d, d)([s; e]) where the result
    must be a state (external recall) -- that is linear recall with one bias.

    e is the same at every iteration, so what depends on e alone is computed
    once per input: R(s, e) = from_input(s, loop_input(e)).
    """

    def __init__(self, kind: str, d: int, external: bool):
        super().__init__()
        self.kind, self.external = kind, external
        if kind == "linear":
            self.W_x, self.W_e = nn.Linear(d, d), nn.Linear(d, d)
        elif kind == "concat" and external:
            self.W_xe = nn.Linear(2 * d, d)

    def loop_input(self, e: Tensor) -> Tensor:
        """u (..., n, d), the part of R that depends on e alone: W_e e + b_e (linear), the e-columns of
        W_xe times e plus its bias (external concat), e itself (add, internal concat)."""
        if self.kind == "linear":
            return self.W_e(e)
        if self.kind == "concat" and self.external:
            return input_term(self.W_xe, e)
        return e

    def from_input(self, s: Tensor, u: Tensor) -> Tensor:
        """R(s, e) from u = loop_input(e); s, u (..., n, d)."""
        if self.kind == "linear":
            return self.W_x(s) + u
        if self.kind == "add":
            return s + u
        if self.external:
            return apply_split(self.W_xe, s, u)
        return torch.cat([s, u], dim=-1)

    def forward(self, s: Tensor, e: Tensor) -> Tensor:
        return self.from_input(s, self.loop_input(e))


class MLP(nn.Module):
    """Linear(d_in, ratio*d) -> GELU -> Linear(ratio*d, d)."""

    def __init__(self, d_in: int, d: int, ratio: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, ratio * d), nn.Linear(ratio * d, d)

    def forward(self, x: Tensor, pre: Tensor | None = None) -> Tensor:
        """x (..., n, d_in) -> (..., n, d); with pre = split_linear.input_term(fc1, e) (..., n, ratio*d),
        x is the first columns of the input [x; e]."""
        return self.fc2(F.gelu(apply_split(self.fc1, x, pre)))


class AddResidual(nn.Module):
    def forward(self, u: Tensor, s: Tensor) -> Tensor:
        return s + u


class GRUResidual(nn.Module):
    """GRUCell(input=u, hidden=s) per token, for any leading shape.

    The GRU equations are written out over nn.GRUCell's parameters because the
    fused cell has no forward-mode AD / double backward on every device.
    Initialized as the official code: xavier input weights, orthogonal hidden
    weights, zero biases except the update-gate biases at 1.
    """

    def __init__(self, d: int):
        super().__init__()
        self.cell = nn.GRUCell(d, d)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.cell.weight_ih)
            nn.init.orthogonal_(self.cell.weight_hh)
            for b in (self.cell.bias_ih, self.cell.bias_hh):
                b.zero_()
                b[d:2 * d] = 1.0

    def forward(self, u: Tensor, s: Tensor) -> Tensor:
        c = self.cell
        i_r, i_z, i_n = F.linear(u, c.weight_ih, c.bias_ih).chunk(3, dim=-1)
        h_r, h_z, h_n = F.linear(s, c.weight_hh, c.bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * s


class Block(nn.Module):
    """Attention branch then MLP branch; (..., n, d) -> (..., n, d).

    placement: "none" (no recall), "external" (standard recall) or "internal".
    """

    def __init__(self, cfg: CoreConfig, placement: str, norm: str):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"Block placement={placement!r}; allowed: {PLACEMENTS}")
        d = cfg.d_model
        self.placement = placement
        self.recall = Recall(cfg.recall, d, external=placement == "external") if placement != "none" else None
        # Internal concat recall: each branch reads [N(s); e], and e's columns of its first Linear are
        # applied once per input (split_linear), not at every iteration.
        self.concat_inside = placement == "internal" and cfg.recall == "concat"
        d_in = 2 * d if self.concat_inside else d
        self.attn = Attention(d_in, d, cfg.n_heads, cfg.grid, cfg.attn_window, cfg.rope_base, cfg.causal)
        self.mlp = MLP(d_in, d, cfg.mlp_ratio)
        self.pre_norm = RMSNorm(d) if norm in ("inner", "both", "peri") else nn.Identity()
        self.peri_norm = RMSNorm(d) if norm == "peri" else nn.Identity()
        # The state's norm has no gain: after it every token has RMS 1 for any weights.
        self.post_norm = RMSNorm(d, gain=False) if norm in ("outer", "both") else nn.Identity()
        self.residual = GRUResidual(d) if cfg.residual == "gru" else AddResidual()

    @property
    def loop_input_dim(self) -> int:
        """The width of `loop_input(e)`: 0 without recall, 3d + ratio*d for internal concat recall (the
        qkv and first MLP layer's e-terms), else d."""
        if self.recall is None:
            return 0
        return self.attn.qkv.out_features + self.mlp.fc1.out_features if self.concat_inside else self.attn.d

    def loop_input(self, e: Tensor) -> Tensor | None:
        """What the block reads of e, computed once per input: (..., n, loop_input_dim), or None for a
        block without recall. `Recall.loop_input(e)`, or for internal concat recall the e-terms of the
        two branches' first Linear layers, side by side."""
        if self.recall is None:
            return None
        if self.concat_inside:
            return torch.cat([input_term(self.attn.qkv, e), input_term(self.mlp.fc1, e)], dim=-1)
        return self.recall.loop_input(e)

    def branch_sum(self, s: Tensor, u: Tensor | None, f: nn.Module) -> Tensor:
        """The branch's residual update before the post-norm; u = the branch's part of loop_input(e)."""
        z = self.pre_norm(s)
        if self.concat_inside:
            out = f(z, pre=u)  # f([z; e]) with e's columns applied once
        else:
            out = f(z if self.placement != "internal" else self.recall.from_input(z, u))
        return self.residual(self.peri_norm(out), s)

    def forward_stream(self, s: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        """(the block's output, the residual stream of its MLP branch before the post-norm);
        without a post-norm ("inner", "peri") the two are the same tensor. u = loop_input(e)."""
        if self.placement == "external":
            s = self.recall.from_input(s, u)
        u_attn = u_mlp = u
        if self.concat_inside:
            u_attn, u_mlp = u.split([self.attn.qkv.out_features, self.mlp.fc1.out_features], dim=-1)
        s = self.post_norm(self.branch_sum(s, u_attn, self.attn))
        stream = self.branch_sum(s, u_mlp, self.mlp)
        return self.post_norm(stream), stream

    def forward(self, s: Tensor, u: Tensor | None) -> Tensor:
        """s (..., n, d), u = loop_input(e) -> (..., n, d). u, not e: with linear recall both have e's
        shape, and passing e would recall W_x s + e."""
        return self.forward_stream(s, u)[0]
