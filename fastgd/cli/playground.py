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

DATA.csv is read through fastgd's CSV reader, its columns chosen with --features or --drop
as for 'fastgd train'; its features are standardised (centred, unit variance) unless
--no-standardize. Without scaling, steps that suit one column blow up on another: a run
whose loss ends above where it started is listed as diverged.

examples:
  fastgd playground                                    # the generated example -> playground.png
  fastgd playground houses.csv --target price --out report.html
  fastgd playground data.csv --target y --learning-rates 0.001,0.01,0.1,auto \\
      --strategies sgd,full --epochs 30
  fastgd playground data.csv --target y --strategies minibatch --batch-sizes 16,256
  fastgd playground flights.csv --target arr_delay --features dep_delay,distance \\
      --no-standardize
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        metavar="DATA.csv",
        help="CSV file with a header row; the selected columns numeric (default: a generated "
        "example)",
    )
    parser.add_argument("--target", metavar="COL", help="the target column (needed with DATA)")
    _args.add_column_arguments(parser)
    _args.add_standardize_argument(parser)
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


def reader_arguments(args: argparse.Namespace) -> tuple[dict, dict]:
    """``(read_schema's keywords, iter_csv's keywords)`` from the flags: the one place
    where the playground's CSV flags reach :mod:`fastgd.io` (a reader flag is a line here)."""
    schema = {"target": args.target, "features": args.features, "drop": args.drop}
    blocks: dict = {}
    return schema, blocks


def read_data(path, schema_options: dict, block_options: dict | None = None):
    """The whole CSV as ``(X, y, feature names)`` through :mod:`fastgd.io` (errors name
    the file, line and column)."""
    from ..io.csv import CsvError, iter_csv, read_schema

    schema = read_schema(path, **schema_options)
    blocks = [block for block in iter_csv(schema, **(block_options or {})) if block.rows]
    if not blocks:  # (every row skipped: iter_csv itself refuses a file without rows)
        raise CsvError("no data rows to run on.", path=schema.path)
    X = np.concatenate([block.X for block in blocks])
    return X, np.concatenate([block.y for block in blocks]), list(schema.feature_names)


def standardized(X: np.ndarray, names: list[str]) -> np.ndarray:
    """X centred and scaled to unit variance per column, as ``fastgd train`` does (the
    population variance; a constant column keeps scale 1, so it becomes all zeros)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if bad.any():
        name = names[int(np.argmax(bad))]
        raise CommandError(
            f"cannot standardise the feature {name!r}: its values are too large for its "
            "variance to fit in a float64; rescale it, or pass --no-standardize."
        )
    return ((X - mean) / np.where(std > 0.0, std, 1.0)).astype(X.dtype, copy=False)


def _problem(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """``(X, y, what they are)``: the generated example, or DATA.csv's columns."""
    if args.data is None:
        for flag, value in (("--target", args.target), ("--features", args.features),
                            ("--drop", args.drop)):  # fmt: skip
            if value is not None:
                raise UsageError(f"{flag} needs a DATA.csv file.")
        X, y, _ = example_problem(args.seed)
        return X, y, "generated example (y = 3x + 1 + noise, x centred at 2)"
    if args.target is None:
        raise UsageError("the following arguments are required with DATA.csv: --target")
    _args.check_no_repeats(args)
    X, y, names = read_data(args.data, *reader_arguments(args))
    scaling = "standardised" if args.standardize else "unscaled: --no-standardize"
    if args.standardize:
        X = standardized(X, names)
    shown = shown_input(args, "data")
    return X, y, (
        f"{shown} ({X.shape[0]} rows, {X.shape[1]} features, target {args.target!r}; "
        f"features {scaling})"
    )  # fmt: skip


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
