"""A Linear layer whose input ends in columns that do not change between loop iterations.

For y = W [z; e] + b with e fixed over a loop, W = [W_z | W_e]: the term W_e e + b is computed once
(`input_term`) and each iteration adds it to W_z z (`apply_split`), instead of multiplying the
concatenation again. Internal concat recall feeds [N(s); e] to the attention's qkv and the MLP's first
layer this way.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def input_term(layer: nn.Linear, e: Tensor) -> Tensor:
    """W_e e + b: e (..., n, k) against the last k input columns of `layer` -> (..., n, out_features)."""
    return F.linear(e, layer.weight[:, layer.in_features - e.shape[-1]:], layer.bias)


def apply_split(layer: nn.Linear, z: Tensor, pre: Tensor | None) -> Tensor:
    """layer([z; e]) given pre = input_term(layer, e): W_z z + pre; with pre None, layer(z) itself.
    z (..., n, k_z), pre (..., n, out_features)."""
    if pre is None:
        return layer(z)
    return F.linear(z, layer.weight[:, :z.shape[-1]]) + pre
