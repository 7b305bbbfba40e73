"""Small maps with known answers, shared by the fixed-point tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def random_matrices(seed: int, batch: int, n: int, gain: float, dtype=torch.float64) -> Tensor:
    """(batch, n, n) matrices with spectral norm exactly `gain`."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=gen, dtype=dtype)
    return gain * a / torch.linalg.matrix_norm(a, 2)[:, None, None]


class TanhCore(nn.Module):
    """h' = tanh(W h + U e) per token (recall) or tanh(W h + b) (no recall).

    tanh is 1-Lipschitz, so ||W||_2 < 1 makes the map a contraction in h.
    States are (B, n_tokens, d); tokens do not interact.
    """

    looped = True

    def __init__(self, d: int, in_dim: int, gain: float, recall: bool, seed: int, dtype=torch.float64) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(d, d, generator=gen, dtype=dtype)
        self.W = nn.Parameter(gain * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(d, d, generator=gen, dtype=dtype) / d**0.5)
        self.b = nn.Parameter(torch.randn(d, generator=gen, dtype=dtype))
        self.P = nn.Parameter(torch.randn(d, in_dim, generator=gen, dtype=dtype))
        self.R = nn.Parameter(torch.randn(2, d, generator=gen, dtype=dtype))
        self.recall = recall
        self.has_input_injection = recall

    def encode(self, x: Tensor) -> Tensor:
        return x @ self.P.T

    def init_state(self, e: Tensor) -> Tensor:
        return e

    def step(self, h: Tensor, e: Tensor) -> Tensor:
        drive = e @ self.U.T if self.recall else self.b
        return torch.tanh(h @ self.W.T + drive)

    def readout(self, h: Tensor) -> Tensor:
        return h @ self.R.T
