"""The task interface every consumer codes against: names, ladders, batches, cache, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpstab.tasks import sudoku as sudoku_module
from fpstab.tasks import TASK_NAMES, Ladder, TaskBatch, get_task
from fpstab.tasks import cache


def test_task_names_and_unknown_name():
    assert TASK_NAMES == ("prefix_sum", "sudoku", "chess", "markov")
    for name in TASK_NAMES:
        assert get_task(name).name == name
    with pytest.raises(ValueError, match="prefix_sum, sudoku, chess, markov"):
        get_task("maze")


@pytest.mark.parametrize("name, dims, window, train, grid", [
    ("prefix_sum", (2, 2), 5, "32", (32,)),
    ("sudoku", (10, 9), None, "easy", (9, 9)),
    ("chess", (15, 6), None, "mate1", (8, 8)),
])
def test_ladder_dims_and_grid(name, dims, window, train, grid):
    task = get_task(name)
    lad = task.ladder()
    assert isinstance(lad, Ladder)
    assert (task.in_dim, task.out_dim) == dims
    assert task.attn_window == window
    assert lad.train == train and lad.train in lad.levels
    assert set(lad.test) <= set(lad.levels) and lad.train not in lad.test
    assert task.grid(train) == grid
    with pytest.raises(ValueError, match=lad.levels[-1]):
        task.grid("impossible")
    with pytest.raises(ValueError, match="allowed"):
        task.make("impossible", 2, 0)


def test_prefix_sum_ladder_lengths():
    lad = get_task("prefix_sum").ladder()
    assert lad.levels == ("16", "32", "48", "64", "128", "256", "512", "1024", "2048")
    assert lad.test == ("48", "64", "128", "256", "512")


@pytest.mark.parametrize("name, level, n_tokens", [
    ("prefix_sum", "48", 48), ("sudoku", "easy", 81), ("chess", "mate1", 64),
])
def test_make_shapes_dtypes_and_determinism(name, level, n_tokens, tmp_path):
    task = get_task(name)
    batch = task.make(level, 3, seed=5, cache_dir=tmp_path)
    assert isinstance(batch, TaskBatch) and len(batch) == 3
    assert batch.inputs.shape == (3, n_tokens, task.in_dim) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (3, n_tokens) and batch.targets.dtype == torch.int64
    assert int(np.prod(batch.grid)) == n_tokens and (batch.level, batch.seed) == (level, 5)
    assert batch.targets.min() >= 0 and batch.targets.max() < task.out_dim
    pieces = batch.inputs[..., :12] if name == "chess" else batch.inputs  # chess: then castling, en passant
    per_token = pieces.sum(-1)  # one-hot tokens (chess: empty squares are all zero)
    assert ((per_token == 0) | (per_token == 1)).all()
    again = task.make(level, 3, seed=5, cache_dir=tmp_path / "other")  # regenerated, not read back
    assert torch.equal(again.inputs, batch.inputs) and torch.equal(again.targets, batch.targets)
    other = task.make(level, 3, seed=6, cache_dir=tmp_path)
    assert not torch.equal(other.inputs, batch.inputs)


def test_same_set_for_any_worker_count_and_prefix():
    one = sudoku_module.generate(4, "hard", seed=2, workers=1)
    two = sudoku_module.generate(4, "hard", seed=2, workers=2)
    assert np.array_equal(one.puzzles, two.puzzles) and np.array_equal(one.backtracks, two.backtracks)
    first = sudoku_module.generate(2, "hard", seed=2, workers=1)
    assert np.array_equal(first.puzzles, one.puzzles[:2])


def test_cache_written_atomically_reused_and_sliced(tmp_path, monkeypatch):
    task = get_task("sudoku")
    data, prov = task.generate_set("easy", 4, seed=1, cache_dir=tmp_path)
    assert not prov.from_cache and prov.cache_path.exists()
    assert prov.cache_path.parent == tmp_path / "sudoku"
    assert [p.name for p in prov.cache_path.parent.iterdir()] == [prov.cache_path.name]  # no temp file left
    assert cache.read_meta(prov.cache_path)["seed"] == 1

    def boom(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(sudoku_module, "generate", boom)
    again, prov2 = task.generate_set("easy", 4, seed=1, cache_dir=tmp_path)
    assert prov2.from_cache and np.array_equal(again.puzzles, data.puzzles)
    part, prov3 = task.generate_set("easy", 2, seed=1, cache_dir=tmp_path)  # sliced from n=4
    assert prov3.from_cache and np.array_equal(part.puzzles, data.puzzles[:2])
    with pytest.raises(AssertionError):
        task.generate_set("easy", 5, seed=1, cache_dir=tmp_path)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FPSTAB_CACHE", str(tmp_path / "env"))
    assert cache.default_cache_dir() == tmp_path / "env"
    _, prov = get_task("sudoku").generate_set("easy", 1, seed=3)
    assert prov.cache_path.is_relative_to(tmp_path / "env")


def test_unreadable_cache_file_is_rebuilt(tmp_path):
    task = get_task("sudoku")
    _, prov = task.generate_set("easy", 2, seed=4, cache_dir=tmp_path)
    good = np.load(prov.cache_path)["puzzles"].copy()
    prov.cache_path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable"):
        data, prov2 = task.generate_set("easy", 2, seed=4, cache_dir=tmp_path)
    assert not prov2.from_cache and np.array_equal(data.puzzles, good)


def _perfect_logits(targets: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(targets, classes).float() * 10


@pytest.mark.parametrize("name", ["prefix_sum", "sudoku"])
def test_exact_match_metrics_and_loss(name):
    task = get_task(name)
    targets = torch.randint(0, task.out_dim, (4, 12), generator=torch.Generator().manual_seed(0))
    logits = _perfect_logits(targets, task.out_dim)
    assert task.correct(logits, targets).tolist() == [True] * 4
    logits[1, 3] = _perfect_logits((targets[1, 3] + 1) % task.out_dim, task.out_dim)  # one wrong token
    assert task.correct(logits, targets).tolist() == [True, False, True, True]
    m = task.metrics(logits, targets)
    assert m["exact_match"] == pytest.approx(0.75) and m["token_acc"] == pytest.approx(47 / 48)
    loss = task.loss(logits.requires_grad_(), targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ValueError, match="out_dim"):
        task.metrics(torch.zeros(4, 12, task.out_dim + 1), targets)
    with pytest.raises(ValueError, match="expected logits"):
        task.correct(torch.zeros(4, 11, task.out_dim), targets)


def test_composite_level_interleaves_its_parts(tmp_path):
    task = get_task("sudoku")
    mixed = task.make("easy+medium", 5, seed=3, cache_dir=tmp_path)
    easy = task.make("easy", 3, seed=3, cache_dir=tmp_path)
    medium = task.make("medium", 2, seed=3, cache_dir=tmp_path)
    assert mixed.level == "easy+medium" and mixed.grid == (9, 9) and len(mixed) == 5
    assert torch.equal(mixed.inputs[0::2], easy.inputs) and torch.equal(mixed.targets[1::2], medium.targets)
    prefix = task.make("easy+medium", 3, seed=3, cache_dir=tmp_path)
    assert torch.equal(prefix.inputs, mixed.inputs[:3])  # a smaller set is a prefix of a larger one


def test_composite_level_errors_name_the_problem():
    sudoku, prefix = get_task("sudoku"), get_task("prefix_sum")
    with pytest.raises(ValueError, match="unknown sudoku level 'hardest' in 'easy\\+hardest'.*allowed: easy"):
        sudoku.check_level("easy+hardest")
    with pytest.raises(ValueError, match="names a level twice"):
        sudoku.check_level("easy+easy")
    with pytest.raises(ValueError, match="mixes token layouts"):
        prefix.check_level("32+64")
    with pytest.raises(ValueError, match="composite"):
        sudoku.generate_set("easy+medium", 2, seed=0)


def test_train_level_may_be_composite():
    from fpstab.config import TrainConfig, core_config_for, train_level_for

    task = get_task("chess")
    cfg = TrainConfig(task="chess", train_level="mate1+mate2", n_train=10, batch_size=5)
    assert train_level_for(cfg, task) == "mate1+mate2"
    assert core_config_for(cfg, task).grid == (8, 8)
    with pytest.raises(ValueError, match="train_level='mate1\\+mate9'.*allowed: mate1"):
        train_level_for(TrainConfig(task="chess", train_level="mate1+mate9", n_train=10, batch_size=5), task)


def test_a_truncated_cache_file_is_rebuilt_with_a_warning(tmp_path):
    task = get_task("sudoku")
    first = task.make("easy", 3, seed=5, cache_dir=tmp_path)
    (path,) = tmp_path.rglob("*.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a killed copy
    with pytest.warns(UserWarning, match="unreadable.*regenerating"):
        again = task.make("easy", 3, seed=5, cache_dir=tmp_path)
    assert torch.equal(first.inputs, again.inputs)
    assert cache.read_meta(path)  # rewritten whole


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    cache.atomic_write_bytes(target, b"old")
    monkeypatch.setattr(cache.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_composite_levels_pad_answer_tables_to_the_longest():
    from fpstab.tasks.base import _interleave, _pad_answers

    few = torch.zeros(2, 1, 3, dtype=torch.long)
    many = torch.ones(1, 3, 3, dtype=torch.long)
    padded = _pad_answers([few, many])
    assert [t.shape for t in padded] == [(2, 3, 3), (1, 3, 3)]
    assert (padded[0][:, 1:] == -1).all() and (padded[0][:, 0] == 0).all() and torch.equal(padded[1], many)
    mixed = _interleave(padded, 3)  # rows 0, 2 from the first part, row 1 from the second
    assert mixed[1].eq(1).all() and mixed[2, 0].eq(0).all()
