"""Markov sequences: next-token prediction, a ladder by information content and by length.

Gong, Teng and Liu (arXiv 2510.10089) train on synthetic Markov sequences
whose difficulty is set by their information content, with a long tail from
simple to complex patterns; their generator (states, transition matrix,
lengths) is not published. This is our own recipe, chosen to have exactly
that property and an exact Bayes-optimal predictor to score against.

Generator (`fpstab.tasks.markov_chain`): a uniform mixture of three sparse
chains over V = 8 tokens, of orders 1, 2 and 3. Each context's row allows
1..4 distinct successors (count and tokens uniform) with Dirichlet(0.3)
probabilities, so some rows are (nearly) deterministic and others split
their mass: a sequence that stays among peaked rows repeats a short pattern
(low information), one that wanders among flat rows is complex. The k
initial tokens of an order-k sequence are uniform. The chains are fixed by
the task's `chain_seed` (default 0; part of `cache_variant` and of every
set's `Provenance.variant`): train and test sets share them, the data seed
only draws sequences.

Information content of a sequence of L + 1 tokens: I = sum_{t=0}^{L-1}
-log p(x_{t+1} | x_0..x_t, chain) in nats, the Bayes-optimal predictor's
cross-entropy on the targets (while fewer than k tokens are known the
conditional is uniform: log 8 per token). Reported per token, I / L, it is
the loss floor of the level: compare it with the model's loss.

Encoding: inputs x_0..x_{L-1} one-hot (8 channels) followed by the one-hot
chain id (3 channels, the same at every token), in_dim 11; targets
x_1..x_L, out_dim 8. The chain id is given so that the true conditional is
the generating chain's row: the Bayes predictor and the information labels
are then exact, and difficulty comes from the patterns, not from guessing
which chain (and context length) is in play. Attention is causal
(`causal = True`): position t must not read x_{t+1}, its own target.

Ladder. Levels "32", "64", "128", "256" are the natural mixture at that
length. "low<L>", "mid<L>", "high<L>" keep the sequences whose per-token
information falls in the lower, middle or upper third of the natural
distribution at the training length 32 (band edges: terciles of 8192
reference sequences drawn from the chains with a fixed stream, see
`band_edges`; the same edges at every length). Train "32"; test low32,
mid32, high32, 64, 128. A set is the first n sequences (in band) of a
stream seeded by (seed, length), drawn in chunks of CHUNK: sets are
prefixes of larger ones, and "low32" holds the low-information sequences
of the "32" stream with the same seed. Low-information sequences repeat:
a deterministic cycle gives the same sequence in train and test sets.

Scoring. The next token is random, so `correct` (exact match per sequence,
as `fpstab eval` and training read it) asks that the argmax at every
position be Bayes-optimal: a token of maximal true conditional probability
(ties: all of them, via `answers`; at the uniform initial positions every
token is right). `token_accuracy` is against the realized next token.
`metrics` adds bayes_token_acc and the model's nll, and, given each
sequence's information per token (`TaskBatch.labels["info_per_token"]`),
the Bayes nll, the excess nll and the accuracies of the simple
(<= lower edge) and complex (> upper edge) sequences; `sequence_metrics`
gives the per-sequence values a report can split any other way.

Measured (chain seed 0, data seed 0, 2000 sequences per level, one core):

    python3 benchmarks/task_ladders.py --task markov --n 2000

| level   | seq/CPU s | info/token (nats) min / q1 / median / q3 / max | orders 1/2/3 % | Bayes acc | distinct |
|---------|-----------|------------------------------------------------|----------------|-----------|----------|
| low32   |       17k | 0.065 / 0.135 / 0.202 / 0.312 / 0.380          | 3 / 84 / 13    |     93.6% |    66.3% |
| mid32   |       52k | 0.380 / 0.422 / 0.462 / 0.499 / 0.535          | 30 / 13 / 57   |     84.8% |   100.0% |
| high32  |       40k | 0.535 / 0.574 / 0.623 / 0.694 / 1.064          | 70 / 3 / 28    |     76.6% |   100.0% |
| 32      |      143k | 0.065 / 0.300 / 0.459 / 0.568 / 1.012          | 35 / 34 / 31   |     85.2% |    91.9% |
| low64   |       21k | 0.032 / 0.073 / 0.125 / 0.263 / 0.380          | 0 / 79 / 20    |     94.2% |    73.4% |
| mid64   |       21k | 0.380 / 0.419 / 0.455 / 0.492 / 0.535          | 25 / 2 / 73    |     83.4% |   100.0% |
| high64  |       14k | 0.535 / 0.577 / 0.618 / 0.675 / 1.016          | 91 / 0 / 9     |     77.3% |   100.0% |
| 64      |       46k | 0.032 / 0.163 / 0.433 / 0.560 / 1.016          | 35 / 32 / 32   |     85.9% |    92.5% |
| low128  |       14k | 0.016 / 0.038 / 0.069 / 0.308 / 0.380          | 0 / 73 / 27    |     94.6% |    76.8% |
| mid128  |        8k | 0.380 / 0.404 / 0.431 / 0.471 / 0.535          | 16 / 0 / 84    |     82.8% |   100.0% |
| high128 |        7k | 0.535 / 0.578 / 0.613 / 0.652 / 0.859          | 99 / 0 / 1     |     78.2% |   100.0% |
| 128     |       33k | 0.016 / 0.086 / 0.404 / 0.564 / 0.803          | 35 / 32 / 33   |     86.6% |    92.9% |
| low256  |        7k | 0.008 / 0.020 / 0.038 / 0.338 / 0.380          | 0 / 71 / 29    |     94.8% |    79.6% |
| mid256  |        4k | 0.380 / 0.394 / 0.409 / 0.433 / 0.534          | 9 / 0 / 91     |     82.6% |   100.0% |
| high256 |        6k | 0.535 / 0.579 / 0.606 / 0.635 / 0.754          | 100 / 0 / 0    |     78.7% |   100.0% |
| 256     |       18k | 0.008 / 0.047 / 0.394 / 0.577 / 0.741          | 35 / 31 / 34   |     86.7% |    93.7% |

seq/CPU s: sequences per CPU second inside `generate_set` (band levels
reject the sequences outside the band; low32, measured first, also
includes the one-time chain build, 0.06 CPU s, and band edges, 0.13 CPU s).
Bayes acc: share of realized next tokens that are Bayes-optimal, the
ceiling of token_acc. distinct: share of distinct sequences in the set.
Band edges (chain seed 0): low <= 0.380 < mid <= 0.535 < high nats per
token. What the bands mean in this mixture: at length 32 every chain
feeds every band, but the longer the sequence, the more its information
per token settles at its chain's rate, so at 128 and beyond the bands are
almost the chains (low: orders 2 and 3 trapped in deterministic cycles;
high: the order-1 chain). Repeats: of 1000 low32 sequences (seed 2),
61.3 % occur verbatim in a 40000-sequence "32" training set (seed 0);
of mid32 and high32 none, of the natural 32 21.7 %.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpstab.tasks import markov_chain as mc
from fpstab.tasks.base import Ladder, Task
from fpstab.tasks.parallel import stream_tag

LENGTHS = (32, 64, 128, 256)
TRAIN_LENGTH = 32
BANDS = ("low", "mid", "high")
CHUNK = 1024  # sequences drawn per chunk of a set's stream (fixed: sets are prefixes of larger ones)
MAX_CHUNKS = 10_000  # a band this rare at some length is an error, not an endless loop
REFERENCE_N = 8192  # sequences that fix the band edges
IN_DIM = mc.VOCAB + len(mc.ORDERS)
GENERATOR_VERSION = 1


@dataclass(frozen=True, eq=False)
class MarkovSet:
    """A set of sequences.

    tokens: int64 (n, L + 1), x_0..x_L; chain_ids: int64 (n,), index into
    `markov_chain.ORDERS`; info: float64 (n, L), -log p of each target in nats.
    """

    tokens: np.ndarray
    chain_ids: np.ndarray
    info: np.ndarray
    level: str
    seed: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def info_per_token(self) -> np.ndarray:
        """float64 (n,): information content / L, nats per predicted token."""
        return self.info.mean(1)


def parse_level(level: str) -> tuple[str | None, int]:
    """'low32' -> ('low', 32); '64' -> (None, 64). ValueError unless `level` is a ladder level."""
    if level not in level_names():
        raise ValueError(f"unknown markov level {level!r}; allowed: {', '.join(level_names())}")
    for band in BANDS:
        if level.startswith(band):
            return band, int(level[len(band):])
    return None, int(level)


def level_names() -> tuple[str, ...]:
    """Per length: the three bands, then the natural mixture."""
    return tuple(name for n in LENGTHS for name in (*(f"{b}{n}" for b in BANDS), str(n)))


@functools.lru_cache(maxsize=8)
def chains_for(chain_seed: int) -> tuple[mc.Chain, ...]:
    """The mixture's chains for `chain_seed` (built once per process)."""
    return mc.build_chains(chain_seed)


def draw(chains: tuple[mc.Chain, ...], n: int, length: int, rng: np.random.Generator) -> MarkovSet:
    """n sequences of `length` targets from `rng`, with their information labels (level '', seed -1)."""
    chain_ids, tokens = mc.sample(chains, n, length, rng)
    info = mc.information(mc.conditionals(chains, chain_ids, tokens), tokens)
    return MarkovSet(tokens, chain_ids, info, "", -1)


@functools.lru_cache(maxsize=8)
def band_edges(chain_seed: int) -> tuple[float, float]:
    """(lower, upper) per-token information edges in nats: the terciles of REFERENCE_N natural
    sequences of length TRAIN_LENGTH from a fixed stream of the chains of `chain_seed`."""
    rng = np.random.default_rng([stream_tag("markov_reference"), TRAIN_LENGTH])
    ref = draw(chains_for(chain_seed), REFERENCE_N, TRAIN_LENGTH, rng).info_per_token
    lo, hi = np.quantile(ref, [1 / 3, 2 / 3])
    return float(lo), float(hi)


def in_band(info_per_token: np.ndarray, band: str | None, edges: tuple[float, float]) -> np.ndarray:
    """bool (n,): low <= lower edge < mid <= upper edge < high; None keeps all."""
    lo, hi = edges
    if band is None:
        return np.ones(len(info_per_token), dtype=bool)
    return {"low": info_per_token <= lo, "mid": (info_per_token > lo) & (info_per_token <= hi),
            "high": info_per_token > hi}[band]


def generate(level: str, n: int, seed: int, chain_seed: int = 0) -> MarkovSet:
    """The first n sequences of `level`'s stream for `seed` (see the module docstring)."""
    band, length = parse_level(level)
    chains, edges = chains_for(chain_seed), band_edges(chain_seed)
    kept: list[MarkovSet] = []
    have = 0
    for chunk in range(MAX_CHUNKS):
        rng = np.random.default_rng([seed, stream_tag("markov", str(length)), chunk])
        part = draw(chains, CHUNK, length, rng)
        keep = np.flatnonzero(in_band(part.info_per_token, band, edges))[:n - have]
        kept.append(MarkovSet(part.tokens[keep], part.chain_ids[keep], part.info[keep], level, seed))
        have += len(keep)
        if have == n:
            return MarkovSet(*(np.concatenate([getattr(p, f) for p in kept]) for f in ("tokens", "chain_ids", "info")),
                             level, seed)
    raise ValueError(f"markov level {level!r}: only {have} of {n} sequences in band after "
                     f"{MAX_CHUNKS * CHUNK} draws; ask for fewer or another level")


def validate(data: MarkovSet, chain_seed: int = 0) -> None:
    """Raise ValueError unless every transition is allowed by its chain and the info labels are
    -log p of each target (to 1e-9)."""
    chains = chains_for(chain_seed)
    if data.tokens.ndim != 2 or data.chain_ids.shape != (len(data.tokens),) or data.info.shape != (
            len(data.tokens), data.tokens.shape[1] - 1):
        raise ValueError(f"tokens (n, L+1), chain_ids (n,), info (n, L) expected, got {data.tokens.shape}, "
                         f"{data.chain_ids.shape}, {data.info.shape}")
    if not ((0 <= data.chain_ids) & (data.chain_ids < len(chains))).all() or not (
            (0 <= data.tokens) & (data.tokens < mc.VOCAB)).all():
        raise ValueError(f"chain ids must be in 0..{len(chains) - 1} and tokens in 0..{mc.VOCAB - 1}")
    info = mc.information(mc.conditionals(chains, data.chain_ids, data.tokens), data.tokens)
    bad = np.flatnonzero(~np.isfinite(info).all(1))
    if len(bad):
        raise ValueError(f"sequences {bad[:10].tolist()} take transitions their chain does not allow")
    wrong = np.flatnonzero((np.abs(info - data.info) > 1e-9).any(1))
    if len(wrong):
        raise ValueError(f"info labels of sequences {wrong[:10].tolist()} are not -log p under the chain")


def encode(data: MarkovSet) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs float32 (n, L, 11): one-hot x_0..x_{L-1}, then one-hot chain id; targets int64 (n, L)."""
    tokens = torch.as_tensor(data.tokens, dtype=torch.long)
    n, length = tokens.shape[0], tokens.shape[1] - 1
    chain = F.one_hot(torch.as_tensor(data.chain_ids, dtype=torch.long), len(mc.ORDERS))
    inputs = torch.cat([F.one_hot(tokens[:, :-1], mc.VOCAB), chain[:, None, :].expand(n, length, -1)], -1)
    return inputs.float(), tokens[:, 1:].contiguous()


def bayes_correct(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """logits (B, L, V), answers (B, k, L) -> bool (B, L): the argmax is a Bayes-optimal token."""
    return (logits.argmax(-1)[:, None, :] == answers).any(1)


def sequence_metrics(logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """Per-sequence scores, float32 (B,) each: token_acc (argmax = realized next token),
    nll (model cross-entropy, nats per token) and, with answers (B, k, L),
    bayes_token_acc (argmax Bayes-optimal). logits (B, L, V), targets (B, L)."""
    with torch.no_grad():
        out = {"token_acc": (logits.argmax(-1) == targets).float().mean(-1),
               "nll": F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none").mean(-1)}
        if answers is not None:
            out["bayes_token_acc"] = bayes_correct(logits, answers).float().mean(-1)
    return out


def split_metrics(per_seq: dict[str, torch.Tensor], info_per_token: torch.Tensor, edges: tuple[float, float]
                  ) -> dict[str, float]:
    """Means of `per_seq` over simple (info <= lower edge) and complex (> upper edge) sequences,
    named <metric>_simple / <metric>_complex (NaN when none), their shares, the Bayes nll
    (mean info per token) and the model's excess nll over it. info_per_token (B,)."""
    info = info_per_token.to(per_seq["nll"].device, torch.float32)
    out = {"bayes_nll": float(info.mean()), "excess_nll": float((per_seq["nll"] - info).mean())}
    for name, mask in (("simple", info <= edges[0]), ("complex", info > edges[1])):
        out[f"share_{name}"] = float(mask.float().mean())
        for key, values in per_seq.items():
            out[f"{key}_{name}"] = float(values[mask].mean()) if mask.any() else float("nan")
    return out


class MarkovTask(Task[MarkovSet]):
    """Next-token prediction on sequences of a fixed mixture of sparse Markov chains.

    Levels "32".."256" (natural mix) and "low32".."high256" (information bands);
    see the module docstring. chain_seed fixes the chains (default 0).
    """

    name = "markov"
    in_dim = IN_DIM
    out_dim = mc.VOCAB
    attn_window = None
    causal = True
    version = GENERATOR_VERSION
    cached = False  # ~10^4-10^5 sequences per second; never touches the disk

    def __init__(self, chain_seed: int = 0) -> None:
        chains_for(chain_seed)  # checks the seed
        self.chain_seed = int(chain_seed)

    @property
    def cache_variant(self) -> str:
        return f"chain_seed={self.chain_seed}"

    def ladder(self) -> Ladder:
        return Ladder(levels=level_names(), train=str(TRAIN_LENGTH),
                      test=("low32", "mid32", "high32", "64", "128"))

    def _grid(self, level: str) -> tuple[int, ...]:
        return (parse_level(level)[1],)

    def band_edges(self) -> tuple[float, float]:
        """(lower, upper) per-token information edges of the bands, nats."""
        return band_edges(self.chain_seed)

    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> MarkovSet:
        return generate(level, n, seed, self.chain_seed)

    def _to_arrays(self, data: MarkovSet) -> dict[str, Any]:
        return {"tokens": data.tokens, "chain_ids": data.chain_ids, "info": data.info}

    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> MarkovSet:
        return MarkovSet(arrays["tokens"], arrays["chain_ids"], arrays["info"], level, seed)

    def encode_set(self, data: MarkovSet) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(data)

    def answers_of(self, data: MarkovSet) -> torch.Tensor:
        """int64 (n, k, L): the Bayes-optimal tokens of every position, -1 padded (k = 8 when
        any sequence has order >= 2: its first targets are uniform, every token is right)."""
        cond = mc.conditionals(chains_for(self.chain_seed), data.chain_ids, data.tokens)
        return torch.from_numpy(mc.bayes_answers(cond))

    def labels_of(self, data: MarkovSet) -> dict[str, torch.Tensor]:
        """info (nats per sequence), info_per_token (nats per target), order (of its chain): (n,) each."""
        orders = np.asarray(mc.ORDERS)[data.chain_ids]
        return {"info": torch.from_numpy(data.info.sum(1)), "info_per_token": torch.from_numpy(data.info_per_token),
                "order": torch.from_numpy(orders.astype(np.int64))}

    def correct(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                ) -> torch.Tensor:
        """logits (B, L, 8), targets (B, L), answers (B, k, L) or None -> bool (B,): every
        position's argmax is Bayes-optimal (without answers: equals the realized token)."""
        if answers is None:
            return super().correct(logits, targets)
        self._check_logits(logits, targets)
        return bayes_correct(logits, answers).all(-1)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None,
                info_per_token: torch.Tensor | None = None) -> dict[str, float]:
        """exact_match, token_acc (realized), nll and, with answers, bayes_token_acc; with
        info_per_token (B,) also the simple/complex split of `split_metrics`."""
        out = super().metrics(logits, targets, answers)
        per_seq = sequence_metrics(logits, targets, answers)
        out.update({key: float(v.mean()) for key, v in per_seq.items() if key != "token_acc"})
        if info_per_token is not None:
            out.update(split_metrics(per_seq, info_per_token, self.band_edges()))
        return out

    def summarize(self, data: MarkovSet) -> dict[str, str]:
        return summarize(data, self.chain_seed)

    def show(self, data: MarkovSet, index: int) -> str:
        return show(data, index, self.chain_seed)


def summarize(data: MarkovSet, chain_seed: int = 0) -> dict[str, str]:
    """Statistics of a set for `fpstab data`: chain mix, information, Bayes accuracy, repeats."""
    per = data.info_per_token
    q = np.quantile(per, [0, 0.25, 0.5, 0.75, 1])
    cond = mc.conditionals(chains_for(chain_seed), data.chain_ids, data.tokens)
    hit = np.take_along_axis(cond, data.tokens[:, 1:, None], 2)[..., 0] == cond.max(2)
    mix = np.bincount(data.chain_ids, minlength=len(mc.ORDERS)) / len(data)
    lo, hi = band_edges(chain_seed)
    return {
        "chains (order: share)": ", ".join(f"{k}: {s:.1%}" for k, s in zip(mc.ORDERS, mix)),
        "info per token (nats) min / quartiles / max": " / ".join(f"{v:.3f}" for v in q),
        "info per sequence (nats)": f"mean {data.info.sum(1).mean():.1f}",
        "band edges (nats per token)": f"low <= {lo:.3f} < mid <= {hi:.3f} < high",
        "Bayes predictor's accuracy on realized tokens": f"{hit.mean():.1%}",
        "distinct sequences": f"{len(np.unique(data.tokens, axis=0)) / len(data):.1%}",
    }


def show(data: MarkovSet, index: int, chain_seed: int = 0) -> str:
    """One sequence: chain, tokens, Bayes-optimal next tokens and information per target."""
    tokens, cid = data.tokens[index], int(data.chain_ids[index])
    cond = mc.conditionals(chains_for(chain_seed), data.chain_ids[index:index + 1], tokens[None])[0]
    best = ["*" if (c == c.max()).all() else str(int(c.argmax())) for c in cond]
    info = data.info[index]
    return "\n".join([
        f"chain {cid} (order {mc.ORDERS[cid]}); information {info.sum():.2f} nats, {info.mean():.3f} per token",
        "tokens x_0..x_L: " + " ".join(map(str, tokens)),
        "Bayes next (x_1..x_L; * any): " + " ".join(best),
        "-log p per target (nats): " + " ".join(f"{v + 0.0:.2f}" for v in info),
    ])


__all__ = ["BANDS", "LENGTHS", "MarkovSet", "MarkovTask", "band_edges", "encode", "generate", "parse_level",
           "sequence_metrics", "split_metrics", "summarize", "validate"]
