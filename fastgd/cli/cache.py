"""``fastgd cache``: where the binary cache of a CSV is, how big, and removing it.

``fastgd train`` writes the rows it read to a cache (``DATA.csv.fastgd-cache/`` next to the
CSV, or ``--cache-dir``), one set of files per column selection and dtype; see
:mod:`fastgd.io.cache`. ``clear`` removes only files that format names (a selection's header
``<name>-<key>.json``, its data files ``<name>-<key>.<generation>.X.bin`` ..., a header being
written), never a file a running ``fastgd train`` is writing, and the default folder when
nothing else is left in it. In a shared ``--cache-dir`` it removes the selections whose
header names this CSV."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ._command import Command

HELP = "show or remove the binary cache 'fastgd train' keeps of a CSV"

DESCRIPTION = """\
'fastgd train' reads DATA.csv once into a binary cache (next to it, DATA.csv.fastgd-cache/,
or in --cache-dir) and streams every later epoch, and 'fastgd evaluate', from it.
'info' says where the cache is, what it holds and how big it is; 'clear' removes it (only
the cache's own files; a cache a running 'fastgd train' is writing is left alone). The CSV
itself is never touched, and need not exist any more.

examples:
  fastgd cache info flights.csv
  fastgd cache clear flights.csv
  fastgd cache clear flights.csv --cache-dir /scratch/cache
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["info", "clear"], help="show the cache, or remove it")
    parser.add_argument("data", metavar="DATA.csv", help="the CSV whose cache it is")
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where 'fastgd train --cache-dir' put it"
    )


def format_bytes(count: int) -> str:
    """``812 B``, ``24.1 kB``, ``80.1 MB``, ``1.23 GB`` (powers of 1000, as ``ls --si``)."""
    if count < 1000:
        return f"{count} B"
    for unit in ("kB", "MB", "GB", "TB"):
        count /= 1000
        if count < 999.95 or unit == "TB":
            return f"{count:.3g} {unit}" if count < 100 else f"{count:.0f} {unit}"
    raise AssertionError("unreachable")


@dataclass
class Selection:
    """One column selection's files in the cache folder."""

    prefix: Path
    header: dict | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        total = 0
        for path in self.files:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total


def cache_folder(data, cache_dir=None) -> Path:
    """The folder the cache of ``data`` is in (as :mod:`fastgd.io.cache` places it)."""
    from ..io.cache import CACHE_SUFFIX

    source = Path(data).resolve()
    return (
        Path(cache_dir) if cache_dir is not None else source.with_name(source.name + CACHE_SUFFIX)
    )


def _read_header(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.load(handle)
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def selections(data, cache_dir=None) -> list[Selection]:
    """The cache files of ``data``'s selections, by selection. In the default folder every
    file the format names is the CSV's; in a ``--cache-dir`` only the selections whose
    header names the CSV as its source."""
    from ..io.cache import CACHE_FILE, generation_of

    source = Path(data).resolve()
    folder = cache_folder(data, cache_dir)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: dict[str, Selection] = {}
    for name in names:
        match = CACHE_FILE.match(name)
        if match is None or match["prefix"][: -len("-0123456789abcdef")] != source.name:
            continue
        prefix = folder / match["prefix"]
        if match["rest"] != "json" and generation_of(prefix, name) is None:
            continue  # not a file the cache format names
        selection = found.setdefault(match["prefix"], Selection(prefix))
        selection.files.append(folder / name)
        if match["rest"] == "json":
            selection.header = _read_header(folder / name)
    if cache_dir is None:
        return list(found.values())
    return [
        selection
        for selection in found.values()
        if selection.header is not None and selection.header.get("source") == str(source)
    ]


def selection_size(header_path) -> int:
    """Bytes of the cache whose header is ``header_path`` (fit_csv's ``extras["cache"]``):
    the header and its generation's data files."""
    header_path = Path(header_path)
    prefix = str(header_path)[: -len(".json")]
    header = _read_header(header_path) or {}
    generation = header.get("generation")
    paths = [header_path]
    if isinstance(generation, str):
        paths += Path(prefix).parent.glob(f"{Path(prefix).name}.{generation}.*.bin")
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _in_use(selection: Selection) -> bool:
    """Whether a running writer holds one of the selection's data files (its lock)."""
    from ..io.cache import is_locked

    return any(path.name.endswith(".X.bin") and is_locked(str(path)) for path in selection.files)


def _clear(args, folder, found: list[Selection]) -> int:
    from ..io.cache import folder_lock

    removed = size = 0
    busy: list[Selection] = []
    with folder_lock(folder):  # no writer creates files while we choose
        for selection in found:
            if _in_use(selection):
                busy.append(selection)
                continue
            for path in selection.files:
                with contextlib.suppress(FileNotFoundError):
                    bytes_ = path.stat().st_size
                    path.unlink()
                    removed += 1
                    size += bytes_
    if args.cache_dir is None:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when nothing else is left in it
    text = f"fastgd cache: removed {removed} file{'s' * (removed != 1)} ({format_bytes(size)})"
    text += f" of {len(found) - len(busy)} cached selection(s) of {args.data} from {folder}"
    print(text + ("" if folder.exists() else "; the folder is gone too") + ".")
    if busy:
        print(
            f"fastgd cache: left {len(busy)} selection(s) that a running 'fastgd train' is "
            "writing; run again when it is done.",
            file=sys.stderr,
        )
    return 0


def _describe(selection: Selection, data) -> str:
    header = selection.header
    size = format_bytes(selection.size)
    if header is None:
        return f"  {selection.prefix.name}: no header (left by a run that stopped), {size}"
    schema = header.get("schema") if isinstance(header.get("schema"), dict) else {}
    features = schema.get("feature_names") or []
    target = schema.get("target")
    rows = header.get("n_rows")
    rows = f"{rows:,}" if isinstance(rows, int) else "?"
    text = (
        f"  {selection.prefix.name}.json: {rows} rows x "
        f"{len(features)} feature(s), target {target!r}, {schema.get('dtype', '?')}, {size}"
    )
    return text + f"; {_validity(header, data)}"


def _validity(header: dict, data) -> str:
    from ..io.cache import file_fingerprint, fingerprint_change

    try:
        change = fingerprint_change(header["fingerprint"], file_fingerprint(data))
    except (OSError, KeyError, TypeError):
        return f"stale: {data} cannot be read"
    return "valid" if change is None else f"stale: {change}"


def _info(args, folder, found: list[Selection]) -> int:
    total = sum(selection.size for selection in found)
    print(f"cache of {args.data}: {folder} ({len(found)} selection(s), {format_bytes(total)})")
    for selection in found:
        print(_describe(selection, args.data))
    return 0


def run(args: argparse.Namespace) -> int:
    folder = cache_folder(args.data, args.cache_dir)
    found = selections(args.data, args.cache_dir)
    clear = args.action == "clear"
    if not found:
        if clear:
            print(f"fastgd cache: no cache of {args.data} in {folder}; nothing to remove.")
        else:
            print(f"no cache of {args.data} in {folder}")
        return 0
    return (_clear if clear else _info)(args, folder, found)


COMMAND = Command(HELP, DESCRIPTION, configure, run)


def two_target_values(schema, dtype, header_path) -> tuple[float, float] | None:
    """The two values of the target when the cache at ``header_path`` (one ``fastgd train``
    just wrote or checked) holds exactly two distinct ones, else None (also without a
    cache). Stops at the first block with a third value: a real regression target costs
    one block."""
    from ..io.cache import BlockCache

    if header_path is None or schema.target is None:
        return None
    cache = BlockCache.open(schema, dtype=dtype, cache_dir=Path(header_path).parent)
    if cache is None:
        return None
    cache.verify = False  # its checksums were checked (or computed) by this run's first pass
    found: list[float] = []
    try:
        for block in cache.blocks(1 << 20):
            y = block.y
            for value in found:
                y = y[y != value]
            while y.shape[0] and len(found) < 3:
                found.append(float(y[0]))
                y = y[y != y[0]]  # (a NaN, never in a cache, would stop here as a third)
                if found[-1] != found[-1]:
                    return None
            if len(found) > 2:
                return None
    finally:
        cache.close()
    return (min(found), max(found)) if len(found) == 2 else None
