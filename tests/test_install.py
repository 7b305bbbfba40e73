"""fpstab as a user installs it: every package folder is in the wheel, and the wheel, installed
into a fresh virtual environment, runs from a folder whose own tasks.py and reports.py must not
shadow fpstab's (nor fpstab's them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]

# Run from the scratch folder: fpstab must come from the install, `tasks` and `reports` from here.
IMPORT_CHECK = """
import json, sys
import fpstab, fpstab.architectures, fpstab.fixedpoint, fpstab.reports, fpstab.tasks
import tasks, reports
from fpstab.tasks import get_task
get_task("sudoku").make("easy", 2, seed=0)
mods = (fpstab, fpstab.architectures, fpstab.fixedpoint, fpstab.reports, fpstab.tasks, tasks, reports)
print(json.dumps({m.__name__: m.__file__ for m in mods}))
"""
TINY_PROBE = ["probe", "--arch", "internal_recall", "--norm", "outer", "--samples", "2", "--iters", "30",
              "--solver-iters", "5", "--grad-steps", "5", "--krylov-steps", "4", "--krylov-restarts", "1",
              "--gmres-steps", "4", "--gmres-restarts", "1", "--inverse-steps", "2"]


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    # A subpackage missing from [tool.setuptools] packages installs without its files:
    # the editable checkout still works, the wheel fails at import.
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found == listed
    assert (ROOT / "fpstab" / "py.typed").is_file() and "py.typed" in SETUPTOOLS["package-data"]["fpstab"]


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _source_copy(dest: Path) -> Path:
    """What the wheel is built from, copied so the build leaves no build/ or egg-info in the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for folder in set(SETUPTOOLS["package-dir"].values()):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_from_a_folder_with_its_own_tasks_py(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "source")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                  str(source)], tmp_path)
    if built.returncode != 0:
        pytest.skip(f"pip could not build the wheel (it fetches setuptools>=61 for the build): "
                    f"{built.stderr.strip().splitlines()[-1:]}")
    (wheel,) = (tmp_path / "dist").glob("fpstab-*.whl")
    venv = tmp_path / "venv"
    # The dependencies (torch, ...) are this interpreter's: a new torch is a multi-GB download.
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    if made.returncode != 0:
        pytest.skip(f"python -m venv failed (no ensurepip?): {made.stderr.strip().splitlines()[-1:]}")
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path)
    if installed.returncode != 0:
        pytest.skip(f"pip could not install the wheel's dependencies: {installed.stderr.strip().splitlines()[-1:]}")

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "tasks.py").write_text("WHO = 'scratch'\n")
    (scratch / "reports.py").write_text("WHO = 'scratch'\n")
    imported = _run([str(python), "-c", IMPORT_CHECK], scratch)
    assert imported.returncode == 0, imported.stderr
    files = json.loads(imported.stdout)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     scratch).stdout.strip())
    for name in ("fpstab", "fpstab.architectures", "fpstab.fixedpoint", "fpstab.reports", "fpstab.tasks"):
        assert Path(files[name]).is_relative_to(site / "fpstab"), (name, files[name])
    assert Path(files["tasks"]) == scratch / "tasks.py" and Path(files["reports"]) == scratch / "reports.py"
    assert (site / "fpstab" / "py.typed").is_file()

    probed = _run([str(venv / "bin" / "fpstab"), *TINY_PROBE, "--json", "probe.json"], scratch)
    assert probed.returncode == 0, probed.stderr
    assert "1. Reachability" in probed.stdout
    assert json.loads((scratch / "probe.json").read_text())["schema"] == "fpstab.probe/2"
    refused = _run([str(venv / "bin" / "fpstab"), "probe", "--device", "foo"], scratch)
    assert refused.returncode == 2 and "--device 'foo': allowed" in refused.stderr
