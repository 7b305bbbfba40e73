"""Chess positions as tensors, and the rule that scores a predicted first move.

Encoding version 2 (version 1: 12 piece planes, 2 target classes, no
castling, en passant or promotion piece). 64 tokens, one per square in
board-printing order (token (7 - rank) * 8 + file: a8 first, h1 last),
15 planes (in_dim 15):

- 0-5: the side to move's P, N, B, R, Q, K; 6-11: the opponent's;
- 12: the side to move's rooks that may still castle; 13: the opponent's
  (a castling right lives on its rook's square, so it follows the board
  through the flips below);
- 14: the en passant target square, when an en passant capture is legal
  (as a FEN writes it).

The board is canonicalized as in the paper's code: mirrored (ranks flipped,
colours swapped) when black is to move, then flipped left-right when the
side to move's king stands on files a-d, so the side to move plays up the
board with its king on files e-h.

Targets (out_dim 6), per square: 0 elsewhere; 1 on the first move's
from-square and on its to-square; 2, 3, 4, 5 instead of 1 on the to-square
of a promotion to a knight, bishop, rook, queen. A square's move score is
logsumexp(logits[1:]) - logits[0]; a prediction is the two squares with the
largest score, plus the promotion piece of the largest of logits[2:6] vs
logits[1] on the to-square. It is correct when it is one of the accepted
answers: by default the target move, and every winning first move when the
task knows them (`answer_table`). The loss is the unweighted mean per-square
cross-entropy (2 positive squares of 64), as the paper's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import chess
import numpy as np
import torch

ENCODING_VERSION = 2
N_PLANES = 15
N_CLASSES = 6
CASTLING_PLANE = 12  # + 0 own, + 1 opponent's
EP_PLANE = 14
MOVE_CLASS = 1
# promotion piece -> target class of the to-square
PROMOTION_CLASS = {chess.KNIGHT: 2, chess.BISHOP: 3, chess.ROOK: 4, chess.QUEEN: 5}


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


def _legal_ep_square(board: chess.Board) -> int | None:
    return board.ep_square if board.ep_square is not None and board.has_legal_en_passant() else None


def encode_board(board: chess.Board) -> np.ndarray:
    """Planes float32 (64, 15) of the canonical board (see the module doc)."""
    mask = canonical_transform(board)
    planes = np.zeros((64, N_PLANES), dtype=np.float32)
    for square, piece in board.piece_map().items():
        plane = piece.piece_type - 1 + (0 if piece.color == board.turn else 6)
        planes[token(square ^ mask), plane] = 1.0
    for square in chess.scan_forward(board.castling_rights):
        own = bool(board.occupied_co[board.turn] & chess.BB_SQUARES[square])
        planes[token(square ^ mask), CASTLING_PLANE + (0 if own else 1)] = 1.0
    ep = _legal_ep_square(board)
    if ep is not None:
        planes[token(ep ^ mask), EP_PLANE] = 1.0
    return planes


def move_answer(board: chess.Board, move: chess.Move) -> tuple[int, int, int]:
    """(from token, to token, class of the to-square) of `move` on the canonical board."""
    mask = canonical_transform(board)
    to_class = PROMOTION_CLASS[move.promotion] if move.promotion else MOVE_CLASS
    return token(move.from_square ^ mask), token(move.to_square ^ mask), to_class


def encode_position(fen: str, uci: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Planes float32 (64, 15) of the canonical board and the move's (from, to, to-class)."""
    board = chess.Board(fen)
    return encode_board(board), move_answer(board, chess.Move.from_uci(uci))


def encode(fens: Sequence[str], moves: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """fens, moves (UCI) -> inputs float32 (n, 64, 15), targets int64 (n, 64): 1 on the
    canonical from-square, 1 (or 2-5 for a promotion) on the to-square, 0 elsewhere."""
    inputs = np.zeros((len(fens), 64, N_PLANES), dtype=np.float32)
    targets = np.zeros((len(fens), 64), dtype=np.int64)
    for k, (fen, uci) in enumerate(zip(fens, moves)):
        inputs[k], (f, t, c) = encode_position(fen, uci)
        targets[k, f], targets[k, t] = MOVE_CLASS, c
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def answer_table(fens: Sequence[str], answers: Sequence[Sequence[str]]) -> torch.Tensor:
    """The accepted first moves of each position as int64 (n, k, 3): rows (from token,
    to token, to-square class) on the canonical board, k the most answers of any
    position, unused rows -1."""
    k = max((len(a) for a in answers), default=1)
    table = np.full((len(fens), max(k, 1), 3), -1, dtype=np.int64)
    for i, (fen, moves) in enumerate(zip(fens, answers)):
        board = chess.Board(fen)
        for j, uci in enumerate(moves):
            table[i, j] = move_answer(board, chess.Move.from_uci(uci))
    return torch.from_numpy(table)


def encoding_key(fen: str) -> str:
    """Positions that encode identically share this key."""
    planes = encode_board(chess.Board(fen))
    return np.packbits(planes.astype(bool)).tobytes().hex()


def _answers_from_targets(targets: torch.Tensor) -> torch.Tensor:
    """targets (B, 64) with two positive squares -> answers (B, 1, 3) of the target move."""
    squares = torch.argsort((targets > 0).to(torch.int8), dim=-1, descending=True, stable=True)[:, :2]
    classes = targets.gather(-1, squares)
    to_first = classes[:, 0] >= classes[:, 1]  # the to-square holds the larger class (equal: either)
    to_sq = torch.where(to_first, squares[:, 0], squares[:, 1])
    from_sq = torch.where(to_first, squares[:, 1], squares[:, 0])
    return torch.stack([from_sq, to_sq, classes.max(-1).values], -1)[:, None, :]


def move_scores(logits: torch.Tensor) -> torch.Tensor:
    """logits (B, 64, C) -> (B, 64): how strongly each square is part of the move."""
    return logits[..., 1:].logsumexp(-1) - logits[..., 0]


def move_correct(logits: torch.Tensor, targets: torch.Tensor, answers: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """logits (B, 64, C), targets (B, 64), answers (B, k, 3) or None (the target move only)
    -> bool (B,): the top-2 squares by `move_scores` are the from- and to-square of an
    answer, and for a promotion the to-square's largest non-zero class is its piece."""
    if answers is None:
        answers = _answers_from_targets(targets)
    top2 = move_scores(logits).topk(2, dim=-1).indices.sort(-1).values  # (B, 2)
    predicted_class = logits[..., 1:].argmax(-1) + 1  # (B, 64)
    f, t, c = answers.unbind(-1)  # (B, k) each
    pair = torch.stack([torch.minimum(f, t), torch.maximum(f, t)], -1)
    pair_ok = (pair == top2[:, None, :]).all(-1)
    class_ok = (c <= MOVE_CLASS) | (predicted_class.gather(-1, t.clamp(min=0)) == c)
    return (pair_ok & class_ok & (f >= 0)).any(-1)


__all__ = ["ENCODING_VERSION", "N_CLASSES", "N_PLANES", "PROMOTION_CLASS", "answer_table", "canonical_transform",
           "encode", "encode_board", "encode_position", "encoding_key", "move_answer", "move_correct",
           "move_scores", "token"]
