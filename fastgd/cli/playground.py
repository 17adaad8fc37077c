"""``fastgd playground``: a learning-rate sweep, a finder and the loss surface, as pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import __version__, options
from . import _args
from ._command import Command, CommandError, UsageError
from ._paths import shown_input

HELP = "loss curves, a learning-rate sweep and finder, the loss surface, as pictures"

DESCRIPTION = """\
Watch the loss fall (or blow up) as the learning rate and the batch strategy change.

Runs fastgd.sweep over every learning rate x strategy (x batch size for minibatch), a
learning-rate finder (fastgd.find_learning_rate, for the first strategy listed), and for
problems with one feature (or two without intercept) the path of full-batch descent on the
loss surface at the suggested rate and just below the edge of stability. Prints the table
and the suggestion, and writes the pictures to --out (.png, or .html with the picture and
the table embedded). Without DATA.csv it uses a generated example (one feature centred at
2: y = 3x + 1 + noise).

DATA.csv is read and encoded as 'fastgd train' does, with its flags: columns chosen with
--features or --drop; numeric columns standardised (centred, unit variance) unless
--no-standardize; text columns one-hot encoded (--max-categories, or --hash-features; the
runs then use fastgd's CSR kernels); missing cells imputed with an indicator (--missing);
a row with a missing target skipped. Without scaling, steps that suit one column blow up
on another: a run whose loss ends above where it started is listed as diverged.

examples:
  fastgd playground                                    # the generated example -> playground.png
  fastgd playground houses.csv --target price --out report.html
  fastgd playground data.csv --target y --learning-rates 0.001,0.01,0.1,auto \\
      --strategies sgd,full --epochs 30
  fastgd playground data.csv --target y --strategies minibatch --batch-sizes 16,256
  fastgd playground flights.csv --target arr_delay --features dep_delay,distance \\
      --no-standardize
  fastgd playground flights.csv --target arr_delay --drop tailnum,time_hour --missing skip
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        metavar="DATA.csv",
        help="CSV file with a header row (default: a generated example)",
    )
    parser.add_argument("--target", metavar="COL", help="the target column (needed with DATA)")
    _args.add_column_arguments(parser)  # the columns and their encoding: 'fastgd train's
    _args.add_standardize_argument(parser)
    _args.add_encoding_arguments(parser)
    parser.add_argument(
        "--learning-rates",
        type=_args.rate_list,
        default=[0.001, 0.01, 0.1, 1.0],
        metavar="LIST",
        help="comma-separated constant rates and/or 'auto' (default: 0.001,0.01,0.1,1)",
    )
    parser.add_argument(
        "--strategies",
        type=_args.name_list(options.STRATEGIES),
        default=["sgd", "minibatch", "full"],
        metavar="LIST",
        help="comma-separated, from sgd, minibatch, full (default: sgd,minibatch,full)",
    )
    parser.add_argument(
        "--optimizers",
        type=_args.name_list(_optimizer_rows()),
        default=None,
        metavar="LIST",
        help="comma-separated optimizers to compare, each under the strategies that run it "
        "(sgd, momentum, adagrad, rmsprop, adam, adamw, saga; full: gd, nesterov, lbfgs); "
        "default: sgd only",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_args.int_list,
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
        type=_args.positive_int,
        default=20,
        help="epochs per run; every run goes the distance (default: 20)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random_state of every run (default: 0)"
    )
    parser.add_argument(
        "--out",
        type=_args.report_path,
        default=Path("playground.png"),
        metavar="REPORT",
        help="report.png or report.html (default: playground.png)",
    )


def _optimizer_rows():
    """The optimizers as rows with a ``name`` (what ``_args.name_list`` reads)."""
    from types import SimpleNamespace

    from ..parameters import parameter

    return [SimpleNamespace(name=name) for name in parameter("optimizer").choices]


def example_problem(
    seed: int = 0, n_samples: int = 400
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The generated example: one feature centred at 2 (so that the slope and the intercept
    interact and the bowl is a long valley), ``y = 3x + 1 + noise``."""
    rng = np.random.default_rng(seed)
    x = 2.0 + rng.standard_normal(n_samples)
    y = 3.0 * x + 1.0 + 0.5 * rng.standard_normal(n_samples)
    return x[:, None], y, ["x"]


def reader_arguments(args: argparse.Namespace) -> dict:
    """:func:`fastgd.playground.read_csv`'s keywords from the flags: the one place where the
    playground's column, missing-value and scaling flags (``fastgd train``'s) reach the
    reader and the encoding (a flag is a line here)."""
    return {
        "target": args.target,
        "features": args.features,
        "drop": args.drop,
        "categorical": args.categorical,
        "missing": args.missing,
        "standardize": args.standardize,
        "max_categories": args.max_categories,
        "hash_features": args.hash_features,
        "loss": args.loss,
    }


#: The flags that select and encode DATA.csv's columns: refused without DATA.csv (a flag
#: that does nothing there is a mistake), unless left at their defaults.
_DATA_FLAGS = (
    ("--target", "target", None), ("--features", "features", None), ("--drop", "drop", None),
    ("--categorical", "categorical", None), ("--missing", "missing", "impute"),
    ("--max-categories", "max_categories", 1000), ("--hash-features", "hash_features", None),
)  # fmt: skip


def _problem(args: argparse.Namespace):
    """``(X, y, what they are)``: the generated example, or DATA.csv encoded as 'fastgd
    train' encodes it (X: CSR when a text column is among the features)."""
    from ..playground import read_csv

    if args.data is None:
        for flag, name, default in _DATA_FLAGS:
            if getattr(args, name) != default:
                raise UsageError(f"{flag} needs a DATA.csv file.")
        X, y, _ = example_problem(args.seed)
        return X, y, "generated example (y = 3x + 1 + noise, x centred at 2)"
    if args.target is None:
        raise UsageError("the following arguments are required with DATA.csv: --target")
    _args.check_no_repeats(args)
    data = read_csv(args.data, **reader_arguments(args))  # errors name file, line, column
    _check_sparse_runs(args, data)
    return data.X, data.y, _described(args, data)


def _described(args: argparse.Namespace, data) -> str:
    """The report's line on the data: rows, columns and features, skipped rows, scaling."""
    from ..io.csv import format_skipped

    encoding = data.encoding
    rows, width = data.X.shape
    columns = f"{width} features"
    if encoding.text or encoding.indicators:
        text = len(encoding.text)
        how = f"hashed into 2**{encoding.hash_bits}" if encoding.hash_bits else "one-hot"
        indicators = len(encoding.indicators)
        columns += (
            f" from {len(encoding.columns)} columns ({text} text, {how}; "
            f"{indicators} missing indicator{'s' if indicators != 1 else ''})"
        )
    skipped = format_skipped(data.skipped, data.skipped_lines)
    skipped = f"; {skipped}" if skipped else ""
    scaling = "standardised" if args.standardize else "unscaled: --no-standardize"
    return (
        f"{shown_input(args, 'data')} ({rows} rows, {columns}, target {args.target!r}"
        f"{skipped}; features {scaling})"
    )


def _check_sparse_runs(args: argparse.Namespace, data) -> None:
    """Text columns make X sparse: refuse, before any run, an optimizer without CSR kernels
    (saying which flag to change)."""
    from .. import options

    if not data.encoding.sparse or not args.optimizers:
        return
    dense_only = [r.name for r in options.UPDATE_RULES if not r.sparse]
    refused = [name for name in args.optimizers if name in dense_only]
    if refused:
        text = ", ".join(data.encoding.text)
        raise UsageError(
            f"--optimizers {','.join(refused)}: no CSR kernel, and the text column(s) {text} "
            "make the features sparse; leave them out with --drop, or choose other optimizers."
        )


def _experiments(args: argparse.Namespace, X: np.ndarray, y: np.ndarray):
    """The sweep's table, the finder, and (one feature) the descent paths on the bowl."""
    from .. import playground

    common = {"random_state": args.seed, "loss": args.loss}
    table = playground.sweep(
        X, y, args.learning_rates, args.strategies, args.batch_sizes,
        max_iter=args.epochs, tol=None, optimizers=args.optimizers, **common,
    )  # fmt: skip
    finder = playground.find_learning_rate(
        X, y, strategy=args.strategies[0], batch_size=args.batch_sizes[0], **common
    )
    paths = []
    if X.shape[1] == 1:
        # The bowl shows full-batch descent (every step is a point of the path) at
        # full batch's own suggestion and at its edge of stability (a zig-zag).
        bowl = finder
        if finder.strategy != "full":
            bowl = playground.find_learning_rate(X, y, strategy="full", **common)
        paths = [
            playground.descent_path(
                X, y, learning_rate=rate, strategy="full", max_iter=args.epochs, **common
            )
            for rate in (bowl.suggestion, bowl.edge_rate)
        ]
    return table, finder, paths


def _write_report(out: Path, source: str, table, finder, paths) -> None:
    from ..io.model import atomic_file
    from ..plot import figure_to_png, playground_figure
    from ._html_report import html_report

    figure = playground_figure(table, finder, paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "wb") as handle:  # Ctrl-C leaves no half-written report
        if out.suffix.lower() == ".png":
            figure.savefig(handle, format="png", dpi=100)
        else:
            report = html_report(source, table, finder, figure_to_png(figure))
            handle.write(report.encode("utf-8"))


def run(args: argparse.Namespace) -> int:
    X, y, source = _problem(args)
    try:
        table, finder, paths = _experiments(args, X, y)
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    print(f"fastgd {__version__} playground: {source}\n")
    print(table.to_markdown())
    print()
    print(finder)
    best = table.best()
    if best is not None:
        print(f"best run: {best.label}, final loss {best.final_loss:.6g}")
    _write_report(args.out, source, table, finder, paths)
    print(f"report written to {args.out}")
    return 0


#: The report's folders are created (--out reports/today.html).
COMMAND = Command(HELP, DESCRIPTION, configure, run, inputs=("data",),
                  outputs=(("out", "--out"),), creates_folders=True)  # fmt: skip
