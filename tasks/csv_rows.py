"""Rows of a CSV file for the loaders, with every read failure reported as a ValueError naming the file."""

from __future__ import annotations

import csv
from collections.abc import Iterator
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
