"""`fpstab report RUNS [--out DIR]`: markdown and self-contained HTML from a results tree.

Reads only the run records under RUNS (a sweep's --out, or one run directory)
and writes DIR/index.md, DIR/index.html and DIR/figures/ (default DIR:
RUNS/report). See fpstab.reports.grid_report for what the report holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab report`."""
    parser.add_argument("runs", type=Path, help="a results tree (one directory per run) or one run directory")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUNS/report)")
    parser.add_argument("--title", default=None, help="report title (default: 'fpstab report: NAME')")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default: 0)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab report`."""
    from fpstab.reports.grid_report import write_report

    out = args.out or args.runs / "report"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    md, page = write_report(args.runs, out, title=args.title, seed=args.seed)
    print(f"wrote {md} and {page}")
    return 0
