"""Chess: exact mate search, generated ladder, canonical encoding, top-2 rule, Lichess loader."""

from __future__ import annotations

import random
from pathlib import Path

import chess
import pytest
import torch

from fpstab.tasks import chess as chess_task
from fpstab.tasks import chess_games, lichess
from fpstab.tasks.mate_search import MateSearch, checking_moves, mates_in_one, shortest_mate, unique_mate

FIXTURE = Path(__file__).parent / "fixtures" / "tasks" / "lichess_puzzles_small.csv"
BACK_RANK = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"       # Ra8#, the only mate
FOUR_MATES = "7k/5Q2/6K1/8/8/8/8/8 w - - 0 1"         # Qf8#, Qe8#, Qh7#, Qg7#
STALEMATED = "k7/8/1QK5/8/8/8/8/8 b - - 0 1"
CASTLING = "r3k2r/pppq1ppp/8/8/8/8/PPPQ1PPP/R3K2R w KQk - 0 1"
EN_PASSANT = "4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 2"
PROMOTION = "r5k1/1P6/8/8/8/8/6PP/6K1 w - - 0 1"
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


@pytest.mark.parametrize("level, n", [("game1", 3), ("game2", 1)])
def test_game_levels_come_from_games_and_record_every_right_move(level, n):
    data = chess_task.generate(n, level, seed=3, workers=1)
    mate_in = int(level[-1])
    assert (data.mate_in == mate_in).all() and (data.pieces >= chess_games.MIN_PIECES).all()
    chess_task.validate(data.fens, data.moves, data.mate_in, answers=data.answers)  # answers = exact search's
    for fen, move, answers in zip(data.fens, data.moves, data.answers):
        board = chess.Board(fen)
        if mate_in == 1:  # every mate counts; the reference search finds the same set
            assert answers[0] == move and sorted(answers) == sorted(ref_mating_first_moves(board, 1))
        else:
            assert answers == (move,)  # the search proved the first move unique
        assert board.gives_check(chess.Move.from_uci(move))
    again = chess_task.generate(n, level, seed=3, workers=2)
    assert (again.fens, again.answers) == (data.fens, data.answers)


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
    assert x.shape == (1, 64, 15) and y.shape == (1, 64)
    # white to move, king on g1: no transform; tokens in printing order (a8 = 0, h1 = 63)
    assert y[0].nonzero().flatten().tolist() == [0, 56] and y[0, [0, 56]].tolist() == [1, 1]
    assert x[0, 56, 3] == 1 and x[0, 62, 5] == 1  # own rook a1, own king g1
    assert x[0, 6, 11] == 1  # opponent king g8
    assert x[0].sum() == 6  # no castling rights, no en passant


def test_castling_rights_and_en_passant_planes():
    x, _ = chess_task.encode([CASTLING], ["e1g1"])
    # white to move, king on e1: no transform; own castling rooks a1 (token 56) and h1 (63),
    # the opponent's h8 (7) only (black kept kingside castling)
    assert x[0, :, 12].nonzero().flatten().tolist() == [56, 63]
    assert x[0, :, 13].nonzero().flatten().tolist() == [7]
    assert x[0, :, 14].sum() == 0
    mirrored = chess.Board(CASTLING).mirror()  # black to move, colours swapped: same canonical board
    assert torch.equal(chess_task.encode([mirrored.fen()], ["e8g8"])[0], x)
    ep, _ = chess_task.encode([EN_PASSANT], ["e5d6"])
    assert ep[0, :, 14].nonzero().flatten().tolist() == [2 * 8 + 3]  # d6 (token (7 - 5) * 8 + 3)
    no_capture = chess.Board(EN_PASSANT)
    no_capture.remove_piece_at(chess.E5)  # the double push stays, but no pawn can take: no plane
    assert chess_task.encode([no_capture.fen(en_passant="fen")], ["e1e2"])[0][0, :, 14].sum() == 0


def test_promotion_piece_is_in_the_target():
    _, y = chess_task.encode([PROMOTION] * 3, ["b7b8q", "b7b8n", "b7a8r"])
    # white to move, king g1: no transform; b7 = token 9, b8 = 1, a8 = 0
    assert (y[0, 9], y[0, 1]) == (1, 5) and (y[1, 9], y[1, 1]) == (1, 2) and (y[2, 9], y[2, 0]) == (1, 4)
    assert (y > 0).sum(1).tolist() == [2, 2, 2]


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


def _logits_for(squares: list[int], promote: int | None = None) -> torch.Tensor:
    logits = torch.zeros(64, 6)
    logits[squares, 1] = 5.0
    if promote is not None:
        logits[squares[-1], promote] = 9.0
    return logits


def test_top2_rule():
    task = chess_task.ChessTask()
    targets = torch.zeros(3, 64, dtype=torch.long)
    targets[:, [12, 28]] = 1
    logits = torch.zeros(3, 64, 6)
    logits[0, [12, 28], 1] = 5.0           # exactly the pair
    logits[1, [12, 29], 1] = 5.0           # one right, one wrong
    logits[2, [12, 28, 40], 1] = torch.tensor([1.0, 2.0, 3.0])  # the pair, but square 40 outranks 12
    assert task.correct(logits, targets).tolist() == [True, False, False]
    m = task.metrics(logits, targets)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["square_recall"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert 0 < m["token_acc"] <= 1 and torch.isfinite(task.loss(logits, targets))


def test_any_recorded_answer_counts_and_the_promotion_piece_must_match():
    task = chess_task.ChessTask()
    targets = torch.zeros(4, 64, dtype=torch.long)
    targets[:, 12], targets[:, 4] = 1, 5  # the listed move: 12 -> 4 promoting to a queen
    answers = torch.full((4, 3, 3), -1)
    answers[:, 0] = torch.tensor([12, 4, 5])   # the listed move
    answers[:, 1] = torch.tensor([12, 4, 4])   # promoting to a rook mates too
    answers[:, 2] = torch.tensor([30, 22, 1])  # and another piece's move
    logits = torch.stack([_logits_for([12, 4], promote=4),   # the rook promotion
                          _logits_for([30, 22]),               # the other mate
                          _logits_for([12, 4], promote=3),     # a bishop promotion: not a mate
                          _logits_for([30, 23])])              # not an answer
    assert task.correct(logits, targets, answers).tolist() == [True, True, False, False]
    assert task.correct(logits, targets).tolist() == [False, False, False, False]  # the listed move only
    assert task.metrics(logits, targets, answers)["exact_match"] == pytest.approx(0.5)


def test_answers_ride_along_in_batches_and_composite_levels(tmp_path):
    task = chess_task.ChessTask()
    batch = task.make("mate1+mate2", 4, seed=7, cache_dir=tmp_path)
    assert batch.answers is not None and batch.answers.shape == (4, 1, 3)
    logits = torch.zeros(4, 64, 6).scatter_(-1, batch.targets[..., None], 9.0)  # predicts the targets
    assert task.correct(logits, batch.targets, batch.answers).all()
    data, _ = task.generate_set("mate1", 2, seed=7, cache_dir=tmp_path)
    assert data.answers == tuple((m,) for m in data.moves)  # generated mates: the unique winning move
    chess_task.validate(data.fens, data.moves, 1, answers=data.answers)


# --- Lichess CSV -----------------------------------------------------------------------

def test_lichess_loader_applies_the_opponent_move_and_bands():
    data = chess_task.load_lichess_csv(FIXTURE)
    assert len(data) == 13 and data.ids[0] == "SYN01"
    board = chess.Board(data.fens[0])  # after 3...Nf6??
    assert board.turn == chess.WHITE and data.moves[0] == "h5f7"
    board.push_uci(data.moves[0])
    assert board.is_checkmate()
    assert data.moves[-1] == "a2e6" and data.ratings[-1] == 1760 and data.mate_in[-1] == 2
    train = chess_task.load_lichess_csv(FIXTURE, band="train")
    assert train.ratings.tolist() == [600, 1200, 1600, 1300, 1450, 1550, 1580]
    test = chess_task.load_lichess_csv(FIXTURE, band="test")
    assert sorted(test.ratings.tolist()) == [1601, 1750, 1760, 2000]
    assert len(chess_task.load_lichess_csv(FIXTURE, min_rating=2001, limit=1)) == 1
    chess_task.validate(data.fens, data.moves)
    x, y = chess_task.encode(data.fens, data.moves)
    assert ((y > 0).sum(1) == 2).all()
    with pytest.raises(ValueError, match="allowed: train, test, all"):
        chess_task.load_lichess_csv(FIXTURE, band="easy")


def test_lichess_rows_of_every_kind():
    data = lichess.load_lichess_csv(FIXTURE, themes="mateIn1")
    assert data.ids == ("SYN01", "SYN09", "SYN10", "SYN11", "SYN12") and (data.mate_in == 1).all()
    by_id = dict(zip(data.ids, range(len(data))))
    castle, ep, promo, black = (by_id[k] for k in ("SYN09", "SYN10", "SYN11", "SYN12"))
    assert data.answers[castle] == ("e1g1", "h1f1")  # the listed mate first, then every other mate
    assert data.answers[promo] == ("g7g8q", "g7g8r") and data.answers[ep] == ("e5d6",)
    assert chess.Board(data.fens[black]).turn == chess.BLACK
    chess_task.validate(data.fens, data.moves, 1, answers=data.answers)  # answers = all mates, by search
    x, y = chess_task.encode(data.fens, data.moves)
    assert x[castle, :, 12].sum() == 1 and x[castle, :, 13].sum() == 0  # white may castle short
    assert x[ep, :, 14].sum() == 1 and x[[castle, promo, black], :, 14].sum() == 0
    assert y[promo].max() == 5 and y[[castle, ep, black]].max() == 1  # queen promotion class
    task = chess_task.ChessTask()
    answers = task.answers_of(data)
    assert answers.shape == (5, 2, 3) and (answers[:, 1, 0] >= 0).tolist() == [False, True, False, True, False]
    rook = torch.zeros(5, 64, 6).scatter_(-1, y[..., None], 9.0)
    f, t, _ = answers[promo, 1].tolist()
    rook[promo, t] = 0.0
    rook[promo, t, 4] = 9.0  # predicts g8=R: a mate, but not the listed move
    assert task.correct(rook, y, answers).all() and not task.correct(rook, y)[promo]


def test_lichess_theme_filter_and_ladders():
    assert lichess.lichess_ladder("theme").levels == ("mateIn1", "mateIn2", "mateIn3", "mateIn4", "mateIn5")
    rating = lichess.lichess_ladder("rating")
    assert rating.train == "r0-1600" and rating.test[0] == "r1601-2000"
    assert lichess.load_lichess_level(FIXTURE, "theme", "mateIn2").ids == ("00sHx",)
    assert lichess.load_lichess_level(FIXTURE, "rating", "r2001-2400").ratings.tolist() == [2001, 2400]
    assert lichess.load_lichess_csv(FIXTURE, themes=["mate", "promotion"]).ids == ("SYN11",)
    with pytest.raises(ValueError, match=r"no puzzles .* themes \['mateIn3'\] \(most common themes read: synthetic, mate,"):
        lichess.load_lichess_csv(FIXTURE, themes="mateIn3")
    with pytest.raises(ValueError, match="are not Lichess theme names"):
        lichess.load_lichess_csv(FIXTURE, themes="mate in 1")
    with pytest.raises(ValueError, match="unknown level 'mateIn9' of the Lichess theme ladder; allowed: mateIn1"):
        lichess.load_lichess_level(FIXTURE, "theme", "mateIn9")
    with pytest.raises(ValueError, match="unknown Lichess ladder 'popularity'; allowed: theme, rating"):
        lichess.lichess_ladder("popularity")


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
    (3, 7, "mateIn2", "theme mateIn2, but the line does not end in checkmate"),
    (2, 7, "mate mateIn2", "theme mateIn2 needs 4 moves in Moves .* got 2"),
    (7, 7, "mate-in-1", "Themes holds 'mate-in-1'"),
    (5, 2, "f5g4 a1a2 d5c4 d1h5", r"Moves\[3\] d1h5 is not legal"),
])
def test_lichess_bad_rows_name_file_and_line(tmp_path, line, column, value, message):
    bad = _break(tmp_path, line, column, value)
    with pytest.raises(ValueError, match=rf"puzzles\.csv:{line}: {message}"):
        chess_task.load_lichess_csv(bad)
    with pytest.raises(ValueError, match=rf"puzzles\.csv:{line}: {message}"):  # also when the row is filtered out
        chess_task.load_lichess_csv(bad, min_rating=3000)


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


REAL_FIXTURE = Path(__file__).parent / "fixtures" / "tasks" / "lichess_puzzles_real.csv"


def test_real_lichess_rows_load_encode_and_prove():
    """Rows of the real database (CC0): black and white solvers, a queen promotion,
    castling rights in non-mate rows; each mateInN line is a forced mate by exact search."""
    data = lichess.load_lichess_csv(REAL_FIXTURE)
    by_id = dict(zip(data.ids, range(len(data))))
    assert data.mate_in.tolist() == [1, 1, 1, 2, 2, 3, 0, 0]
    black = [i for i, fen in enumerate(data.fens) if chess.Board(fen).turn == chess.BLACK]
    assert [data.ids[i] for i in black] == ["00ohT", "00fgg", "00kRi"]
    mates = [i for i in range(len(data)) if data.mate_in[i]]
    chess_task.validate([data.fens[i] for i in mates], [data.moves[i] for i in mates],
                        [int(data.mate_in[i]) for i in mates])
    x, y = chess_task.encode(data.fens, data.moves)
    promo, castle_b, castle_w = by_id["03SLJ"], by_id["00kRi"], by_id["00Rlv"]
    assert data.answers[promo] == ("h7h8q",) and y[promo].max() == 5  # only the queen mates
    # 00kRi: black to move with k (own) and Q (opponent's); 00Rlv: white to move, black keeps k
    assert x[castle_b, :, 12].sum() == 1 and x[castle_b, :, 13].sum() == 1
    assert x[castle_w, :, 12].sum() == 0 and x[castle_w, :, 13].sum() == 1
    assert x[[i for i in range(len(data)) if i not in (castle_b, castle_w)], :, 12:14].sum() == 0
    assert x[:, :, 14].sum() == 0  # no en passant square in these rows
    themed = lichess.load_lichess_csv(REAL_FIXTURE, themes="mateIn2")
    assert themed.ids == ("00fgg", "00sHx")
