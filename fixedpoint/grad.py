"""Gradients through a fixed point: implicit (IFT) and phantom.

Both take the map f (closing over its input encoding and parameters) and a
fixed point h* found without gradients, and return a tensor equal in value to
f(h*) (implicit) or to k further steps (phantom) whose backward pass sends
gradients to whatever f depends on. Unrolled backprop needs no helper: run
the iterations with autograd on.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fpstab.fixedpoint.estimate import Estimate
from fpstab.fixedpoint.krylov import default_tol, gmres

Map = Callable[[Tensor], Tensor]


def implicit_gradient(
    f: Map,
    h_star: Tensor,
    steps: int = 40,
    restarts: int = 5,
    tol: float | None = None,
    on_solve: Callable[[Estimate], None] | None = None,
) -> Tensor:
    """f(h*) with the implicit-function-theorem backward.

    For a loss L(z), z = f(h*, theta), the exact gradient through the fixed
    point is dL/dtheta = y^T df/dtheta with y = (I - J^T)^{-1} dL/dz,
    J = df/dh at h*. The backward hook replaces dL/dz by y, solved matrix-free
    by GMRES on VJPs; h* itself is a detached leaf, so nothing flows through
    the solver's iterations.

    Under autocast the VJPs run in the autocast dtype (bf16, fp16); the solve
    itself (basis, coefficients) runs in at least float32, and its tolerance
    is what the VJPs' dtype can reach.

    Args:
        f: batched map (B, ...) -> (B, ...).
        h_star: (B, ...) fixed point (detached internally).
        steps, restarts: GMRES Krylov dimension and cycles of the backward solve.
        tol: its relative residual (default: `default_tol` of the VJPs' dtype).
        on_solve: called with the backward solve's Estimate (its relative
            residual and convergence), e.g. to record it.
    Returns:
        (B, ...) tensor equal to f(h_star).
    """
    h = h_star.detach().requires_grad_()
    z = f(h)
    if not z.requires_grad:
        return z
    product_dtype = _product_dtype(z)
    tol = default_tol(product_dtype) if tol is None else tol
    inside = {"solving": False}

    def hook(grad: Tensor) -> Tensor:
        if inside["solving"]:  # our own VJPs below pass straight through
            return grad
        inside["solving"] = True
        try:
            work = torch.promote_types(grad.dtype, torch.float32)
            flat = grad.reshape(grad.shape[0], -1).to(work)

            def a_transpose(v: Tensor) -> Tensor:
                (jt,) = torch.autograd.grad(z, h, v.reshape(grad.shape).to(z.dtype), retain_graph=True)
                return v - jt.reshape(v.shape).to(work)

            est = gmres(a_transpose, flat, steps=steps, restarts=restarts, tol=tol)
        finally:
            inside["solving"] = False
        if on_solve is not None:
            on_solve(est)
        return est.value.to(grad.dtype).reshape(grad.shape)

    z.register_hook(hook)
    return z


def _product_dtype(z: Tensor) -> torch.dtype:
    """The precision the backward products of z run in: z's dtype, or the
    autocast dtype when autocast is on (it casts the matmuls' inputs)."""
    device = z.device.type
    try:
        enabled, low = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except (AttributeError, TypeError):  # torch < 2.4: no per-device autocast queries
        return z.dtype
    if enabled and torch.finfo(low).eps > torch.finfo(z.dtype).eps:
        return low
    return z.dtype


def phantom_gradient(f: Map, h_star: Tensor, steps: int = 5, damping: float = 0.5) -> Tensor:
    """k damped differentiable steps from a detached fixed point.

    h <- (1 - damping) h + damping f(h), `steps` times, starting at h*.
    The gradient is the phantom (truncated unrolled) approximation of the
    implicit one (Geng et al. 2021); damping 1 gives plain unrolling of the
    last k steps. Returns (B, ...).
    """
    if steps < 1:
        raise ValueError(f"phantom steps={steps} must be >= 1")
    if not 0 < damping <= 1:
        raise ValueError(f"phantom damping={damping} must be in (0, 1]")
    h = h_star.detach()
    for _ in range(steps):
        h = (1 - damping) * h + damping * f(h)
    return h
