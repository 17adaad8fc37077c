"""Dataframe partitions as training rows, for :mod:`fastgd.dask` (issue 14).

The names and meanings are those of the CSV side (``ENCODING.md``): ``standardize``,
``missing="impute"|"skip"|"error"``, ``max_categories``, ``categorical``. Three steps:

1. :func:`split_partition`: a partition (a pandas DataFrame, or an array chunk) as its
   numeric feature columns (float64, NaN where a cell is missing), its categorical columns
   (factorized: int32 codes and the levels as strings) and its targets, with errors that name the
   partition, row and column of a cell that is not a number.
2. :func:`profile_partition` on each worker, merged on the driver (:meth:`Profile.merge`):
   rows, missing cells per column, the numeric columns' means and variances (Chan et
   al.'s merge) and every categorical level's count. One pass.
3. :class:`FrameEncoding`, learned from the merged profile (:meth:`FrameEncoding.learn`),
   turns a partition into training rows on the workers (:meth:`FrameEncoding.encode`).
   The encoding itself is the CSV side's :class:`fastgd.io.encoding.Encoding` (the same
   features, names, imputation, one-hot with ``<other>``/``<missing>`` levels, hashing and
   JSON record): dense rows without a categorical column, canonical CSR rows with one.
   This module only feeds it: the moments and kept levels of the profile, and per
   partition its numeric array and int32 codes into the partition's own levels.

It needs numpy and pandas only (no Dask, no polars): the workers run these functions on
plain pandas partitions.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from .io.encoding import Encoding, EncodingError

#: What a missing feature cell does (``ENCODING.md``).
MISSING_MODES = ("impute", "skip", "error")


def is_text_dtype(dtype) -> bool:
    """Whether a pandas column of this dtype holds text: object, string or category."""
    import pandas as pd

    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )


@dataclass(frozen=True)
class Layout:
    """Which columns of the input are what."""

    #: The feature columns, in order (arrays: ``x0, x1, ...``).
    features: tuple
    #: The ones encoded as categories (a subset of ``features``).
    categorical: tuple
    #: The target column's name in the frame; None when y comes separately.
    target: str | None
    #: Every column a partition must have (None: the partitions are array chunks).
    columns: tuple | None
    #: Whether the targets must be numbers (regression); else any labels.
    numeric_target: bool

    @property
    def numeric(self) -> tuple:
        return tuple(name for name in self.features if name not in self.categorical)

    @property
    def target_name(self) -> str:
        return repr(self.target) if self.target is not None else "y"


@dataclass
class Factorized:
    """A categorical column of a partition: int32 ``codes`` into ``levels`` (distinct
    strings; -1: missing)."""

    codes: np.ndarray
    levels: list


@dataclass
class Split:
    """A partition's columns (see :func:`split_partition`)."""

    numeric: np.ndarray
    categorical: list
    y: np.ndarray
    #: Row positions in the partition (kept through the row filters, for messages).
    positions: np.ndarray

    def take(self, keep: np.ndarray) -> Split:
        categorical = [Factorized(column.codes[keep], column.levels) for column in self.categorical]
        return Split(self.numeric[keep], categorical, self.y[keep], self.positions[keep])

    def missing_cells(self) -> np.ndarray:
        """rows × features (numeric columns first, then categorical): which cells are missing."""
        columns = [np.isnan(self.numeric)] + [
            (column.codes < 0)[:, None] for column in self.categorical
        ]
        return np.concatenate(columns, axis=1)


# ---------------------------------------------------------------------------------------------
# One partition's columns.
# ---------------------------------------------------------------------------------------------


def _numbers(series, name: str, index: int | None) -> np.ndarray:
    """A column as float64 (NaN where missing); a cell that is not a number is an error
    naming the partition, row and column."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    coerced = pd.to_numeric(series, errors="coerce")
    bad = (coerced.isna() & series.notna()).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        place = f"partition {index}, " if index is not None else ""
        raise ValueError(
            f"{place}row {row} (index {series.index[row]!r}): column {name!r} "
            f"holds {series.iloc[row]!r}, not a number. Encode the column as categories "
            f"(categorical=[{name!r}]) or leave it out (features=)."
        )
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan)


def _factorize(series) -> Factorized:
    """A column's codes into its distinct levels as strings (two values that read the same
    as strings, 1 and "1", are one level)."""
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    index: dict = {}
    remap = np.empty(len(uniques) + 1, dtype=np.int32)
    remap[-1] = -1  # code -1 (missing) stays -1
    for code, level in enumerate(uniques):
        remap[code] = index.setdefault(str(level), len(index))
    return Factorized(remap[codes], list(index))


def _check_columns(part, index: int, expected: tuple) -> None:
    columns = [str(name) for name in part.columns]
    if columns != list(expected):
        missing = [name for name in expected if name not in columns]
        extra = [name for name in columns if name not in expected]
        raise ValueError(
            f"partition {index} has {len(columns)} columns {columns}; the other partitions "
            f"have {len(expected)}: {list(expected)} (missing: {missing}, unexpected: {extra}). "
            "Every partition (file) must have the same columns."
        )


def _targets(values, layout: Layout, index: int) -> np.ndarray:
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values).reshape(-1))
    if layout.numeric_target:
        return _numbers(series, layout.target or "y", index)
    if pd.api.types.is_extension_array_dtype(series.dtype) and not is_text_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable Int64, boolean
    return series.to_numpy()


def split_partition(part, y_part, index: int, layout: Layout) -> Split:
    """A partition (a pandas DataFrame, or a 2-D array chunk with ``y_part``) as a
    :class:`Split`; its columns must be those of the collection."""
    if layout.columns is None:
        numeric = np.asarray(part, dtype=np.float64)
        categorical = []
        y = _targets(y_part, layout, index)
    else:
        _check_columns(part, index, layout.columns)
        numeric = np.empty((len(part), len(layout.numeric)))
        for j, name in enumerate(layout.numeric):
            numeric[:, j] = _numbers(part[name], name, index)
        categorical = [_factorize(part[name]) for name in layout.categorical]
        y = _targets(part[layout.target] if layout.target is not None else y_part, layout, index)
    if y.shape[0] != numeric.shape[0]:
        raise ValueError(
            f"partition {index} has {numeric.shape[0]} rows of X but {y.shape[0]} of y."
        )
    return Split(numeric, categorical, y, np.arange(numeric.shape[0]))


def drop_rows(split: Split, missing: str):
    """The rows that train: those with a target, and (``missing="skip"``) no missing cell.
    Returns them, the two counts dropped, the missing cells of the rows with a target and
    those rows' positions in the partition."""
    import pandas as pd

    has_target = ~np.asarray(pd.isna(split.y), dtype=bool)
    missing_target = int(has_target.size - has_target.sum())
    if missing_target:
        split = split.take(has_target)
    cells, positions = split.missing_cells(), split.positions
    skipped = 0
    if missing == "skip":
        complete = ~cells.any(axis=1)
        skipped = int(complete.size - complete.sum())
        if skipped:
            split = split.take(complete)
    return split, missing_target, skipped, cells, positions


# ---------------------------------------------------------------------------------------------
# The first pass: a profile of every partition, merged on the driver.
# ---------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """What the first pass found in some partitions (their rows in partition order)."""

    #: Rows that train (after dropping missing targets and, with ``skip``, missing cells).
    rows: int
    missing_target: int
    skipped_missing: int
    #: Per numeric column, over the rows that train: non-missing values, mean, Σ(x-mean)².
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    #: Per feature (numeric then categorical): missing cells among the rows with a target,
    #: and where the first is (``(partition, row)``, None: none).
    missing: np.ndarray
    first_missing: list
    #: Per categorical column: each level's count over the rows that train.
    levels: list
    #: The first infinite cell: ``(column position among the numeric, partition, row)``.
    infinite: tuple | None = None

    def merge(self, other: Profile) -> Profile:
        """Both profiles as one (``other``'s partitions after this one's)."""
        count = self.count + other.count
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            share = np.where(count > 0, other.count / np.maximum(count, 1), 0.0)
            delta = other.mean - self.mean
            mean = self.mean + delta * share
            m2 = self.m2 + other.m2 + delta**2 * self.count * share
        levels = [
            _add_counts(mine, theirs)
            for mine, theirs in zip(self.levels, other.levels, strict=True)
        ]
        first = [
            a if a is not None else b
            for a, b in zip(self.first_missing, other.first_missing, strict=True)
        ]
        return Profile(
            self.rows + other.rows, self.missing_target + other.missing_target,
            self.skipped_missing + other.skipped_missing, count, mean, m2,
            self.missing + other.missing, first, levels,
            self.infinite if self.infinite is not None else other.infinite,
        )  # fmt: skip


def _add_counts(mine: dict, theirs: dict) -> dict:
    merged = dict(mine)
    for level, count in theirs.items():
        merged[level] = merged.get(level, 0) + count
    return merged


def _numeric_moments(numeric: np.ndarray):
    present = ~np.isnan(numeric)
    count = present.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.where(count > 0, np.nansum(numeric, axis=0) / np.maximum(count, 1), 0.0)
        centred = np.where(present, numeric - mean, 0.0)
        m2 = np.einsum("ij,ij->j", centred, centred)
    return count, mean, m2


def profile_partition(part, y_part, index: int, layout: Layout, missing: str) -> Profile:
    """One partition's :class:`Profile` (runs on a worker)."""
    split, missing_target, skipped, cells, positions = drop_rows(
        split_partition(part, y_part, index, layout), missing
    )
    count, mean, m2 = _numeric_moments(split.numeric)
    infinite = None
    bad = np.isinf(split.numeric)
    if bad.any():
        row, column = np.unravel_index(int(np.argmax(bad)), bad.shape)
        infinite = (int(column), index, int(split.positions[row]))
    levels = []
    for column in split.categorical:
        counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.levels))
        levels.append(dict(zip(column.levels, counts.tolist(), strict=True)))
    has_missing = cells.any(axis=0)
    first = [
        (index, int(positions[np.argmax(cells[:, j])])) if has_missing[j] else None
        for j in range(cells.shape[1])
    ]
    return Profile(
        split.numeric.shape[0], missing_target, skipped, count, mean, m2,
        cells.sum(axis=0).astype(np.int64), first, levels, infinite,
    )  # fmt: skip


def merge_profiles(profiles: list) -> Profile:
    return functools.reduce(Profile.merge, profiles)


# ---------------------------------------------------------------------------------------------
# The encoding: fastgd.io.encoding.Encoding's, fed from dataframes.
# ---------------------------------------------------------------------------------------------


class FrameEncoding:
    """How a dataframe's columns become features: a :class:`fastgd.io.encoding.Encoding`
    (the CSV side's: the one place features are made, named and recorded) plus what only
    dataframes need: the missing-cell mode the training rows were filtered with, and the
    coding of a partition's levels into the codes ``Encoding.encode`` reads.

    Attributes
    ----------
    encoding : fastgd.io.encoding.Encoding
    missing : {"impute", "skip", "error"}
    feature_names : list of str
        Every encoded feature, in ``Encoding``'s order: the numeric columns, their
        missing indicators (``"carat=missing"``), then each categorical column's one-hot
        features (``"cut=Ideal"``, ``"cut=<other>"``, ``"cut=<missing>"``) or hashed
        buckets (``"shop#12"``).
    mean, scale : ndarray of shape (n_features,)
        The standardisation of each encoded feature (training space = (x - mean) / scale):
        the numeric columns' means and standard deviations with ``standardize``, else 0 and
        1; indicators and categorical features keep 0 and 1.
    """

    def __init__(self, encoding: Encoding, missing: str):
        self.encoding = encoding
        self.missing = missing
        scaler = encoding.scaler()
        width = encoding.n_features
        self.mean = scaler["mean"] if scaler is not None else np.zeros(width)
        self.scale = scaler["scale"] if scaler is not None else np.ones(width)

    def __getattr__(self, name: str):
        # numeric, standardize, feature_names, n_features, sparse (CSR rows: a categorical
        # column), ...: the Encoding's own (one definition, not a copy per attribute)
        if name == "encoding":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.encoding, name)

    @property
    def categorical(self) -> list:
        return self.encoding.text

    # -- learning it
    @classmethod
    def learn(cls, profile: Profile, layout: Layout, *, standardize: bool, missing: str,
              max_categories: int, hash_bits: int | None = None) -> FrameEncoding:  # fmt: skip
        """The encoding of the merged first pass (errors for its problems, all at once)."""
        _check_missing(profile, layout, missing)
        _check_infinite(profile, layout)
        with np.errstate(invalid="ignore", over="ignore"):
            std = np.sqrt(profile.m2 / np.maximum(profile.count, 1))
        _check_moments(profile, layout, std)
        if not standardize:
            _warn_unscaled(layout.numeric, std)
        n_numeric = len(layout.numeric)
        encoding = Encoding.learn(
            layout.numeric, profile.mean, std, profile.missing[:n_numeric],
            table=_learned_levels(profile, layout, max_categories, hash_bits),
            text=layout.categorical, standardize=standardize, impute=missing == "impute",
            max_categories=max_categories, hash_bits=hash_bits, columns=layout.features,
        )  # fmt: skip
        return cls(encoding, missing)

    # -- using it
    def encode(self, split: Split, *, standardized: bool, dtype=np.float64):
        """A partition's :class:`Split` (the rows it should keep) as ``Encoding.encode``
        gives it: dense rows without a categorical column, else canonical CSR; the training
        space (``standardized``) or the raw one (what the returned coefficients apply to).
        A missing cell takes its column's mean (and its indicator) or its ``<missing>``
        level; an unseen level, or a missing one without a ``<missing>`` feature, the
        ``<other>`` feature (one-hot) or its own bucket (hashing)."""
        encoding, codes = self.encoding, None
        if split.categorical:
            # Each partition's codes index its own levels: a table of them, bound to a copy
            # (the encoding may be shared by a worker's threads).
            encoding = encoding.bound(_partition_levels(split, encoding.text))
            codes = np.empty((split.numeric.shape[0], len(split.categorical)), dtype=np.int32)
            for j, column in enumerate(split.categorical):
                codes[:, j] = column.codes
        return encoding.encode(split.numeric, codes, scaled=standardized, dtype=dtype)

    def to_dict(self) -> dict:
        """JSON-safe (:meth:`from_dict` reads it back): the Encoding's own record."""
        return {"encoding": self.encoding.to_dict(), "missing": self.missing}

    @classmethod
    def from_dict(cls, data: dict) -> FrameEncoding:
        if not isinstance(data, dict) or data.get("missing") not in MISSING_MODES:
            raise EncodingError(
                f"a dataframe encoding record needs 'missing' in {list(MISSING_MODES)}."
            )
        return cls(Encoding.from_dict(data.get("encoding")), data["missing"])


def _learned_levels(profile: Profile, layout: Layout, max_categories: int, hash_bits):
    """The merged level counts as the LevelTable ``Encoding.learn`` reads: per categorical
    column only the levels it can keep (:func:`_kept_levels`, none when hashing), in
    their rank order, and its missing cells."""
    from .io.levels import LevelTable

    n_numeric = len(layout.numeric)
    columns = []
    for j, (name, counts) in enumerate(zip(layout.categorical, profile.levels, strict=True)):
        kept = _kept_levels(counts, max_categories) if hash_bits is None else []
        columns.append({
            "name": name, "levels": kept, "counts": [int(counts[level]) for level in kept],
            "missing": int(profile.missing[n_numeric + j]),
        })  # fmt: skip
    return LevelTable.from_dict({"columns": columns, "target": None})


def _partition_levels(split: Split, names: list):
    """A LevelTable of one partition's levels, in its codes' order (so its factorized
    codes are the table's codes; -1, missing, is the table's ``MISSING_CODE``)."""
    from .io.levels import LevelTable

    table = LevelTable(names)
    for column, factorized in zip(table.feature_columns(), split.categorical, strict=True):
        column.commit(factorized.levels, _NO_CODES, count=False)
    return table


_NO_CODES = np.empty(0, dtype=np.int32)


def _kept_levels(counts: dict, max_categories: int) -> list:
    """The ``max_categories - 1`` most frequent levels (ties: by the level, so the choice
    does not depend on how the rows were split into partitions)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [level for level, _ in ranked[: max_categories - 1]]


def _check_missing(profile: Profile, layout: Layout, missing: str) -> None:
    if missing != "error" or not profile.missing.any():
        return
    names = list(layout.numeric) + list(layout.categorical)
    listed = "; ".join(
        f"column {names[j]!r}: {int(profile.missing[j])} missing (the first in partition "
        f"{profile.first_missing[j][0]}, row {profile.first_missing[j][1]})"
        for j in np.flatnonzero(profile.missing)
    )
    raise ValueError(
        f"missing='error' and the data have missing cells: {listed}. Use "
        "missing='impute' (the column's mean and a missing-indicator feature; a '<missing>' "
        "level for categories) or missing='skip' (drop such rows)."
    )


def _check_infinite(profile: Profile, layout: Layout) -> None:
    if profile.infinite is None:
        return
    column, partition, row = profile.infinite
    raise ValueError(
        f"column {layout.numeric[column]!r} holds an infinite value (partition {partition}, "
        f"row {row}); clean or drop such rows first."
    )


#: Numeric columns whose standard deviations differ by more than this are left unscaled
#: (``standardize=False``) with a warning: gradient descent on them crawls or diverges.
SCALE_RATIO_WARNING = 1e3


def _warn_unscaled(names, std: np.ndarray) -> None:
    spread = np.flatnonzero(std > 0.0)
    if spread.size < 2:
        return
    widest, narrowest = spread[np.argmax(std[spread])], spread[np.argmin(std[spread])]
    ratio = std[widest] / std[narrowest]
    if ratio > SCALE_RATIO_WARNING:
        warnings.warn(
            f"standardize=False and the numeric columns differ in scale by {ratio:.1e}: "
            f"{names[widest]!r} (standard deviation {std[widest]:.3g}) against "
            f"{names[narrowest]!r} ({std[narrowest]:.3g}); gradient descent on such columns "
            "crawls or diverges: keep standardize=True.",
            UserWarning,
            stacklevel=4,
        )


def _check_moments(profile: Profile, layout: Layout, std: np.ndarray) -> None:
    bad = ~(np.isfinite(profile.mean) & np.isfinite(std))
    if bad.any():
        name = layout.numeric[int(np.argmax(bad))]
        raise ValueError(
            f"column {name!r}: its values are too large for their mean or variance to fit in "
            "a float64; rescale the column first."
        )


def transform(encoding: FrameEncoding, X):
    """The raw encoded features of new rows (what a fit's folded coefficients apply to):
    a pandas DataFrame with the training's feature columns, or a 2-D array for a fit on
    arrays; dense rows, or a CSR matrix when the encoding has categorical columns. Nothing
    is dropped or refused: a missing cell takes its column's mean (and its indicator) or
    its ``<missing>`` level, an unseen level the ``<other>`` feature (or its bucket)."""
    if hasattr(X, "columns"):
        columns = {str(name): name for name in X.columns}
        absent = [name for name in encoding.numeric + encoding.categorical if name not in columns]
        if absent:
            raise ValueError(f"columns {absent} are missing; the model was trained on them.")
        numeric = np.empty((len(X), len(encoding.numeric)))
        for j, name in enumerate(encoding.numeric):
            numeric[:, j] = _numbers(X[columns[name]], name, None)
        categorical = [_factorize(X[columns[name]]) for name in encoding.categorical]
    else:
        numeric = np.asarray(X, dtype=np.float64)
        if numeric.ndim != 2 or numeric.shape[1] != len(encoding.numeric) or encoding.categorical:
            trained = "a dataframe" if encoding.categorical else f"{len(encoding.numeric)} columns"
            raise ValueError(f"X has shape {numeric.shape}; the model was trained on {trained}.")
        categorical = []
    rows = numeric.shape[0]
    split = Split(numeric, categorical, np.zeros(rows), np.arange(rows))
    return encoding.encode(split, standardized=False)
