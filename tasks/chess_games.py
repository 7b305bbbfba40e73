"""Mate puzzles from random games: positions with middlegame material, castling rights and checks.

The sparse boards of `fpstab.tasks.chess.random_position` make mates
common but look nothing like games (about 10 pieces, no castling, no en
passant). Here a candidate is a position reached by a random game from the
initial position: each move is, with probability 0.3, a random checking
move, else with probability 0.2 a random capture, else any random legal
move (checks and captures are what expose a king to a forced mate; a
uniformly random game reaches one about once per hundred positions).
Every position from ply 16 on is a candidate while at least `MIN_PIECES`
pieces stand; the first that has a checking move and passes the exact
search of `fpstab.tasks.mate_search` (a forced mate in exactly N, for N >= 2
with a unique first move that gives check, as Lichess puzzles have) is the
puzzle. Mates in one keep every mating move as a right answer (Lichess
accepts any mate on the last move); the target is one of them, drawn at
random.

Why the check: of 60 mates in 2 found in these games without it (seed 11),
48 (80 %) started with a check, against 95-98 % of real mate-in-2/3
puzzles (the random defender sometimes leaves its king in a net that a
quiet move closes); requiring it makes the rate 100 %.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import chess

from fpstab.tasks.mate_search import MateSearch, checking_moves, mates_in_one

CHECK_RATE = 0.3
CAPTURE_RATE = 0.2
FIRST_PLY = 16
MIN_PIECES = 14
MAX_PLIES = 200


def _random_move(rng: random.Random, board: chess.Board, moves: list[chess.Move]) -> chess.Move:
    """A move of the biased random game (see the module doc)."""
    r = rng.random()
    pool: list[chess.Move] = []
    if r < CHECK_RATE:
        pool = checking_moves(board)
    elif r < CHECK_RATE + CAPTURE_RATE:
        pool = [m for m in moves if board.is_capture(m)]
    return rng.choice(pool or moves)


def game_positions(rng: random.Random) -> Iterator[chess.Board]:
    """The positions of one biased random game from ply FIRST_PLY on, while at least
    MIN_PIECES pieces stand and the game is not over (the same board object, moved on)."""
    board = chess.Board()
    for ply in range(1, MAX_PLIES + 1):
        moves = list(board.legal_moves)
        if not moves or len(board.piece_map()) < MIN_PIECES:
            return
        board.push(_random_move(rng, board, moves))
        if ply >= FIRST_PLY and not board.is_game_over(claim_draw=False):
            yield board


def mate_answers(board: chess.Board, n: int) -> list[chess.Move]:
    """The right first moves if the side to move has a forced mate in exactly n (n >= 2: a
    unique first move, which is the one answer; n = 1: every mating move), else []."""
    if n == 1:
        return mates_in_one(board)
    search = MateSearch()
    if search.mate_within(board, n - 1):
        return []
    moves = search.mating_moves(board, n, limit=2)
    return moves if len(moves) == 1 else []


def game_mate(rng: random.Random, n: int, accept: Callable[[chess.Board], bool] = lambda b: True
              ) -> tuple[chess.Board, chess.Move, list[chess.Move], int]:
    """The first position of random games that is a mate in exactly n (see the module doc).

    accept: an extra test a candidate must pass before the exact search (a prefilter).
    Returns (board, the target move, every right first move, positions tried).
    """
    tried = 0
    while True:
        for board in game_positions(rng):
            tried += 1
            if not checking_moves(board) or not accept(board):
                continue
            answers = mate_answers(board, n)
            if answers and (n == 1 or board.gives_check(answers[0])):
                return board.copy(stack=False), rng.choice(answers), answers, tried


__all__ = ["game_mate", "game_positions", "mate_answers"]
