"""Output-file options (--json, --out FILE): checked before the work whose result they receive,
so a typo in a path costs a second, not a finished probe or evaluation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_output_file(path: Path, option: str) -> Path:
    """`path` if a file can be written there atomically; else ValueError naming the option.

    Refused: an existing folder or other non-regular file (a device, a pipe) at
    `path`, a parent folder that does not exist or is no folder, and a folder
    where no file can be created. The last is tried for real (a temporary file,
    removed at once): permission bits say nothing for root or on read-only mounts.
    """
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file path inside it")
    if path.exists() and not path.is_file():
        raise ValueError(f"{option} {path}: exists and is not a regular file")
    folder = path.parent
    if not folder.exists():
        raise ValueError(f"{option} {path}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=folder)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in {folder} ({err.strerror})") from None
    os.close(fd)
    os.unlink(tmp)
    return path
