"""The ``fastgd`` command (also ``python -m fastgd``).

Subcommands live in one table, :data:`COMMANDS`, one module each (``playground``,
``train``, ``predict``, ``evaluate``, ``info``, ``cache``): each module's ``COMMAND`` is a
:class:`Command` with a help line, a description with examples, a function that adds its
arguments, and a function that runs it and returns the exit status. Adding a subcommand
means adding a module and one entry.

Exit status: 0 success; 2 bad usage (unknown flags, malformed values, flags that break a
rule together, an output that is one of the inputs: ``fastgd: error: <message> (see 'fastgd
COMMAND --help')``); 1 a data or training error (an unreadable or damaged file, a missing column,
invalid training options), reported on stderr in one line as ``fastgd: error: ...``, or an
unexpected one, ``fastgd: internal error: ...`` (``--debug`` prints its traceback); 130
Ctrl-C (``fastgd: interrupted.``). Before any work, each command checks that no output is
one of its inputs and that the outputs' directories exist; inputs that are not regular
files (``-`` for stdin, a FIFO, ``<(...)``) are read once into a temporary copy.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import cache, evaluate, info, playground, predict, train
from ._command import Command, CommandError
from ._errors import interruptible, one_line_warnings, report
from ._paths import Session, prepare_files
from .progress import ProgressBar, render_progress

__all__ = [
    "COMMANDS",
    "Command",
    "CommandError",
    "ProgressBar",
    "build_parser",
    "main",
    "render_progress",
]

COMMANDS: dict[str, Command] = {
    "playground": playground.COMMAND,
    "train": train.COMMAND,
    "predict": predict.COMMAND,
    "evaluate": evaluate.COMMAND,
    "info": info.COMMAND,
    "cache": cache.COMMAND,
}

_DEBUG_HELP = "print the traceback of an unexpected error"

_EPILOG = """\
examples:
  fastgd train data.csv --target y --model model.npz
  fastgd evaluate model.npz test.csv
  fastgd predict model.npz new.csv -o pred.csv
  fastgd info model.npz
  fastgd cache clear data.csv
  fastgd playground data.csv --target y --out report.html

'fastgd COMMAND --help' describes each command."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, like every other error, instead
    of a usage block (``--help`` shows that): ``fastgd: error: <message> (see 'fastgd
    train --help')``, exit 2."""

    def error(self, message: str):
        print(f"fastgd: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastgd",
        description="fastgd: fast, trustworthy gradient descent for linear models.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastgd {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
        # after the command too; SUPPRESS keeps a --debug given before it
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        sub.set_defaults(_command=command, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastgd`` command; return its exit status (0, 1, 2, or 130 for Ctrl-C)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the subcommand's parser, so the hint is its --help
            args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2)
        return int(exit_.code or 0)
    with Session() as session, interruptible(), one_line_warnings(session, args._parser):
        args._session = session
        try:
            prepare_files(args, session)
            return args._command.run(args)
        except (Exception, KeyboardInterrupt) as error:
            return report(error, args, session)
