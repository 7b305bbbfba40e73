"""`fpstab data`: make, reuse the cache, show, and one-line errors."""

from __future__ import annotations

from fpstab.cli import main


def test_make_then_reuse_then_show(tmp_path, capsys):
    args = ["data", "--task", "sudoku", "--level", "easy", "--n", "3", "--seed", "1",
            "--cache-dir", str(tmp_path), "--workers", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sudoku level easy: n 3, seed 1" in out and "per second" in out
    assert "train easy; test medium, hard, extreme" in out
    assert "inputs (3, 81, 10) float32, targets (3, 81) int64" in out and "clues: min" in out
    assert str(tmp_path / "sudoku") in out
    assert main(args) == 0
    assert "read from cache" in capsys.readouterr().out
    assert main(["data", "show", "--task", "sudoku", "--level", "easy", "--seed", "1", "--index", "2",
                 "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sudoku easy #2 (seed 1)") and "solution" in out and "------+-------+------" in out


def test_show_chess_and_prefix_sum(tmp_path, capsys):
    assert main(["data", "show", "--task", "chess", "--level", "mate1", "--seed", "0",
                 "--cache-dir", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "mate in 1" in out and "FEN:" in out and "move:" in out
    assert main(["data", "--task", "prefix_sum", "--n", "4"]) == 0  # default level: the train level
    out = capsys.readouterr().out
    assert "prefix_sum level 32" in out and "attention window 5" in out and "not cached" in out


def test_bad_input_is_a_one_line_error(capsys):
    assert main(["data", "--task", "sudoku", "--level", "impossible"]) == 2
    err = capsys.readouterr().err
    assert "unknown sudoku level 'impossible'; allowed: easy, medium, hard, extreme, fiendish, diabolical" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["data", "--task", "prefix_sum", "--prefilter", "stockfish"]) == 2
    assert "chess task only" in capsys.readouterr().err
    assert main(["data", "--task", "chess", "--n", "0"]) == 2
    assert "n must be >= 1" in capsys.readouterr().err
