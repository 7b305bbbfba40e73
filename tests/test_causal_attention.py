"""Causal attention: logits at position t never depend on inputs after t, in every arch and AD mode."""

from __future__ import annotations

import pytest
import torch
from torch.func import jacrev

from fpstab.architectures import ARCHS, CoreConfig, build_core
from fpstab.architectures.sdpa import attend
from fpstab.config import TrainConfig, core_config_for
from fpstab.tasks import get_task

SMALL = dict(d_model=32, n_heads=4, in_dim=3, out_dim=2)
N, T = 12, 5  # tokens; inputs after position T are perturbed


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cases() -> list[dict]:
    out = [dict(arch=a, **(dict(depth=2) if a == "fixed_depth" else {})) for a in ARCHS]
    out += [dict(arch="standard_recall", residual="gru", norm="both"),
            dict(arch="internal_recall", recall="concat", norm="peri"),
            dict(arch="fully_looped", layers_per_loop=2, init_state="random")]
    return out


def logits_pair(causal: bool, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (iters, B, N, out) of one core for x and for x with positions > T redrawn."""
    torch.manual_seed(0)
    core = build_core(CoreConfig(**SMALL, **kw, causal=causal)).eval()
    x = torch.randn(2, N, SMALL["in_dim"])
    x2 = x.clone()
    x2[:, T + 1:] = torch.randn(2, N - T - 1, SMALL["in_dim"])
    with torch.no_grad():
        return core(x, iters=4), core(x2, iters=4)


@pytest.mark.parametrize("kw", cases(), ids=lambda kw: "-".join(map(str, kw.values())))
def test_later_inputs_leave_earlier_logits_unchanged_only_when_causal(kw):
    a, b = logits_pair(True, **kw)
    assert torch.allclose(a[:, :, :T + 1], b[:, :, :T + 1], atol=1e-6, rtol=0)
    assert (a[:, :, T + 1:] - b[:, :, T + 1:]).abs().max() > 1e-3
    a, b = logits_pair(False, **kw)  # the same core without the mask reads the future: the test can fail
    assert (a[-1, :, :T + 1] - b[-1, :, :T + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["internal_recall", "fully_looped"])
def test_jacobian_under_torch_func_is_lower_triangular(arch):
    """torch.func runs the MATH backend (sdpa.py): the mask must hold there too."""
    torch.manual_seed(1)
    core = build_core(CoreConfig(d_model=16, n_heads=2, in_dim=3, out_dim=2, arch=arch, causal=True)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    jac = jacrev(lambda v: core(v[None], iters=3)[-1, 0])(x)  # (6, 2, 6, 3): d logits[t] / d x[s]
    block = jac.abs().sum((1, 3))  # (t, s)
    assert (block.triu(1) == 0).all() and (block.diagonal() > 0).all()


@pytest.mark.parametrize("kw, msg", [
    (dict(attn_window=5), "causal=True is invalid; allowed: False with a local attn_window"),
    (dict(grid=(3, 4)), "False with a local attn_window or a 2-D grid"),
    (dict(causal="yes"), "causal='yes' is invalid; allowed: True or False"),
])
def test_bad_causal_configs_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        CoreConfig(**{**SMALL, "causal": True, **kw})


def test_attend_refuses_a_mask_with_causal():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="causal=True takes no mask"):
        attend(q, q, q, torch.ones(4, 4, dtype=torch.bool), causal=True)


def test_tasks_ask_for_causal_attention_through_the_train_config():
    cfg = TrainConfig(task="markov", arch="standard_recall")
    assert core_config_for(cfg, get_task("markov")).causal is True
    assert core_config_for(TrainConfig(), get_task("prefix_sum")).causal is False
    with pytest.raises(ValueError, match="causal"):
        core_config_for(TrainConfig(task="markov", attn_window=5), get_task("markov"))
