"""``fastgd predict``: predictions of a saved model, streaming a CSV file."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from . import _args, _model
from ._command import Command
from .progress import ProgressBar

HELP = "predict with a saved model, streaming a CSV file"

DESCRIPTION = """\
Predict with a saved model, streaming DATA.csv in blocks. The file needs the model's
feature columns (in any order; other columns, the target among them, are ignored). Writes
one column, 'prediction' (labels for a classifier), one row per data row, to --output
(written to a temporary file, then renamed) or to stdout.

examples:
  fastgd predict houses.npz new_houses.csv --output predictions.csv
  fastgd predict clicks.npz today.csv.gz > predictions.csv
"""


def configure(parser: argparse.ArgumentParser) -> None:
    _args.add_model_and_data(parser)
    parser.add_argument(
        "--output",
        "-o",
        metavar="PRED.csv",
        help="where to write the predictions (default: stdout)",
    )
    _args.add_csv_arguments(parser, bad_rows=False)


def _format_for(values: np.ndarray) -> str:
    if values.dtype.kind in "iub":
        return "%d"
    if values.dtype.kind == "f":
        return "%.9g" if values.dtype == np.float32 else "%.17g"
    return "%s"


def _write_predictions(model, schema, args, handle, bar) -> int:
    from ..io.csv import iter_csv

    columns = 1 if model.coef.ndim == 1 or model.kind == "classifier" else model.coef.shape[0]
    names = ["prediction"] if columns == 1 else [f"prediction_{i}" for i in range(columns)]
    handle.write(",".join(names) + "\n")
    rows = 0
    options = _model.read_options(model)  # a model's encoding: its levels, missing kept
    for block in iter_csv(schema, block_rows=args.block_rows, dtype=args.dtype, **options):
        if not block.rows:
            continue
        predictions = _model.checked_predictions(model, block, schema.path)
        np.savetxt(
            handle, predictions.reshape(block.rows, -1), fmt=_format_for(predictions), delimiter=","
        )
        rows += block.rows
        bar.update(None, rows, None)
    return rows


def _predict_to(output, model, schema, args, bar) -> int:
    """Write to stdout, in place to a device or a pipe, or to a file through a temporary
    file renamed at the end."""
    from ..io.model import atomic_file

    if output is None:
        rows = _write_predictions(model, schema, args, sys.stdout, bar)
        sys.stdout.flush()
        return rows
    if os.path.exists(output) and not os.path.isfile(output):
        # a device or a pipe (-o /dev/null): written in place, never renamed over
        with open(output, "w", encoding="utf-8", newline="") as handle:
            return _write_predictions(model, schema, args, handle, bar)
    with atomic_file(output, "w", encoding="utf-8", newline="") as handle:
        return _write_predictions(model, schema, args, handle, bar)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    model = _model.load_model(args.model)
    schema = _model.model_schema(model, args.data, delimiter=args.delimiter)
    bar = ProgressBar("predicting", enabled=not args.quiet)
    try:
        rows = _predict_to(args.output, model, schema, args, bar)
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


COMMAND = Command(
    HELP, DESCRIPTION, configure, run, inputs=("model", "data"), outputs=(("output", "--output"),)
)
