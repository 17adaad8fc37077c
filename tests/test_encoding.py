"""fastgd.io.encoding.Encoding on synthetic blocks, against a plain pandas/numpy one-hot."""

from __future__ import annotations

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fastgd.io.encoding import Encoding, EncodingError
from fastgd.io.levels import MISSING_CODE, UNSEEN_CODE


def _table(columns: dict[str, list[str]], cells: dict[str, np.ndarray]):
    """A level table as the reader's: levels in first-seen order, counts, missing counts;
    and the codes of the cells (None: missing)."""
    table = SimpleNamespace(columns=list(columns), levels=[], counts=[], missing=[])
    codes = []
    for values in cells.values():
        levels = list(dict.fromkeys(v for v in values if v is not None))
        position = {level: i for i, level in enumerate(levels)}
        column = np.array([MISSING_CODE if v is None else position[v] for v in values], np.int32)
        table.levels.append(levels)
        table.counts.append(np.bincount(column[column >= 0], minlength=len(levels)))
        table.missing.append(int((column == MISSING_CODE).sum()))
        codes.append(column)
    return table, np.stack(codes, axis=1)


def _data(rng, n=500):
    X = rng.normal(size=(n, 2)) * [1.0, 100.0] + [5.0, -3.0]
    X[rng.random(n) < 0.1, 1] = np.nan
    colour = rng.choice(["red", "green", "blue", "violet"], size=n, p=[0.5, 0.3, 0.15, 0.05])
    colour = [None if rng.random() < 0.05 else str(c) for c in colour]
    size = [str(s) for s in rng.choice(["S", "M", "L"], size=n)]
    table, codes = _table(
        {"colour": [], "size": []}, {"colour": np.array(colour, object), "size": np.array(size)}
    )
    return X, codes, table, colour, size


def _learn(X, table, **options):
    mean = np.nanmean(X, axis=0)
    std = np.nanstd(X, axis=0)
    missing = np.isnan(X).sum(axis=0)
    return Encoding.learn(
        ["a", "b"], mean, std, missing, table=table, text=["colour", "size"], **options
    ).bind(table)


def test_one_hot_matches_pandas():
    rng = np.random.default_rng(0)
    X, codes, table, colour, size = _data(rng)
    encoding = _learn(X, table, max_categories=3)
    got = encoding.encode(X, codes)
    assert got.has_canonical_format and got.shape == (500, encoding.n_features)
    assert np.array_equal(got.indptr, np.arange(0, 500 * 5 + 1, 5))  # 2 + 1 indicator + 2
    # the straightforward way: impute, scale, indicator, one-hot of the top-2 + other
    mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    scaled = (np.where(np.isnan(X), mean, X) - mean) / std
    frame = pd.DataFrame(scaled, columns=["a", "b"])
    frame["b=missing"] = np.isnan(X[:, 1]).astype(float)
    top = ["red", "green"]
    shown = pd.Series(["<missing>" if c is None else c if c in top else "<other>" for c in colour])
    for level in [*top, "<other>", "<missing>"]:
        frame[f"colour={level}"] = (shown == level).astype(float)
    counts = pd.Series(size).value_counts()  # ties: first seen first, as the encoding
    first_seen = {level: i for i, level in reversed(list(enumerate(size)))}
    size_top = sorted(counts.index, key=lambda lvl: (-counts[lvl], first_seen[lvl]))[:2]
    for level in size_top:
        frame[f"size={level}"] = (pd.Series(size) == level).astype(float)
    frame["size=<other>"] = (~pd.Series(size).isin(size_top)).astype(float)
    assert encoding.feature_names == list(frame.columns)
    np.testing.assert_allclose(got.toarray(), frame.to_numpy(), rtol=0, atol=1e-12)


def test_dense_without_text_and_raw_values_fold_the_scaler():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)) * 10 + 4
    X[3, 0] = np.nan
    encoding = Encoding.learn(
        ["x", "y", "z"], np.nanmean(X, 0), np.nanstd(X, 0), np.isnan(X).sum(0)
    )
    scaled = encoding.encode(X)
    raw = encoding.encode(X, scaled=False)
    assert isinstance(scaled, np.ndarray) and scaled.shape == (50, 4)
    assert scaled[3, 0] == 0.0 and scaled[3, 3] == 1.0 and raw[3, 0] == encoding.mean[0]
    # weights in the standardised space equal the folded weights on the raw features
    w = rng.normal(size=4)
    scaler = encoding.scaler()
    folded = w / scaler["scale"]
    intercept = 0.5 - folded @ scaler["mean"]
    np.testing.assert_allclose(scaled @ w + 0.5, raw @ folded + intercept, rtol=1e-12)


def test_unseen_and_missing_levels_at_predict_time():
    rng = np.random.default_rng(2)
    X, _, table, _, _ = _data(rng)
    encoding = _learn(X, table, max_categories=10)
    names = encoding.feature_names
    rows = np.array([[UNSEEN_CODE, MISSING_CODE]], dtype=np.int32)  # size never had missing
    got = encoding.encode(np.zeros((1, 2)), rows).toarray()[0]
    assert got[names.index("colour=<other>")] == 1.0
    assert got[names.index("size=<other>")] == 1.0
    assert "size=<missing>" not in names and got[5:].sum() == 2.0


def test_hashing_is_stable_and_per_column():
    rng = np.random.default_rng(3)
    X, codes, table, colour, _ = _data(rng)
    encoding = _learn(X, table, hash_bits=4)
    assert encoding.n_features == 3 + 2 * 16 and encoding.feature_names[3] == "colour#0"
    got = encoding.encode(X, codes)
    columns = got.indices.reshape(500, 5)[:, 3]
    keys = ["\x00<missing>" if c is None else c for c in colour]
    expected = [3 + (zlib.crc32(f"colour\x00{key}".encode()) & 15) for key in keys]
    assert columns.tolist() == expected
    assert got.has_canonical_format


def test_record_round_trips_and_malformed_records_are_refused():
    rng = np.random.default_rng(4)
    X, codes, table, _, _ = _data(rng)
    encoding = _learn(X, table, max_categories=3)
    record = json.loads(json.dumps(encoding.to_dict()))
    again = Encoding.from_dict(record).bind(table)
    assert again == encoding
    assert (again.encode(X, codes) != encoding.encode(X, codes)).nnz == 0
    for key, value in [("scale", [1.0, 0.0]), ("mean", [1.0]), ("levels", [["a", "a"], []]),
                       ("hash_bits", "8"), ("version", 99), ("indicators", ["nope"]),
                       ("numeric", "a")]:  # fmt: skip
        with pytest.raises(EncodingError, match=r"encoding|scale|mean|level|indicator"):
            Encoding.from_dict({**record, key: value})
    with pytest.raises(EncodingError):
        Encoding.from_dict([1, 2])


def test_codes_outside_the_table_are_refused():
    rng = np.random.default_rng(5)
    X, codes, table, _, _ = _data(rng)
    encoding = _learn(X, table)
    codes[0, 1] = 3  # size has 3 levels: codes 0..2
    with pytest.raises(ValueError, match="'size'"):
        encoding.encode(X, codes)


def test_binding_a_growing_table_maps_its_new_levels_and_the_frozen_table_reads_kept_ones():
    from fastgd.io.levels import LevelTable

    rng = np.random.default_rng(6)
    X, _, table, _, _ = _data(rng)
    hashed = _learn(X, table, hash_bits=6)
    growing = LevelTable(["colour", "size"])
    column = growing.feature_columns()[0]
    column.commit(["red"], np.zeros(0, np.int32), count=False)
    growing.feature_columns()[1].commit(["S"], np.zeros(0, np.int32), count=False)
    hashed.bind(growing)
    column.commit(["mauve"], np.zeros(0, np.int32), count=False)  # a level first seen now
    hashed.bind(growing)
    got = hashed.encode(np.zeros((2, 2)), np.array([[0, 0], [1, 0]], np.int32))
    colour = got.indices.reshape(2, 5)[:, 3] - 3
    assert colour.tolist() == [zlib.crc32(f"colour\x00{c}".encode()) & 63 for c in ("red", "mauve")]
    one_hot = _learn(X, table, max_categories=3)
    frozen = one_hot.level_table()
    assert frozen.is_frozen and frozen.levels == one_hot.levels
    got = one_hot.bind(frozen).encode(np.zeros((1, 2)), np.array([[1, -2]], np.int32)).toarray()
    names = one_hot.feature_names
    assert got[0, names.index(f"colour={one_hot.levels[0][1]}")] == 1.0
    assert got[0, names.index("size=<other>")] == 1.0


def test_bound_gives_a_copy_bound_to_its_table_and_leaves_the_encoding_as_it_was():
    from fastgd.io.levels import LevelTable

    rng = np.random.default_rng(7)
    X, codes, table, _, _ = _data(rng)
    encoding = _learn(X, table, max_categories=3)
    before = encoding.encode(X, codes).toarray()
    # Another table, its levels in another order (a dataframe partition's own levels).
    other = LevelTable(["colour", "size"])
    for column, levels in zip(other.feature_columns(), table.levels, strict=True):
        column.commit(list(reversed(levels)), np.zeros(0, np.int32), count=False)
    flipped = np.where(codes >= 0, [[len(table.levels[0]) - 1, len(table.levels[1]) - 1]] - codes,
                       codes).astype(np.int32)  # fmt: skip
    copy = encoding.bound(other)
    assert copy is not encoding and copy == encoding  # the same record
    np.testing.assert_array_equal(copy.encode(X, flipped).toarray(), before)
    # The original still reads codes of its own table.
    np.testing.assert_array_equal(encoding.encode(X, codes).toarray(), before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encoded_values_are_numpys_for_any_input_layout(dtype):
    """The one-pass kernel gives numpy's ``(x - mean) / scale`` bit for bit (the folded
    weights read the same numbers), for float32, strided and read-only blocks alike."""
    rng = np.random.default_rng(5)
    X, codes, table, _, _ = _data(rng, n=400)
    encoding = _learn(X, table)
    source = X.astype(dtype)
    strided, strided_codes = source[::2], codes[::2]
    strided.setflags(write=False)
    for block, block_codes in [(source, codes), (strided, strided_codes)]:
        got = encoding.encode(block, block_codes)
        missing = np.isnan(block)
        scaled = np.where(missing, 0.0, (block - encoding.mean) / encoding.scale)
        expected = np.concatenate([scaled, missing[:, [1]]], axis=1).astype(dtype)
        dense = got.toarray()[:, :3]
        assert got.dtype == dtype and np.array_equal(dense, expected)
        assert (got.indptr == np.arange(0, 5 * block.shape[0] + 1, 5)).all()
