"""`fpstab report RUNS [--out DIR] [--grid FILE | --no-grid]`: markdown and self-contained HTML from a results tree.

Reads only the run records under RUNS (a sweep's --out, or one run directory)
and writes DIR/index.md, DIR/index.html and DIR/figures/ (default DIR:
RUNS/report). See fpstab.reports.grid_report for what the report holds.

A sweep's --out holds grid.json, the grid it ran: the report then says how far
the grid has got, what is still to come, and analyses only the grid's runs.
`--grid FILE` reports against a grid file as it is now (a grid edited since the
last sweep); `--no-grid` reports every run directory as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpstab.grid import load_grid, text_digest
from fpstab.reports.run_files import GRID_FILE, GridPlan, grid_plan, load_grid_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab report`."""
    parser.add_argument("runs", type=Path, help="a results tree (one directory per run) or one run directory")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUNS/report)")
    parser.add_argument("--title", default=None, help="report title (default: 'fpstab report: NAME')")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default: 0)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--grid", type=Path, default=None,
                       help=f"the grid file the runs belong to (default: RUNS/{GRID_FILE}, written by fpstab sweep)")
    which.add_argument("--no-grid", action="store_true",
                       help=f"ignore RUNS/{GRID_FILE}: report every run directory, with no grid progress")


def grid_for(args: argparse.Namespace) -> GridPlan | None:
    """The grid the report follows: --grid, else RUNS/grid.json (with a warning when the grid file it
    names has changed since that sweep), else none."""
    if args.no_grid:
        return None
    if args.grid is not None:
        return grid_plan(load_grid(args.grid).to_dict(), args.grid)
    plan = load_grid_plan(args.runs) if args.runs.is_dir() else None
    source = Path(plan.source) if plan is not None and plan.source else None
    if plan is not None and source is not None and source.is_file() and text_digest(source.read_text()) != plan.digest:
        print(f"note: {args.runs / GRID_FILE} was written from an earlier version of {source}; the report follows "
              f"the grid the last sweep ran (pass --grid {source} for the grid as it is now)", file=sys.stderr)
    return plan


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab report`."""
    from fpstab.reports.grid_report import write_report

    out = args.out or args.runs / "report"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    md, page = write_report(args.runs, out, title=args.title, seed=args.seed, plan=grid_for(args))
    print(f"wrote {md} and {page}")
    return 0
