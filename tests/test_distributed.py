"""Data parallel training: two CPU processes (gloo) take the same steps as one process on the whole
batch, keep identical parameters, and train and resume a run through the command line."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fpstab.cli import main
from fpstab.config import Runtime, resolve_config
from fpstab.distributed import Ranks, data_parallel, process_group, ranks_from_env
from fpstab.runs import last_checkpoint_path, read_json, read_metrics
from fpstab.train import train

# 4 steps an epoch, 2 epochs; a train record every step
CONFIG = dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2, n_train=32, n_val=8,
              batch_size=8, epochs=2, lr=3e-3, warmup_epochs=1.5, lr_milestones=[1], train_iters=4, train_level="16")
FLAGS = ["train", "--quiet", "--log-every", "1", *[a for k, v in CONFIG.items() for a in (
    "--" + k.replace("_", "-"), *([str(x) for x in v] if isinstance(v, list) else [str(v)]))]]
# (n, k) of the progressive loss per step: n > 0 detaches the state, so a no_recall encoder gets no
# gradient in those steps (its gradient stays None and AdamW leaves it alone, in one process and in two)
DEPTHS = [(0, 2), (2, 1), (1, 2), (0, 1), (3, 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_rank(target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    os.environ.update(env)
    code = target(*args)
    os._exit(code if isinstance(code, int) else 0)  # no pytest exit handlers in the child


def launch(target: Callable[..., Any], args: tuple[Any, ...], world: int, timeout_s: float = 120.0) -> list[int]:
    """Run target(*args) as `world` ranks, with the environment torchrun gives them (forked: torch is
    loaded already); their exit codes. Ranks still running after timeout_s are killed (never a hang)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_as_rank, args=(target, args, {**env, "RANK": str(r), "LOCAL_RANK": str(r)}))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return [p.exitcode for p in procs]


def build(arch: str) -> tuple[Any, Any, Any]:
    """(core, task, cfg) of a tiny core, seeded."""
    from fpstab.architectures import build_core
    from fpstab.config import core_config_for
    from fpstab.tasks import get_task

    cfg = resolve_config(None, {**CONFIG, "arch": arch})
    task = get_task(cfg.task)
    torch.manual_seed(0)
    return build_core(core_config_for(cfg, task)), task, cfg


def train_steps(arch: str, out: Path | None) -> dict[str, torch.Tensor]:
    """len(DEPTHS) optimizer steps of a tiny core on fixed batches of 8 (each rank on its share when
    the environment names ranks); the final parameters, also saved to out/rankR.pt when out is given."""
    from fpstab.protocol import make_optimizer, train_step

    ranks = ranks_from_env()
    core, task, cfg = build(arch)
    data = task.make("16", 8 * len(DEPTHS), 0)
    with process_group(ranks, "cpu"):
        optimizer = make_optimizer(core, cfg)
        parallel = data_parallel(core, core.step_from, task, cfg, ranks, torch.device("cpu")) if ranks.distributed else None
        for i, depths in enumerate(DEPTHS):
            x, y = (ranks.shard(t[8 * i:8 * (i + 1)]) for t in (data.inputs, data.targets))
            train_step(core, core.step_from, task, cfg, optimizer, x, y, depths, "fp32", parallel=parallel)
    params = {k: v.detach().clone() for k, v in core.state_dict().items()}
    if out is not None:
        torch.save(params, out / f"rank{ranks.rank}.pt")
    return params


@pytest.mark.parametrize("arch", ["standard_recall", "no_recall", "fully_looped"])
def test_two_ranks_step_as_one_process_on_the_whole_batch(arch: str, tmp_path: Path) -> None:
    assert launch(train_steps, (arch, tmp_path), world=2) == [0, 0]
    one = train_steps(arch, None)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in one)  # identical on both ranks
    assert all(torch.allclose(rank0[k], one[k], rtol=1e-4, atol=1e-6) for k in one), \
        max((rank0[k] - one[k]).abs().max().item() for k in one)
    start = build(arch)[0].state_dict()
    assert all(not torch.equal(start[k], v) for k, v in one.items())  # the steps moved every parameter


def test_two_processes_train_as_one_and_resume(tmp_path: Path) -> None:
    one = tmp_path / "one"
    train(resolve_config(None, CONFIG), one, Runtime(quiet=True, log_every=1))
    two = tmp_path / "two"
    assert launch(main, ([*FLAGS, "--out", str(two), "--stop-after-steps", "6"],), world=2) == [137, 137]
    assert launch(main, (["train", "--out", str(two), "--resume", "--quiet"],), world=2) == [0, 0]
    assert read_json(two / "config.json")["runtime"]["world_size"] == 2
    a, b = curve(one), curve(two)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 9))
    assert [(n, k) for *_, n, k in a] == [(n, k) for *_, n, k in b]  # the same (n, k) on every rank
    assert [loss for _, loss, *_ in b] == pytest.approx([loss for _, loss, *_ in a], rel=1e-5)
    final_one = torch.load(last_checkpoint_path(one), weights_only=True)["model"]
    final_two = torch.load(last_checkpoint_path(two), weights_only=True)["model"]
    assert all(torch.allclose(final_one[k], final_two[k], atol=1e-5) for k in final_one)
    assert [r["kind"] for r in read_metrics(two)].count("resume") == 1


def curve(run: Path) -> list[tuple[int, float, float, float]]:
    return [(r["step"], r["loss"], r["n"], r["k"]) for r in read_metrics(run) if r["kind"] == "train"]


def test_ranks_from_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert ranks_from_env({}) == Ranks()
    assert ranks_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Ranks(1, 2, 1)
    with pytest.raises(ValueError, match="need 0 <= RANK < WORLD_SIZE"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    batch = torch.arange(12)
    shards = [Ranks(r, 3).shard(batch).tolist() for r in range(3)]
    assert sorted(sum(shards, [])) == batch.tolist() and all(len(s) == 4 for s in shards)  # disjoint, equal
    assert Ranks(1, 2, 1).device("cuda") == "cuda:1" and Ranks().device("cuda:3") == "cuda:3"
    with pytest.raises(ValueError, match="--device cuda:0 with 2 processes: give --device cuda"):
        Ranks(1, 2, 1).device("cuda:0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main([*FLAGS, "--out", "unused"]) == 2  # refused before any process group starts
    assert "batch_size=8 does not split evenly over 3 processes" in capsys.readouterr().err
