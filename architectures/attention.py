"""RMSNorm, RoPE (1-D or axial N-D), neighborhood masks and multi-head attention.

Position tables and masks are built per call in the input's dtype and device,
so a core runs unchanged in float32, float64 (`core.double()`) and under bf16
autocast, and its maps can be differentiated with torch.func.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel


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


def rope_tables(shape: tuple[int, ...], head_dim: int, base: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (n, head_dim/2): axis a rotates its own head_dim/(2*len(shape)) channel pairs
    by coordinate_a * base^(-k/K), k < K (K = head_dim/(2*len(shape)))."""
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    k = head_dim // (2 * len(shape))
    inv_freq = base ** (-torch.arange(k, dtype=work, device=like.device) / k)
    angles = torch.cat([c[:, None] * inv_freq for c in _coords(shape, work, like.device)], dim=-1)
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + head_dim/2) of x (..., n, head_dim) by the tables' angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def neighborhood_mask(shape: tuple[int, ...], window: int, device: torch.device) -> Tensor:
    """Bool (n, n), True where query i may attend key j.

    Per axis of length L, query at c sees the min(window, L) consecutive keys
    starting at clamp(c - window//2, 0, L - min(window, L)): near a border the
    window shifts inward instead of shrinking, as NATTEN's neighborhood
    attention (used by the official code) does. Axes combine by AND.
    """
    allowed = torch.ones((), dtype=torch.bool, device=device)
    for length, c in zip(shape, _coords(shape, torch.long, device)):
        w = min(window, length)
        start = (c - window // 2).clamp(0, length - w)
        allowed = allowed & (c[None, :] >= start[:, None]) & (c[None, :] < start[:, None] + w)
    return allowed


def _transformed(x: Tensor) -> bool:
    """True when x may need forward-mode AD, vmap or double backward (any autograd graph,
    a torch.func transform, or a forward-AD dual level)."""
    current_level = getattr(torch._C._functorch, "maybe_current_level", None)
    if current_level is None:
        return True
    in_func = current_level() is not None
    in_forward_ad = getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
    return in_func or in_forward_ad or (torch.is_grad_enabled() and x.requires_grad)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Non-causal scaled dot-product attention, q, k, v (..., heads, n, head_dim).

    The fused kernels lack forward-mode AD, vmap rules and double backward, so
    whenever derivatives are being traced SDPA runs its composite MATH backend
    (same function; 5-10x slower on CPU). Plain no-grad calls stay fused.
    """
    if torch.compiler.is_compiling() or not _transformed(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention: fused qkv Linear(d_in, 3d), per-head QK RMSNorm, RoPE, out Linear(d, d).

    forward(x) is self-attention; forward(x, kv=z) takes queries from x and
    keys/values from z with the same weights (Fu et al.'s attention injection).
    """

    def __init__(self, d_in: int, d: int, n_heads: int, grid: tuple[int, ...] | None,
                 window: int | None, rope_base: float):
        super().__init__()
        self.d, self.n_heads, self.head_dim = d, n_heads, d // n_heads
        self.grid, self.window, self.rope_base = grid, window, rope_base
        self.qkv = nn.Linear(d_in, 3 * d)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor, kv: Tensor | None = None) -> Tensor:
        """x, kv: (..., n, d_in) -> (..., n, d)."""
        d = self.d
        if kv is None:
            q, k, v = self.qkv(x).split(d, dim=-1)
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
        mask = None if self.window is None else neighborhood_mask(shape, self.window, q.device)
        y = attend(q, k, v, mask)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, d))
