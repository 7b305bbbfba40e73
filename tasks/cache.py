"""On-disk cache of generated sets: one .npz file per (task, level, n, seed, version).

Files live in <cache_dir>/<task>/ where cache_dir is the argument, else
$FPSTAB_CACHE, else ~/.cache/fpstab. Every array in a file has the set's n
as its first dimension; the key and the generation time are kept in a JSON
string under "__meta__". Instance i of a set depends only on (seed, level, i),
so a cached larger set with the same key serves a smaller request by slicing.
Writes are atomic (`atomic_write_bytes`: temporary file in the same folder,
fsync, os.replace, fsync of the folder), so a killed run never leaves a
half-written file under the final name; a truncated or corrupt file found
anyway is rebuilt with a warning.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

META = "__meta__"


@dataclass(frozen=True)
class CacheKey:
    """What a cached set depends on. variant: extra generator options ('' = defaults)."""

    task: str
    level: str
    n: int
    seed: int
    version: int
    variant: str = ""

    def stem(self) -> str:
        """File name without the n part: sets differing only in n share it."""
        tag = f"-{self.variant}" if self.variant else ""
        return f"{self.task}-{self.level}-seed{self.seed}-v{self.version}{tag}"

    def filename(self) -> str:
        return f"{self.stem()}-n{self.n}.npz"


def default_cache_dir() -> Path:
    """$FPSTAB_CACHE if set, else ~/.cache/fpstab."""
    env = os.environ.get("FPSTAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fpstab"


def cache_path(key: CacheKey, cache_dir: str | Path | None = None) -> Path:
    """Where the set for `key` is (or would be) stored."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / key.task / key.filename()


def _read(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half.

    A temporary file in the same folder is written, flushed and fsynced, renamed over `path`
    (os.replace), and the folder is fsynced so the rename itself survives a power loss. The file
    gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles: the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """Save `arrays` as .npz at `path` atomically (see atomic_write_bytes)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def larger_cached(key: CacheKey, folder: Path) -> Path | None:
    """The smallest cached set in `folder` (a task's cache folder) with the same stem and n >= key.n, if any."""
    if not folder.is_dir():
        return None
    pattern = re.compile(re.escape(key.stem()) + r"-n(\d+)\.npz$")
    found = []
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) >= key.n:
            found.append((int(m.group(1)), p))
    return min(found)[1] if found else None


def load_or_build(
    key: CacheKey,
    build: Callable[[], dict[str, Any]],
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, Any], Path, bool]:
    """The arrays for `key`: read from the cache, or built, saved and returned.

    build() returns per-instance arrays (first dimension key.n).
    Returns (arrays without the meta entry, path of the file for `key`,
    True if read from the cache). An unreadable cache file is rebuilt with a warning.
    """
    path = cache_path(key, cache_dir)
    source = path if path.exists() else larger_cached(key, path.parent)
    if source is not None:
        try:
            arrays = _read(source)
            arrays.pop(META, None)
            if all(len(v) >= key.n for v in arrays.values()):
                return {k: v[: key.n] for k, v in arrays.items()}, source, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            # a truncated or corrupt file (a killed copy, a full disk) is rebuilt, not trusted
            warnings.warn(f"cache file {source} is unreadable ({type(err).__name__}: {err}); regenerating",
                          stacklevel=2)
    t0 = time.perf_counter()
    arrays = build()
    bad = {k: len(v) for k, v in arrays.items() if len(v) != key.n}
    if bad:
        raise RuntimeError(f"generator for {key} returned arrays of the wrong length: {bad}")
    meta = dict(asdict(key), seconds=round(time.perf_counter() - t0, 3),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_atomic(path, {**arrays, META: np.array(json.dumps(meta))})
    return arrays, path, False


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON meta entry of a cache file (key, generation seconds, creation time)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z[META])) if META in z.files else {}
