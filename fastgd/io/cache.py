"""A binary, memory-mapped cache of a CSV's selected columns, for epochs after the first.

Layout, in ``DATA.csv.fastgd-cache/`` next to the CSV (or in ``cache_dir``), one set of
files per selection (columns, target, delimiter, header, dtype)::

    <stem>-<key>.json            the header: format version, source path and fingerprint,
                                 schema, dtype, n_rows, n_features, the generation, the
                                 checksums, rows skipped while writing
    <stem>-<key>.<gen>.X.bin     X, row-major (n_rows × numeric features), raw little-endian
                                 floats, NaN for a missing cell (the reader's ``missing="keep"``)
    <stem>-<key>.<gen>.codes.bin the text features' level codes, row-major (n_rows × text
                                 features), int32 (-1: missing), when there is a text feature
    <stem>-<key>.<gen>.y.bin     y (n_rows), when there is a target
    <stem>-<key>.<gen>.lines.bin the file line of each row (int64), for messages

The header also holds the first pass's level table (``fastgd.io.levels.LevelTable``, its
``to_dict`` record and a digest of it): a cached run needs no pass over the CSV to know the
levels its codes stand for. The encoding (scaling, one-hot, hashing) is not cached: it is
applied to each block as it is read, so one cache serves every encoding option.

``<gen>`` (the *generation*: writer's host, pid and a random token) is unique per write.
A writer writes a new generation beside the old one, holding an exclusive ``flock`` on its
X file, and commits by renaming the header into place (written last, to a temporary name):
a cache without a header, or whose data files are not exactly the size it states, is not a
cache. Old generations, and the files of a writer that died (its lock is gone), are removed
by the next writer or valid open of any selection in the folder. A first pass that fails
or is aborted removes its files, and the cache folder when it is left empty and fastgd
owns it (the default ``DATA.csv.fastgd-cache``, or a ``cache_dir`` this writer created).
A reader keeps the data files it maps open and maps every block from those descriptors, so
a rebuild that removes (unlinks) its generation cannot break it: it reads its own,
consistent files to the end.

Trust: the cache is used only while the CSV has the recorded fingerprint (size, mtime,
ctime, inode, and a hash of 16 sampled 4 KiB pages: the first, the last and 14 evenly
spaced) and the header is well formed; otherwise :meth:`BlockCache.open` (``notify=True``)
warns with a :class:`CacheNotice` naming the cache and the reason, and the caller rebuilds
it. The ctime (inode change time) cannot be put back by ``touch -r``, ``os.utime``, ``cp -p``
or ``rsync -t``, so a same-size edit whose mtime was restored is seen even when it misses
every sampled page; a ``chmod``, ``chown`` or rename also changes it, which costs a rebuild.
Every chunk of ``check_rows`` rows of each data file carries a checksum
(:mod:`fastgd._kernels.checksum`), verified the first time a :class:`BlockCache` object
reads the chunk (the one ``commit`` returns counts as checked: its process computed the
sums from the bytes it wrote); a mismatch raises :class:`CacheChecksumError` naming the
cache, the file and the rows, before the block is returned. ``fastgd.fit_csv`` reads every
block of a reused cache once in its first pass, before the first step, so it meets a
damaged cache there, never in the middle of training: it discards the cache, warns, and
rebuilds from the CSV (see :func:`fastgd.stream._first_pass`). A cache file changed in
place after that pass (our writers never do; they write new files) is not seen.

Where: next to the CSV by default. When that directory cannot be written, the writer raises
:class:`CacheError` saying so and suggesting ``cache_dir`` (no silent fallback to a home
directory, which might not have room for a copy of a 20 GB file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .._kernels.checksum import mixed_sum
from .csv import SKIPPED_LINES_KEPT, CsvBlock, CsvSchema

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks (unlinking open files fails)
    fcntl = None

__all__ = [
    "FORMAT_VERSION",
    "BlockCache",
    "CacheChecksumError",
    "CacheError",
    "CacheNotice",
    "CacheWriter",
]

FORMAT_VERSION = 3
CACHE_SUFFIX = ".fastgd-cache"
#: Rows per checksummed chunk (the default block size of fit_csv, so blocks and chunks
#: usually coincide and a chunk is checked on the block's own mapping).
CHECK_ROWS = 65536
#: The sampled pages of the CSV's fingerprint: this many, of this size.
SAMPLED_PAGES = 16
PAGE_BYTES = 4096
#: The data files: name suffix -> header key.
DATA_FILES = {".X.bin": "X", ".codes.bin": "codes", ".y.bin": "y", ".lines.bin": "lines"}
_GENERATION = re.compile(r"[A-Za-z0-9_-]+\Z")
_MASK = (1 << 64) - 1
#: Whether new :class:`BlockCache` objects check their checksums (only
#: ``benchmarks/test_stream.py`` turns it off, to time a cached epoch without them).
VERIFY_CHECKSUMS = True


class CacheError(OSError):
    """The cache could not be written or read (the message says where and what to do)."""


class CacheChecksumError(CacheError):
    """A chunk of the cache does not match its checksum: the cache was changed or damaged
    after it was written (``reason`` says which rows of which file); ``fastgd.fit_csv``
    rebuilds it."""

    reason = ""


class CacheNotice(UserWarning):
    """The cache was not used and is rebuilt (the message names the cache and the reason)."""


def _dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    return dtype


def _selection(schema: CsvSchema, dtype: np.dtype) -> dict:
    return {
        "delimiter": schema.delimiter,
        "has_header": schema.has_header,
        "columns": list(schema.columns),
        "feature_names": list(schema.feature_names),
        # a column's type decides which file its values go to (and so the cache's key)
        "column_types": dict(schema.column_types),
        "text_features": list(schema.text_features),
        "target": schema.target,
        "compression": schema.compression,
        "dtype": dtype.name,
    }


def _location(schema: CsvSchema, dtype: np.dtype, cache_dir) -> Path:
    """The path prefix (without suffixes) of this selection's cache files."""
    source = Path(schema.path).resolve()
    selection = _selection(schema, dtype)
    text = json.dumps([str(source), selection], sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = (
        Path(cache_dir) if cache_dir is not None else source.with_name(source.name + CACHE_SUFFIX)
    )
    return folder / f"{source.name}-{key}"


# -- the CSV's fingerprint ---------------------------------------------------------------------


def file_fingerprint(path) -> dict:
    """Size, mtime, ctime, inode and a hash of sampled pages: what must match to reuse a
    cache. The ctime (the inode's change time) is set by the kernel on every write and
    cannot be put back (``touch -r``, ``os.utime``, ``cp -p`` and ``rsync -t`` restore the
    mtime only), so it sees a same-size edit that misses every sampled page; a ``chmod``,
    ``chown`` or rename changes it too, which costs one rebuild."""
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        size = status.st_size
        if size <= SAMPLED_PAGES * PAGE_BYTES:
            offsets = [0]
            lengths = [size]
        else:
            last = size - PAGE_BYTES
            offsets = sorted({round(i * last / (SAMPLED_PAGES - 1)) for i in range(SAMPLED_PAGES)})
            lengths = [PAGE_BYTES] * len(offsets)
        digest = hashlib.blake2b(digest_size=16)
        for offset, length in zip(offsets, lengths, strict=True):
            digest.update(os.pread(handle.fileno(), length, offset))
    return {
        "size": size,
        "mtime_ns": status.st_mtime_ns,
        "ctime_ns": status.st_ctime_ns,
        "inode": status.st_ino,
        "sampled_pages": digest.hexdigest(),
    }


def fingerprint_change(recorded: dict, current: dict) -> str | None:
    """Why the CSV no longer matches the cache's fingerprint (None: it matches)."""
    if recorded["size"] != current["size"]:
        return (
            f"the CSV changed since it was written (size {recorded['size']} -> "
            f"{current['size']} bytes)"
        )
    if recorded["inode"] != current["inode"]:
        return "the CSV was replaced since it was written (another file: inode differs)"
    if recorded["sampled_pages"] != current["sampled_pages"]:
        return "the CSV changed since it was written (content of sampled pages differs)"
    if recorded["mtime_ns"] != current["mtime_ns"]:
        return "the CSV changed since it was written (modification time differs)"
    if recorded["ctime_ns"] != current["ctime_ns"]:
        return (
            "the CSV or its status changed since it was written (change time differs: it "
            "was written to, or its permissions, owner or name changed)"
        )
    return None


# -- the header ----------------------------------------------------------------------------------

#: Top-level header fields and their JSON types.
_HEADER_FIELDS = {
    "format_version": int,
    "source": str,
    "fingerprint": dict,
    "schema": dict,
    "n_rows": int,
    "n_features": int,
    "generation": str,
    "check_rows": int,
    "checksums": dict,
    "skipped": dict,
    "skipped_lines": list,
    "levels_digest": str,
}
_FINGERPRINT_FIELDS = {
    "size": int,
    "mtime_ns": int,
    "ctime_ns": int,
    "inode": int,
    "sampled_pages": str,
}


def _type_problem(where: str, value, expected: type) -> str | None:
    # bool is an int to Python, never to the header
    if value is None or not isinstance(value, expected) or isinstance(value, bool):
        return (
            f"its header field {where!r} is missing or has the wrong type "
            f"({type(value).__name__}; expected {expected.__name__})"
        )
    return None


def _all_ints(values, low: int = 0, high: int | None = None) -> bool:
    return all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
        for v in values
    )


def _described(value) -> str:
    """A header value and its JSON type, as a message shows it: ``'2' (a string)``."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}  # fmt: skip
    return f"{json.dumps(value)} ({kinds.get(type(value), type(value).__name__)})"


def _header_problem(header, schema: CsvSchema, dtype: np.dtype) -> str | None:
    """Why this header cannot be used for this CSV and selection (None: it can)."""
    if not isinstance(header, dict):
        return f"its header is not a JSON object (a {type(header).__name__})"
    version = header.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        return f"it was written in format {_described(version)}; expected format {FORMAT_VERSION}"
    for name, expected in _HEADER_FIELDS.items():
        problem = _type_problem(name, header.get(name), expected)
        if problem:
            return problem
    for name, expected in _FINGERPRINT_FIELDS.items():
        problem = _type_problem(f"fingerprint.{name}", header["fingerprint"].get(name), expected)
        if problem:
            return problem
    if header["source"] != str(Path(schema.path).resolve()):
        return f"it belongs to another file ({header['source']})"
    if header["schema"] != _selection(schema, dtype):
        return "its field 'schema' differs from this column selection, delimiter or dtype"
    if not _GENERATION.match(header["generation"]):
        return f"its header field 'generation' is malformed ({header['generation']!r})"
    n_rows, n_features = header["n_rows"], header["n_features"]
    if n_rows < 1 or n_features != len(schema.numeric_features):
        return f"its header fields 'n_rows'/'n_features' are wrong ({n_rows}, {n_features})"
    if header["check_rows"] < 1:
        return f"its header field 'check_rows' is wrong ({header['check_rows']})"
    if not _all_ints(header["skipped"].values()) or not _all_ints(header["skipped_lines"]):
        return "its header field 'skipped' or 'skipped_lines' holds something else than counts"
    if header["levels_digest"] != _levels_digest(header.get("levels")):
        return "its level table does not match its digest"
    chunks = -(-n_rows // header["check_rows"])
    for key in _data_keys(schema):
        sums = header["checksums"].get(key)
        if not isinstance(sums, list) or len(sums) != chunks or not _all_ints(sums, 0, _MASK):
            return f"its header field 'checksums.{key}' is missing or malformed"
    return None


def _data_keys(schema: CsvSchema) -> list[str]:
    keys = ["X"]
    if schema.text_features:
        keys.append("codes")
    if schema.target is not None:
        keys.append("y")
    return [*keys, "lines"]


def _levels_digest(record) -> str:
    """A digest of the level table's record (the header's JSON is not checksummed
    otherwise: a changed level would silently re-label the codes)."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _level_table(record):
    """The LevelTable of a header's record (None: no table); ValueError if malformed."""
    if record is None:
        return None
    from .levels import LevelTable

    try:
        return LevelTable.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"its level table is malformed ({exc})") from None


def _data_path(prefix: Path, generation: str, key: str) -> str:
    return f"{prefix}.{generation}.{key}.bin"


# -- locks and the removal of old files ----------------------------------------------------------


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Exclusive lock on the cache folder: a writer creates (and locks) its files, and a
    cleaner chooses what to remove, one at a time (so a cleaner never takes a file a writer
    has just created and not yet locked)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_locked(path: str) -> bool:
    """Whether a live process holds a lock on this file (a writer writing it)."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # gone, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def generation_of(prefix: Path, name: str) -> str | None:
    """The generation a file of this selection belongs to ("" for files of format 1; None:
    the header, or not a file of this selection)."""
    head = prefix.name + "."
    if not name.startswith(head):
        return None
    rest = name[len(head) :]
    if rest.startswith("json.tmp-"):
        return rest[len("json.tmp-") :]
    for suffix in DATA_FILES:
        if rest.endswith(suffix) and _GENERATION.match(rest[: -len(suffix)]):
            return rest[: -len(suffix)]
        if rest == suffix[1:] or rest.startswith(suffix[1:] + ".tmp-"):
            return ""  # format 1: one set of files without generation
    return None


def _current_generation(prefix: Path) -> str | None:
    try:
        with open(str(prefix) + ".json", encoding="utf-8") as handle:
            generation = json.load(handle).get("generation")
    except (OSError, ValueError, AttributeError):
        return None
    return generation if isinstance(generation, str) else None


#: A cache file's name: its selection's prefix (``<stem>-<16 hex digits>``), then the rest
#: (greedy: a generation holds no ``-<16 hex>.``, so the last match ends the prefix).
CACHE_FILE = re.compile(r"(?P<prefix>.+-[0-9a-f]{16})\.(?P<rest>.+)\Z")


def _remove_old_files(prefix: Path) -> None:
    """Remove the files in this selection's cache folder that no header names and no writer
    holds, for every selection there (a killed first pass of another column selection
    leaves its files too): older generations (a reader of one keeps its open descriptors
    and reads on), the files of a writer that died (its lock went with it), and files of
    format 1. Headers and files that are not a cache's are left alone."""
    folder = prefix.parent
    try:
        with folder_lock(folder):
            groups: dict[tuple[str, str], list[str]] = {}
            current: dict[str, str | None] = {}
            for name in os.listdir(folder):
                match = CACHE_FILE.match(name)
                if match is None:
                    continue
                selection = folder / match["prefix"]
                generation = generation_of(selection, name)
                if generation is None:
                    continue
                if match["prefix"] not in current:
                    current[match["prefix"]] = _current_generation(selection)
                if generation != current[match["prefix"]]:
                    groups.setdefault((match["prefix"], generation), []).append(name)
            for (selection, generation), names in groups.items():
                lock_file = _data_path(folder / selection, generation, "X")
                if generation and os.path.exists(lock_file) and is_locked(lock_file):
                    continue  # a writer is writing it
                for name in names:
                    with contextlib.suppress(OSError):
                        os.unlink(folder / name)
    except OSError:
        pass  # a read-only or vanished folder: nothing to clean


# -- checksums -----------------------------------------------------------------------------------


def _words(array: np.ndarray) -> np.ndarray:
    """The raw bytes of a C-contiguous array as words of its item size (8 or 4 bytes)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(np.uint64 if flat.dtype.itemsize == 8 else np.uint32)


def _checksum(array: np.ndarray, first_word: int = 0) -> int:
    return int(mixed_sum(_words(array), first_word))


class _ChunkSums:
    """Checksums of consecutive chunks of ``check_rows`` rows, from pieces of any size."""

    def __init__(self, check_rows: int, row_words: int):
        self.check_rows = check_rows
        self.row_words = row_words
        self.done: list[int] = []
        self.partial = 0

    def add(self, rows: np.ndarray, row_in_chunk: int) -> None:
        """Rows that start at ``row_in_chunk`` of the current chunk and do not pass its end."""
        total = self.partial + _checksum(rows, row_in_chunk * self.row_words)
        self.partial = total & _MASK
        if row_in_chunk + rows.shape[0] == self.check_rows:
            self.done.append(self.partial)
            self.partial = 0

    def finish(self, n_rows: int) -> list[int]:
        if n_rows % self.check_rows:
            self.done.append(self.partial)
            self.partial = 0
        return self.done


class BlockCache:
    """A complete, valid cache: X (and y) memory-mapped, sliced into blocks without copies.

    Attributes: ``n_rows``, ``n_features`` (numeric features: ``X``'s width), ``n_text``
    (text features: ``codes``' width), ``dtype``, ``feature_names``, ``target``, ``levels``
    (the first pass's LevelTable, or None), ``path`` (the JSON header), ``skipped`` (rows
    skipped per reason when it was written), ``files`` (the data files' paths when it was
    opened, by ``"X"``, ``"codes"``, ``"y"``, ``"lines"``)."""

    def __init__(self, prefix: Path, header: dict, files: dict, levels=None):
        self.path = Path(str(prefix) + ".json")
        self.header = header
        self.n_rows = int(header["n_rows"])
        self.n_features = int(header["n_features"])
        self.dtype = np.dtype(header["schema"]["dtype"])
        self.feature_names = list(header["schema"]["feature_names"])
        self.n_text = len(header["schema"]["text_features"])
        self.levels = levels
        self.target = header["schema"]["target"]
        self.skipped = dict(header["skipped"])
        self.skipped_lines = list(header["skipped_lines"])
        self.generation = header["generation"]
        self.files = {key: handle.name for key, handle in files.items()}
        self._handles = files  # open: every block is mapped from these descriptors
        self._has_y = self.target is not None
        self._check_rows = int(header["check_rows"])
        self._verified = np.zeros(-(-self.n_rows // self._check_rows), dtype=bool)
        #: False skips the checksums (the benchmark that measures their cost sets it).
        self.verify = VERIFY_CHECKSUMS

    def _map(self, key: str, dtype, start: int, stop: int, width: int | None = None):
        """Rows ``start:stop`` of one data file, memory-mapped on their own.

        Each block gets its own small mapping, released when the block is dropped: a
        mapping of the whole file would keep every page read so far in the process's
        resident memory (measured: a 4.4 GB cache made a 4.6 GB peak RSS). Copy-on-write
        (``mode="c"``) gives writable arrays without copying (the kernels only read them;
        Numba compiles read-only arrays separately). Mapped from the descriptor opened with
        the cache, not the path: a rebuild that removes the files cannot break this reader.
        """
        if width == 0:  # no numeric feature (every feature is text): an empty X file
            return np.empty((stop - start, 0), dtype=dtype)
        row = (width or 1) * np.dtype(dtype).itemsize
        shape = (stop - start, width) if width else (stop - start,)
        handle = self._handles[key]
        mapped = np.memmap(handle, dtype, "c", offset=start * row, shape=shape)
        return np.asarray(mapped)

    def _arrays(self, start: int, stop: int) -> dict:
        arrays = {
            "X": self._map("X", self.dtype, start, stop, self.n_features),
            "lines": self._map("lines", np.int64, start, stop),
        }
        if self.n_text:
            arrays["codes"] = self._map("codes", np.int32, start, stop, self.n_text)
        if self._has_y:
            arrays["y"] = self._map("y", self.dtype, start, stop)
        return arrays

    def _verify(self, start: int, stop: int, arrays: dict) -> None:
        """Check every chunk that rows ``start:stop`` touch and no earlier read checked; a
        chunk inside the block is checked on the block's mapping, one that crosses its edge
        on a mapping of its own."""
        size = self._check_rows
        for chunk in range(start // size, (stop - 1) // size + 1):
            if self._verified[chunk]:
                continue
            low, high = chunk * size, min((chunk + 1) * size, self.n_rows)
            if start <= low and high <= stop:
                pieces = {key: array[low - start : high - start] for key, array in arrays.items()}
            else:
                pieces = self._arrays(low, high)
            for key, piece in pieces.items():
                expected = self.header["checksums"][key][chunk]
                if _checksum(piece) != expected:
                    reason = (
                        f"it is damaged: rows {low}-{high - 1} of its {key} file "
                        f"({self.files[key]}) do not match their checksum"
                    )
                    error = CacheChecksumError(
                        f"the cache {self.path}: {reason}. It was changed after it was "
                        "written; remove it (fastgd.fit_csv rebuilds it)."
                    )
                    error.reason = reason
                    raise error
            self._verified[chunk] = True

    def __repr__(self) -> str:
        return (
            f"BlockCache({str(self.path)!r}, n_rows={self.n_rows}, "
            f"n_features={self.n_features}, dtype={self.dtype.name})"
        )

    @classmethod
    def open(
        cls, schema: CsvSchema, *, dtype, cache_dir=None, notify: bool = False
    ) -> BlockCache | None:
        """The valid, complete cache of this CSV and selection, or None.

        With ``notify``, a cache that exists but cannot be used (the CSV changed, a
        malformed header, a missing data file) gives a :class:`CacheNotice` saying it is
        rebuilt and why: for callers that rebuild it (``fastgd.fit_csv``)."""
        dtype = _dtype(dtype)
        prefix = _location(schema, dtype, cache_dir)
        cache, reason = None, None
        for _ in range(3):  # a rebuild may remove the files between the header and them
            cache, reason = cls._try_open(prefix, schema, dtype)
            if cache is not None or reason is None or "data file" not in reason:
                break
        if cache is not None:
            _remove_old_files(prefix)
        elif reason is not None and notify:
            _notice(Path(str(prefix) + ".json"), reason)
        return cache

    @classmethod
    def _try_open(cls, prefix: Path, schema: CsvSchema, dtype: np.dtype):
        """(cache, None), or (None, why not): a reason is None when there is no cache."""
        try:
            with open(str(prefix) + ".json", encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"its header cannot be read ({exc.strerror or exc})"
        try:
            header = json.loads(text)
        except ValueError as exc:
            return None, f"its header is not valid JSON ({exc})"
        problem = _header_problem(header, schema, dtype)
        if problem is None:
            try:
                current = file_fingerprint(schema.path)
            except OSError as exc:
                return None, f"the CSV cannot be read ({exc.strerror or exc})"
            problem = fingerprint_change(header["fingerprint"], current)
        if problem is not None:
            return None, problem
        try:
            levels = _level_table(header.get("levels"))
        except ValueError as exc:
            return None, str(exc)
        return cls._open_files(prefix, header, dtype, levels)

    @classmethod
    def _open_files(cls, prefix: Path, header: dict, dtype: np.dtype, levels):
        n_rows, n_features = header["n_rows"], header["n_features"]
        expected = {"X": n_rows * n_features * dtype.itemsize, "lines": n_rows * 8}
        n_text = len(header["schema"]["text_features"])
        if n_text:
            expected["codes"] = n_rows * n_text * 4
        if header["schema"]["target"] is not None:
            expected["y"] = n_rows * dtype.itemsize
        handles: dict = {}
        try:
            for key, nbytes in expected.items():
                path = _data_path(prefix, header["generation"], key)
                handles[key] = handle = open(path, "rb")
                size = os.fstat(handle.fileno()).st_size
                if size != nbytes:
                    raise ValueError(f"its data file {path} has {size} bytes, not {nbytes}")
        except (OSError, ValueError) as exc:
            for handle in handles.values():
                handle.close()
            if isinstance(exc, OSError):
                return None, f"its data file {exc.filename} cannot be opened ({exc.strerror})"
            return None, str(exc)
        return cls(prefix, header, handles, levels), None

    def close(self) -> None:
        """Close the data files (blocks already returned stay readable: each mapping holds
        its own descriptor)."""
        for handle in self._handles.values():
            handle.close()

    def __del__(self) -> None:
        # a cache dropped without close() closes its files quietly (no ResourceWarning)
        for handle in getattr(self, "_handles", {}).values():
            handle.close()

    def discard(self, reason: str) -> None:
        """Stop this cache being used (its header goes, unless a rebuild already replaced
        it) and warn with a :class:`CacheNotice` that it is rebuilt because of ``reason``."""
        prefix = Path(str(self.path)[: -len(".json")])
        with contextlib.suppress(OSError), folder_lock(self.path.parent):
            if _current_generation(prefix) == self.generation:
                self.path.unlink()
        self.close()
        _notice(self.path, reason)

    @classmethod
    def writer(cls, schema: CsvSchema, *, dtype, cache_dir=None) -> CacheWriter:
        """A :class:`CacheWriter` for this CSV and selection (append the blocks of one full
        pass, then ``commit``)."""
        return CacheWriter(schema, dtype=_dtype(dtype), cache_dir=cache_dir)

    def block_count(self, block_rows: int) -> int:
        """Blocks of ``block_rows`` rows (the last may be shorter)."""
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1; got {block_rows!r}.")
        return -(-self.n_rows // block_rows)

    def blocks(
        self, block_rows: int = 65536, order: Sequence[int] | None = None
    ) -> Iterator[CsvBlock]:
        """Blocks as memory-mapped arrays (no copies; each block mapped on its own), in file
        order or in ``order`` (block indices in ``range(block_count(block_rows))``).

        Raises :class:`CacheChecksumError` (before yielding it) for a block whose rows do not
        match the checksums: each chunk is checked the first time this object reads it."""
        count = self.block_count(block_rows)
        if order is None:
            indices = range(count)
        else:
            indices = np.asarray(order)
            if indices.ndim != 1 or indices.dtype.kind not in "iu":
                raise ValueError("order must be a 1-D array of block indices (integers).")
            if indices.size and (indices.min() < 0 or indices.max() >= count):
                raise ValueError(
                    f"order holds block indices outside [0, {count}) for block_rows={block_rows}."
                )
        for index in indices:
            start = int(index) * block_rows
            stop = min(start + block_rows, self.n_rows)
            arrays = self._arrays(start, stop)
            if self.verify:
                self._verify(start, stop, arrays)
            lines = arrays["lines"]
            yield CsvBlock(
                X=arrays["X"],
                y=arrays.get("y"),
                first_line=int(lines[0]),
                rows=stop - start,
                line_numbers=lines,
                codes=arrays.get("codes"),
                levels=self.levels,
            )


def _notice(path: Path, reason: str) -> None:
    warnings.warn(f"rebuilding the cache {path}: {reason}", CacheNotice, stacklevel=3)


def _new_generation() -> str:
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class CacheWriter:
    """Writes one full pass of blocks; ``commit()`` makes the cache valid, ``abort()`` (or
    leaving a ``with`` block by an exception) removes what was written.

    The writer takes the place of this selection's cache at once (its header goes: an old
    cache stops being used when a new pass starts) but writes a new generation of data
    files beside the old ones, which a reader still reading them keeps open."""

    def __init__(self, schema: CsvSchema, *, dtype: np.dtype, cache_dir=None):
        self.schema = schema
        self.dtype = dtype
        self.prefix = _location(schema, dtype, cache_dir)
        self.generation = _new_generation()
        folder = self.prefix.parent
        self._files: dict = {}
        self.fingerprint = file_fingerprint(schema.path)
        # fastgd's own folder, or one this writer creates: removed when a failed pass
        # leaves it empty (a cache_dir the user made is never removed)
        self._owns_folder = cache_dir is None or not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with folder_lock(folder):
                Path(str(self.prefix) + ".json").unlink(missing_ok=True)
                for key in _data_keys(schema):
                    path = _data_path(self.prefix, self.generation, key)
                    self._files[key] = open(path, "xb")
                    if key == "X" and fcntl is not None:
                        # held until commit or abort: cleaners leave this generation alone
                        fcntl.flock(self._files[key].fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            for handle in self._files.values():
                handle.close()
                Path(handle.name).unlink(missing_ok=True)
            self._remove_folder_if_empty()
            raise CacheError(
                f"cannot write the cache of {schema.path} in {folder} ({exc.strerror or exc}); "
                "pass cache_dir= (--cache-dir) to put it in a writable directory."
            ) from exc
        _remove_old_files(self.prefix)  # what killed writers and older generations left
        self.n_numeric = len(schema.numeric_features)
        self.n_text = len(schema.text_features)
        row_words = {"X": self.n_numeric, "codes": self.n_text, "y": 1, "lines": 1}
        self._sums = {key: _ChunkSums(CHECK_ROWS, row_words[key]) for key in self._files}
        self.n_rows = 0
        self.skipped: dict[str, int] = {}
        self.skipped_lines: list[int] = []
        self._done = False

    def append(self, block: CsvBlock) -> None:
        """Add the next block (blocks in file order, from one full pass)."""
        if self._done:
            raise RuntimeError("this cache writer is already committed or aborted.")
        if block.X.shape[1:] != (self.n_numeric,):
            raise ValueError(
                f"block has {block.X.shape[1:]} numeric features; the schema selects "
                f"{self.n_numeric}."
            )
        codes = block.codes
        if self.n_text and (codes is None or codes.shape[1:] != (self.n_text,)):
            raise ValueError(f"block has no codes for the schema's {self.n_text} text features.")
        for reason, count in block.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        room = SKIPPED_LINES_KEPT - len(self.skipped_lines)
        self.skipped_lines.extend(block.skipped_lines[:room])
        if not block.rows:
            return
        lines = block.line_numbers
        if lines is None:
            lines = np.arange(block.first_line, block.first_line + block.rows, dtype=np.int64)
        arrays = {
            "X": np.ascontiguousarray(block.X, self.dtype),
            "lines": np.ascontiguousarray(lines, np.int64),
        }
        if "codes" in self._files:
            arrays["codes"] = np.ascontiguousarray(codes, np.int32)
        if "y" in self._files:
            arrays["y"] = np.ascontiguousarray(block.y, self.dtype)
        for key, array in arrays.items():
            self._files[key].write(array.data)
        self._add_checksums(arrays, block.rows)
        self.n_rows += block.rows

    def _add_checksums(self, arrays: dict, rows: int) -> None:
        """Split the block at chunk boundaries and add each piece to its chunk's sum."""
        done = 0
        while done < rows:
            row_in_chunk = (self.n_rows + done) % CHECK_ROWS
            take = min(CHECK_ROWS - row_in_chunk, rows - done)
            for key, array in arrays.items():
                self._sums[key].add(array[done : done + take], row_in_chunk)
            done += take

    def commit(self, levels=None) -> BlockCache:
        """Make the cache valid and return it, with ``levels`` (the pass's LevelTable,
        stored in the header). Refused (and aborted) when the CSV changed while it was
        written or no row was appended."""
        if self._done:
            raise RuntimeError("this cache writer is already committed or aborted.")
        try:
            for handle in self._files.values():
                handle.flush()
                os.fsync(handle.fileno())
            if self.n_rows == 0:
                raise ValueError("no rows were appended; a cache holds at least one row.")
            if fingerprint_change(self.fingerprint, file_fingerprint(self.schema.path)):
                raise CacheError(
                    f"{self.schema.path} changed while its cache was written; not cached."
                )
            self._write_header(None if levels is None else levels.to_dict())
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._close()  # releases the lock: the header names this generation now
        _remove_old_files(self.prefix)
        cache = BlockCache.open(self.schema, dtype=self.dtype, cache_dir=self.prefix.parent)
        if cache is None:
            raise CacheError(f"the cache {self.prefix}.json just written cannot be opened.")
        # This process computed the checksums from the very bytes it wrote: reading them
        # back through the page cache would check nothing but the cost.
        cache._verified[:] = True
        return cache

    def _write_header(self, levels) -> None:
        header = {
            "format_version": FORMAT_VERSION,
            "source": str(Path(self.schema.path).resolve()),
            "fingerprint": self.fingerprint,
            "schema": _selection(self.schema, self.dtype),
            "n_rows": self.n_rows,
            "n_features": self.n_numeric,
            "byte_order": "little",
            "files": {
                "X": "row-major",
                "codes": "row-major int32" if self.n_text else None,
                "y": self.schema.target is not None,
                "lines": "int64",
            },
            "levels": levels,
            "levels_digest": _levels_digest(levels),
            "generation": self.generation,
            "check_rows": CHECK_ROWS,
            "checksums": {key: sums.finish(self.n_rows) for key, sums in self._sums.items()},
            "skipped": self.skipped,
            "skipped_lines": self.skipped_lines,
        }
        json_tmp = f"{self.prefix}.json.tmp-{self.generation}"
        with open(json_tmp, "w", encoding="utf-8") as handle:
            json.dump(header, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(json_tmp, str(self.prefix) + ".json")  # the commit point

    def _close(self) -> None:
        for handle in self._files.values():
            handle.close()

    def abort(self) -> None:
        """Remove the partial files; no cache remains for this selection."""
        self._done = True
        self._close()
        for handle in self._files.values():
            Path(handle.name).unlink(missing_ok=True)
        Path(f"{self.prefix}.json.tmp-{self.generation}").unlink(missing_ok=True)
        if _current_generation(self.prefix) == self.generation:
            Path(str(self.prefix) + ".json").unlink(missing_ok=True)
        _remove_old_files(self.prefix)  # what killed writers left here
        self._remove_folder_if_empty()

    def _remove_folder_if_empty(self) -> None:
        """Remove the cache folder when fastgd owns it and nothing is left in it (rmdir
        refuses a folder that another writer has filled meanwhile)."""
        if self._owns_folder:
            with contextlib.suppress(OSError):
                self.prefix.parent.rmdir()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._done:
            self.abort()
