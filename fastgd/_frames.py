"""Dataframe partitions as dense training rows, for :mod:`fastgd.dask` (issue 14).

The names and meanings are those of the CSV side (``ENCODING.md``): ``standardize``,
``missing="impute"|"skip"|"error"``, ``max_categories``, ``categorical``. Three steps:

1. :func:`split_partition`: a partition (a pandas DataFrame, or an array chunk) as its
   numeric feature columns (float64, NaN where a cell is missing), its categorical columns
   (factorized: codes and the levels as strings) and its targets, with errors that name the
   partition, row and column of a cell that is not a number.
2. :func:`profile_partition` on each worker, merged on the driver (:meth:`Profile.merge`):
   rows, missing cells per column, the numeric columns' means and variances (Chan et
   al.'s merge) and every categorical level's count. One pass.
3. :class:`FrameEncoding`, learned from the merged profile (:meth:`FrameEncoding.learn`),
   turns a partition into dense float rows on the workers (:meth:`FrameEncoding.encode`):
   numeric columns (standardised for training), a missing-indicator column after each
   numeric column that had a missing cell (``missing="impute"``), and a one-hot block per
   categorical column over its ``max_categories - 1`` most frequent levels, a shared
   ``<other>`` level (rarer levels, and levels first seen at predict time) and a
   ``<missing>`` level (when the column had missing cells). Dask's training path reads
   dense blocks only, so the encoded width is capped at :data:`DENSE_WIDTH_LIMIT`.

It needs numpy and pandas only (no Dask): the workers run these functions on plain pandas
partitions.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

#: What a missing feature cell does (``ENCODING.md``).
MISSING_MODES = ("impute", "skip", "error")
#: The shared level of a categorical column's rarer (and unseen) levels, and of its missing cells.
OTHER_LEVEL = "<other>"
MISSING_LEVEL = "<missing>"
#: The most encoded features a dataframe may give: Dask's training path reads dense blocks
#: (the CSR kernels are not wired to it), so each one-hot column costs 8 bytes a row.
DENSE_WIDTH_LIMIT = 2048


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
    """A categorical column of a partition: ``codes`` into ``levels`` (-1: missing)."""

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
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return Factorized(np.asarray(codes, dtype=np.int64), [str(level) for level in uniques])


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
        level_counts: dict = {}  # (two levels may read the same as strings: 1 and "1")
        for level, level_count in zip(column.levels, counts.tolist(), strict=True):
            level_counts[level] = level_counts.get(level, 0) + level_count
        levels.append(level_counts)
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
# The encoding.
# ---------------------------------------------------------------------------------------------


class FrameEncoding:
    """How a dataframe's columns become dense float features (see the module's docstring).

    Attributes
    ----------
    feature_names : list of str
        Every encoded feature: ``"carat"``, ``"carat=missing"`` (its indicator),
        ``"cut=Ideal"``, ``"cut=<other>"``, ``"cut=<missing>"``.
    mean, scale : ndarray of shape (n_features,)
        The standardisation of each encoded feature (training space = (x - mean) / scale):
        the numeric columns' means and standard deviations with ``standardize``, else 0 and
        1; indicators and one-hot features keep 0 and 1.
    """

    def __init__(self, *, numeric, categorical, features, means, scales, indicators, levels,
                 missing_levels, missing, standardize):  # fmt: skip
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.features = list(features)
        #: The numeric columns' means (what a missing cell takes) and scales.
        self.means = np.asarray(means, dtype=np.float64)
        self.scales = np.asarray(scales, dtype=np.float64)
        self.indicators = [bool(flag) for flag in indicators]
        #: Per categorical column: its kept levels, in order of their one-hot features.
        self.levels = [list(kept) for kept in levels]
        self.missing_levels = [bool(flag) for flag in missing_levels]
        self.missing = missing
        self.standardize = bool(standardize)
        self._place()

    def _place(self) -> None:
        """The position of every encoded feature (in the order of ``features``)."""
        names, self._numeric_at, self._indicator_at, self._one_hot_at = [], [], [], []
        numeric_index = {name: j for j, name in enumerate(self.numeric)}
        categorical_index = {name: j for j, name in enumerate(self.categorical)}
        for name in self.features:
            if name in numeric_index:
                j = numeric_index[name]
                self._numeric_at.append(len(names))
                names.append(name)
                if self.indicators[j]:
                    self._indicator_at.append((j, len(names)))
                    names.append(f"{name}=missing")
            else:
                j = categorical_index[name]
                self._one_hot_at.append(len(names))
                names.extend(f"{name}={level}" for level in self.levels[j])
                names.append(f"{name}={OTHER_LEVEL}")
                if self.missing_levels[j]:
                    names.append(f"{name}={MISSING_LEVEL}")
        self.feature_names = names
        self.mean = np.zeros(len(names))
        self.scale = np.ones(len(names))
        self.mean[self._numeric_at] = self.means if self.standardize else 0.0
        self.scale[self._numeric_at] = self.scales if self.standardize else 1.0

    @property
    def width(self) -> int:
        return len(self.feature_names)

    # -- learning it
    @classmethod
    def learn(cls, profile: Profile, layout: Layout, *, standardize: bool, missing: str,
              max_categories: int) -> FrameEncoding:  # fmt: skip
        """The encoding of the merged first pass (errors for its problems, all at once)."""
        _check_missing(profile, layout, missing)
        _check_infinite(profile, layout)
        count = np.maximum(profile.count, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            std = np.sqrt(profile.m2 / count)
        _check_moments(profile, layout, std)
        if not standardize:
            _warn_unscaled(layout.numeric, std)
        levels = [_kept_levels(counts, max_categories) for counts in profile.levels]
        n_numeric = len(layout.numeric)
        had_missing = profile.missing > 0
        encoding = cls(
            numeric=layout.numeric, categorical=layout.categorical, features=layout.features,
            means=profile.mean, scales=np.where(std > 0.0, std, 1.0),
            indicators=had_missing[:n_numeric] & (missing == "impute"), levels=levels,
            missing_levels=had_missing[n_numeric:] & (missing == "impute"), missing=missing,
            standardize=standardize,
        )  # fmt: skip
        encoding._check_width(profile)
        return encoding

    def _check_width(self, profile: Profile) -> None:
        if self.width <= DENSE_WIDTH_LIMIT:
            return
        widths = sorted(
            (
                (len(self.levels[j]) + 1 + self.missing_levels[j], len(counts), name)
                for j, (name, counts) in enumerate(
                    zip(self.categorical, profile.levels, strict=True)
                )
            ),
            reverse=True,
        )
        listed = ", ".join(
            f"{name!r} ({levels} levels: {width} features)" for width, levels, name in widths
        )
        raise ValueError(
            f"the encoded dataframe would have {self.width} features, over the "
            f"{DENSE_WIDTH_LIMIT} fastgd.dask can train on (its blocks are dense: one-hot "
            f"features cost 8 bytes a row each). Categorical columns: {listed}. Lower "
            "max_categories= (rarer levels share one '<other>' feature) or leave the widest "
            "columns out with features=."
        )

    # -- using it
    def encode(self, split: Split, *, standardized: bool) -> np.ndarray:
        """Dense float64 rows of a partition's :class:`Split` (the rows it should keep):
        the training space (``standardized``) or the raw one (what the returned
        coefficients apply to). A missing cell takes its column's mean (and its indicator)
        or its ``<missing>`` level; an unseen level, or a missing one without a
        ``<missing>`` feature, the ``<other>`` feature."""
        rows = split.numeric.shape[0]
        X = np.zeros((rows, self.width))
        numeric = split.numeric
        absent = np.isnan(numeric)
        if absent.any():
            numeric = np.where(absent, self.means, numeric)
        if standardized and self.standardize:
            numeric = (numeric - self.means) / self.scales
        X[:, self._numeric_at] = numeric
        for j, position in self._indicator_at:
            X[:, position] = absent[:, j]
        every_row = np.arange(rows)
        for j, column in enumerate(split.categorical):
            X[every_row, self._one_hot_at[j] + self._codes(j, column)] = 1.0
        return X

    def _codes(self, j: int, column: Factorized) -> np.ndarray:
        """A categorical column's offsets into its one-hot block."""
        kept = {level: code for code, level in enumerate(self.levels[j])}
        other = len(self.levels[j])
        missing = other + 1 if self.missing_levels[j] else other
        lookup = np.array([kept.get(level, other) for level in column.levels] + [missing])
        return lookup[column.codes]  # code -1 (missing) reads the last entry

    def to_dict(self) -> dict:
        """JSON-safe (:meth:`from_dict` reads it back)."""
        return dict(
            numeric=self.numeric, categorical=self.categorical, features=self.features,
            means=self.means.tolist(), scales=self.scales.tolist(), indicators=self.indicators,
            levels=self.levels, missing_levels=self.missing_levels, missing=self.missing,
            standardize=self.standardize,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> FrameEncoding:
        return cls(**data)


def _kept_levels(counts: dict, max_categories: int) -> list:
    """The ``max_categories - 1`` most frequent levels (ties: in the levels' order)."""
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


def transform(encoding: FrameEncoding, X) -> np.ndarray:
    """The raw encoded features of new rows (what a fit's folded coefficients apply to):
    a pandas DataFrame with the training's feature columns, or a 2-D array for a fit on
    arrays. Nothing is dropped or refused: a missing cell takes its column's mean (and its
    indicator) or its ``<missing>`` level, an unseen level the ``<other>`` feature."""
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
