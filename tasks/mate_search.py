"""Exact forced-mate search on python-chess boards.

`MateSearch.mate_within(board, n)` decides whether the side to move can force
checkmate within n of its own moves against every defence: the attacker
tries all its moves, the defender all its replies. It is exact (no pruning
that could change the answer); speed comes from move ordering and cutoffs:

- a mate in one needs a checking move, so only moves that can give check
  are generated (by target square per piece type, plus discovered checks,
  promotions, castling and en passant) and confirmed by playing them;
- the attacker tries checks first, then captures, then quiet moves;
  the defender tries captures first (they most often refute), then the rest;
- the first move that works (attacker) or refutes (defender) ends a node;
- a move that worked at the same depth elsewhere (killer) is tried first;
- a transposition table per search caches (position, n) -> bool.

Draw rules (repetition, 50 moves) are ignored: they cannot end a game within
the three moves the ladder needs. Stalemate is not a mate.
"""

from __future__ import annotations

import chess
from chess import (
    BB_ALL,
    BB_BACKRANKS,
    BB_DIAG_ATTACKS,
    BB_DIAG_MASKS,
    BB_FILE_ATTACKS,
    BB_FILE_MASKS,
    BB_KNIGHT_ATTACKS,
    BB_PAWN_ATTACKS,
    BB_RANK_ATTACKS,
    BB_RANK_MASKS,
    BB_SQUARES,
    between,
    msb,
    scan_reversed,
)


def _position_key(b: chess.Board) -> tuple:
    return (b.pawns, b.knights, b.bishops, b.rooks, b.queens, b.kings,
            b.occupied_co[0], b.occupied_co[1], b.turn, b.castling_rights, b.ep_square)


def _check_candidates(board: chess.Board) -> list[chess.Move]:
    """Legal moves of the side to move that may give check (a superset of the checking moves)."""
    us = board.turn
    ours = board.occupied_co[us]
    their_king = board.kings & board.occupied_co[not us]
    if not their_king:
        return []
    ksq = msb(their_king)
    occ = board.occupied
    # Squares from which each piece type would attack the king (through the
    # current occupancy: a slider moving along a line toward the king cannot
    # open its own path, so this is exact for direct checks).
    diag = BB_DIAG_ATTACKS[ksq][BB_DIAG_MASKS[ksq] & occ]
    orth = BB_RANK_ATTACKS[ksq][BB_RANK_MASKS[ksq] & occ] | BB_FILE_ATTACKS[ksq][BB_FILE_MASKS[ksq] & occ]
    # Our pieces that alone stand between one of our sliders and their king.
    snipers = ours & (
        (BB_RANK_ATTACKS[ksq][0] | BB_FILE_ATTACKS[ksq][0]) & (board.rooks | board.queens)
        | BB_DIAG_ATTACKS[ksq][0] & (board.bishops | board.queens)
    )
    discoverers = 0
    for s in scan_reversed(snipers):
        b = between(ksq, s) & occ
        if b and not b & (b - 1) and b & ours:
            discoverers |= b
    gen = board.generate_legal_moves
    out: list[chess.Move] = []
    if discoverers:
        out.extend(gen(discoverers, BB_ALL))
    rest = ours & ~discoverers
    if m := board.knights & rest:
        out.extend(gen(m, BB_KNIGHT_ATTACKS[ksq]))
    if (m := board.bishops & rest) and diag:
        out.extend(gen(m, diag))
    if (m := board.rooks & rest) and orth:
        out.extend(gen(m, orth))
    if m := board.queens & rest:
        out.extend(gen(m, diag | orth))
    if m := board.pawns & rest:
        to = BB_PAWN_ATTACKS[not us][ksq] | BB_BACKRANKS  # back ranks: promotions
        if board.ep_square is not None:
            to |= BB_SQUARES[board.ep_square]
        out.extend(gen(m, to))
    if board.castling_rights & ours:
        out.extend(mv for mv in gen(board.kings & rest, BB_ALL) if board.is_castling(mv))
    return out


def checking_moves(board: chess.Board) -> list[chess.Move]:
    """All legal moves of the side to move that give check."""
    found = []
    for move in _check_candidates(board):
        board.push(move)
        if board.is_check():
            found.append(move)
        board.pop()
    return found


def mates_in_one(board: chess.Board, limit: int | None = None) -> list[chess.Move]:
    """Moves that checkmate at once (at most `limit` of them)."""
    found = []
    for move in _check_candidates(board):
        board.push(move)
        mate = board.is_check() and not any(board.generate_legal_moves())
        board.pop()
        if mate:
            found.append(move)
            if limit is not None and len(found) >= limit:
                break
    return found


class MateSearch:
    """One exact search context: a transposition table and killer moves.

    Use a fresh instance per root position (the table grows with the search).
    `nodes` counts attacker nodes searched.
    """

    def __init__(self) -> None:
        self.table: dict[tuple, bool] = {}
        self.attack_killer: dict[int, chess.Move] = {}
        self.defence_killer: dict[int, chess.Move] = {}
        self.nodes = 0

    def _attacker_moves(self, board: chess.Board, n: int) -> list[chess.Move]:
        checks = checking_moves(board)
        seen = set(checks)
        quiet = [m for m in board.generate_legal_moves() if m not in seen]
        quiet.sort(key=lambda m: not board.is_capture(m))
        moves = checks + quiet
        killer = self.attack_killer.get(n)
        if killer is not None and moves and moves[0] != killer and killer in moves:
            moves.remove(killer)
            moves.insert(0, killer)
        return moves

    def mate_within(self, board: chess.Board, n: int) -> bool:
        """True if the side to move forces checkmate within n of its moves (n >= 1)."""
        self.nodes += 1
        if n == 1:
            return bool(mates_in_one(board, limit=1))
        key = (_position_key(board), n)
        known = self.table.get(key)
        if known is not None:
            return known
        result = False
        for move in self._attacker_moves(board, n):
            board.push(move)
            mates = self.all_replies_lose(board, n - 1)
            board.pop()
            if mates:
                self.attack_killer[n] = move
                result = True
                break
        self.table[key] = result
        return result

    def all_replies_lose(self, board: chess.Board, n: int) -> bool:
        """Defender to move: True if it is checkmated now, or (n >= 1) every reply
        leaves the attacker a forced mate within n. Stalemate is False."""
        them = board.occupied_co[not board.turn]
        killer = self.defence_killer.get(n)
        tried_killer = False
        if killer is not None and n >= 1 and board.is_legal(killer):
            tried_killer = True
            board.push(killer)
            mates = self.mate_within(board, n)
            board.pop()
            if not mates:
                return False
        any_reply = tried_killer
        for mask in (them, BB_ALL & ~them):  # captures first
            for reply in board.generate_legal_moves(BB_ALL, mask):
                any_reply = True
                if n == 0:
                    return False
                if tried_killer and reply == killer:
                    continue
                board.push(reply)
                mates = self.mate_within(board, n)
                board.pop()
                if not mates:
                    self.defence_killer[n] = reply
                    return False
        return any_reply or board.is_check()

    def mating_moves(self, board: chess.Board, n: int, limit: int | None = None) -> list[chess.Move]:
        """First moves after which the attacker forces mate within n moves in total
        (at most `limit` of them), in search order."""
        if n < 1:
            raise ValueError(f"mate depth must be >= 1, got {n}")
        if n == 1:
            return mates_in_one(board, limit)
        found = []
        for move in self._attacker_moves(board, n):
            board.push(move)
            mates = self.all_replies_lose(board, n - 1)
            board.pop()
            if mates:
                found.append(move)
                if limit is not None and len(found) >= limit:
                    break
        return found


def shortest_mate(board: chess.Board, max_n: int) -> int | None:
    """The smallest n <= max_n with a forced mate in n for the side to move, or None."""
    board = board.copy(stack=False)
    search = MateSearch()
    for n in range(1, max_n + 1):
        if search.mate_within(board, n):
            return n
    return None


def unique_mate(board: chess.Board, n: int) -> chess.Move | None:
    """The first move, if the side to move has a forced mate in exactly n
    (none shorter) and exactly one first move achieves it; else None."""
    board = board.copy(stack=False)
    search = MateSearch()
    if n >= 2 and search.mate_within(board, n - 1):
        return None
    moves = search.mating_moves(board, n, limit=2)
    return moves[0] if len(moves) == 1 else None
