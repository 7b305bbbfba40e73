"""Small maps with known answers, shared by the fixed-point tests."""

from __future__ import annotations

import math

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


def spectrum_matrices(n: int, batch: int, top: tuple[float, ...] = (), pairs: tuple[tuple[float, float], ...] = (),
                      bulk: float = 0.5, nonnormal: float = 0.3, seed: int = 0) -> Tensor:
    """(batch, n, n) matrices J = S D S^-1 with a known spectrum.

    D: the real eigenvalues `top`, a 2x2 rotation block per (modulus, angle)
    in `pairs` (a complex-conjugate pair), and a random block of spectral
    radius `bulk` for the rest. S = Q (I + nonnormal * G / sqrt(n)), Q
    orthogonal, G Gaussian: nonnormal = 0 gives a normal J.
    """
    out = []
    for b in range(batch):
        gen = torch.Generator().manual_seed(seed * 1000 + b)
        d = torch.zeros(n, n, dtype=torch.float64)
        i = 0
        for t in top:
            d[i, i] = t
            i += 1
        for r, a in pairs:
            c, s = r * math.cos(a), r * math.sin(a)
            d[i:i + 2, i:i + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
            i += 2
        rest = torch.randn(n - i, n - i, generator=gen, dtype=torch.float64)
        d[i:, i:] = bulk * rest / torch.linalg.eigvals(rest).abs().max()
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        s_mat = q @ (torch.eye(n, dtype=torch.float64) + nonnormal * torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5)
        out.append(s_mat @ d @ torch.linalg.inv(s_mat))
    return torch.stack(out)


def linear_map(mats: Tensor):
    """h (B, n) -> J_b h_b: a batched linear map with Jacobian `mats`."""
    return lambda h: torch.matmul(mats, h.unsqueeze(-1)).squeeze(-1)
