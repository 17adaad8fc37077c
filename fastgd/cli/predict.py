"""``fastgd predict``: predictions of a saved model, streaming a CSV file.

One output row per data row of the file, in order: a row the model cannot use (with
``--on-bad-rows skip``) gets empty prediction cells, so the output lines up with the input
row for row; blank lines are not data rows (the reader ignores them) and get none. Where
rows are left out or ``--id-columns`` are copied, a second, sequential reader of the file's
raw lines runs beside the block reader (see :class:`_RawLines`)."""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import os
import sys
import time

import numpy as np

from . import _args, _model
from ._command import Command, CommandError, UsageError
from .progress import ProgressBar

HELP = "predict with a saved model, streaming a CSV file"

DESCRIPTION = """\
Predict with a saved model, streaming DATA.csv in blocks. The file needs the model's
feature columns (in any order; other columns, the target among them, are ignored). Writes
one row per data row to --output (written to a temporary file, then renamed) or to stdout:
the --id-columns first (copied as they are), then 'prediction' (labels for a classifier),
or with --proba one probability column per class, 'proba_<class>'. With --on-bad-rows skip
a row that cannot be used (a missing or non-numeric cell, a wrong field count) gets empty
prediction cells and is counted in the summary; blank lines are not rows. A model
'fastgd train' fitted on a CSV imputes missing cells as in training, also one trained
with --missing skip; a level its text column never had in training reads as that column's
other level, and the summary counts such cells per column.

examples:
  fastgd predict houses.npz new_houses.csv --output predictions.csv
  fastgd predict clicks.npz today.csv.gz --id-columns user_id --proba > proba.csv
  fastgd predict houses.npz messy.csv --on-bad-rows skip --id-columns id -o pred.csv
"""


def configure(parser: argparse.ArgumentParser) -> None:
    _args.add_model_and_data(parser)
    parser.add_argument(
        "--output",
        "-o",
        metavar="PRED.csv",
        help="where to write the predictions (default: stdout)",
    )
    parser.add_argument(
        "--id-columns",
        type=_args.column_names,
        metavar="NAME[,NAME]",
        help="columns copied to the output before the predictions (e.g. an id)",
    )
    parser.add_argument(
        "--proba",
        action="store_true",
        help="class probabilities, one column per class (log_loss and modified_huber models)",
    )
    _args.add_csv_arguments(
        parser,
        skip_help="or give a row that cannot be used empty prediction cells, keeping one "
        "output row per data row, and count it",
    )


# -- what one row of predictions looks like --------------------------------------------------


def _format_for(values: np.ndarray) -> str:
    if values.dtype.kind in "iub":
        return "%d"
    if values.dtype.kind == "f":
        return "%.9g" if values.dtype == np.float32 else "%.17g"
    return "%s"


def _quoted(cell: str) -> str:
    """One output cell, quoted as CSV needs (a comma, a quote or a line break in it)."""
    if any(char in cell for char in ',"\r\n') or cell != cell.strip():
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _prediction_text(values: np.ndarray) -> str:
    """The rows of ``values`` (n, or n × k) as CSV lines, each ending in a line feed."""
    values = values.reshape(values.shape[0], -1)
    if values.dtype.kind in "OUS":  # text labels: quoted where they need it
        return "".join(",".join(_quoted(str(v)) for v in row) + "\n" for row in values)
    import io

    buffer = io.StringIO()
    np.savetxt(buffer, values, fmt=_format_for(values), delimiter=",")
    return buffer.getvalue()


def _label_name(label) -> str:
    """A class label as the prediction column writes it (1.0 reads ``1``)."""
    return f"{label:.17g}" if isinstance(label, float) else str(label)


class _Predictor:
    """The model's output for a block: labels or values, or with ``--proba`` the class
    probabilities; and the output's header."""

    def __init__(self, model, schema, proba: bool):
        self.model = model
        self.path = schema.path
        self.proba = proba
        if proba:
            self.names = [f"proba_{_label_name(label)}" for label in model.classes.tolist()]
        elif model.coef.ndim == 1 or model.kind == "classifier":
            self.names = ["prediction"]
        else:
            self.names = [f"prediction_{i}" for i in range(model.coef.shape[0])]

    def __call__(self, block) -> np.ndarray:
        if not self.proba:
            return _model.checked_predictions(self.model, block, self.path)
        # the same input the labels are computed from (checked_predictions' block.X)
        with np.errstate(over="ignore", invalid="ignore"):
            proba = self.model.predict_proba(_model.model_input(self.model, block))
        finite = np.isfinite(proba).all(axis=1)
        if not finite.all():
            _model.checked_predictions(self.model, block, self.path)  # names the line
            bad = int(np.flatnonzero(~finite)[0])
            raise CommandError(
                f"{self.path}, line {int(block.line_numbers[bad])}: the model's class "
                "probabilities are not finite."
            )
        return proba


def check_proba(model) -> None:
    """--proba needs a classifier of a loss with probabilities (a usage error, exit 2)."""
    from ..prediction import PROBABILITY_LOSSES

    if model.kind == "classifier" and model.classes is not None:
        if model.loss in PROBABILITY_LOSSES:
            return
        what = f"a classifier trained with --loss {model.loss}"
    else:
        what = f"a regressor (--loss {model.loss})"
    losses = " or ".join(f"--loss {name}" for name in PROBABILITY_LOSSES)
    raise UsageError(
        f"--proba needs a classifier trained with {losses}; this model is {what}. Leave "
        "--proba out for its predictions."
    )


# -- the file's rows ----------------------------------------------------------------------------


class _RawLines:
    """The file's lines by number (1 = the first line of the file), read forward once by a
    stream of its own (decompressed as the block reader does), line ends as ``\\n`` counts
    them, exactly as the block reader numbers its rows."""

    def __init__(self, schema):
        from ..io.csv import open_binary  # the reader's own opening (compression)

        self._stream = open_binary(schema.path, schema.compression)
        self._next = 1  # the number of the line the stream gives next

    def lines(self, first: int, last: int | None = None) -> list[bytes]:
        """Lines ``first`` to ``last`` (to the end of the file: None), ``first`` not before
        the lines already read."""
        if first < self._next:
            raise ValueError(f"line {first} was already read (next: {self._next}).")
        # skip at C speed: a zero-length deque consumes the iterator without a Python loop
        collections.deque(itertools.islice(self._stream, first - self._next), maxlen=0)
        self._next = first
        count = None if last is None else last - first + 1
        taken = list(itertools.islice(self._stream, count))
        self._next += len(taken)
        return taken

    def close(self) -> None:
        self._stream.close()


def _is_blank(raw: bytes) -> bool:
    """Blank lines carry no row (the reader skips them, counting nothing)."""
    return not raw.strip()


class _RowWriter:
    """Writes the output rows in file order: the predictions of the rows the block reader
    gave, and, where its line numbers jump over lines that are not blank (rows it left
    out), empty prediction cells; with ``--id-columns``, each row's id cells first."""

    def __init__(self, handle, schema, predictor: _Predictor, id_columns: list[str] | None):
        self.handle = handle
        self.schema = schema
        self.predictor = predictor
        positions = schema.column_positions
        self.id_positions = [positions[name] for name in id_columns or []]
        self.empty = "," * (len(predictor.names) - 1)
        self.next_line = schema.first_data_line
        self.raw: _RawLines | None = None
        self.rows = self.predicted = self.left_out = 0
        self.reported_skipped = 0
        header = [*(id_columns or []), *predictor.names]
        handle.write(",".join(_quoted(name) for name in header) + "\n")

    def add(self, block) -> None:
        """One block from the reader: its predictions, and empty rows for the lines it left
        out before them."""
        self.reported_skipped += sum(block.skipped.values())
        if not block.rows:
            return
        text = _prediction_text(self.predictor(block))
        lines = block.line_numbers
        last = int(lines[-1])
        gapless = last - self.next_line + 1 == block.rows
        if gapless and not self.id_positions:
            self.handle.write(text)
        else:
            self._interleave(lines, text.splitlines())
        self.rows += block.rows
        self.predicted += block.rows
        self.next_line = last + 1

    def _raw_lines(self, first: int, last: int | None) -> list[bytes]:
        if self.raw is None:
            self.raw = _RawLines(self.schema)
        return self.raw.lines(first, last)

    def _interleave(self, lines: np.ndarray, predictions: list[str]) -> None:
        """Lines ``next_line`` to the block's last: a prediction for each of the block's
        rows, empty cells for each other line that is not blank."""
        first, last = self.next_line, int(lines[-1])
        raw = self._raw_lines(first, last)
        if len(raw) != last - first + 1:
            raise CommandError(f"{self.schema.path} changed while it was read; run again.")
        good = np.zeros(len(raw), dtype=bool)
        good[lines - first] = True
        out: list[str] = []
        taken = iter(predictions)
        for offset, line in enumerate(raw):
            if good[offset]:
                cells = next(taken)
            elif _is_blank(line):
                continue
            else:
                cells = self.empty
                self.left_out += 1
                self.rows += 1
            out.append(self._with_ids(line, first + offset, cells) if self.id_positions else cells)
        self.handle.write("\n".join(out) + "\n")

    def _with_ids(self, raw: bytes, line: int, cells: str) -> str:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark before the first row of a headerless file
        fields = _fields(text, self.schema.delimiter)
        ids = [fields[i] if i < len(fields) else "" for i in self.id_positions]
        return ",".join(_quoted(cell) for cell in ids) + "," + cells

    def finish(self) -> None:
        """The rows left out after the last row the reader gave (it counted them)."""
        after = self.reported_skipped - self.left_out
        if self.raw is not None or (after > 0 and self.id_positions):
            first = self.next_line
            rest = [
                (first + offset, line)
                for offset, line in enumerate(self._raw_lines(first, None))
                if not _is_blank(line)
            ]
            if self.id_positions:
                rest_rows = [self._with_ids(line, number, self.empty) for number, line in rest]
            else:
                rest_rows = [self.empty] * len(rest)
        else:
            rest_rows = [self.empty] * max(after, 0)
        if rest_rows:
            self.handle.write("\n".join(rest_rows) + "\n")
        self.left_out += len(rest_rows)
        self.rows += len(rest_rows)
        if self.raw is not None:
            self.raw.close()


def _fields(text: str, delimiter: str) -> list[str]:
    """A line's cells (the csv module's reading where there are quotes; a line it cannot
    split gives its plain pieces: an id is copied as it stands)."""
    if '"' not in text:
        return text.split(delimiter)
    try:
        return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        return text.split(delimiter)


def _write_predictions(model, schema, args, handle, bar) -> dict:
    """Write every row; return the counts and the rows left out, in words."""
    from ..io.csv import SKIPPED_LINES_KEPT, format_skipped, iter_csv

    writer = _RowWriter(handle, schema, _Predictor(model, schema, args.proba), args.id_columns)
    skipped: dict = {}
    skipped_lines: list = []
    unseen = _model.UnseenLevels()
    blocks = iter_csv(
        schema, block_rows=args.block_rows, dtype=args.dtype, on_bad_rows=args.on_bad_rows,
        **_model.read_options(model),  # a model's encoding: its levels, missing cells kept
    )  # fmt: skip
    for block in blocks:
        for reason, count in block.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        skipped_lines.extend(block.skipped_lines[: SKIPPED_LINES_KEPT - len(skipped_lines)])
        writer.add(block)
        unseen.add(block)
        bar.update(None, writer.rows, None)
    writer.finish()
    return {
        "rows": writer.rows,
        "predicted": writer.predicted,
        "left_out": writer.left_out,
        "skipped": format_skipped(skipped, skipped_lines),
        "unseen": unseen,
    }


def _predict_to(output, model, schema, args, bar) -> dict:
    """Write to stdout, in place to a device or a pipe, or to a file through a temporary
    file renamed at the end."""
    from ..io.model import atomic_file

    if output is None:
        counts = _write_predictions(model, schema, args, sys.stdout, bar)
        sys.stdout.flush()
        return counts
    if os.path.exists(output) and not os.path.isfile(output):
        # a device or a pipe (-o /dev/null): written in place, never renamed over
        with open(output, "w", encoding="utf-8", newline="") as handle:
            return _write_predictions(model, schema, args, handle, bar)
    with atomic_file(output, "w", encoding="utf-8", newline="") as handle:
        return _write_predictions(model, schema, args, handle, bar)


def _check_id_columns(schema, names: list[str] | None) -> None:
    if not names:
        return
    missing = [name for name in names if name not in schema.column_positions]
    if missing:
        shown = ", ".join(repr(name) for name in missing)
        raise CommandError(
            f"{schema.path}: --id-columns {shown} not in the file's header "
            f"(its columns: {', '.join(schema.columns[:20])}"
            f"{', ...' if len(schema.columns) > 20 else ''})."
        )


def _summary(counts: dict, where: str, seconds: float) -> str:
    text = f"fastgd predict: {counts['rows']:,} rows written to {where}"
    if counts["left_out"]:
        text += (
            f" ({counts['predicted']:,} predictions, {counts['left_out']:,} left empty: "
            f"{counts['skipped']})"
        )
    text += f" in {seconds:.2f} s"
    unseen = counts["unseen"].summary()
    return text + (f"; {unseen}" if unseen else "")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    model = _model.load_model(args.model)
    if args.proba:
        check_proba(model)
    schema = _model.model_schema(model, args.data, delimiter=args.delimiter)
    _check_id_columns(schema, args.id_columns)
    bar = ProgressBar("predicting", enabled=not args.quiet)
    try:
        counts = _predict_to(args.output, model, schema, args, bar)
    finally:
        bar.close()
    counts["unseen"].warn(args.data)
    if not args.quiet:
        where = args.output if args.output is not None else "stdout"
        print(_summary(counts, where, time.perf_counter() - started), file=sys.stderr)
    return 0


COMMAND = Command(
    HELP, DESCRIPTION, configure, run, inputs=("model", "data"), outputs=(("output", "--output"),)
)
