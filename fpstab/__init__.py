"""fpstab: fixed-point stability analysis for looped transformers.

The command line and orchestration layer. It composes the lower packages
`fpstab.architectures`, `fpstab.fixedpoint`, `fpstab.tasks` and
`fpstab.reports`; none of them imports this layer.

The lower packages live at the repository root, beside this folder, and an
install maps them into the fpstab namespace (setuptools package-dir). In a
source checkout run without installing (`python -m fpstab.cli` from the
root, a git worktree), the root joins this package's search path so the same
names resolve to the checkout's folders.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "architectures" / "__init__.py").is_file():
    __path__.append(str(_ROOT))
