"""fastgd.io.cache: created on a full pass, equal to the CSV, reused, invalidated, atomic;
and the streaming reader's memory stays bounded by the block, not the file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastgd.io import BlockCache, CacheError, iter_csv, read_schema
from fastgd.io import csv as fcsv


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
    assert list(folder.iterdir()) == []
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
    data_file = str(cache.path)[: -len(".json")] + ".X.bin"
    del cache
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
