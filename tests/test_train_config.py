"""Training protocol pieces that need no model: config, presets, optimizer
groups, LR schedule, progressive-loss sampler, atomic files, checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fpstab.config import (
    PRESETS,
    TrainConfig,
    config_diff,
    resolve_config,
    resolve_precision,
)
from fpstab.runs import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from fpstab.protocol import loss_depths, lr_at, max_depth_at, param_groups, progressive_depths
from fpstab.train_command import add_arguments, config_from_args, runtime_from_args


# ---- config -------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grad_mode": "bptt"}, r"grad_mode='bptt' is not one of \['progressive', 'unrolled', 'implicit', 'phantom'\]"),
        ({"precision": "fp16"}, r"precision='fp16' is not one of \['auto', 'fp32', 'bf16'\]"),
        ({"lr": 0.0}, r"lr=0.0 must be > 0.0"),
        ({"lr": float("nan")}, r"lr=nan must be a finite number"),
        ({"alpha": 1.5}, r"alpha=1.5 must be <= 1.0"),
        ({"batch_size": 0}, r"batch_size=0 must be an int >= 1"),
        ({"train_iters": 2.5}, r"train_iters=2.5 must be an int >= 1"),
        ({"d_model": 30, "n_heads": 8}, r"CoreConfig.n_heads=8 is invalid; allowed: a divisor of d_model=30"),
        ({"norm": "post"}, r"CoreConfig.norm='post' is invalid; allowed: one of \('inner', 'outer', 'both', 'peri', 'loop'\)"),
        ({"arch": "fixed_depth", "layers_per_loop": 2}, r"CoreConfig.layers_per_loop=2 is invalid"),
        ({"task": "prefix_sums"}, r"task='prefix_sums' is not one of \['prefix_sum', 'sudoku', 'chess', 'markov'\]"),
        ({"attn_window": 4}, r"attn_window=4 must be 'task', 'full' or an odd positive int"),
        ({"lr_milestones": [60, 30]}, r"lr_milestones=\(60, 30\) must be increasing"),
        ({"n_train": 100, "batch_size": 200}, r"batch_size=200 exceeds n_train=100"),
        ({"preset": "huge"}, r"preset='huge' is not one of \[None, 'paper', 'tiny'\]"),
    ],
)
def test_bad_values_name_key_and_allowed(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(changes)


def test_unknown_key_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['learning_rate'\]; allowed: \["):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        resolve_config("tiny", {"wd": 0.1})


def test_round_trip_and_frozen() -> None:
    cfg = resolve_config("tiny", {"seed": 3})
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.betas == (0.9, 0.999) and isinstance(again.lr_milestones, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 4  # type: ignore[misc]


def test_presets_and_overrides() -> None:
    paper = resolve_config("paper", {"task": "sudoku"})
    assert (paper.d_model, paper.n_heads, paper.batch_size, paper.epochs, paper.n_train) == (256, 8, 500, 100, 40_000)
    assert paper.lr == 1e-3 and resolve_config("paper", {}).lr == 3e-4
    assert paper.lr_milestones == (60, 100) and paper.warmup_epochs == 10 and paper.train_iters == 30
    assert paper.weight_decay == 0.01 and paper.grad_clip == 1.0 and paper.alpha == 1.0
    tiny = resolve_config("tiny", {"lr": 5e-4, "epochs": None})
    assert tiny.lr == 5e-4 and tiny.epochs == PRESETS["tiny"]["epochs"] and tiny.preset == "tiny"


def test_config_diff_names_keys() -> None:
    a = resolve_config("tiny", {}).to_dict()
    b = resolve_config("tiny", {"lr": 3e-3, "seed": 1}).to_dict()
    assert set(config_diff(a, b)) == {"lr", "seed"}
    assert config_diff({"betas": [0.9, 0.99]}, {"betas": (0.9, 0.99)}) == {}


def test_precision_resolution() -> None:
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_cli_flags_map_to_config(tmp_path: Path) -> None:
    cfg = config_from_args(_args("--preset", "tiny", "--lr", "2e-3", "--lr-milestones", "3", "5",
                                 "--betas", "0.9", "0.95", "--train-level", "32", "--attn-window", "full",
                                 "--grad-mode", "phantom", "--out", str(tmp_path / "r")))
    assert cfg.lr == 2e-3 and cfg.lr_milestones == (3, 5) and cfg.betas == (0.9, 0.95)
    assert cfg.train_level == "32" and cfg.attn_window == "full" and cfg.grad_mode == "phantom"
    assert cfg.d_model == PRESETS["tiny"]["d_model"]


def test_cli_resume_refuses_different_flags(tmp_path: Path) -> None:
    run = tmp_path / "r"
    stored = resolve_config("tiny", {})
    atomic_write_json(run / "config.json", {"train": stored.to_dict()})
    assert config_from_args(_args("--out", str(run), "--resume")) == stored
    assert config_from_args(_args("--out", str(run), "--resume", "--lr", str(stored.lr))) == stored
    with pytest.raises(ValueError, match=r"different config \(lr: 0.0003 in the run vs 0.01 given, seed"):
        config_from_args(_args("--out", str(run), "--resume", "--lr", "0.01", "--seed", "5"))


STORED_RUNS = sorted((Path(__file__).resolve().parents[1] / "results").rglob("config.json"))


@pytest.mark.parametrize("record", STORED_RUNS[:1] + STORED_RUNS[-1:], ids=lambda p: p.parent.name)
def test_stored_run_records_resume_with_their_config_and_runtime(record: Path, tmp_path: Path) -> None:
    """config.json of runs made by earlier versions (flat TrainConfig keys, fewer runtime options)
    give their config and runtime to --resume."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(record.read_text())
    stored = read_json(record)
    args = _args("--out", str(tmp_path / "run"), "--resume")
    assert config_from_args(args).to_dict() == TrainConfig.from_dict(stored["train"]).to_dict()
    runtime = runtime_from_args(args)
    assert (runtime.device, runtime.compile) == (stored["runtime"]["device"], stored["runtime"]["compile"])
    assert runtime.threads == 1  # not recorded then: the default
    assert runtime_from_args(_args("--out", str(tmp_path / "run"), "--resume", "--device", "cpu")).device == "cpu"


def test_every_stored_run_record_loads() -> None:
    from fpstab.architectures import CoreConfig

    assert STORED_RUNS
    for record in STORED_RUNS:
        stored = read_json(record)
        TrainConfig.from_dict(stored["train"])
        CoreConfig.from_dict(stored["core"])


# ---- optimizer groups and schedule ----------------------------------------
class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.norm = nn.RMSNorm(8)
        self.ln = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8, bias=False))
        self.gate = nn.Parameter(torch.ones(8))


def test_no_decay_on_biases_and_norms() -> None:
    decay, no_decay = param_groups(_Toy(), 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["embed.weight", "mlp.0.weight", "mlp.2.weight"]
    assert sorted(no_decay["names"]) == ["embed.bias", "gate", "ln.bias", "ln.weight", "mlp.0.bias", "norm.weight"]
    model = _Toy()
    total = sum(1 for _ in model.parameters())
    assert sum(len(g["params"]) for g in param_groups(model, 0.01)) == total


def test_schedule_is_the_official_per_epoch_warmup_and_step_decay() -> None:
    """Official ExponentialWarmup(warmup_period=10), dampened once per epoch, then MultiStepLR(60, 100)."""
    cfg = resolve_config("paper", {"n_train": 1000, "batch_size": 100, "epochs": 100})  # 10 steps/epoch
    lrs = [lr_at(cfg, s) for s in range(cfg.total_steps)]
    per_epoch = [lrs[10 * e:10 * e + 10] for e in range(100)]
    assert all(len(set(steps)) == 1 for steps in per_epoch)  # constant within an epoch
    factors = [steps[0] / cfg.lr for steps in per_epoch]
    assert factors[0] == pytest.approx(0.0951626, rel=1e-6)  # 1 - e^-0.1
    assert factors[8] == pytest.approx(0.5934303, rel=1e-6)  # 1 - e^-0.9
    assert all(b > a for a, b in zip(factors[:10], factors[1:10]))
    assert factors[9:60] == [1.0] * 51  # full lr from epoch 9 (not 63 % at the end of the warm-up)
    assert factors[60:] == pytest.approx([0.1] * 40)  # x0.1 at epoch 60; milestone 100 is the end
    assert lr_at(cfg.replace(warmup_epochs=0.0), 0) == lr_at(cfg.replace(warmup_epochs=1.0), 0) == cfg.lr
    assert lr_at(cfg.replace(warmup_epochs=2.5), 10) == pytest.approx(cfg.lr * (1 - math.exp(-2 / 2.5)))
    assert lr_at(cfg.replace(warmup_epochs=2.5), 20) == cfg.lr


# ---- progressive-loss sampler ---------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 5, 30])
def test_progressive_depths_range(m: int) -> None:
    g = torch.Generator().manual_seed(0)
    draws = [progressive_depths(m, g) for _ in range(20000)]
    ns = {n for n, _ in draws}
    assert ns == set(range(m))  # n ~ U{0..m-1}: every value appears
    for n, k in draws:
        assert 1 <= k <= m - n
    if m >= 2:  # k reaches its bounds for n = 0
        assert {k for n, k in draws if n == 0} == set(range(1, m + 1))
    # n is uniform: each count within 5 binomial standard deviations of 20000/m
    counts = torch.bincount(torch.tensor([n for n, _ in draws]), minlength=m).float()
    expected = 20000 / m
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected * (1 - 1 / m)) + 1e-9


def test_progressive_depths_reproducible() -> None:
    a = [progressive_depths(30, torch.Generator().manual_seed(5)) for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [progressive_depths(30, g1) for _ in range(20)] == [progressive_depths(30, g2) for _ in range(20)]
    assert a[0] == a[1]


def test_depth_warmup_raises_the_largest_depth_linearly_then_holds() -> None:
    """depth_warmup_epochs D: m grows from 1 to train_iters over D epochs; 0 keeps train_iters throughout."""
    cfg = resolve_config("tiny", {"train_iters": 30, "n_train": 320, "batch_size": 32})  # 10 steps an epoch
    assert [max_depth_at(cfg, s) for s in (0, 5, 1000)] == [30, 30, 30]
    ramp = cfg.replace(depth_warmup_epochs=3.0)  # 30 steps of ramp
    depths = [max_depth_at(ramp, s) for s in range(40)]
    assert depths[0] == 1 and depths[:30] == list(range(1, 31)) and depths[30:] == [30] * 10
    half = cfg.replace(depth_warmup_epochs=6.0)  # 60 steps: m = ceil(30 (s + 1) / 60)
    assert [max_depth_at(half, s) for s in (0, 1, 2, 59, 60)] == [1, 1, 2, 30, 30]
    g = torch.Generator().manual_seed(0)
    for s in range(0, 60, 3):  # every draw stays within the ramp's bound
        n, k = loss_depths(half, g, step=s)
        assert 1 <= n + k <= max_depth_at(half, s)


def test_without_a_depth_warmup_the_sampler_draws_as_before() -> None:
    cfg = resolve_config("tiny", {})
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [loss_depths(cfg, g1, step=s) for s in range(50)] == [loss_depths(cfg, g2) for _ in range(50)]
    with pytest.raises(ValueError, match="depth_warmup_epochs"):
        resolve_config("tiny", {"depth_warmup_epochs": -1.0})


# ---- files and checkpoints -------------------------------------------------
def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "c" / "last.pt"
    payload = {"config": {"lr": 1.0, "betas": [0.9, 0.99]}, "core_config": {}, "task": "t",
               "model": {"w": torch.ones(2)}, "sampler_rng": torch.Generator().get_state(), "step": 3}
    save_checkpoint(path, payload)
    assert not [p for p in path.parent.iterdir() if p.name != "last.pt"]  # no temp files left
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 3 and torch.equal(raw["model"]["w"], torch.ones(2))
    assert load_checkpoint(path)["format"] == "fpstab.checkpoint"


def test_corrupt_checkpoint_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"config": {}, "core_config": {}, "task": "t", "model": {}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt is corrupt or not a torch checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"hello": 1}, path)
    with pytest.raises(CheckpointError, match="not an fpstab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    (tmp_path / "b.json").write_text("{broken")
    with pytest.raises(ValueError, match="b.json is not valid JSON"):
        read_json(tmp_path / "b.json")


def test_checkpoint_of_an_older_task_encoding_is_refused_by_name(tmp_path: Path) -> None:
    """A chess core of encoding v1 (12 planes in, 2 classes out) must not meet v2 tensors."""
    from fpstab.architectures import build_core
    from fpstab.config import TrainConfig, core_config_for
    from fpstab.runs import load_run
    from fpstab.tasks import get_task

    cfg = TrainConfig(task="chess", preset="tiny")
    new = core_config_for(cfg, get_task("chess"))
    old = dataclasses.replace(new, in_dim=12, out_dim=2)
    payload = {"config": cfg.to_dict(), "task": "chess", "step": 0}
    save_checkpoint(tmp_path / "old.pt", {**payload, "core_config": old.to_dict(), "model": build_core(old).state_dict()})
    with pytest.raises(CheckpointError, match=r"older chess encoding: it reads in_dim=12 and predicts out_dim=2 "
                                              r"classes, while this fpstab encodes chess as in_dim=15, out_dim=6 "
                                              r"\(encoding v2\)"):
        load_run(tmp_path / "old.pt")
    save_checkpoint(tmp_path / "new.pt", {**payload, "core_config": new.to_dict(), "model": build_core(new).state_dict()})
    assert load_run(tmp_path / "new.pt")[1] == new
