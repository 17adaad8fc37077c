"""Streaming CSV: the file read in line-aligned byte chunks, each parsed by polars.

Why this shape: measured here (a 390 MB numeric CSV, 20 columns, to float64 blocks of
65,536 rows; best of 3 on a shared 2-core machine; ``benchmarks/test_csv.py``), polars'
batched reader ran at ~260 MB/s, pandas' C engine ~100 MB/s and pyarrow's streaming reader
~120 MB/s. polars' batched reader, however, neither says on which line a bad cell sits nor
lets a run go on past one. So fastgd cuts the (possibly compressed) byte stream at line ends
itself -- it never parses a cell by hand -- and counts the lines on the way (~170 MB/s in the
same run: the price of line numbers and of skipping bad rows). Each chunk goes to
``polars.read_csv`` with a fixed schema (selected numeric columns as floats, the others as
text; unselected ones not projected). A chunk that fails, or whose values are not all
finite (NaN allowed with ``missing="keep"``), or whose row count
differs from its line count, is diagnosed line by line with the standard library's ``csv``
module: that is where file, line and column of a bad cell come from, and where
``on_bad_rows="skip"`` drops bad lines before the good ones are parsed by polars again.
Clean chunks never take that slow path.

Column types come from the file's first 64 KiB (:func:`read_schema`): a text column's
cells become int32 level codes (``CsvBlock.codes``) through a
:class:`~fastgd.io.levels.LevelTable`, vectorised per chunk. A missing target cell skips
its row (``"missing_target"``) in every mode.

Blank lines carry no row and are passed over silently. Numbers padded with spaces or tabs
(``1, 2, 3``) are read: polars rejects them, so a chunk holding them is parsed a second time
as text, stripped and cast (vectorised; clean chunks never pay for it).

A compressed stream that is truncated or corrupt is an error (``CsvError``), never an early
end of file. Only regular files are read: the file is opened more than once (the schema,
then each pass), which a pipe cannot give.

Limitation: a quoted field must not contain a line break.
"""

from __future__ import annotations

import bz2
import csv as _stdcsv
import gzip
import io
import math
import os
import queue
import stat
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._cells import MISSING_TOKENS, CsvError
from .levels import MISSING_CODE, LevelTable, code_series

__all__ = [
    "SKIP_REASONS",
    "CsvBlock",
    "CsvError",
    "CsvSchema",
    "CsvWarning",
    "format_skipped",
    "iter_csv",
    "read_schema",
]

#: Delimiters tried when none is given, in order of preference on a tie.
DELIMITERS = (",", ";", "\t", "|")
#: Why a row can be skipped (the keys of ``CsvBlock.skipped``).
SKIP_REASONS = {
    "missing": "missing value",
    "missing_target": "missing target",
    "non_numeric": "non-numeric cell",
    "non_finite": "infinite value",
    "ragged": "wrong number of fields",
    "encoding": "not UTF-8",
    "malformed": "malformed line",
}
#: How many skipped line numbers a block remembers.
SKIPPED_LINES_KEPT = 10
#: Bytes read from the start of the file to find the delimiter, the header and the line size.
SNIFF_BYTES = 1 << 16
#: Pieces the first SNIFF_BYTES are read in.
SNIFF_PIECE_BYTES = 1 << 13
#: Bounds on the bytes parsed per call to polars (about ``block_rows`` lines when it fits).
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 32 << 20
#: Lines looked at to tell a text (categorical) column from a stray bad cell.
CATEGORICAL_PROBE_LINES = 100
#: Compressed bytes fed to the zstd decompressor at a time.
ZSTD_READ_BYTES = 1 << 17

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd"}
_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}


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
    #: ``"numeric"`` or ``"text"`` for each selected column (features and target).
    column_types: dict[str, str] = field(default_factory=dict)

    @cached_property
    def column_positions(self) -> dict[str, int]:
        """Each column's 0-based field number (one dict: lookups stay linear in the
        column count, where ``columns.index`` in a loop was quadratic)."""
        return {name: i for i, name in enumerate(self.columns)}

    @property
    def feature_indices(self) -> list[int]:
        positions = self.column_positions
        return [positions[name] for name in self.feature_names]

    @property
    def numeric_features(self) -> list[str]:
        """The features read as numbers (the columns of ``CsvBlock.X``, in order)."""
        return [name for name in self.feature_names if self.column_type(name) == "numeric"]

    @property
    def text_features(self) -> list[str]:
        """The features read as text (the columns of ``CsvBlock.codes``, in order)."""
        return [name for name in self.feature_names if self.column_type(name) == "text"]

    def column_type(self, name: str) -> str:
        """A selected column's type (``"numeric"`` for a schema made without types)."""
        return self.column_types.get(name, "numeric")

    @property
    def target_is_text(self) -> bool:
        """Whether there is a target and it is read as text (``y`` holds level codes)."""
        return self.target is not None and self.column_type(self.target) == "text"

    @property
    def target_index(self) -> int | None:
        return None if self.target is None else self.column_positions[self.target]

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
    #: int32 level codes of the text features (``rows`` × ``len(schema.text_features)``;
    #: ``MISSING_CODE``, ``UNSEEN_CODE``), None without text features.
    codes: np.ndarray | None = None
    #: The :class:`~fastgd.io.levels.LevelTable` the codes come from (None: no text column).
    levels: LevelTable | None = None


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


_FILE_KINDS = (
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _require_regular_file(path: str) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks until a
    writer comes, and a pipe gives its bytes once while fastgd reads a CSV more than once
    (the schema, then each pass)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file.") from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    raise CsvError(
        f"not a regular file but {kind}; fastgd reads a CSV more than once: save it to a "
        "file first (e.g. cat ... > data.csv) and give that file.",
        path=path,
    )


def _compression_of(path: str) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(4)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _decompression_errors() -> tuple[type[BaseException], ...]:
    """What the decompressors raise on a truncated or corrupt stream (gzip.BadGzipFile and
    bz2's "Invalid data stream" are OSErrors; zstd's own error where the module exists)."""
    errors: list[type[BaseException]] = [EOFError, zlib.error, OSError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _corrupt_stream(path: str, compression: str, lines_read: int, exc: BaseException):
    """The CsvError for a decompression failure after ``lines_read`` complete lines."""
    where = f"after line {lines_read}" if lines_read else "before its first complete line"
    detail = str(exc) or type(exc).__name__
    error = CsvError(
        f"the {compression} stream is truncated or corrupt {where} ({detail}); the file is "
        "incomplete or damaged: copy or download it again.",
        path=path,
    )
    error.line = lines_read + 1  # the first line not read whole (the message says where)
    return error


class _ZstdReader(io.RawIOBase):
    """zstd frames decompressed incrementally.

    Why not zstandard's ``stream_reader``: measured here (zstandard 0.25), it ends quietly
    at the cut of a truncated file, which would train on part of it without a word. Here a
    stream that ends inside a frame raises EOFError. Concatenated frames are read in turn.
    """

    def __init__(self, path: str, zstandard):
        self._file = open(path, "rb")
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed, its end not yet seen
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Decompress more; False at the clean end of the file."""
        data = self._file.read(ZSTD_READ_BYTES)
        if not data:
            if self._in_frame:
                raise EOFError("the file ends inside a zstd frame")
            return False
        parts = []
        while data:
            parts.append(self._frame.decompress(data))
            self._in_frame = True
            if not self._frame.eof:
                break
            data = self._frame.unused_data  # the next frame's start, if any
            self._frame = self._decompressor.decompressobj()
            self._in_frame = False
        self._out, self._pos = b"".join(parts), 0
        return True

    def readinto(self, buffer) -> int:
        while self._pos >= len(self._out):
            if not self._fill():
                return 0
        size = min(len(buffer), len(self._out) - self._pos)
        buffer[:size] = memoryview(self._out)[self._pos : self._pos + size]
        self._pos += size
        return size

    def close(self) -> None:
        self._file.close()
        super().close()


def open_binary(path: str, compression: str | None):
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
            return std_zstd.open(path, "rb")  # raises EOFError on a truncated stream
        return io.BufferedReader(_ZstdReader(path, zstandard), buffer_size=1 << 20)
    raise ValueError(f"unknown compression {compression!r}")


def _read_exactly(stream, size: int, parts: list[bytes] | None = None) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream).

    With ``parts`` (a decompressed stream), the bytes are read by ``read1`` (one
    decompression step each) into that list, emptied first: when the decompressor raises
    (a damaged trailer or CRC, after every line was decoded), ``parts`` still holds what
    was decoded before, so the message can say how far the file was read."""
    if parts is None:
        parts, read = [], stream.read
    else:
        parts.clear()
        read = stream.read1
    got = 0
    while got < size:
        part = read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _rest_of_line(stream, parts: list[bytes] | None) -> bytes:
    """The bytes up to and including the next line end (or the end of the stream).

    With ``parts`` (a decompressed stream, see :func:`_read_exactly`), read from what the
    stream has buffered (``peek`` decodes one step when the buffer is empty) and appended
    to ``parts``: ``readline`` would drop the decoded bytes of the step that fails."""
    if parts is None:
        return stream.readline()
    tail: list[bytes] = []
    while True:
        buffered = stream.peek(1)
        if not buffered:
            break
        end = buffered.find(b"\n")
        piece = stream.read(len(buffered) if end < 0 else end + 1)  # from the buffer
        tail.append(piece)
        parts.append(piece)
        if end >= 0:
            break
    return b"".join(tail)


# --------------------------------------------------------------------------- schema


def _is_number(cell: str) -> bool:
    text = cell.strip()
    # Python's float() also accepts 1_000 and non-ASCII digits (١٢, full-width); polars
    # does not, and calling them numbers would misdiagnose the line
    if "_" in text or not text.isascii():
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
    """The fields of one line (raises csv.Error on what the csv module cannot split)."""
    if '"' not in line:
        # exactly what the csv module does on an unquoted line, without its field size
        # limit (131,072 characters) and ~3x faster
        if "\r" in line or "\n" in line:
            raise _stdcsv.Error("new-line character seen in unquoted field")
        return line.split(delimiter)
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


def _read_head(path: str, compression: str | None) -> bytes:
    """The first SNIFF_BYTES of the (decompressed) file, extended until it holds two whole
    lines (header + one row) when the file has them, however long the lines are."""
    parts: list[bytes] = []
    try:
        with open_binary(path, compression) as stream:
            # read by read1 (one decompression step each): a decompression error loses
            # nothing decoded before it, so the message can say how many lines came before
            got = 0
            while got < SNIFF_BYTES:
                part = stream.read1(SNIFF_PIECE_BYTES)
                if not part:
                    return b"".join(parts)
                parts.append(part)
                got += len(part)
            head = b"".join(parts)
            while head.count(b"\n") < 2:
                if b"\n" not in head and b"\r" in head:
                    break  # a file whose lines end in a bare \r: refused next, unread
                more = stream.read1(SNIFF_BYTES)
                if not more:
                    break
                parts.append(more)
                head += more
            return head
    except _decompression_errors() as exc:
        if compression is None:
            raise
        raise _corrupt_stream(path, compression, b"".join(parts).count(b"\n"), exc) from None


def _refuse_bare_carriage_return(head: bytes, path: str) -> None:
    """The first line must not hold a carriage return other than the one of a CRLF end:
    the csv module cannot split it and polars would read the whole file as one line."""
    first = head.split(b"\n", 1)[0]
    if first.endswith(b"\r"):
        first = first[:-1]
    if b"\r" not in first:
        return
    if b"\n" not in head:
        raise CsvError(
            "its lines end in a bare carriage return (\\r, as in old Mac files), which "
            "fastgd does not read; convert it first: tr '\\r' '\\n' < in.csv > out.csv",
            path=path,
            line=1,
        )
    raise CsvError(
        "the header holds a bare carriage return (\\r) inside the line; remove it (lines "
        "must end in \\n or \\r\\n).",
        path=path,
        line=1,
    )


def read_schema(
    path,
    *,
    target: str | None = None,
    features=None,
    drop=None,
    delimiter: str | None = None,
    header="infer",
    categorical=None,
) -> CsvSchema:
    """Read a CSV's layout and column types from its first lines and check the selection.

    Parameters
    ----------
    path : str or path-like
        The file; ``.gz``, ``.bz2`` and ``.zst`` files are decompressed on the fly
        (recognised by their first bytes).
    target : str, optional
        The column that becomes ``y``.
    features : list of str (or "A,B,C"), optional
        The feature columns, in this order. Default: every other column, minus ``drop``.
    drop : list of str (or "A,B"), optional
        Columns left out of the default features (e.g. an id column).
    delimiter : str, optional
        Default: sniffed among ``, ; TAB |`` (the one with the same count on every line).
    header : "infer", True or False
        ``"infer"``: the first row is a header when one of its cells is not a number.
    categorical : list of str (or "A,B"), optional
        Columns read as text whatever they hold (e.g. numeric codes of categories).

    Column types (``CsvSchema.column_types``) come from the first 64 KiB: a selected column
    is ``"text"`` when most of its non-missing cells there are not numbers (or
    it is named in ``categorical``), else ``"numeric"``. A numeric column's stray text
    cell is then an error at its line (or a row skipped), not a new category.

    Raises
    ------
    CsvError
        For a path that is not a regular file (a pipe, a device, a directory: the file is
        read more than once), a compressed stream that is truncated or corrupt within the
        first lines, lines ending in a bare carriage return; every problem of the header
        and the selection (a name repeated in the header, columns named that are not in
        it) in one error.
    FileNotFoundError
        For a path that does not exist.
    """
    path = os.fspath(path)
    _require_regular_file(path)
    if header not in ("infer", True, False):
        raise ValueError(f"header must be 'infer', True or False; got {header!r}.")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"delimiter must be one character; got {delimiter!r}.")
    asked = _Selection(
        target, _as_names(features, "features"), _as_names(drop, "drop"),
        _as_names(categorical, "categorical") or [],
    )  # fmt: skip
    if asked.features is not None and asked.drop is not None:
        raise ValueError("give features or drop, not both (drop removes from the default).")

    compression = _compression_of(path)
    head = _read_head(path, compression)
    if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        head = head[3:]
    _refuse_bare_carriage_return(head, path)
    n_lines, numbered = _head_lines(head, path)
    delimiter, first_cells = _first_line_cells(numbered, delimiter, path)
    has_header = _is_header(first_cells, header)
    problems: list[tuple[str, str | None]] = []
    columns = _column_names(first_cells, has_header, problems)
    if has_header and len(numbered) < 2 and not problems:
        raise CsvError("the file has a header but no data rows.", path=path, line=1)
    features = _select_features(columns, has_header, asked, problems)
    _raise_problems(problems, path)
    selected = [*features, *([target] if target is not None else [])]
    data_lines = numbered[1:] if has_header else numbered
    return CsvSchema(
        # the file's layout, then the columns selected
        path=path,
        compression=compression,
        delimiter=delimiter,
        has_header=has_header,
        line_bytes=max(len(head) / max(n_lines, 1), 1.0),
        columns=columns,
        feature_names=features,
        target=target,
        column_types=_column_types(data_lines, delimiter, columns, selected, asked.categorical),
    )


@dataclass(frozen=True)
class _Selection:
    """The columns asked for (names as lists; ``None``: not given)."""

    target: str | None
    features: list[str] | None
    drop: list[str] | None
    categorical: list[str]


def _column_types(data_lines, delimiter: str, columns, selected, categorical) -> dict[str, str]:
    """``"numeric"`` or ``"text"`` for each selected column, from the head's data lines
    (text: most of the non-missing cells are not numbers). A text column whose cells are
    nearly all numbers written with a decimal comma (``39,1``) gets a :class:`CsvWarning`:
    fastgd would read them as categories."""
    positions = {name: i for i, name in enumerate(columns)}
    categorical = set(categorical)
    wanted = [(name, positions[name]) for name in selected if name not in categorical]
    numbers = dict.fromkeys(selected, 0)
    texts = dict.fromkeys(selected, 0)
    comma_numbers = dict.fromkeys(selected, 0)
    for _, raw in data_lines:
        try:
            cells = _split(raw.decode("utf-8", errors="replace"), delimiter)
        except _stdcsv.Error:
            continue
        if len(cells) != len(columns):
            continue  # a ragged row: the reader reports it at its line
        for name, index in wanted:
            cell = cells[index].strip()
            if cell.lower() in MISSING_TOKENS:
                continue
            if _is_number(cell):
                numbers[name] += 1
            else:
                texts[name] += 1
                comma_numbers[name] += cell.count(",") == 1 and _is_number(cell.replace(",", "."))
    types = {
        name: "text" if name in categorical or texts[name] > numbers[name] else "numeric"
        for name in selected
    }
    _warn_about_decimal_commas(types, texts, comma_numbers)
    return types


class CsvWarning(UserWarning):
    """Something in a CSV that fastgd reads, but likely not as its author meant."""


def _warn_about_decimal_commas(types: dict, texts: dict, comma_numbers: dict) -> None:
    suspects = [
        name for name, kind in types.items()
        if kind == "text" and texts[name] and comma_numbers[name] >= 0.9 * texts[name]
    ]  # fmt: skip
    if suspects:
        import warnings

        shown = ", ".join(map(repr, suspects[:5])) + (" ..." if len(suspects) > 5 else "")
        warnings.warn(
            f"column(s) {shown} hold numbers written with a decimal comma (e.g. '39,1'), "
            "read as text: each value becomes a category. Convert the file to decimal "
            "points to train on them as numbers.",
            CsvWarning,
            stacklevel=5,
        )


def _raise_problems(problems: list[tuple[str, str | None]], path: str) -> None:
    """One CsvError for every problem of the header and the selection (line 1)."""
    if not problems:
        return
    if len(problems) == 1:
        message, column = problems[0]
    else:
        listed = "; ".join(f"({i}) {message}" for i, (message, _) in enumerate(problems, 1))
        message, column = f"{len(problems)} problems: {listed}", problems[0][1]
    raise CsvError(message, path=path, line=1, column=column)


def _head_lines(head: bytes, path: str) -> tuple[int, list[tuple[int, bytes]]]:
    """``(n_lines, numbered)``: how many whole lines the head holds (blank ones included,
    for the mean line size), and its non-blank lines as ``(line number, bytes)``."""
    raw_lines = head.split(b"\n")
    if len(head) >= SNIFF_BYTES and not head.endswith(b"\n"):
        raw_lines = raw_lines[:-1]  # the last one may be cut
    raw_lines = [raw.rstrip(b"\r") for raw in raw_lines]
    numbered = [(i + 1, raw) for i, raw in enumerate(raw_lines) if raw.strip()]
    if not numbered:
        raise CsvError("the file is empty (no lines with data).", path=path)
    if numbered[0][0] != 1:
        raise CsvError(
            "the file starts with blank lines; the first line must be the header or a row.",
            path=path,
            line=1,
        )
    return len(raw_lines), numbered


def _first_line_cells(
    numbered: list[tuple[int, bytes]], delimiter: str | None, path: str
) -> tuple[str, list[str]]:
    """``(delimiter, cells of line 1)``, the delimiter sniffed on the first lines when none
    is given."""
    # sniff on a lenient decoding; the strict one below names a bad byte's column
    if delimiter is None:
        sample = [raw.decode("utf-8", errors="replace") for _, raw in numbered[:20]]
        delimiter = _sniff_delimiter(sample)
    try:
        cells = _split(_decode_line(numbered[0][1], path, 1, delimiter, None), delimiter)
    except _stdcsv.Error as exc:
        raise CsvError(
            f"the first line cannot be split into fields ({exc}).", path=path, line=1
        ) from None
    return delimiter, cells


def _is_header(first_cells: list[str], header) -> bool:
    """Whether line 1 is a header: as ``header`` says, or (``"infer"``) when one of its
    cells is neither a number nor a missing-value token."""
    if header != "infer":
        return bool(header)
    return any(
        not _is_number(cell) and cell.strip().lower() not in MISSING_TOKENS for cell in first_cells
    )


def _column_names(first_cells: list[str], has_header: bool, problems: list) -> list[str]:
    """The header's names (a blank one named by its position; a repeated one is a
    problem), or ``column_1, column_2, ...`` for a file without a header."""
    if not has_header:
        return [f"column_{i + 1}" for i in range(len(first_cells))]
    columns = [cell.strip() or f"column_{i + 1}" for i, cell in enumerate(first_cells)]
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in seen:
            problems.append(
                (
                    f"the header names column {name!r} twice (fields {seen[name] + 1} and "
                    f"{i + 1}); rename one.",
                    name,
                )
            )
        seen[name] = i
    return columns


def _select_features(
    columns: list[str], has_header: bool, asked: _Selection, problems: list
) -> list[str]:
    """The feature columns: ``asked.features`` as given, else every column but the target
    and ``asked.drop``; every named column not in the file is a problem."""
    available = ", ".join(repr(name) for name in columns)
    if len(available) > 300:
        available = available[:300] + ", ..."
    known = set(columns)
    hint = "" if has_header else " (the file has no header row)"
    target = asked.target
    named = [("the target", [target] if target is not None else [])]
    named += [("the feature", asked.features or []), ("the dropped", asked.drop or [])]
    named += [("the categorical", asked.categorical)]
    for what, names in named:
        unknown = [name for name in names if name not in known]
        if unknown:
            shown = ", ".join(repr(name) for name in unknown)
            plural = "s" if len(unknown) > 1 else ""
            verb = "are" if len(unknown) > 1 else "is"
            problems.append(
                (
                    f"{what} column{plural} {shown} {verb} not in the file{hint}; its "
                    f"columns are: {available}.",
                    unknown[0],
                )
            )
    if target is not None and target in (asked.features or ()):
        raise ValueError(f"column {target!r} is the target; it cannot also be a feature.")
    features = asked.features
    if features is None:
        left_out = set(asked.drop or ()) | {target}
        features = [name for name in dict.fromkeys(columns) if name not in left_out]
    if len(set(features)) != len(features):
        raise ValueError(f"features name a column twice: {features!r}.")
    if not features and not problems:
        problems.append((f"no feature columns are left (columns: {available}).", None))
    return [name for name in features if name in known]


# --------------------------------------------------------------------------- chunks


def _chunks(schema: CsvSchema, chunk_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """``(first_line, data, n_lines)``: the data lines, cut at line ends, header skipped.

    A decompression failure raises CsvError (with the last line read whole), never ends
    the stream early."""
    errors = _decompression_errors() if schema.compression else ()
    decoded: list[bytes] | None = [] if schema.compression else None  # this chunk's so far
    line = 1
    try:
        with open_binary(schema.path, schema.compression) as stream:
            if schema.has_header:
                if not stream.readline().endswith(b"\n"):
                    return  # a header without a line end: nothing follows
                line = 2
            elif stream.peek(3)[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark
                stream.read(3)
            while True:
                data = _read_exactly(stream, chunk_bytes, decoded)
                if not data:
                    return
                if not data.endswith(b"\n"):
                    # complete the last line (measured: cheaper than cutting at the last
                    # line end and carrying the rest, which copies the chunk twice)
                    data += _rest_of_line(stream, decoded)
                n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
                if decoded is not None:
                    decoded.clear()
                yield line, data, n_lines
                line += n_lines
    except errors as exc:
        # the complete lines decoded before the failure (a damaged trailer fails after all)
        reached = line - 1 + sum(part.count(b"\n") for part in decoded or ())
        raise _corrupt_stream(schema.path, schema.compression, reached, exc) from None


def _has_bare_carriage_return(data: bytes) -> bool:
    """Whether a carriage return stands other than before a line feed (two byte counts at
    memchr speed, and only for a chunk that holds one: CRLF files)."""
    return b"\r" in data and data.count(b"\r") != data.count(b"\r\n")


def _lossy(levels: list[str]) -> bool:
    """Whether a level holds U+FFFD, what polars' lossy decoding puts for a bad byte."""
    return any("\ufffd" in level for level in levels)


def _every_line_complete(data: bytes, delimiter: str, n_fields: int) -> bool:
    """Whether every line of an unquoted chunk has ``n_fields`` fields, counted with numpy
    (a null in the last column is an empty cell or a short row; this tells them apart
    without the line-by-line diagnosis). False for a chunk with quotes."""
    if b'"' in data:
        return False
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buffer == 10)
    if not data.endswith(b"\n"):
        ends = np.append(ends, buffer.size)
    if ends.size == 0:
        return False
    starts = np.concatenate(([0], ends[:-1] + 1))
    fields = np.add.reduceat(buffer == ord(delimiter), starts, dtype=np.int64) + 1
    return bool((fields == n_fields).all())


def _null_values() -> list[str]:
    """The missing-value tokens as polars reads them (it compares exactly, so the usual
    spellings of each; others are found by the diagnosis or, in text columns, the
    level lookup)."""
    spellings = set()
    for token in MISSING_TOKENS - {""}:
        spellings |= {token, token.upper(), token.capitalize(), token.title()}
    return sorted(spellings)


@dataclass
class _Rows:
    """Good rows of a chunk: ``X`` (numeric features), ``y``, ``codes`` (text features)
    and each row's file line."""

    X: np.ndarray
    y: np.ndarray | None
    codes: np.ndarray | None
    lines: np.ndarray

    def __len__(self) -> int:
        return self.lines.shape[0]

    def split(self, n: int) -> tuple[_Rows, _Rows]:
        """The first ``n`` rows and the rest (views)."""

        def cut(array):
            return (None, None) if array is None else (array[:n], array[n:])

        parts = [cut(self.X), cut(self.y), cut(self.codes), cut(self.lines)]
        return _Rows(*(p[0] for p in parts)), _Rows(*(p[1] for p in parts))

    @staticmethod
    def join(parts: list[_Rows]) -> _Rows:
        """One record of ``parts`` (C-contiguous arrays; no copy for a single part that is)."""

        def joined(arrays):
            if arrays[0] is None:
                return None
            if len(arrays) == 1:
                return np.ascontiguousarray(arrays[0])
            return np.concatenate(arrays)

        return _Rows(
            joined([p.X for p in parts]),
            joined([p.y for p in parts]),
            joined([p.codes for p in parts]),
            joined([p.lines for p in parts]),
        )


class _ChunkParser:
    """Turns one chunk of lines into good rows (:class:`_Rows`) and skipped counts."""

    def __init__(self, schema: CsvSchema, dtype, on_bad_rows: str, missing: str, table):
        import polars as pl

        self.pl = pl
        self.schema = schema
        self.dtype = np.dtype(dtype)
        self.on_bad_rows = on_bad_rows
        self.missing = missing
        self.table = table
        self.float_type = pl.Float32 if self.dtype == np.float32 else pl.Float64
        selected = set(schema.feature_names) | ({schema.target} if schema.target else set())
        self.text = {name for name in selected if schema.column_type(name) == "text"}
        # polars names the columns itself; ours may be anything, so use positional names
        self.keys = [f"c{i}" for i in range(len(schema.columns))]
        numeric = selected - self.text
        self.polars_schema = {
            key: self.float_type if name in numeric else pl.String
            for key, name in zip(self.keys, schema.columns, strict=True)
        }
        positions = schema.column_positions
        self.projection = sorted(positions[name] for name in selected)
        self.numeric_keys = [self.keys[positions[name]] for name in sorted(numeric)]
        # A row with too few fields lacks the last one, which polars reads as null: a null
        # there is checked (field counts, else the diagnosis). When the last column is not
        # selected, it is read too (as text) just for this check.
        last = len(schema.columns) - 1
        self.last_key = self.keys[last]
        if schema.columns[last] not in selected:
            self.projection.append(last)
        self.feature_keys = [self.keys[positions[name]] for name in schema.numeric_features]
        self.text_keys = [self.keys[positions[name]] for name in schema.text_features]
        self.target_key = None if schema.target is None else self.keys[schema.target_index]
        # the cells the diagnosis checks, target first: (name, field number)
        checked = [schema.target] if schema.target else []
        self.checked = [(name, positions[name]) for name in [*checked, *schema.feature_names]]
        self.n_fields = len(schema.columns)
        self.selected = selected
        self.delimiter = schema.delimiter
        # How polars is asked, fastest first; a chunk it rejects is asked the next way,
        # and the next chunk starts with the way that worked (files with missing-value
        # tokens have them throughout). Measured here (an 8 MB chunk, 10 numeric and 5
        # text columns): strict UTF-8 223 MB/s, lossy 175 MB/s (bad bytes in a column
        # that is not read must not fail the chunk; in a read one the diagnosis names
        # them), lossy with the tokens as null_values 90-100 MB/s (a token in a numeric
        # column is a kept missing cell, a skipped target, or a row the diagnosis names).
        self.attempts: list[dict] = [{"encoding": "utf8"}, {"encoding": "utf8-lossy"}]
        if self.numeric_keys:
            self.attempts.append({"encoding": "utf8-lossy", "null_values": _null_values()})
        self.first_attempt = 0

    # ------------------------------------------------------------------ the fast path

    def _read(self, data: bytes, schema: dict, encoding: str = "utf8-lossy", null_values=None):
        pl = self.pl
        try:
            return pl.read_csv(
                data,
                has_header=False,
                separator=self.delimiter,
                schema=schema,
                columns=self.projection,
                raise_if_empty=False,
                null_values=null_values,
                encoding=encoding,
            )
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError):
            return None

    def _read_padded(self, data: bytes):
        """The chunk read with its selected cells as text, the numeric ones stripped and
        cast to floats (a missing-value token as null): polars' float parser rejects
        numbers padded with spaces or tabs (``1, 2, 3``). Only a chunk that polars
        rejected pays for this second, still vectorised, read."""
        pl = self.pl
        text_schema = dict.fromkeys(self.keys, pl.String)
        frame = self._read(data, text_schema)
        if frame is None:
            return None
        tokens = sorted(MISSING_TOKENS)

        def number(key: str):
            stripped = pl.col(key).str.strip_chars()
            token = stripped.str.to_lowercase().is_in(tokens)
            value = pl.when(token).then(None).otherwise(stripped)
            return value.cast(self.float_type, strict=True).alias(key)

        try:
            return frame.with_columns([number(key) for key in self.numeric_keys])
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
            return None

    def _frame(self, data: bytes):
        """The chunk as a polars frame, or None when polars rejects it."""
        for attempt in range(self.first_attempt, len(self.attempts)):
            frame = self._read(data, self.polars_schema, **self.attempts[attempt])
            if frame is not None:
                self.first_attempt = attempt
                return frame
        return self._read_padded(data)

    def parse(self, first_line: int, data: bytes, n_lines: int):
        """``(rows, skipped, skipped_lines)`` of one chunk."""
        # polars reads a bare \r next to a value as blank space (or a line end): such a
        # chunk goes to the diagnosis, which treats every bare \r in a read column alike
        frame = None if _has_bare_carriage_return(data) else self._frame(data)
        if frame is not None and frame.height == n_lines and self._complete(frame, data):
            lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
            extracted = self._extract(frame, lines, utf8_checked=False)
            if extracted is not None:
                rows, dropped = extracted
                reasons = Counter({"missing_target": len(dropped)} if len(dropped) else {})
                return rows, reasons, dropped[:SKIPPED_LINES_KEPT].tolist()
        return self._diagnose(first_line, data, n_lines)

    def _complete(self, frame, data: bytes) -> bool:
        """No short row: the last column has no null, or every line has all its fields."""
        if not frame.get_column(self.last_key).null_count():
            return True
        return _every_line_complete(data, self.delimiter, self.n_fields)

    def _extract(self, frame, lines: np.ndarray, utf8_checked: bool = True):
        """``(rows, lines dropped for a missing target)`` from a parsed frame, or None
        when a cell needs the diagnosis (a bad value, a missing one not kept, or, unless
        ``utf8_checked``, a new level holding U+FFFD: polars' lossy decoding of a byte
        that is not UTF-8). The level table changes only when the rows are taken."""
        commits = []
        dropped = lines[:0]
        y = None
        if self.target_key is not None:
            y, absent, commit = self._target(frame)
            if commit is not None and not utf8_checked and _lossy(commit[1]):
                return None
            if absent is not None:
                dropped, lines = lines[absent], lines[~absent]
                frame = frame.filter(self.pl.Series(~absent))
                y = y[~absent]
            if commit is not None:
                commits.append((*commit, y))
            elif not _all_finite(y):
                return None
        X = self._numeric(frame)
        if X is None:
            return None
        codes = None
        if self.text_keys:
            codes = np.empty((frame.height, len(self.text_keys)), dtype=np.int32)
            for j, (key, column) in enumerate(
                zip(self.text_keys, self.table.feature_columns(), strict=True)
            ):
                codes[:, j], new = code_series(
                    column, frame.get_column(key), self.table.grow, self.schema.path
                )
                if self.missing == "error" and (codes[:, j] == MISSING_CODE).any():
                    return None
                if not utf8_checked and _lossy(new):
                    return None
                commits.append((column, new, codes[:, j]))
        for column, new, values in commits:
            column.commit(new, values, count=self.table.grow)
        if y is not None and y.dtype != self.dtype:
            y = y.astype(self.dtype)
        return _Rows(X, y, codes, lines), dropped

    def _target(self, frame):
        """``(y, rows whose target is missing (None: none), commit)``; ``commit`` is
        ``(column, new levels)`` for a text target (``y`` then holds its codes)."""
        series = frame.get_column(self.target_key)
        if self.schema.target not in self.text:
            y = np.ascontiguousarray(series.to_numpy(), dtype=self.dtype)
            absent = np.isnan(y)  # an empty cell, a token, "nan": its row is skipped
            return y, (absent if absent.any() else None), None
        column = self.table.target_column()
        codes, new = code_series(column, series, self.table.grow, self.schema.path)
        absent = codes == MISSING_CODE
        # the codes stay int32 until the commit (which counts them); y is cast afterwards
        return codes, (absent if absent.any() else None), (column, new)

    def _numeric(self, frame):
        """The numeric features as a C-contiguous array, or None when a cell is bad:
        not finite, or (missing="error") missing."""
        if not self.feature_keys:
            return np.empty((frame.height, 0), dtype=self.dtype)
        # [] not select: no expressions. polars' own order="c" took 1.6x as long (measured
        # here, 65,536 rows x 20 columns with nulls) as its column order and numpy's copy.
        X = np.ascontiguousarray(frame[self.feature_keys].to_numpy(), dtype=self.dtype)
        # a sum is one cheap pass; only when it is not finite look cell by cell (a finite
        # sum can overflow, the precise check then clears it)
        if _all_finite(X):
            return X
        if self.missing == "keep" and not np.isinf(X).any():
            return X  # NaN: a missing cell, kept
        return None

    # ------------------------------------------------------------------ the slow path

    def _diagnose(self, first_line: int, data: bytes, n_lines: int):
        """The slow path: look at each line, raise or skip the bad ones, parse the rest."""
        raw_lines = data.split(b"\n")
        if data.endswith(b"\n"):
            raw_lines.pop()
        good: list[bytes] = []
        good_lines: list[int] = []
        skipped: Counter = Counter()
        skipped_lines: list[int] = []

        def bad(reason: str, error: CsvError | None, line: int) -> None:
            # a missing target skips its row in either mode
            if self.on_bad_rows == "error" and reason != "missing_target":
                raise error
            skipped[reason] += 1
            if len(skipped_lines) < SKIPPED_LINES_KEPT:
                skipped_lines.append(line)

        for offset, raw in enumerate(raw_lines):
            line = first_line + offset
            raw = raw[:-1] if raw.endswith(b"\r") else raw  # the \r of a CRLF end only
            if not raw.strip():
                continue  # blank lines carry no row
            problem = self._check_line(raw, line, raw_lines, offset)
            if problem is None:
                good.append(raw)
                good_lines.append(line)
            else:
                bad(*problem, line)
        rows = self._parse_good(good, np.asarray(good_lines, dtype=np.int64), bad)
        skipped_lines.sort()  # lines polars alone rejected come after the rest
        return rows, skipped, skipped_lines

    def _empty(self) -> _Rows:
        k = len(self.text_keys)
        return _Rows(
            X=np.empty((0, len(self.feature_keys)), dtype=self.dtype),
            y=None if self.target_key is None else np.empty(0, dtype=self.dtype),
            codes=np.empty((0, k), dtype=np.int32) if k else None,
            lines=np.empty(0, dtype=np.int64),
        )

    def _parse_good(self, good: list[bytes], good_lines: np.ndarray, bad) -> _Rows:
        """The lines the diagnosis found good, parsed by polars."""
        if not good:
            return self._empty()
        frame = self._frame(b"\n".join(good) + b"\n")
        if frame is not None and frame.height == len(good):
            extracted = self._extract(frame, good_lines)
            if extracted is not None and not len(extracted[1]):
                return extracted[0]
        return self._parse_one_by_one(good, good_lines, bad)

    def _parse_one_by_one(self, good: list[bytes], good_lines: np.ndarray, bad) -> _Rows:
        """Where polars and the csv module disagree on some line (rare: odd quoting), find
        it by parsing each line alone, and raise or skip it."""
        parts: list[_Rows] = []
        for raw, line in zip(good, good_lines.tolist(), strict=True):
            frame = self._frame(raw + b"\n")
            if frame is not None and frame.height == 1:
                extracted = self._extract(frame, np.array([line], dtype=np.int64))
                if extracted is not None and not len(extracted[1]):
                    parts.append(extracted[0])
                    continue
            error = CsvError(
                "polars cannot read this row although the csv module reads each of its "
                "selected cells; check its quoting (a quoted field must not hold a line "
                "break) or use on_bad_rows='skip'.",
                path=self.schema.path,
                line=line,
            )
            bad("malformed", error, line)
        return _Rows.join(parts) if parts else self._empty()

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
        if "\r" in text:
            problem = self._carriage_return(text, line)
            if problem is not None:
                return problem
            text = text.replace("\r", " ")  # only in a column that is not read
        try:
            cells = _split(text, self.delimiter)
        except _stdcsv.Error as exc:
            return "malformed", CsvError(
                f"the line cannot be split into fields ({exc}); check its quoting, or use "
                "on_bad_rows='skip'.",
                path=path,
                line=line,
            )
        if len(cells) != self.n_fields:
            return "ragged", self._ragged_error(len(cells), line, text)
        for name, index in self.checked:
            problem = self._check_cell(cells[index].strip(), name, line, raw_lines, offset)
            if problem is not None:
                return problem
        return None

    def _carriage_return(self, text: str, line: int):
        """A bare carriage return inside a line: the csv module cannot split the line and
        polars may read it as a line end. None when it sits only in columns not read."""
        columns = self.schema.columns
        position = -1
        while (position := text.find("\r", position + 1)) >= 0:
            index = text.count(self.delimiter, 0, position)
            name = columns[index] if index < len(columns) else None
            if name is None or name in self.selected:
                return "malformed", CsvError(
                    "the row holds a bare carriage return (\\r) inside the line; lines must "
                    "end in \\n or \\r\\n (a file whose lines end in \\r alone converts with "
                    "tr '\\r' '\\n' < in.csv > out.csv); fix the row or use "
                    "on_bad_rows='skip'.",
                    path=self.schema.path,
                    line=line,
                    column=name,
                )
        return None

    def _ragged_error(self, n_cells: int, line: int, text: str) -> CsvError:
        schema = self.schema
        column = schema.columns[n_cells] if n_cells < self.n_fields else None
        what = "fewer" if n_cells < self.n_fields else "more"
        first = "header" if schema.has_header else "first row"
        fields = "field" if n_cells == 1 else "fields"
        # an odd count of quotes: one is unclosed and swallows the delimiters after it
        quote = '; an unclosed quote (") joins the fields after it' if text.count('"') % 2 else ""
        return CsvError(
            f"the row has {n_cells} {fields} but the {first} has {self.n_fields} "
            f"({what} than expected{quote}); fix the row or use on_bad_rows='skip'.",
            path=schema.path,
            line=line,
            column=column,
        )

    def _check_cell(self, cell: str, name: str, line: int, raw_lines, offset):
        """None for a good (stripped) cell, else (reason, CsvError or None)."""
        path = self.schema.path
        if cell.lower() in MISSING_TOKENS:
            if name == self.schema.target:
                return "missing_target", None  # its row is skipped in either mode
            if self.missing == "keep":
                return None
            return "missing", CsvError(
                f"missing value ({cell!r}); fill it in, drop the column, or use "
                "on_bad_rows='skip'.",
                path=path,
                line=line,
                column=name,
            )
        if name in self.text:
            return None
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
        index = self.schema.column_positions[name]
        texts = total = 0
        for raw in raw_lines[offset : offset + CATEGORICAL_PROBE_LINES]:
            try:
                cells = _split(raw.rstrip(b"\r").decode("utf-8"), self.delimiter)
            except (UnicodeDecodeError, StopIteration, _stdcsv.Error):
                continue
            if len(cells) == self.n_fields:
                total += 1
                value = cells[index].strip()
                texts += value.lower() not in MISSING_TOKENS and not _is_number(value)
        # Options in fastgd's Python spelling; the CLI rewrites them as its flags.
        as_text = f"read it as text (categorical=[{name!r}])"
        if name == self.schema.target:
            message = (
                f"{cell!r} in the target column is not a number; fix the cell, or skip such "
                "rows with on_bad_rows='skip'."
            )
        elif total >= 2 and texts * 2 > total:
            message = (
                f"column {name!r} holds text ({cell!r} at line {line}) where its first lines "
                f"held numbers; {as_text}, drop it (drop=[{name!r}]) or encode it as numbers."
            )
        else:
            message = (
                f"{cell!r} is not a number; fix the cell or use on_bad_rows='skip' (if the "
                f"column holds text, {as_text})."
            )
        return CsvError(message, path=self.schema.path, line=line, column=name)


def _all_finite(array: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):
            return True
    return bool(np.isfinite(array).all())


# --------------------------------------------------------------------------- blocks


def _blocks(
    schema: CsvSchema, block_rows: int, dtype, on_bad_rows: str, missing: str, table
) -> Iterator[CsvBlock]:
    parser = _ChunkParser(schema, dtype, on_bad_rows, missing, table)
    chunk_bytes = int(min(max(block_rows * schema.line_bytes, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES))
    pending: list[_Rows] = []
    pending_rows = 0
    skipped: Counter = Counter()
    skipped_lines: list[int] = []
    total_rows = total_skipped = 0

    def emit(rows: int) -> CsvBlock:
        nonlocal pending_rows, skipped, skipped_lines
        parts, taken = [], 0
        while taken < rows:
            head, rest = pending[0].split(rows - taken)
            parts.append(head)
            taken += len(head)
            if len(rest):
                pending[0] = rest
            else:
                pending.pop(0)
        block = _Rows.join(parts)
        pending_rows -= rows
        out = CsvBlock(
            X=block.X,
            y=block.y,
            first_line=int(block.lines[0]),
            rows=rows,
            skipped=dict(skipped),
            skipped_lines=skipped_lines,
            line_numbers=block.lines,
            codes=block.codes,
            levels=table,
        )
        skipped, skipped_lines = Counter(), []
        return out

    for first_line, data, n_lines in _chunks(schema, chunk_bytes):
        rows, bad, bad_lines = parser.parse(first_line, data, n_lines)
        del data
        skipped.update(bad)
        total_skipped += sum(bad.values())
        skipped_lines.extend(bad_lines[: SKIPPED_LINES_KEPT - len(skipped_lines)])
        if len(rows):
            pending.append(rows)
            pending_rows += len(rows)
            total_rows += len(rows)
        while pending_rows >= block_rows:
            yield emit(block_rows)
    if pending_rows:
        yield emit(pending_rows)
    if total_rows == 0:
        _no_rows(schema, skipped, skipped_lines, total_skipped)
    if skipped:  # rows skipped after the last block: report them on an empty block
        empty = parser._empty()
        yield CsvBlock(
            X=empty.X,
            y=empty.y,
            first_line=int(skipped_lines[0]) if skipped_lines else 0,
            rows=0,
            skipped=dict(skipped),
            skipped_lines=skipped_lines,
            line_numbers=empty.lines,
            codes=empty.codes,
            levels=table,
        )


def _no_rows(schema: CsvSchema, skipped, skipped_lines, total_skipped: int):
    """The CsvError for a file that gave no good row."""
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
    block_rows: int = 65536,
    dtype=np.float64,
    on_bad_rows: str = "error",
    missing: str = "error",
    levels: LevelTable | None = None,
    prefetch: bool = True,
    **selection,
) -> Iterator[CsvBlock]:
    """Stream a CSV as blocks of ``block_rows`` rows, in file order.

    Memory is bounded by the block size (a chunk of the file's bytes of about
    ``block_rows`` lines, its parsed arrays, and at most two blocks), not by the file.
    With ``prefetch``, the next block is parsed on a background thread while the caller
    works on this one.

    Parameters
    ----------
    path_or_schema : str, path-like or CsvSchema
        The file, or a schema from :func:`read_schema` (then leave the selection
        keywords out).
    block_rows : int
        Rows per block; the last block may be shorter.
    dtype : float64 or float32
        Of ``X`` and ``y`` (parsed straight into it).
    on_bad_rows : "error" or "skip"
        ``"error"``: a bad row (missing or non-numeric cell, wrong field count, not
        UTF-8, infinite value, a bare carriage return or broken quoting: "malformed")
        raises :class:`CsvError` naming the file, line and column.
        ``"skip"``: it is left out and counted in the next block's ``skipped`` (per
        reason) and ``skipped_lines``; rows skipped after the last row come on a final
        block with zero rows. A row whose target cell is missing is always skipped
        (reason ``"missing_target"``), never an error.
    missing : "error" or "keep"
        ``"error"``: a missing feature cell makes a bad row (``on_bad_rows`` decides).
        ``"keep"``: it is NaN in ``X`` (numeric) or ``MISSING_CODE`` in ``codes`` (text).
    levels : LevelTable, optional
        Codes the text columns (a growing table learns new levels, a frozen one gives
        unseen ones ``UNSEEN_CODE``); filled by the reading thread. Default: a new one,
        ``CsvBlock.levels``, when the schema has a text feature or a text target.
    **selection
        ``target``, ``features``, ``drop``, ``delimiter``, ``header``, ``categorical``:
        the keywords of :func:`read_schema` (one list of them, kept there).

    Raises
    ------
    CsvError
        At the call for a missing column, an unreadable layout or a path that is not a
        regular file; while iterating for a bad row, a file without data rows, or a
        compressed stream that is truncated or corrupt (always an error, in either mode:
        never a quiet early end; raised in the caller also when prefetching).
    """
    if isinstance(path_or_schema, CsvSchema):
        if selection:
            raise ValueError(
                "iter_csv got a CsvSchema and selection arguments "
                f"({', '.join(sorted(selection))}); put the selection in read_schema(...) "
                "instead."
            )
        schema = path_or_schema
        _require_regular_file(schema.path)  # it may have been replaced since
    else:
        schema = read_schema(path_or_schema, **selection)
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)):
        raise TypeError(f"block_rows must be an integer; got {block_rows!r}.")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1; got {block_rows!r}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip'; got {on_bad_rows!r}.")
    if missing not in ("error", "keep"):
        raise ValueError(f"missing must be 'error' or 'keep'; got {missing!r}.")
    table = _level_table(schema, levels)
    blocks = _blocks(schema, int(block_rows), dtype, on_bad_rows, missing, table)
    return _prefetched(blocks) if prefetch else blocks


def _level_table(schema: CsvSchema, levels: LevelTable | None) -> LevelTable | None:
    """The table for the schema's text columns: ``levels`` checked, or a new one."""
    text_target = schema.target if schema.target_is_text else None
    if levels is None:
        return LevelTable.for_schema(schema) if schema.text_features or text_target else None
    if not isinstance(levels, LevelTable):
        raise TypeError(f"levels must be a LevelTable; got {type(levels).__name__}.")
    if not levels.matches(schema.text_features, text_target):
        raise ValueError(
            f"the level table is for text columns {levels.columns!r} (target "
            f"{levels.target!r}); the schema's are {schema.text_features!r} (target "
            f"{text_target!r})."
        )
    return levels
