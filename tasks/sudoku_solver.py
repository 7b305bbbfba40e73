"""Reference sudoku solver: bitmask candidates, singles propagation, MRV search.

A grid is 81 ints in row-major order, 0 = blank, 1..9 = digit. Inside the
solver each cell holds a 9-bit candidate mask (bit d-1 set = digit d possible).

The solver also rates a puzzle by the effort it needs:
- `singles_only`: naked and hidden singles, applied until nothing changes,
  fill the whole grid (no guessing needed);
- `guesses`: values tried at branch points of the search;
- `backtracks`: dead ends (contradictions) met below a guess.
Both counts cover the whole search tree needed to prove uniqueness (the
search stops at the second solution), so they do not depend on being lucky
with the order of the first solution's values. Branching is deterministic:
the unfilled cell with the fewest candidates (lowest index on ties), digits
in ascending order. In the spirit of the `rating` column of sudoku-extreme
(a solver's backtrack count), but not the same solver: the numbers are not
comparable with that column.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

ALL = 0x1FF  # digits 1..9 all possible

ROWS = tuple(tuple(r * 9 + c for c in range(9)) for r in range(9))
COLS = tuple(tuple(r * 9 + c for r in range(9)) for c in range(9))
BOXES = tuple(
    tuple((br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3))
    for br in range(3)
    for bc in range(3)
)
UNITS = ROWS + COLS + BOXES
PEERS = tuple(
    tuple(sorted({j for unit in UNITS if i in unit for j in unit} - {i})) for i in range(81)
)
# cell -> bit mask of the three units (indices into UNITS) that hold it
UNIT_BITS = tuple(sum(1 << u for u, unit in enumerate(UNITS) if i in unit) for i in range(81))
POPCOUNT = tuple(bin(m).count("1") for m in range(512))
# mask with a single bit -> digit 1..9
DIGIT_OF_BIT = {1 << d: d + 1 for d in range(9)}


@dataclass(frozen=True)
class SolveResult:
    """Outcome of `solve`.

    solutions: up to `limit` solutions, each a tuple of 81 digits 1..9.
    singles_only: naked + hidden singles alone solve the puzzle.
    guesses: values tried at branch points (0 when singles_only).
    backtracks: dead ends met below a guess (0 when singles_only).
    """

    solutions: tuple[tuple[int, ...], ...]
    singles_only: bool
    guesses: int
    backtracks: int

    @property
    def n_solutions(self) -> int:
        """Number of solutions found, capped at the `limit` of the search."""
        return len(self.solutions)


def _check_grid(grid: Sequence[int]) -> None:
    if len(grid) != 81:
        raise ValueError(f"a sudoku grid has 81 cells, got {len(grid)}")
    for i, v in enumerate(grid):
        if not 0 <= int(v) <= 9:
            raise ValueError(f"sudoku cell {i} holds {v}; allowed 0 (blank) or 1..9")


def _propagate(cells: list[int], queue: list[int], changed: int = -1) -> bool:
    """Naked and hidden singles until nothing changes, in place.

    queue: indices of cells just fixed to one digit whose peers still hold it.
    changed: a cell whose candidates shrank without being fixed (-1: none).
    The other cells must already be closed under both rules: only the units
    of cells that change are searched for hidden singles, which is what makes
    the solver fast. Returns False on a contradiction (a cell or a unit runs
    out of a digit).
    """
    peers, unit_bits = PEERS, UNIT_BITS
    dirty = unit_bits[changed] if changed >= 0 else 0
    for i in queue:
        dirty |= unit_bits[i]
    while True:
        while queue:
            i = queue.pop()
            b = cells[i]
            for p in peers[i]:
                m = cells[p]
                if m & b:
                    m ^= b
                    if not m:
                        return False
                    cells[p] = m
                    dirty |= unit_bits[p]
                    if not m & (m - 1):
                        queue.append(p)
        if not dirty:
            return True
        # Hidden singles: a digit that fits only one cell of a unit.
        todo, dirty = dirty, 0
        while todo:
            low = todo & -todo
            todo ^= low
            unit = UNITS[low.bit_length() - 1]
            once = twice = 0
            for i in unit:
                m = cells[i]
                twice |= once & m
                once |= m
            if once != ALL:
                return False
            hidden = once & ~twice
            if hidden:
                for i in unit:
                    m = cells[i]
                    h = m & hidden
                    if h and h != m:
                        if h & (h - 1):
                            return False  # two digits that each fit only here
                        cells[i] = h
                        queue.append(i)
                        dirty |= unit_bits[i]


def _initial_cells(grid: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Candidate masks with the clues placed; None if two clues clash."""
    cells = [ALL] * 81
    queue = []
    for i, v in enumerate(grid):
        if v:
            cells[i] = 1 << (int(v) - 1)
            queue.append(i)
    for i in queue:
        b = cells[i]
        for p in PEERS[i]:
            if grid[p] and cells[p] == b:
                return None
    return cells, queue


class _Search:
    __slots__ = ("limit", "solutions", "guesses", "backtracks")

    def __init__(self, limit: int):
        self.limit = limit
        self.solutions: list[tuple[int, ...]] = []
        self.guesses = 0
        self.backtracks = 0

    def run(self, cells: list[int]) -> None:
        best = -1
        best_count = 10
        pop = POPCOUNT
        for i in range(81):
            c = pop[cells[i]]
            if 1 < c < best_count:
                best, best_count = i, c
                if c == 2:
                    break
        if best < 0:
            self.solutions.append(tuple(DIGIT_OF_BIT[m] for m in cells))
            return
        m = cells[best]
        while m:
            b = m & -m
            m ^= b
            self.guesses += 1
            child = cells[:]
            child[best] = b
            if _propagate(child, [best]):
                self.run(child)
                if len(self.solutions) >= self.limit:
                    return
            else:
                self.backtracks += 1


def solve(grid: Sequence[int], limit: int = 2) -> SolveResult:
    """Solve a sudoku and rate it.

    grid: 81 ints (row-major), 0 = blank. limit: stop after this many
    solutions (2 proves or disproves uniqueness). Raises ValueError on a
    malformed grid; clashing clues give zero solutions.
    """
    _check_grid(grid)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    start = _initial_cells(grid)
    if start is None:
        return SolveResult((), False, 0, 0)
    cells, queue = start
    if not _propagate(cells, queue):
        return SolveResult((), False, 0, 0)
    singles_only = all(not m & (m - 1) for m in cells)
    search = _Search(limit)
    search.run(cells)
    return SolveResult(tuple(search.solutions), singles_only, search.guesses, search.backtracks)


def singles_solve(grid: Sequence[int]) -> bool:
    """True if naked + hidden singles alone fill `grid` (81 ints, 0 = blank)."""
    start = _initial_cells(grid)
    if start is None:
        return False
    cells, queue = start
    return _propagate(cells, queue) and all(not m & (m - 1) for m in cells)


def other_solution(grid: Sequence[int], cell: int, digit: int) -> tuple[int, ...] | None:
    """A solution of `grid` whose `cell` is not `digit` (81 digits), or None if there is none.

    The uniqueness test used while digging holes: with the known solution s,
    removing a clue keeps the puzzle unique iff no solution puts another
    digit in that cell. The solution found (the first in the solver's
    deterministic order) certifies that the clue is needed.
    """
    start = _initial_cells(grid)
    if start is None:
        return None
    cells, queue = start
    m = cells[cell] & ~(1 << (digit - 1))
    if not m:
        return None
    cells[cell] = m
    if not m & (m - 1):
        queue.append(cell)
    if not _propagate(cells, queue, changed=cell):
        return None
    search = _Search(1)
    search.run(cells)
    return search.solutions[0] if search.solutions else None


def has_solution_other_than(grid: Sequence[int], cell: int, digit: int) -> bool:
    """True if `grid` has a solution whose `cell` is not `digit` (see `other_solution`)."""
    return other_solution(grid, cell, digit) is not None


def is_valid_solution(grid: Sequence[int]) -> bool:
    """True if `grid` (81 ints) is a complete grid with every unit a permutation of 1..9."""
    if len(grid) != 81:
        return False
    full = set(range(1, 10))
    return all({int(grid[i]) for i in unit} == full for unit in UNITS)
