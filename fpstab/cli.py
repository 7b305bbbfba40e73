"""The `fpstab` console script: one subcommand per module, imported lazily.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
Lazy import keeps `fpstab --help` fast and keeps one broken subcommand from
taking the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from fpstab import __version__
from fpstab.cpu_allocator import tune_malloc

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("fpstab.probe_command", "probe a looped core on the three stability axes"),
    "train": ("fpstab.train_command", "train a looped core on a task"),
    "eval": ("fpstab.evaluate", "evaluate a trained run across iterations and ladder levels"),
    "data": ("fpstab.data_command", "generate, cache and show task data"),
    "sweep": ("fpstab.sweep", "train, evaluate and probe every run of a grid file (resumable)"),
    "report": ("fpstab.report", "markdown and HTML report of a results tree: accuracy, probes, correlations"),
}

TENSOR_COMMANDS = ("probe", "train", "eval")  # the ones whose loops allocate large CPU tensors


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors (unknown flag, bad choice, unparsable number) are one line
    naming the command, as the commands' own input errors are, instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="fpstab",
        description="Fixed-point stability analysis for looped transformers.",
    )
    parser.add_argument("--version", action="version", version=f"fpstab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; --help lists them all.
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in TENSOR_COMMANDS:
        tune_malloc()  # process-wide, so here rather than in the library (fpstab.cpu_allocator)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:
        # the reader went away (`fpstab ... | head`): stop quietly, as command-line tools do
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError) as err:
        # Bad input the user can act on: one line, no traceback.
        print(f"fpstab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
