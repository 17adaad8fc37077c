"""The cache stores what the reader gives for text columns: numeric X with NaN, the int32
level codes, and the first pass's level table (checked, never trusted when changed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastgd.io import BlockCache, CacheChecksumError, CacheNotice, read_schema
from fastgd.io.csv import CsvBlock
from fastgd.io.levels import LevelTable


@pytest.fixture
def text_schema(tmp_path):
    path = tmp_path / "mixed.csv"
    lines = ["a,colour,b,y"] + [f"{i},c{i % 3},{i / 2},{i % 2}" for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    schema = read_schema(path, target="y", features=["a", "colour", "b"])
    assert schema.numeric_features == ["a", "b"] and schema.text_features == ["colour"]
    return schema


def _blocks(rows=40, size=15):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 2))
    X[::7, 1] = np.nan
    codes = (np.arange(rows) % 3).astype(np.int32)[:, None]
    codes[::5] = -1
    y = (np.arange(rows) % 2).astype(np.float64)
    blocks = []
    for start in range(0, rows, size):
        stop = min(start + size, rows)
        lines = np.arange(start + 2, stop + 2, dtype=np.int64)
        block = CsvBlock(X=X[start:stop], y=y[start:stop], first_line=start + 2,
                         rows=stop - start, line_numbers=lines,
                         codes=codes[start:stop])  # fmt: skip
        blocks.append(block)
    return X, codes, blocks


def _write(schema, levels=None):
    X, codes, blocks = _blocks()
    with BlockCache.writer(schema, dtype=np.float64) as writer:
        for block in blocks:
            writer.append(block)
        return X, codes, writer.commit(levels=levels)


def test_numeric_nan_and_codes_round_trip(text_schema):
    X, codes, _ = _write(text_schema)
    cache = BlockCache.open(text_schema, dtype=np.float64)
    assert (cache.n_features, cache.n_text, cache.levels) == (2, 1, None)
    blocks = list(cache.blocks(block_rows=16))
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), X)  # NaN kept
    got = np.concatenate([b.codes for b in blocks])
    assert got.dtype == np.int32 and np.array_equal(got, codes)


def test_damaged_codes_are_caught_by_their_checksum(text_schema):
    _write(text_schema)
    cache = BlockCache.open(text_schema, dtype=np.float64)
    with open(cache.files["codes"], "r+b") as handle:
        handle.seek(4 * 3)
        handle.write(b"\x07")
    reopened = BlockCache.open(text_schema, dtype=np.float64)
    with pytest.raises(CacheChecksumError, match="codes file"):
        list(reopened.blocks(block_rows=16))


def test_other_column_types_are_keyed_apart(text_schema):
    _write(text_schema)
    numeric = read_schema(text_schema.path, target="y", features=["a", "b"])
    assert BlockCache.open(numeric, dtype=np.float64) is None
    forced = read_schema(text_schema.path, target="y", features=["a", "colour", "b"],
                         categorical=["a"])  # fmt: skip
    assert forced.text_features == ["a", "colour"]
    assert BlockCache.open(forced, dtype=np.float64) is None


def test_a_changed_level_record_is_not_trusted(text_schema):
    _, _, cache = _write(text_schema)
    header = json.loads(cache.path.read_text())
    header["levels"] = {"columns": ["colour"], "levels": [["x", "y", "z"]]}
    cache.path.write_text(json.dumps(header))
    with pytest.warns(CacheNotice, match="level table does not match its digest"):
        assert BlockCache.open(text_schema, dtype=np.float64, notify=True) is None


def test_the_level_table_is_stored_with_the_cache(text_schema):
    table = LevelTable(["colour"], "y")
    column = table.feature_columns()[0]
    column.commit(["c0", "c1", "c2"], np.array([0, 1, 2, 2, -1], dtype=np.int32), count=True)
    _write(text_schema, levels=table)
    cache = BlockCache.open(text_schema, dtype=np.float64)
    assert cache.levels.to_dict() == table.to_dict()
    assert cache.levels.levels == [["c0", "c1", "c2"]] and cache.levels.missing == [1]
