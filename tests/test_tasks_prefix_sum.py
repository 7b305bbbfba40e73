"""Prefix sums: targets, encoding, determinism, validator."""

from __future__ import annotations

import numpy as np
import pytest

from fpstab.tasks import prefix_sum


@pytest.mark.parametrize("length", [1, 16, 33, 2048])
def test_targets_are_prefix_parities(length):
    data = prefix_sum.generate(5, length, seed=3)
    assert data.bits.shape == data.targets.shape == (5, length)
    for bits, target in zip(data.bits, data.targets):
        parity = 0
        for b, t in zip(bits, target):
            parity ^= int(b)
            assert t == parity
    prefix_sum.validate(data.bits, data.targets)


def test_seeded_and_one_hot():
    a, b = prefix_sum.generate(4, 32, seed=9), prefix_sum.generate(4, 32, seed=9)
    assert np.array_equal(a.bits, b.bits)
    assert not np.array_equal(a.bits, prefix_sum.generate(4, 32, seed=10).bits)
    x = prefix_sum.encode(a.bits)
    assert x.shape == (4, 32, 2) and np.array_equal(x.argmax(-1).numpy(), a.bits)


def test_validate_rejects_wrong_targets_and_bits():
    data = prefix_sum.generate(3, 8, seed=0)
    wrong = data.targets.copy()
    wrong[2, 5] ^= 1
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        prefix_sum.validate(data.bits, wrong)
    with pytest.raises(ValueError, match="0 or 1"):
        prefix_sum.validate(data.bits + 2, data.targets)
    with pytest.raises(ValueError, match="n and length"):
        prefix_sum.generate(0, 8, seed=0)
