"""Sudoku: unique-solution puzzles from a seeded generator, a ladder by solving effort.

Grids are int8 arrays (n, 81), row-major, 0 = blank. Every generated
puzzle has exactly one solution (checked by the reference solver in
`fpstab.tasks.sudoku_solver`).

Levels (techniques: "singles" = naked + hidden singles; backtracks and
guesses are the reference solver's counts over the search that proves
uniqueness, see `fpstab.tasks.sudoku_solver`):

| level      | techniques needed | backtracks | clues                            |
|------------|-------------------|------------|----------------------------------|
| easy       | singles suffice   | 0          | 36-45 (target drawn uniformly)   |
| medium     | singles suffice   | 0          | <= 35 (singles-minimal)          |
| hard       | guessing needed   | 1-9        | minimal puzzle                   |
| extreme    | guessing needed   | 10-29      | minimal, <= cap drawn from 21-24 |
| fiendish   | guessing needed   | 30-99      | minimal, <= cap drawn from 21-24 |
| diabolical | guessing needed   | >= 100     | minimal, <= 24                   |

How each is made: a random complete grid, then clues removed in random
order. easy and medium remove a clue only while singles still solve the
puzzle (which implies uniqueness); easy stops at its target clue count,
medium when no clue can go. hard removes a clue only while the solution
stays unique, until no clue can go (a minimal puzzle), and keeps the puzzle
if its rating falls in the band; otherwise it starts over with a new grid.
extreme, fiendish and diabolical are found by the local search of
`fpstab.tasks.sudoku_search.search_minimal` (perturb and re-minimize,
first down to the clue cap, then up into the band; it stops on entering the
band, so ratings gather near the bottom of each band). Plain digging gives
minimal puzzles of 21-28 clues and rarely 10 or more backtracks (of 300 dug
with seed 0: 4 %, none with 30); a well-known hard collection has 17-26 clues
(median 22) and a median of 42 backtracks on this solver; the searched
levels reach that range. Below 20 clues the walk is slow: in 10 walks of
1500 moves on one grid each (a clue-only objective) 5 reached 19 clues and
none 18; 17-clue puzzles exist for few grids.

Measured (generator v2, seed 0, 40 puzzles per level, one worker; CPU
seconds, so the rate is one core's whatever else runs):

    python benchmarks/task_ladders.py --task sudoku --n 40

| level      | puzzles per CPU s | clues min / median / max | backtracks min / quartiles / max |
|------------|-------------------|--------------------------|----------------------------------|
| easy       | 90                | 36 / 41 / 45             | 0                                |
| medium     | 49                | 22 / 24 / 27             | 0                                |
| hard       | 27                | 22 / 24 / 26             | 1 / 1, 2, 3 / 9                  |
| extreme    | 0.95              | 20 / 22 / 24             | 10 / 11, 13, 18 / 29             |
| fiendish   | 0.30              | 20 / 22 / 24             | 30 / 31, 34, 40 / 84             |
| diabolical | 0.21              | 21 / 23 / 24             | 100 / 107, 118, 134 / 222        |

Every generated puzzle has exactly one solution and, from hard on, is
minimal (tests). Generator v2 added the three searched levels and bounded
the old open band "extreme" (>= 10) to 10-29; easy, medium and hard are
unchanged (same puzzles for the same seed: their random streams keep
revision 1), and v1 cache files are not read (the version is in the key).

Encoding: 81 tokens, one-hot over 10 channels (channel 0 = blank, k =
digit k), in_dim 10; targets are the solution's digit - 1 (classes 0..8),
out_dim 9, for every cell, given or not. Default ladder: train easy, test
medium, hard, extreme. fiendish and diabolical are asked for by name
(`--levels fiendish diabolical`): at the rates above, their 500-puzzle
evaluation sets take about 28 and 40 CPU minutes to make (once; cached),
too much for a default.

`load_csv` reads the sudoku-extreme CSV (source,question,answer,rating).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fpstab.tasks.base import Ladder, Task
from fpstab.tasks.csv_rows import csv_header, csv_rows
from fpstab.tasks.parallel import instance_seed, map_ordered, stream_tag
from fpstab.tasks.sudoku_search import OPEN_TOP, MinimalPuzzles, random_solution, search_minimal
from fpstab.tasks.sudoku_solver import is_valid_solution, singles_solve, solve

GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SudokuLevel:
    """A ladder level: which technique it needs and its clue and backtrack ranges (inclusive).

    dig_to_target: stop removing clues at a clue count drawn from `clues`
    (else remove until no clue can go). search: made by the local search of
    `fpstab.tasks.sudoku_search.search_minimal`, with a clue cap drawn from
    `clues`. revision: the generator version in which the level last changed;
    it seeds the level's random stream, so a level that did not change keeps
    its puzzles when the version goes up.
    """

    name: str
    singles_only: bool
    clues: tuple[int, int]
    backtracks: tuple[int, int]
    dig_to_target: bool = False
    search: bool = False
    revision: int = 1


LEVELS: dict[str, SudokuLevel] = {
    "easy": SudokuLevel("easy", True, (36, 45), (0, 0), dig_to_target=True),
    "medium": SudokuLevel("medium", True, (17, 35), (0, 0)),
    "hard": SudokuLevel("hard", False, (17, 81), (1, 9)),
    "extreme": SudokuLevel("extreme", False, (21, 24), (10, 29), search=True, revision=2),
    "fiendish": SudokuLevel("fiendish", False, (21, 24), (30, 99), search=True, revision=2),
    "diabolical": SudokuLevel("diabolical", False, (24, 24), (100, OPEN_TOP), search=True, revision=2),
}


@dataclass(frozen=True, eq=False)
class SudokuSet:
    """A set of puzzles.

    puzzles, solutions: int8 (n, 81), 0 = blank. clues, guesses, backtracks:
    int64 (n,), the reference solver's rating. singles_only: bool (n,).
    attempts: int64 (n,), candidate puzzles made per kept one (generated sets; 0 when loaded).
    ratings: float64 (n,), the CSV's rating column (loaded sets; NaN when generated).
    sources: the CSV's source column (loaded sets; empty when generated).
    """

    puzzles: np.ndarray
    solutions: np.ndarray
    clues: np.ndarray
    singles_only: np.ndarray
    guesses: np.ndarray
    backtracks: np.ndarray
    attempts: np.ndarray
    ratings: np.ndarray
    sources: tuple[str, ...]
    level: str
    seed: int

    def __len__(self) -> int:
        return len(self.puzzles)


# --- generation ---------------------------------------------------------------


def _dig(rng: random.Random, solution: list[int], spec: SudokuLevel) -> list[int]:
    """Remove clues from `solution` in random order, keeping the level's invariant."""
    order = list(range(81))
    rng.shuffle(order)
    target = rng.randint(*spec.clues) if spec.dig_to_target else 0
    if not spec.singles_only:
        return MinimalPuzzles(rng, solution).minimize(solution[:], order)
    puzzle = solution[:]
    clues = 81
    for i in order:
        if clues <= target:
            break
        d = puzzle[i]
        puzzle[i] = 0
        if singles_solve(puzzle):
            clues -= 1
        else:
            puzzle[i] = d
    return puzzle


def _make_one(level: str, seed: int, index: int) -> tuple[list[int], list[int], int, bool, int, int, int]:
    """Instance `index` of a set: (puzzle, solution, clues, singles_only, guesses, backtracks, attempts)."""
    spec = LEVELS[level]
    rng = random.Random(instance_seed(seed, stream_tag("sudoku", level, str(spec.revision)), index))
    if spec.search:
        puzzle, solution, result, made = search_minimal(rng, rng.randint(*spec.clues), spec.backtracks)
        return (puzzle, solution, 81 - puzzle.count(0), result.singles_only, result.guesses,
                result.backtracks, made)
    attempts = 0
    while True:
        attempts += 1
        solution = random_solution(rng)
        puzzle = _dig(rng, solution, spec)
        clues = 81 - puzzle.count(0)
        if not spec.clues[0] <= clues <= spec.clues[1]:
            continue
        result = solve(puzzle, limit=2)
        if result.n_solutions != 1 or result.singles_only != spec.singles_only:
            continue
        if spec.backtracks[0] <= result.backtracks <= spec.backtracks[1]:
            return puzzle, solution, clues, result.singles_only, result.guesses, result.backtracks, attempts


def generate(n: int, level: str, seed: int, workers: int | None = None) -> SudokuSet:
    """n unique-solution puzzles of `level` ("easy", "medium", "hard", "extreme").

    Deterministic in (level, seed) for any number of `workers` (None = all cores);
    the first k instances equal generate(k, level, seed). Returns a SudokuSet
    with puzzles and solutions int8 (n, 81), 0 = blank.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown sudoku level {level!r}; allowed: {', '.join(LEVELS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows = map_ordered(functools.partial(_make_one, level, seed), range(n), workers)
    cols = list(zip(*rows))
    return SudokuSet(
        puzzles=np.array(cols[0], dtype=np.int8),
        solutions=np.array(cols[1], dtype=np.int8),
        clues=np.array(cols[2], dtype=np.int64),
        singles_only=np.array(cols[3], dtype=bool),
        guesses=np.array(cols[4], dtype=np.int64),
        backtracks=np.array(cols[5], dtype=np.int64),
        attempts=np.array(cols[6], dtype=np.int64),
        ratings=np.full(n, np.nan),
        sources=(),
        level=level,
        seed=seed,
    )


# --- validation -----------------------------------------------------------------


def _grid_errors(puzzle: Sequence[int], solution: Sequence[int]) -> str | None:
    """Why (puzzle, solution) is not a valid pair, or None."""
    if len(puzzle) != 81 or len(solution) != 81:
        return f"grids must have 81 cells, got {len(puzzle)} and {len(solution)}"
    if not all(0 <= int(v) <= 9 for v in puzzle):
        return "puzzle cells must be 0 (blank) or 1..9"
    if not is_valid_solution(solution):
        return "solution is not a valid complete sudoku (each row, column and box must hold 1..9)"
    clash = [i for i in range(81) if puzzle[i] and puzzle[i] != solution[i]]
    if clash:
        r, c = divmod(clash[0], 9)
        return (f"clue at row {r + 1}, column {c + 1} is {int(puzzle[clash[0]])} "
                f"but the solution has {int(solution[clash[0]])}")
    return None


def validate(puzzles: np.ndarray, solutions: np.ndarray, check_unique: bool = True) -> None:
    """Raise ValueError unless every row is a puzzle whose clues agree with its
    valid solution and (check_unique) the solver finds exactly that one solution.

    puzzles, solutions: int arrays (n, 81), 0 = blank.
    """
    puzzles, solutions = np.asarray(puzzles), np.asarray(solutions)
    if puzzles.ndim != 2 or puzzles.shape[1] != 81 or puzzles.shape != solutions.shape:
        raise ValueError(f"puzzles and solutions must be (n, 81), got {puzzles.shape} and {solutions.shape}")
    for k, (p, s) in enumerate(zip(puzzles.tolist(), solutions.tolist())):
        err = _grid_errors(p, s)
        if err:
            raise ValueError(f"sudoku {k}: {err}")
        if check_unique:
            result = solve(p, limit=2)
            if result.n_solutions != 1:
                raise ValueError(f"sudoku {k}: has {'no' if not result.n_solutions else 'more than one'} solution")
            if list(result.solutions[0]) != s:
                raise ValueError(f"sudoku {k}: the solver's solution differs from the given one")


# --- loading the sudoku-extreme CSV -------------------------------------------------

CSV_COLUMNS = ("source", "question", "answer", "rating")
_DIGITS = str.maketrans(".", "0")


def _parse_grid(text: str, what: str, blanks: bool) -> list[int]:
    if len(text) != 81:
        raise ValueError(f"{what} has {len(text)} characters; expected 81")
    allowed = ".0123456789" if blanks else "123456789"
    bad = next((ch for ch in text if ch not in allowed), None)
    if bad is not None:
        hint = "digits 1-9, '.' or '0' for blank" if blanks else "digits 1-9"
        raise ValueError(f"{what} holds {bad!r}; allowed: {hint}")
    return [int(ch) for ch in text.translate(_DIGITS)]


def _csv_row(row: list[str], header: list[str], col: dict[str, int],
             check_unique: bool) -> tuple[list[int], list[int], float]:
    """(question, answer, rating) of one data row, checked; ValueError saying what is wrong with it."""
    if len(row) != len(header):
        raise ValueError(f"row has {len(row)} fields; the header has {len(header)}")
    question = _parse_grid(row[col["question"]].strip(), "question", blanks=True)
    answer = _parse_grid(row[col["answer"]].strip(), "answer", blanks=False)
    try:
        rating = float(row[col["rating"]])
    except ValueError:
        raise ValueError(f"rating {row[col['rating']]!r} is not a number") from None
    err = _grid_errors(question, answer)
    if err:
        raise ValueError(err)
    if check_unique and solve(question, limit=2).n_solutions != 1:
        raise ValueError("question does not have exactly one solution")
    return question, answer, rating


def load_csv(
    path: str | Path,
    limit: int | None = None,
    min_rating: float | None = None,
    max_rating: float | None = None,
    check_unique: bool = False,
) -> SudokuSet:
    """Read a sudoku-extreme CSV (header `source,question,answer,rating`).

    question: 81 characters, '.' or '0' blank; answer: 81 digits 1-9. Every
    answer must be a valid sudoku that agrees with the question's clues
    (check_unique: and be its only solution, by the reference solver; slow
    on millions of rows). Rows with rating outside [min_rating, max_rating]
    are skipped; at most `limit` rows are kept. Raises ValueError naming the
    file and line of the first malformed row. The solver's rating
    (clues, guesses, backtracks) is computed for the kept rows.
    """
    path = Path(path)
    puzzles: list[list[int]] = []
    solutions: list[list[int]] = []
    ratings: list[float] = []
    sources: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv_rows(f, path)
        header, col = csv_header(rows, path, CSV_COLUMNS, fold_case=True)
        for line, row in rows:
            if not row or all(not field.strip() for field in row):
                continue
            try:
                question, answer, rating = _csv_row(row, header, col, check_unique)
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            if (min_rating is not None and rating < min_rating) or (max_rating is not None and rating > max_rating):
                continue
            puzzles.append(question)
            solutions.append(answer)
            ratings.append(rating)
            sources.append(row[col["source"]])
            if limit is not None and len(puzzles) >= limit:
                break
    if not puzzles:
        raise ValueError(f"{path}: no rows left (rating range [{min_rating}, {max_rating}], limit {limit})")
    results = [solve(p, limit=2) for p in puzzles]
    return SudokuSet(
        puzzles=np.array(puzzles, dtype=np.int8),
        solutions=np.array(solutions, dtype=np.int8),
        clues=np.array([81 - p.count(0) for p in puzzles], dtype=np.int64),
        singles_only=np.array([r.singles_only for r in results], dtype=bool),
        guesses=np.array([r.guesses for r in results], dtype=np.int64),
        backtracks=np.array([r.backtracks for r in results], dtype=np.int64),
        attempts=np.zeros(len(puzzles), dtype=np.int64),
        ratings=np.array(ratings, dtype=np.float64),
        sources=tuple(sources),
        level=f"csv:{path.name}",
        seed=-1,
    )


# --- encoding and display -----------------------------------------------------------


def encode(puzzles: np.ndarray, solutions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """puzzles, solutions int (n, 81) -> inputs float32 (n, 81, 10) one-hot
    (channel 0 = blank), targets int64 (n, 81) = solution digit - 1."""
    p = torch.as_tensor(np.asarray(puzzles), dtype=torch.long)
    s = torch.as_tensor(np.asarray(solutions), dtype=torch.long)
    return F.one_hot(p, 10).float(), s - 1


def format_grid(grid: Sequence[int]) -> str:
    """A 9x9 grid (81 ints, 0 = blank shown as '.') as text with box separators."""
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("------+-------+------")
        row = [str(int(v)) if v else "." for v in grid[r * 9:(r + 1) * 9]]
        lines.append(" | ".join(" ".join(row[c:c + 3]) for c in (0, 3, 6)))
    return "\n".join(lines)


def _stats(x: np.ndarray) -> str:
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return f"min {x.min():g}, quartiles {q1:g} / {med:g} / {q3:g}, max {x.max():g}, mean {x.mean():.1f}"


class SudokuTask(Task[SudokuSet]):
    """9x9 sudoku; levels easy < medium < hard < extreme < fiendish < diabolical (see the module docstring)."""

    name = "sudoku"
    in_dim = 10
    out_dim = 9
    attn_window = None
    version = GENERATOR_VERSION
    cached = True

    def ladder(self) -> Ladder:
        return Ladder(levels=tuple(LEVELS), train="easy", test=("medium", "hard", "extreme"))

    def _grid(self, level: str) -> tuple[int, ...]:
        return (9, 9)

    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> SudokuSet:
        return generate(n, level, seed, workers)

    def _to_arrays(self, data: SudokuSet) -> dict[str, Any]:
        return {k: getattr(data, k) for k in
                ("puzzles", "solutions", "clues", "singles_only", "guesses", "backtracks", "attempts")}

    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> SudokuSet:
        n = len(arrays["puzzles"])
        return SudokuSet(**arrays, ratings=np.full(n, np.nan), sources=(), level=level, seed=seed)

    def encode_set(self, data: SudokuSet) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(data.puzzles, data.solutions)

    def summarize(self, data: SudokuSet) -> dict[str, str]:
        out = {
            "clues": _stats(data.clues),
            "singles suffice": f"{data.singles_only.mean():.1%}",
            "backtracks": _stats(data.backtracks),
            "guesses": _stats(data.guesses),
        }
        if data.attempts.any():
            out["candidates per puzzle"] = f"{data.attempts.mean():.2f}"
        if not np.isnan(data.ratings).all():
            out["csv rating"] = _stats(data.ratings)
        return out

    def show(self, data: SudokuSet, index: int) -> str:
        head = (f"sudoku {data.level} #{index} (seed {data.seed}): {int(data.clues[index])} clues, "
                f"singles {'suffice' if data.singles_only[index] else 'do not suffice'}, "
                f"{int(data.backtracks[index])} backtracks, {int(data.guesses[index])} guesses")
        puzzle = format_grid(data.puzzles[index].tolist()).splitlines()
        solution = format_grid(data.solutions[index].tolist()).splitlines()
        body = [f"{'puzzle':<21}    {'solution'}"] + [f"{a}    {b}" for a, b in zip(puzzle, solution)]
        return "\n".join([head, *body])
