"""Scaled dot-product attention, on a fused kernel wherever the derivatives allow one.

PyTorch's fused SDPA kernels (flash / memory-efficient / cuDNN, and the CPU
flash kernel) have an ordinary backward, but no forward-mode derivative, no
batching rule on every backend and no double backward. Their composite MATH
backend has all three and materializes the (n, n) attention matrix (measured:
5-10x slower on CPU). So MATH runs only where it is needed and can be seen at
forward time:

- inside any torch.func transform (vmap, grad, vjp, jvp, jacrev, jacfwd,
  hessian, ...), which covers double backward done with torch.func;
- inside a forward-mode AD dual level (torch.autograd.forward_ad).

Ordinary training (autograd, first-order backward) and no-grad evaluation
use the fused kernels. Double backward through plain autograd
(`torch.autograd.grad(..., create_graph=True)` then a second backward)
cannot be detected when the forward runs: the fused backward then fails
with "derivative for aten::_scaled_dot_product_..._backward is not
implemented". Run such a forward under
`torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`, or use torch.func.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel


def needs_math_sdpa() -> bool:
    """True inside a torch.func transform or a forward-AD dual level (see the module docstring).

    A torch without the functorch level query gets True: slower, never wrong.
    """
    current_level = getattr(torch._C._functorch, "maybe_current_level", None)
    if current_level is None:
        return True
    in_func = current_level() is not None
    in_forward_ad = getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
    return in_func or in_forward_ad


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) v; causal: query i sees keys j <= i only.

    q (..., n_q, head_dim), k and v (..., n_k, head_dim), mask None or bool
    broadcastable to (..., n_q, n_k) (True = may attend) -> (..., n_q, head_dim).
    causal needs mask None (SDPA takes one or the other).
    """
    if causal and mask is not None:
        raise ValueError("attend: causal=True takes no mask (SDPA's is_causal excludes attn_mask)")
    if torch.compiler.is_compiling() or not needs_math_sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
