"""The ``fastgd`` command (also ``python -m fastgd``).

Subcommands live in one table, :data:`COMMANDS`: each is a :class:`Command` with a help
line, a description with examples, a function that adds its arguments, and a function that
runs it and returns the exit status. Adding a subcommand means adding one entry.

Exit status: 0 success; 2 bad usage (unknown flags, malformed values: argparse's own
convention); 1 a data or training error (an unreadable CSV, a missing column, invalid
training options), reported on stderr as ``fastgd: error: ...``.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, options

__all__ = ["COMMANDS", "Command", "CommandError", "main", "read_csv"]


class CommandError(Exception):
    """A data or training error: reported on stderr, exit status 1."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` returns the
    exit status."""

    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------------------------
# CSV (numpy only, the whole file in memory: a streaming reader is another issue)
# ---------------------------------------------------------------------------------------------


def read_csv(path: str | Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a CSV file with a header row into ``(X, y, feature_names)``.

    Every cell must be a finite number; blank lines are skipped. Errors name the file, the
    line (1-based, the header being line 1) and the column.

    Raises
    ------
    CommandError
        For a missing or empty file, a missing target column, a row with another number of
        cells than the header, or a cell that is not a finite number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from error
    lines = text.splitlines()
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise CommandError(f"{path} is empty; expected a header row and data rows.")
    header_line, header = numbered[0]
    names = [name.strip().strip('"') for name in header.split(",")]
    if target not in names:
        shown = ", ".join(repr(name) for name in names[:20])
        raise CommandError(
            f"{path}: no column named {target!r} (--target); the header (line {header_line}) "
            f"has: {shown}{', ...' if len(names) > 20 else ''}."
        )
    rows = numbered[1:]
    if not rows:
        raise CommandError(f"{path} has a header but no data rows.")
    try:
        cells = np.loadtxt(
            [line for _, line in rows],
            dtype=str,
            delimiter=",",
            comments=None,
            ndmin=2,
            quotechar='"',
        )
    except ValueError as error:
        message = str(error)
        found = re.search(r"at row (\d+)", message)
        if found and 1 <= int(found.group(1)) <= len(rows):  # numpy counts rows from 1
            line = rows[int(found.group(1)) - 1][0]
            message = f"line {line} has a different number of cells than the header"
        raise CommandError(f"{path}: {message}.") from error
    if cells.shape[1] != len(names):
        raise CommandError(
            f"{path}: the rows have {cells.shape[1]} cells but the header (line "
            f"{header_line}) names {len(names)} columns."
        )
    values = np.empty(cells.shape, dtype=np.float64)
    for column, name in enumerate(names):
        try:
            values[:, column] = cells[:, column].astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(values[:, column]))
        except ValueError:
            bad = [row for row, cell in enumerate(cells[:, column]) if not _is_number(cell)]
        if len(bad):
            row = int(bad[0])
            raise CommandError(
                f"{path}, line {rows[row][0]}, column {column + 1} ({name!r}): "
                f"{str(cells[row, column])!r} is not a finite number. Every cell must be numeric; "
                "encode or drop non-numeric columns first."
            )
    target_column = names.index(target)
    features = [name for k, name in enumerate(names) if k != target_column]
    if not features:
        raise CommandError(f"{path}: the only column is the target {target!r}; no features.")
    X = np.ascontiguousarray(np.delete(values, target_column, axis=1))
    return X, values[:, target_column].copy(), features


def _is_number(cell: str) -> bool:
    try:
        return np.isfinite(float(cell))
    except ValueError:
        return False


def example_problem(
    seed: int = 0, n_samples: int = 400
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The generated example: one feature centred at 2 (so that the slope and the intercept
    interact and the bowl is a long valley), ``y = 3x + 1 + noise``."""
    rng = np.random.default_rng(seed)
    x = 2.0 + rng.standard_normal(n_samples)
    y = 3.0 * x + 1.0 + 0.5 * rng.standard_normal(n_samples)
    return x[:, None], y, ["x"]


# ---------------------------------------------------------------------------------------------
# Argument types: a malformed value is a usage error (exit 2)
# ---------------------------------------------------------------------------------------------


def _rate_list(text: str) -> list[float | str]:
    rates: list[float | str] = []
    for item in text.split(","):
        item = item.strip()
        if item == "auto":
            rates.append(item)
            continue
        try:
            rate = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a number; give positive numbers or 'auto', e.g. 0.01,0.1,1"
            ) from None
        if not (rate > 0 and np.isfinite(rate)):
            raise argparse.ArgumentTypeError(f"learning rates must be > 0; got {item!r}")
        rates.append(rate)
    return rates


def _name_list(table) -> Callable[[str], list[str]]:
    allowed = [row.name for row in table]

    def parse(text: str) -> list[str]:
        names = [item.strip() for item in text.split(",")]
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return names

    return parse


def _int_list(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers, e.g. 32,256"
        ) from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _report_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".html", ".htm"):
        raise argparse.ArgumentTypeError(f"{text!r}: the report must end in .png or .html")
    return path


# ---------------------------------------------------------------------------------------------
# fastgd playground
# ---------------------------------------------------------------------------------------------

PLAYGROUND_DESCRIPTION = """\
Watch the loss fall (or blow up) as the learning rate and the batch strategy change.

Runs fastgd.sweep over every learning rate x strategy (x batch size for minibatch), a
learning-rate finder (fastgd.find_learning_rate, for the first strategy listed), and for
problems with one feature (or two without intercept) the path of full-batch descent on the
loss surface at the suggested rate and just below the edge of stability. Prints the table
and the suggestion, and writes the pictures to --out (.png, or .html with the picture and
the table embedded). Without DATA.csv it uses a generated example (one feature centred at
2: y = 3x + 1 + noise).

examples:
  fastgd playground                                    # the generated example -> playground.png
  fastgd playground houses.csv --target price --out report.html
  fastgd playground data.csv --target y --learning-rates 0.001,0.01,0.1,auto \\
      --strategies sgd,full --epochs 30
  fastgd playground data.csv --target y --strategies minibatch --batch-sizes 16,256
"""


def _configure_playground(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        metavar="DATA.csv",
        help="CSV file with a header row, every cell numeric (default: a generated example)",
    )
    parser.add_argument("--target", metavar="COL", help="the target column (needed with DATA)")
    parser.add_argument(
        "--learning-rates",
        type=_rate_list,
        default=[0.001, 0.01, 0.1, 1.0],
        metavar="LIST",
        help="comma-separated constant rates and/or 'auto' (default: 0.001,0.01,0.1,1)",
    )
    parser.add_argument(
        "--strategies",
        type=_name_list(options.STRATEGIES),
        default=["sgd", "minibatch", "full"],
        metavar="LIST",
        help="comma-separated, from sgd, minibatch, full (default: sgd,minibatch,full)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[32],
        metavar="LIST",
        help="rows per step for minibatch, comma-separated (default: 32)",
    )
    parser.add_argument(
        "--loss",
        choices=[loss.name for loss in options.LOSSES],
        default="squared_error",
        metavar="NAME",
        help="the loss (default: squared_error)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=20,
        help="epochs per run; every run goes the distance (default: 20)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random_state of every run (default: 0)"
    )
    parser.add_argument(
        "--out",
        type=_report_path,
        default=Path("playground.png"),
        metavar="REPORT",
        help="report.png or report.html (default: playground.png)",
    )


def _run_playground(args: argparse.Namespace) -> int:
    from . import playground

    if args.data is None:
        if args.target is not None:
            raise _UsageError("--target needs a DATA.csv file.")
        X, y, _ = example_problem(args.seed)
        source = "generated example (y = 3x + 1 + noise, x centred at 2)"
    else:
        if args.target is None:
            raise _UsageError("the following arguments are required with DATA.csv: --target")
        X, y, _ = read_csv(args.data, args.target)
        source = f"{args.data} ({X.shape[0]} rows, {X.shape[1]} features, target {args.target!r})"
    fit_options = {"loss": args.loss, "max_iter": args.epochs, "tol": None}
    try:
        table = playground.sweep(
            X,
            y,
            args.learning_rates,
            args.strategies,
            args.batch_sizes,
            random_state=args.seed,
            **fit_options,
        )
        finder = playground.find_learning_rate(
            X,
            y,
            strategy=args.strategies[0],
            batch_size=args.batch_sizes[0],
            random_state=args.seed,
            loss=args.loss,
        )
        paths = []
        if X.shape[1] == 1:
            # The bowl shows full-batch descent (every step is a point of the path) at
            # full batch's own suggestion and at its edge of stability (a zig-zag).
            bowl = (
                finder
                if finder.strategy == "full"
                else playground.find_learning_rate(
                    X, y, strategy="full", random_state=args.seed, loss=args.loss
                )
            )
            for rate in (bowl.suggestion, bowl.edge_rate):
                paths.append(
                    playground.descent_path(
                        X,
                        y,
                        learning_rate=rate,
                        strategy="full",
                        max_iter=args.epochs,
                        random_state=args.seed,
                        loss=args.loss,
                    )
                )
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error

    print(f"fastgd {__version__} playground: {source}\n")
    print(table.to_markdown())
    print()
    print(finder)
    best = table.best()
    if best is not None:
        print(f"best run: {best.label}, final loss {best.final_loss:.6g}")

    from .plot import figure_to_png, playground_figure

    figure = playground_figure(table, finder, paths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".png":
        figure.savefig(args.out, dpi=100)
    else:
        args.out.write_text(_html_report(source, table, finder, figure_to_png(figure)), "utf-8")
    print(f"report written to {args.out}")
    return 0


def _html_report(source: str, table, finder, png: bytes) -> str:
    image = base64.b64encode(png).decode("ascii")
    rows = []
    for run in table:
        rate = f"auto → {run.step:.3g}" if run.learning_rate == "auto" else f"{run.step:.3g}"
        status = (
            f"diverged in epoch {run.n_iter + 1}"
            if run.diverged
            else ("converged" if run.converged else "ran all epochs")
        )
        final = "—" if run.diverged else f"{run.final_loss:.6g}"
        cells = [
            run.strategy,
            "" if run.batch_size is None else str(run.batch_size),
            rate,
            str(run.n_iter),
            final,
            f"{1000 * run.fit_time:.1f}",
            status,
        ]
        style = ' class="diverged"' if run.diverged else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "strategy",
            "batch",
            "learning rate",
            "epochs",
            "final loss",
            "time (ms)",
            "status",
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastgd playground</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} tr.diverged{{color:#b00}}
img{{max-width:100%}}</style></head><body>
<h1>fastgd playground</h1>
<p>{html.escape(source)}</p>
<img alt="loss curves, learning-rate finder and loss surface" src="data:image/png;base64,{image}">
<h2>Runs</h2>
<table><tr>{header}</tr>
{chr(10).join(rows)}
</table>
<h2>Learning-rate finder</h2>
<p>{html.escape(str(finder))}</p>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# The table of subcommands and main
# ---------------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "playground": Command(
        help="loss curves, a learning-rate sweep and finder, the loss surface, as pictures",
        description=PLAYGROUND_DESCRIPTION,
        configure=_configure_playground,
        run=_run_playground,
    ),
}


class _UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgd",
        description="fastgd: fast, trustworthy gradient descent for linear models.",
        epilog="examples:\n  fastgd playground\n  fastgd playground data.csv --target y "
        "--out report.html\n\n'fastgd COMMAND --help' describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastgd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
        sub.set_defaults(_command=command, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastgd`` command; return its exit status (0, 1 or 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2)
        return int(exit_.code or 0)
    try:
        return args._command.run(args)
    except _UsageError as error:
        args._parser.print_usage(sys.stderr)
        print(f"fastgd {args.command}: error: {error}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"fastgd: error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # matplotlib missing: the message says what to install
        print(f"fastgd: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
