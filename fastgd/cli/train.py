"""``fastgd train``: a model trained on a CSV file of any size (:func:`fastgd.fit_csv`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import parameters
from . import _args
from ._command import Command, CommandError, UsageError
from ._model import check_replaceable_model, load_model, model_schema
from ._paths import is_temporary_copy, shown_input
from .checkpoint import Checkpointer, previous_progress, rng_state
from .progress import ProgressBar

HELP = "train a model on a CSV file of any size and save it"

DESCRIPTION = """\
Train a linear model on a CSV file of any size (fastgd.fit_csv: the file is read once into
a binary cache next to it, or in --cache-dir; every epoch streams the cache in blocks) and
save it to MODEL (fastgd.save: a versioned .npz archive; see 'fastgd info').

Numeric columns are standardised (--no-standardize: as they are), text columns one-hot
encoded (--max-categories, or --hash-features), missing cells imputed with an indicator
(--missing); a text target with a classification loss predicts its own labels. A progress
bar shows on a terminal (rows/s, epoch, loss; --quiet turns it off); a one-line summary
ends the run.
With --checkpoint the model is saved after every epoch, so Ctrl-C (exit 130) or a
divergence (exit 1; the best weights reached are saved) leaves the last good model in
MODEL; --resume continues from it (weights, the optimizer's state and step counter,
epochs counted on top) with its encoding: its features, kept levels (a level it does not
know counts as other), means and scales, whatever levels the data holds.

examples:
  fastgd train houses.csv --target price --model houses.npz
  fastgd train houses.csv --target price --model houses.npz --missing skip \\
      --strategy sgd --learning-rate invscaling --eta0 0.01 --epochs 10
  fastgd train clicks.csv.gz --target clicked --drop id --loss log_loss --penalty l2 \\
      --model clicks.npz --on-bad-rows skip --checkpoint
  fastgd train clicks.csv.gz --target clicked --model clicks.npz --resume --epochs 5
"""


def _configure_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA.csv", help="CSV file with a header row (.gz, .bz2, .zst too)"
    )
    parser.add_argument(
        "--target", metavar="COL", help="the target column (with --resume: default the model's)"
    )
    parser.add_argument(
        "--model", metavar="MODEL", required=True, help="where to save the model (e.g. model.npz)"
    )
    _args.add_column_arguments(parser)


def _configure_fit(parser: argparse.ArgumentParser) -> None:
    fit = parser.add_argument_group(
        "training (default: fastgd.fit's, or the model's with --resume)"
    )
    # The flags, their types, choices and help come from the parameter table.
    for row in parameters.cli_parameters():
        fit.add_argument(row.flag, **parameters.argparse_keywords(row))
    _args.add_standardize_argument(fit, keeps="the model keeps the scaler")
    parser.set_defaults(standardize=None)  # neither given: on, or the resumed model's
    _args.add_encoding_arguments(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    _configure_data(parser)
    _configure_fit(parser)
    _args.add_csv_arguments(parser)
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where the binary cache goes (default: next to the CSV)"
    )
    for flag, text in _SWITCHES:
        parser.add_argument(flag, action="store_true", help=text)


#: train's on/off flags, and their help.
_SWITCHES = (
    ("--no-cache", "write no cache: every epoch reads the CSV again (blocks in file order)"),
    ("--checkpoint", "save the model after every epoch (Ctrl-C keeps the last one)"),
    ("--resume", "continue training the model in MODEL (its weights, optimizer state and step "
     "count)"),
)  # fmt: skip


def _previous_model(args: argparse.Namespace):
    """The model a --resume continues (else None, after checking that --model is one the
    run may replace)."""
    if not args.resume:
        check_replaceable_model(args.model)
        return None
    if not Path(args.model).exists():
        raise CommandError(f"--resume: there is no model at {args.model} to continue.")
    return load_model(args.model)


def _schema(args: argparse.Namespace, previous):
    """The data's columns: --target/--features/--drop, or the resumed model's."""
    from ..io.csv import read_schema

    target = args.target if args.target is not None else getattr(previous, "target", None)
    if target is None:
        raise UsageError("the following arguments are required: --target")
    _args.check_no_repeats(args)
    features, categorical = args.features, args.categorical
    encoding = getattr(previous, "encoding", None)
    if encoding is not None and features is None and args.drop is None:
        # the model's columns, each of its type; a clear error naming any the file lacks
        return model_schema(previous, args.data, target=target, delimiter=args.delimiter)
    if features is None and args.drop is None and previous is not None:
        features = previous.feature_names
    if categorical is None and encoding is not None:
        categorical = encoding.text or None
    schema = read_schema(
        args.data, target=target, features=features, drop=args.drop, delimiter=args.delimiter,
        categorical=categorical,
    )  # fmt: skip
    if previous is not None and encoding is None:
        previous.check_features(schema.feature_names)
    return schema


def check_cache_dir(path) -> None:
    """Refuse, before any work, a --cache-dir that is (or is inside) something other than
    a directory; a missing one is created by the first pass."""
    if path is None:
        return
    folder = os.fspath(path)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if folder and not os.path.isdir(folder):
        raise UsageError(f"--cache-dir {path} is not a directory.")


def _resolve_standardize(args: argparse.Namespace, previous) -> None:
    """--standardize / --no-standardize as given, else the resumed model's (its weights and
    the optimizer's slots live in that space), else on."""
    if args.standardize is not None:
        return
    recorded = None if previous is None else previous.options.get("standardize")
    if isinstance(recorded, bool):
        args.standardize = recorded
    else:
        args.standardize = previous is None or previous.scaler is not None


def _settings(args: argparse.Namespace, previous) -> dict:
    """fastgd.fit's options: the flags given, else the resumed model's, else the defaults."""
    # A flag not given takes the resumed model's option (--resume), else fastgd.fit's default.
    defaults = {row.name: row.default for row in parameters.cli_parameters() if row.fit}
    fit_options = list(defaults)
    given = {o: getattr(args, o) for o in fit_options if getattr(args, o) is not None}
    if given.get("tol") == "none":
        given["tol"] = None
    inherited = {}
    if previous is not None:
        inherited = {k: previous.options[k] for k in fit_options if k in previous.options}
        inherited.pop("max_iter", None)  # --epochs counts the epochs of this run
    settings = {**defaults, **inherited, **given}
    if settings.get("penalty") == "none":
        settings["penalty"] = None
    try:  # before the data are read (exit 1, as the engine's own check would give)
        parameters.check_rules(settings)
    except ValueError as error:  # flags that break a rule together: a usage error
        raise UsageError(str(error)) from None  # in flags: cli._errors.flag_spelling
    return settings


def _recorded(args: argparse.Namespace, settings: dict, schema) -> dict:
    """The options the model file keeps: the fit's and how the data was read."""
    recorded = {
        **settings,
        "standardize": args.standardize,
        "missing": args.missing,
        "max_categories": args.max_categories,
        "hash_features": args.hash_features,
        "categorical": args.categorical,
        "dtype": args.dtype,
        "block_rows": args.block_rows,
        "on_bad_rows": args.on_bad_rows,
        "delimiter": schema.delimiter,
        "data": shown_input(args, "data"),
    }
    if args.validation_fraction is not None:
        recorded["validation_fraction"] = args.validation_fraction
    return recorded


def _fit(args, schema, settings: dict, checkpoints: Checkpointer, bar: ProgressBar):
    from .. import stream

    def callback(epoch, coef, intercept, loss):
        bar.epoch_done(epoch, loss)
        checkpoints.epoch_done(epoch, coef, intercept, loss)

    previous = checkpoints.previous
    resume = {}
    if previous is not None:
        coef, intercept = previous.raw_weights()
        _, _, t_start = previous_progress(previous)
        # the optimizer's state too (in the trained space, as fit_csv takes it), and the
        # model's encoding: the weights continue feature by feature, whatever levels (or
        # their ranking) this file holds
        resume = {"coef_init": coef, "intercept_init": intercept, "t_init": t_start,
                  "slots_init": checkpoints.start_slots,
                  "encoding": previous.encoding}  # fmt: skip
    # A copy of stdin or a pipe cannot be read again: its cache goes away with it.
    cache_dir = None if is_temporary_copy(args, "data") else args.cache_dir

    def first_pass(stats):
        _check_resumed_features(previous, stats.feature_names)
        checkpoints.first_pass(stats)

    with contextlib.closing(bar):
        return stream.fit_csv(
            args.data, target=schema.target, features=schema.feature_names,
            delimiter=args.delimiter, block_rows=args.block_rows, dtype=args.dtype,
            cache_dir=cache_dir, standardize=args.standardize, missing=args.missing,
            max_categories=args.max_categories, hash_features=args.hash_features,
            categorical=schema.text_features or None, on_bad_rows=args.on_bad_rows,
            use_cache=not args.no_cache,
            validation_fraction=args.validation_fraction or 0.0, progress=bar.update,
            on_first_pass=first_pass, callback=callback,
            on_epoch_state=checkpoints.epoch_state, **resume,
            **{**settings, "random_state": checkpoints.rng},
        )  # fmt: skip


def _check_resumed_features(previous, names) -> None:
    """--resume continues weights feature by feature: the data, read with the model's
    encoding, must encode to the model's features (a check: it always should)."""
    if previous is None or previous.encoding is None:
        return
    try:
        previous.check_features(names)
    except ValueError as error:
        raise CommandError(
            f"--resume: {error} (the data's columns or levels differ from the model's)"
        ) from None


def _summary(result, checkpoints: Checkpointer, started: float) -> dict:
    """What the model file's summary adds to fit_csv's: epochs in all, time, curves, and
    where the row orders' generator stopped (a --resume continues it)."""
    previous = checkpoints.previous
    previous_epochs, previous_history, _ = previous_progress(previous)
    summary = {"epochs": previous_epochs + result.n_iter, "time": time.perf_counter() - started,
               "rng_state": rng_state(checkpoints.rng)}  # fmt: skip
    if previous is not None:
        summary["loss_history"] = np.concatenate([previous_history, result.loss_history])
        summary["resumed_after_epoch"] = previous_epochs
    if result.validation_scores is not None:
        summary["validation_scores"] = np.asarray(result.validation_scores, dtype=np.float64)
    return summary


def _summary_line(args, result, summary: dict, resumed: bool) -> str:
    from ..io.csv import format_skipped

    rows = result.extras.get("rows", 0)
    skipped = format_skipped(
        result.extras.get("skipped", {}), result.extras.get("skipped_lines", [])
    )
    final = result.loss_history[-1] if result.loss_history.shape[0] else float("nan")
    status = "converged" if result.converged else "ran all epochs"
    epochs = f"{result.n_iter} epochs ({status})"
    if resumed:
        epochs += f", {summary['epochs']} in all"
    text = f"fastgd train: {rows:,} rows"
    if skipped:
        text += f" ({skipped})"
    text += f", {epochs}, final loss {final:.6g}"
    scores = result.validation_scores
    if scores is not None and len(scores):
        text += f", validation score {float(scores[-1]):.6g}"
    text += f", {summary['time']:.2f} s; model saved to {args.model}"
    return text + _cache_words(args, result.extras.get("cache"))


def _cache_words(args, header_path, lead: str = "; cache") -> str:
    """Where the cache of the data is and how big (``fastgd cache clear`` removes it)."""
    from .cache import format_bytes, selection_size

    if header_path is None or is_temporary_copy(args, "data"):
        return ""  # no cache, or one that goes with the temporary copy of a pipe
    size = format_bytes(selection_size(header_path))
    return f"{lead} {Path(header_path).parent} ({size}; 'fastgd cache clear' removes it)"


def _warn_two_valued_target(args, schema, settings: dict, result) -> None:
    """A regression loss on a target of two values (0/1, yes/no) is most likely meant as a
    classification: say so, with the flag that makes it one."""
    import warnings

    from .. import options
    from .cache import two_target_values

    if options.loss_by_name(settings["loss"]).classification:
        return
    values = two_target_values(schema, args.dtype, result.extras.get("cache"))
    if values is not None:
        warnings.warn(
            f"the target {schema.target!r} holds two values only ({values[0]:g} and "
            f"{values[1]:g}), but --loss {settings['loss']} is a regression loss: for a "
            "classifier (labels and probabilities) train with --loss log_loss.",
            stacklevel=2,
        )


def run(args: argparse.Namespace) -> int:
    from ..errors import DivergenceError
    from ..io.csv import CsvError
    from ..io.model import save

    started = time.perf_counter()
    check_cache_dir(args.cache_dir)
    previous = _previous_model(args)
    _resolve_standardize(args, previous)
    schema = _schema(args, previous)
    settings = _settings(args, previous)
    recorded = _recorded(args, settings, schema)
    bar = ProgressBar(
        f"reading {Path(shown_input(args, 'data')).name}",
        epochs=settings["max_iter"],
        enabled=not args.quiet,
    )
    checkpoints = Checkpointer(args, schema, settings, recorded, previous)
    try:
        result = _fit(args, schema, settings, checkpoints, bar)
    except KeyboardInterrupt:
        return checkpoints.interrupted()
    except DivergenceError as error:
        raise CommandError(checkpoints.diverged(error)) from error
    except CsvError as error:  # after the first pass (one class, ...): the cache stays
        kept = _cache_words(args, getattr(error, "cache", None), "; the cache was kept in")
        if not kept:
            raise
        raise CommandError(f"{error}{kept}") from error
    summary = _summary(result, checkpoints, started)
    save(result, args.model, options=recorded, summary=summary)
    _warn_two_valued_target(args, schema, settings, result)
    if not args.quiet:
        print(_summary_line(args, result, summary, previous is not None), file=sys.stderr)
    return 0


# --resume reads MODEL too: it continues (and replaces) it.
COMMAND = Command(
    HELP, DESCRIPTION, configure, run, inputs=("data",), outputs=(("model", "--model"),)
)
