"""``fastgd info``: everything a model file holds, or the schema of a CSV file.

Which one: a file whose name ends in ``.npz`` or that starts with the zip signature (what
``fastgd train`` writes, also through stdin) is a model, as is what is not a regular file
(the model loader names the problem); any other file is read as a CSV.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from ._args import add_csv_arguments
from ._command import Command
from ._model import load_model
from ._paths import shown_input

HELP = "print what a model file holds, or the columns of a CSV file"

DESCRIPTION = """\
For a model file: everything it holds: format and versions, loss, features with their
weights (and the scaler's means and scales), options, and the training summary.

For a CSV file: its schema, read in one streaming pass: a row per column with its type
(numeric or text, from the first 64 KiB; --categorical forces text), its missing cells,
and its distinct values (text) or minimum, maximum and mean (numeric), and the row count.
Rows that cannot be read are counted, not fatal.

examples:
  fastgd info houses.npz
  fastgd info houses.npz --json
  fastgd info flights.csv
  fastgd info flights.csv --categorical month,day --json
"""

#: The first bytes of a zip archive: a model file (numpy's .npz).
ZIP_MAGIC = b"PK\x03\x04"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="a model file from 'fastgd train', or a CSV file"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (a model's metadata and arrays, or a CSV's columns)",
    )
    add_csv_arguments(parser, bad_rows=False)  # a CSV's rows that cannot be read are counted
    parser.add_argument(
        "--categorical",
        metavar="NAME[,NAME]",
        help="columns read as text whatever they hold",
    )


def _print_header(model, metadata: dict, shown: str) -> None:
    print(f"model file      {shown}")
    print(
        f"format          {metadata['format']} {metadata['format_version']}, written by "
        f"fastgd {model.version}" + (f" on {model.created}" if model.created else "")
    )
    multiclass = f", multiclass {model.multiclass}" if model.multiclass else ""
    print(f"kind            {model.kind}, loss {model.loss}{multiclass}, dtype {model.dtype.name}")
    if model.target is not None:
        print(f"target          {model.target}")
    if model.classes is not None:
        print(f"classes         {model.classes.tolist()}")
    print(
        f"intercept       {np.round(model.intercept, 10).tolist()}"
        + (" (standardised features)" if model.scaler is not None else "")
    )


def _print_weights(model) -> None:
    """A row per feature: its weight(s), and with a scaler the raw weights, mean, scale."""
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


def _print_summary(model, metadata: dict) -> None:
    print("\noptions:")
    for key, value in metadata["options"].items():
        print(f"  {key:<20} {value}")
    print("\ntraining summary:")
    for key, value in metadata["summary"].items():
        if key in ("classes", "rng_state"):  # rng_state: --resume's row-order generator
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


def is_model_file(path) -> bool:
    """Whether ``fastgd info`` reads ``path`` as a model (see the module's docstring)."""
    if os.fspath(path).lower().endswith(".npz") or not os.path.isfile(path):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError:
        return True  # unreadable: the model loader says why


def _run_model(args: argparse.Namespace) -> int:
    import json

    from ..io.model import json_safe

    model = load_model(args.file)
    metadata = model.metadata()
    if args.json:
        metadata["arrays"] = json_safe(model.arrays())
        print(json.dumps(metadata, indent=1))
        return 0
    _print_header(model, metadata, shown_input(args, "file"))
    _print_weights(model)
    _print_summary(model, metadata)
    return 0


def run(args: argparse.Namespace) -> int:
    if is_model_file(args.file):
        return _run_model(args)
    return _run_csv(args)


# --------------------------------------------------------------------------- CSV schema


class _NumericStats:
    """Missing count, minimum, maximum and sum of each numeric column, block by block."""

    def __init__(self, n: int):
        self.missing = np.zeros(n, dtype=np.int64)
        self.present = np.zeros(n, dtype=np.int64)
        self.total = np.zeros(n, dtype=np.float64)
        self.low = np.full(n, np.nan)
        self.high = np.full(n, np.nan)

    def add(self, X: np.ndarray) -> None:
        absent = np.isnan(X)
        self.missing += absent.sum(axis=0)
        self.present += X.shape[0] - absent.sum(axis=0)
        self.total += np.where(absent, 0.0, X).sum(axis=0, dtype=np.float64)
        # fmin/fmax pass over NaN (a missing cell), with no warning for an all-NaN column
        self.low = np.fmin(self.low, np.fmin.reduce(X, axis=0, initial=np.nan))
        self.high = np.fmax(self.high, np.fmax.reduce(X, axis=0, initial=np.nan))

    def row(self, j: int) -> dict:
        mean = self.total[j] / self.present[j] if self.present[j] else None
        low, high = self.low[j], self.high[j]
        return {
            "missing": int(self.missing[j]),
            "min": None if np.isnan(low) else float(low),
            "max": None if np.isnan(high) else float(high),
            "mean": mean,
        }


def csv_summary(path, *, delimiter=None, categorical=None, block_rows=65536, dtype="float64"):
    """The schema view of a CSV: ``{"file", "delimiter", "header", "compression",
    "rows", "skipped", "skipped_text", "columns": [{"name", "type", "missing", ...}]}``,
    from one pass (memory: a block and the text columns' levels)."""
    from ..io.csv import format_skipped, iter_csv, read_schema

    schema = read_schema(path, delimiter=delimiter, categorical=categorical)
    numeric = _NumericStats(len(schema.numeric_features))
    rows, skipped, skipped_lines, table = 0, {}, [], None
    blocks = iter_csv(
        schema, block_rows=block_rows, dtype=dtype, missing="keep", on_bad_rows="skip"
    )
    for block in blocks:
        numeric.add(block.X)
        rows += block.rows
        table = block.levels
        for reason, count in block.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        skipped_lines.extend(block.skipped_lines[: 10 - len(skipped_lines)])
    columns = {name: numeric.row(j) for j, name in enumerate(schema.numeric_features)}
    for j, name in enumerate(schema.text_features):
        counts = table.counts[j]
        top = int(np.argmax(counts)) if counts.size else None
        columns[name] = {
            "missing": table.missing[j],
            "distinct": len(table.levels[j]),
            "top": None if top is None else table.levels[j][top],
            "top_count": None if top is None else int(counts[top]),
        }
    return {
        "file": schema.path,
        "delimiter": schema.delimiter,
        "header": schema.has_header,
        "compression": schema.compression,
        "rows": rows,
        "skipped": skipped,
        "skipped_text": format_skipped(skipped, skipped_lines),
        "columns": [
            {"name": name, "type": schema.column_types[name], **columns[name]}
            for name in schema.feature_names
        ],
    }


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _run_csv(args: argparse.Namespace) -> int:
    import json

    summary = csv_summary(
        args.file,
        delimiter=args.delimiter,
        categorical=args.categorical,
        block_rows=args.block_rows,
        dtype=args.dtype,
    )
    summary["file"] = shown_input(args, "file")
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    columns = summary["columns"]
    kinds = [column["type"] for column in columns]
    layout = f"delimiter {summary['delimiter']!r}, " + (
        "header row" if summary["header"] else "no header row"
    )
    if summary["compression"]:
        layout += f", {summary['compression']}"
    print(f"data file       {summary['file']}")
    print(f"layout          {layout}")
    print(f"rows            {summary['rows']:,}")
    if summary["skipped_text"]:
        print(f"                {summary['skipped_text']}")
    print(
        f"columns         {len(columns)} ({kinds.count('numeric')} numeric, "
        f"{kinds.count('text')} text)"
    )
    header = ["column", "type", "missing", "distinct", "min", "max", "mean", "most frequent"]
    table = [
        [
            column["name"],
            column["type"],
            _cell(column["missing"]),
            *[_cell(column.get(key)) for key in ("distinct", "min", "max", "mean")],
            "-" if column.get("top") is None else f"{column['top']} ({column['top_count']:,})",
        ]
        for column in columns
    ]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    print()
    for row in [header, *table]:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:-1], widths[2:-1], strict=True)]
        print("  " + "  ".join([*cells, row[-1]]).rstrip())
    return 0


COMMAND = Command(HELP, DESCRIPTION, configure, run, inputs=("file",))
