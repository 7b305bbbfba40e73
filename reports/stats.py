"""Rank correlation with a bootstrap interval, for tables of runs (plain numbers in, numbers out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho between two paired samples and a percentile bootstrap interval.

    n: pairs with both values finite; rho None when n < 3 or a side is constant.
    lo, hi: the (1 - alpha) percentile interval of rho over `boot` resamples of the
    pairs (resamples with a constant side are skipped; `boot_used` counts the rest).
    """

    rho: float | None
    lo: float | None
    hi: float | None
    n: int
    boot_used: int
    alpha: float

    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0."""
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)


def finite_pairs(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (x_i, y_i) where both are finite numbers, as two float arrays."""
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} vs {len(y)}")
    keep = [(a, b) for a, b in zip(x, y) if _finite(a) and _finite(b)]
    return np.array([a for a, _ in keep], dtype=float), np.array([b for _, b in keep], dtype=float)


def spearman(x: Sequence[float | None], y: Sequence[float | None], boot: int = 2000, alpha: float = 0.05,
             seed: int = 0) -> Correlation:
    """Spearman's rho of the finite pairs of x and y, with a seeded percentile bootstrap interval."""
    xs, ys = finite_pairs(x, y)
    n = len(xs)
    rho = _rho(xs, ys)
    if rho is None:
        return Correlation(None, None, None, n, 0, alpha)
    idx = np.random.default_rng(seed).integers(0, n, size=(boot, n))
    draws = _rank_correlations(stats.rankdata(xs[idx], axis=1), stats.rankdata(ys[idx], axis=1))
    used = draws[np.isfinite(draws)]
    if len(used) == 0:
        return Correlation(rho, None, None, n, 0, alpha)
    lo, hi = np.quantile(used, [alpha / 2, 1 - alpha / 2])
    return Correlation(rho, float(lo), float(hi), n, int(len(used)), alpha)


def _rank_correlations(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of rank arrays (boot, n): Spearman's rho per resample, NaN where a
    resample has a constant side."""
    dx = rx - rx.mean(axis=1, keepdims=True)
    dy = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (dx * dy).sum(axis=1) / den, np.nan)


def _rho(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(stats.spearmanr(x, y).statistic)


def _finite(v: float | None) -> bool:
    return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
