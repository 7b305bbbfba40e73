"""Three rewrites of the attention's QK-norm + RoPE against the shipped one, eager fp32 on the CPU.

    python3 results/train_speed/qk_fusion/attn_ab.py    # repository root, ~1 minute, one thread

Attention(64, 64, 4 heads, grid (9, 9), window 5) at batch 16 (the sudoku shape of
benchmarks/train_speed.py --small), forward + backward of sum(y^2); 7 rounds of 50 calls per variant,
the variants interleaved within each round. Each variant is first checked against the shipped
forward and gradients (float32 rounding only).

- stacked: q and k normalized and rotated as one (..., 2, H, n, dh) tensor (half the op calls);
- folded: the norm's gain folded into the rotation tables, x/rms(x) * (g cos) + swap(x/rms(x)) *
  (swap(g) sin), one element-wise product fewer per q and k;
- contiguous: q, k, v made contiguous in (B, H, n, dh) by one permute + copy of the qkv output.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fpstab.architectures.attention import Attention, apply_rope, position_shape, rope_tables  # noqa: E402
from fpstab.architectures.neighborhood import local_attention  # noqa: E402
from fpstab.architectures.split_linear import apply_split  # noqa: E402


def swap_halves(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x2, x1], dim=-1)


def swapped_gain(w: Tensor) -> Tensor:
    half = w.shape[-1] // 2
    return torch.cat([w[..., half:], w[..., :half]], dim=-1)


class Stacked(Attention):
    def forward(self, x: Tensor, kv: Tensor | None = None, pre: Tensor | None = None) -> Tensor:
        d, heads, dh = self.d, self.n_heads, self.head_dim
        qkv = apply_split(self.qkv, x, pre)
        *lead, n, _ = qkv.shape
        shape = position_shape(n, self.grid)
        t = qkv.view(*lead, n, 3, heads, dh)
        cos, sin = rope_tables(shape, dh, self.rope_base, like=qkv)
        g = torch.stack([self.q_norm.weight, self.k_norm.weight]).to(qkv.dtype)  # (2, dh)
        qk = t[..., :2, :, :].permute(*range(len(lead)), -3, -2, -4, -1)  # (..., 2, H, n, dh)
        z = F.rms_norm(qk, (dh,))
        z = z * (g[:, None, None, :] * cos) + swap_halves(z) * (swapped_gain(g)[:, None, None, :] * sin)
        q, k = z.unbind(-4)
        v = t[..., 2, :, :].transpose(-3, -2)
        y = local_attention(q, k, v, shape, self.window)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, d))


class Folded(Attention):
    def forward(self, x: Tensor, kv: Tensor | None = None, pre: Tensor | None = None) -> Tensor:
        d, heads, dh = self.d, self.n_heads, self.head_dim
        q, k, v = apply_split(self.qkv, x, pre).split(d, dim=-1)
        *lead, n, _ = q.shape
        q, k, v = (t.reshape(*lead, n, heads, dh).transpose(-3, -2) for t in (q, k, v))
        shape = position_shape(n, self.grid)
        cos, sin = rope_tables(shape, dh, self.rope_base, like=q)

        def norm_rope(t: Tensor, w: Tensor) -> Tensor:
            w = w.to(t.dtype)
            z = F.rms_norm(t, (dh,))
            return z * (w * cos) + swap_halves(z) * (swapped_gain(w) * sin)

        q, k = norm_rope(q, self.q_norm.weight), norm_rope(k, self.k_norm.weight)
        y = local_attention(q, k, v, shape, self.window)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, d))


class Contiguous(Attention):
    def forward(self, x: Tensor, kv: Tensor | None = None, pre: Tensor | None = None) -> Tensor:
        d, heads, dh = self.d, self.n_heads, self.head_dim
        qkv = apply_split(self.qkv, x, pre)
        *lead, n, _ = qkv.shape
        q, k, v = qkv.view(*lead, n, 3, heads, dh).permute(*range(len(lead)), -3, -2, -4, -1).contiguous().unbind(-4)
        shape = position_shape(n, self.grid)
        cos, sin = rope_tables(shape, dh, self.rope_base, like=q)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        y = local_attention(q, k, v, shape, self.window)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, d))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args = (64, 64, 4, (9, 9), 5, 10000.0)
    shipped = Attention(*args)
    with torch.no_grad():  # gains away from 1, so folding them is exercised
        shipped.q_norm.weight.uniform_(0.5, 1.5)
        shipped.k_norm.weight.uniform_(0.5, 1.5)
    variants = {"shipped": shipped}
    for name, cls in (("stacked", Stacked), ("folded", Folded), ("contiguous", Contiguous)):
        variants[name] = cls(*args)
        variants[name].load_state_dict(shipped.state_dict())
    x = torch.randn(16, 81, 64, requires_grad=True)

    def outputs(m: Attention) -> list[Tensor]:
        y = m(x)
        return [y, *torch.autograd.grad(y.square().sum(), [x, m.q_norm.weight, m.k_norm.weight, m.qkv.weight])]

    ref = outputs(shipped)
    for name, m in variants.items():
        err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(outputs(m), ref))
        assert err < 1e-5, f"{name} differs from the shipped attention: relative {err:.2e}"
        print(f"{name:<11} largest relative difference to shipped (y and 4 gradients): {err:.1e}")

    def forward_backward(m: Attention) -> None:
        m(x).square().sum().backward()

    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(7):
        for name, m in variants.items():
            t0 = time.perf_counter()
            for _ in range(50):
                forward_backward(m)
            times[name].append((time.perf_counter() - t0) / 50 * 1e6)
    print(f"torch {torch.__version__}, 1 thread; us per forward + backward, 7 rounds of 50 calls")
    base = statistics.median(times["shipped"])
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<11} best {min(t):7.0f}  median {med:7.0f}  median / shipped {med / base:.3f}")


if __name__ == "__main__":
    main()
