"""The record every iterative numerical result comes back in.

An iterative method (Arnoldi, Lanczos, GMRES, a fixed-point solve) gives an
approximation, not a number: `Estimate` keeps the value together with
whether it met its stopping test, the error estimate that test read, and what
it cost, so no caller can use the value without seeing its quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Estimate:
    """An iterative result, per sample.

    value:      (B,) the estimated quantity, or (B, N) for a solve's solution.
    converged:  (B,) bool, error <= tol.
    error:      (B,) the error estimate named by `error_kind` (relative, so
                comparable with tol); inf where it could not be formed.
    tol:        the error that counts as converged.
    products:   operator applications spent on the whole batch (one JVP or
                one VJP each; a solve inside counts its own products).
    method:     what computed it, e.g. "krylov-schur(m=40)".
    error_kind: what `error` measures, e.g. "relative Ritz residual".
    details:    further per-sample figures of the method, (B,) each (e.g. a
                solve's operator-norm estimate).
    """

    value: Tensor
    converged: Tensor
    error: Tensor
    tol: float
    products: int
    method: str
    error_kind: str
    details: dict[str, Tensor] = field(default_factory=dict)

    @staticmethod
    def checked(value: Tensor, error: Tensor, tol: float, products: int, method: str, error_kind: str,
                details: dict[str, Tensor] | None = None) -> Estimate:
        """An Estimate whose `converged` is error <= tol (non-finite errors never converge)."""
        error = torch.where(torch.isfinite(error), error, torch.full_like(error, float("inf")))
        return Estimate(value, error <= tol, error, tol, products, method, error_kind, dict(details or {}))

    def record(self) -> dict[str, Any]:
        """JSON-ready per-sample summary (the value itself only when it is one number per sample)."""
        out: dict[str, Any] = {}
        if self.value.dim() == 1:
            out["value"] = self.value.detach().cpu().double().tolist()
        out.update(
            converged=self.converged.cpu().tolist(),
            error=self.error.detach().cpu().double().tolist(),
            error_kind=self.error_kind,
            tol=self.tol,
            products=self.products,
            method=self.method,
        )
        for key, val in self.details.items():
            out[key] = val.detach().cpu().double().tolist()
        return out
