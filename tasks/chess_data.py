"""A set of chess puzzles (generated or loaded) and its validation.

`ChessSet` holds positions with the solver to move, the solution's first
move and every first move that counts as right; `validate` and
`mate_problem` check positions, moves and forced mates by exact search
(`fpstab.tasks.mate_search`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import chess
import numpy as np

from fpstab.tasks.mate_search import MateSearch, mates_in_one


@dataclass(frozen=True, eq=False)
class ChessSet:
    """A set of puzzles.

    fens: positions with the solver to move; moves: the solution's first move (UCI).
    answers: per position, every first move that counts as right (UCI; holds the
    move): all winning first moves where they are known (generated mates, Lichess
    mate-in-1 rows), else the move alone.
    mate_in: int64 (n,), N of the forced mate (0 when not known to be one).
    ratings: int64 (n,), Lichess rating (-1 when generated).
    pieces: int64 (n,), pieces on the board. attempts: int64 (n,), candidates
    tried per kept puzzle (0 when loaded). ids: Lichess PuzzleIds and themes:
    their Themes field (both empty when generated).
    """

    fens: list[str]
    moves: list[str]
    answers: tuple[tuple[str, ...], ...]
    mate_in: np.ndarray
    ratings: np.ndarray
    pieces: np.ndarray
    attempts: np.ndarray
    ids: tuple[str, ...]
    themes: tuple[str, ...]
    level: str
    seed: int

    def __len__(self) -> int:
        return len(self.fens)


def mate_problem(board: chess.Board, n: int, move: chess.Move, unique: bool = True) -> str | None:
    """Why `move` is not a first move of a mate in exactly n (with `unique`: the only
    one), or None if it is."""
    if move not in board.legal_moves:
        return f"{move.uci()} is not legal"
    board = board.copy(stack=False)
    search = MateSearch()
    if n >= 2 and search.mate_within(board, n - 1):
        return f"there is a shorter mate (within {n - 1})"
    board.push(move)
    mates = search.all_replies_lose(board, n - 1)
    board.pop()
    if not mates:
        return f"{move.uci()} does not force mate in {n}"
    if unique:
        others = [m for m in winning_first_moves(board, n) if m != move]
        if others:
            return f"{others[0].uci()} also mates in {n}"
    return None


def winning_first_moves(board: chess.Board, n: int) -> list[chess.Move]:
    """Every first move that forces mate within n moves, by exact search, in search order."""
    board = board.copy(stack=False)
    return mates_in_one(board) if n == 1 else MateSearch().mating_moves(board, n)


def validate(fens: Sequence[str], moves: Sequence[str], mate_in: int | Sequence[int] | None = None,
             answers: Sequence[Sequence[str]] | None = None) -> None:
    """Raise ValueError unless every FEN is a valid position and its move legal;
    with mate_in (one int or one per position; 0 = not a mate), also unless the move
    is the only first move of a forced mate in exactly that many moves, or, given
    `answers`, unless the answers are exactly the position's winning first moves."""
    if len(fens) != len(moves):
        raise ValueError(f"got {len(fens)} FENs but {len(moves)} moves")
    depths = [mate_in] * len(fens) if isinstance(mate_in, int) or mate_in is None else list(mate_in)
    for k, (fen, uci, n) in enumerate(zip(fens, moves, depths)):
        problem = position_problem(fen, uci)
        if problem is None and n:
            board = chess.Board(fen)
            problem = mate_problem(board, int(n), chess.Move.from_uci(uci), unique=answers is None)
            if problem is None and answers is not None:
                problem = _answers_problem(board, int(n), uci, answers[k])
        if problem:
            raise ValueError(f"chess puzzle {k} ({fen}, {uci}): {problem}")


def _answers_problem(board: chess.Board, n: int, uci: str, answers: Sequence[str]) -> str | None:
    winning = sorted(m.uci() for m in winning_first_moves(board, n))
    if uci not in answers:
        return f"answers {list(answers)} lack the move {uci}"
    if sorted(answers) != winning:
        return f"answers {sorted(answers)} are not the winning first moves {winning}"
    return None


def position_problem(fen: str, uci: str) -> str | None:
    """Why (fen, uci) is not a valid position with a legal move, or None."""
    try:
        board = chess.Board(fen)
    except ValueError as e:
        return f"bad FEN: {e}"
    if not board.is_valid():
        return f"invalid position ({board.status()!r})"
    try:
        move = chess.Move.from_uci(uci)
    except ValueError:
        return f"bad UCI move {uci!r}"
    if move not in board.legal_moves:
        return f"{uci} is not legal"
    return None


__all__ = ["ChessSet", "mate_problem", "position_problem", "validate", "winning_first_moves"]
