"""Matrix-free linear algebra on the Jacobian of a batched map, and a dense reference.

Every routine takes a map f: (B, ...) -> (B, ...) whose samples do not
interact, so one JVP or VJP on the batch applies each sample's own Jacobian
J_b = df_b/dh_b. Vectors are flattened to (B, N), N = prod of the state shape.
All Krylov methods run batched with per-sample coefficients, so the GPU sees
one (B, N) operation per step.

Forward-mode AD through fused attention kernels is not implemented in torch,
so JVPs run with the math SDPA backend selected (`_forward_ad`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

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


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product of (B, N) tensors -> (B,)."""
    return (a * b).sum(dim=1)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def _breakdown(after: Tensor, before: Tensor) -> Tensor:
    """(B,) bool: orthogonalization left only rounding noise of `before` (B, N),
    so the Krylov space is invariant."""
    noise = 10 * before.shape[1] ** 0.5 * torch.finfo(before.dtype).eps
    return after.norm(dim=1) <= noise * before.norm(dim=1)


def _orthogonalize(w: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """Two passes of classical Gram-Schmidt of w (B, N) against basis (B, k, N).

    Returns (w orthogonal to the basis, coefficients (B, k)). The second pass
    restores orthogonality lost to rounding (Krylov bases need it).
    """
    coef = torch.einsum("bkn,bn->bk", basis, w)
    w = w - torch.einsum("bk,bkn->bn", coef, basis)
    again = torch.einsum("bkn,bn->bk", basis, w)
    return w - torch.einsum("bk,bkn->bn", again, basis), coef + again


def arnoldi(apply: Operator, v0: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Batched Arnoldi: A V_k = V_{k+1} H_k.

    Args:
        apply: the operator A, (B, N) -> (B, N).
        v0: (B, N) start vectors.
        steps: Krylov dimension k (capped at N).
    Returns:
        V (B, k+1, N) orthonormal basis (rows past a breakdown are zero),
        H (B, k+1, k) upper Hessenberg.
    """
    batch, n = v0.shape
    steps = min(steps, n)
    basis = torch.zeros(batch, steps + 1, n, dtype=v0.dtype, device=v0.device)
    hess = torch.zeros(batch, steps + 1, steps, dtype=v0.dtype, device=v0.device)
    basis[:, 0] = _unit(v0)
    tiny = torch.finfo(v0.dtype).eps
    for j in range(steps):
        aw = apply(basis[:, j])
        w, coef = _orthogonalize(aw, basis[:, : j + 1])
        # A breakdown means the Krylov space is invariant: its Ritz values are exact.
        dead = _breakdown(w, aw)
        norm = torch.where(dead, torch.zeros_like(coef[:, 0]), w.norm(dim=1))
        hess[:, : j + 1, j] = coef
        hess[:, j + 1, j] = norm
        basis[:, j + 1] = torch.where(dead[:, None], torch.zeros_like(w), w / norm.clamp_min(tiny)[:, None])
    return basis, hess


def spectral_radius(
    f: Map,
    h: Tensor,
    steps: int = 40,
    restarts: int = 4,
    tol: float = 1e-4,
    seed: int = 0,
) -> Tensor:
    """rho(df/dh) at h, per sample, by restarted Arnoldi on JVPs.

    Arnoldi sees complex-conjugate pairs that defeat plain power iteration.
    Each restart begins from the real and imaginary parts of the dominant Ritz
    vector, which span the pair. It stops once the dominant Ritz value's
    residual ||A y - theta y|| is below tol * |theta| for every sample.

    Args:
        f: batched map (B, ...) -> (B, ...).
        h: (B, ...) point of linearization.
        steps: Krylov dimension per cycle (capped at N).
        restarts: cycles at most.
        tol: relative Ritz residual that counts as converged.
        seed: start vector seed.
    Returns:
        (B,) spectral radius, in h's real dtype.
    """
    return _dominant_ritz(jvp_operator(f, h), _start(h, seed), steps, restarts, tol).abs()


def _start(h: Tensor, seed: int) -> Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(h.shape[0], h[0].numel(), generator=gen, dtype=torch.float64)
    return v.to(dtype=h.dtype, device=h.device)


def _dominant_ritz(apply: Operator, v: Tensor, steps: int, restarts: int, tol: float) -> Tensor:
    """(B,) complex Ritz value of largest modulus after restarted Arnoldi."""
    best = None
    for _ in range(restarts):
        basis, hess = arnoldi(apply, v, steps)
        k = hess.shape[2]
        theta, vecs = torch.linalg.eig(hess[:, :k, :k])
        idx = theta.abs().argmax(dim=1)
        best = theta.gather(1, idx[:, None])[:, 0]
        y = vecs.gather(2, idx[:, None, None].expand(-1, k, 1))[:, :, 0]  # (B, k)
        # Ritz residual of Arnoldi: |h_{k+1,k}| |e_k^T y|.
        residual = hess[:, k, k - 1].abs() * y[:, -1].abs()
        if bool((residual <= tol * best.abs().clamp_min(1e-30)).all()):
            break
        ritz = torch.einsum("bk,bkn->bn", y, basis[:, :k].to(y.dtype))
        v = ritz.real + ritz.imag
    return best


def operator_norm(f: Map, h: Tensor, steps: int = 30, seed: int = 0) -> Tensor:
    """||df/dh||_2 at h, per sample: Lanczos on J^T J (largest Ritz value). (B,)"""
    jv, jtv = jvp_operator(f, h), vjp_operator(f, h)
    vals = _lanczos_extremes(lambda v: jtv(jv(v)), _start(h, seed), steps)
    return vals[1].clamp_min(0).sqrt()


def _lanczos_extremes(apply: Operator, v0: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """(smallest, largest) Ritz values (B,) of a symmetric operator by Lanczos
    with full reorthogonalization."""
    basis, hess = arnoldi(apply, v0, steps)
    k = hess.shape[2]
    tri = hess[:, :k, :k]
    tri = 0.5 * (tri + tri.transpose(1, 2))  # symmetric in exact arithmetic
    vals = torch.linalg.eigvalsh(tri)
    return vals[:, 0], vals[:, -1]


def singular_values(
    f: Map,
    h: Tensor,
    steps: int = 60,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """(sigma_min, sigma_max) of I - df/dh at h, per sample, matrix-free.

    Golub-Kahan-Lanczos bidiagonalization of A = I - J with full
    reorthogonalization: its bidiagonal's singular values are Ritz values of
    A's. sigma_max converges fast; sigma_min converges from above, exactly
    once `steps` reaches N. Each step costs one JVP and one VJP.

    Returns two (B,) tensors.
    """
    jv, jtv = jvp_operator(f, h), vjp_operator(f, h)
    a = lambda v: v - jv(v)  # noqa: E731
    at = lambda u: u - jtv(u)  # noqa: E731
    bidiag = _golub_kahan(a, at, _start(h, seed), steps)
    # A zero on the diagonal marks a breakdown: the Krylov space became
    # invariant and the leading block already holds exact singular values;
    # the zero rows after it would add spurious zeros.
    diag = bidiag.diagonal(dim1=1, dim2=2)
    live = (diag != 0).long().cumprod(dim=1).sum(dim=1).clamp_min(1)
    s_min, s_max = [], []
    for b, k in enumerate(live.tolist()):
        sv = torch.linalg.svdvals(bidiag[b, :k, :k])
        s_min.append(sv[-1])
        s_max.append(sv[0])
    return torch.stack(s_min), torch.stack(s_max)


def _golub_kahan(a: Operator, at: Operator, v0: Tensor, steps: int) -> Tensor:
    """Lower-level bidiagonalization A V = U B; returns B (B, k, k) upper bidiagonal."""
    batch, n = v0.shape
    steps = min(steps, n)
    dtype, device = v0.dtype, v0.device
    vs = torch.zeros(batch, steps, n, dtype=dtype, device=device)
    us = torch.zeros(batch, steps, n, dtype=dtype, device=device)
    bd = torch.zeros(batch, steps, steps, dtype=dtype, device=device)
    tiny = torch.finfo(dtype).eps
    v = _unit(v0)
    for j in range(steps):
        vs[:, j] = v
        av = a(v)
        u = av - bd[:, j - 1, j, None] * us[:, j - 1] if j > 0 else av
        u = _orthogonalize(u, us[:, :j])[0] if j > 0 else u
        alpha = torch.where(_breakdown(u, av), torch.zeros_like(u[:, 0]), u.norm(dim=1))
        bd[:, j, j] = alpha
        u = torch.where((alpha > 0)[:, None], u / alpha.clamp_min(tiny)[:, None], torch.zeros_like(u))
        us[:, j] = u
        if j + 1 == steps:
            break
        atu = at(u)
        w, _ = _orthogonalize(atu - alpha[:, None] * v, vs[:, : j + 1])
        beta = torch.where(_breakdown(w, atu), torch.zeros_like(alpha), w.norm(dim=1))
        bd[:, j, j + 1] = beta
        v = torch.where((beta > 0)[:, None], w / beta.clamp_min(tiny)[:, None], torch.zeros_like(w))
    return bd


def gmres(
    apply: Operator,
    b: Tensor,
    steps: int = 60,
    restarts: int = 5,
    tol: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Solve A x = b per sample by restarted GMRES.

    Args:
        apply: A, (B, N) -> (B, N).
        b: (B, N) right-hand sides.
        steps: Krylov dimension per cycle; restarts: cycles at most.
        tol: relative residual ||b - A x|| / ||b|| to stop at.
    Returns:
        x (B, N) and its relative residual (B,).
    """
    x = torch.zeros_like(b)
    bnorm = b.norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    rel = torch.ones_like(bnorm)
    for _ in range(restarts):
        r = b - apply(x)
        rnorm = r.norm(dim=1)
        rel = rnorm / bnorm
        if bool((rel <= tol).all()):
            break
        basis, hess = arnoldi(apply, r, steps)
        k = hess.shape[2]
        rhs = torch.zeros(b.shape[0], k + 1, 1, dtype=b.dtype, device=b.device)
        rhs[:, 0, 0] = rnorm
        y = torch.linalg.lstsq(hess, rhs).solution[:, :, 0]  # (B, k)
        x = x + torch.einsum("bk,bkn->bn", y, basis[:, :k])
    rel = (b - apply(x)).norm(dim=1) / bnorm
    return x, rel
