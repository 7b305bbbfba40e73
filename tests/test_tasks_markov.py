"""Markov task: seeded chains and sequences, information labels, bands, Bayes scoring, `fpstab data`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fpstab.cli import main
from fpstab.tasks import get_task
from fpstab.tasks import markov as mk
from fpstab.tasks import markov_chain as mc


@pytest.fixture(scope="module")
def task() -> mk.MarkovTask:
    return get_task("markov")


def bayes_logits(data: mk.MarkovSet) -> torch.Tensor:
    """The Bayes predictor's logits (n, L, V): log of the true conditional."""
    cond = mc.conditionals(mk.chains_for(0), data.chain_ids, data.tokens)
    return torch.from_numpy(cond).clamp(min=1e-30).log().float()


def test_sets_are_deterministic_in_the_seed_and_prefixes(task):
    a, b = task.make("32", 40, seed=3), task.make("32", 40, seed=3)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, task.make("32", 40, seed=4).targets)
    big = mk.generate("high64", 1500, seed=3)  # more than one chunk of the stream
    small = mk.generate("high64", 700, seed=3)
    assert np.array_equal(big.tokens[:700], small.tokens) and np.array_equal(big.info[:700], small.info)


def test_chains_are_fixed_by_the_chain_seed_not_the_data_seed():
    c0, c0_again, c1 = mc.build_chains(0), mc.build_chains(0), mc.build_chains(1)
    assert all(np.array_equal(x.probs, y.probs) and np.array_equal(x.successors, y.successors)
               for x, y in zip(c0, c0_again))
    assert not all(np.array_equal(x.successors, y.successors) for x, y in zip(c0, c1))
    assert [c.order for c in c0] == list(mc.ORDERS)
    for seed in (0, 7):  # every data seed draws from the same chains
        mk.validate(mk.generate("32", 200, seed), chain_seed=0)
    with pytest.raises(ValueError, match="does not allow"):
        mk.validate(mk.generate("32", 200, 0, chain_seed=1), chain_seed=0)
    assert mk.MarkovTask(5).cache_variant == "chain_seed=5"
    _, prov = mk.MarkovTask(5).generate_set("32", 3, 0)
    assert prov.variant == "chain_seed=5"
    with pytest.raises(ValueError, match="chain_seed must be an int >= 0"):
        mk.MarkovTask(-1)


def test_information_is_minus_log_p_under_the_generating_chain():
    data = mk.generate("32", 30, seed=1)
    chains = mk.chains_for(0)
    for tokens, cid, info in zip(data.tokens, data.chain_ids, data.info):
        chain = chains[cid]
        dense, k = chain.dense(), chain.order
        for t in range(len(tokens) - 1):
            if t + 1 < k:  # the context is not complete: uniform initial tokens
                p = 1 / mc.VOCAB
            else:
                ctx = sum(int(tokens[t - k + 1 + j]) * mc.VOCAB ** (k - 1 - j) for j in range(k))
                p = dense[ctx, tokens[t + 1]]
            assert info[t] == pytest.approx(-math.log(p), abs=1e-12)
    assert np.allclose(data.info_per_token, data.info.sum(1) / 32)


def test_band_levels_hold_their_band_at_every_length(task):
    lo, hi = task.band_edges()
    assert 0 < lo < hi
    for length in (32, 64):
        per = {band: mk.generate(f"{band}{length}", 300, seed=2).info_per_token for band in mk.BANDS}
        assert per["low"].max() <= lo and lo < per["mid"].min() and per["mid"].max() <= hi and per["high"].min() > hi
    natural = mk.generate("32", 3000, seed=9).info_per_token  # edges are terciles at the training length
    shares = [(natural <= lo).mean(), (natural > hi).mean()]
    assert all(abs(s - 1 / 3) < 0.04 for s in shares), shares


def test_ladder_and_level_errors(task):
    lad = task.ladder()
    assert lad.train == "32" and lad.test == ("low32", "mid32", "high32", "64", "128")
    assert task.grid("high128") == (128,) and task.grid("low32+high32") == (32,)
    assert task.causal and task.attn_window is None and (task.in_dim, task.out_dim) == (11, 8)
    with pytest.raises(ValueError, match="unknown markov level 'low33'; allowed: low32"):
        task.make("low33", 2, 0)
    with pytest.raises(ValueError, match="mixes token layouts"):
        task.grid("32+64")


def test_bad_chain_rows_are_named():
    good = mc.build_chains(0)[0]

    def broken(row: int, succ: list[int], p: list[float]) -> mc.Chain:
        s, q = good.successors.copy(), good.probs.copy()
        s[row], q[row] = succ, p
        return mc.Chain(good.order, s, q)

    cases = [([1, 1, -1, -1], [0.5, 0.5, 0, 0], "distinct"),
             ([1, 9, -1, -1], [0.5, 0.5, 0, 0], "distinct tokens in 0..7"),
             ([1, -1, 2, -1], [0.5, 0, 0.5, 0], "then -1 padding"),
             ([1, 2, -1, -1], [0.5, 0.4, 0, 0], "sum to 1"),
             ([1, 2, -1, -1], [1.0, 0.0, 0, 0], "> 0 on the successors"),
             ([-1, -1, -1, -1], [0, 0, 0, 0], "1..4 tokens")]
    for succ, p, msg in cases:
        with pytest.raises(ValueError, match=f"order-1 chain, row 3: .*{msg}"):
            mc.check_chain(broken(3, succ, p))
    with pytest.raises(ValueError, match=r"must both be \(8, 4\)"):
        mc.check_chain(mc.Chain(1, good.successors[:5], good.probs[:5]))


def test_validate_names_bad_sequences():
    data = mk.generate("32", 20, seed=0)
    wrong_info = mk.MarkovSet(data.tokens, data.chain_ids, data.info + np.eye(20, 32) * 0.1, "32", 0)
    with pytest.raises(ValueError, match=r"info labels of sequences \[0, 1, 2"):
        mk.validate(wrong_info)
    with pytest.raises(ValueError, match="chain ids must be in 0..2"):
        mk.validate(mk.MarkovSet(data.tokens, data.chain_ids + 3, data.info, "32", 0))


def test_encoding(task):
    data = mk.generate("32", 5, seed=0)
    inputs, targets = task.encode_set(data)
    assert inputs.shape == (5, 32, 11) and targets.shape == (5, 32)
    assert torch.equal(inputs[..., :8].argmax(-1), torch.from_numpy(data.tokens[:, :-1]))
    assert torch.equal(targets, torch.from_numpy(data.tokens[:, 1:]))
    chain = inputs[..., 8:]
    assert (chain.sum(-1) == 1).all() and torch.equal(chain.argmax(-1)[:, 0], torch.from_numpy(data.chain_ids))
    assert (chain == chain[:, :1]).all()


def test_bayes_answers_keep_every_tie():
    cond = np.array([[[0.4, 0.4, 0.2, 0, 0, 0, 0, 0], [0, 0, 0, 0.9, 0.1, 0, 0, 0]]])  # (1, 2, 8)
    ans = mc.bayes_answers(cond)
    assert ans.shape == (1, 2, 2) and ans[0, :, 0].tolist() == [0, 1] and ans[0, :, 1].tolist() == [3, -1]


def test_bayes_predictor_scores_perfectly_and_a_wrong_one_does_not(task):
    data = mk.generate("32", 200, seed=4)
    batch = task.make("32", 200, seed=4)
    logits = bayes_logits(data)
    assert batch.answers.shape[1] == mc.VOCAB  # order >= 2 sequences: the first target is uniform
    assert task.correct(logits, batch.targets, batch.answers).all()
    m = task.metrics(logits, batch.targets, batch.answers, batch.labels["info_per_token"])
    assert m["exact_match"] == 1 and m["bayes_token_acc"] == 1
    assert m["excess_nll"] == pytest.approx(0, abs=1e-5) and m["nll"] == pytest.approx(m["bayes_nll"], abs=1e-5)
    assert m["token_acc"] < 1  # the realized next token is random
    assert m["bayes_token_acc_simple"] == 1 and m["share_simple"] + m["share_complex"] < 1
    assert m["token_acc_simple"] > m["token_acc_complex"]  # simple sequences are more predictable
    worse = logits.clone()
    row, pos = 0, 20
    worse[row, pos, batch.answers[row, 0, pos]] = -1e9  # argmax moves off an optimal token
    assert not task.correct(worse, batch.targets, batch.answers)[row]
    assert task.correct(worse, batch.targets, batch.answers)[1:].all()
    per = mk.sequence_metrics(worse, batch.targets, batch.answers)
    assert per["bayes_token_acc"][row] == pytest.approx(31 / 32) and (per["bayes_token_acc"][1:] == 1).all()
    # Without answers only the realized tokens count.
    assert task.correct(torch.nn.functional.one_hot(batch.targets, 8).float(), batch.targets).all()


def test_composite_levels_interleave_labels_and_answers(task):
    mixed = task.make("low32+high32", 6, seed=1)
    low, high = task.make("low32", 3, seed=1), task.make("high32", 3, seed=1)
    assert torch.equal(mixed.labels["info"][0::2], low.labels["info"])
    assert torch.equal(mixed.labels["info_per_token"][1::2], high.labels["info_per_token"])
    assert mixed.answers.shape[0] == 6 and torch.equal(mixed.targets[1::2], high.targets)


def test_data_command_makes_and_shows(capsys):
    assert main(["data", "--task", "markov", "--level", "mid64", "--n", "50", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "markov level mid64: n 50, seed 2, generator v1, chain_seed=0" in out
    assert "inputs (50, 64, 11) float32, targets (50, 64) int64" in out and "info per token" in out
    assert main(["data", "show", "--task", "markov", "--level", "low32", "--index", "1"]) == 0
    out = capsys.readouterr().out
    assert "chain " in out and "tokens x_0..x_L:" in out and "Bayes next" in out
