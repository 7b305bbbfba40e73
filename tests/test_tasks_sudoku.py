"""Sudoku: reference solver, generated levels, validator, sudoku-extreme CSV loader."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from fpstab.tasks import sudoku
from fpstab.tasks.sudoku_search import MinimalPuzzles, random_solution, search_minimal
from fpstab.tasks.sudoku_solver import has_solution_other_than, is_valid_solution, singles_solve, solve

FIXTURE = Path(__file__).parent / "fixtures" / "tasks" / "sudoku_extreme_small.csv"
# "AI Escargot" (A. Inkala): needs guessing; unique solution.
ESCARGOT = "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3.."


def grid(text: str) -> list[int]:
    return [0 if ch in ".0" else int(ch) for ch in text]


def test_solver_rates_a_hard_puzzle_and_counts_solutions():
    r = solve(grid(ESCARGOT))
    assert r.n_solutions == 1 and not r.singles_only and r.backtracks > 0 and r.guesses > 0
    assert is_valid_solution(r.solutions[0])
    assert all(c in (0, s) for c, s in zip(grid(ESCARGOT), r.solutions[0]))
    two = list(r.solutions[0])
    for i in range(81):  # blank every cell: many solutions
        two[i] = 0
    assert solve(two, limit=2).n_solutions == 2
    clash = grid(ESCARGOT)
    clash[1] = 1  # two 1s in row 1
    assert solve(clash).n_solutions == 0
    with pytest.raises(ValueError, match="81 cells"):
        solve([0] * 80)


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
def test_generated_levels_meet_their_definitions(level):
    spec = sudoku.LEVELS[level]
    data = sudoku.generate(3, level, seed=11, workers=1)
    assert data.puzzles.shape == data.solutions.shape == (3, 81)
    sudoku.validate(data.puzzles, data.solutions)  # valid, clues agree, unique by the solver
    for p, s, clues, bt in zip(data.puzzles.tolist(), data.solutions.tolist(), data.clues, data.backtracks):
        r = solve(p)
        assert r.n_solutions == 1 and list(r.solutions[0]) == s
        assert r.singles_only == spec.singles_only == singles_solve(p)
        assert spec.clues[0] <= clues == 81 - p.count(0) <= spec.clues[1]
        assert spec.backtracks[0] <= r.backtracks == bt <= spec.backtracks[1]
    if level in ("hard",):  # minimal: removing any clue loses uniqueness
        _assert_minimal(data.puzzles[0].tolist())


def _assert_minimal(puzzle: list[int]) -> None:
    for i in (i for i in range(81) if puzzle[i]):
        q = puzzle.copy()
        q[i] = 0
        assert solve(q).n_solutions == 2, f"clue {i} is not needed"


def test_search_reaches_few_clues_and_a_rating_band():
    rng = random.Random(0)
    puzzle, solution, result, made = search_minimal(rng, max_clues=22, backtracks=(5, 9))
    assert 81 - puzzle.count(0) <= 22 and 5 <= result.backtracks <= 9 and made >= 1
    r = solve(puzzle)
    assert r.n_solutions == 1 and list(r.solutions[0]) == solution and r.backtracks == result.backtracks
    _assert_minimal(puzzle)
    again = search_minimal(random.Random(0), max_clues=22, backtracks=(5, 9))
    assert again[0] == puzzle  # deterministic in the seed
    with pytest.raises(ValueError, match="max_clues >= 20"):
        search_minimal(rng, max_clues=17, backtracks=(1, 9))


def test_witnesses_do_not_change_which_clues_go():
    # minimize() answers many "is this clue needed?" questions from stored second solutions;
    # the answers must equal the solver's, so the dug puzzle equals plain digging.
    rng = random.Random(8)
    for _ in range(3):
        solution = random_solution(rng)
        grids = MinimalPuzzles(rng, solution)
        for _ in range(4):
            order = list(range(81))
            rng.shuffle(order)
            plain = solution[:]
            for i in order:
                plain[i] = 0
                if has_solution_other_than(plain, i, solution[i]):
                    plain[i] = solution[i]
            assert grids.minimize(solution[:], order) == plain
        assert sum(map(len, grids.by_cell)) > 0  # witnesses were stored and reused


def test_perturb_moves_to_another_minimal_puzzle_of_the_same_solution():
    rng = random.Random(9)
    grids = MinimalPuzzles(rng, random_solution(rng))
    puzzle = grids.minimize(grids.solution[:], range(81))
    before = puzzle[:]
    moved = grids.perturb(puzzle)
    assert puzzle == before and moved != puzzle
    r = solve(moved)
    assert r.n_solutions == 1 and list(r.solutions[0]) == grids.solution
    _assert_minimal(moved)


def test_unchanged_levels_keep_their_puzzles():
    # easy, medium and hard did not change in generator v2: the fixture rows made by v1 still come out
    fixture = sudoku.load_csv(FIXTURE)
    for level, rows in (("easy", [0, 1]), ("hard", [2, 3])):
        assert (sudoku.generate(2, level, seed=123, workers=1).puzzles == fixture.puzzles[rows]).all()


@pytest.mark.slow
@pytest.mark.parametrize("level", ["extreme", "fiendish"])
def test_searched_levels_meet_their_definitions(level):
    spec = sudoku.LEVELS[level]
    data = sudoku.generate(2, level, seed=5, workers=1)
    sudoku.validate(data.puzzles, data.solutions)
    for p, clues, bt in zip(data.puzzles.tolist(), data.clues, data.backtracks):
        assert clues <= spec.clues[1] and spec.backtracks[0] <= bt <= spec.backtracks[1]
        _assert_minimal(p)


def test_validate_names_the_problem():
    data = sudoku.generate(2, "easy", seed=0, workers=1)
    bad = data.solutions.copy()
    bad[1, [0, 1]] = bad[1, [1, 0]]  # swap two cells: a row stays fine, columns break
    with pytest.raises(ValueError, match="sudoku 1: solution is not a valid"):
        sudoku.validate(data.puzzles, bad)
    loose = data.puzzles.copy()
    loose[0] = 0
    loose[0, :3] = data.solutions[0, :3]
    with pytest.raises(ValueError, match="sudoku 0: has more than one solution"):
        sudoku.validate(loose, data.solutions)
    with pytest.raises(ValueError, match="unknown sudoku level 'tough'; allowed: easy, medium, hard, extreme, fiendish, diabolical"):
        sudoku.generate(1, "tough", seed=0)


def test_encoding():
    data = sudoku.generate(2, "easy", seed=0, workers=1)
    x, y = sudoku.encode(data.puzzles, data.solutions)
    assert x.shape == (2, 81, 10) and y.shape == (2, 81)
    assert torch.equal(x.argmax(-1), torch.as_tensor(data.puzzles, dtype=torch.long))
    assert torch.equal(y + 1, torch.as_tensor(data.solutions, dtype=torch.long))
    assert "solution" in sudoku.SudokuTask().show(data, 1)


def test_load_csv_fixture():
    data = sudoku.load_csv(FIXTURE, check_unique=True)
    assert len(data) == 6 and data.puzzles.shape == (6, 81)
    assert data.sources[0] == "synthetic_easy" and data.ratings.tolist() == [0, 0, 1, 2, 15, 10]
    assert data.backtracks.tolist() == [0, 0, 1, 2, 15, 10]  # the rating column is this solver's count
    assert data.singles_only.tolist() == [True, True, False, False, False, False]
    sudoku.validate(data.puzzles, data.solutions)
    hard = sudoku.load_csv(FIXTURE, min_rating=1, max_rating=10, limit=2)
    assert hard.ratings.tolist() == [1, 2]


def _break(tmp_path: Path, line: int, column: int, value: str) -> Path:
    lines = FIXTURE.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    return bad


@pytest.mark.parametrize("line, column, value, message", [
    (3, 1, "123", "question has 3 characters; expected 81"),
    (4, 1, "x" * 81, "question holds 'x'"),
    (5, 2, "0" * 81, "answer holds '0'; allowed: digits 1-9"),
    (6, 2, "123456789" * 9, "solution is not a valid complete sudoku"),
    (7, 3, "hard", "rating 'hard' is not a number"),
])
def test_load_csv_bad_rows_name_file_and_line(tmp_path, line, column, value, message):
    bad = _break(tmp_path, line, column, value)
    with pytest.raises(ValueError, match=rf"bad\.csv:{line}: {message}"):
        sudoku.load_csv(bad)


def test_load_csv_answer_must_match_clues(tmp_path):
    lines = FIXTURE.read_text().splitlines()
    source, question, answer, rating = lines[2].split(",")
    i = next(k for k, ch in enumerate(question) if ch not in ".0")
    other = "1" if question[i] != "1" else "2"
    lines[2] = ",".join([source, question[:i] + other + question[i + 1:], answer, rating])
    bad = tmp_path / "clash.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"clash\.csv:3: clue at row \d, column \d is \d but the solution has \d"):
        sudoku.load_csv(bad)


def test_load_csv_bad_header(tmp_path):
    bad = tmp_path / "header.csv"
    bad.write_text("source,puzzle,solution,rating\n")
    with pytest.raises(ValueError, match=r"header\.csv:1: header lacks \['question', 'answer'\]"):
        sudoku.load_csv(bad)


def test_load_csv_names_a_file_that_is_not_text(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"source,question,answer,rating\n" + bytes(range(128, 256)) * 8)
    with pytest.raises(ValueError, match=r"binary.csv: cannot be read as UTF-8 CSV text"):
        sudoku.load_csv(path)


def test_published_puzzles_load_with_their_clues_and_ratings():
    """Inkala's 2012 puzzle sits in the diabolical band; a 17-clue puzzle needs only singles."""
    data = sudoku.load_csv(Path(__file__).parent / "fixtures" / "tasks" / "sudoku_published.csv", check_unique=True)
    assert data.sources == ("inkala_2012", "royle_17clue_1")
    assert (data.puzzles > 0).sum(1).tolist() == [21, 17]
    assert data.backtracks.tolist() == [160, 0] and data.singles_only.tolist() == [False, True]
    sudoku.validate(data.puzzles, data.solutions)
