"""Looped cores: every variant runs and trains; the equations, norms, masks and positions are as specified.

`python tests/test_architectures.py` prints the parameter counts at d_model=256.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.func import jacrev, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from fpstab.architectures import ARCHS, INIT_STATES, NORMS, RECALLS, RESIDUALS, CoreConfig, build_core
from fpstab.architectures.attention import Attention, apply_rope, rope_tables
from fpstab.architectures.block import GRUResidual
from fpstab.architectures.config import APPLIES_TO, FU_VARIANTS, LOOP_NORM_ARCHS
from fpstab.architectures.neighborhood import neighborhood_mask

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronization, which costs
    20-30x on a busy 2-core machine. Restored afterwards for the other test modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(d_model=32, n_heads=4, in_dim=3, out_dim=2)
SEQ = dict(attn_window=5)  # 16 tokens, local attention as for prefix sums
GRID = dict(grid=(9, 9))  # 81 tokens, full attention as for sudoku


def variants() -> list[dict]:
    """Every valid (arch, norm, recall, residual) combination."""
    out = []
    for arch in ARCHS:
        def opts(key, values):
            return values if arch in APPLIES_TO[key] else (CoreConfig.__dataclass_fields__[key].default,)
        for norm in [n for n in opts("norm", NORMS) if n != "loop" or arch in LOOP_NORM_ARCHS]:
            for recall in opts("recall", RECALLS):
                for residual in opts("residual", RESIDUALS):
                    extra = dict(depth=2) if arch == "fixed_depth" else {}
                    out.append(dict(arch=arch, norm=norm, recall=recall, residual=residual, **extra))
    return out


def make(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_core(CoreConfig(**{**SMALL, **kw}))


def rms(h: torch.Tensor) -> torch.Tensor:
    return h.pow(2).mean(-1).sqrt()


def scale_weights(core: torch.nn.Module, factor: float) -> None:
    with torch.no_grad():
        for p in core.parameters():
            p.mul_(factor)


def vid(v: dict) -> str:
    return "-".join(str(x) for x in v.values())


@pytest.mark.parametrize("v", variants(), ids=vid)
def test_every_variant_runs_and_backpropagates(v):
    for layout, n in ((SEQ, 16), (GRID, 81)):
        core = make(**v, **layout)
        x = torch.randn(2, n, SMALL["in_dim"])
        logits = core(x, iters=2)
        assert logits.shape == (2, 2, n, SMALL["out_dim"])
        assert torch.isfinite(logits).all()
        (logits * torch.randn_like(logits)).sum().backward()
        no_grad = [name for name, p in core.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not no_grad, f"parameters without gradient: {no_grad}"


def test_variant_list_covers_the_config_space():
    vs = variants()
    assert len(vs) == 10 + 30 + 24 + 8 + 24 + 1
    assert {v["arch"] for v in vs} == set(ARCHS)


@pytest.mark.parametrize("arch,norm,residual", [
    (a, n, r) for a in ("no_recall", "standard_recall", "internal_recall", "fixed_depth", "single_attn")
    for n in ("outer", "both") for r in RESIDUALS] + [("fully_looped", "outer", "add")]
    + [(a, "loop", r) for a in LOOP_NORM_ARCHS for r in RESIDUALS])
def test_outer_normalized_state_has_rms_one_every_iteration_for_any_weights(arch, norm, residual):
    core = make(arch=arch, norm=norm, residual=residual, layers_per_loop=1 if arch == "fixed_depth" else 2,
                **(dict(depth=2) if arch == "fixed_depth" else {}), **GRID)
    for factor in (1.0, 10.0):
        scale_weights(core, factor)
        e = core.encode(torch.randn(2, 81, 3))
        h = core.init_state(e, kind="random")
        for _ in range(5):
            h = core.step(h, e)
            torch.testing.assert_close(rms(h), torch.ones_like(rms(h)), atol=1e-5, rtol=0)


def test_inner_norm_state_is_not_normalized():
    """Guards the RMS-1 test above against a norm that is applied everywhere."""
    core = make(arch="standard_recall", norm="inner", **GRID)
    scale_weights(core, 3.0)
    e = core.encode(torch.randn(2, 81, 3))
    assert (rms(core.step(e, e)) - 1).abs().max() > 0.1


@pytest.mark.parametrize("arch", ["no_recall", "fixed_depth"])
def test_maps_without_recall_are_autonomous_in_e(arch):
    core = make(arch=arch, norm="inner", **(dict(depth=2) if arch == "fixed_depth" else {}), **SEQ)
    assert not core.has_input_injection
    h, e1, e2 = torch.randn(3, 2, 16, 32).unbind(0)
    assert torch.equal(core.step(h, e1), core.step(h, e2))


@pytest.mark.parametrize("arch", ["standard_recall", "internal_recall", "single_attn", "fully_looped"])
def test_maps_with_recall_depend_on_e(arch):
    core = make(arch=arch, **SEQ)
    assert core.has_input_injection
    h, e1, e2 = torch.randn(3, 2, 16, 32).unbind(0)
    assert (core.step(h, e1) - core.step(h, e2)).abs().max() > 1e-3


def test_looped_flags():
    assert {a for a in ARCHS if not make(arch=a).looped} == {"fixed_depth", "single_attn"}


# The equations of architectures/core.py's docstring, written out by hand over the core's own modules.
def unit(x):
    return x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(x.dtype).eps).sqrt()


def hand_recall(b, e, recall, placement):
    """R(s, e) of block b written from its definition (concat: one Linear over [s; e] outside a branch)."""
    if recall == "linear":
        return lambda s: b.recall.W_x(s) + b.recall.W_e(e)
    if recall == "add":
        return lambda s: s + e
    if placement == "external":
        return lambda s: b.recall.W_xe(torch.cat([s, e], dim=-1))
    return lambda s: torch.cat([s, e], dim=-1)


def hand_step(core, h, e, placement, norm, recall="linear"):
    s = h
    for b in core.blocks:
        R = hand_recall(b, e, recall, placement)
        Rin = R if placement == "internal" else (lambda s: s)
        N = b.pre_norm if norm != "outer" else None
        s = R(s) if placement == "external" else s
        for f in (b.attn, b.mlp):
            if norm == "inner":
                s = s + f(Rin(N(s)))
            elif norm == "outer":
                s = unit(s + f(Rin(s)))
            elif norm == "both":
                s = unit(s + f(Rin(N(s))))
            else:
                s = s + b.peri_norm(f(Rin(N(s))))
    return s


@pytest.mark.parametrize("norm", [n for n in NORMS if n != "loop"])  # loop: the Fu et al. tests below
@pytest.mark.parametrize("arch,placement", [("standard_recall", "external"), ("internal_recall", "internal")])
def test_step_matches_the_branch_equations(arch, placement, norm):
    core = make(arch=arch, norm=norm, **SEQ).double()
    with torch.no_grad():  # move the gains off 1 so a misplaced norm shows
        for name, p in core.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    h, e = torch.randn(2, 2, 16, 32, dtype=torch.float64).unbind(0)
    torch.testing.assert_close(core.step(h, e), hand_step(core, h, e, placement, norm))
    other = "internal" if placement == "external" else "external"
    assert (core.step(h, e) - hand_step(core, h, e, other, norm)).abs().max() > 1e-3


@pytest.mark.parametrize("recall", RECALLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("arch,placement", [("standard_recall", "external"), ("internal_recall", "internal")])
def test_step_from_the_loop_input_matches_the_recall_equations(arch, placement, layers, recall):
    """The loop computes what depends on e alone once (u = loop_input(e)) and iterates step_from(h, u):
    that must be the recall of the definitions, each block with its own part of u."""
    core = make(arch=arch, recall=recall, layers_per_loop=layers, **SEQ).double()
    h, e = torch.randn(2, 2, 16, 32, dtype=torch.float64).unbind(0)
    u = core.loop_input(e)
    width = 7 * 32 if placement == "internal" and recall == "concat" else 32  # qkv's 3d + fc1's 4d e-terms
    assert u.shape == (2, 16, core.loop_input_dim) and core.loop_input_dim == width * layers
    expected = hand_step(core, h, e, placement, "outer", recall)
    torch.testing.assert_close(core.step_from(h, u), expected)
    torch.testing.assert_close(core.step(h, e), expected)
    with pytest.raises(ValueError, match=rf"loop input u \(2, 16, {width * layers - 1}\).*u = loop_input\(e\)"):
        core.step_from(h, u[..., :-1])
    if recall == "concat" and placement == "internal":
        with pytest.raises(ValueError, match="kv .* and pre .* exclude each other"):
            core.blocks[0].attn(h, kv=h, pre=u[..., :96])


def test_gru_residual_is_the_gru_cell():
    gru = GRUResidual(8)
    u, s = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(gru(u, s), gru.cell(u.reshape(-1, 8), s.reshape(-1, 8)).reshape(2, 5, 8))


def test_concat_recall_widths():
    internal = make(arch="internal_recall", recall="concat")
    assert internal.blocks[0].attn.qkv.in_features == 64 and internal.blocks[0].mlp.fc1.in_features == 64
    external = make(arch="standard_recall", recall="concat")
    assert external.blocks[0].attn.qkv.in_features == 32 and external.blocks[0].recall.W_xe.in_features == 64


def test_single_attn_weights_load_into_the_looped_model():
    single = make(arch="single_attn", norm="peri", **GRID)
    looped = make(seed=1, arch="standard_recall", norm="peri", **GRID)
    looped.load_state_dict(single.state_dict())
    x = torch.randn(2, 81, 3)
    torch.testing.assert_close(single(x, 1), looped(x, 3)[:1])


# fully_looped (Fu et al.)
def test_fully_looped_step_matches_the_equations():
    core = make(arch="fully_looped", layers_per_loop=2, **SEQ).double()
    h, e = torch.randn(2, 2, 16, 32, dtype=torch.float64).unbind(0)
    z = unit(e)
    for b in core.blocks:
        z = z + b.attn(b.pre_norm(h), kv=b.pre_norm(z))
        z = z + b.mlp(b.pre_norm(z))
    torch.testing.assert_close(core.step(h, e), unit(z))


def test_fully_looped_state_enters_only_through_normalized_queries():
    core = make(arch="fully_looped", layers_per_loop=2, **SEQ)
    h1, h2, e = torch.randn(3, 2, 16, 32).unbind(0)
    # Only N(h) is read: rescaling h per token changes nothing ...
    torch.testing.assert_close(core.step(h1 * (5 * torch.rand(2, 16, 1) + 0.1), e), core.step(h1, e))
    # ... and h does matter while queries see it ...
    assert (core.step(h1, e) - core.step(h2, e)).abs().max() > 1e-3
    # ... but not once the query projection is zero: h is in no residual stream, key or value.
    with torch.no_grad():
        for b in core.blocks:
            b.attn.qkv.weight[:32].zero_()
            b.attn.qkv.bias[:32].zero_()
    assert torch.equal(core.step(h1, e), core.step(h2, e))


def test_fully_looped_first_step_from_embedding_is_plain_self_attention():
    """With one layer and h0 = e, step 1 equals the official first loop (no h yet)."""
    core = make(arch="fully_looped", **SEQ)
    e = core.encode(torch.randn(2, 16, 3))
    b, z = core.blocks[0], unit(e)
    z = z + b.attn(b.pre_norm(z))
    z = z + b.mlp(b.pre_norm(z))
    torch.testing.assert_close(core.step(core.init_state(e), e), unit(z))


# Fu et al.'s variants: FU_VARIANTS' settings against their equations written out (one shared
# unit() as the gain-free N, the blocks' own attention / MLP modules and pre-norm gains).
def fu_core(name, layers=2):
    core = make(**FU_VARIANTS[name], layers_per_loop=layers, **SEQ).double()
    with torch.no_grad():  # gains off 1, so a pre-norm put in the wrong place shows
        for pname, p in core.named_parameters():
            if "norm" in pname:
                p.uniform_(0.5, 1.5)
    return core


def fu_layers(core, z, h=None):
    """Pre-norm layers; h (fully looped) replaces the attention queries."""
    for b in core.blocks:
        q = b.pre_norm(z if h is None else h)
        z = z + b.attn(q, kv=b.pre_norm(z))
        z = z + b.mlp(b.pre_norm(z))
    return z


def fu_states(name, core, x0, loops):
    """Fu et al.'s h(1..loops) for one variant, straight from the equations."""
    h, out = None, []
    for t in range(loops):
        if name == "LT":  # h(t) = N(Stack(h(t-1))), h(0) = N(x0)
            z = fu_layers(core, unit(x0) if h is None else h)
        elif name == "LT_i":  # loop input N(x0 + h(t-1)); the first loop reads N(x0)
            z = fu_layers(core, unit(x0 if h is None else x0 + h))
        else:  # FLT from h(0) = x0: every layer queries N(h(t-1)), keys/values from z = N(x0) on
            z = fu_layers(core, unit(x0), h=x0 if h is None else h)
        h = unit(z)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("name", list(FU_VARIANTS))
@pytest.mark.parametrize("layers", [1, 2])
def test_fu_variants_match_their_equations(name, layers):
    core = fu_core(name, layers)
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    e = core.encode(x)
    h, mine = core.init_state(e), []
    for _ in range(4):
        h = core.step(h, e)
        mine.append(h)
    torch.testing.assert_close(torch.stack(mine), fu_states(name, core, e, 4))
    torch.testing.assert_close(core(x, 4), core.readout(fu_states(name, core, e, 4)))


def test_lt_variants_differ_where_their_equations_do():
    """Guards the test above: the equations of LT and LT_i give other states on the same weights,
    and an LT without the entry norm (Stack(e) instead of Stack(N(e))) differs from step 1."""
    lt, lt_i = fu_core("LT"), fu_core("LT_i")
    lt_i.load_state_dict(lt.state_dict())
    e = lt.encode(torch.randn(2, 16, 3, dtype=torch.float64))
    assert (fu_states("LT", lt, e, 3)[1:] - fu_states("LT_i", lt, e, 3)[1:]).abs().max() > 1e-3
    assert (lt.step(e, e) - unit(fu_layers(lt, e))).abs().max() > 1e-3


def test_lt_i_from_zeros_or_embedding_is_the_same():
    core = fu_core("LT_i")
    e = core.encode(torch.randn(2, 16, 3, dtype=torch.float64))
    torch.testing.assert_close(core.step(torch.zeros_like(e), e), core.step(e, e))


def test_loop_norm_is_refused_where_an_iteration_is_not_a_stack():
    for arch in ("internal_recall", "fixed_depth", "single_attn"):
        with pytest.raises(ValueError, match=r"CoreConfig.norm='loop' is invalid; allowed: one of .* for arch="):
            CoreConfig(**SMALL, arch=arch, norm="loop")


@pytest.mark.parametrize("kw", [dict(arch="no_recall", norm="loop"), dict(arch="fully_looped"),
                                dict(arch="standard_recall", norm="outer"), dict(arch="no_recall", norm="inner")])
def test_step_stream_is_the_state_before_its_last_normalization(kw):
    core = make(**kw, layers_per_loop=2, **SEQ)
    scale_weights(core, 3.0)
    h, e = torch.randn(2, 2, 16, 32).unbind(0)
    out, stream = core.step_stream(h, e)
    assert torch.equal(out, core.step(h, e))
    if kw.get("norm") == "inner":
        assert stream is out
    else:
        torch.testing.assert_close(out, unit(stream))
        assert (rms(stream) - 1).abs().max() > 0.1


# attention: local windows and positions
def test_local_window_masks_tokens_outside_it():
    core = make(arch="internal_recall", norm="both", **SEQ)
    h, e = torch.randn(2, 1, 16, 32).unbind(0)
    far = core.step(h, e)
    h2 = h.clone()
    h2[:, 0] += 1.0  # token 0 is outside the window of tokens 3..15
    moved = (core.step(h2, e) - far).abs().amax(-1)[0]
    assert torch.equal(moved[3:], torch.zeros(13))
    assert (moved[:3] > 1e-4).all()


def test_neighborhood_windows_shift_inward_at_borders():
    m = neighborhood_mask((8,), 5, torch.device("cpu"))
    assert m.sum(1).tolist() == [5] * 8
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert m[4].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    assert m[7].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    grid = neighborhood_mask((9, 9), 3, torch.device("cpu"))
    assert grid[40].nonzero().flatten().tolist() == [30, 31, 32, 39, 40, 41, 48, 49, 50]
    assert neighborhood_mask((3,), 5, torch.device("cpu")).all()


def test_attention_depends_on_relative_positions_only():
    """Prepending tokens shifts every absolute position; interior outputs must not change."""
    torch.manual_seed(0)
    attn = Attention(32, 32, 4, grid=None, window=5, rope_base=10000.0).double()
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.2, 3.0)
        attn.k_norm.weight.uniform_(0.2, 3.0)
    x = torch.randn(1, 20, 32, dtype=torch.float64)
    shifted = torch.cat([torch.randn(1, 7, 32, dtype=torch.float64), x], dim=1)
    torch.testing.assert_close(attn(shifted)[:, 7 + 2:-2], attn(x)[:, 2:-2])
    assert (attn(shifted)[:, 7:9] - attn(x)[:, :2]).abs().max() > 1e-3  # borders see other tokens


def test_axial_rope_scores_depend_on_the_2d_offset_only():
    q, k = torch.randn(2, 8, dtype=torch.float64).unbind(0)
    cos, sin = rope_tables((4, 5), 8, 10000.0, like=q)
    s = (apply_rope(q.expand(20, 8), cos, sin) @ apply_rope(k.expand(20, 8), cos, sin).T).reshape(4, 5, 4, 5)
    for (r1, c1, r2, c2), (r3, c3, r4, c4) in [((0, 0, 1, 2), (2, 2, 3, 4)), ((3, 4, 0, 1), (3, 3, 0, 0))]:
        torch.testing.assert_close(s[r1, c1, r2, c2], s[r3, c3, r4, c4])
    assert (s[0, 0, 0, 1] - s[0, 0, 1, 0]).abs() > 1e-6  # rows and columns rotate different channels


# dtypes and torch.func
def test_float64_forward_and_torch_func_derivatives_agree_with_finite_differences():
    core = make(arch="internal_recall", residual="gru", **GRID).double()
    x = torch.randn(1, 81, 3, dtype=torch.float64)
    assert core(x, 2).dtype == torch.float64
    e = core.encode(x).detach()
    h = core.step(e, e).detach()
    v = torch.randn_like(h)
    F_h = lambda h_: core.step(h_, e)  # noqa: E731
    with torch.no_grad():  # fused attention path
        fd = (F_h(h + 1e-6 * v) - F_h(h - 1e-6 * v)) / 2e-6
    _, Jv = jvp(F_h, (h,), (v,))
    torch.testing.assert_close(Jv, fd, rtol=1e-6, atol=1e-7)
    small = make(arch="standard_recall", d_model=8, n_heads=2, **SEQ).double()
    hs, es = torch.randn(2, 1, 16, 8, dtype=torch.float64).unbind(0)
    J = jacrev(lambda h_: small.step(h_, es))(hs).reshape(128, 128)
    vs = torch.randn_like(hs)
    torch.testing.assert_close(J @ vs.reshape(-1), jvp(lambda h_: small.step(h_, es), (hs,), (vs,))[1].reshape(-1))


def test_vmap_over_samples_matches_the_batched_step():
    core = make(arch="standard_recall", residual="gru", **SEQ)
    h, e = torch.randn(2, 3, 16, 32).unbind(0)
    torch.testing.assert_close(vmap(core.step)(h, e), core.step(h, e))


def test_double_backward_through_step():
    """Jacobian regularization and Hessian-vector products differentiate a gradient."""
    core = make(arch="internal_recall", **SEQ)
    h, e = torch.randn(2, 2, 16, 32).unbind(0)
    h.requires_grad_()
    # Plain autograd cannot tell at forward time that a double backward follows: ask for MATH.
    with sdpa_kernel(SDPBackend.MATH):
        (g,) = torch.autograd.grad(core.step(h, e).square().sum(), h, create_graph=True)
    g.square().sum().backward()
    assert core.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_no_grad_and_traced_attention_paths_agree():
    core = make(arch="standard_recall", **GRID)
    h, e = torch.randn(2, 2, 81, 32).unbind(0)
    with torch.no_grad():
        fused = core.step(h, e)
    torch.testing.assert_close(core.step(h, e), fused, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_forward():
    core = make(arch="internal_recall", norm="peri", residual="gru", **GRID)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = core(torch.randn(2, 81, 3), 2)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


# initial states
def test_init_state_kinds():
    core = make(init_state="zeros")
    e = core.encode(torch.randn(2, 5, 3)).double()
    assert torch.equal(core.init_state(e), torch.zeros_like(e))
    assert core.init_state(e, kind="embedding") is e
    r1, r2 = core.init_state(e, kind="random"), core.init_state(e, kind="random", seed=0)
    assert r1.dtype == torch.float64 and r1.shape == e.shape and torch.equal(r1, r2)
    assert not torch.equal(r1, core.init_state(e, kind="random", seed=1))
    seeded = make(init_state="random", init_seed=1)
    assert torch.equal(seeded.init_state(e), core.init_state(e, kind="random", seed=1))
    with pytest.raises(ValueError, match=r"kind='noise'.*embedding"):
        core.init_state(e, kind="noise")
    assert set(INIT_STATES) == {"embedding", "zeros", "random"}


# configuration and shape errors
@pytest.mark.parametrize("kw,key,allowed", [
    (dict(arch="rnn"), "arch", "internal_recall"),
    (dict(norm="pre"), "norm", "outer"),
    (dict(recall="gate"), "recall", "concat"),
    (dict(residual="lstm"), "residual", "gru"),
    (dict(init_state="noise"), "init_state", "random"),
    (dict(d_model=0), "d_model", ">= 1"),
    (dict(d_model=32.0), "d_model", "int"),
    (dict(n_heads=5), "n_heads", "divisor of d_model=32"),
    (dict(n_heads=32), "n_heads", "multiple of 2"),
    (dict(n_heads=16, grid=(9, 9)), "n_heads", "multiple of 2 \\* 2"),
    (dict(in_dim=True), "in_dim", "int"),
    (dict(grid=(9, 0)), "grid", "tuple of ints"),
    (dict(grid=()), "grid", "tuple of ints"),
    (dict(attn_window=4), "attn_window", "odd"),
    (dict(init_seed=-1), "init_seed", ">= 0"),
    (dict(rope_base=0.5), "rope_base", "> 1"),
    (dict(arch="no_recall", recall="add"), "recall", "default 'linear'"),
    (dict(arch="fully_looped", norm="inner"), "norm", "default 'outer'"),
    (dict(arch="fully_looped", residual="gru"), "residual", "default 'add'"),
    (dict(arch="fixed_depth", layers_per_loop=2), "layers_per_loop", "default 1"),
    (dict(arch="standard_recall", depth=3), "depth", "default 15"),
])
def test_bad_config_names_key_and_allowed_values(kw, key, allowed):
    with pytest.raises(ValueError, match=rf"CoreConfig\.{key}=.*allowed:.*{allowed}"):
        CoreConfig(**{**SMALL, **kw})


def test_config_dict_round_trip_and_unknown_keys():
    cfg = CoreConfig(**SMALL, arch="internal_recall", grid=[9, 9], attn_window=3)
    assert cfg.grid == (9, 9)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["grid"] == [9, 9] and CoreConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['heads'\].*allowed keys.*n_heads"):
        CoreConfig.from_dict({**d, "heads": 8})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['in_dim'\]"):
        CoreConfig.from_dict({"out_dim": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.arch = "no_recall"


def test_runtime_shape_errors_name_the_shapes():
    core = make(**GRID)
    with pytest.raises(ValueError, match=r"\(2, 81, 4\).*in_dim=3"):
        core(torch.randn(2, 81, 4), 1)
    with pytest.raises(ValueError, match=r"grid=\(9, 9\) has 81 cells.*n_tokens=80"):
        core(torch.randn(2, 80, 3), 1)
    e = core.encode(torch.randn(2, 81, 3))
    with pytest.raises(ValueError, match=r"\(2, 81, 16\).*\(2, 81, 32\)"):
        core.step(torch.randn(2, 81, 16), e)
    with pytest.raises(ValueError, match=r"iters=0"):
        core(torch.randn(2, 81, 3), 0)


# weights for spectra, parameter counts
def test_weight_matrices():
    w = make(arch="standard_recall").weight_matrices()
    assert {k: tuple(v.shape) for k, v in w.items()} == {
        "W_Q": (32, 32), "W_K": (32, 32), "W_V": (32, 32), "W_O": (32, 32),
        "W_1": (128, 32), "W_2": (32, 128), "W_x": (32, 32), "W_e": (32, 32)}
    core = make(arch="internal_recall", recall="add", layers_per_loop=2)
    assert set(core.weight_matrices()) == {f"W_{m}{s}" for m in "QKVO12" for s in ("", ".1")}
    assert core.weight_matrices()["W_K.1"].data_ptr() == core.blocks[1].attn.qkv.weight[32:].data_ptr()


def parameter_counts(d: int = 256, heads: int = 8, in_dim: int = 12, out_dim: int = 2) -> dict[str, int]:
    counts = {}
    for v in variants():
        if v["residual"] == "gru" and v["recall"] != "linear":
            continue
        name = vid({k: v[k] for k in ("arch", "norm", "recall", "residual")})
        cfg = CoreConfig(d_model=d, n_heads=heads, in_dim=in_dim, out_dim=out_dim, **{**v, "depth": 15})
        with torch.device("meta"):  # shapes only: no memory, no initialization cost
            counts[name] = sum(p.numel() for p in build_core(cfg).parameters())
    return counts


def test_parameter_counts_follow_the_layer_formula():
    d, r = 256, 4
    lin = lambda i, o: i * o + o  # noqa: E731
    attn = lin(d, 3 * d) + 2 * (d // 8) + lin(d, d)
    mlp = lin(d, r * d) + lin(r * d, d)
    io = lin(12, d) + d + lin(d, d) + lin(d, 2)
    counts = parameter_counts()
    assert counts["no_recall-inner-linear-add"] == io + attn + mlp + d
    assert counts["standard_recall-peri-linear-add"] == io + attn + mlp + 2 * d + 2 * lin(d, d)
    assert counts["internal_recall-outer-linear-gru"] == io + attn + mlp + 2 * lin(d, d) + 2 * lin(d, 3 * d)
    assert counts["fixed_depth-outer-linear-add"] == io + 15 * (attn + mlp)
    assert counts["fully_looped-outer-linear-add"] == counts["no_recall-inner-linear-add"]
    assert 0.9e6 < counts["standard_recall-outer-linear-add"] < 1.1e6  # the official code's looped model: about 1.0M


if __name__ == "__main__":
    for name, n in parameter_counts().items():
        print(f"{name:40s} {n:>12,d}")
