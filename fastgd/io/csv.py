"""Streaming numeric CSV: the file read in line-aligned byte chunks, each parsed by polars.

Why this shape: measured here (a 390 MB numeric CSV, 20 columns, to float64 blocks of
65,536 rows; best of 3 on a shared 2-core machine; ``benchmarks/test_csv.py``), polars'
batched reader ran at ~260 MB/s, pandas' C engine ~100 MB/s and pyarrow's streaming reader
~120 MB/s. polars' batched reader, however, neither says on which line a bad cell sits nor
lets a run go on past one. So fastgd cuts the (possibly compressed) byte stream at line ends
itself -- it never parses a cell by hand -- and counts the lines on the way (~170 MB/s in the
same run: the price of line numbers and of skipping bad rows). Each chunk goes to
``polars.read_csv`` with a fixed schema (selected columns as floats, the others as text and
not projected). A chunk that fails, or whose values are not all finite, or whose row count
differs from its line count, is diagnosed line by line with the standard library's ``csv``
module: that is where file, line and column of a bad cell come from, and where
``on_bad_rows="skip"`` drops bad lines before the good ones are parsed by polars again.
Clean chunks never take that slow path.

Blank lines carry no row and are passed over silently.

Limitation: a quoted field must not contain a line break (numeric CSVs do not have them).
"""

from __future__ import annotations

import bz2
import csv as _stdcsv
import gzip
import io
import math
import os
import queue
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SKIP_REASONS",
    "CsvBlock",
    "CsvError",
    "CsvSchema",
    "format_skipped",
    "iter_csv",
    "read_schema",
]

#: Delimiters tried when none is given, in order of preference on a tie.
DELIMITERS = (",", ";", "\t", "|")
#: Cells read as a missing value (compared case-insensitively, after stripping spaces).
MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "-nan", "#n/a"})
#: Why a row can be skipped (the keys of ``CsvBlock.skipped``).
SKIP_REASONS = {
    "missing": "missing value",
    "non_numeric": "non-numeric cell",
    "non_finite": "infinite value",
    "ragged": "wrong number of fields",
    "encoding": "not UTF-8",
}
#: How many skipped line numbers a block remembers.
SKIPPED_LINES_KEPT = 10
#: Bytes read from the start of the file to find the delimiter, the header and the line size.
SNIFF_BYTES = 1 << 16
#: Bounds on the bytes parsed per call to polars (about ``block_rows`` lines when it fits).
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 32 << 20
#: Lines looked at to tell a text (categorical) column from a stray bad cell.
CATEGORICAL_PROBE_LINES = 100

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd"}
_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}


class CsvError(ValueError):
    """A problem with a CSV file; ``path``, ``line`` (1-based in the file, the header
    counted) and ``column`` (its name) say where, when known. The message names them."""

    def __init__(self, message: str, *, path, line: int | None = None, column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        where = [self.path]
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass
class CsvSchema:
    """What :func:`read_schema` found: the file's layout and the columns selected.

    ``columns`` holds every column's name (``column_1``, ``column_2``, ... without a
    header); ``feature_names`` and ``target`` the selection, in the order X and y take.
    """

    path: str
    delimiter: str
    has_header: bool
    columns: list[str]
    feature_names: list[str]
    target: str | None
    compression: str | None
    #: Average bytes per line in the first 64 KiB (sizes the chunks handed to polars).
    line_bytes: float = 100.0

    @property
    def positions(self) -> dict[str, int]:
        """Column name -> index (a dict: list.index per name is quadratic in the columns)."""
        return {name: i for i, name in enumerate(self.columns)}

    @property
    def feature_indices(self) -> list[int]:
        positions = self.positions
        return [positions[name] for name in self.feature_names]

    @property
    def target_index(self) -> int | None:
        return None if self.target is None else self.positions[self.target]

    @property
    def first_data_line(self) -> int:
        return 2 if self.has_header else 1


@dataclass
class CsvBlock:
    """A block of consecutive good rows.

    ``X`` (C-contiguous, ``rows`` × features) and ``y`` (``rows``, or None without a target)
    in the dtype asked for; ``first_line`` is the file line of row 0 and ``line_numbers``
    the file line of every row (rows skipped, blank lines and the header make gaps).
    ``skipped`` counts the rows skipped since the previous block by reason (keys of
    ``SKIP_REASONS``), ``skipped_lines`` holds the first few of their line numbers.
    """

    X: np.ndarray
    y: np.ndarray | None
    first_line: int
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_lines: list[int] = field(default_factory=list)
    line_numbers: np.ndarray | None = None


def format_skipped(skipped: dict[str, int], lines: Sequence[int] = ()) -> str:
    """One sentence for a skip summary: ``"skipped 3 rows: 2 missing value, 1 non-numeric
    cell (lines 4, 7, 9)"`` (empty when nothing was skipped)."""
    total = sum(skipped.values())
    if not total:
        return ""
    parts = ", ".join(
        f"{count} {SKIP_REASONS.get(reason, reason)}"
        for reason, count in sorted(skipped.items(), key=lambda item: -item[1])
    )
    shown = ", ".join(str(line) for line in lines[:SKIPPED_LINES_KEPT])
    more = ", ..." if total > min(len(lines), SKIPPED_LINES_KEPT) else ""
    where = f" (lines {shown}{more})" if shown else ""
    return f"skipped {total} row{'s' if total != 1 else ''}: {parts}{where}"


# --------------------------------------------------------------------------- opening


def _compression_of(path: str) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(4)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _open_binary(path: str, compression: str | None):
    """A binary stream of the file's (decompressed) bytes, read incrementally."""
    if compression is None:
        return open(path, "rb")
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            try:  # Python >= 3.14 ships zstd in the standard library
                from compression import zstd as std_zstd  # type: ignore[import-not-found]
            except ImportError:
                raise CsvError(
                    "the file is zstd-compressed and reading it needs the 'zstandard' "
                    "package: pip install 'fastgd[zstd]' (or decompress it first: unzstd).",
                    path=path,
                ) from None
            return std_zstd.open(path, "rb")
        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    raise ValueError(f"unknown compression {compression!r}")


def _read_exactly(stream, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream)."""
    parts, got = [], 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# --------------------------------------------------------------------------- schema


def _is_number(cell: str) -> bool:
    text = cell.strip()
    if "_" in text:  # Python's float() accepts 1_000; CSV readers do not
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_delimiter(lines: list[str]) -> str:
    best, best_count = ",", 0
    for delimiter in DELIMITERS:
        counts = {line.count(delimiter) for line in lines}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = delimiter, count
    if best_count:
        return best
    # No delimiter with the same count on every line (ragged rows): take the most frequent
    # one on the first line, or ',' for a single column.
    first = lines[0] if lines else ""
    counts = [(first.count(d), -i, d) for i, d in enumerate(DELIMITERS)]
    top = max(counts)
    return top[2] if top[0] else ","


def _split(line: str, delimiter: str) -> list[str]:
    return next(_stdcsv.reader([line], delimiter=delimiter))


def _decode_line(raw: bytes, path: str, line: int, delimiter: str | None, names) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = None
        if delimiter is not None:
            index = raw[: exc.start].count(delimiter.encode())
            if names is not None and index < len(names):
                column = names[index]
            else:
                column = f"column_{index + 1}"
        bad = raw[exc.start : exc.start + 4]
        raise CsvError(
            f"the file is not valid UTF-8 (byte {bad[:1]!r} in {bad!r}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8).",
            path=path,
            line=line,
            column=column,
        ) from None


def _as_names(value, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be column names (str); got {name!r}.")
    return names


def read_schema(
    path,
    *,
    target: str | None = None,
    features=None,
    drop=None,
    delimiter: str | None = None,
    header="infer",
) -> CsvSchema:
    """Read a CSV's layout from its first lines and check the column selection.

    Parameters
    ----------
    path : str or path-like
        The file; ``.gz``, ``.bz2`` and ``.zst`` files are decompressed on the fly
        (recognised by their first bytes).
    target : str, optional
        The column that becomes ``y``.
    features : list of str (or "A,B,C"), optional
        The columns of ``X``, in this order. Default: every other column, minus ``drop``.
    drop : list of str (or "A,B"), optional
        Columns left out of the default features (e.g. an id or a text column).
    delimiter : str, optional
        Default: sniffed among ``, ; TAB |`` (the one with the same count on every line).
    header : "infer", True or False
        ``"infer"``: the first row is a header when one of its cells is not a number.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    if header not in ("infer", True, False):
        raise ValueError(f"header must be 'infer', True or False; got {header!r}.")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"delimiter must be one character; got {delimiter!r}.")
    features = _as_names(features, "features")
    drop = _as_names(drop, "drop")
    if features is not None and drop is not None:
        raise ValueError("give features or drop, not both (drop removes from the default).")

    compression = _compression_of(path)
    with _open_binary(path, compression) as stream:
        head = _read_exactly(stream, SNIFF_BYTES)
        # make sure the sample holds two whole lines (header + one row) when the file has
        # them, however long the lines are
        while head.count(b"\n") < 2:
            more = stream.read(SNIFF_BYTES)
            if not more:
                break
            head += more
    if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        head = head[3:]
    raw_lines = head.split(b"\n")
    if len(head) >= SNIFF_BYTES and not head.endswith(b"\n"):
        raw_lines = raw_lines[:-1]  # the last one may be cut
    raw_lines = [raw.rstrip(b"\r") for raw in raw_lines]
    numbered = [(i + 1, raw) for i, raw in enumerate(raw_lines) if raw.strip()]
    if not numbered:
        raise CsvError("the file is empty (no lines with data).", path=path)

    first_no, first_raw = numbered[0]
    if first_no != 1:
        raise CsvError(
            "the file starts with blank lines; the first line must be the header or a row.",
            path=path,
            line=1,
        )
    # sniff on a lenient decoding; the strict one below names a bad byte's column
    sample = [raw.decode("utf-8", errors="replace") for _, raw in numbered[:20]]
    if delimiter is None:
        delimiter = _sniff_delimiter(sample)
    first_cells = _split(_decode_line(first_raw, path, 1, delimiter, None), delimiter)
    if header == "infer":
        has_header = any(
            not _is_number(cell) and cell.strip().lower() not in MISSING_TOKENS
            for cell in first_cells
        )
    else:
        has_header = bool(header)
    if has_header:
        columns = [cell.strip() or f"column_{i + 1}" for i, cell in enumerate(first_cells)]
        seen: dict[str, int] = {}
        for i, name in enumerate(columns):
            if name in seen:
                raise CsvError(
                    f"the header names column {name!r} twice (fields {seen[name] + 1} and "
                    f"{i + 1}); rename one.",
                    path=path,
                    line=1,
                    column=name,
                )
            seen[name] = i
        if len(numbered) < 2:
            raise CsvError("the file has a header but no data rows.", path=path, line=1)
    else:
        columns = [f"column_{i + 1}" for i in range(len(first_cells))]

    available = ", ".join(repr(name) for name in columns)
    if len(available) > 300:
        available = available[:300] + ", ..."

    known = set(columns)

    def check(name: str, what: str) -> None:
        if name not in known:
            hint = "" if has_header else " (the file has no header row)"
            raise CsvError(
                f"{what} column {name!r} is not in the file{hint}; its columns are: {available}.",
                path=path,
                line=1,
                column=name,
            )

    if target is not None:
        check(target, "the target")
    for name in features or ():
        check(name, "the feature")
        if name == target:
            raise ValueError(f"column {name!r} is the target; it cannot also be a feature.")
    for name in drop or ():
        check(name, "the dropped")
    if features is None:
        left_out = set(drop or ()) | {target}
        features = [name for name in columns if name not in left_out]
    if len(set(features)) != len(features):
        raise ValueError(f"features name a column twice: {features!r}.")
    if not features:
        raise CsvError(f"no feature columns are left (columns: {available}).", path=path, line=1)
    line_bytes = len(head) / max(len(raw_lines), 1)
    return CsvSchema(
        path=path,
        delimiter=delimiter,
        has_header=has_header,
        columns=columns,
        feature_names=list(features),
        target=target,
        compression=compression,
        line_bytes=max(line_bytes, 1.0),
    )


# --------------------------------------------------------------------------- chunks


def _chunks(schema: CsvSchema, chunk_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """``(first_line, data, n_lines)``: the data lines, cut at line ends, header skipped."""
    with _open_binary(schema.path, schema.compression) as stream:
        line = 1
        if schema.has_header:
            if not stream.readline().endswith(b"\n"):
                return  # a header without a line end: nothing follows
            line = 2
        elif stream.peek(3)[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark
            stream.read(3)
        while True:
            data = _read_exactly(stream, chunk_bytes)
            if not data:
                return
            if not data.endswith(b"\n"):
                # complete the last line (measured: cheaper than cutting at the last line
                # end and carrying the rest, which copies the chunk twice)
                data += stream.readline()
            n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            yield line, data, n_lines
            line += n_lines


class _ChunkParser:
    """Turns one chunk of lines into (X, y, line numbers, skipped) for one schema."""

    def __init__(self, schema: CsvSchema, dtype, on_bad_rows: str):
        import polars as pl

        self.pl = pl
        self.schema = schema
        self.dtype = np.dtype(dtype)
        self.on_bad_rows = on_bad_rows
        float_type = pl.Float32 if self.dtype == np.float32 else pl.Float64
        selected = set(schema.feature_names) | ({schema.target} if schema.target else set())
        # polars names the columns itself; ours may be anything, so use positional names
        self.keys = [f"c{i}" for i in range(len(schema.columns))]
        self.polars_schema = {
            key: float_type if name in selected else pl.String
            for key, name in zip(self.keys, schema.columns, strict=True)
        }
        positions = schema.positions
        self.projection = sorted(positions[name] for name in selected)
        # A row with too few fields lacks the last one, which polars reads as null: a null
        # there sends the chunk to the diagnosis. When the last column is not selected, it
        # is read too (as text) just for this check.
        last = len(schema.columns) - 1
        self.last_key = self.keys[last]
        self.probe_last = last not in self.projection
        if self.probe_last:
            self.projection.append(last)
        self.feature_keys = [self.keys[i] for i in schema.feature_indices]
        self.target_key = None if schema.target is None else self.keys[schema.target_index]
        self.n_fields = len(schema.columns)
        self.selected = selected
        self.delimiter = schema.delimiter

    def _polars(self, data: bytes, probe: bool = True):
        """(X, y) from polars, or None when polars rejects the chunk (or, with ``probe``,
        a row may be short)."""
        pl = self.pl
        try:
            frame = pl.read_csv(
                data,
                has_header=False,
                separator=self.delimiter,
                schema=self.polars_schema,
                columns=self.projection,
                raise_if_empty=False,
                # bad bytes in a column that is not read must not fail the chunk; in a
                # read column they fail the float parse, and the diagnosis names them
                encoding="utf8-lossy",
            )
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError):
            return None
        if probe and self.probe_last and frame.get_column(self.last_key).null_count():
            return None  # a short row, or just an empty text cell: look line by line
        X = frame.select(self.feature_keys).to_numpy(order="c")
        X = np.ascontiguousarray(X, dtype=self.dtype)
        y = None
        if self.target_key is not None:
            y = np.ascontiguousarray(frame.get_column(self.target_key).to_numpy(), self.dtype)
        return X, y

    def parse(self, first_line: int, data: bytes, n_lines: int):
        parsed = self._polars(data)
        if parsed is not None:
            X, y = parsed
            # a sum is one cheap pass; only when it is not finite look cell by cell (a
            # finite sum can overflow, the precise check then clears it)
            if X.shape[0] == n_lines and _all_finite(X) and (y is None or _all_finite(y)):
                lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
                return X, y, lines, Counter(), []
        return self._diagnose(first_line, data, n_lines)

    def _diagnose(self, first_line: int, data: bytes, n_lines: int):
        """The slow path: look at each line, raise or skip the bad ones, parse the rest."""
        raw_lines = data.split(b"\n")
        if data.endswith(b"\n"):
            raw_lines.pop()
        good: list[bytes] = []
        good_lines: list[int] = []
        skipped: Counter = Counter()
        skipped_lines: list[int] = []
        for offset, raw in enumerate(raw_lines):
            line = first_line + offset
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue  # blank lines carry no row
            problem = self._check_line(raw, line, raw_lines, offset)
            if problem is None:
                good.append(raw)
                good_lines.append(line)
                continue
            reason, error = problem
            if self.on_bad_rows == "error":
                raise error
            skipped[reason] += 1
            if len(skipped_lines) < SKIPPED_LINES_KEPT:
                skipped_lines.append(line)
        n_features = len(self.feature_keys)
        if not good:
            X = np.empty((0, n_features), dtype=self.dtype)
            y = None if self.target_key is None else np.empty(0, dtype=self.dtype)
        else:
            parsed = self._polars(b"\n".join(good) + b"\n", probe=False)
            if parsed is None or parsed[0].shape[0] != len(good):
                raise CsvError(
                    "polars could not parse these lines although each looks like numbers "
                    f"(lines {good_lines[0]}-{good_lines[-1]}); quoted line breaks are not "
                    "supported.",
                    path=self.schema.path,
                    line=good_lines[0],
                )
            X, y = parsed
        return X, y, np.asarray(good_lines, dtype=np.int64), skipped, skipped_lines

    def _check_line(self, raw: bytes, line: int, raw_lines, offset):
        """None for a good line, else (reason, CsvError)."""
        schema = self.schema
        path = schema.path
        try:
            text = _decode_line(raw, path, line, self.delimiter, schema.columns)
        except CsvError as error:
            if error.column in self.selected:
                return "encoding", error
            # a bad byte in a column that is not read (polars skips it too)
            text = raw.decode("utf-8", errors="replace")
        cells = _split(text, self.delimiter)
        if len(cells) != self.n_fields:
            column = schema.columns[len(cells)] if len(cells) < self.n_fields else None
            what = "fewer" if len(cells) < self.n_fields else "more"
            first = "header" if schema.has_header else "first row"
            return "ragged", CsvError(
                f"the row has {len(cells)} fields but the {first} has {self.n_fields} "
                f"({what} than expected); fix the row or use on_bad_rows='skip'.",
                path=path,
                line=line,
                column=column,
            )
        positions = schema.positions
        for name in [*([schema.target] if schema.target else []), *schema.feature_names]:
            cell = cells[positions[name]].strip()
            if cell.lower() in MISSING_TOKENS:
                return "missing", CsvError(
                    f"missing value ({cell!r}); fill it in, drop the column, or use "
                    "on_bad_rows='skip'.",
                    path=path,
                    line=line,
                    column=name,
                )
            if not _is_number(cell):
                return "non_numeric", self._text_error(name, cell, line, raw_lines, offset)
            if not math.isfinite(float(cell)):
                return "non_finite", CsvError(
                    f"infinite value ({cell!r}); remove or clip it, or use on_bad_rows='skip'.",
                    path=path,
                    line=line,
                    column=name,
                )
        return None

    def _text_error(self, name: str, cell: str, line: int, raw_lines, offset) -> CsvError:
        """A text cell: a categorical column gets the hint to drop or encode it."""
        index = self.schema.columns.index(name)
        texts = total = 0
        for raw in raw_lines[offset : offset + CATEGORICAL_PROBE_LINES]:
            try:
                cells = _split(raw.rstrip(b"\r").decode("utf-8"), self.delimiter)
            except (UnicodeDecodeError, StopIteration):
                continue
            if len(cells) == self.n_fields:
                total += 1
                value = cells[index].strip()
                texts += value.lower() not in MISSING_TOKENS and not _is_number(value)
        option = "--target" if name == self.schema.target else "--drop"
        if total >= 2 and texts * 2 > total:
            action = (
                "encode it as numbers"
                if name == self.schema.target
                else f"drop it (drop=[{name!r}], {option} {name}) or encode it as numbers"
            )
            message = f"column {name!r} holds text ({cell!r} at line {line}); {action}."
        else:
            message = (
                f"{cell!r} is not a number; fix the cell or use on_bad_rows='skip' (if the "
                f"column holds text, drop it: {option} {name})."
            )
        return CsvError(message, path=self.schema.path, line=line, column=name)


def _all_finite(array: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):
            return True
    return bool(np.isfinite(array).all())


# --------------------------------------------------------------------------- blocks


def _blocks(schema: CsvSchema, block_rows: int, dtype, on_bad_rows: str) -> Iterator[CsvBlock]:
    parser = _ChunkParser(schema, dtype, on_bad_rows)
    chunk_bytes = int(min(max(block_rows * schema.line_bytes, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES))
    pending: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
    pending_rows = 0
    skipped: Counter = Counter()
    skipped_lines: list[int] = []
    total_rows = total_skipped = 0

    def emit(rows: int) -> CsvBlock:
        nonlocal pending, pending_rows, skipped, skipped_lines
        parts_X, parts_y, parts_lines, taken = [], [], [], 0
        while taken < rows:
            X, y, lines = pending[0]
            take = min(rows - taken, X.shape[0])
            parts_X.append(X[:take])
            parts_y.append(None if y is None else y[:take])
            parts_lines.append(lines[:take])
            if take == X.shape[0]:
                pending.pop(0)
            else:
                pending[0] = (X[take:], None if y is None else y[take:], lines[take:])
            taken += take
        join = len(parts_X) > 1
        X = np.concatenate(parts_X) if join else np.ascontiguousarray(parts_X[0])
        y = None
        if parts_y[0] is not None:
            y = np.concatenate(parts_y) if join else np.ascontiguousarray(parts_y[0])
        lines = np.concatenate(parts_lines) if join else parts_lines[0]
        pending_rows -= rows
        block = CsvBlock(
            X=X,
            y=y,
            first_line=int(lines[0]),
            rows=rows,
            skipped=dict(skipped),
            skipped_lines=skipped_lines,
            line_numbers=lines,
        )
        skipped, skipped_lines = Counter(), []
        return block

    for first_line, data, n_lines in _chunks(schema, chunk_bytes):
        X, y, lines, bad, bad_lines = parser.parse(first_line, data, n_lines)
        del data
        skipped.update(bad)
        total_skipped += sum(bad.values())
        skipped_lines.extend(bad_lines[: SKIPPED_LINES_KEPT - len(skipped_lines)])
        if X.shape[0]:
            pending.append((X, y, lines))
            pending_rows += X.shape[0]
            total_rows += X.shape[0]
        while pending_rows >= block_rows:
            yield emit(block_rows)
    if pending_rows:
        yield emit(pending_rows)
    if total_rows == 0:
        if total_skipped:
            raise CsvError(
                f"every row was bad; {format_skipped(skipped, skipped_lines)}.",
                path=schema.path,
            )
        raise CsvError(
            "the file has a header but no data rows."
            if schema.has_header
            else "the file has no data rows.",
            path=schema.path,
            line=1 if schema.has_header else None,
        )
    if skipped:  # rows skipped after the last block: report them on an empty block
        n_features = len(schema.feature_names)
        empty_y = None if schema.target is None else np.empty(0, dtype=dtype)
        yield CsvBlock(
            X=np.empty((0, n_features), dtype=dtype),
            y=empty_y,
            first_line=int(skipped_lines[0]) if skipped_lines else 0,
            rows=0,
            skipped=dict(skipped),
            skipped_lines=skipped_lines,
            line_numbers=np.empty(0, dtype=np.int64),
        )


# --------------------------------------------------------------------------- prefetch

_ITEM, _END, _ERROR = 0, 1, 2
#: How often (seconds) a blocked producer checks whether the consumer has gone.
_POLL_SECONDS = 0.05


def _prefetched(source: Iterator[CsvBlock], depth: int = 1) -> Iterator[CsvBlock]:
    """Run ``source`` on a background thread, ``depth`` blocks ahead of the consumer.

    An exception in the thread is raised in the consumer; when the consumer stops early
    (break, an exception, garbage collection of the generator), the thread is told to stop,
    closes ``source`` itself, and is joined before this generator finishes closing."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for block in source:
                if not put((_ITEM, block)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, who re-raises it
            put((_ERROR, exc))
        finally:
            source.close()

    thread = threading.Thread(target=work, name="fastgd-csv-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == _ITEM:
                yield item
            elif kind == _END:
                return
            else:
                raise item
    finally:
        stop.set()
        thread.join()


def iter_csv(
    path_or_schema,
    *,
    target: str | None = None,
    features=None,
    drop=None,
    delimiter: str | None = None,
    header="infer",
    block_rows: int = 65536,
    dtype=np.float64,
    on_bad_rows: str = "error",
    prefetch: bool = True,
) -> Iterator[CsvBlock]:
    """Stream a numeric CSV as blocks of ``block_rows`` rows, in file order.

    Memory is bounded by the block size (a chunk of the file's bytes of about
    ``block_rows`` lines, its parsed arrays, and at most two blocks), not by the file.
    With ``prefetch``, the next block is parsed on a background thread while the caller
    works on this one.

    Parameters
    ----------
    path_or_schema : str, path-like or CsvSchema
        The file, or a schema from :func:`read_schema` (then leave the selection
        arguments out).
    target, features, drop, delimiter, header
        As for :func:`read_schema`.
    block_rows : int
        Rows per block; the last block may be shorter.
    dtype : float64 or float32
        Of ``X`` and ``y`` (parsed straight into it).
    on_bad_rows : "error" or "skip"
        ``"error"``: a bad row (missing or non-numeric cell, wrong field count, not
        UTF-8, infinite value) raises :class:`CsvError` naming the file, line and column.
        ``"skip"``: it is left out and counted in the next block's ``skipped`` (per
        reason) and ``skipped_lines``; rows skipped after the last row come on a final
        block with zero rows.

    Raises
    ------
    CsvError
        At the call for a missing column or an unreadable layout; while iterating for a
        bad row, or a file without data rows.
    """
    if isinstance(path_or_schema, CsvSchema):
        given = dict(target=target, features=features, drop=drop, delimiter=delimiter)
        if any(value is not None for value in given.values()) or header != "infer":
            raise ValueError(
                "iter_csv got a CsvSchema and selection arguments; put the selection in "
                "read_schema(...) instead."
            )
        schema = path_or_schema
    else:
        schema = read_schema(
            path_or_schema,
            target=target,
            features=features,
            drop=drop,
            delimiter=delimiter,
            header=header,
        )
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)):
        raise TypeError(f"block_rows must be an integer; got {block_rows!r}.")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1; got {block_rows!r}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip'; got {on_bad_rows!r}.")
    blocks = _blocks(schema, int(block_rows), dtype, on_bad_rows)
    return _prefetched(blocks) if prefetch else blocks
