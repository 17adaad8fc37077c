"""fastgd.io.cache: created on a full pass, equal to the CSV, reused, invalidated, atomic;
and the streaming reader's memory stays bounded by the block, not the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastgd.io import (
    BlockCache,
    CacheChecksumError,
    CacheError,
    CacheNotice,
    iter_csv,
    read_schema,
)
from fastgd.io import cache as cache_module
from fastgd.io import csv as fcsv
from fastgd.io.cache import _checksum


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((103, 4)).round(5)
    path = tmp_path / "train.csv"
    rows = "\n".join(",".join(repr(float(v)) for v in row) for row in data)
    path.write_text("a,b,c,y\n" + rows + "\n")
    return path, data


def build(schema, dtype=np.float64, cache_dir=None, block_rows=10):
    with BlockCache.writer(schema, dtype=dtype, cache_dir=cache_dir) as writer:
        for block in iter_csv(schema, block_rows=block_rows, dtype=dtype):
            writer.append(block)
        return writer.commit()


def test_created_equal_and_memory_mapped(csv_file):
    path, data = csv_file
    schema = read_schema(path, target="y")
    assert BlockCache.open(schema, dtype=np.float64) is None
    cache = build(schema)
    assert cache.path.parent == path.with_name("train.csv.fastgd-cache")
    assert (cache.n_rows, cache.n_features, cache.dtype) == (103, 3, np.float64)
    assert cache.feature_names == ["a", "b", "c"]
    blocks = list(cache.blocks(block_rows=25))
    assert [b.rows for b in blocks] == [25, 25, 25, 25, 3] and cache.block_count(25) == 5
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), data[:, :3])
    np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), data[:, 3])
    assert [b.first_line for b in blocks] == [2, 27, 52, 77, 102]
    for b in blocks:
        # Mapped, not copied; copy-on-write, so writable (one Numba compilation, not a
        # read-only variant) while a write never reaches the file.
        assert b.X.flags.c_contiguous and not b.X.flags.owndata and b.X.flags.writeable
        assert isinstance(b.X.base, np.memmap)
    blocks[0].X[0, 0] = 1e9
    again = next(cache.blocks(block_rows=25))
    assert again.X[0, 0] == data[0, 0]


def test_reused_without_parsing(csv_file, monkeypatch):
    path, data = csv_file
    schema = read_schema(path, target="y")
    build(schema)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(fcsv._ChunkParser, "parse", no_parsing)
    cache = BlockCache.open(read_schema(path, target="y"), dtype=np.float64)
    assert cache is not None
    X = np.concatenate([b.X for b in cache.blocks(block_rows=7)])
    np.testing.assert_array_equal(X, data[:, :3])


def test_blocks_in_a_given_order(csv_file):
    path, data = csv_file
    cache = build(read_schema(path, target="y"))
    order = np.array([4, 0, 2, 1, 3])
    blocks = list(cache.blocks(block_rows=25, order=order))
    for index, block in zip(order, blocks, strict=True):
        np.testing.assert_array_equal(block.X, data[index * 25 : (index + 1) * 25, :3])
        np.testing.assert_array_equal(block.y, data[index * 25 : (index + 1) * 25, 3])
    with pytest.raises(ValueError, match="outside"):
        list(cache.blocks(block_rows=25, order=[5]))


def test_float32_and_no_target(csv_file):
    path, data = csv_file
    schema = read_schema(path)  # every column a feature
    cache = build(schema, dtype=np.float32)
    assert cache.dtype == np.float32 and cache.n_features == 4
    blocks = list(cache.blocks(block_rows=50))
    assert blocks[0].y is None
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), data.astype(np.float32))


def test_invalidated_when_the_csv_or_selection_changes(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    build(schema)
    assert BlockCache.open(schema, dtype=np.float64) is not None
    # another selection, dtype or delimiter: another cache
    assert BlockCache.open(read_schema(path, target="c"), dtype=np.float64) is None
    assert BlockCache.open(read_schema(path, target="y", drop=["a"]), dtype=np.float64) is None
    assert BlockCache.open(schema, dtype=np.float32) is None
    # touched (mtime only)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert BlockCache.open(schema, dtype=np.float64) is None
    # rebuilt, then the size changes with the mtime put back
    build(schema)
    assert BlockCache.open(schema, dtype=np.float64) is not None
    stat = os.stat(path)
    with open(path, "a") as handle:
        handle.write("1,2,3,4\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert BlockCache.open(schema, dtype=np.float64) is None


def test_aborted_or_interrupted_write_leaves_no_cache(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    with pytest.raises(RuntimeError, match="stopped"):
        with BlockCache.writer(schema, dtype=np.float64) as writer:
            for count, block in enumerate(iter_csv(schema, block_rows=10)):
                writer.append(block)
                if count == 3:
                    raise RuntimeError("stopped")
    assert BlockCache.open(schema, dtype=np.float64) is None
    folder = path.with_name("train.csv.fastgd-cache")
    assert not folder.exists()  # fastgd's own folder, left empty: removed
    # a writer dropped without commit (a crash) leaves only temporary files
    writer = BlockCache.writer(schema, dtype=np.float64)
    for block in iter_csv(schema, block_rows=10):
        writer.append(block)
    assert BlockCache.open(schema, dtype=np.float64) is None
    writer.abort()
    # an existing cache becomes invalid as soon as a new pass starts writing
    build(schema)
    writer = BlockCache.writer(schema, dtype=np.float64)
    assert BlockCache.open(schema, dtype=np.float64) is None
    writer.abort()


def test_truncated_data_file_is_not_a_cache(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    cache = build(schema)
    data_file = cache.files["X"]
    cache.close()
    with open(data_file, "r+b") as handle:
        handle.truncate(80)
    assert BlockCache.open(schema, dtype=np.float64) is None


def test_changed_during_the_pass_is_not_committed(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    writer = BlockCache.writer(schema, dtype=np.float64)
    for block in iter_csv(schema):
        writer.append(block)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    with pytest.raises(CacheError, match="changed while"):
        writer.commit()
    assert BlockCache.open(schema, dtype=np.float64) is None


def test_cache_dir_and_unwritable_folder(csv_file, tmp_path):
    path, _data = csv_file
    schema = read_schema(path, target="y")
    elsewhere = tmp_path / "caches"
    cache = build(schema, cache_dir=elsewhere)
    assert cache.path.parent == elsewhere
    assert BlockCache.open(schema, dtype=np.float64) is None  # not next to the CSV
    assert BlockCache.open(schema, dtype=np.float64, cache_dir=elsewhere) is not None
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with pytest.raises(CacheError, match="cache_dir"):
        BlockCache.writer(schema, dtype=np.float64, cache_dir=blocker / "sub")


def test_skipped_rows_are_recorded(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,y\n1,2\nNA,3\n4,5\n")
    schema = read_schema(path, target="y")
    with BlockCache.writer(schema, dtype=np.float64) as writer:
        for block in iter_csv(schema, on_bad_rows="skip"):
            writer.append(block)
        cache = writer.commit()
    assert cache.n_rows == 2 and cache.skipped == {"missing": 1} and cache.skipped_lines == [3]
    (block,) = cache.blocks()
    np.testing.assert_array_equal(block.line_numbers, [2, 4])


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys, tracemalloc
    import numpy as np
    from fastgd.io import iter_csv
    list(iter_csv(sys.argv[1], block_rows=10, prefetch=False))  # warm up polars' threads
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    rows = 0
    checksum = 0.0
    for block in iter_csv(sys.argv[1], target="y", block_rows=10_000):
        rows += block.rows
        checksum += float(block.X[:, 0].sum())
    traced = tracemalloc.get_traced_memory()[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(rows, traced, peak - base)
    """
)


def test_memory_is_bounded_by_the_block_not_the_file(tmp_path):
    path = tmp_path / "big.csv"
    rng = np.random.default_rng(2)
    n_cols = 10
    with open(path, "w") as handle:
        handle.write(",".join([*(f"x{i}" for i in range(n_cols - 1)), "y"]) + "\n")
        written = 0
        while path.stat().st_size < 50_000_000 if written else True:
            block = rng.standard_normal((50_000, n_cols))
            np.savetxt(handle, block, delimiter=",", fmt="%.8f")
            handle.flush()
            written += block.shape[0]
    size = path.stat().st_size
    assert size >= 50_000_000
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows, traced, rss_growth = (int(v) for v in result.stdout.split())
    assert rows == written
    # python/numpy allocations: a chunk of bytes (~1 MB) and a few blocks of 10,000 × 9
    assert traced < 20_000_000, traced
    # everything, polars' own buffers included
    assert rss_growth < 20_000_000, rss_growth


def test_compressed_source_with_prefetched_first_pass(csv_file):
    import gzip

    path, data = csv_file
    packed = path.with_name("train.csv.gz")
    packed.write_bytes(gzip.compress(path.read_bytes()))
    schema = read_schema(packed, target="y")
    cache = build(schema, block_rows=16)
    assert cache.path.parent == packed.with_name("train.csv.gz.fastgd-cache")
    reopened = BlockCache.open(read_schema(packed, target="y"), dtype=np.float64)
    assert reopened is not None and reopened.n_rows == 103
    order = [6, 0, 3]
    X = np.concatenate([b.X for b in reopened.blocks(16, order=order)])
    expected = np.concatenate([data[i * 16 : (i + 1) * 16, :3] for i in order])
    np.testing.assert_array_equal(X, expected)


# -- trust: checksums, the CSV's fingerprint, the header, old files, concurrent readers --------


def test_checksum_detects_bit_flips_and_negation_and_is_additive():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(1000)
    original = _checksum(values)
    for position in rng.choice(values.size * 64, size=200, replace=False):
        flipped = values.copy()
        flipped.view(np.uint64)[position // 64] ^= np.uint64(1) << np.uint64(position % 64)
        assert _checksum(flipped) != original
    # negating an even number of values (plain and position-weighted sums miss it)
    assert _checksum(-values) != original
    labels = np.tile([1.0, -1.0], 500)
    assert _checksum(-labels) != _checksum(labels)
    assert _checksum(labels[::-1].copy()) != _checksum(labels)  # order matters
    single = values.astype(np.float32)
    assert _checksum(-single) != _checksum(single)
    # additive: a chunk's sum from pieces of any size (how the writer computes it)
    pieces = (_checksum(values[:333]) + _checksum(values[333:], 333)) % 2**64
    assert pieces == original


def test_damaged_chunk_raises_naming_cache_and_rows(csv_file, monkeypatch):
    path, data = csv_file
    monkeypatch.setattr(cache_module, "CHECK_ROWS", 16)
    schema = read_schema(path, target="y")
    cache = build(schema)
    with open(cache.files["X"], "r+b") as handle:  # one bit of row 70 (chunk 4: rows 64-79)
        handle.seek(70 * 3 * 8 + 3)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x10]))
    reopened = BlockCache.open(schema, dtype=np.float64)
    blocks = reopened.blocks(block_rows=25)
    for index in range(2):  # rows 0-49: intact, verified on their own mapping or a chunk's
        np.testing.assert_array_equal(next(blocks).X, data[index * 25 : (index + 1) * 25, :3])
    with pytest.raises(CacheChecksumError, match=r"rows 64-79 of its X file") as caught:
        next(blocks)
    assert str(reopened.path) in str(caught.value)
    reopened.close()
    cache.close()  # the frame lives on in the exception's traceback (a cycle)


def test_same_size_edit_with_mtime_put_back_is_seen(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    build(schema)
    stat = os.stat(path)
    text = path.read_text()
    edited = text.replace("0.", "1.", 1)  # same size, other content
    assert len(edited) == len(text) and edited != text
    path.write_text(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    with pytest.warns(CacheNotice, match=r"rebuilding the cache .*sampled pages differs"):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None


def test_fingerprint_samples_pages_of_a_large_file(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,y\n" + b"1,2\n" * 100_000)
    first = cache_module.file_fingerprint(path)
    with open(path, "r+b") as handle:  # the last page is always sampled
        handle.seek(-4, os.SEEK_END)
        handle.write(b"3,4\n")
    second = cache_module.file_fingerprint(path)
    assert first["size"] == second["size"] and first["sampled_pages"] != second["sampled_pages"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("skipped", None),
        ("skipped_lines", "3"),
        ("n_rows", "103"),
        ("checksums", {"X": [1]}),
        ("fingerprint", {"size": "1"}),
        ("generation", "../../etc"),
    ],
)
def test_malformed_header_field_is_named_and_rebuilt(csv_file, field, value):
    path, data = csv_file
    schema = read_schema(path, target="y")
    cache = build(schema)
    header = json.loads(cache.path.read_text())
    header[field] = value
    cache.path.write_text(json.dumps(header))
    with pytest.warns(CacheNotice, match=rf"rebuilding the cache {cache.path}: .*'{field}"):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None
    rebuilt = build(schema)
    np.testing.assert_array_equal(np.concatenate([b.y for b in rebuilt.blocks(50)]), data[:, 3])


def test_invalid_json_header_is_rebuilt(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    cache = build(schema)
    cache.path.write_text('{"format_version": 2, ')
    with pytest.warns(CacheNotice, match="not valid JSON"):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None


def test_files_of_killed_writers_are_removed_and_live_writers_kept(csv_file):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    live = BlockCache.writer(schema, dtype=np.float64)  # a first pass still running
    for block in iter_csv(schema, block_rows=10):
        live.append(block)
    folder = path.with_name("train.csv.fastgd-cache")
    prefix = live.prefix.name
    # what a killed first pass leaves (no process holds their lock), and format-1 files
    dead = [f"{prefix}.otherhost-4242-dead.{key}.bin" for key in ("X", "y", "lines")]
    dead += [f"{prefix}.json.tmp-otherhost-4242-dead", f"{prefix}.X.bin.tmp-4242"]
    for name in dead:
        (folder / name).write_bytes(b"partial")
    live_files = sorted(os.listdir(folder))
    live_files = [name for name in live_files if name not in dead]
    cache = build(schema)
    left = set(os.listdir(folder))
    assert not left & set(dead)
    assert set(live_files) <= left  # the running writer's generation is kept
    assert set(cache.files.values()) <= {str(folder / name) for name in left}
    live.abort()
    assert set(os.listdir(folder)) == {
        cache.path.name,
        *(Path(p).name for p in cache.files.values()),
    }


def test_a_reader_survives_a_rebuild_and_old_files_go(csv_file, monkeypatch):
    path, data = csv_file
    monkeypatch.setattr(cache_module, "CHECK_ROWS", 16)  # chunks checked after the rebuild
    schema = read_schema(path, target="y")
    build(schema)
    reader = BlockCache.open(schema, dtype=np.float64)
    old_files = set(reader.files.values())
    blocks = reader.blocks(block_rows=10)
    seen = [next(blocks) for _ in range(2)]
    # another process rewrites the CSV and rebuilds the cache
    changed = data.copy()
    changed[:, 3] *= -1
    rows = "\n".join(",".join(repr(float(v)) for v in row) for row in changed)
    path.write_text("a,b,c,y\n" + rows + "\n")
    schema = read_schema(path, target="y")
    with pytest.warns(CacheNotice, match="changed since"):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None
    rebuilt = build(schema)
    assert not any(os.path.exists(name) for name in old_files)  # removed at once
    seen += list(blocks)  # the first reader reads its own, consistent files to the end
    np.testing.assert_array_equal(np.concatenate([b.y for b in seen]), data[:, 3])
    np.testing.assert_array_equal(np.concatenate([b.X for b in seen]), data[:, :3])
    fresh = np.concatenate([b.y for b in rebuilt.blocks(50)])
    np.testing.assert_array_equal(fresh, changed[:, 3])
    reader.close()
    folder = path.with_name("train.csv.fastgd-cache")
    assert set(os.listdir(folder)) == {
        rebuilt.path.name,
        *(Path(p).name for p in rebuilt.files.values()),
    }


# -- issue 10, review: unsampled edits, other selections' leftovers, empty folders, wording ----


def test_same_size_edit_on_an_unsampled_page_with_mtime_put_back_is_seen(tmp_path):
    """The sampled pages miss most of a large file; the ctime (which no tool can put back)
    sees the edit."""
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,y\n" + b"1,2\n" * 50_000)  # 200 KB: 49 pages, 16 sampled
    schema = read_schema(path, target="y")
    build(schema, block_rows=20_000)
    size = os.path.getsize(path)
    last = size - cache_module.PAGE_BYTES
    sampled = {round(i * last / 15) for i in range(cache_module.SAMPLED_PAGES)}
    offset = next(
        byte  # a row's first byte ("1") that no sampled page holds
        for byte in range(4, size, 4)
        if all(not start <= byte < start + cache_module.PAGE_BYTES for start in sampled)
    )
    before = cache_module.file_fingerprint(path)
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        assert os.pread(handle.fileno(), 1, offset) == b"1"
        os.pwrite(handle.fileno(), b"7", offset)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r, cp -p, rsync -t
    after = cache_module.file_fingerprint(path)
    assert (after["size"], after["mtime_ns"], after["sampled_pages"]) == (
        before["size"], before["mtime_ns"], before["sampled_pages"],
    )  # fmt: skip
    with pytest.warns(CacheNotice, match=r"rebuilding the cache .*change time differs"):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None
    rebuilt = build(schema, block_rows=20_000)
    assert 7.0 in np.concatenate([block.X[:, 0] for block in rebuilt.blocks(20_000)])


def _dead_writer_files(folder: Path, prefix: str) -> list[str]:
    """What a first pass killed by SIGKILL leaves: a generation without header or lock."""
    folder.mkdir(exist_ok=True)
    names = [f"{prefix}.otherhost-4242-dead.{key}.bin" for key in ("X", "y", "lines")]
    names.append(f"{prefix}.json.tmp-otherhost-4242-dead")
    for name in names:
        (folder / name).write_bytes(b"partial")
    return names


def test_a_writer_or_open_of_another_selection_removes_dead_writers_files(csv_file):
    path, _ = csv_file
    folder = path.with_name("train.csv.fastgd-cache")
    killed = read_schema(path, target="y", drop=["a"])  # the selection the killed run read
    killed_prefix = cache_module._location(killed, np.dtype(np.float64), None).name
    dead = _dead_writer_files(folder, killed_prefix)
    schema = read_schema(path, target="y")
    cache = build(schema)  # a writer of another selection
    kept = {cache.path.name, *(Path(p).name for p in cache.files.values())}
    assert set(os.listdir(folder)) == kept
    cache.close()
    dead = _dead_writer_files(folder, killed_prefix)
    (folder / "notes.txt").write_text("not a cache file")  # never touched
    assert BlockCache.open(schema, dtype=np.float64) is not None  # a valid open
    assert set(os.listdir(folder)) == kept | {"notes.txt"}
    assert not set(dead) & set(os.listdir(folder))


def test_a_failed_first_pass_removes_the_folder_it_leaves_empty(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a,y\n1,2\n3,4\n")
    schema = read_schema(path, target="y")
    folder = path.with_name("train.csv.fastgd-cache")
    writer = BlockCache.writer(schema, dtype=np.float64)
    assert folder.is_dir()
    writer.abort()
    assert not folder.exists()
    # fastgd's default folder left by a killed run: cleaned, and removed once empty
    dead = _dead_writer_files(folder, cache_module._location(schema, np.dtype("f8"), None).name)
    assert dead
    BlockCache.writer(schema, dtype=np.float64).abort()
    assert not folder.exists()
    # a cache_dir the user made stays, empty; one the writer created goes
    mine = tmp_path / "mine"
    mine.mkdir()
    BlockCache.writer(schema, dtype=np.float64, cache_dir=mine).abort()
    assert mine.is_dir() and not list(mine.iterdir())
    created = tmp_path / "created"
    BlockCache.writer(schema, dtype=np.float64, cache_dir=created).abort()
    assert not created.exists()


@pytest.mark.parametrize(
    ("version", "shown"),
    [("3", r"format \"3\" \(a string\); expected format 3"), (3.0, r"3\.0 \(a number\)"),
     (None, r"null"), (1, r"format 1 \(a number\); expected format 3"),
     (2, r"format 2 \(a number\); expected format 3")],  # 2: before the text columns
)  # fmt: skip
def test_a_header_of_another_format_says_what_it_holds(csv_file, version, shown):
    path, _ = csv_file
    schema = read_schema(path, target="y")
    cache = build(schema)
    header = json.loads(cache.path.read_text())
    header["format_version"] = version
    cache.path.write_text(json.dumps(header))
    with pytest.warns(CacheNotice, match=shown):
        assert BlockCache.open(schema, dtype=np.float64, notify=True) is None
