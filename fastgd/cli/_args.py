"""Argument types (a malformed value is a usage error, exit 2) and the flags commands share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from ._command import UsageError


def rate_list(text: str) -> list[float | str]:
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
        if not (rate > 0 and math.isfinite(rate)):
            raise argparse.ArgumentTypeError(f"learning rates must be > 0; got {item!r}")
        rates.append(rate)
    return rates


def name_list(table) -> Callable[[str], list[str]]:
    allowed = [row.name for row in table]

    def parse(text: str) -> list[str]:
        names = [item.strip() for item in text.split(",")]
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return names

    return parse


def int_list(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers, e.g. 32,256"
        ) from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return sizes


def _parse(text: str, convert, what: str):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    value = _parse(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def delimiter(text: str) -> str:
    text = {"tab": "\t", "\\t": "\t"}.get(text.lower(), text)
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"one character (or 'tab'); got {text!r}")
    return text


def report_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".html", ".htm"):
        raise argparse.ArgumentTypeError(f"{text!r}: the report must end in .png or .html")
    return path


def column_names(text: str) -> list[str]:
    """``NAME[,NAME]``: column names, each once."""
    names = [item.strip() for item in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty column name; give NAME[,NAME]")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, repeated))} named twice")
    return names


def add_csv_arguments(
    parser: argparse.ArgumentParser, *, bad_rows: bool = True, skip_help: str | None = None
) -> None:
    """--delimiter, --block-rows, --dtype, --on-bad-rows (with ``bad_rows``; ``skip_help``
    says what skip does where it does more than leave the row out) and --quiet."""
    group = parser.add_argument_group("reading the CSV")
    group.add_argument(
        "--delimiter",
        type=delimiter,
        metavar="X",
        help="field separator (default: sniffed among , ; tab |)",
    )
    group.add_argument(
        "--block-rows",
        type=positive_int,
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
            help="stop at the first bad row (a non-number in a numeric column, a wrong field "
            "count, bad bytes; missing cells follow --missing where the command has it), "
            f"naming file, line and column; {skip_help or 'or skip bad rows and count them'} "
            "(default: error)",
        )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no summary line"
    )


def add_model_and_data(parser: argparse.ArgumentParser) -> None:
    """The MODEL and DATA.csv positionals of predict and evaluate."""
    parser.add_argument("model", metavar="MODEL", help="a model file from 'fastgd train'")
    parser.add_argument("data", metavar="DATA.csv", help="CSV file with a header row")


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    """--features and --drop (one or the other): the feature columns of DATA.csv."""
    columns = parser.add_mutually_exclusive_group()
    columns.add_argument(
        "--features",
        metavar="A,B",
        help="the feature columns, in order (default: every other column)",
    )
    columns.add_argument(
        "--drop", metavar="C,D", help="columns to leave out of the features (an id, a text column)"
    )


def check_no_repeats(args: argparse.Namespace) -> None:
    """A column named twice in --features or --drop is a usage error (exit 2)."""
    for flag, text in (("--features", args.features), ("--drop", args.drop)):
        names = [name.strip() for name in (text or "").split(",")] if text else []
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            shown = ", ".join(repr(name) for name in repeated)
            raise UsageError(f"{flag} names the column(s) {shown} more than once.")


def add_standardize_argument(group, *, keeps: str | None = None) -> None:
    """--no-standardize (use the numeric columns as they are) and --standardize (the
    default, kept so that older command lines still work); ``keeps`` says where the scaler
    goes (train: the model keeps it)."""
    kept = f"; {keeps}" if keeps else ""
    scaling = group.add_mutually_exclusive_group()
    scaling.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help=f"use the numeric columns as they are (default: centre and scale them{kept})",
    )
    scaling.add_argument(
        "--standardize", action="store_true", help="the default, kept for old scripts"
    )


def add_encoding_arguments(parser: argparse.ArgumentParser) -> None:
    """--missing, --max-categories, --hash-features and --categorical: how missing cells
    and text columns become features (:class:`fastgd.io.encoding.Encoding`)."""
    group = parser.add_argument_group("columns: missing cells and text")
    group.add_argument(
        "--missing",
        choices=["impute", "skip", "error"],
        default="impute",
        help="a missing feature cell: the column's mean plus a missing-indicator feature (a "
        "text cell: its own level), skip the row, or stop (default: impute); a missing "
        "target always skips its row",
    )
    group.add_argument(
        "--max-categories",
        type=at_least_two,
        default=1000,
        metavar="N",
        help="per text column, the N-1 most frequent values get a feature each, the rarer "
        "(and unseen) share an 'other' one (default: 1000)",
    )
    group.add_argument(
        "--hash-features",
        type=hash_bits,
        metavar="BITS",
        help="encode text columns by the hashing trick into 2**BITS features each (1-20)",
    )
    group.add_argument(
        "--categorical",
        metavar="A,B",
        help="columns read as text whatever they hold (e.g. numeric codes of categories)",
    )


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (N-1 levels and 'other'); got {value}")
    return value


def hash_bits(text: str) -> int:
    from ..io.encoding import MAX_HASH_BITS

    value = positive_int(text)
    if value > MAX_HASH_BITS:
        raise argparse.ArgumentTypeError(f"must be in 1-{MAX_HASH_BITS}; got {value}")
    return value
