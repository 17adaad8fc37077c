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
are read from it, without parsing the CSV (see 'fastgd cache info DATA.csv').

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
    """Accuracy, and the log loss of log_loss models, block by block."""

    def __init__(self, model, schema) -> None:
        self.model = model
        self.schema = schema
        self.classes = model.classes.astype(np.float64)
        self.accuracy = RunningAccuracy()
        self.log_loss = 0.0 if model.loss == "log_loss" else None

    def add(self, block, y: np.ndarray) -> None:
        known = np.isin(y, self.classes)
        if not known.all():
            bad = int(np.flatnonzero(~known)[0])
            line = int(block.line_numbers[bad]) if block.line_numbers is not None else None
            raise CommandError(
                f"{self.schema.path}, line {line}, column {self.schema.target!r}: label "
                f"{y[bad]:g} is not one of the model's classes {self.model.classes.tolist()}."
            )
        predicted = _model.checked_predictions(self.model, block, self.schema.path)
        self.accuracy.add(y, predicted.astype(np.float64))
        if self.log_loss is not None:
            self.log_loss += self._log_loss_sum(block.X, y)

    def _log_loss_sum(self, X: np.ndarray, y: np.ndarray) -> float:
        if self.model.coef.ndim == 1:
            signs = np.where(y == self.classes[1], 1.0, -1.0)
            scores = self.model.decision_function(X).astype(np.float64)
            return float(np.logaddexp(0.0, -signs * scores).sum())
        proba = self.model.predict_proba(X)
        index = np.searchsorted(self.classes, y)
        picked = np.clip(proba[np.arange(y.shape[0]), index], 1e-15, 1.0)
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
    if cache is not None and cache.skipped and args.on_bad_rows == "error":
        cache.close()
        return None
    return cache


def _score(scores, blocks, bar, skipped: dict, skipped_lines: list) -> dict:
    """Add every block to ``scores``; the metrics and the rows left out, in words."""
    from ..io.csv import SKIPPED_LINES_KEPT, format_skipped

    rows = 0
    for block in blocks:
        for reason, count in block.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        skipped_lines.extend(block.skipped_lines[: SKIPPED_LINES_KEPT - len(skipped_lines)])
        if not block.rows:
            continue
        scores.add(block, block.y.astype(np.float64))
        rows += block.rows
        bar.update(None, rows, None)
    if rows == 0:
        raise CommandError(f"{scores.schema.path}: no data rows to evaluate on.")
    return {**scores.metrics(), "skipped": format_skipped(skipped, skipped_lines)}


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
        schema, block_rows=args.block_rows, dtype=args.dtype, on_bad_rows=args.on_bad_rows
    )
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
    for name, value in metrics.items():
        print(f"{name:<10} {value:.6g}" if isinstance(value, float) else f"{name:<10} {value}")
    if not args.quiet:
        read = f"the training cache {source}" if source else shown_input(args, "data")
        print(f"fastgd evaluate: read {read}{'; ' + skipped if skipped else ''}", file=sys.stderr)
    return 0


COMMAND = Command(HELP, DESCRIPTION, configure, run, inputs=("model", "data"))
