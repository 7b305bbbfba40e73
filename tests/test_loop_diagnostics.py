"""Loop diagnostics (fpstab.loop_diagnostics): values against direct recomputations on a tiny
core, training unchanged with them on, resume-safe records, nothing run when off; the unrolled
loss they compare with."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import fpstab.train as train_module
from fpstab.architectures import CoreConfig, build_core
from fpstab.architectures.config import FU_VARIANTS
from fpstab.config import Runtime, resolve_config
from fpstab.loop_diagnostics import RECORD_KIND, due, group_norms, step_grad_norms, trace_loop
from fpstab.protocol import loss_depths, make_optimizer, train_step
from fpstab.runs import last_checkpoint_path, read_metrics
from fpstab.tasks import get_task
from fpstab.train import RunKilled, train

QUIET = Runtime(quiet=True)
TASK = get_task("prefix_sum")


def tiny_cfg(**changes: object):
    base = dict(task="prefix_sum", arch="no_recall", norm="loop", layers_per_loop=2, d_model=16, n_heads=2,
                n_train=32, n_val=8, batch_size=8, epochs=2, lr=3e-3, warmup_epochs=1.5, lr_milestones=[1],
                train_iters=3, train_level="16", grad_mode="unrolled")
    return resolve_config(None, {**base, **changes})


def tiny_core(seed: int = 0, **kw: object):
    torch.manual_seed(seed)
    cfg = CoreConfig(**{"d_model": 16, "n_heads": 2, "in_dim": TASK.in_dim, "out_dim": TASK.out_dim,
                        "attn_window": 5, "layers_per_loop": 2, **kw})
    return build_core(cfg).double()


def batch(n: int = 4):
    b = TASK.make("16", n, seed=3)
    return b.inputs.double(), b.targets


def unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.pow(2).mean(-1, keepdim=True).add(torch.finfo(z.dtype).eps).sqrt()


def loop_groups(core: torch.nn.Module, grads: list[torch.Tensor | None]) -> dict[str, float]:
    names = [n for n, _ in core.named_parameters() if not n.startswith(("embed.", "head."))]
    return group_norms(zip(names, grads))


@pytest.mark.parametrize("variant", ["LT", "LT_i"])
def test_token_norms_match_a_direct_recomputation(variant: str) -> None:
    core = tiny_core(**FU_VARIANTS[variant])
    x, y = batch()
    trace = trace_loop(core, TASK, x, y, iters=3)
    e = core.encode(x)
    h, streams, states = core.init_state(e), [], []
    for _ in range(3):  # the LT / LT_i iteration written out: z = N(h or e + h), blocks, h = N(z)
        z = unit(h if variant == "LT" else e + h)
        for b in core.blocks:
            z = b(z, e)
        h = unit(z)
        streams.append(z.norm(dim=-1).mean().item())
        states.append(h.norm(dim=-1).mean().item())
    assert trace.stream_norm == pytest.approx(streams, rel=1e-6)
    assert trace.state_norm == pytest.approx(states, rel=1e-6)
    assert trace.state_norm == pytest.approx([4.0] * 3, rel=1e-6)  # sqrt(d_model): normalized
    assert max(abs(s - 4.0) for s in trace.stream_norm) > 0.1  # the stream is not


def test_per_iteration_gradients_match_freezing_all_other_iterations() -> None:
    """Iteration t's contribution, recomputed by letting only iteration t see the live weights
    (the others a detached copy); their sum is the full gradient of the unrolled loss."""
    core = tiny_core(arch="fully_looped")
    frozen = copy.deepcopy(core).requires_grad_(False)
    x, y = batch()
    trace = trace_loop(core, TASK, x, y, iters=3)
    loop_params = [p for n, p in core.named_parameters() if not n.startswith(("embed.", "head."))]
    per_t, state_grads = [], []
    for t in range(3):
        e = core.encode(x)
        h, states = core.init_state(e), []
        for s in range(3):
            h = (core if s == t else frozen).step(h, e)
            h.retain_grad()
            states.append(h)
        loss = TASK.loss(core.readout(h), y)
        per_t.append(torch.autograd.grad(loss, loop_params + states, retain_graph=True, allow_unused=True))
        assert trace.loss == pytest.approx(loss.item(), rel=1e-12)
    for group, values in trace.loop_grad_norm.items():
        assert values == pytest.approx([loop_groups(core, list(g[:len(loop_params)]))[group] for g in per_t], rel=1e-6)
    full = core(x, 3)[-1]
    grads = torch.autograd.grad(TASK.loss(full, y), loop_params)
    assert trace.unrolled_grad_norm == pytest.approx(loop_groups(core, list(grads)), rel=1e-6)
    # dloss/dh(t) does not depend on which iteration's weights are live
    assert trace.state_grad_norm == pytest.approx([per_t[0][len(loop_params) + t].norm().item() for t in range(3)],
                                                  rel=1e-6)
    assert len(set(round(v, 9) for v in trace.loop_grad_norm["blocks.0"])) == 3  # not one number repeated


def test_step_gradient_norms_are_before_clipping_and_equal_the_unrolled_loss() -> None:
    cfg = tiny_cfg(grad_clip=1e-4)  # every step clips
    core = tiny_core(**FU_VARIANTS["LT_i"])
    x, y = batch(8)
    trace = trace_loop(core, TASK, x, y, iters=cfg.train_iters)
    embed_head = copy.deepcopy(core)
    TASK.loss(embed_head(x, cfg.train_iters)[-1], y).backward()
    stats = train_step(core, core.step_from, TASK, cfg, make_optimizer(core, cfg), x, y, (0, 3), "fp32")
    assert stats.grad_norm > 100 * cfg.grad_clip  # clipped hard
    norms = step_grad_norms(core, stats.grad_norm)
    for group, value in trace.unrolled_grad_norm.items():
        assert norms[group] == pytest.approx(value, rel=1e-6), group
    for group in ("embed", "head"):
        expected = math.sqrt(sum(p.grad.pow(2).sum().item() for n, p in embed_head.named_parameters()
                                 if n.startswith(group + ".")))
        assert norms[group] == pytest.approx(expected, rel=1e-6)
    clipped = group_norms((n, p.grad) for n, p in core.named_parameters())
    assert clipped["head"] < 0.01 * norms["head"]  # p.grad itself was clipped


def test_training_is_the_same_with_diagnostics_on(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    train(cfg, tmp_path / "off", QUIET)
    train(cfg, tmp_path / "on", Runtime(quiet=True, loop_diagnostics_every=1))
    off = torch.load(last_checkpoint_path(tmp_path / "off"), weights_only=True)
    on = torch.load(last_checkpoint_path(tmp_path / "on"), weights_only=True)
    assert all(torch.equal(off["model"][k], on["model"][k]) for k in off["model"])
    assert all(torch.equal(off["optimizer"]["state"][i]["exp_avg"], on["optimizer"]["state"][i]["exp_avg"])
               for i in off["optimizer"]["state"])

    def train_records(run: Path) -> list[tuple[float, float]]:
        return [(r["loss"], r["grad_norm"]) for r in read_metrics(run) if r["kind"] == "train"]

    assert train_records(tmp_path / "off") == train_records(tmp_path / "on")
    diags = [r for r in read_metrics(tmp_path / "on") if r["kind"] == RECORD_KIND]
    assert [r["step"] for r in diags] == list(range(1, cfg.total_steps + 1))
    assert not any(r["kind"] == RECORD_KIND for r in read_metrics(tmp_path / "off"))


def test_records_survive_a_kill_and_resume(tmp_path: Path) -> None:
    """Killed after step 5, resumed from the end of epoch 1 (step 4): the records after the checkpoint
    are dropped and rewritten, the cadence counts optimizer steps (not this session's)."""
    cfg, rt = tiny_cfg(checkpoint_every=3), Runtime(quiet=True, loop_diagnostics_every=3)
    train(cfg, tmp_path / "full", rt)
    with pytest.raises(RunKilled):
        train(cfg, tmp_path / "killed", Runtime(quiet=True, loop_diagnostics_every=3, stop_after_steps=5))
    train(cfg, tmp_path / "killed", rt, resume=True)

    def diags(run: Path) -> list[dict]:
        return [r for r in read_metrics(run) if r["kind"] == RECORD_KIND]

    assert [r["step"] for r in diags(tmp_path / "full")] == [3, 6]
    assert diags(tmp_path / "full") == diags(tmp_path / "killed")


def test_nothing_runs_when_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("trace_loop ran with loop diagnostics off")

    monkeypatch.setattr(train_module, "trace_loop", refuse)
    assert train(tiny_cfg(epochs=1), tmp_path / "off", QUIET).state == "completed"
    with pytest.raises(AssertionError, match="trace_loop ran"):
        train(tiny_cfg(epochs=1), tmp_path / "on", Runtime(quiet=True, loop_diagnostics_every=4))


def test_due_steps() -> None:
    assert [s for s in range(10) if due(3, s)] == [2, 5, 8]
    assert not any(due(0, s) for s in range(10))


def test_unrolled_loss_is_the_full_unroll_and_draws_nothing() -> None:
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert loss_depths(tiny_cfg(train_iters=7), g) == (0, 7)
    assert torch.equal(g.get_state(), state)
    assert loss_depths(tiny_cfg(grad_mode="progressive"), g) != (0, 7) or not torch.equal(g.get_state(), state)
    assert loss_depths(tiny_cfg(), g, looped=False) == (0, 1)
    with pytest.raises(ValueError, match=r"alpha=0.5 must be 1 with grad_mode='unrolled'"):
        tiny_cfg(alpha=0.5)


def test_one_pass_and_progressive_runs_record_too(tmp_path: Path) -> None:
    rt = Runtime(quiet=True, loop_diagnostics_every=4)
    train(tiny_cfg(arch="fixed_depth", norm="inner", layers_per_loop=1, depth=2, grad_mode="progressive", epochs=1),
          tmp_path / "fixed", rt)
    rec = [r for r in read_metrics(tmp_path / "fixed") if r["kind"] == RECORD_KIND]
    assert len(rec) == 1 and rec[0]["iters"] == 1 and rec[0]["state_norm"] == rec[0]["stream_norm"]
    train(tiny_cfg(arch="standard_recall", norm="outer", layers_per_loop=1, grad_mode="progressive", epochs=1),
          tmp_path / "prog", rt)
    rec = [r for r in read_metrics(tmp_path / "prog") if r["kind"] == RECORD_KIND]
    assert rec[0]["iters"] == 3 and set(rec[0]["loop_grad_norm"]) >= {"blocks.0", "blocks.0.attn", "blocks.0.mlp"}
