"""Grid files of `fpstab sweep`: crossing, includes/excludes, per-task tables and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpstab.grid import GridError, load_grid, parse_grid

SMOKE = Path(__file__).parent / "fixtures" / "grids" / "smoke.toml"


def grid(**tables):
    return parse_grid({"base": {"preset": "tiny"}, **tables})


def test_axes_cross_and_includes_replace_their_axes():
    g = grid(axes={"task": ["prefix_sum", "sudoku"], "arch": ["no_recall", "standard_recall"], "seed": [0, 1]},
             include=[{"arch": "fixed_depth", "norm": "inner"}])
    names = [r.name for r in g.runs]
    assert len(names) == 8 + 4  # 2 x 2 x 2 crossed, plus fixed_depth for each task x seed
    assert "sudoku-fixed_depth-inner-s1" in names and "prefix_sum-no_recall-outer-s0" in names
    assert [r.index for r in g.runs] == list(range(12))


def test_exclude_drops_matching_runs_and_varying_keys_enter_the_name():
    g = grid(axes={"arch": ["no_recall", "standard_recall"], "lr": [1e-4, 3e-4]},
             exclude=[{"arch": "no_recall", "lr": 1e-4}])
    assert [r.name for r in g.runs] == ["prefix_sum-no_recall-outer-lr0.0003-s0",
                                         "prefix_sum-standard_recall-outer-lr0.0001-s0",
                                         "prefix_sum-standard_recall-outer-lr0.0003-s0"]
    assert g.runs[0].config["lr"] == 3e-4 and g.runs[0].config["d_model"] == 64  # the preset's


def test_task_tables_set_levels_and_keys_per_task():
    g = grid(axes={"task": ["prefix_sum", "sudoku"]},
             task={"sudoku": {"train_level": "easy+medium", "lr": 1e-3},
                   "prefix_sum": {"eval_levels": ["32", "512"]}},
             probe={"levels": ["train", "hardest"]})
    prefix, sudoku = g.runs
    assert sudoku.config["train_level"] == "easy+medium" and sudoku.config["lr"] == 1e-3
    # default eval levels: the training level's parts, then the ladder's test levels
    assert sudoku.eval_levels == ("easy", "medium", "hard", "extreme")
    assert sudoku.probe_levels == ("easy+medium", "extreme")
    assert prefix.eval_levels == ("32", "512") and prefix.probe_levels == ("32", "512")


@pytest.mark.parametrize("tables, match", [
    ({"axes": {"arch": ["no_recall"], "recal": ["add"]}}, r"\[axes\]: unknown key\(s\) \['recal'\]"),
    ({"axes": {"arch": ["no_recall"], "recall": ["add"]}}, r"run 0 \(arch='no_recall'.*recall"),
    ({"axes": {"arch": ["standard_recall", "no_rcall"]}}, r"run 1 \(arch='no_rcall'\).*arch"),
    ({"axes": {"arch": "no_recall"}}, r"an axis is a non-empty list"),
    ({"evaluation": {}}, r"unknown key\(s\) \['evaluation'\]"),
    ({"eval": {"solver": "newton"}}, r"\[eval\] solver = 'newton'"),
    ({"eval": {"iters": 0}}, r"\[eval\] iters = 0"),
    ({"task": {"sudoku": {"eval_levels": ["hard", "impossible"]}}, "axes": {"task": ["sudoku"]}},
     r"unknown sudoku level 'impossible'"),
    ({"task": {"go": {}}}, r"\[task\]: unknown key\(s\) \['go'\]"),
    ({"axes": {"train_level": ["32", 32]}}, r"listed twice"),
    ({"axes": {"arch": ["no_recall"]}, "exclude": [{"arch": "no_recall"}]}, r"no runs"),
    ({"eval": {"compile": "yes"}}, r"\[eval\] compile = 'yes'; allowed: true or false"),
    ({"runtime": {"compile": "auto"}}, r"\[runtime\] compile = 'auto': must be true or false \(leave it out"),
    ({"runtime": {"activation_checkpointing": 1}}, r"activation_checkpointing = 1: must be true or false"),
])
def test_bad_grids_are_refused_naming_the_key(tables, match):
    with pytest.raises(GridError, match=match):
        grid(**tables)


def test_a_list_valued_key_is_one_value_when_nested_and_a_bare_list_is_refused_with_the_fix():
    g = grid(axes={"arch": ["standard_recall"]}, include=[{"arch": "no_recall", "lr_milestones": [[12]]}],
             base={"preset": "tiny", "lr_milestones": [3]})
    assert [r.config["lr_milestones"] for r in g.runs] == [[3], [12]]
    with pytest.raises(GridError, match=r"lr_milestones=12 must be a list.*write lr_milestones = \[\[12\]\]"):
        grid(include=[{"arch": "no_recall", "lr_milestones": [12]}])


def test_load_grid_reads_toml_and_names_the_file(tmp_path):
    g = load_grid(SMOKE)
    assert [r.name for r in g.runs] == ["prefix_sum-no_recall-outer-s0", "prefix_sum-standard_recall-outer-s0"]
    assert g.digest and g.eval["solver"] == "none"
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes\narch = 1\n")
    with pytest.raises(GridError, match="bad.toml is not valid TOML"):
        load_grid(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.toml")


def test_one_pass_baselines_are_not_probed():
    g = grid(axes={"arch": ["standard_recall", "fixed_depth"], "norm": ["inner"]}, probe={"levels": ["train"]})
    assert [r.probe_levels for r in g.runs] == [("32",), ()]
