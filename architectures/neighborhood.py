"""Local (neighborhood) attention with NATTEN's border semantics, in a dense and a blocked form.

Per axis of length L, the query at coordinate c sees the w = min(window, L)
consecutive keys starting at clamp(c - window//2, 0, L - w): near a border
the window shifts inward instead of shrinking, as NATTEN's neighborhood
attention (used by the official code of Labovich 2026) does. Axes combine
by AND, so a query sees prod_a w_a keys.

Both forms compute exactly that attention; they differ in cost:
- dense: SDPA over all n keys with an (n, n) bool mask, O(n^2) per head.
  Fastest for short sequences (one fused call, nothing gathered).
- blocked: queries are cut into tiles of BLOCK positions per axis. The
  windows of a tile's queries lie inside a key tile of BLOCK + window - 1
  positions per axis, so SDPA runs per tile on (tile queries, tile keys)
  with a per-tile mask: O(n (BLOCK + window - 1)^D) per head.
`local_attention` takes the blocked form once the dense one would read at
least BLOCKED_MIN_RATIO times more keys per query (measured crossover on
CPU, benchmarks/local_attention.py). Both are plain tensor ops and SDPA
(`sdpa.attend`), so every AD mode works on either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .constants import cached_constant
from .sdpa import attend

BLOCK = 16  # query positions per tile and axis
BLOCKED_MIN_RATIO = 8.0  # blocked form when n >= ratio * keys per tile


def window_starts(length: int, window: int, device: torch.device) -> Tensor:
    """(length,) long: the first key of each query's window along one axis."""
    w = min(window, length)
    return (torch.arange(length, device=device) - window // 2).clamp(0, length - w)


def _at(t: Tensor, dims: tuple[int, ...], ndim: int) -> Tensor:
    """View t (its dims in increasing order) inside an ndim-dim shape of ones, at positions `dims`."""
    shape = [1] * ndim
    for d, size in zip(dims, t.shape):
        shape[d] = size
    return t.reshape(shape)


def _strides(shape: tuple[int, ...]) -> list[int]:
    return [math.prod(shape[a + 1:]) for a in range(len(shape))]


def _axis_allowed(queries: Tensor, keys: Tensor, length: int, window: int) -> Tensor:
    """bool (..., nq, nk): key coordinate keys[..., j] is in the window of query coordinate queries[..., i]."""
    start = window_starts(length, window, queries.device)[queries][..., None]
    k = keys[..., None, :]
    return (k >= start) & (k < start + min(window, length))


@cached_constant
def neighborhood_mask(shape: tuple[int, ...], window: int, device: torch.device) -> Tensor:
    """Bool (n, n), n = prod(shape), True where query i may attend key j (row-major positions).

    Cached per (shape, window, device): shared, read-only.
    """
    d = len(shape)
    allowed = torch.ones((), dtype=torch.bool, device=device)
    for a, length in enumerate(shape):
        c = torch.arange(length, device=device)
        allowed = allowed & _at(_axis_allowed(c, c, length, window), (a, d + a), 2 * d)
    n = math.prod(shape)
    return allowed.reshape(n, n)


@dataclass(frozen=True)
class BlockedPlan:
    """Index tables of the blocked form: T tiles of Q queries and K keys each.

    queries (T*Q,) and keys (T*K,): flat token index of every tile slot;
    mask (1, T, Q, K) bool (4-D: SDPA's fused CPU kernel takes 2-D or 4-D masks only); take (n,): the slot whose output is token i's
    (tiles at the far border overlap their neighbours; the last slot wins).
    """

    queries: Tensor
    keys: Tensor
    mask: Tensor
    take: Tensor


def _axis_tiles(length: int, window: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Query and key coordinates of one axis's tiles: (tiles, b) and (tiles, b + window - 1) (capped at length)."""
    b = min(BLOCK, length)
    k = min(b + min(window, length) - 1, length)
    tiles = -(-length // b)
    q_start = (torch.arange(tiles, device=device) * b).clamp(max=length - b)
    # The tile's first window starts at clamp(q_start - window//2, 0, .); its last ends within k keys of it.
    k_start = (q_start - window // 2).clamp(0, length - k)
    return q_start[:, None] + torch.arange(b, device=device), k_start[:, None] + torch.arange(k, device=device)


def tile_sizes(shape: tuple[int, ...], window: int) -> tuple[int, int, int]:
    """(tiles, queries per tile, keys per tile) of the blocked form."""
    tiles, q, k = 1, 1, 1
    for length in shape:
        b = min(BLOCK, length)
        tiles, q, k = tiles * -(-length // b), q * b, k * min(b + min(window, length) - 1, length)
    return tiles, q, k


@cached_constant
def blocked_plan(shape: tuple[int, ...], window: int, device: torch.device) -> BlockedPlan:
    """The tiles of `shape` for `window` (see the module docstring). Cached, read-only."""
    d = len(shape)
    query_idx = key_idx = torch.zeros((), dtype=torch.long, device=device)
    mask = torch.ones((), dtype=torch.bool, device=device)
    for a, (length, stride) in enumerate(zip(shape, _strides(shape))):
        q, k = _axis_tiles(length, window, device)
        query_idx = query_idx + _at(q * stride, (a, d + a), 2 * d)  # (tiles..., b...)
        key_idx = key_idx + _at(k * stride, (a, d + a), 2 * d)  # (tiles..., k...)
        mask = mask & _at(_axis_allowed(q, k, length, window), (a, d + a, 2 * d + a), 3 * d)
    tiles, per_q, per_k = tile_sizes(shape, window)
    queries = query_idx.reshape(-1)
    slots = torch.arange(queries.numel(), device=device)
    take = torch.full((math.prod(shape),), -1, dtype=torch.long, device=device)
    take = take.scatter_reduce(0, queries, slots, reduce="amax")
    return BlockedPlan(queries, key_idx.reshape(-1), mask.reshape(1, tiles, per_q, per_k), take)


def use_blocked(shape: tuple[int, ...], window: int) -> bool:
    """True when the blocked form is expected to be faster than the dense mask (see BLOCKED_MIN_RATIO)."""
    tiles, _, per_k = tile_sizes(shape, window)
    return tiles > 1 and math.prod(shape) >= BLOCKED_MIN_RATIO * per_k


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, plan: BlockedPlan) -> Tensor:
    """Neighborhood attention by tiles. q, k, v (..., n, head_dim) -> (..., n, head_dim)."""
    _, tiles, per_q, per_k = plan.mask.shape
    lead, hd = q.shape[:-2], q.shape[-1]
    # SDPA's fused kernels take 4-D (batch, heads, L, E): tiles act as heads.
    qt = q.index_select(-2, plan.queries).reshape(-1, tiles, per_q, hd)
    kt = k.index_select(-2, plan.keys).reshape(-1, tiles, per_k, hd)
    vt = v.index_select(-2, plan.keys).reshape(-1, tiles, per_k, hd)
    out = attend(qt, kt, vt, plan.mask)
    return out.reshape(*lead, tiles * per_q, hd).index_select(-2, plan.take)


def local_attention(q: Tensor, k: Tensor, v: Tensor, shape: tuple[int, ...], window: int,
                    form: str = "auto") -> Tensor:
    """Neighborhood attention over token positions `shape`. q, k, v (..., n, head_dim) -> (..., n, head_dim).

    form: "auto" (blocked when `use_blocked`), "dense" or "blocked".
    """
    if form not in ("auto", "dense", "blocked"):
        raise ValueError(f"local attention form={form!r}; allowed: 'auto', 'dense', 'blocked'")
    if form == "blocked" or (form == "auto" and use_blocked(shape, window)):
        return blocked_attention(q, k, v, blocked_plan(shape, window, q.device))
    return attend(q, k, v, neighborhood_mask(shape, window, q.device))
