"""Chess: find the first move of a forced mate, with a ladder by mate depth.

Levels mate1, mate2, mate3: the side to move forces checkmate in exactly N
moves (no shorter mate) and exactly one first move does it, verified by the
exact search of `fpstab.tasks.mate_search` (python-chess move generation).

Candidate positions are random sparse boards built so that mates are
common: the defending king stands on an edge square (90 %, mostly its back
rank), often behind a pawn shield; the attacker has 2-3 pieces from
{Q, R, R, B, B, N, N} and 0-4 pawns; the defender 0-3 pieces and 0-5
pawns; no castling rights, no en passant. About 3 % of candidates pass
(mate1 and mate2; 2.5 % for mate3).
Optionally (prefilter="stockfish") Stockfish at depth 2N+2 discards
candidates it does not score as mate in exactly N before the exact search;
the label still comes from the exact search, but the set changes (Stockfish
misses some mates), so the prefilter and Stockfish's version are part of
the cache key.

Encoding: 64 tokens, one per square in board-printing order (token
(7 - rank) * 8 + file: a8 first, h1 last), 12 piece planes (in_dim 12):
planes 0-5 the side to move's P, N, B, R, Q, K, planes 6-11 the opponent's.
The board is canonicalized as in the paper's code: mirrored (ranks flipped,
colours swapped) when black is to move, then flipped left-right when the
side to move's king stands on files a-d, so the side to move plays up the
board with its king on files e-h. Targets (out_dim 2): class 1 on the
first move's from- and to-squares, 0 elsewhere (a promotion's piece is not
encoded). A prediction is correct when the two squares with the largest
score logit[..., 1] - logit[..., 0] are exactly that pair. The loss is the
unweighted mean per-square cross-entropy (2 positive squares of 64), as the
paper's code. Default ladder: train mate1, test mate2, mate3.

`load_lichess_csv` reads the Lichess puzzle database CSV.
"""

from __future__ import annotations

import bz2
import functools
import io
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import chess
import numpy as np
import torch

from fpstab.tasks.base import Ladder, Task
from fpstab.tasks.mate_search import MateSearch, mates_in_one, unique_mate
from fpstab.tasks.csv_rows import csv_rows
from fpstab.tasks.parallel import instance_seed, map_ordered, stream_tag

GENERATOR_VERSION = 1
MATE_DEPTHS = (1, 2, 3)
RATING_BANDS: dict[str, tuple[int | None, int | None]] = {
    "train": (None, 1600),  # the paper: train on rating <= 1600
    "test": (1601, 2000),   # and test on 1601-2000
    "all": (None, None),
}
_PIECES = (chess.QUEEN, chess.ROOK, chess.ROOK, chess.BISHOP, chess.BISHOP, chess.KNIGHT, chess.KNIGHT)


@dataclass(frozen=True, eq=False)
class ChessSet:
    """A set of puzzles.

    fens: positions with the solver to move; moves: the solution's first move (UCI).
    mate_in: int64 (n,), N of the forced mate (0 when loaded from Lichess).
    ratings: int64 (n,), Lichess rating (-1 when generated).
    pieces: int64 (n,), pieces on the board. attempts: int64 (n,), candidates
    tried per kept puzzle (0 when loaded). ids: Lichess PuzzleIds (empty when generated).
    """

    fens: list[str]
    moves: list[str]
    mate_in: np.ndarray
    ratings: np.ndarray
    pieces: np.ndarray
    attempts: np.ndarray
    ids: tuple[str, ...]
    level: str
    seed: int

    def __len__(self) -> int:
        return len(self.fens)


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


def _make_one(mate_in: int, seed: int, prefilter: str | None, index: int, attempt: int = 0
              ) -> tuple[str, str, int, int]:
    """Instance `index`: (fen, first move UCI, candidates tried, pieces)."""
    tag = stream_tag("chess", f"mate{mate_in}", str(GENERATOR_VERSION))
    rng = random.Random(instance_seed(seed, tag, index, attempt))
    tries = 0
    while True:
        tries += 1
        board = random_position(rng)
        if prefilter == "stockfish" and not _stockfish_mate(board, mate_in):
            continue
        move = unique_mate(board, mate_in)
        if move is not None:
            return board.fen(), move.uci(), tries, len(board.piece_map())


def _check_prefilter(prefilter: str | None) -> None:
    if prefilter not in (None, "stockfish"):
        raise ValueError(f"unknown prefilter {prefilter!r}; allowed: None, 'stockfish'")
    if prefilter == "stockfish" and find_stockfish() is None:
        raise ValueError("prefilter 'stockfish' needs Stockfish at /usr/games/stockfish or on PATH "
                         "(apt-get install stockfish); use no prefilter instead")


def generate(n: int, mate_in: int, seed: int, workers: int | None = None,
             prefilter: str | None = None) -> ChessSet:
    """n positions with a forced mate in exactly `mate_in` (1, 2 or 3) and a unique first move.

    Deterministic in (mate_in, seed, prefilter) for any number of `workers`
    (None = all cores); the first k instances equal generate(k, ...). No
    position appears twice, also not as a mirror image (they encode alike).
    prefilter: None or "stockfish" (see the module doc).
    """
    if mate_in not in MATE_DEPTHS:
        raise ValueError(f"mate_in must be one of {MATE_DEPTHS}, got {mate_in}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_prefilter(prefilter)
    make = functools.partial(_make_one, mate_in, seed, prefilter)
    try:
        rows = map_ordered(make, range(n), workers)
        # Duplicates are rare; instance i is redrawn from a new stream until it is
        # new, in index order, so the set stays a deterministic prefix-closed list.
        seen: set[str] = set()
        for i in range(n):
            attempt = 0
            while (key := _encoding_key(rows[i][0])) in seen:
                attempt += 1
                rows[i] = make(i, attempt)
            seen.add(key)
    finally:
        _close_engine()
    fens, moves, tries, pieces = (list(c) for c in zip(*rows))
    return ChessSet(
        fens=fens,
        moves=moves,
        mate_in=np.full(n, mate_in, dtype=np.int64),
        ratings=np.full(n, -1, dtype=np.int64),
        pieces=np.array(pieces, dtype=np.int64),
        attempts=np.array(tries, dtype=np.int64),
        ids=(),
        level=f"mate{mate_in}",
        seed=seed,
    )


# --- validation ----------------------------------------------------------------


def mate_problem(board: chess.Board, n: int, move: chess.Move) -> str | None:
    """Why `move` is not the unique first move of a mate in exactly n, or None if it is."""
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
    others = [m for m in (mates_in_one(board) if n == 1 else search.mating_moves(board, n)) if m != move]
    if others:
        return f"{others[0].uci()} also mates in {n}"
    return None


def validate(fens: Sequence[str], moves: Sequence[str], mate_in: int | Sequence[int] | None = None) -> None:
    """Raise ValueError unless every FEN is a valid position and its move legal;
    with mate_in (one int or one per position), also unless the move is the
    only first move of a forced mate in exactly that many moves."""
    if len(fens) != len(moves):
        raise ValueError(f"got {len(fens)} FENs but {len(moves)} moves")
    depths = [mate_in] * len(fens) if isinstance(mate_in, int) or mate_in is None else list(mate_in)
    for k, (fen, uci, n) in enumerate(zip(fens, moves, depths)):
        problem = _position_problem(fen, uci)
        if problem is None and n:
            problem = mate_problem(chess.Board(fen), int(n), chess.Move.from_uci(uci))
        if problem:
            raise ValueError(f"chess puzzle {k} ({fen}, {uci}): {problem}")


def _position_problem(fen: str, uci: str) -> str | None:
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


# --- Lichess puzzle CSV -------------------------------------------------------------

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8", newline="")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise ValueError(f"{path}: reading .zst needs the 'zstandard' package; "
                             "or decompress it first (zstd -d)") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def load_lichess_csv(
    path: str | Path,
    band: str = "all",
    min_rating: int | None = None,
    max_rating: int | None = None,
    limit: int | None = None,
) -> ChessSet:
    """Read the Lichess puzzle CSV (PuzzleId,FEN,Moves,Rating,...; .csv, .csv.bz2, .csv.zst).

    Each row's FEN is the position before the opponent's move Moves[0]; it
    is applied, so the returned FEN has the solver to move and the returned
    move is Moves[1], the solution's first move. band: "train" (rating <=
    1600), "test" (1601-2000) or "all"; min_rating/max_rating (inclusive)
    override the band's bounds. Rows outside are skipped before their
    position is checked; at most `limit` rows are kept, in file order.
    Raises ValueError naming the file and line of a malformed row.
    """
    if band not in RATING_BANDS:
        raise ValueError(f"unknown rating band {band!r}; allowed: {', '.join(RATING_BANDS)}")
    lo, hi = RATING_BANDS[band]
    lo = lo if min_rating is None else min_rating
    hi = hi if max_rating is None else max_rating
    path = Path(path)
    fens: list[str] = []
    moves: list[str] = []
    ratings: list[int] = []
    ids: list[str] = []
    with _open_text(path) as f:
        rows = csv_rows(f, path)
        _, header = next(rows, (0, None))
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header with {','.join(LICHESS_COLUMNS)}")
        missing = [c for c in LICHESS_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}:1: header lacks {missing}; expected {','.join(LICHESS_COLUMNS)},...")
        col = {c: header.index(c) for c in LICHESS_COLUMNS}
        for line, row in rows:
            if not row or all(not x.strip() for x in row):
                continue
            try:
                if len(row) < len(header):
                    raise ValueError(f"row has {len(row)} fields; the header has {len(header)}")
                try:
                    rating = int(row[col["Rating"]])
                except ValueError:
                    raise ValueError(f"Rating {row[col['Rating']]!r} is not an integer") from None
                if (lo is not None and rating < lo) or (hi is not None and rating > hi):
                    continue
                fen, solution = _lichess_position(row[col["FEN"]], row[col["Moves"]])
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            fens.append(fen)
            moves.append(solution)
            ratings.append(rating)
            ids.append(row[col["PuzzleId"]])
            if limit is not None and len(fens) >= limit:
                break
    if not fens:
        raise ValueError(f"{path}: no puzzles with rating in [{lo}, {hi}]")
    return ChessSet(
        fens=fens,
        moves=moves,
        mate_in=np.zeros(len(fens), dtype=np.int64),
        ratings=np.array(ratings, dtype=np.int64),
        pieces=np.array([len(chess.Board(f).piece_map()) for f in fens], dtype=np.int64),
        attempts=np.zeros(len(fens), dtype=np.int64),
        ids=tuple(ids),
        level=f"lichess:{band}",
        seed=-1,
    )


def _lichess_position(fen: str, moves_field: str) -> tuple[str, str]:
    """(FEN after the opponent's move, the solution's first move) of a Lichess row."""
    try:
        board = chess.Board(fen)
    except ValueError as e:
        raise ValueError(f"bad FEN {fen!r}: {e}") from None
    if not board.is_valid():
        raise ValueError(f"FEN {fen!r} is not a legal position ({board.status()!r})")
    moves = moves_field.split()
    if len(moves) < 2:
        raise ValueError(f"Moves {moves_field!r} needs the opponent's move and the solution's first move")
    for k, uci in enumerate(moves[:2]):
        try:
            move = chess.Move.from_uci(uci)
        except ValueError:
            raise ValueError(f"Moves[{k}] {uci!r} is not a UCI move") from None
        if move not in board.legal_moves:
            raise ValueError(f"Moves[{k}] {uci} is not legal in {board.fen()}")
        if k == 0:
            board.push(move)
            fen = board.fen()
    return fen, moves[1]


# --- encoding -----------------------------------------------------------------------


def canonical_transform(board: chess.Board) -> int:
    """XOR mask on square indices that canonicalizes `board`: 56 mirrors the
    ranks (black to move), 7 flips the files (own king on files a-d)."""
    mask = 56 if board.turn == chess.BLACK else 0
    king = board.king(board.turn)
    if king is not None and chess.square_file(king ^ mask) < 4:
        mask |= 7
    return mask


def token(square: int) -> int:
    """Token index of a square: board-printing order, a8 = 0, h1 = 63."""
    return (7 - chess.square_rank(square)) * 8 + chess.square_file(square)


def encode_position(fen: str, uci: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Piece planes float32 (64, 12) of the canonical board and the (from, to) token indices."""
    board = chess.Board(fen)
    mask = canonical_transform(board)
    planes = np.zeros((64, 12), dtype=np.float32)
    for square, piece in board.piece_map().items():
        plane = piece.piece_type - 1 + (0 if piece.color == board.turn else 6)
        planes[token(square ^ mask), plane] = 1.0
    move = chess.Move.from_uci(uci)
    return planes, (token(move.from_square ^ mask), token(move.to_square ^ mask))


def _encoding_key(fen: str) -> str:
    """Positions that encode identically share this key."""
    board = chess.Board(fen)
    mask = canonical_transform(board)
    return "".join(
        f"{token(s ^ mask)}{p.symbol() if p.color == board.turn else p.symbol().swapcase()}"
        for s, p in sorted(board.piece_map().items(), key=lambda sp: token(sp[0] ^ mask))
    )


def encode(fens: Sequence[str], moves: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """fens, moves (UCI) -> inputs float32 (n, 64, 12), targets int64 (n, 64) with 1 at
    the canonical from- and to-squares of the move, 0 elsewhere."""
    inputs = np.zeros((len(fens), 64, 12), dtype=np.float32)
    targets = np.zeros((len(fens), 64), dtype=np.int64)
    for k, (fen, uci) in enumerate(zip(fens, moves)):
        inputs[k], (f, t) = encode_position(fen, uci)
        targets[k, [f, t]] = 1
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def top2_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, 64, 2), targets (B, 64) with two 1s -> bool (B,): the two squares with
    the largest logit[..., 1] - logit[..., 0] are exactly the target pair."""
    score = logits[..., 1] - logits[..., 0]
    top2 = score.topk(2, dim=-1).indices
    return targets.gather(-1, top2).sum(-1) == 2


class ChessTask(Task[ChessSet]):
    """First move of a forced mate; levels mate1 < mate2 < mate3 (see the module doc)."""

    name = "chess"
    in_dim = 12
    out_dim = 2
    attn_window = None
    version = GENERATOR_VERSION
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
        return Ladder(levels=("mate1", "mate2", "mate3"), train="mate1", test=("mate2", "mate3"))

    def _grid(self, level: str) -> tuple[int, ...]:
        return (8, 8)

    def _generate(self, level: str, n: int, seed: int, workers: int | None) -> ChessSet:
        return generate(n, int(level[-1]), seed, workers, self.prefilter)

    def _to_arrays(self, data: ChessSet) -> dict[str, Any]:
        return {"fens": np.array(data.fens), "moves": np.array(data.moves), "mate_in": data.mate_in,
                "pieces": data.pieces, "attempts": data.attempts}

    def _from_arrays(self, arrays: dict[str, Any], level: str, seed: int) -> ChessSet:
        n = len(arrays["fens"])
        return ChessSet(fens=arrays["fens"].tolist(), moves=arrays["moves"].tolist(),
                        mate_in=arrays["mate_in"], ratings=np.full(n, -1, dtype=np.int64),
                        pieces=arrays["pieces"], attempts=arrays["attempts"], ids=(),
                        level=level, seed=seed)

    def encode_set(self, data: ChessSet) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(data.fens, data.moves)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Top-2 rule: logits (B, 64, 2), targets (B, 64) -> bool (B,); see `top2_correct`."""
        self._check_logits(logits, targets)
        return top2_correct(logits, targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """exact_match (top-2 rule), token_acc (per-square argmax) and square_recall
        (share of the two target squares among the top-2)."""
        out = super().metrics(logits, targets)
        with torch.no_grad():
            top2 = (logits[..., 1] - logits[..., 0]).topk(2, dim=-1).indices
            out["square_recall"] = targets.gather(-1, top2).float().sum(-1).div(2).mean().item()
        return out

    def summarize(self, data: ChessSet) -> dict[str, str]:
        black = sum(" b " in f for f in data.fens)
        out = {
            "pieces": f"min {data.pieces.min()}, mean {data.pieces.mean():.1f}, max {data.pieces.max()}",
            "black to move": f"{black / len(data):.1%}",
            "first move gives check": f"{np.mean([_gives_check(f, m) for f, m in zip(data.fens, data.moves)]):.1%}",
        }
        if data.attempts.any():
            out["candidates per puzzle"] = f"{data.attempts.mean():.1f}"
        if (data.ratings >= 0).any():
            r = data.ratings
            out["rating"] = f"min {r.min()}, mean {r.mean():.0f}, max {r.max()}"
        return out

    def show(self, data: ChessSet, index: int) -> str:
        board = chess.Board(data.fens[index])
        move = chess.Move.from_uci(data.moves[index])
        depth = int(data.mate_in[index])
        what = f"mate in {depth}" if depth else f"Lichess puzzle {data.ids[index]}, rating {data.ratings[index]}"
        head = (f"chess {data.level} #{index} (seed {data.seed}): {what}, "
                f"{'white' if board.turn else 'black'} to move")
        _, (f, t) = encode_position(data.fens[index], data.moves[index])
        return "\n".join([
            head,
            str(board),
            f"FEN:  {data.fens[index]}",
            f"move: {move.uci()} ({board.san(move)}); target tokens {f} and {t} of the canonical board",
        ])


def _gives_check(fen: str, uci: str) -> bool:
    return chess.Board(fen).gives_check(chess.Move.from_uci(uci))
