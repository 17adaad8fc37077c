"""How a CSV's columns become the model's features: :class:`Encoding`.

Learned once, from the first pass over the data (numeric means, standard deviations and
missing counts; the text columns' :class:`fastgd.io.levels.LevelTable`), then fixed: every
block of every epoch, and every block a saved model predicts, is encoded the same way.

Features, in this order:

- numeric columns (the reader's ``X``), standardised by default (``(x - mean) / std``; a
  constant column keeps scale 1); a missing cell (NaN) takes the column's mean (0 once
  standardised);
- one missing indicator ``"col=missing"`` per numeric column that had a missing cell in
  training (a column that never had one gets none: at predict time its missing cells are
  imputed all the same);
- per text column (the reader's ``codes``), one-hot: the ``max_categories - 1`` most
  frequent levels (``"cut=Ideal"``), then ``"cut=<other>"`` (rarer levels, and levels
  never seen in training), then ``"cut=<missing>"`` when the column had a missing cell in
  training (else a missing cell counts as other); or, with ``hash_bits``, the hashing
  trick: ``2**hash_bits`` buckets per text column (``"tailnum#1234"``), the bucket of a
  level being ``crc32("col\\0level")`` masked (stable across runs and machines; computed
  once per level, never per cell).

Without a text column a block becomes dense rows; with one, a canonical CSR matrix
(sorted indices, no duplicates) whose rows all store the same entries: every numeric value
and indicator (zeros too) and one entry per text column, so ``indptr`` is an arange and the
numeric values keep their columns' meaning inside the sparse rows.

:meth:`Encoding.encode` works per block with numpy (no Python loop over rows): the codes
of a block index a lookup array (code -> column) made once per level table by
:meth:`Encoding.bind`.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Sequence

import numpy as np

from .levels import UNSEEN_CODE

__all__ = ["ENCODING_VERSION", "Encoding", "EncodingError"]

#: The version of :meth:`Encoding.to_dict`'s layout.
ENCODING_VERSION = 1
#: Largest ``hash_bits`` accepted (2**20 buckets a column: a million features, each named
#: in the model file; Vowpal Wabbit's default is 18).
MAX_HASH_BITS = 20
#: Keys hashed for a missing cell and for an unseen level (a level string never holds
#: "\x00", which separates the column from the level).
_MISSING_KEY = "\x00<missing>"
_OTHER_KEY = "\x00<other>"
#: The text columns of a block without any (what the encoding kernel reads then).
_NO_TEXT = np.empty((0, 0), dtype=np.int32)


class EncodingError(ValueError):
    """An encoding record that cannot be used (the message says which field and why)."""


def _bucket(column: str, level: str, bits: int) -> int:
    """The hashing trick's bucket of one level of one column: stable (crc32), in
    ``[0, 2**bits)``."""
    return zlib.crc32(f"{column}\x00{level}".encode()) & ((1 << bits) - 1)


class Encoding:
    """The fixed map from a block's numeric values and text codes to model features.

    Attributes
    ----------
    numeric : list of str
        The numeric columns (the reader's ``X`` columns), in order.
    mean, scale : ndarray (float64)
        Per numeric column: the mean (imputes missing cells) and the scale (the standard
        deviation with ``standardize``; 1 for a constant column, and for every column
        without ``standardize``).
    standardize : bool
    indicators : list of str
        The numeric columns that get a missing indicator.
    text : list of str
        The text columns (the reader's ``codes`` columns), in order.
    levels : list of list of str
        Per text column, the levels with a column of their own, most frequent first
        (one-hot; empty with ``hash_bits``).
    missing_level : list of bool
        Per text column, whether a missing cell has a column of its own (one-hot).
    hash_bits : int or None
        The hashing trick's bits (``2**hash_bits`` buckets a text column), or None: one-hot.
    columns : list of str
        The numeric and text columns in the order the training data selected them (the
        order a cache of the file is keyed on).
    """

    def __init__(self, numeric: Sequence[str], mean, scale, *, standardize: bool = True,
                 indicators: Sequence[str] = (), text: Sequence[str] = (),
                 levels: Sequence[Sequence[str]] | None = None,
                 missing_level: Sequence[bool] | None = None,
                 hash_bits: int | None = None,
                 columns: Sequence[str] | None = None):  # fmt: skip
        self.numeric = [str(name) for name in numeric]
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.standardize = bool(standardize)
        self.indicators = [str(name) for name in indicators]
        self.text = [str(name) for name in text]
        self.hash_bits = hash_bits
        if levels is None:
            levels = [[] for _ in self.text]
        self.levels = [[str(level) for level in column] for column in levels]
        if missing_level is None:
            missing_level = [False] * len(self.text)
        self.missing_level = [bool(flag) for flag in missing_level]
        self.columns = [str(name) for name in (columns or self.numeric + self.text)]
        self._check()
        position = {name: i for i, name in enumerate(self.numeric)}
        self._indicator_columns = np.array(
            [position[name] for name in self.indicators], dtype=np.int64
        )
        self._offsets = self._text_offsets()
        self._lookups: list[np.ndarray] | None = None
        self._positions: list[int] = []
        self._kept: list[dict] | None = None
        self._bound_to = None

    # -- learning ------------------------------------------------------------------------
    @classmethod
    def learn(cls, numeric: Sequence[str], mean, std, missing_counts, *, table=None,
              text: Sequence[str] = (), standardize: bool = True, impute: bool = True,
              max_categories: int = 1000, hash_bits: int | None = None,
              columns: Sequence[str] | None = None) -> Encoding:  # fmt: skip
        """The encoding of a first pass's statistics: per numeric column its mean, standard
        deviation (population) and missing-cell count; the text columns' level table
        (levels and counts of each, ``table.missing[j]`` missing cells). ``impute=False``
        adds no indicator nor missing level (the rows with a missing cell were skipped)."""
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        missing_counts = np.asarray(missing_counts, dtype=np.int64).reshape(-1)
        # A column with no value at all: mean 0, scale 1 (its every cell imputed to 0).
        mean = np.where(np.isfinite(mean), mean, 0.0)
        usable = np.isfinite(std) & (std > 0.0)
        scale = np.where(usable, std, 1.0) if standardize else np.ones_like(mean)
        indicators = [
            n for n, count in zip(numeric, missing_counts, strict=True) if impute and count
        ]
        levels, missing_level = [], []
        for name in text:
            j = list(table.columns).index(name)
            if hash_bits is None:
                counts = np.asarray(table.counts[j], dtype=np.int64)
                # most frequent first; ties in first-seen (code) order
                order = np.argsort(-counts, kind="stable")[: max(max_categories - 1, 0)]
                names = table.levels[j]  # (the property copies every column's list)
                levels.append([names[code] for code in order.tolist()])
            else:
                levels.append([])
            missing_level.append(bool(impute and table.missing[j]))
        return cls(
            numeric, mean, scale, standardize=standardize, indicators=indicators, text=text,
            levels=levels, missing_level=missing_level, hash_bits=hash_bits, columns=columns,
        )  # fmt: skip

    # -- shape -----------------------------------------------------------------------------
    def _text_offsets(self) -> list[int]:
        """The first feature of each text column, and the end (the feature count)."""
        offsets = [len(self.numeric) + len(self.indicators)]
        for j in range(len(self.text)):
            offsets.append(offsets[-1] + self._width(j))
        return offsets

    def _width(self, j: int) -> int:
        if self.hash_bits is not None:
            return 1 << self.hash_bits
        return len(self.levels[j]) + 1 + int(self.missing_level[j])

    @property
    def n_features(self) -> int:
        return self._offsets[-1]

    @property
    def sparse(self) -> bool:
        """Whether blocks encode to CSR (there is a text column)."""
        return bool(self.text)

    @property
    def values_per_row(self) -> int:
        """Entries stored per encoded row."""
        return len(self.numeric) + len(self.indicators) + len(self.text)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric) + [f"{name}=missing" for name in self.indicators]
        for j, name in enumerate(self.text):
            if self.hash_bits is not None:
                names += [f"{name}#{b}" for b in range(1 << self.hash_bits)]
                continue
            names += [f"{name}={level}" for level in self.levels[j]] + [f"{name}=<other>"]
            if self.missing_level[j]:
                names.append(f"{name}=<missing>")
        return names

    def scaler(self) -> dict | None:
        """``{"mean", "scale"}`` over the encoded features (identity outside the numeric
        columns), as :class:`fastgd.io.model.Model` and ``fit_csv`` fold them into raw
        weights; None without ``standardize``."""
        if not self.standardize:
            return None
        mean = np.zeros(self.n_features)
        scale = np.ones(self.n_features)
        mean[: len(self.numeric)] = self.mean
        scale[: len(self.numeric)] = self.scale
        return {"mean": mean, "scale": scale}

    # -- binding codes to columns -----------------------------------------------------------
    def bind(self, table) -> Encoding:
        """Map the codes of ``table`` (a LevelTable: the training table, a frozen one from
        :meth:`level_table`, or the growing table of a file being read) to feature columns,
        once per level (binding the same table again maps only its new levels);
        :meth:`encode` then reads codes of that table. Returns self."""
        if not self.text:
            return self
        if table is not self._bound_to:
            names = list(table.columns)
            missing = [name for name in self.text if name not in names]
            if missing:
                raise EncodingError(f"the level table has no column {missing[0]!r}.")
            self._positions = [names.index(name) for name in self.text]
            self._lookups = [self._lookup(j, ()) for j in range(len(self.text))]
            self._bound_to = table
        levels = table.levels
        for j, position in enumerate(self._positions):
            known = self._lookups[j].shape[0] - 2
            new = levels[position][known:]
            if new:
                self._lookups[j] = np.concatenate([self._lookups[j], self._columns_of(j, new)])
        return self

    def bound(self, table) -> Encoding:
        """A copy bound to ``table`` (see :meth:`bind`); this encoding is left as it was.
        For one encoding shared by threads that each read codes of their own table (a
        dataframe's partitions, each coded by its own levels): binding in place would let
        one thread encode with another's lookups."""
        twin = copy.copy(self)  # the fixed fields are shared; bind replaces the lookups
        twin._bound_to = None
        return twin.bind(table)

    def _lookup(self, j: int, table_levels: Sequence[str]) -> np.ndarray:
        """Feature column per code of one text column, indexed by ``code + 2`` (so
        ``UNSEEN_CODE`` (-2) and ``MISSING_CODE`` (-1) are its first two entries)."""
        offset, name = self._offsets[j], self.text[j]
        if self.hash_bits is not None:
            other = offset + _bucket(name, _OTHER_KEY, self.hash_bits)
            missing = offset + _bucket(name, _MISSING_KEY, self.hash_bits)
        else:
            other = offset + len(self.levels[j])
            missing = other + 1 if self.missing_level[j] else other
        head = np.array([other, missing], dtype=np.int32)
        return np.concatenate([head, self._columns_of(j, table_levels)])

    def _columns_of(self, j: int, table_levels: Sequence[str]) -> np.ndarray:
        """The feature column of each of these levels of text column ``j``."""
        offset, name = self._offsets[j], self.text[j]
        if self.hash_bits is not None:
            bits = self.hash_bits
            columns = [offset + _bucket(name, level, bits) for level in table_levels]
        else:
            if self._kept is None:
                self._kept = [{lvl: i for i, lvl in enumerate(column)} for column in self.levels]
            kept, other = self._kept[j], offset + len(self.levels[j])
            columns = [offset + kept[level] if level in kept else other for level in table_levels]
        return np.array(columns, dtype=np.int32).reshape(-1)

    def level_table(self, target: str | None = None, classes: Sequence[str] | None = None):
        """The LevelTable to read a CSV with for this encoding: frozen, with the levels
        kept (one-hot: every other level reads as unseen, which is "other"); with hashing,
        a growing table (every level keeps its string, hence its bucket). A text
        ``target`` (evaluating) reads as the codes of ``classes``, in their order."""
        from .levels import LevelTable

        def record(name, levels):
            return {"name": name, "levels": list(levels), "counts": [0] * len(levels),
                    "missing": 0}  # fmt: skip

        if self.hash_bits is not None:
            table = LevelTable(self.text, target)
            if target is not None:  # the classes first, in order: their codes are 0, 1, ...
                table.target_column().commit(list(classes), np.empty(0, np.int32), count=False)
            return table
        columns = [
            record(name, levels) for name, levels in zip(self.text, self.levels, strict=True)
        ]
        target_record = None if target is None else record(target, classes)
        return LevelTable.from_dict({"columns": columns, "target": target_record, "frozen": True})

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, X, codes=None, *, scaled: bool = True, dtype=None):
        """The features of a block: ``X`` (rows × numeric columns, NaN for a missing cell)
        and ``codes`` (rows × text columns, int32, of the bound level table).

        ``scaled``: standardised values (the training space); False gives the raw values
        (missing cells imputed with the mean), which the model's folded weights read.
        Returns a dense C-contiguous array without text columns, else a canonical CSR
        matrix; in ``dtype`` (default: X's)."""
        X = np.asarray(X)
        dtype = np.dtype(
            dtype if dtype is not None else (X.dtype if X.dtype.kind == "f" else np.float64)
        )
        rows = X.shape[0]
        if X.ndim != 2 or X.shape[1] != len(self.numeric):
            raise ValueError(
                f"X has shape {X.shape}; the encoding reads {len(self.numeric)} numeric columns."
            )
        from .._kernels.encode import encode_rows  # numba: not at import fastgd

        if X.dtype.kind not in "fiu":
            X = X.astype(np.float64)
        columns = self._text_columns(codes, rows) if self.text else _NO_TEXT
        width = len(self.numeric) + len(self.indicators) + len(self.text)
        data = np.empty((rows, width), dtype=dtype)
        indices = np.empty((rows, width) if self.text else (0, 0), dtype=np.int32)
        shift, divide, fill = self._affine(scaled)
        encode_rows(X, shift, divide, fill, self._indicator_columns, columns, data, indices)
        if not self.text:
            return data
        return self._csr(data, indices, rows)

    def _affine(self, scaled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(shift, divide, fill)`` of the numeric columns: ``(x - shift) / divide``, and
        ``fill`` for a missing cell. Standardised: ``(x - mean) / scale``, a missing cell 0
        (the mean); raw: ``x`` itself, a missing cell the mean."""
        d = len(self.numeric)
        if scaled and self.standardize:
            return self.mean, self.scale, np.zeros(d)
        return np.zeros(d), np.ones(d), self.mean

    def _text_columns(self, codes, rows: int) -> np.ndarray:
        """The feature column of each text cell (rows × text columns, int32)."""
        if self._lookups is None:
            raise RuntimeError("bind the encoding to a level table before encoding text columns.")
        codes = np.asarray(codes)
        if codes.shape != (rows, len(self.text)):
            raise ValueError(f"codes has shape {codes.shape}; expected ({rows}, {len(self.text)}).")
        columns = np.empty((rows, len(self.text)), dtype=np.int32)
        for j, lookup in enumerate(self._lookups):
            column = codes[:, j]
            if rows and (column.min() < UNSEEN_CODE or column.max() >= lookup.shape[0] - 2):
                raise ValueError(
                    f"codes of column {self.text[j]!r} lie outside the level table "
                    f"[{UNSEEN_CODE}, {lookup.shape[0] - 3}]."
                )
            columns[:, j] = lookup[column.astype(np.int64) + 2]
        return columns

    def _csr(self, data: np.ndarray, indices: np.ndarray, rows: int):
        """Rows of equal length (``data`` and ``indices``: rows × entries): the dense
        values (columns 0..k-1), then one 1 per text column; sorted within a row because
        each text column's features follow the last."""
        from scipy import sparse

        width = data.shape[1]
        indptr = np.arange(0, rows * width + 1, width, dtype=np.int64)
        matrix = sparse.csr_matrix(
            (data.reshape(-1), indices.reshape(-1), indptr), shape=(rows, self.n_features)
        )
        matrix.has_sorted_indices = True
        matrix.has_canonical_format = True
        return matrix

    # -- the record --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-safe record (:meth:`from_dict` reads it back and checks it)."""
        return {
            "version": ENCODING_VERSION,
            "numeric": list(self.numeric),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "standardize": self.standardize,
            "indicators": list(self.indicators),
            "text": list(self.text),
            "levels": [list(column) for column in self.levels],
            "missing_level": list(self.missing_level),
            "hash_bits": self.hash_bits,
            "columns": list(self.columns),
        }

    @classmethod
    def from_dict(cls, record) -> Encoding:
        """The encoding of a :meth:`to_dict` record; :class:`EncodingError` naming the field
        for anything malformed (never trusted)."""
        _check_record(record)
        try:
            return cls(
                record["numeric"], record["mean"], record["scale"],
                standardize=record["standardize"], indicators=record["indicators"],
                text=record["text"], levels=record["levels"],
                missing_level=record["missing_level"], hash_bits=record["hash_bits"],
                columns=record["columns"],
            )  # fmt: skip
        except ValueError as error:
            raise EncodingError(str(error)) from None

    def __eq__(self, other) -> bool:
        return isinstance(other, Encoding) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        kind = f"hashed into 2**{self.hash_bits}" if self.hash_bits else "one-hot"
        return (
            f"Encoding({len(self.numeric)} numeric, {len(self.text)} text ({kind}), "
            f"{self.n_features} features)"
        )

    # -- consistency ----------------------------------------------------------------------
    def _check(self) -> None:
        """Raise ValueError for fields that do not fit together."""
        d = len(self.numeric)
        if self.mean.shape != (d,) or self.scale.shape != (d,):
            raise ValueError(f"mean and scale need {d} values each (one per numeric column).")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all()):
            raise ValueError("mean and scale must be finite.")
        if not (self.scale > 0).all():
            raise ValueError("scale must be positive.")
        names = self.numeric + self.text
        if len(set(names)) != len(names):
            raise ValueError("a column is named twice among the numeric and text columns.")
        if sorted(self.columns) != sorted(names):
            raise ValueError("columns must list the numeric and text columns, each once.")
        unknown = set(self.indicators) - set(self.numeric)
        if unknown or len(set(self.indicators)) != len(self.indicators):
            raise ValueError("indicators must name numeric columns, each once.")
        if len(self.levels) != len(self.text) or len(self.missing_level) != len(self.text):
            raise ValueError("levels and missing_level need one entry per text column.")
        if self.hash_bits is not None:
            if type(self.hash_bits) is not int or not 1 <= self.hash_bits <= MAX_HASH_BITS:
                raise ValueError(f"hash_bits must be a whole number in [1, {MAX_HASH_BITS}].")
            if any(self.levels):
                raise ValueError("a hashed encoding keeps no levels.")
        for name, column in zip(self.text, self.levels, strict=True):
            if len(set(column)) != len(column):
                raise ValueError(f"the levels of {name!r} hold a level twice.")


_RECORD_FIELDS = {
    "version": int, "numeric": list, "mean": list, "scale": list, "standardize": bool,
    "indicators": list, "text": list, "levels": list, "missing_level": list, "columns": list,
}  # fmt: skip


def _check_record(record) -> None:
    """JSON types of a :meth:`Encoding.to_dict` record (values are checked by the class)."""
    if not isinstance(record, dict):
        raise EncodingError(f"the encoding record is {type(record).__name__}, not an object.")
    for key, kind in _RECORD_FIELDS.items():
        value = record.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EncodingError(f"the encoding's field {key!r} is missing or not {kind.__name__}.")
    if record["version"] != ENCODING_VERSION:
        raise EncodingError(
            f"the encoding's version is {record['version']}; this fastgd reads {ENCODING_VERSION}."
        )
    hash_bits = record.get("hash_bits", "absent")
    if hash_bits is not None and (type(hash_bits) is not int):
        raise EncodingError("the encoding's field 'hash_bits' must be null or a whole number.")
    strings = ("numeric", "indicators", "text", "columns")
    for key in strings:
        if not all(isinstance(name, str) for name in record[key]):
            raise EncodingError(f"the encoding's field {key!r} must list strings.")
    for key in ("mean", "scale"):
        if not all(_is_number(v) for v in record[key]):
            raise EncodingError(f"the encoding's field {key!r} must list finite numbers.")
    if not all(isinstance(flag, bool) for flag in record["missing_level"]):
        raise EncodingError("the encoding's field 'missing_level' must list true/false.")
    if not all(
        isinstance(column, list) and all(isinstance(level, str) for level in column)
        for column in record["levels"]
    ):
        raise EncodingError("the encoding's field 'levels' must list lists of strings.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
