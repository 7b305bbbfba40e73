"""`fpstab train` end to end on tiny prefix-sum runs: learning, resume after a
kill, refused configs, corrupt checkpoints, divergence, gradient modes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from fpstab.cli import main as cli_main
from fpstab.config import Runtime, TrainConfig, core_config_for, resolve_config
from fpstab.runs import (
    CheckpointError,
    last_checkpoint_path,
    load_run,
    load_trained,
    read_metrics,
    read_status,
)
from fpstab.protocol import make_optimizer, train_step
from fpstab.train import RunKilled, train

QUIET = Runtime(quiet=True)


def tiny_cfg(**changes: object) -> TrainConfig:
    """A seconds-sized prefix-sum config: 4 steps/epoch, 2 epochs."""
    base = dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2,
                n_train=32, n_val=8, batch_size=8, epochs=2, lr=3e-3, warmup_epochs=1.5,
                lr_milestones=[1], train_iters=4, train_level="16")
    return resolve_config(None, {**base, **changes})


def final_params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(last_checkpoint_path(run), weights_only=True)["model"]


def test_training_steps_decrease_loss() -> None:
    """Forty steps on one fixed batch (full 4-step unroll) bring its loss from
    above chance (ln 2 per token) to clearly below it."""
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task

    cfg = tiny_cfg(d_model=32, warmup_epochs=0.0)
    task = get_task("prefix_sum")
    torch.manual_seed(0)
    core = build_core(core_config_for(cfg, task))
    opt = make_optimizer(core, cfg)
    batch = task.make("16", 16, seed=0)
    losses = [train_step(core, core.step_from, task, cfg, opt, batch.inputs, batch.targets, (0, 4), "fp32").loss
              for _ in range(40)]
    chance = math.log(2)
    assert losses[0] > chance and sum(losses[-5:]) / 5 < 0.95 * chance, losses


def test_validation_reads_back_once_whatever_the_batches(host_syncs: list[str]) -> None:
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task
    from fpstab.protocol import evaluate_at

    cfg = tiny_cfg()
    task = get_task("prefix_sum")
    core = build_core(core_config_for(cfg, task))
    data = task.make("16", 12, seed=0)
    results = []
    for batch_size in (12, 4):
        host_syncs.clear()
        results.append(evaluate_at(core, core.step_from, task, data.inputs, data.targets, 3, batch_size,
                                   torch.device("cpu"), "fp32"))
        assert host_syncs == ["tolist"]
    assert results[0] == pytest.approx(results[1])
    with torch.no_grad():
        logits = core(data.inputs, 3)[-1]
    assert results[0]["token_acc"] == pytest.approx(task.metrics(logits, data.targets)["token_acc"])
    assert results[0]["loss"] == pytest.approx(float(task.loss(logits, data.targets)), rel=1e-5)


def test_scoring_accepts_every_recorded_answer() -> None:
    """A chess prediction that is another winning first move is right when the batch's
    answer table is passed (validation and evaluation alike), and wrong without it."""
    from fpstab.evaluate import trajectory_metrics
    from fpstab.tasks import get_task
    from fpstab.train import evaluate_at

    task = get_task("chess")
    targets = torch.zeros(2, 64, dtype=torch.long)
    targets[:, [12, 4]] = 1
    answers = torch.tensor([[[12, 4, 1], [30, 22, 1]]] * 2)
    logits = torch.zeros(2, 64, task.out_dim)
    logits[:, [30, 22], 1] = 5.0  # the second answer

    class Fixed(torch.nn.Module):
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def init_state(self, e: torch.Tensor) -> torch.Tensor:
            return e

        def loop_input(self, e: torch.Tensor) -> torch.Tensor:
            return e

        def step_from(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return h

        def readout(self, h: torch.Tensor) -> torch.Tensor:
            return logits[: h.shape[0]]

    core, x, cpu = Fixed(), torch.zeros(2, 64, task.in_dim), torch.device("cpu")
    assert evaluate_at(core, core.step_from, task, x, targets, 1, 2, cpu, "fp32", answers)["exact_match"] == 1.0
    assert evaluate_at(core, core.step_from, task, x, targets, 1, 2, cpu, "fp32")["exact_match"] == 0.0
    assert trajectory_metrics(core, task, x, targets, 2, answers)["correct"].all()
    assert not trajectory_metrics(core, task, x, targets, 2)["correct"].any()


@pytest.mark.parametrize("arch", ["standard_recall", "internal_recall"])
def test_the_loss_computes_the_recall_input_once_with_the_unhoisted_gradients(arch: str) -> None:
    """compute_loss projects e for the recall once per batch (u = core.loop_input(e)), not at each
    of its k iterations, and its gradients are those of k calls of core.step(h, e) (float64)."""
    from fpstab.architectures import build_core
    from fpstab.protocol import compute_loss
    from fpstab.tasks import get_task

    cfg, task = tiny_cfg(arch=arch), get_task("prefix_sum")
    batch = task.make("16", 4, seed=0)
    x = batch.inputs.double()
    torch.manual_seed(0)
    core = build_core(core_config_for(cfg, task)).double()
    calls: list[int] = []
    core.blocks[0].recall.W_e.register_forward_hook(lambda *_: calls.append(1))
    compute_loss(core, core.step_from, task, cfg, x, batch.targets, (0, 6)).loss.backward()
    assert len(calls) == 1
    hoisted = {n: p.grad.clone() for n, p in core.named_parameters()}
    core.zero_grad()
    e = core.encode(x)
    h = core.init_state(e)
    for _ in range(6):
        h = core.step(h, e)
    task.loss(core.readout(h), batch.targets).backward()
    assert len(calls) == 1 + 6
    for name, p in core.named_parameters():
        torch.testing.assert_close(hoisted[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_the_loss_refuses_the_cores_own_step_where_it_passes_the_loop_input() -> None:
    """With linear recall u = loop_input(e) has e's shape, so core.step(h, u) would run without an
    error and apply W_e twice: compute_loss and evaluate_at refuse it, plain, compiled or checkpointed."""
    from fpstab.architectures import build_core
    from fpstab.protocol import checkpointed, compute_loss, evaluate_at
    from fpstab.tasks import get_task

    cfg, task = tiny_cfg(), get_task("prefix_sum")
    core = build_core(core_config_for(cfg, task))
    batch = task.make("16", 2, seed=0)
    for wrong in (core.step, torch.compile(core.step), checkpointed(core.step), checkpointed(torch.compile(core.step))):
        with pytest.raises(ValueError, match=r"core.step\(h, e\).*needs core.step_from"):
            compute_loss(core, wrong, task, cfg, batch.inputs, batch.targets, (0, 2))
        with pytest.raises(ValueError, match=r"needs core.step_from"):
            evaluate_at(core, wrong, task, batch.inputs, batch.targets, 2, 2, torch.device("cpu"), "fp32")
    compute_loss(core, checkpointed(torch.compile(core.step_from)), task, cfg, batch.inputs, batch.targets, (0, 0))


@pytest.mark.parametrize("depths, embed_learns", [((0, 3), True), ((2, 1), False)])
def test_progressive_loss_gradient_paths(depths: tuple[int, int], embed_learns: bool) -> None:
    """n = 0: the k steps start from h0 = e with its graph (the encoder learns
    through h0); n > 0: the state is detached, and a no_recall encoder, which
    reaches the loop only through h0, gets no gradient."""
    from fpstab.architectures import build_core
    from fpstab.protocol import compute_loss
    from fpstab.tasks import get_task

    cfg = tiny_cfg(arch="no_recall")
    task = get_task("prefix_sum")
    core = build_core(core_config_for(cfg, task))
    batch = task.make("16", 4, seed=0)
    compute_loss(core, core.step_from, task, cfg, batch.inputs, batch.targets, depths).loss.backward()
    grad = core.embed.weight.grad
    assert (grad is not None and bool(grad.abs().sum() > 0)) == embed_learns
    assert core.head[-1].weight.grad.abs().sum() > 0


def test_run_directory_layout(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(tiny_cfg(), run, QUIET)
    assert result.state == "completed" and result.step == 8
    config = json.loads((run / "config.json").read_text())
    assert config["schema"] == "fpstab.run_config" and config["seed"] == 0
    assert TrainConfig.from_dict(config["train"]) == tiny_cfg()
    assert config["core"]["arch"] == "standard_recall" and config["core"]["attn_window"] == 5
    assert config["runtime"]["precision"] == "fp32"
    kinds = [r["kind"] for r in read_metrics(run)]
    assert kinds.count("epoch") == 2 and kinds[-1] == "done" and "train" in kinds
    assert read_status(run)["state"] == "completed"
    ckpt = torch.load(last_checkpoint_path(run), weights_only=True)  # plain tensors and scalars only
    assert ckpt["step"] == 8 and ckpt["config"]["lr"] == 3e-3
    core, core_cfg, cfg, task = load_run(run)
    assert task == "prefix_sum" and cfg == tiny_cfg() and core_cfg.d_model == 16
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in core.state_dict().items())
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        train(tiny_cfg(), run, QUIET)


def test_load_trained_reads_the_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval and probe take the step from the same read as the weights; a checkpoint without its
    step is refused by name."""
    run = tmp_path / "run"
    train(tiny_cfg(), run, QUIET)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    loaded = load_trained(run)
    assert len(reads) == 1 and loaded.step == 8 and loaded.checkpoint == last_checkpoint_path(run)
    assert loaded.task == "prefix_sum" and loaded.train_config == tiny_cfg()
    monkeypatch.setattr(torch, "load", real_load)
    ckpt = real_load(last_checkpoint_path(run), weights_only=True)
    del ckpt["step"]
    torch.save(ckpt, last_checkpoint_path(run))
    with pytest.raises(CheckpointError, match=r"lacks entries \['step'\]"):
        load_trained(run)


@pytest.mark.parametrize("kill_at, ckpt_every", [(5, 0), (7, 3)])
def test_resume_after_kill_matches_uninterrupted(tmp_path: Path, kill_at: int, ckpt_every: int) -> None:
    """Kill (no save) after `kill_at` steps, resume from the last checkpoint
    (end of epoch 1, or mid-epoch at step 6): parameters, optimizer state and
    logged losses equal the uninterrupted run's exactly."""
    cfg = tiny_cfg(checkpoint_every=ckpt_every)
    train(cfg, tmp_path / "full", QUIET)
    with pytest.raises(RunKilled):
        train(cfg, tmp_path / "killed", Runtime(quiet=True, stop_after_steps=kill_at))
    assert read_status(tmp_path / "killed")["state"] == "running"  # as a kill leaves it
    resumed = train(cfg, tmp_path / "killed", QUIET, resume=True)
    assert resumed.state == "completed" and resumed.step == 8
    full, again = final_params(tmp_path / "full"), final_params(tmp_path / "killed")
    assert full.keys() == again.keys()
    for k in full:
        assert torch.equal(full[k], again[k]), k
    opt_a = torch.load(last_checkpoint_path(tmp_path / "full"), weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(last_checkpoint_path(tmp_path / "killed"), weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)

    def losses(run: Path) -> list[tuple[int, float, float]]:
        return [(r["step"], r["loss"], r.get("n", -1)) for r in read_metrics(run) if r["kind"] == "train"]

    assert losses(tmp_path / "full") == losses(tmp_path / "killed")  # records after the checkpoint were dropped
    assert [r["kind"] for r in read_metrics(tmp_path / "killed")].count("resume") == 1


def test_resume_refuses_other_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RunKilled):
        train(tiny_cfg(), run, Runtime(quiet=True, stop_after_steps=4))
    with pytest.raises(CheckpointError, match=r"different config \(lr: 0.003 there vs 0.001 now\)"):
        train(tiny_cfg(lr=1e-3), run, QUIET, resume=True)
    # a checkpoint copied in from another run (other seed) is refused too
    other = tmp_path / "other"
    with pytest.raises(RunKilled):
        train(tiny_cfg(seed=1), other, Runtime(quiet=True, stop_after_steps=4))
    shutil.copy(last_checkpoint_path(other), last_checkpoint_path(run))
    with pytest.raises(CheckpointError, match=r"checkpoint was made with a different config \(seed: 1 there vs 0 now\)"):
        train(tiny_cfg(), run, QUIET, resume=True)


def test_corrupt_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RunKilled):
        train(tiny_cfg(), run, Runtime(quiet=True, stop_after_steps=4))
    path = last_checkpoint_path(run)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last.pt is corrupt or not a torch checkpoint"):
        train(tiny_cfg(), run, QUIET, resume=True)
    assert cli_main(["eval", str(run), "--iters", "2", "--samples", "2"]) == 2  # one-line error, no traceback


def test_divergence_stops_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    result = train(tiny_cfg(lr=1e30, warmup_epochs=0.0, grad_clip=0.0), run, Runtime())
    assert result.state == "diverged" and result.step < 8
    status = read_status(run)
    assert status["state"] == "diverged" and "non-finite" in status["reason"]
    last = read_metrics(run)[-1]
    assert last["kind"] == "diverged" and last["step"] == result.step
    assert "DIVERGED" in capsys.readouterr().out
    code = cli_main(["train", "--out", str(tmp_path / "cli"), "--quiet", "--task", "prefix_sum",
                     "--train-level", "16", "--d-model", "16", "--n-heads", "2", "--n-train", "16",
                     "--batch-size", "8", "--epochs", "2", "--train-iters", "2", "--lr", "1e30",
                     "--warmup-epochs", "0", "--grad-clip", "0", "--n-val", "0"])
    assert code == 3


@pytest.mark.parametrize("mode", ["implicit", "phantom"])
def test_fixed_point_gradient_modes_train(tmp_path: Path, mode: str) -> None:
    cfg = tiny_cfg(grad_mode=mode, epochs=1, solve_max_iter=6, phantom_steps=2, phantom_damping=0.5)
    result = train(cfg, tmp_path / mode, QUIET)
    assert result.state == "completed"
    rec = [r for r in read_metrics(tmp_path / mode) if r["kind"] == "train"][-1]
    assert rec["nfe"] >= 1 and rec["grad_norm"] > 0


def test_bf16_autocast_and_alpha_on_cpu(tmp_path: Path) -> None:
    result = train(tiny_cfg(precision="bf16", alpha=0.5, epochs=1), tmp_path / "bf16", QUIET)
    assert result.state == "completed"
    rec = [r for r in read_metrics(tmp_path / "bf16") if r["kind"] == "train"][-1]
    assert rec["loss"] == rec["loss"] and rec["grad_norm"] > 0


def test_one_pass_baseline_trains_at_one_application(tmp_path: Path) -> None:
    cfg = tiny_cfg(arch="fixed_depth", depth=2, epochs=1)
    assert train(cfg, tmp_path / "fixed", QUIET).state == "completed"
    assert all(r.get("k") == 1.0 and r.get("n") == 0.0 for r in read_metrics(tmp_path / "fixed") if r["kind"] == "train")
    with pytest.raises(ValueError, match="needs a looped core"):
        train(cfg.replace(grad_mode="implicit"), tmp_path / "fixed2", QUIET)


def test_cli_train_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "cli"
    flags = ["train", "--out", str(run), "--quiet", "--task", "prefix_sum", "--arch", "internal_recall",
             "--train-level", "16", "--d-model", "16", "--n-heads", "2", "--n-train", "16", "--n-val", "4",
             "--batch-size", "8", "--epochs", "2", "--train-iters", "2"]
    assert cli_main(flags + ["--stop-after-steps", "3"]) == 137
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert read_status(run)["state"] == "completed"
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet", "--seed", "4"]) == 2


@pytest.mark.slow
def test_compiled_step_trains(tmp_path: Path) -> None:
    """torch.compile of the loop step (slow on CPU: compiles C++)."""
    result = train(tiny_cfg(epochs=1), tmp_path / "compiled", Runtime(quiet=True, compile=True))
    assert result.state == "completed"


def test_activation_checkpointing_gives_the_same_gradients_and_saves_only_states() -> None:
    """A checkpointed 6-step unroll keeps 6 states for backward (not 6 steps' activations) and
    produces the same loss and parameter gradients."""
    from fpstab.architectures import build_core
    from fpstab.tasks import get_task
    from fpstab.protocol import checkpointed, compute_loss

    cfg = tiny_cfg(d_model=16)
    task = get_task("prefix_sum")
    batch = task.make("16", 4, seed=0)
    results = []
    for wrap in (False, True):
        torch.manual_seed(0)
        core = build_core(core_config_for(cfg, task))
        step = checkpointed(core.step_from) if wrap else core.step_from
        saved: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = compute_loss(core, step, task, cfg, batch.inputs, batch.targets, (0, 6))
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in core.named_parameters()}, sum(saved)))
    (loss, grads, plain_saved), (loss_c, grads_c, ckpt_saved) = results
    assert torch.equal(loss, loss_c)
    assert all(torch.allclose(grads[n], grads_c[n], rtol=1e-5, atol=1e-7) for n in grads)
    assert ckpt_saved < plain_saved / 4, (ckpt_saved, plain_saved)
