"""Sparse Markov chains of orders 1..3 over a small alphabet: build, check, sample, score.

A chain of order k over V tokens has one transition row per context (the
last k tokens, read as a base-V number: V^k rows). A row allows a few
successors (1..MAX_SUCCESSORS, drawn uniformly, distinct tokens drawn
uniformly) with probabilities drawn from a symmetric Dirichlet(ALPHA); a
row with one successor is deterministic. A sequence of the mixture first
draws its chain (uniformly), then k initial tokens uniformly and
independently, then each next token from the row of its context.

Everything is a pure function of its seeds: `build_chains(chain_seed)` fixes
the chains; `sample` draws sequences from a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpstab.tasks.parallel import stream_tag

VOCAB = 8  # tokens 0..7
ORDERS = (1, 2, 3)  # one chain per order: the mixture's components, chain id i has order ORDERS[i]
MAX_SUCCESSORS = 4
ALPHA = 0.3  # Dirichlet concentration of a row's probabilities (< 1: rows often dominated by one successor)


@dataclass(frozen=True, eq=False)
class Chain:
    """A sparse order-k chain.

    successors: int64 (V^k, MAX_SUCCESSORS), the allowed next tokens of each
    context, -1 after the row's last one; probs: float64 of the same shape,
    their probabilities (0 on padding, each row sums to 1). Context id of
    (x_{t-k+1}, ..., x_t) = sum_j x_{t-k+1+j} * V^(k-1-j).
    """

    order: int
    successors: np.ndarray
    probs: np.ndarray

    def dense(self) -> np.ndarray:
        """float64 (V^k, V): the full transition matrix, P[c, v] = p(v | context c)."""
        out = np.zeros((len(self.successors), VOCAB))
        rows, cols = np.nonzero(self.successors >= 0)
        out[rows, self.successors[rows, cols]] = self.probs[rows, cols]
        return out


def build_chain(order: int, rng: np.random.Generator) -> Chain:
    """One random sparse chain of `order` (see the module docstring)."""
    n_ctx = VOCAB ** order
    successors = np.full((n_ctx, MAX_SUCCESSORS), -1, dtype=np.int64)
    probs = np.zeros((n_ctx, MAX_SUCCESSORS))
    for c in range(n_ctx):
        s = int(rng.integers(1, MAX_SUCCESSORS + 1))
        successors[c, :s] = rng.choice(VOCAB, size=s, replace=False)
        probs[c, :s] = rng.dirichlet(np.full(s, ALPHA))
    chain = Chain(order, successors, probs)
    check_chain(chain)
    return chain


def build_chains(chain_seed: int) -> tuple[Chain, ...]:
    """The mixture's chains, one per order in ORDERS, fixed by `chain_seed` (>= 0)."""
    if isinstance(chain_seed, bool) or not isinstance(chain_seed, (int, np.integer)) or chain_seed < 0:
        raise ValueError(f"chain_seed must be an int >= 0, got {chain_seed!r}")
    rng = np.random.default_rng([int(chain_seed), stream_tag("markov_chain")])
    return tuple(build_chain(k, rng) for k in ORDERS)


def check_chain(chain: Chain) -> None:
    """Raise ValueError naming the first bad row: successors in 0..V-1, distinct, padded with
    -1 after the last; probabilities > 0 on successors, 0 on padding, summing to 1."""
    n_ctx = VOCAB ** chain.order
    if chain.successors.shape != (n_ctx, MAX_SUCCESSORS) or chain.probs.shape != chain.successors.shape:
        raise ValueError(f"order-{chain.order} chain: successors {chain.successors.shape} and probs "
                         f"{chain.probs.shape} must both be ({n_ctx}, {MAX_SUCCESSORS})")
    for c, (succ, p) in enumerate(zip(chain.successors, chain.probs)):
        problem = _row_problem(succ, p)
        if problem:
            raise ValueError(f"order-{chain.order} chain, row {c}: {problem}")


def _row_problem(succ: np.ndarray, p: np.ndarray) -> str | None:
    s = int((succ >= 0).sum())
    if s < 1 or (succ[:s] < 0).any() or (succ[s:] != -1).any():
        return f"successors {succ.tolist()} must be 1..{MAX_SUCCESSORS} tokens, then -1 padding"
    if (succ[:s] >= VOCAB).any() or len(set(succ[:s].tolist())) != s:
        return f"successors {succ[:s].tolist()} must be distinct tokens in 0..{VOCAB - 1}"
    if not (p[:s] > 0).all() or (p[s:] != 0).any() or abs(p.sum() - 1) > 1e-9:
        return f"probabilities {p.tolist()} must be > 0 on the successors, 0 on padding, and sum to 1"
    return None


def context_ids(tokens: np.ndarray, order: int) -> np.ndarray:
    """tokens int (n, m) -> int64 (n, m): id of the context ending at t (tokens t-order+1..t),
    -1 for t < order - 1 (the context is not complete yet)."""
    n, m = tokens.shape
    ids = np.full((n, m), -1, dtype=np.int64)
    if m >= order:
        acc = np.zeros((n, m - order + 1), dtype=np.int64)
        for j in range(order):
            acc = acc * VOCAB + tokens[:, j:m - order + 1 + j]
        ids[:, order - 1:] = acc
    return ids


def sample(chains: tuple[Chain, ...], n: int, length: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of length + 1 tokens from the uniform mixture of `chains`.

    Returns chain_ids int64 (n,) and tokens int64 (n, length + 1). The draws
    from `rng` do not depend on the chains' contents: chain ids (n,),
    initial tokens (n, max order), uniforms (n, length + 1).
    """
    chain_ids = rng.integers(0, len(chains), size=n)
    max_order = max(c.order for c in chains)
    initial = rng.integers(0, VOCAB, size=(n, max_order))
    u = rng.random((n, length + 1))
    tokens = np.empty((n, length + 1), dtype=np.int64)
    for i, chain in enumerate(chains):
        rows = np.flatnonzero(chain_ids == i)
        tokens[rows] = _walk(chain, initial[rows], u[rows], length + 1)
    return chain_ids.astype(np.int64), tokens


def _walk(chain: Chain, initial: np.ndarray, u: np.ndarray, m: int) -> np.ndarray:
    """m tokens per row: the first `order` from `initial`, then inverse-CDF draws with u (n, m)."""
    k = chain.order
    cum = np.cumsum(chain.probs, axis=1)
    n_succ = (chain.successors >= 0).sum(1)
    tokens = np.empty((len(initial), m), dtype=np.int64)
    tokens[:, :min(k, m)] = initial[:, :min(k, m)]
    ctx = context_ids(tokens[:, :k], k)[:, -1] if m > k else None
    for t in range(k, m):
        j = np.minimum((u[:, t, None] >= cum[ctx]).sum(1), n_succ[ctx] - 1)  # clip: rounding of the last cum
        tokens[:, t] = chain.successors[ctx, j]
        ctx = (ctx * VOCAB + tokens[:, t]) % (VOCAB ** k)
    return tokens


def conditionals(chains: tuple[Chain, ...], chain_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The true next-token distribution at every position given the prefix and the chain.

    chain_ids (n,), tokens (n, L + 1) -> float64 (n, L, V): row t is
    p(x_{t+1} | x_0..x_t, chain), uniform while fewer than `order` tokens are known.
    """
    n, m = tokens.shape
    out = np.full((n, m - 1, VOCAB), 1.0 / VOCAB)
    for i, chain in enumerate(chains):
        rows = np.flatnonzero(chain_ids == i)
        if len(rows) == 0:
            continue
        ctx = context_ids(tokens[rows, :-1], chain.order)
        known = ctx >= 0
        block = out[rows]
        block[known] = chain.dense()[ctx[known]]
        out[rows] = block
    return out


def information(cond: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """-log p(x_{t+1} | x_0..x_t, chain) in nats: cond (n, L, V), tokens (n, L + 1) -> (n, L).
    inf marks a transition the chain does not allow."""
    p = np.take_along_axis(cond, tokens[:, 1:, None], axis=2)[..., 0]
    with np.errstate(divide="ignore"):
        return -np.log(p)


def bayes_answers(cond: np.ndarray) -> np.ndarray:
    """The Bayes-optimal next tokens (every argmax of the true conditional, ties all kept).

    cond (n, L, V) -> int64 (n, k, L): answers[i, j, t] is the j-th optimal
    token at position t, -1 after the last; k is the most ties anywhere.
    """
    best = cond == cond.max(axis=2, keepdims=True)  # (n, L, V)
    k = int(best.sum(2).max()) if best.size else 1
    # Optimal tokens first (stable, in token order), then -1.
    order = np.argsort(~best, axis=2, kind="stable")[..., :k]  # (n, L, k)
    taken = np.take_along_axis(best, order, axis=2)
    return np.where(taken, order, -1).transpose(0, 2, 1).astype(np.int64)
