"""Chess: exact mate search, generated ladder, canonical encoding, top-2 rule, Lichess loader."""

from __future__ import annotations

import random
from pathlib import Path

import chess
import pytest
import torch

from fpstab.tasks import chess as chess_task
from fpstab.tasks.mate_search import MateSearch, checking_moves, mates_in_one, shortest_mate, unique_mate

FIXTURE = Path(__file__).parent / "fixtures" / "tasks" / "lichess_puzzles_small.csv"
BACK_RANK = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"       # Ra8#, the only mate
FOUR_MATES = "7k/5Q2/6K1/8/8/8/8/8 w - - 0 1"         # Qf8#, Qe8#, Qh7#, Qg7#
STALEMATED = "k7/8/1QK5/8/8/8/8/8 b - - 0 1"
SPECIAL_CHECKS = [
    "5k2/8/8/8/8/8/8/4K2R w K - 0 1",    # castling gives check
    "8/8/8/R2pP2k/8/8/8/4K3 w - d6 0 1",  # en passant uncovers the rook
    "3k4/1P6/8/8/8/8/8/K7 w - - 0 1",     # promotions give check
]


# --- an independent reference: plain python-chess, no ordering, no tables ---------

def ref_mates_within(board: chess.Board, n: int) -> bool:
    for move in list(board.legal_moves):
        board.push(move)
        ok = ref_every_reply_mated(board, n - 1)
        board.pop()
        if ok:
            return True
    return False


def ref_every_reply_mated(board: chess.Board, n: int) -> bool:
    if board.is_checkmate():
        return True
    if n == 0 or board.is_stalemate():
        return False
    for reply in list(board.legal_moves):
        board.push(reply)
        ok = ref_mates_within(board, n)
        board.pop()
        if not ok:
            return False
    return True


def ref_mating_first_moves(board: chess.Board, n: int) -> list[str]:
    found = []
    for move in list(board.legal_moves):
        board.push(move)
        if ref_every_reply_mated(board, n - 1):
            found.append(move.uci())
        board.pop()
    return found


def random_positions(count: int, seed: int) -> list[chess.Board]:
    rng = random.Random(seed)
    boards = [chess.Board(f) for f in SPECIAL_CHECKS]
    while len(boards) < count:
        board = chess.Board() if rng.random() < 0.5 else chess_task.random_position(rng)
        for _ in range(rng.randint(0, 60)):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(rng.choice(moves))
        if not board.is_game_over():
            boards.append(board)
    return boards


# --- the search -------------------------------------------------------------------

def test_checking_moves_equal_gives_check():
    for board in random_positions(150, seed=1):
        expected = sorted(m.uci() for m in board.legal_moves if board.gives_check(m))
        assert sorted(m.uci() for m in checking_moves(board)) == expected, board.fen()


def test_mate_search_agrees_with_reference():
    for board in random_positions(40, seed=2)[3:]:
        for n in (1, 2):
            assert MateSearch().mate_within(board, n) == ref_mates_within(board, n), (board.fen(), n)


def test_known_positions():
    board = chess.Board(BACK_RANK)
    assert unique_mate(board, 1) == chess.Move.from_uci("a1a8")
    assert unique_mate(board, 2) is None  # there is a shorter mate
    assert shortest_mate(board, 3) == 1
    assert len(mates_in_one(chess.Board(FOUR_MATES))) == 4
    assert unique_mate(chess.Board(FOUR_MATES), 1) is None  # not unique
    stalemate = chess.Board(STALEMATED)
    assert not MateSearch().all_replies_lose(stalemate, 0)  # stalemate is no mate
    assert board.fen() == BACK_RANK  # the search leaves the board as it found it


# --- generated ladder ----------------------------------------------------------------

@pytest.mark.parametrize("mate_in, n", [(1, 4), (2, 3)])
def test_generated_puzzles_mate_in_exactly_n_with_a_unique_first_move(mate_in, n):
    data = chess_task.generate(n, mate_in, seed=7, workers=1)
    assert len(data.fens) == len(data.moves) == n and (data.mate_in == mate_in).all()
    chess_task.validate(data.fens, data.moves, mate_in)
    for fen, move in zip(data.fens, data.moves):
        board = chess.Board(fen)
        assert board.is_valid() and chess.Move.from_uci(move) in board.legal_moves
        assert ref_mating_first_moves(board, mate_in) == [move]  # exactly one, by the reference
        assert mate_in == 1 or not ref_mates_within(board, mate_in - 1)  # nothing shorter
    again = chess_task.generate(n, mate_in, seed=7, workers=2)
    assert (again.fens, again.moves) == (data.fens, data.moves)


def test_generated_mate_in_three():
    data = chess_task.generate(1, 3, seed=0, workers=1)
    chess_task.validate(data.fens, data.moves, 3)
    board = chess.Board(data.fens[0])
    assert shortest_mate(board, 3) == 3
    assert not ref_mates_within(board, 2) and ref_mating_first_moves(board, 3) == data.moves


def test_validate_explains():
    data = chess_task.generate(1, 2, seed=3, workers=1)
    board = chess.Board(data.fens[0])
    other = next(m.uci() for m in board.legal_moves if m.uci() != data.moves[0])
    with pytest.raises(ValueError, match=f"chess puzzle 0 .*{other} does not force mate in 2"):
        chess_task.validate(data.fens, [other], 2)
    with pytest.raises(ValueError, match="shorter mate"):
        chess_task.validate([BACK_RANK], ["a1a8"], 2)
    with pytest.raises(ValueError, match="also mates in 1"):
        chess_task.validate([FOUR_MATES], ["f7g7"], 1)
    with pytest.raises(ValueError, match="a1a2 is not legal"):
        chess_task.validate([FOUR_MATES], ["a1a2"])
    with pytest.raises(ValueError, match="mate_in must be one of"):
        chess_task.generate(1, 4, seed=0)


# --- encoding ----------------------------------------------------------------------

def _mirror(fen: str, uci: str) -> tuple[str, str]:
    move = chess.Move.from_uci(uci)
    return (chess.Board(fen).mirror().fen(),
            chess.Move(chess.square_mirror(move.from_square), chess.square_mirror(move.to_square)).uci())


def _flip_files(fen: str, uci: str) -> tuple[str, str]:
    board = chess.Board(fen).transform(chess.flip_horizontal)
    move = chess.Move.from_uci(uci)
    return board.fen(), chess.Move(move.from_square ^ 7, move.to_square ^ 7).uci()


def test_encoding_layout():
    x, y = chess_task.encode([BACK_RANK], ["a1a8"])
    assert x.shape == (1, 64, 12) and y.shape == (1, 64)
    # white to move, king on g1: no transform; tokens in printing order (a8 = 0, h1 = 63)
    assert y[0].nonzero().flatten().tolist() == [0, 56]
    assert x[0, 56, 3] == 1 and x[0, 62, 5] == 1  # own rook a1, own king g1
    assert x[0, 6, 11] == 1  # opponent king g8
    assert x[0].sum() == 6


def test_encoding_is_canonical_under_colour_mirror_and_file_flip():
    fen, move = BACK_RANK, "a1a8"
    reference = chess_task.encode([fen], [move])
    for fen2, move2 in (_mirror(fen, move), _flip_files(fen, move), _mirror(*_flip_files(fen, move))):
        x, y = chess_task.encode([fen2], [move2])
        assert torch.equal(x, reference[0]) and torch.equal(y, reference[1]), fen2
    data = chess_task.generate(4, 1, seed=7, workers=1)
    x, _ = chess_task.encode(data.fens, data.moves)
    own_king = x[:, :, 5].argmax(1)
    assert (own_king % 8 >= 4).all()  # own king on files e-h


def test_top2_rule():
    task = chess_task.ChessTask()
    targets = torch.zeros(3, 64, dtype=torch.long)
    targets[:, [12, 28]] = 1
    logits = torch.zeros(3, 64, 2)
    logits[0, [12, 28], 1] = 5.0           # exactly the pair
    logits[1, [12, 29], 1] = 5.0           # one right, one wrong
    logits[2, [12, 28, 40], 1] = torch.tensor([1.0, 2.0, 3.0])  # the pair, but square 40 outranks 12
    assert task.correct(logits, targets).tolist() == [True, False, False]
    m = task.metrics(logits, targets)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["square_recall"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert 0 < m["token_acc"] <= 1 and torch.isfinite(task.loss(logits, targets))


# --- Lichess CSV -----------------------------------------------------------------------

def test_lichess_loader_applies_the_opponent_move_and_bands():
    data = chess_task.load_lichess_csv(FIXTURE)
    assert len(data) == 9 and data.ids[0] == "SYN01"
    board = chess.Board(data.fens[0])  # after 3...Nf6??
    assert board.turn == chess.WHITE and data.moves[0] == "h5f7"
    board.push_uci(data.moves[0])
    assert board.is_checkmate()
    assert data.moves[-1] == "a2e6" and data.ratings[-1] == 1760
    train = chess_task.load_lichess_csv(FIXTURE, band="train")
    assert train.ratings.tolist() == [600, 1200, 1600]
    test = chess_task.load_lichess_csv(FIXTURE, band="test")
    assert sorted(test.ratings.tolist()) == [1601, 1750, 1760, 2000]
    assert len(chess_task.load_lichess_csv(FIXTURE, min_rating=2001, limit=1)) == 1
    chess_task.validate(data.fens, data.moves)
    x, y = chess_task.encode(data.fens, data.moves)
    assert (y.sum(1) == 2).all()
    with pytest.raises(ValueError, match="allowed: train, test, all"):
        chess_task.load_lichess_csv(FIXTURE, band="easy")


def _break(tmp_path: Path, line: int, column: int, value: str) -> Path:
    lines = FIXTURE.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    bad = tmp_path / "puzzles.csv"
    bad.write_text("\n".join(lines) + "\n")
    return bad


@pytest.mark.parametrize("line, column, value, message", [
    (2, 1, "not a fen", "bad FEN"),
    (3, 2, "a1a2 e2e4", r"Moves\[0\] a1a2 is not legal"),
    (4, 2, "e1d2", "Moves 'e1d2' needs the opponent's move and the solution's first move"),
    (5, 2, "zz e2e4", r"Moves\[0\] 'zz' is not a UCI move"),
    (6, 3, "high", "Rating 'high' is not an integer"),
])
def test_lichess_bad_rows_name_file_and_line(tmp_path, line, column, value, message):
    bad = _break(tmp_path, line, column, value)
    with pytest.raises(ValueError, match=rf"puzzles\.csv:{line}: {message}"):
        chess_task.load_lichess_csv(bad)


def test_lichess_bad_header(tmp_path):
    bad = tmp_path / "header.csv"
    bad.write_text("Id,Position,Moves,Rating\n")
    with pytest.raises(ValueError, match=r"header\.csv:1: header lacks \['PuzzleId', 'FEN'\]"):
        chess_task.load_lichess_csv(bad)


def test_lichess_loader_rejects_an_illegal_position_with_file_and_line(tmp_path):
    bad = tmp_path / "illegal.csv"
    bad.write_text("PuzzleId,FEN,Moves,Rating\n"
                   "X1,rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNP w KQkq - 0 1,h1h2 e7e5,900\n")
    with pytest.raises(ValueError, match=r"illegal.csv:2: FEN .* is not a legal position"):
        chess_task.load_lichess_csv(bad)


@pytest.mark.parametrize("name, data", [("garbage.csv", bytes(range(256)) * 4),
                                        ("corrupt.csv.bz2", b"BZh91AY&SY" + b"\x00\xff" * 64)])
def test_lichess_loader_names_the_file_it_cannot_read(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{name}: cannot be read as UTF-8 CSV text"):
        chess_task.load_lichess_csv(path)
