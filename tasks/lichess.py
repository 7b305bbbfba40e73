"""The Lichess puzzle database CSV: loader, theme and rating filters, and ladders.

Format (database.lichess.org, CC0): PuzzleId,FEN,Moves,Rating,RatingDeviation,
Popularity,NbPlays,Themes,GameUrl,OpeningTags. FEN is the position before
the opponent's move Moves[0]; the solution starts at Moves[1]. Themes is a
space-separated list of camelCase tags (mateIn1 ... mateIn5, fork, endgame,
...). Lichess's tagger (github.com/ornicar/lichess-puzzler, tagger/cook.py)
tags a line that ends in checkmate mateInN with N = len(Moves) // 2, and
mateIn5 for five or more.

Every row read is validated, kept or not: field count, PuzzleId, Rating,
Themes, the FEN, every move of the line (legal in turn), and for a mateInN
row that the line has 2N moves (mateIn5: at least 10) and ends in
checkmate. A bad row raises ValueError("FILE:LINE: what is wrong").

Answers: on a mate-in-1 row every mating move is right (Lichess accepts
any mate on the last move), so all of them are kept; on other rows the
solution's move alone (Lichess keeps a puzzle only when each solution move
is the only good one).

Ladders: by theme, mateIn1 < ... < mateIn5 (train mateIn1); by rating,
r0-1600 < r1601-2000 < r2001-2400 < r2401-3500 (train r0-1600, the paper's
split at 1600 and 2000).
"""

from __future__ import annotations

import bz2
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import numpy as np

from fpstab.tasks.base import Ladder
from fpstab.tasks.chess_data import ChessSet
from fpstab.tasks.csv_rows import csv_header, csv_rows
from fpstab.tasks.mate_search import mates_in_one

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating")
RATING_BANDS: dict[str, tuple[int | None, int | None]] = {
    "train": (None, 1600),  # the paper: train on rating <= 1600
    "test": (1601, 2000),   # and test on 1601-2000
    "all": (None, None),
}
MATE_THEMES = tuple(f"mateIn{n}" for n in range(1, 6))
_THEME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class LichessLevel:
    """Rows a ladder level takes: every theme in `themes`, rating in [min_rating, max_rating]."""

    themes: tuple[str, ...] = ()
    min_rating: int | None = None
    max_rating: int | None = None


LICHESS_LADDERS: dict[str, dict[str, LichessLevel]] = {
    "theme": {t: LichessLevel(themes=(t,)) for t in MATE_THEMES},
    "rating": {
        "r0-1600": LichessLevel(max_rating=1600),
        "r1601-2000": LichessLevel(min_rating=1601, max_rating=2000),
        "r2001-2400": LichessLevel(min_rating=2001, max_rating=2400),
        "r2401-3500": LichessLevel(min_rating=2401, max_rating=3500),
    },
}


def lichess_ladder(kind: str) -> Ladder:
    """The Lichess ladder by "theme" or by "rating": levels easiest first, train the first."""
    levels = tuple(_ladder_levels(kind))
    return Ladder(levels=levels, train=levels[0], test=levels[1:])


def _ladder_levels(kind: str) -> dict[str, LichessLevel]:
    if kind not in LICHESS_LADDERS:
        raise ValueError(f"unknown Lichess ladder {kind!r}; allowed: {', '.join(LICHESS_LADDERS)}")
    return LICHESS_LADDERS[kind]


def load_lichess_level(path: str | Path, kind: str, level: str, limit: int | None = None) -> ChessSet:
    """The rows of one level of a Lichess ladder (`lichess_ladder(kind)`), in file order."""
    levels = _ladder_levels(kind)
    if level not in levels:
        raise ValueError(f"unknown level {level!r} of the Lichess {kind} ladder; allowed: {', '.join(levels)}")
    spec = levels[level]
    data = load_lichess_csv(path, min_rating=spec.min_rating, max_rating=spec.max_rating, limit=limit,
                            themes=spec.themes or None)
    return _relabel(data, f"lichess:{kind}:{level}")


def _relabel(data: ChessSet, level: str) -> ChessSet:
    fields = {k: getattr(data, k) for k in data.__dataclass_fields__}
    return ChessSet(**{**fields, "level": level})


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


@dataclass(frozen=True)
class _Row:
    puzzle_id: str
    fen: str  # after the opponent's move: the solver to move
    move: str
    answers: tuple[str, ...]
    rating: int
    themes: tuple[str, ...]
    mate_in: int
    pieces: int


def _check_filters(band: str, themes: str | Sequence[str] | None) -> tuple[str, ...]:
    if band not in RATING_BANDS:
        raise ValueError(f"unknown rating band {band!r}; allowed: {', '.join(RATING_BANDS)}")
    wanted = (themes,) if isinstance(themes, str) else tuple(themes or ())
    bad = [t for t in wanted if not isinstance(t, str) or not _THEME.match(t)]
    if bad:
        raise ValueError(f"themes {bad} are not Lichess theme names (camelCase letters and digits, "
                         f"e.g. {', '.join(MATE_THEMES[:2])}, fork)")
    return wanted


def load_lichess_csv(
    path: str | Path,
    band: str = "all",
    min_rating: int | None = None,
    max_rating: int | None = None,
    limit: int | None = None,
    themes: str | Sequence[str] | None = None,
) -> ChessSet:
    """Read the Lichess puzzle CSV (.csv, .csv.bz2, .csv.zst; see the module doc).

    Each row's opponent move Moves[0] is applied, so the returned FEN has the
    solver to move and the returned move is Moves[1]. band: "train" (rating
    <= 1600), "test" (1601-2000) or "all"; min_rating/max_rating (inclusive)
    override the band's bounds. themes: keep rows that carry every theme
    given (one name or several). Every row read is validated (module doc);
    at most `limit` rows are kept, in file order. mate_in is N for mateInN
    rows (the line's length for mateIn5), else 0.
    """
    wanted = _check_filters(band, themes)
    lo, hi = RATING_BANDS[band]
    lo = lo if min_rating is None else min_rating
    hi = hi if max_rating is None else max_rating
    path = Path(path)
    kept: list[_Row] = []
    seen: Counter[str] = Counter()
    with _open_text(path) as f:
        rows = csv_rows(f, path)
        header, _ = csv_header(rows, path, LICHESS_COLUMNS)
        if wanted and "Themes" not in header:
            raise ValueError(f"{path}:1: themes={list(wanted)} needs a Themes column; the header has {header}")
        for line, fields in rows:
            if not fields or all(not x.strip() for x in fields):
                continue
            try:
                row = _parse_row(fields, header)
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            seen.update(row.themes)
            if (lo is not None and row.rating < lo) or (hi is not None and row.rating > hi):
                continue
            if not set(wanted) <= set(row.themes):
                continue
            kept.append(row)
            if limit is not None and len(kept) >= limit:
                break
    if not kept:
        common = ", ".join(t for t, _ in seen.most_common(8)) or "none"
        raise ValueError(f"{path}: no puzzles with rating in [{lo}, {hi}]"
                         + (f" and themes {list(wanted)} (most common themes read: {common})" if wanted else ""))
    return _to_set(kept, f"lichess:{band}" + (f":{','.join(wanted)}" if wanted else ""))


def _to_set(rows: list[_Row], level: str) -> ChessSet:
    return ChessSet(
        fens=[r.fen for r in rows],
        moves=[r.move for r in rows],
        answers=tuple(r.answers for r in rows),
        mate_in=np.array([r.mate_in for r in rows], dtype=np.int64),
        ratings=np.array([r.rating for r in rows], dtype=np.int64),
        pieces=np.array([r.pieces for r in rows], dtype=np.int64),
        attempts=np.zeros(len(rows), dtype=np.int64),
        ids=tuple(r.puzzle_id for r in rows),
        themes=tuple(" ".join(r.themes) for r in rows),
        level=level,
        seed=-1,
    )


def _parse_row(fields: list[str], header: list[str]) -> _Row:
    """One validated row (see the module doc); ValueError saying what is wrong."""
    if len(fields) < len(header):
        raise ValueError(f"row has {len(fields)} fields; the header has {len(header)}")
    value = dict(zip(header, fields))
    puzzle_id = value["PuzzleId"].strip()
    if not puzzle_id:
        raise ValueError("PuzzleId is empty")
    try:
        rating = int(value["Rating"])
    except ValueError:
        raise ValueError(f"Rating {value['Rating']!r} is not an integer") from None
    themes = tuple(value.get("Themes", "").split())
    bad = [t for t in themes if not _THEME.match(t)]
    if bad:
        raise ValueError(f"Themes holds {bad[0]!r}; expected space-separated camelCase names")
    board, line = _play_line(value["FEN"], value["Moves"])
    mate_in = _mate_depth(themes, line, board)
    after = chess.Board(value["FEN"])
    after.push(line[0])
    move = line[1]
    answers = (move.uci(),)
    if mate_in == 1:
        answers += tuple(sorted(m.uci() for m in mates_in_one(after) if m != move))
    return _Row(puzzle_id, after.fen(), move.uci(), answers, rating, themes, mate_in, len(after.piece_map()))


def _play_line(fen: str, moves_field: str) -> tuple[chess.Board, list[chess.Move]]:
    """The board at the end of the row's line, and its moves; every move checked legal in turn."""
    try:
        board = chess.Board(fen)
    except ValueError as e:
        raise ValueError(f"bad FEN {fen!r}: {e}") from None
    if not board.is_valid():
        raise ValueError(f"FEN {fen!r} is not a legal position ({board.status()!r})")
    tokens = moves_field.split()
    if len(tokens) < 2:
        raise ValueError(f"Moves {moves_field!r} needs the opponent's move and the solution's first move")
    line = []
    for k, uci in enumerate(tokens):
        try:
            move = chess.Move.from_uci(uci)
        except ValueError:
            raise ValueError(f"Moves[{k}] {uci!r} is not a UCI move") from None
        if move not in board.legal_moves:
            raise ValueError(f"Moves[{k}] {uci} is not legal in {board.fen()}")
        board.push(move)
        line.append(move)
    return board, line


def _mate_depth(themes: tuple[str, ...], line: list[chess.Move], end: chess.Board) -> int:
    """N of a mateInN row (checked against its line), else 0."""
    tags = [t for t in themes if t in MATE_THEMES]
    if not tags:
        return 0
    if len(tags) > 1:
        raise ValueError(f"Themes has two mate depths {tags}")
    n = int(tags[0][-1])
    if n < 5 and len(line) != 2 * n or n == 5 and len(line) < 10:
        need = f"{2 * n}" if n < 5 else "at least 10"
        raise ValueError(f"theme {tags[0]} needs {need} moves in Moves (the opponent's and the solution), "
                         f"got {len(line)}")
    if not end.is_checkmate():
        raise ValueError(f"theme {tags[0]}, but the line does not end in checkmate")
    return len(line) // 2


__all__ = ["LICHESS_COLUMNS", "LICHESS_LADDERS", "MATE_THEMES", "RATING_BANDS", "LichessLevel",
           "lichess_ladder", "load_lichess_csv", "load_lichess_level"]
