"""Chess: find the first move of a forced mate, with a ladder by mate depth and by realism.

Every level is a forced checkmate in exactly N moves (no shorter mate),
verified by the exact search of `fpstab.tasks.mate_search` (python-chess
move generation):

- mate1, mate2, mate3: random sparse boards built so that mates are
  common: the defending king stands on an edge square (90 %, mostly its
  back rank), often behind a pawn shield; the attacker has 2-3 pieces from
  {Q, R, R, B, B, N, N} and 0-4 pawns; the defender 0-3 pieces and 0-5
  pawns; no castling rights, no en passant. Exactly one first move mates.
- game1, game2, game3: positions from random games biased toward checks
  and captures, with at least 14 pieces (`fpstab.tasks.chess_games`);
  for N >= 2 exactly one first move mates and it gives check; game1 keeps
  every mating move as a right answer.

Optionally (prefilter="stockfish") Stockfish at depth 2N+2 discards
candidates it does not score as mate in exactly N before the exact search;
the label still comes from the exact search, but the set changes (Stockfish
misses some mates), so the prefilter and Stockfish's version are part of
the cache key.

A check against the Lichess puzzle database found real mate-in-2/3
positions with a median of 19 pieces and a check as the first move in
95-98 % of them, and about 4 in 5 real mate puzzles with more pieces,
castling rights or en passant squares than the sparse boards ever have;
the game levels are built to close that gap. Measured (generator v2, seed
0, 30 puzzles per level, one worker, CPU seconds):

    python benchmarks/task_ladders.py --task chess --n 30

| level | puzzles per CPU s | pieces min / median / max | first move checks | castling rights | promotion | > 1 right move |
|-------|-------------------|---------------------------|-------------------|-----------------|-----------|----------------|
| mate1 | 115               | 4 / 10 / 16               | 100 %             | 0 %             | 3 %       | 0 %            |
| mate2 | 9.0               | 4 / 10 / 15               | 57 %              | 0 %             | 7 %       | 0 %            |
| mate3 | 0.50              | 5 / 11 / 16               | 40 %              | 0 %             | 20 %      | 0 %            |
| game1 | 22                | 14 / 22 / 31              | 100 %             | 40 %            | 3 %       | 7 %            |
| game2 | 2.4               | 14 / 20 / 30              | 100 %             | 27 %            | 3 %       | 0 %            |
| game3 | 0.048             | 14 / 20 / 27              | 100 %             | 20 %            | 3 %       | 0 %            |

(No level had a position with a legal en passant capture in these 30.)
Default ladder: train mate1, test mate2, mate3; the game levels are in the
ladder but not in its default test levels (game3 costs about 20 CPU
seconds a puzzle).

Every first move that counts as right is recorded with each puzzle
(`ChessSet.answers`, found by the exact search): one move where the search
proved it the only winning first move (every level but game1), every
mating move in game1.

Encoding, targets and the scoring rule: `fpstab.tasks.chess_encoding`
(15 planes with castling rights and the en passant square; 6 target
classes that tell promotion pieces apart; a move is right when it is one
of the recorded answers). Cached sets hold FENs and moves, not tensors, so
an encoding change cannot misread a cache; generator v2 added the answers
to the cache (v1 files are not read) and made the same positions as v1 for
the same seed. A checkpoint of a core trained on encoding v1 (in_dim 12,
out_dim 2) is refused when loaded, with an error naming both encodings.

The Lichess puzzle database CSV: `fpstab.tasks.lichess` (`load_lichess_csv`).
"""

from __future__ import annotations

import functools
import random
import shutil
from pathlib import Path
from typing import Any

import chess
import numpy as np
import torch

from fpstab.tasks.base import Ladder, Task
from fpstab.tasks.chess_data import ChessSet, mate_problem, position_problem, validate, winning_first_moves
from fpstab.tasks.chess_encoding import (
    ENCODING_VERSION,
    N_CLASSES,
    N_PLANES,
    answer_table,
    canonical_transform,
    encode,
    encode_position,
    encoding_key,
    move_correct,
    move_scores,
    token,
)
from fpstab.tasks.chess_games import game_mate
from fpstab.tasks.lichess import RATING_BANDS, load_lichess_csv, load_lichess_level
from fpstab.tasks.mate_search import unique_mate
from fpstab.tasks.parallel import instance_seed, map_ordered, stream_tag

# v2: answers stored with each set (cache files of v1 lack them). STREAM_REVISION seeds the
# positions: unchanged since v1, so the same seed still gives the same positions.
GENERATOR_VERSION = 2
STREAM_REVISION = 1
MATE_DEPTHS = (1, 2, 3)
# level -> (where candidates come from, N of the mate in N)
LEVELS: dict[str, tuple[str, int]] = {
    **{f"mate{n}": ("sparse", n) for n in MATE_DEPTHS},
    **{f"game{n}": ("game", n) for n in MATE_DEPTHS},
}
_PIECES = (chess.QUEEN, chess.ROOK, chess.ROOK, chess.BISHOP, chess.BISHOP, chess.KNIGHT, chess.KNIGHT)


# --- candidate positions -------------------------------------------------------


def _place(board: chess.Board, empty: list[int], piece_type: int, color: bool) -> None:
    """Put a piece on the first square of `empty` it may stand on (pawns not on ranks 1 and 8)."""
    for k, square in enumerate(empty):
        if piece_type == chess.PAWN and chess.square_rank(square) in (0, 7):
            continue
        board.set_piece_at(square, chess.Piece(piece_type, color))
        del empty[k]
        return


def random_position(rng: random.Random) -> chess.Board:
    """A random legal position, not over, built so that forced mates are common (see module doc)."""
    while True:
        board = chess.Board(None)
        attacker = rng.random() < 0.5
        defender = not attacker
        if rng.random() < 0.9:  # an edge square, mostly a back rank
            file, rank = rng.randrange(8), rng.choice((0, 7)) if rng.random() < 0.5 else rng.choice((0, 1, 6, 7))
            if rng.random() < 0.3:
                file, rank = rank, file
            king = chess.square(file, rank)
        else:
            king = rng.randrange(64)
        board.set_piece_at(king, chess.Piece(chess.KING, defender))
        if rng.random() < 0.5:  # pawn shield in front of the defending king
            forward = 1 if defender == chess.WHITE else -1
            kf, kr = chess.square_file(king), chess.square_rank(king)
            for df in (-1, 0, 1):
                if rng.random() < 0.6:
                    f, r = kf + df, kr + forward * (2 if rng.random() < 0.25 else 1)
                    if 0 <= f < 8 and 1 <= r <= 6:
                        board.set_piece_at(chess.square(f, r), chess.Piece(chess.PAWN, defender))
        empty = [s for s in chess.SQUARES if not board.piece_at(s)]
        rng.shuffle(empty)
        _place(board, empty, chess.KING, attacker)
        for pt in rng.sample(_PIECES, rng.randint(2, 3)):
            _place(board, empty, pt, attacker)
        for _ in range(rng.randint(0, 4)):
            _place(board, empty, chess.PAWN, attacker)
        for pt in rng.sample(_PIECES, rng.randint(0, 3)):
            _place(board, empty, pt, defender)
        for _ in range(rng.randint(0, 5)):
            _place(board, empty, chess.PAWN, defender)
        board.turn = attacker
        if board.is_valid() and not board.is_game_over():
            return board


# --- optional Stockfish prefilter --------------------------------------------------

STOCKFISH_PATHS = ("/usr/games/stockfish",)
_engine: Any = None


def find_stockfish() -> str | None:
    """Path of a Stockfish binary (/usr/games/stockfish or on PATH), or None."""
    for p in STOCKFISH_PATHS:
        if Path(p).is_file():
            return p
    return shutil.which("stockfish")


def stockfish_version() -> str:
    """The engine's name as it reports it, e.g. 'Stockfish 15.1'; ValueError when absent."""
    import chess.engine

    path = find_stockfish()
    if path is None:
        raise ValueError("prefilter 'stockfish' needs Stockfish at /usr/games/stockfish or on PATH "
                         "(apt-get install stockfish); use no prefilter instead")
    with chess.engine.SimpleEngine.popen_uci(path) as engine:
        return engine.id.get("name", "Stockfish")


def _stockfish_mate(board: chess.Board, n: int) -> bool:
    """Stockfish (one thread, fresh hash, depth 2n+2) scores the position as mate in exactly n."""
    import chess.engine

    global _engine
    if _engine is None:
        _engine = chess.engine.SimpleEngine.popen_uci(find_stockfish())
        _engine.configure({"Threads": 1, "Hash": 16})
    # A new game object sends ucinewgame: a cleared hash keeps the answer
    # independent of which positions this worker saw before.
    info = _engine.analyse(board, chess.engine.Limit(depth=2 * n + 2), game=object())
    return info["score"].relative.mate() == n


def _close_engine() -> None:
    global _engine
    if _engine is not None:
        _engine.quit()
        _engine = None


# --- generation --------------------------------------------------------------------


def _make_one(level: str, seed: int, prefilter: str | None, index: int, attempt: int = 0
              ) -> tuple[str, str, tuple[str, ...], int, int]:
    """Instance `index` of a level: (fen, first move UCI, right first moves, candidates tried, pieces)."""
    source, mate_in = LEVELS[level]
    rng = random.Random(instance_seed(seed, stream_tag("chess", level, str(STREAM_REVISION)), index, attempt))
    if source == "game":
        accept = (lambda b: _stockfish_mate(b, mate_in)) if prefilter == "stockfish" else (lambda b: True)
        board, move, answers, tried = game_mate(rng, mate_in, accept)
        ordered = (move.uci(), *sorted(m.uci() for m in answers if m != move))
        return board.fen(), move.uci(), ordered, tried, len(board.piece_map())
    tries = 0
    while True:
        tries += 1
        board = random_position(rng)
        if prefilter == "stockfish" and not _stockfish_mate(board, mate_in):
            continue
        move = unique_mate(board, mate_in)
        if move is not None:  # the search proved it the only winning first move
            return board.fen(), move.uci(), (move.uci(),), tries, len(board.piece_map())


def _check_prefilter(prefilter: str | None) -> None:
    if prefilter not in (None, "stockfish"):
        raise ValueError(f"unknown prefilter {prefilter!r}; allowed: None, 'stockfish'")
    if prefilter == "stockfish" and find_stockfish() is None:
        raise ValueError("prefilter 'stockfish' needs Stockfish at /usr/games/stockfish or on PATH "
                         "(apt-get install stockfish); use no prefilter instead")


def generate(n: int, mate_in: int | str, seed: int, workers: int | None = None,
             prefilter: str | None = None) -> ChessSet:
    """n positions with a forced mate in exactly N, N = mate_in (1, 2 or 3: the sparse
    levels mate1..mate3), or of the ladder level named by mate_in ("game2": see the module doc).

    Deterministic in (level, seed, prefilter) for any number of `workers`
    (None = all cores); the first k instances equal generate(k, ...). No
    position appears twice, also not as a mirror image (they encode alike).
    prefilter: None or "stockfish" (see the module doc).
    """
    level = f"mate{mate_in}" if isinstance(mate_in, int) and mate_in in MATE_DEPTHS else mate_in
    if level not in LEVELS:
        raise ValueError(f"mate_in must be one of {MATE_DEPTHS} or a level of {', '.join(LEVELS)}, got {mate_in!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_prefilter(prefilter)
    make = functools.partial(_make_one, level, seed, prefilter)
    try:
        rows = map_ordered(make, range(n), workers)
        # Duplicates are rare; instance i is redrawn from a new stream until it is
        # new, in index order, so the set stays a deterministic prefix-closed list.
        seen: set[str] = set()
        for i in range(n):
            attempt = 0
            while (key := encoding_key(rows[i][0])) in seen:
                attempt += 1
                rows[i] = make(i, attempt)
            seen.add(key)
    finally:
        _close_engine()
    fens, moves, answers, tries, pieces = (list(c) for c in zip(*rows))
    return ChessSet(
        fens=fens,
        moves=moves,
        answers=tuple(answers),
        mate_in=np.full(n, LEVELS[level][1], dtype=np.int64),
        ratings=np.full(n, -1, dtype=np.int64),
        pieces=np.array(pieces, dtype=np.int64),
        attempts=np.array(tries, dtype=np.int64),
        ids=(),
        themes=(),
        level=level,
        seed=seed,
    )


class ChessTask(Task[ChessSet]):
    """First move of a forced mate; levels mate1 < mate2 < mate3 (see the module doc)."""

    name = "chess"
    in_dim = N_PLANES
    out_dim = N_CLASSES
    attn_window = None
    version = GENERATOR_VERSION
    encoding_version = ENCODING_VERSION
    cached = True

    def __init__(self, prefilter: str | None = None) -> None:
        _check_prefilter(prefilter)
        self.prefilter = prefilter

    @functools.cached_property
    def cache_variant(self) -> str:
        if self.prefilter == "stockfish":
            return "sf" + stockfish_version().split()[-1]
        return ""

    def ladder(self) -> Ladder:
        return Ladder(levels=tuple(LEVELS), train="mate1", test=("mate2", "mate3"))

    def _grid(self, level: str) -> tuple[int, ...]:
        return (8, 8)

    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> ChessSet:
        return generate(n, level, seed, workers, self.prefilter)

    def _to_arrays(self, data: ChessSet) -> dict[str, Any]:
        return {"fens": np.array(data.fens), "moves": np.array(data.moves),
                "answers": np.array([" ".join(a) for a in data.answers]), "mate_in": data.mate_in,
                "pieces": data.pieces, "attempts": data.attempts}

    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> ChessSet:
        n = len(arrays["fens"])
        return ChessSet(fens=arrays["fens"].tolist(), moves=arrays["moves"].tolist(),
                        answers=tuple(tuple(a.split()) for a in arrays["answers"].tolist()),
                        mate_in=arrays["mate_in"], ratings=np.full(n, -1, dtype=np.int64),
                        pieces=arrays["pieces"], attempts=arrays["attempts"], ids=(), themes=(),
                        level=level, seed=seed)

    def encode_set(self, data: ChessSet) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(data.fens, data.moves)

    def answers_of(self, data: ChessSet) -> torch.Tensor:
        """int64 (n, k, 3): each position's right first moves as (from token, to token,
        to-square class) on the canonical board, -1 rows as padding."""
        return answer_table(data.fens, data.answers)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                ) -> torch.Tensor:
        """logits (B, 64, 6), targets (B, 64), answers (B, k, 3) or None -> bool (B,): the top-2
        squares (and promotion piece) are one of the answers, else the target move;
        see `fpstab.tasks.chess_encoding.move_correct`."""
        self._check_logits(logits, targets)
        return move_correct(logits, targets, answers)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                ) -> dict[str, float]:
        """exact_match (a right first move), token_acc (per-square argmax) and square_recall
        (share of the target move's two squares among the top-2)."""
        out = super().metrics(logits, targets, answers)
        with torch.no_grad():
            top2 = move_scores(logits).topk(2, dim=-1).indices
            out["square_recall"] = (targets.gather(-1, top2) > 0).float().sum(-1).div(2).mean().item()
        return out

    def summarize(self, data: ChessSet) -> dict[str, str]:
        return summarize(data)

    def show(self, data: ChessSet, index: int) -> str:
        board = chess.Board(data.fens[index])
        move = chess.Move.from_uci(data.moves[index])
        depth = int(data.mate_in[index])
        what = (f"mate in {depth}" if not data.ids else
                f"Lichess puzzle {data.ids[index]}, rating {data.ratings[index]}, themes {data.themes[index]}")
        head = (f"chess {data.level} #{index} (seed {data.seed}): {what}, "
                f"{'white' if board.turn else 'black'} to move")
        _, (f, t, c) = encode_position(data.fens[index], data.moves[index])
        others = [a for a in data.answers[index] if a != move.uci()]
        return "\n".join([
            head,
            str(board),
            f"FEN:  {data.fens[index]}",
            f"move: {move.uci()} ({board.san(move)}); target tokens {f} and {t} (class {c}) of the canonical board",
            f"also right: {', '.join(others) if others else 'none'}",
        ])


def summarize(data: ChessSet) -> dict[str, str]:
    """Statistics of a set for `fpstab data`: pieces, side to move, checks, castling, answers."""
    boards = [chess.Board(f) for f in data.fens]
    first = [b.gives_check(chess.Move.from_uci(m)) for b, m in zip(boards, data.moves)]
    p = data.pieces
    out = {
        "pieces": f"min {p.min()}, median {np.median(p):.0f}, mean {p.mean():.1f}, max {p.max()}",
        "black to move": f"{np.mean([not b.turn for b in boards]):.1%}",
        "first move gives check": f"{np.mean(first):.1%}",
        "castling rights": f"{np.mean([bool(b.castling_rights) for b in boards]):.1%}",
        "en passant possible": f"{np.mean([b.has_legal_en_passant() for b in boards]):.1%}",
        "promotion first move": f"{np.mean([len(m) == 5 for m in data.moves]):.1%}",
        "more than one right move": f"{np.mean([len(a) > 1 for a in data.answers]):.1%}",
    }
    if data.attempts.any():
        out["candidates per puzzle"] = f"{data.attempts.mean():.1f}"
    if (data.ratings >= 0).any():
        r = data.ratings
        out["rating"] = f"min {r.min()}, median {np.median(r):.0f}, max {r.max()}"
    return out


__all__ = ["MATE_DEPTHS", "RATING_BANDS", "ChessSet", "ChessTask", "canonical_transform", "encode",
           "encode_position", "generate", "load_lichess_csv", "load_lichess_level", "mate_problem",
           "position_problem", "random_position", "summarize", "token", "validate", "winning_first_moves"]
