"""Minimal sudoku puzzles of one solution grid: digging, and a local search for few clues and hard ratings.

A puzzle is minimal when it has exactly one solution and every clue is
needed (blanking any clue lets a second solution in). `MinimalPuzzles`
holds one solution grid s and makes minimal puzzles of it:

- `minimize` blanks clues in a given order while the solution stays unique;
- `perturb` is one move of the local search: blank 1-3 random clues, put
  clues of s back where a second solution disagrees with s until the
  puzzle is unique again, then minimize in a random order. The move keeps
  the solution s and lands on another minimal puzzle, so a walk that
  accepts moves that do not worsen an objective (fewer clues, a rating in
  a band) can go where plain digging rarely does (below ~22 clues, tens
  to hundreds of backtracks); this perturb-and-reminimize scheme is the
  usual way hard puzzles are searched for.

Witnesses make the search fast and stay exact. Each time a clue is found
needed, the solver returns a second solution w != s that proves it; w is
kept as the set D of cells where it differs from s (an 81-bit mask). w
remains a solution of every puzzle of s whose clues avoid D, so for a
puzzle with clue mask C: clue i is needed if some witness has D & C == {i},
and the puzzle is not unique if some witness has D & C == {}. Both answers
rest on an explicit solution; every other answer comes from the solver.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from fpstab.tasks.sudoku_solver import ALL, DIGIT_OF_BIT, POPCOUNT, SolveResult, _propagate, other_solution, solve

CELL_BITS = tuple(1 << i for i in range(81))
OPEN_TOP = 10**9  # the top of an open rating band (">= lo")


def random_solution(rng: random.Random) -> list[int]:
    """A random complete grid (81 digits): randomized MRV search with singles propagation."""
    def fill(cells: list[int]) -> list[int] | None:
        best, best_count = -1, 10
        for i in range(81):
            c = POPCOUNT[cells[i]]
            if 1 < c < best_count:
                best, best_count = i, c
        if best < 0:
            return cells
        digits = [1 << d for d in range(9) if cells[best] >> d & 1]
        rng.shuffle(digits)
        for b in digits:
            child = cells[:]
            child[best] = b
            if _propagate(child, [best]):
                done = fill(child)
                if done is not None:
                    return done
        return None

    cells = fill([ALL] * 81)
    assert cells is not None  # an empty grid always has a completion
    return [DIGIT_OF_BIT[m] for m in cells]


def clue_mask(puzzle: list[int]) -> int:
    """The clue cells of a puzzle (81 ints, 0 = blank) as an 81-bit mask."""
    return sum(CELL_BITS[i] for i in range(81) if puzzle[i])


class MinimalPuzzles:
    """Minimal puzzles of one solution grid (81 digits), with the witnesses found so far."""

    def __init__(self, rng: random.Random, solution: list[int]) -> None:
        self.rng = rng
        self.solution = solution
        self.by_cell: list[list[int]] = [[] for _ in range(81)]  # cell -> masks of the witnesses holding it
        self.candidates = 0  # puzzles made by `perturb`

    def _add_witness(self, other: Iterable[int]) -> int:
        s = self.solution
        diff = [i for i, v in enumerate(other) if v != s[i]]
        mask = sum(CELL_BITS[i] for i in diff)
        for i in diff:
            self.by_cell[i].append(mask)
        return mask

    def needed(self, puzzle: list[int], clues: int, cell: int) -> bool:
        """Whether clue `cell` of `puzzle` (clue mask `clues`) is needed for a unique solution."""
        bit = CELL_BITS[cell]
        if any(d & clues == bit for d in self.by_cell[cell]):
            return True
        puzzle[cell] = 0
        other = other_solution(puzzle, cell, self.solution[cell])
        puzzle[cell] = self.solution[cell]
        if other is None:
            return False
        self._add_witness(other)
        return True

    def minimize(self, puzzle: list[int], order: Iterable[int]) -> list[int]:
        """Blank the clues of a unique `puzzle` in `order` (cells) while the solution stays unique;
        in place, and returned. With every clue in `order` the result is minimal."""
        clues = clue_mask(puzzle)
        for i in order:
            if puzzle[i] and not self.needed(puzzle, clues, i):
                puzzle[i] = 0
                clues ^= CELL_BITS[i]
        return puzzle

    def _make_unique(self, puzzle: list[int], blanked: list[int]) -> list[int]:
        """Add clues of the solution to `puzzle` (in place) until it has no other solution.
        blanked: the clues removed from a unique puzzle to get this one (every other
        solution differs from ours on one of them)."""
        clues = clue_mask(puzzle)
        while True:
            diff = next((d for i in blanked for d in self.by_cell[i] if not d & clues), 0)
            if not diff:
                result = solve(puzzle, limit=2)
                if result.n_solutions == 1:
                    return puzzle
                diff = self._add_witness(next(w for w in result.solutions if list(w) != self.solution))
            cell = self.rng.choice([i for i in range(81) if diff & CELL_BITS[i]])
            puzzle[cell] = self.solution[cell]
            clues |= CELL_BITS[cell]

    def perturb(self, puzzle: list[int]) -> list[int]:
        """A new minimal puzzle near the minimal `puzzle` (left unchanged): see the module doc."""
        self.candidates += 1
        out = puzzle[:]
        blanked = self.rng.sample([i for i in range(81) if out[i]], self.rng.randint(1, 3))
        for i in blanked:
            out[i] = 0
        self._make_unique(out, blanked)
        order = [i for i in range(81) if out[i]]
        self.rng.shuffle(order)
        return self.minimize(out, order)


def _band_distance(backtracks: int, lo: int, hi: int) -> int:
    return max(0, lo - backtracks) + max(0, backtracks - hi)


def search_minimal(
    rng: random.Random, max_clues: int, backtracks: tuple[int, int], patience: int = 300
) -> tuple[list[int], list[int], SolveResult, int]:
    """A minimal puzzle with at most `max_clues` clues whose reference-solver backtrack count
    lies in `backtracks` (inclusive bounds).

    A walk per random solution grid, from a minimal puzzle dug in random order:
    first `perturb` moves that do not add clues, until the puzzle has at most
    max_clues - 1 (one clue of room, without which the next phase stalls:
    most moves from a puzzle at the cap land above it); then moves that keep
    at most max_clues clues and do not move the rating further from the band.
    The walk stops on entering the band, so ratings gather near its bottom.
    A grid whose walk has not improved for `patience` moves is replaced by a
    new one. Returns (puzzle, solution, rating, candidate puzzles made).
    """
    lo, hi = backtracks
    if not 0 <= lo <= hi or max_clues < 20:
        # below 19 clues the walk rarely gets (17-18-clue puzzles exist for few grids)
        raise ValueError(f"need 0 <= lo <= hi and max_clues >= 20, got band {backtracks}, max_clues {max_clues}")
    made = 0
    while True:
        grids = MinimalPuzzles(rng, random_solution(rng))
        order = list(range(81))
        rng.shuffle(order)
        found = _walk(grids, grids.minimize(grids.solution[:], order), max_clues, lo, hi, patience)
        made += grids.candidates + 1
        if found is not None:
            return found[0], grids.solution, found[1], made


def _walk(grids: MinimalPuzzles, puzzle: list[int], max_clues: int, lo: int, hi: int, patience: int
          ) -> tuple[list[int], SolveResult] | None:
    """The two phases of `search_minimal` on one grid: (puzzle, rating), or None when stuck."""
    clues, stale = 81 - puzzle.count(0), 0
    while clues >= max_clues and stale < patience:
        candidate = grids.perturb(puzzle)
        new = 81 - candidate.count(0)
        stale = 0 if new < clues else stale + 1
        if new <= clues:
            puzzle, clues = candidate, new
    if clues >= max_clues:
        return None
    result = solve(puzzle, limit=2)
    distance, stale = _band_distance(result.backtracks, lo, hi), 0
    while distance and stale < patience:
        candidate = grids.perturb(puzzle)
        if 81 - candidate.count(0) > max_clues:
            stale += 1
            continue
        new_result = solve(candidate, limit=2)
        new = _band_distance(new_result.backtracks, lo, hi)
        stale = 0 if new < distance else stale + 1
        if new <= distance:
            puzzle, result, distance = candidate, new_result, new
    return (puzzle, result) if not distance else None


__all__ = ["OPEN_TOP", "MinimalPuzzles", "clue_mask", "random_solution", "search_minimal"]
