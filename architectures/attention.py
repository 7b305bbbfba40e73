"""RMSNorm, RoPE (1-D or axial N-D) and multi-head attention (full, causal, or local: neighborhood.py).

Position tables and masks are made in the input's dtype and device and
cached per layout (constants.py), so a core runs unchanged in float32,
float64 (`core.double()`) and under bf16 autocast, and its maps can be
differentiated with torch.func (sdpa.py picks the attention backend).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .constants import cached_constant
from .neighborhood import local_attention
from .sdpa import attend
from .split_linear import apply_split


class RMSNorm(nn.Module):
    """x / rms(x) over the last dim, times a learnable gain unless gain=False.

    gain=False is the projection of every token onto RMS 1 (the sphere of
    radius sqrt(dim)) for any input, which "outer normalization" needs.
    """

    def __init__(self, dim: int, gain: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), w).to(x.dtype)


def position_shape(n_tokens: int, grid: tuple[int, ...] | None) -> tuple[int, ...]:
    """The token positions' shape: (n_tokens,) for a sequence, else `grid` (checked)."""
    if grid is None:
        return (n_tokens,)
    if math.prod(grid) != n_tokens:
        raise ValueError(f"config grid={grid} has {math.prod(grid)} cells but the input has n_tokens={n_tokens}")
    return grid


def _coords(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """Row-major coordinates of every position, one (n,) tensor per axis."""
    axes = torch.meshgrid(*[torch.arange(s, dtype=dtype, device=device) for s in shape], indexing="ij")
    return [a.reshape(-1) for a in axes]


@cached_constant
def _rope_tables(shape: tuple[int, ...], head_dim: int, base: float, dtype: torch.dtype,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    work = torch.float64 if dtype == torch.float64 else torch.float32
    k = head_dim // (2 * len(shape))
    inv_freq = base ** (-torch.arange(k, dtype=work, device=device) / k)
    angles = torch.cat([c[:, None] * inv_freq for c in _coords(shape, work, device)], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def rope_tables(shape: tuple[int, ...], head_dim: int, base: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation's tables (cos_a | cos_a) and (-sin_a | sin_a), each (n, head_dim) in like's dtype and
    device, a = the angles (n, head_dim/2): axis i rotates its own head_dim/(2*len(shape)) channel pairs
    by coordinate_i * base^(-k/K), k < K (K = head_dim/(2*len(shape))). Cached per (shape, head_dim, base,
    dtype, device): read-only."""
    return _rope_tables(shape, head_dim, base, like.dtype, like.device)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + head_dim/2) of x (..., n, head_dim) by the angles of `rope_tables`:
    x * cos + swap_halves(x) * sin, i.e. (x1 cos - x2 sin | x2 cos + x1 sin) for x = (x1 | x2).

    Written as two products over the full width rather than four over halves: the same numbers
    (negation is exact) in fewer element-wise passes, which matter in an eager CPU step.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention: fused qkv Linear(d_in, 3d), per-head QK RMSNorm, RoPE, out Linear(d, d).

    forward(x) is self-attention; forward(x, kv=z) takes queries from x and
    keys/values from z with the same weights (Fu et al.'s attention injection);
    forward(x, pre=t) is self-attention over [x; e] with t = split_linear.input_term(qkv, e)
    computed once (internal concat recall).
    causal: query i sees keys j <= i only (full attention; not with a window).
    """

    def __init__(self, d_in: int, d: int, n_heads: int, grid: tuple[int, ...] | None,
                 window: int | None, rope_base: float, causal: bool = False):
        super().__init__()
        if causal and window is not None:
            raise ValueError(f"Attention: causal=True needs full attention, got window={window}")
        self.d, self.n_heads, self.head_dim = d, n_heads, d // n_heads
        self.grid, self.window, self.rope_base, self.causal = grid, window, rope_base, causal
        self.qkv = nn.Linear(d_in, 3 * d)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor, kv: Tensor | None = None, pre: Tensor | None = None) -> Tensor:
        """x, kv: (..., n, d_in) -> (..., n, d); with pre (..., n, 3d), x is the first columns of the input."""
        d = self.d
        if kv is not None and pre is not None:
            raise ValueError("Attention: kv (cross-attention) and pre (a precomputed input term) exclude each other")
        if kv is None:
            q, k, v = apply_split(self.qkv, x, pre).split(d, dim=-1)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:d], b[:d])
            k, v = F.linear(kv, w[d:], b[d:]).split(d, dim=-1)
        *lead, n, _ = q.shape
        q, k, v = (t.reshape(*lead, n, self.n_heads, self.head_dim).transpose(-3, -2) for t in (q, k, v))
        shape = position_shape(n, self.grid)
        cos, sin = rope_tables(shape, self.head_dim, self.rope_base, like=q)
        # QK-norm before RoPE: then scores depend on relative position only, whatever the norm gains.
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        y = attend(q, k, v, None, self.causal) if self.window is None else local_attention(q, k, v, shape, self.window)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, d))
