"""Data parallel training: two CPU processes (gloo) train one run as one process would on the whole
batch, and resume it after a kill."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch

from fpstab.cli import main
from fpstab.config import Runtime, resolve_config
from fpstab.distributed import Ranks, ranks_from_env
from fpstab.runs import last_checkpoint_path, read_json, read_metrics
from fpstab.train import train

ROOT = Path(__file__).resolve().parents[1]
# 4 steps an epoch, 2 epochs; a train record every step
CONFIG = dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=16, n_heads=2, n_train=32, n_val=8,
              batch_size=8, epochs=2, lr=3e-3, warmup_epochs=1.5, lr_milestones=[1], train_iters=4, train_level="16")
FLAGS = ["train", "--quiet", "--log-every", "1", *[a for k, v in CONFIG.items() for a in (
    "--" + k.replace("_", "-"), *([str(x) for x in v] if isinstance(v, list) else [str(v)]))]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(argv: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    os._exit(main(argv))  # no pytest exit handlers in the child


def launch(argv: list[str], world: int, timeout_s: float = 120.0) -> list[int]:
    """Run `fpstab ARGV` as `world` ranks, as torchrun would (forked: torch is loaded already);
    their exit codes. Ranks still running after timeout_s are killed (a test never hangs)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(argv, {**env, "RANK": str(r), "LOCAL_RANK": str(r)}))
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


def curve(run: Path) -> list[tuple[int, float, float, float]]:
    return [(r["step"], r["loss"], r["n"], r["k"]) for r in read_metrics(run) if r["kind"] == "train"]


def test_two_processes_train_as_one_and_resume(tmp_path: Path) -> None:
    one = tmp_path / "one"
    train(resolve_config(None, CONFIG), one, Runtime(quiet=True, log_every=1))
    two = tmp_path / "two"
    assert launch([*FLAGS, "--out", str(two), "--stop-after-steps", "6"], world=2) == [137, 137]
    assert launch(["train", "--out", str(two), "--resume", "--quiet"], world=2) == [0, 0]
    assert read_json(two / "config.json")["runtime"]["world_size"] == 2
    a, b = curve(one), curve(two)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 9))
    assert [(n, k) for *_, n, k in a] == [(n, k) for *_, n, k in b]  # the same (n, k) on every rank
    assert [loss for _, loss, *_ in b] == pytest.approx([loss for _, loss, *_ in a], rel=1e-5)
    final_one = torch.load(last_checkpoint_path(one), weights_only=True)["model"]
    final_two = torch.load(last_checkpoint_path(two), weights_only=True)["model"]
    assert all(torch.allclose(final_one[k], final_two[k], atol=1e-5) for k in final_one)
    assert [r["kind"] for r in read_metrics(two)].count("resume") == 1


def test_ranks_from_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert ranks_from_env({}) == Ranks()
    assert ranks_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Ranks(1, 2, 1)
    with pytest.raises(ValueError, match="need 0 <= RANK < WORLD_SIZE"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert Ranks(1, 2).shard(torch.arange(8)).tolist() == [4, 5, 6, 7]
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main([*FLAGS, "--out", "unused"]) == 2  # refused before any process group starts
    assert "batch_size=8 does not split evenly over 3 processes" in capsys.readouterr().err
