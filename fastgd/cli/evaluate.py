"""``fastgd evaluate``: a saved model's scores on a CSV file, in one streamed pass."""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from ..metrics import RunningAccuracy, RunningRegression
from . import _args, _model
from ._command import Command, CommandError, UsageError
from ._paths import shown_input
from .progress import ProgressBar

HELP = "score a saved model on a CSV file (MSE and R², or accuracy and log loss)"

DESCRIPTION = """\
Score a saved model on DATA.csv in one streamed pass: regression models print the mean
squared error and R²; classifiers the accuracy (and the log loss for log_loss models).
When 'fastgd train' left a valid cache of the file (the same columns and --dtype), the rows
are read from it, without parsing the CSV (see 'fastgd cache info DATA.csv'). A model
'fastgd train' fitted on a CSV imputes missing feature cells as in training, also one
trained with --missing skip; a level its text column never had in training reads as that
column's other level, and the summary counts such cells per column.

examples:
  fastgd evaluate houses.npz test.csv --target price
  fastgd evaluate clicks.npz holdout.csv          # the target column the model was trained on
"""


def configure(parser: argparse.ArgumentParser) -> None:
    _args.add_model_and_data(parser)
    parser.add_argument(
        "--target",
        metavar="COL",
        help="the target column (default: the one the model was trained on)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where 'fastgd train --cache-dir' put the cache (default: next to the CSV)",
    )
    _args.add_csv_arguments(parser)


class _ClassifierScores:
    """Accuracy, and the log loss of log_loss models, block by block. The true labels are
    compared as positions in ``model.classes``: numbers as read, or text labels (a text
    target is read as codes: positions in the model's classes through ``read_options``,
    or the training cache's own level codes)."""

    def __init__(self, model, schema) -> None:
        self.model = model
        self.schema = schema
        self.text_target = schema.column_types.get(schema.target) == "text"
        self.position = {str(label): i for i, label in enumerate(model.classes.tolist())}
        self.accuracy = RunningAccuracy()
        self.log_loss = 0.0 if model.loss == "log_loss" else None

    def _true_positions(self, block, y: np.ndarray) -> np.ndarray:
        """Each row's label as its position in the model's classes; an unknown label is
        an error naming its line."""
        classes = self.model.classes
        if not self.text_target:
            index = np.searchsorted(classes, y).clip(0, classes.shape[0] - 1)
            known = classes[index] == y
        elif (
            block.levels is not None
            and block.levels.target_levels is not None
            and (
                len(block.levels.target_levels) != classes.shape[0]
                or list(block.levels.target_levels) != [str(c) for c in classes.tolist()]
            )
        ):
            # the training cache's codes: first-seen order of the training table
            names = list(block.levels.target_levels)
            lookup = np.array([self.position.get(name, -1) for name in names] + [-1])
            index = lookup[np.where(y >= 0, y, len(names)).astype(np.int64)]
            known = index >= 0
        else:
            index = y.astype(np.int64)  # read_options: positions in model.classes, -2 unseen
            known = index >= 0
        if not known.all():
            bad = int(np.flatnonzero(~known)[0])
            line = int(block.line_numbers[bad]) if block.line_numbers is not None else None
            shown = "a text label" if self.text_target else f"label {y[bad]:g}"
            raise CommandError(
                f"{self.schema.path}, line {line}, column {self.schema.target!r}: {shown} "
                f"that is not one of the model's classes {classes.tolist()}."
            )
        return index

    def add(self, block, y: np.ndarray) -> None:
        index = self._true_positions(block, y)
        predicted = _model.checked_predictions(self.model, block, self.schema.path)
        self.accuracy.add(self.model.classes[index], predicted)
        if self.log_loss is not None:
            self.log_loss += self._log_loss_sum(_model.model_input(self.model, block), index)

    def _log_loss_sum(self, X, index: np.ndarray) -> float:
        if self.model.coef.ndim == 1:
            signs = np.where(index == 1, 1.0, -1.0)
            scores = self.model.decision_function(X).astype(np.float64)
            return float(np.logaddexp(0.0, -signs * scores).sum())
        proba = self.model.predict_proba(X)
        picked = np.clip(proba[np.arange(index.shape[0]), index], 1e-15, 1.0)
        return float(-np.log(picked).sum())

    def metrics(self) -> dict:
        rows = self.accuracy.rows
        metrics = {"rows": rows, "accuracy": self.accuracy.accuracy()}
        if self.log_loss is not None:
            metrics["log_loss"] = self.log_loss / rows
        return metrics


class _RegressionScores:
    """The mean squared error and R², block by block."""

    def __init__(self, model, schema) -> None:
        self.model = model
        self.schema = schema
        self.running = RunningRegression()

    def add(self, block, y: np.ndarray) -> None:
        predicted = _model.checked_predictions(self.model, block, self.schema.path)
        with np.errstate(over="ignore"):  # finite but huge errors: an mse of inf, said plainly
            self.running.add(y, predicted)

    def metrics(self) -> dict:
        return {"rows": self.running.rows, "mse": self.running.mse, "r2": self.running.r2()}


def _scores(model, schema):
    if model.kind == "classifier" and model.classes is not None:
        return _ClassifierScores(model, schema)
    if model.coef.ndim == 2:
        raise CommandError(
            f"evaluate scores single-output models; this one has {model.coef.shape[0]} outputs."
        )
    return _RegressionScores(model, schema)


def _training_cache(schema, args):
    """The valid cache ``fastgd train`` left for this file, columns and dtype, or None.
    Not one written while skipping bad rows when this run must stop at them."""
    from ..io.cache import BlockCache

    cache = BlockCache.open(schema, dtype=args.dtype, cache_dir=args.cache_dir)
    # rows without a target are skipped in every mode; only other skips void the cache
    bad_rows = {reason for reason in (cache.skipped if cache else {}) if reason != "missing_target"}
    if cache is not None and bad_rows and args.on_bad_rows == "error":
        cache.close()
        return None
    return cache


def _score(scores, blocks, bar, skipped: dict, skipped_lines: list) -> dict:
    """Add every block to ``scores``; the metrics and the rows left out, in words."""
    from ..io.csv import SKIPPED_LINES_KEPT, format_skipped

    rows = 0
    unseen = _model.UnseenLevels()
    for block in blocks:
        for reason, count in block.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        skipped_lines.extend(block.skipped_lines[: SKIPPED_LINES_KEPT - len(skipped_lines)])
        if not block.rows:
            continue
        scores.add(block, block.y.astype(np.float64))
        unseen.add(block)
        rows += block.rows
        bar.update(None, rows, None)
    if rows == 0:
        raise CommandError(f"{scores.schema.path}: no data rows to evaluate on.")
    skipped = format_skipped(skipped, skipped_lines)
    return {**scores.metrics(), "skipped": skipped, "unseen": unseen}


def evaluate(model, schema, args, bar) -> dict:
    """The metrics of ``model`` on the file of ``schema``, and ``skipped``: the bad rows
    left out (with --on-bad-rows skip), in words. The rows come from the training cache
    when it is valid for this file (the binary rows, no parsing), else from the CSV."""
    from ..io.cache import CacheChecksumError
    from ..io.csv import iter_csv

    cache = _training_cache(schema, args)
    if cache is not None:
        try:
            blocks = cache.blocks(args.block_rows)  # each chunk's checksum checked
            scores = _score(
                _scores(model, schema), blocks, bar, dict(cache.skipped), list(cache.skipped_lines)
            )
            return {**scores, "source": str(cache.path)}
        except CacheChecksumError as error:
            message = f"the training cache {cache.path} is not used: {error.reason}"
            warnings.warn(f"{message}; reading the CSV instead.", stacklevel=2)
        finally:
            cache.close()
    blocks = iter_csv(
        schema, block_rows=args.block_rows, dtype=args.dtype, on_bad_rows=args.on_bad_rows,
        **_model.read_options(model, schema),  # the model's encoding and text labels
    )  # fmt: skip
    return {**_score(_scores(model, schema), blocks, bar, {}, []), "source": None}


def run(args: argparse.Namespace) -> int:
    model = _model.load_model(args.model)
    target = args.target or model.target
    if target is None:
        raise UsageError("the model does not name its target column; give --target")
    schema = _model.model_schema(model, args.data, target=target, delimiter=args.delimiter)
    bar = ProgressBar("evaluating", enabled=not args.quiet)
    try:
        metrics = evaluate(model, schema, args, bar)
    finally:
        bar.close()
    skipped = metrics.pop("skipped")
    source = metrics.pop("source")
    unseen = metrics.pop("unseen")
    unseen.warn(args.data)
    notes = "".join(f"; {note}" for note in (skipped, unseen.summary()) if note)
    for name, value in metrics.items():
        print(f"{name:<10} {value:.6g}" if isinstance(value, float) else f"{name:<10} {value}")
    if not args.quiet:
        read = f"the training cache {source}" if source else shown_input(args, "data")
        print(f"fastgd evaluate: read {read}{notes}", file=sys.stderr)
    return 0


COMMAND = Command(HELP, DESCRIPTION, configure, run, inputs=("model", "data"))
