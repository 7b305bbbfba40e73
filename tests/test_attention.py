"""Attention fast paths: fused SDPA outside transforms, cached constant tables, blocked local attention.

Each fast path is checked against its reference (MATH SDPA, freshly built
tables, the dense window mask) in float64, for values, gradients and JVPs.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jacrev, jvp, vmap
from torch.profiler import ProfilerActivity, profile

from fpstab.architectures import CoreConfig, build_core
from fpstab.architectures import neighborhood as nb
from fpstab.architectures.attention import apply_rope, rope_tables
from fpstab.architectures.neighborhood import local_attention, neighborhood_mask, tile_sizes, use_blocked
from fpstab.architectures.sdpa import needs_math_sdpa

MATH_OP = "aten::_scaled_dot_product_attention_math"


def seen_by(transform: str) -> bool:
    """needs_math_sdpa() as seen by a function run under `transform`."""
    seen = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(needs_math_sdpa())
        return (x * x).sum()

    x = torch.randn(3, requires_grad=True)
    if transform == "plain_training":
        f(x).backward()
    elif transform == "no_grad":
        with torch.no_grad():
            f(x)
    elif transform == "forward_ad":
        with fwAD.dual_level():
            f(fwAD.make_dual(x.detach(), torch.ones(3)))
    elif transform == "vmap":
        vmap(f)(torch.randn(2, 3))
    elif transform == "jvp":
        jvp(f, (x.detach(),), (torch.ones(3),))
    elif transform == "grad":
        grad(f)(x.detach())
    elif transform == "jacrev":
        jacrev(f)(x.detach())
    return seen[0]


@pytest.mark.parametrize("transform, math", [("plain_training", False), ("no_grad", False), ("forward_ad", True),
                                              ("vmap", True), ("jvp", True), ("grad", True), ("jacrev", True)])
def test_math_backend_only_where_fused_kernels_lack_derivatives(transform: str, math: bool) -> None:
    assert seen_by(transform) is math


def sdpa_ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


@pytest.mark.parametrize("layout, n", [(dict(grid=(9, 9)), 81), (dict(attn_window=5), 300)])
def test_training_step_runs_fused_attention(layout: dict, n: int) -> None:
    """A training step (forward + backward, full and blocked local attention) never enters SDPA's MATH
    backend; a JVP of the same step does."""
    from fpstab.config import TrainConfig
    from fpstab.tasks import get_task
    from fpstab.protocol import make_optimizer, train_step

    torch.manual_seed(0)
    core = build_core(CoreConfig(d_model=16, n_heads=2, in_dim=2, out_dim=2, **layout))
    if "attn_window" in layout:
        assert use_blocked((n,), 5)
    cfg = TrainConfig(task="prefix_sum", d_model=16, n_heads=2, batch_size=2, n_train=2, train_iters=2)
    x = torch.nn.functional.one_hot(torch.randint(0, 2, (2, n)), 2).float()
    y = torch.randint(0, 2, (2, n))
    opt = make_optimizer(core, cfg)
    ops = sdpa_ops(lambda: train_step(core, core.step_from, get_task("prefix_sum"), cfg, opt, x, y, (1, 1), "fp32"))
    assert MATH_OP not in ops and any("flash" in op or "efficient" in op for op in ops), ops
    e = core.encode(x).detach()
    assert MATH_OP in sdpa_ops(lambda: jvp(lambda h: core.step(h, e), (e,), (torch.ones_like(e),)))


# ---- cached tables ------------------------------------------------------------
def fresh_tables_under(context: str) -> tuple[torch.Tensor, torch.Tensor]:
    """rope_tables built (cache empty) first inside `context`, then returned outside it."""
    from fpstab.architectures import attention

    attention._rope_tables.cache_clear()
    like = torch.zeros(1)
    out: list = []

    def build(x: torch.Tensor) -> torch.Tensor:
        out.extend(rope_tables((5, 4), 8, 10000.0, like=like))
        return x.sum()

    x = torch.ones(2)
    if context == "inference_mode":
        with torch.inference_mode():
            build(x)
    elif context == "jvp":
        jvp(build, (x,), (x,))
    elif context == "grad":
        grad(build)(x)
    elif context == "vmap":
        vmap(build)(torch.ones(3, 2))
    return out[0], out[1]


@pytest.mark.parametrize("context", ["inference_mode", "jvp", "grad", "vmap"])
def test_cached_tables_are_plain_constants_wherever_first_built(context: str) -> None:
    cos, sin = fresh_tables_under(context)
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    for t in (cos, sin):
        assert not (t.is_inference() or t.requires_grad or wrapped(t))
    # the cached tables serve an ordinary backward afterwards
    x = torch.randn(2, 20, 8, requires_grad=True)
    apply_rope(x, *rope_tables((5, 4), 8, 10000.0, like=x)).sum().backward()
    from fpstab.architectures import attention

    uncached = attention._rope_tables.__wrapped__((5, 4), 8, 10000.0, torch.float32, torch.device("cpu"))
    torch.testing.assert_close((cos, sin), uncached)


def test_tables_are_cached_per_dtype_and_layout() -> None:
    x32, x64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    cos32, _ = rope_tables((81,), 16, 10000.0, like=x32)
    assert rope_tables((81,), 16, 10000.0, like=x32)[0] is cos32  # reused, not rebuilt
    cos64, _ = rope_tables((81,), 16, 10000.0, like=x64)
    assert cos64.dtype == torch.float64 and rope_tables((9, 9), 16, 10000.0, like=x32)[0] is not cos32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rope_tables((81,), 16, 10000.0, like=x32.bfloat16())[0].dtype == torch.bfloat16
    mask = neighborhood_mask((20,), 5, torch.device("cpu"))
    assert neighborhood_mask((20,), 5, torch.device("cpu")) is mask


def test_rope_rotates_each_channel_pair_by_its_axis_angle() -> None:
    """apply_rope against the rotation written out pair by pair: on a (3, 4) grid with head_dim 8,
    pair j (channels j and j + 4) turns by coordinate_axis(j) * base^(-(j mod 2)/2), axis 0 for j < 2."""
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    out = apply_rope(x, *rope_tables((3, 4), 8, 100.0, like=x))
    expected = torch.empty_like(x)
    for pos in range(12):
        coords = divmod(pos, 4)
        for j in range(4):
            angle = torch.tensor(coords[j // 2] * 100.0 ** (-(j % 2) / 2), dtype=torch.float64)
            c, s = angle.cos(), angle.sin()
            a, b = x[:, pos, j], x[:, pos, j + 4]
            expected[:, pos, j], expected[:, pos, j + 4] = a * c - b * s, a * s + b * c
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


# ---- blocked local attention ---------------------------------------------------
CASES = [((16,), 5), ((17,), 5), ((40,), 5), ((300,), 5), ((3,), 5), ((33,), 3), ((50,), 9), ((20, 37), 5),
         ((5, 40), 7), ((4, 5, 6), 3)]


def qkv(shape: tuple[int, ...], lead: tuple[int, ...] = (2, 3), hd: int = 4) -> list[torch.Tensor]:
    n = int(torch.tensor(shape).prod())
    g = torch.Generator().manual_seed(n)
    return [torch.randn(*lead, n, hd, dtype=torch.float64, generator=g) for _ in range(3)]


@pytest.mark.parametrize("shape, window", CASES, ids=str)
def test_blocked_equals_dense_values_gradients_and_jvps(shape: tuple[int, ...], window: int) -> None:
    q, k, v = qkv(shape)

    def dense(q, k, v):
        return local_attention(q, k, v, shape, window, form="dense")

    def blocked(q, k, v):
        return local_attention(q, k, v, shape, window, form="blocked")

    torch.testing.assert_close(blocked(q, k, v), dense(q, k, v))
    out_grad = torch.randn_like(q)
    grads = [torch.autograd.grad(f(*(t.requires_grad_() for t in (q, k, v))), (q, k, v), out_grad)
             for f in (dense, blocked)]
    for gd, gb in zip(*grads):
        torch.testing.assert_close(gb, gd)
    tangents = tuple(torch.randn_like(t) for t in (q, k, v))
    primals = tuple(t.detach() for t in (q, k, v))
    torch.testing.assert_close(jvp(blocked, primals, tangents)[1], jvp(dense, primals, tangents)[1])
    torch.testing.assert_close(vmap(blocked)(*primals), dense(*primals))


def test_tiles_hold_every_window_and_the_far_border_overlaps() -> None:
    assert tile_sizes((300,), 5) == (19, 16, 20)  # ceil(300/16) tiles of 16 queries, 16 + 5 - 1 keys
    assert tile_sizes((9, 9), 3) == (1, 81, 81)
    plan = nb.blocked_plan((40,), 5, torch.device("cpu"))
    assert plan.queries.tolist()[-16:] == list(range(24, 40))  # last tile shifted inward, overlapping
    assert sorted(set(plan.take.tolist())) == plan.take.tolist() and len(plan.take) == 40


def test_blocked_form_is_chosen_only_for_long_sequences() -> None:
    assert use_blocked((512,), 5) and use_blocked((2048,), 5)
    assert not use_blocked((32,), 5) and not use_blocked((9, 9), 3) and not use_blocked((16,), 5)
    with pytest.raises(ValueError, match="form='banded'; allowed: 'auto', 'dense', 'blocked'"):
        local_attention(*qkv((8,)), (8,), 5, form="banded")


def test_long_sequence_core_matches_the_dense_mask_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix-sum core at 300 tokens (blocked) equals the same core forced onto the dense mask."""
    torch.manual_seed(0)
    core = build_core(CoreConfig(d_model=16, n_heads=2, in_dim=2, out_dim=2, attn_window=5)).double()
    x = torch.randn(2, 300, 2, dtype=torch.float64)

    def logits_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        core.zero_grad()
        out = core(x, 2)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in core.parameters()]

    blocked = logits_and_grads()
    monkeypatch.setattr(nb, "BLOCKED_MIN_RATIO", float("inf"))
    dense = logits_and_grads()
    torch.testing.assert_close(blocked[0], dense[0])
    for gb, gd in zip(blocked[1], dense[1]):
        torch.testing.assert_close(gb, gd)


def test_blocked_under_bf16_autocast_is_close_to_dense() -> None:
    q, k, v = (t.float() for t in qkv((200,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = local_attention(q, k, v, (200,), 5, form="blocked")
        d = local_attention(q, k, v, (200,), 5, form="dense")
    assert b.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), d.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_compiled_step_matches_eager() -> None:
    """torch.compile of a core step (tables built inline, blocked local attention) equals eager."""
    torch.manual_seed(0)
    for layout, n in ((dict(grid=(9, 9)), 81), (dict(attn_window=5), 300)):
        core = build_core(CoreConfig(d_model=16, n_heads=2, in_dim=2, out_dim=2, **layout))
        h, e = torch.randn(2, 2, n, 16).unbind(0)
        compiled = torch.compile(core.step)
        torch.testing.assert_close(compiled(h, e), core.step(h, e), rtol=1e-4, atol=1e-5)
