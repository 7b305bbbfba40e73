"""Rows of a CSV file for the loaders, with every read failure reported as a ValueError naming the file."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO


def csv_rows(f: TextIO, path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row of an open text file. Bytes that are not UTF-8 or a corrupt
    or truncated compressed stream raise ValueError("PATH: ..."), a malformed CSV "PATH:LINE: ..."."""
    reader = csv.reader(f)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
        except (UnicodeDecodeError, OSError, EOFError) as err:
            # text is decoded in blocks, so the failing line is not known: name the file and the cause
            raise ValueError(f"{path}: cannot be read as UTF-8 CSV text ({type(err).__name__}: {err}); "
                             "is it the right file, and not a corrupt or truncated download?") from None
        yield reader.line_num, row


def csv_header(rows: Iterator[tuple[int, list[str]]], path: str | Path, required: Sequence[str],
               fold_case: bool = False) -> tuple[list[str], dict[str, int]]:
    """Take the header, the first row of `rows` (from `csv_rows`), and the index of each required column
    in it (names stripped and lower-cased first when fold_case). ValueError "PATH: empty file" or
    "PATH:1: header lacks [...]" naming the missing columns."""
    _, header = next(rows, (0, None))
    if header is None:
        raise ValueError(f"{path}: empty file; expected a header with the columns {','.join(required)}")
    names = [h.strip().lower() for h in header] if fold_case else header
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{path}:1: header lacks {missing}; expected the columns {','.join(required)}")
    return header, {c: names.index(c) for c in required}
