"""The ``fastgd`` command (also ``python -m fastgd``).

Subcommands live in one table, :data:`COMMANDS`: each is a :class:`Command` with a help
line, a description with examples, a function that adds its arguments, and a function that
runs it and returns the exit status. Adding a subcommand means adding one entry.

Exit status: 0 success; 2 bad usage (unknown flags, malformed values: argparse's own
convention); 1 a data or training error (an unreadable or damaged file, a missing column,
invalid training options), reported on stderr in one line as ``fastgd: error: ...``, or an
unexpected one, ``fastgd: internal error: ...`` (``--debug`` prints its traceback); 130
Ctrl-C (``fastgd: interrupted.``). Before any work, each command checks that no output is
one of its inputs and that the outputs' directories exist; inputs that are not regular
files (``-`` for stdin, a FIFO, ``<(...)``) are read once into a temporary copy.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv as _stdcsv
import html
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
import warnings
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
    #: the arguments (Namespace attributes) naming files the command reads, the data last
    inputs: tuple[str, ...] = ()
    #: ``(attribute, flag)`` of the files it writes; none may be one of its inputs
    outputs: tuple[tuple[str, str], ...] = ()
    #: whether the outputs' missing directories are created (else: an error before any work)
    creates_folders: bool = False


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
        shown = _shown_input(args, "data")
        source = f"{shown} ({X.shape[0]} rows, {X.shape[1]} features, target {args.target!r})"
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

    from .io.model import atomic_file
    from .plot import figure_to_png, playground_figure

    figure = playground_figure(table, finder, paths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out, "wb") as handle:  # Ctrl-C leaves no half-written report
        if args.out.suffix.lower() == ".png":
            figure.savefig(handle, format="png", dpi=100)
        else:
            report = _html_report(source, table, finder, figure_to_png(figure))
            handle.write(report.encode("utf-8"))
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
# Progress on stderr (hand-written: no dependency)
# ---------------------------------------------------------------------------------------------


def _human(count: float) -> str:
    """1234 -> '1,234'; 1.5e6 -> '1.5M'."""
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e4:
        return f"{count / 1e3:.0f}k"
    return f"{count:,.0f}"


def render_progress(
    *,
    label: str,
    epoch: int | None,
    epochs: int | None,
    rows_done: int,
    rows_total: int | None,
    rows_per_second: float | None,
    loss: float | None,
    width: int = 24,
) -> str:
    """One line of the progress bar (no carriage return), e.g.
    ``epoch 3/20 [#########...............]  37%  1.2M rows/s  loss 0.0123``."""
    parts = []
    if epoch:
        parts.append(f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}")
    else:
        parts.append(label)
    if rows_total:
        fraction = min(1.0, rows_done / rows_total)
        filled = round(fraction * width)
        parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%")
    else:
        parts.append(f"{_human(rows_done)} rows")
    if rows_per_second is not None:
        parts.append(f"{_human(rows_per_second)} rows/s")
    if loss is not None:
        parts.append(f"loss {loss:.6g}")
    return "  ".join(parts)


class ProgressBar:
    """A one-line progress display on a terminal, redrawn at most every ``interval``
    seconds; silent when disabled or when the stream is not a terminal.

    ``update(epoch, rows_done, rows_total)`` has ``fastgd.fit_csv``'s ``progress``
    signature (epoch 0: the first pass over the file); ``epoch_done(epoch, loss)`` records
    the loss of a finished epoch.
    """

    def __init__(
        self,
        label: str,
        *,
        epochs: int | None = None,
        stream=None,
        enabled: bool = True,
        interval: float = 0.1,
        clock=time.monotonic,
    ):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty())
        self.label = label
        self.epochs = epochs
        self.interval = interval
        self.clock = clock
        self.epoch: int | None = None
        self.loss: float | None = None
        self.rows_done = 0
        self.rows_total: int | None = None
        self._epoch_started = clock()
        self._last_seen = self._epoch_started
        self._last_draw = -math.inf
        self._drawn = 0

    def update(self, epoch: int | None, rows_done: int, rows_total: int | None) -> None:
        now = self.clock()
        if epoch != self.epoch:
            self._epoch_started = self._last_seen
            self.epoch = epoch
        self._last_seen = now
        self.rows_done, self.rows_total = rows_done, rows_total
        if self.enabled and now - self._last_draw >= self.interval:
            self._draw(now)

    def epoch_done(self, epoch: int, loss: float) -> None:
        self.loss = float(loss)

    def _draw(self, now: float) -> None:
        elapsed = now - self._epoch_started
        line = render_progress(
            label=self.label,
            epoch=self.epoch,
            epochs=self.epochs,
            rows_done=self.rows_done,
            rows_total=self.rows_total,
            rows_per_second=self.rows_done / elapsed if elapsed > 0 else None,
            loss=self.loss,
        )
        padding = " " * max(0, self._drawn - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._drawn = len(line)
        self._last_draw = now

    def close(self) -> None:
        """Erase the line (so that messages after it start clean)."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


# ---------------------------------------------------------------------------------------------
# fastgd train / predict / evaluate / info
# ---------------------------------------------------------------------------------------------

TRAIN_DESCRIPTION = """\
Train a linear model on a CSV file of any size (fastgd.fit_csv: the file is read once into
a binary cache next to it, or in --cache-dir; every epoch streams the cache in blocks) and
save it to MODEL (fastgd.save: a versioned .npz archive; see 'fastgd info').

Every cell of the feature and target columns must be numeric. A progress bar shows on a
terminal (rows/s, epoch, loss; --quiet turns it off); a one-line summary ends the run.
With --checkpoint the model is saved after every epoch, so Ctrl-C (exit 130) or a
divergence (exit 1; the best weights reached are saved) leaves the last good model in
MODEL; --resume continues from it (weights, step counter, epochs counted on top).

examples:
  fastgd train houses.csv --target price --model houses.npz
  fastgd train houses.csv --target price --model houses.npz --standardize \\
      --strategy sgd --learning-rate invscaling --eta0 0.01 --epochs 10
  fastgd train clicks.csv.gz --target clicked --drop id --loss log_loss --penalty l2 \\
      --model clicks.npz --on-bad-rows skip --checkpoint
  fastgd train clicks.csv.gz --target clicked --model clicks.npz --resume --epochs 5
"""

PREDICT_DESCRIPTION = """\
Predict with a saved model, streaming DATA.csv in blocks. The file needs the model's
feature columns (in any order; other columns, the target among them, are ignored). Writes
one column, 'prediction' (labels for a classifier), one row per data row, to --output
(written to a temporary file, then renamed) or to stdout.

examples:
  fastgd predict houses.npz new_houses.csv --output predictions.csv
  fastgd predict clicks.npz today.csv.gz > predictions.csv
"""

EVALUATE_DESCRIPTION = """\
Score a saved model on DATA.csv in one streamed pass: regression models print the mean
squared error and R²; classifiers the accuracy (and the log loss for log_loss models).

examples:
  fastgd evaluate houses.npz test.csv --target price
  fastgd evaluate clicks.npz holdout.csv          # the target column the model was trained on
"""

INFO_DESCRIPTION = """\
Print everything a model file holds: format and versions, loss, features with their
weights (and the scaler's means and scales), options, and the training summary.

examples:
  fastgd info houses.npz
  fastgd info houses.npz --json
"""


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _tol(text: str) -> float | str:
    """A tolerance, or "none" (kept as a string so that it differs from "not given")."""
    return "none" if text.strip().lower() == "none" else _non_negative_float(text)


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive); got {text!r}")
    return value


def _delimiter(text: str) -> str:
    text = {"tab": "\t", "\\t": "\t"}.get(text.lower(), text)
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"one character (or 'tab'); got {text!r}")
    return text


def _add_csv_arguments(parser: argparse.ArgumentParser, *, bad_rows: bool = True) -> None:
    group = parser.add_argument_group("reading the CSV")
    group.add_argument(
        "--delimiter",
        type=_delimiter,
        metavar="X",
        help="field separator (default: sniffed among , ; tab |)",
    )
    group.add_argument(
        "--block-rows",
        type=_positive_int,
        default=65536,
        metavar="N",
        help="rows per block; memory is bounded by a few blocks (default: 65536)",
    )
    group.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="of the data and the model (default: float64)",
    )
    if bad_rows:
        group.add_argument(
            "--on-bad-rows",
            choices=["error", "skip"],
            default="error",
            help="stop at the first bad row (missing or non-numeric cell, wrong field count), "
            "naming file, line and column; or skip bad rows and count them (default: error)",
        )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no summary line"
    )


def _configure_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA.csv", help="CSV file with a header row (.gz, .bz2, .zst too)"
    )
    parser.add_argument(
        "--target", metavar="COL", help="the target column (with --resume: default the model's)"
    )
    parser.add_argument(
        "--model", metavar="MODEL", required=True, help="where to save the model (e.g. model.npz)"
    )
    columns = parser.add_mutually_exclusive_group()
    columns.add_argument(
        "--features",
        metavar="A,B",
        help="the feature columns, in order (default: every other column)",
    )
    columns.add_argument(
        "--drop", metavar="C,D", help="columns to leave out of the features (an id, a text column)"
    )
    fit = parser.add_argument_group(
        "training (default: fastgd.fit's, or the model's with --resume)"
    )
    fit.add_argument(
        "--loss",
        choices=[loss.name for loss in options.LOSSES],
        metavar="NAME",
        help="one of: "
        + ", ".join(loss.name for loss in options.LOSSES)
        + " (default: squared_error)",
    )
    fit.add_argument(
        "--penalty", choices=[p.name for p in options.PENALTIES], help="(default: none)"
    )
    fit.add_argument("--alpha", type=_non_negative_float, help="penalty strength (default: 1e-4)")
    fit.add_argument(
        "--strategy",
        choices=[s.name for s in options.STRATEGIES],
        help="rows per step: 1, --batch-size, or all (default: minibatch)",
    )
    fit.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="rows per mini-batch (default: 256)"
    )
    fit.add_argument(
        "--learning-rate",
        choices=[s.name for s in options.SCHEDULES],
        help="the step-size schedule (default: auto)",
    )
    fit.add_argument("--eta0", type=_positive_float, help="initial step size (default: 0.01)")
    fit.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help="at most N passes over the data (default: 20)",
    )
    fit.add_argument("--tol", type=_tol, help="stopping tolerance, or 'none' (default: 1e-4)")
    fit.add_argument("--random-state", type=int, metavar="N", help="seed (default: none)")
    fit.add_argument(
        "--standardize",
        action="store_true",
        help="centre and scale the features (the model keeps the scaler)",
    )
    fit.add_argument(
        "--validation-fraction",
        type=_fraction,
        metavar="F",
        help="hold out this fraction of the rows; stop early on their score",
    )
    _add_csv_arguments(parser)
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where the binary cache goes (default: next to the CSV)"
    )
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="save the model after every epoch (Ctrl-C keeps the last one)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue training the model in MODEL (its weights and step count)",
    )


#: --flag -> fastgd.fit option, for the training options of `fastgd train`.
_TRAIN_OPTIONS = {
    "loss": "loss",
    "penalty": "penalty",
    "alpha": "alpha",
    "strategy": "strategy",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "eta0": "eta0",
    "epochs": "max_iter",
    "tol": "tol",
    "random_state": "random_state",
}


def _fit_defaults() -> dict:
    from . import engine

    defaults = engine.fit_defaults()
    return {name: defaults[name] for name in _TRAIN_OPTIONS.values()}


def _has_validation_fraction() -> bool:
    import inspect

    from . import stream

    return "validation_fraction" in inspect.signature(stream.fit_csv).parameters


class _Checkpointer:
    """Saves the model after each epoch (``fit_csv``'s callback) and the best weights of a
    divergence. The weights the callback sees are in the standardised space with
    --standardize, so the model file keeps them with the scaler; the scaler, the classes and
    the row count come from fit_csv's first pass (its ``on_first_pass`` hook)."""

    def __init__(self, args, schema, fit_settings, recorded, previous, bar):
        self.args = args
        self.schema = schema
        self.settings = fit_settings
        self.recorded = recorded
        self.previous = previous
        self.bar = bar
        self.history: list[float] = []
        self.saved_epoch: int | None = None
        self._context = None

    def first_pass(self, stats) -> None:
        """``fit_csv``'s ``on_first_pass`` hook: rows, classes and scaler for checkpoints."""
        scaler = None
        if stats.mean is not None:
            scaler = {"mean": stats.mean, "scale": stats.scale}
        self._context = {"rows": stats.n_rows, "scaler": scaler, "classes": stats.labels}

    def _scan(self) -> dict:
        if self._context is None:  # pragma: no cover - fit_csv calls first_pass first
            raise RuntimeError("a checkpoint was requested before fit_csv's first pass")
        return self._context

    def _steps_per_epoch(self, rows: int) -> int:
        strategy = self.settings["strategy"]
        if strategy == "sgd":
            return rows
        if strategy == "full":
            return 1
        return -(-rows // self.settings["batch_size"])

    def model(self, coef, intercept, epochs: int, history, extra_summary: dict):
        from .io.model import Model

        context = self._scan()
        previous_epochs, previous_history, t_start = _previous_progress(self.previous)
        t = t_start + epochs * self._steps_per_epoch(context["rows"])
        summary = {
            "rows": context["rows"],
            "epochs": previous_epochs + epochs,
            "final_loss": float(history[-1]) if len(history) else None,
            "loss_history": np.concatenate([previous_history, np.asarray(history, float)]),
            "t": float(t),
            "converged": False,
            "checkpoint": True,
            **extra_summary,
        }
        return Model(
            np.array(coef),
            intercept,
            loss=self.settings["loss"],
            classes=context["classes"],
            feature_names=self.schema.feature_names,
            target=self.schema.target,
            scaler=context["scaler"],
            options=self.recorded,
            summary=summary,
        )

    def epoch_done(self, epoch: int, coef, intercept, loss: float) -> None:
        from .io.model import save

        self.history.append(float(loss))
        if self.args.checkpoint:
            save(self.model(coef, intercept, epoch, self.history, {}), self.args.model)
            self.saved_epoch = epoch


def _previous_progress(previous) -> tuple[int, np.ndarray, float]:
    """Epochs, loss curve and step counter of the model a --resume continues."""
    if previous is None:
        return 0, np.empty(0), 1.0
    summary = previous.summary
    history = np.asarray(summary.get("loss_history", np.empty(0)), dtype=np.float64)
    return int(summary.get("epochs") or 0), history, float(summary.get("t") or 1.0)


def _load_model(path):
    """The model in ``path``; any failure to read it is a data error naming the file."""
    from .io.model import ModelFormatError, load

    try:
        return load(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError, ModelFormatError):
        raise
    except Exception as error:
        # A damaged file the reader did not recognise: zipfile alone raises BadZipFile,
        # EOFError, zlib.error, NotImplementedError (an unknown compression method) or
        # RuntimeError (an "encrypted" flag bit) for a flipped byte. --debug shows where.
        message = " ".join(str(error).split())
        raise CommandError(
            f"{path}: not a valid fastgd model: {type(error).__name__}: {message}"
        ) from error


def _check_replaceable_model(path) -> None:
    """Refuse, before any work, a --model that exists and is not a fastgd model: it is
    probably something else (the data, another file) that saving would replace."""
    if not os.path.lexists(path):
        return
    try:
        _load_model(path)
    except Exception as error:
        reason = " ".join(str(error).split())
        raise CommandError(
            f"--model {path} exists and is not a fastgd model ({reason}); nothing was "
            "written. Remove it or choose another --model."
        ) from error


def _cache_dir(args: argparse.Namespace):
    """--cache-dir, except for a temporary copy of stdin or a pipe: its cache (next to it)
    goes away with it, as a cache of a stream that cannot be read again must."""
    session = getattr(args, "_session", None)
    if session is not None and args.data in session.shown_names:
        return None
    return args.cache_dir


def _run_train(args: argparse.Namespace) -> int:
    from .errors import DivergenceError
    from .io.csv import format_skipped, read_schema
    from .io.model import save
    from .stream import fit_csv

    started = time.perf_counter()
    previous = None
    if not args.resume:
        _check_replaceable_model(args.model)
    if args.resume:
        if not Path(args.model).exists():
            raise CommandError(f"--resume: there is no model at {args.model} to continue.")
        previous = _load_model(args.model)
    target = args.target if args.target is not None else getattr(previous, "target", None)
    if target is None:
        raise _UsageError("the following arguments are required: --target")
    features = args.features
    if features is None and args.drop is None and previous is not None:
        features = previous.feature_names
    schema = read_schema(
        args.data, target=target, features=features, drop=args.drop, delimiter=args.delimiter
    )
    if previous is not None:
        previous.check_features(schema.feature_names)

    given = {
        option: getattr(args, flag)
        for flag, option in _TRAIN_OPTIONS.items()
        if getattr(args, flag) is not None
    }
    if given.get("tol") == "none":
        given["tol"] = None
    inherited = {}
    if previous is not None:
        inherited = {
            k: previous.options[k] for k in _TRAIN_OPTIONS.values() if k in previous.options
        }
        inherited.pop("max_iter", None)  # --epochs counts the epochs of this run
    settings = {**_fit_defaults(), **inherited, **given}
    if settings.get("penalty") == "none":
        settings["penalty"] = None
    recorded = {
        **settings,
        "standardize": args.standardize,
        "dtype": args.dtype,
        "block_rows": args.block_rows,
        "on_bad_rows": args.on_bad_rows,
        "delimiter": schema.delimiter,
        "data": _shown_input(args, "data"),
    }
    extra = {}
    if args.validation_fraction is not None:
        extra["validation_fraction"] = args.validation_fraction
        recorded["validation_fraction"] = args.validation_fraction

    bar = ProgressBar(
        f"reading {Path(_shown_input(args, 'data')).name}",
        epochs=settings["max_iter"],
        enabled=not args.quiet,
    )
    checkpoints = _Checkpointer(args, schema, settings, recorded, previous, bar)

    def callback(epoch, coef, intercept, loss):
        bar.epoch_done(epoch, loss)
        checkpoints.epoch_done(epoch, coef, intercept, loss)

    resume = {}
    if previous is not None:
        coef, intercept = previous.raw_weights()
        _, _, t_start = _previous_progress(previous)
        resume = {"coef_init": coef, "intercept_init": intercept, "t_init": t_start}
    try:
        result = fit_csv(
            args.data,
            target=target,
            features=schema.feature_names,
            delimiter=args.delimiter,
            block_rows=args.block_rows,
            dtype=args.dtype,
            cache_dir=_cache_dir(args),
            standardize=args.standardize,
            on_bad_rows=args.on_bad_rows,
            progress=bar.update,
            on_first_pass=checkpoints.first_pass,
            callback=callback,
            **resume,
            **settings,
            **extra,
        )
    except KeyboardInterrupt:
        bar.close()
        if checkpoints.saved_epoch is not None:
            print(
                f"fastgd: interrupted. The checkpoint of epoch {checkpoints.saved_epoch} "
                f"is in {args.model}.",
                file=sys.stderr,
            )
        else:
            print(f"fastgd: interrupted. {args.model} is unchanged.", file=sys.stderr)
        return 130
    except DivergenceError as error:
        bar.close()
        message = str(error)
        if args.checkpoint:
            history = list(np.asarray(error.loss_history, dtype=np.float64))
            model = checkpoints.model(
                error.coef,
                error.intercept,
                len(history),
                history,
                {"diverged": True, "error": message},
            )
            save(model, args.model)
            message += (
                f" The best weights reached (after epoch {len(history)}) are saved in {args.model}."
            )
        raise CommandError(message) from error
    except TypeError as error:  # e.g. an option this fit_csv does not take yet
        bar.close()
        raise CommandError(str(error)) from error
    bar.close()

    previous_epochs, previous_history, _ = _previous_progress(previous)
    summary = {"epochs": previous_epochs + result.n_iter, "time": time.perf_counter() - started}
    if previous is not None:
        summary["loss_history"] = np.concatenate([previous_history, result.loss_history])
        summary["resumed_after_epoch"] = previous_epochs
    scores = result.validation_scores
    if scores is None:
        scores = result.extras.get("validation_scores")
    if scores is not None:
        summary["validation_scores"] = np.asarray(scores, dtype=np.float64)
    save(result, args.model, options=recorded, summary=summary)
    if not args.quiet:
        rows = result.extras.get("rows", 0)
        skipped = format_skipped(
            result.extras.get("skipped", {}), result.extras.get("skipped_lines", [])
        )
        final = result.loss_history[-1] if result.loss_history.shape[0] else float("nan")
        status = "converged" if result.converged else "ran all epochs"
        epochs = f"{result.n_iter} epochs ({status})"
        if previous is not None:
            epochs += f", {summary['epochs']} in all"
        text = f"fastgd train: {rows:,} rows"
        if skipped:
            text += f" ({skipped})"
        text += f", {epochs}, final loss {final:.6g}"
        if scores is not None and len(scores):
            text += f", validation score {float(scores[-1]):.6g}"
        text += f", {summary['time']:.2f} s; model saved to {args.model}"
        print(text, file=sys.stderr)
    return 0


def _configure_model_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file from 'fastgd train'")
    parser.add_argument("data", metavar="DATA.csv", help="CSV file with a header row")


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    _configure_model_and_data(parser)
    parser.add_argument(
        "--output",
        "-o",
        metavar="PRED.csv",
        help="where to write the predictions (default: stdout)",
    )
    _add_csv_arguments(parser, bad_rows=False)


def _configure_evaluate(parser: argparse.ArgumentParser) -> None:
    _configure_model_and_data(parser)
    parser.add_argument(
        "--target",
        metavar="COL",
        help="the target column (default: the one the model was trained on)",
    )
    _add_csv_arguments(parser)


def _model_schema(model, data, *, target=None, delimiter=None):
    """The CSV's schema selecting the model's features by name (any order in the file)."""
    from .io.csv import read_schema

    layout = read_schema(data, delimiter=delimiter)
    if model.feature_names is None:
        present = set(layout.columns)
        drop = [name for name in (model.target, target) if name and name in present]
        schema = read_schema(data, target=target, drop=drop or None, delimiter=delimiter)
        if len(schema.feature_names) != model.n_features:
            raise CommandError(
                f"{data}: {len(schema.feature_names)} feature columns, but the model (saved "
                f"without feature names) has {model.n_features}."
            )
        return schema
    present = set(layout.columns)  # a set: files with 100k columns are fine
    missing = [name for name in model.feature_names if name not in present]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:10])
        raise CommandError(
            f"{data}: the model's feature column(s) {shown}"
            f"{' ...' if len(missing) > 10 else ''} are not in the file's header "
            f"({len(missing)} of {model.n_features} missing)."
        )
    return read_schema(data, target=target, features=model.feature_names, delimiter=delimiter)


def _format_for(values: np.ndarray) -> str:
    if values.dtype.kind in "iub":
        return "%d"
    if values.dtype.kind == "f":
        return "%.9g" if values.dtype == np.float32 else "%.17g"
    return "%s"


def _write_predictions(model, schema, args, handle, bar) -> int:
    from .io.csv import iter_csv

    columns = 1 if model.coef.ndim == 1 or model.kind == "classifier" else model.coef.shape[0]
    names = ["prediction"] if columns == 1 else [f"prediction_{i}" for i in range(columns)]
    handle.write(",".join(names) + "\n")
    rows = 0
    for block in iter_csv(schema, block_rows=args.block_rows, dtype=args.dtype):
        if not block.rows:
            continue
        predictions = model.predict(block.X)
        np.savetxt(
            handle, predictions.reshape(block.rows, -1), fmt=_format_for(predictions), delimiter=","
        )
        rows += block.rows
        bar.update(None, rows, None)
    return rows


def _run_predict(args: argparse.Namespace) -> int:
    from .io.model import atomic_file

    started = time.perf_counter()
    model = _load_model(args.model)
    schema = _model_schema(model, args.data, delimiter=args.delimiter)
    bar = ProgressBar("predicting", enabled=not args.quiet)
    try:
        if args.output is None:
            rows = _write_predictions(model, schema, args, sys.stdout, bar)
            sys.stdout.flush()
        elif os.path.exists(args.output) and not os.path.isfile(args.output):
            # a device or a pipe (-o /dev/null): written in place, never renamed over
            with open(args.output, "w", encoding="utf-8", newline="") as handle:
                rows = _write_predictions(model, schema, args, handle, bar)
        else:
            with atomic_file(args.output, "w", encoding="utf-8", newline="") as handle:
                rows = _write_predictions(model, schema, args, handle, bar)
    finally:
        bar.close()
    if not args.quiet:
        where = args.output if args.output is not None else "stdout"
        print(
            f"fastgd predict: {rows:,} predictions written to {where} in "
            f"{time.perf_counter() - started:.2f} s",
            file=sys.stderr,
        )
    return 0


def _evaluate(model, schema, args, bar) -> dict:
    from .io.csv import format_skipped, iter_csv

    classifier = model.kind == "classifier" and model.classes is not None
    if not classifier and model.coef.ndim == 2:
        raise CommandError(
            f"evaluate scores single-output models; this one has {model.coef.shape[0]} outputs."
        )
    rows, correct, log_loss = 0, 0, 0.0
    sse, mean, m2 = 0.0, 0.0, 0.0
    skipped: dict = {}
    skipped_lines: list = []
    for block in iter_csv(
        schema, block_rows=args.block_rows, dtype=args.dtype, on_bad_rows=args.on_bad_rows
    ):
        for reason, count in block.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        skipped_lines.extend(block.skipped_lines[: 10 - len(skipped_lines)])
        if not block.rows:
            continue
        y = block.y.astype(np.float64)
        if classifier:
            known = np.isin(y, model.classes.astype(np.float64))
            if not known.all():
                bad = int(np.flatnonzero(~known)[0])
                line = int(block.line_numbers[bad]) if block.line_numbers is not None else None
                raise CommandError(
                    f"{schema.path}, line {line}, column {schema.target!r}: label {y[bad]:g} "
                    f"is not one of the model's classes {model.classes.tolist()}."
                )
            correct += int(np.sum(model.predict(block.X).astype(np.float64) == y))
            if model.loss == "log_loss":
                if model.coef.ndim == 1:
                    signs = np.where(y == float(model.classes[1]), 1.0, -1.0)
                    scores = model.decision_function(block.X).astype(np.float64)
                    log_loss += float(np.logaddexp(0.0, -signs * scores).sum())
                else:
                    proba = model.predict_proba(block.X)
                    index = np.searchsorted(model.classes.astype(np.float64), y)
                    picked = np.clip(proba[np.arange(block.rows), index], 1e-15, 1.0)
                    log_loss += float(-np.log(picked).sum())
        else:
            residual = model.predict(block.X).astype(np.float64) - y
            sse += float(residual @ residual)
            # the target's variance, merged block by block (Chan et al.)
            block_mean = float(y.mean())
            block_m2 = float(((y - block_mean) ** 2).sum())
            total = rows + block.rows
            delta = block_mean - mean
            mean += delta * block.rows / total
            m2 += block_m2 + delta**2 * rows * block.rows / total
        rows = rows + block.rows
        bar.update(None, rows, None)
    if rows == 0:
        raise CommandError(f"{schema.path}: no data rows to evaluate on.")
    metrics: dict = {"rows": rows}
    if classifier:
        metrics["accuracy"] = correct / rows
        if model.loss == "log_loss":
            metrics["log_loss"] = log_loss / rows
    else:
        metrics["mse"] = sse / rows
        metrics["r2"] = 1.0 - sse / m2 if m2 > 0 else float("nan")
    metrics["skipped"] = format_skipped(skipped, skipped_lines)
    return metrics


def _run_evaluate(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    target = args.target or model.target
    if target is None:
        raise _UsageError("the model does not name its target column; give --target")
    schema = _model_schema(model, args.data, target=target, delimiter=args.delimiter)
    bar = ProgressBar("evaluating", enabled=not args.quiet)
    try:
        metrics = _evaluate(model, schema, args, bar)
    finally:
        bar.close()
    skipped = metrics.pop("skipped")
    for name, value in metrics.items():
        print(f"{name:<10} {value:.6g}" if isinstance(value, float) else f"{name:<10} {value}")
    if skipped and not args.quiet:
        print(f"fastgd evaluate: {skipped}", file=sys.stderr)
    return 0


def _configure_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file from 'fastgd train'")
    parser.add_argument(
        "--json", action="store_true", help="print the metadata and the arrays as one JSON document"
    )


def _run_info(args: argparse.Namespace) -> int:
    import json

    from .io.model import _json_safe

    model = _load_model(args.model)
    if args.json:
        document = model.metadata()
        document["arrays"] = _json_safe(model.arrays())
        print(json.dumps(document, indent=1))
        return 0
    metadata = model.metadata()
    print(f"model file      {_shown_input(args, 'model')}")
    print(
        f"format          {metadata['format']} {metadata['format_version']}, written by "
        f"fastgd {model.version}" + (f" on {model.created}" if model.created else "")
    )
    print(f"kind            {model.kind}, loss {model.loss}, dtype {model.dtype.name}")
    if model.target is not None:
        print(f"target          {model.target}")
    if model.classes is not None:
        print(f"classes         {model.classes.tolist()}")
    print(
        f"intercept       {np.round(model.intercept, 10).tolist()}"
        + (" (standardised features)" if model.scaler is not None else "")
    )
    names = model.feature_names or [f"x{i}" for i in range(model.n_features)]
    rows = np.atleast_2d(model.coef)
    header = ["feature"] + (
        ["coef"] if rows.shape[0] == 1 else [f"coef[{i}]" for i in range(rows.shape[0])]
    )
    if model.scaler is not None:
        raw, _ = model.raw_weights()
        raw_rows = np.atleast_2d(raw)
        header += (
            ["raw coef"] if rows.shape[0] == 1 else [f"raw[{i}]" for i in range(rows.shape[0])]
        )
        header += ["mean", "scale"]
    width = max(12, *(len(name) for name in names))
    print(f"\n{model.n_features} features:")
    print("  " + header[0].ljust(width) + "".join(f"{h:>16}" for h in header[1:]))
    for j, name in enumerate(names):
        values = list(rows[:, j])
        if model.scaler is not None:
            values += [*raw_rows[:, j], model.scaler["mean"][j], model.scaler["scale"][j]]
        print("  " + name.ljust(width) + "".join(f"{float(v):>16.8g}" for v in values))
    print("\noptions:")
    for key, value in metadata["options"].items():
        print(f"  {key:<20} {value}")
    print("\ntraining summary:")
    for key, value in metadata["summary"].items():
        if key == "classes":
            continue
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key:<20} {value}")
    for key in ("loss_history", "validation_scores"):
        curve = model.summary.get(key)
        if curve is not None and len(curve):
            shown = ", ".join(f"{v:.6g}" for v in curve[:5])
            if len(curve) > 10:
                shown += ", ..., " + ", ".join(f"{v:.6g}" for v in curve[-5:])
            elif len(curve) > 5:
                shown += ", " + ", ".join(f"{v:.6g}" for v in curve[5:])
            print(f"  {key:<20} ({len(curve)}) {shown}")
    return 0


# ---------------------------------------------------------------------------------------------
# Files: inputs read once, outputs that never replace an input, checked before any work
# ---------------------------------------------------------------------------------------------

#: What ``-`` as an input file is called in messages.
STDIN_NAME = "<stdin>"


class _Session:
    """What one run of :func:`main` set up and removes at its end (error and Ctrl-C
    included): the temporary copies of inputs that are not regular files, and the names the
    user gave them, so that messages name ``<stdin>`` or ``/dev/fd/63``, not the copy."""

    def __init__(self) -> None:
        self.shown_names: dict[str, str] = {}
        self._folder: str | None = None

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def copy(self, stream, shown: str) -> str:
        """Copy ``stream`` (read once, to its end) to a regular file; return its path."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="fastgd-input-")
        path = os.path.join(self._folder, f"input-{len(self.shown_names) + 1}")
        self.shown_names[path] = shown
        with open(path, "wb") as handle:
            shutil.copyfileobj(stream, handle, 1 << 20)
        return path

    def shown(self, text: str) -> str:
        """``text`` with every temporary copy's path replaced by what the user gave."""
        for path, name in self.shown_names.items():
            text = text.replace(path, name)
        return text


def _regular_input(session: _Session, given: str) -> str:
    """A regular file holding the input ``given``: itself, or a copy of stdin (``-``), a
    FIFO or a process substitution (``<(zcat x.gz)``), which can be read only once while
    the readers open a file several times (the header, then each pass)."""
    if given == "-":
        return session.copy(sys.stdin.buffer, STDIN_NAME)
    try:
        mode = os.stat(given).st_mode
    except OSError:
        return given  # a missing file: the reader says so in its own words
    if stat.S_ISREG(mode):
        return given
    if stat.S_ISDIR(mode):
        raise CommandError(f"{given} is a directory, not a file.")
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        with open(given, "rb") as stream:
            return session.copy(stream, given)
    raise CommandError(f"{given} is not a regular file (nor a pipe); give a file.")


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through symbolic or hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _check_output(given: str, flag: str, inputs: list[str], creates_folders: bool) -> None:
    """Refuse, before any work, an output that is one of the inputs, a directory, or in a
    directory that is missing (unless the command creates it) or not writable."""
    for source in inputs:
        if source != "-" and _same_file(given, source):
            same = "" if os.path.abspath(given) == os.path.abspath(source) else f" ({source})"
            raise CommandError(
                f"{flag} {given} is the command's input{same}; writing there would replace "
                "it. Nothing was written; choose another output file."
            )
    if os.path.isdir(given):
        raise CommandError(f"{flag} {given} is a directory; give a file name.")
    folder = os.path.dirname(given) or "."
    while creates_folders and not os.path.exists(folder):
        folder = os.path.dirname(folder) or "."
    if not os.path.isdir(folder):
        raise CommandError(
            f"{flag} {given}: the directory {folder} does not exist; nothing was done."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(
            f"{flag} {given}: the directory {folder} is not writable; nothing was done."
        )


def _prepare_files(args: argparse.Namespace, session: _Session) -> None:
    """Check the command's outputs against its inputs (as given), then replace each input
    that is not a regular file by a temporary copy."""
    command: Command = args._command
    given = [getattr(args, name) for name in command.inputs if getattr(args, name) is not None]
    if given.count("-") > 1:
        raise _UsageError("only one input can be '-' (stdin).")
    for name, flag in command.outputs:
        output = getattr(args, name)
        if output is not None:
            inputs = [os.fspath(path) for path in given]
            _check_output(os.fspath(output), flag, inputs, command.creates_folders)
    for name in command.inputs:
        value = getattr(args, name)
        if value is not None:
            setattr(args, name, _regular_input(session, os.fspath(value)))


def _shown_input(args: argparse.Namespace, name: str) -> str:
    """The input ``name`` as the user gave it (not its temporary copy)."""
    text = os.fspath(getattr(args, name))
    session = getattr(args, "_session", None)  # set by main()
    return text if session is None else session.shown(text)


# ---------------------------------------------------------------------------------------------
# Failures: one line each, the traceback only with --debug
# ---------------------------------------------------------------------------------------------


def _data_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean unreadable input (a damaged or truncated file), not a bug."""
    import bz2  # noqa: F401  (bz2 reports damage as OSError)
    import lzma
    import zipfile
    import zlib

    types: list[type[BaseException]] = [
        ValueError,
        TypeError,
        OSError,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        zipfile.BadZipFile,
        _stdcsv.Error,
        UnicodeError,
    ]
    with contextlib.suppress(ImportError):
        import zstandard

        types.append(zstandard.ZstdError)
    return tuple(types)


def _data_error_message(error: BaseException, args, session: _Session) -> str:
    """The error's message, naming the file it concerns when it does not already."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, (ValueError, OSError)):  # EOFError, zlib.error, csv.Error, ...
        kind = type(error)
        name = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        what = "not readable as CSV" if isinstance(error, _stdcsv.Error) else "damaged or truncated"
        message = f"the file is {what} ({name.lstrip('_')}: {message})"
    message = session.shown(message)
    names = [
        _shown_input(args, name)
        for name in args._command.inputs
        if getattr(args, name, None) is not None
    ]
    # A bad option (ValueError, TypeError) concerns no file; damaged data often names none
    # (gzip's BadGzipFile, bz2's OSError, EOFError, zlib.error): the data file it is.
    concerns_a_file = not isinstance(error, (ValueError, TypeError)) or isinstance(
        error, UnicodeError
    )
    if concerns_a_file and names and not any(name in message for name in names):
        message = f"{names[-1]}: {message}"
    return message


def _report(error: BaseException, args, session: _Session) -> int:
    """Print one line for ``error`` on stderr; return the exit status."""
    debug = getattr(args, "debug", False)
    if isinstance(error, _UsageError):
        args._parser.print_usage(sys.stderr)
        print(f"fastgd {args.command}: error: {session.shown(str(error))}", file=sys.stderr)
        return 2
    if isinstance(error, KeyboardInterrupt):
        print("fastgd: interrupted.", file=sys.stderr)
        return 130
    if isinstance(error, BrokenPipeError):
        # The reader of stdout went away (``fastgd info m.npz | head``): stop quietly, as
        # command-line tools do, without a second error when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if debug:
        traceback.print_exception(error)
    if isinstance(error, (CommandError, ImportError)):  # ImportError: what to install
        print(f"fastgd: error: {session.shown(str(error))}", file=sys.stderr)
    elif isinstance(error, MemoryError):
        names = [_shown_input(args, n) for n in args._command.inputs if getattr(args, n)]
        print(
            f"fastgd: error: out of memory{' reading ' + names[-1] if names else ''}; try a "
            "smaller --block-rows, --dtype float32, or fewer columns.",
            file=sys.stderr,
        )
    elif isinstance(error, _data_error_types()):
        # CsvError, DivergenceError, ModelFormatError, invalid options, missing files,
        # damaged compressed data: the message names the file (and line, column).
        print(f"fastgd: error: {_data_error_message(error, args, session)}", file=sys.stderr)
    else:
        message = " ".join(session.shown(str(error)).split())
        print(
            f"fastgd: internal error: {type(error).__name__}: {message} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
    return 1


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C raises KeyboardInterrupt, even where SIGINT was inherited as ignored (a job
    started with ``&`` by a shell without job control) or reset to the default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    replace = previous in (signal.SIG_IGN, signal.SIG_DFL, None)
    if replace:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _one_line_warnings(session: _Session):
    """Python warnings raised during a command, as ``fastgd: warning: <message>``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(session.shown(str(message)).split())
        print(f"fastgd: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# ---------------------------------------------------------------------------------------------
# The table of subcommands and main
# ---------------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "playground": Command(
        help="loss curves, a learning-rate sweep and finder, the loss surface, as pictures",
        description=PLAYGROUND_DESCRIPTION,
        configure=_configure_playground,
        run=_run_playground,
        inputs=("data",),
        outputs=(("out", "--out"),),
        creates_folders=True,
    ),
    "train": Command(
        help="train a model on a CSV file of any size and save it",
        description=TRAIN_DESCRIPTION,
        configure=_configure_train,
        run=_run_train,
        inputs=("data",),  # --resume reads MODEL too: it continues (and replaces) it
        outputs=(("model", "--model"),),
    ),
    "predict": Command(
        help="predict with a saved model, streaming a CSV file",
        description=PREDICT_DESCRIPTION,
        configure=_configure_predict,
        run=_run_predict,
        inputs=("model", "data"),
        outputs=(("output", "--output"),),
    ),
    "evaluate": Command(
        help="score a saved model on a CSV file (MSE and R², or accuracy and log loss)",
        description=EVALUATE_DESCRIPTION,
        configure=_configure_evaluate,
        run=_run_evaluate,
        inputs=("model", "data"),
    ),
    "info": Command(
        help="print what a model file holds",
        description=INFO_DESCRIPTION,
        configure=_configure_info,
        run=_run_info,
        inputs=("model",),
    ),
}


class _UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


_DEBUG_HELP = "print the traceback of an unexpected error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgd",
        description="fastgd: fast, trustworthy gradient descent for linear models.",
        epilog="examples:\n  fastgd train data.csv --target y --model model.npz\n"
        "  fastgd evaluate model.npz test.csv\n  fastgd predict model.npz new.csv -o pred.csv\n"
        "  fastgd info model.npz\n  fastgd playground data.csv --target y --out report.html\n\n"
        "'fastgd COMMAND --help' describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastgd {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2)
        return int(exit_.code or 0)
    with _Session() as session, _interruptible(), _one_line_warnings(session):
        args._session = session
        try:
            _prepare_files(args, session)
            return args._command.run(args)
        except Exception as error:
            return _report(error, args, session)
        except KeyboardInterrupt as error:
            return _report(error, args, session)


if __name__ == "__main__":
    sys.exit(main())
