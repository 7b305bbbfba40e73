"""The Jacobian of a batched map as an operator (JVP, VJP), and a dense reference.

Every routine takes a map f: (B, ...) -> (B, ...) whose samples do not
interact, so one JVP or VJP on the batch applies each sample's own Jacobian
J_b = df_b/dh_b. Vectors are flattened to (B, N), N = prod of the state shape.
The Krylov methods on these operators live in `krylov` and `spectra`.

Forward-mode AD through fused attention kernels is not implemented in torch,
so JVPs run with the math SDPA backend selected (`_forward_ad`).
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

Map = Callable[[Tensor], Tensor]
Operator = Callable[[Tensor], Tensor]  # (B, N) -> (B, N)


@contextmanager
def _forward_ad() -> Iterator[None]:
    """Context for torch.func derivatives of a map: the math SDPA backend, and
    no outer autograd graph. The derivatives come from torch.func's own
    levels; an outer graph through parameters that require grad would be
    rebuilt and kept on every call (measured: a dense 5184 x 5184 Jacobian of
    a d=64 core took 51 s and 10 GB with it, 4.4 s and 1 GB without)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        yield


def jvp_operator(f: Map, h: Tensor) -> Operator:
    """v (B, N) -> J v (B, N), J = df/dh at h, one forward-mode pass per call."""
    h = h.detach()

    def apply(v: Tensor) -> Tensor:
        with _forward_ad():
            _, out = torch.func.jvp(f, (h,), (v.reshape(h.shape).to(h.dtype),))
        return out.reshape(h.shape[0], -1)

    return apply


def vjp_operator(f: Map, h: Tensor) -> Operator:
    """v (B, N) -> J^T v (B, N); the forward pass is taped once and reused."""
    h = h.detach()
    with _forward_ad():
        _, pullback = torch.func.vjp(f, h)

    def apply(v: Tensor) -> Tensor:
        with _forward_ad():
            (out,) = pullback(v.reshape(h.shape).to(h.dtype))
        return out.reshape(h.shape[0], -1)

    return apply


def dense_jacobian(f: Map, h: Tensor, chunk_size: int | None = None) -> Tensor:
    """(B, N, N) per-sample Jacobians J_b = df_b/dh_b: the reference path.

    Pulls back the N unit vectors through one taped forward pass (vmapped
    VJPs, as torch.func.jacrev does); because samples do not interact, unit
    vector i set in every sample at once gives row i of every J_b. Memory is
    B * N^2 numbers: use it on small states (tests, benchmarks). chunk_size
    bounds how many VJPs run at once (vmap's chunking), and so the memory of
    the batched backward.
    """
    h = h.detach()
    batch, n = h.shape[0], h[0].numel()
    with _forward_ad():
        _, pullback = torch.func.vjp(f, h)
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    units = eye[:, None, :].expand(n, batch, n).reshape(n, *h.shape)
    with _forward_ad():
        rows = torch.func.vmap(lambda u: pullback(u)[0], chunk_size=chunk_size)(units)  # (N, B, ...)
    return rows.reshape(n, batch, n).transpose(0, 1)
