"""fastgd.io.csv: blocks equal np.loadtxt, bad input named by file/line/column, prefetch."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import threading

import numpy as np
import pytest

from fastgd.io import csv as fcsv
from fastgd.io import iter_csv, read_schema
from fastgd.io.csv import CsvError

DELIMITERS = [",", ";", "\t", "|"]


def write_numeric(path, n_rows=23, n_cols=4, *, delimiter=",", header=True, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n_rows, n_cols)).round(6) * 10.0 ** rng.integers(-3, 4, n_cols)
    names = [f"f{i}" for i in range(n_cols)]
    lines = [delimiter.join(names)] if header else []
    lines += [delimiter.join(repr(float(v)) for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return data, names


def collect(blocks):
    blocks = list(blocks)
    X = np.concatenate([b.X for b in blocks])
    y = None if blocks[0].y is None else np.concatenate([b.y for b in blocks])
    return blocks, X, y


@pytest.mark.parametrize("block_rows", [1, 7, 1000])
@pytest.mark.parametrize("header", [True, False])
def test_blocks_equal_loadtxt(tmp_path, block_rows, header):
    path = tmp_path / "data.csv"
    write_numeric(path, header=header)
    expected = np.loadtxt(path, delimiter=",", skiprows=int(header))
    blocks, X, y = collect(iter_csv(path, block_rows=block_rows))
    assert y is None
    np.testing.assert_array_equal(X, expected)
    assert all(b.rows == block_rows for b in blocks[:-1]) and 1 <= blocks[-1].rows <= block_rows
    for b in blocks:
        assert b.X.flags.c_contiguous and b.X.dtype == np.float64 and b.X.shape[0] == b.rows
    first = 2 if header else 1
    assert [b.first_line for b in blocks] == list(range(first, first + 23, block_rows))


@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_each_delimiter_sniffed_and_given(tmp_path, delimiter):
    path = tmp_path / "data.txt"
    _data, _ = write_numeric(path, delimiter=delimiter)
    for given in (None, delimiter):
        schema = read_schema(path, delimiter=given)
        assert schema.delimiter == delimiter and schema.has_header
        _, X, _ = collect(iter_csv(schema, block_rows=5))
        np.testing.assert_array_equal(X, np.loadtxt(path, delimiter=delimiter, skiprows=1))


def _zstd_compress(raw: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(raw)


COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "zst": _zstd_compress,
}


@pytest.mark.parametrize("suffix", ["gz", "bz2", "zst"])
def test_compressed_files(tmp_path, suffix):
    if suffix == "zst" and importlib.util.find_spec("zstandard") is None:
        pytest.skip("zstd needs the optional 'zstandard' package (pip install 'fastgd[zstd]')")
    plain = tmp_path / "data.csv"
    write_numeric(plain, n_rows=300)
    packed = tmp_path / f"data.csv.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
    schema = read_schema(packed, target="f3")
    assert schema.compression == {"gz": "gzip", "bz2": "bz2", "zst": "zstd"}[suffix]
    _, X, y = collect(iter_csv(schema, block_rows=64))
    expected = np.loadtxt(plain, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(X, expected[:, :3])
    np.testing.assert_array_equal(y, expected[:, 3])


def test_zstd_without_module_names_the_package(tmp_path, monkeypatch):
    path = tmp_path / "data.csv.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 16)
    import builtins

    real_import = builtins.__import__

    def no_zstd(name, *args, **kwargs):
        if name in ("zstandard", "compression"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zstd)
    with pytest.raises(CsvError, match=r"data\.csv\.zst.*pip install .fastgd\[zstd\]."):
        read_schema(path)


def test_column_selection_and_order(tmp_path):
    path = tmp_path / "data.csv"
    data, _names = write_numeric(path, n_cols=5)
    _, X, y = collect(iter_csv(path, target="f2", block_rows=4))
    np.testing.assert_array_equal(X, data[:, [0, 1, 3, 4]])
    np.testing.assert_array_equal(y, data[:, 2])
    _, X, y = collect(iter_csv(path, target="f0", features=["f4", "f1"], block_rows=4))
    np.testing.assert_array_equal(X, data[:, [4, 1]])
    np.testing.assert_array_equal(y, data[:, 0])
    schema = read_schema(path, target="f1", drop="f0,f3")
    assert schema.feature_names == ["f2", "f4"] and schema.target == "f1"
    _, X, y = collect(iter_csv(schema))
    np.testing.assert_array_equal(X, data[:, [2, 4]])


def test_no_header_names_and_float32(tmp_path):
    path = tmp_path / "data.csv"
    _data, _ = write_numeric(path, header=False)
    schema = read_schema(path, target="column_4")
    assert not schema.has_header and schema.columns == [f"column_{i}" for i in range(1, 5)]
    _, X, y = collect(iter_csv(schema, dtype=np.float32, block_rows=10))
    assert X.dtype == np.float32 and y.dtype == np.float32
    expected = np.loadtxt(path, delimiter=",", dtype=np.float32)
    np.testing.assert_array_equal(X, expected[:, :3])
    np.testing.assert_array_equal(y, expected[:, 3])


def test_header_given_explicitly(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2\n3,4\n5,6\n")
    assert not read_schema(path).has_header
    schema = read_schema(path, header=True)
    assert schema.columns == ["1", "2"]
    _, X, _ = collect(iter_csv(schema))
    np.testing.assert_array_equal(X, [[3, 4], [5, 6]])


def test_crlf_bom_quotes_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b'\xef\xbb\xbfa,"b"\r\n1,"2.5"\r\n3,4\r\n\r\n\r\n')
    schema = read_schema(path, target="b")
    assert schema.columns == ["a", "b"]
    _blocks, X, y = collect(iter_csv(schema))
    np.testing.assert_array_equal(X, [[1], [3]])
    np.testing.assert_array_equal(y, [2.5, 4])


# ----------------------------------------------------------------------- bad input


def bad_file(tmp_path, body: str, header="a,b,y"):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + body)
    return path


def expect_error(path, line, column, match, **kwargs):
    with pytest.raises(CsvError, match=match) as info:
        list(iter_csv(path, **kwargs))
    error = info.value
    assert (error.line, error.column) == (line, column)
    text = str(error)
    assert str(path) in text and f"line {line}" in text
    if column is not None:
        assert repr(column) in text
    return error


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "nan"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_missing_values_name_line_and_column(tmp_path, cell, prefetch):
    path = bad_file(tmp_path, f"1,2,3\n4,5,6\n7,{cell},9\n")
    expect_error(path, 4, "b", "missing value", target="y", prefetch=prefetch)


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_missing_target_value_skips_its_row(tmp_path, on_bad_rows):
    """Issue 14: a missing target skips its row in either mode, counted apart."""
    path = bad_file(tmp_path, "1,2,3\n4,5,\n6,7,NA\n8,9,10\n")
    blocks, X, y = collect(iter_csv(path, target="y", on_bad_rows=on_bad_rows))
    np.testing.assert_array_equal(X, [[1, 2], [8, 9]])
    np.testing.assert_array_equal(y, [3, 10])
    assert sum(b.skipped.get("missing_target", 0) for b in blocks) == 2
    assert [line for b in blocks for line in b.skipped_lines] == [3, 4]


def test_non_numeric_cell(tmp_path):
    rows = "".join(f"{i},{i + 1},{i + 2}\n" for i in range(20))
    path = bad_file(tmp_path, rows + "1,x7,2\n" + rows)
    error = expect_error(path, 22, "b", "'x7' is not a number", target="y", block_rows=7)
    assert "skip" in str(error)


def test_categorical_column_hint(tmp_path):
    """A column whose first lines hold numbers and later ones text: the error suggests
    reading it as text or dropping it. (A text column from the start is read as text.)"""
    numbers = "".join(f"{i},{i},{i}\n" for i in range(4000))  # the head: mostly numbers
    path = bad_file(tmp_path, numbers + "1,Paris,2\n3,Rome,4\n5,Oslo,6\n", header="a,city,y")
    error = expect_error(path, 4002, "city", "column 'city' holds text", target="y")
    assert "('Paris' at line 4002)" in str(error)
    assert "categorical=['city']" in str(error) and "drop=['city']" in str(error)
    path = bad_file(tmp_path, "1,Paris,2\n3,Rome,4\n5,Oslo,6\n", header="a,city,y")
    # dropping it works
    _, X, _y = collect(iter_csv(path, target="y", drop=["city"]))
    np.testing.assert_array_equal(X, [[1], [3], [5]])


@pytest.mark.parametrize(
    ("body", "column", "what"),
    [("1,2\n", "y", "has 2 fields"), ("1,2,3,4\n", None, "has 4 fields")],
)
def test_ragged_rows(tmp_path, body, column, what):
    path = bad_file(tmp_path, "1,2,3\n" + body + "4,5,6\n")
    expect_error(path, 3, column, what, target="y")


def test_infinite_value(tmp_path):
    path = bad_file(tmp_path, "1,2,3\n1,inf,3\n")
    expect_error(path, 3, "b", "infinite", target="y")


def test_non_utf8_cell_and_header(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"a,b,y\n1,2,3\n4,caf\xe9,6\n")
    expect_error(path, 3, "b", "not valid UTF-8", target="y")
    path.write_bytes(b"a,\xe9t\xe9,y\n1,2,3\n")
    with pytest.raises(CsvError, match="not valid UTF-8") as info:
        read_schema(path)
    assert info.value.line == 1 and info.value.column == "column_2"


def test_missing_column_lists_the_available_ones(tmp_path):
    path = bad_file(tmp_path, "1,2,3\n")
    for kwargs, name in [
        ({"target": "price"}, "price"),
        ({"target": "y", "features": ["a", "zz"]}, "zz"),
        ({"target": "y", "drop": ["nope"]}, "nope"),
    ]:
        with pytest.raises(CsvError, match=r"is not in the file; its columns are: 'a', 'b', 'y'"):
            iter_csv(path, **kwargs)
        with pytest.raises(CsvError) as info:
            read_schema(path, **kwargs)
        assert info.value.column == name and str(path) in str(info.value)


def test_empty_and_header_only_files(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(CsvError, match="empty"):
        read_schema(path)
    path.write_text("a,b,y\n")
    with pytest.raises(CsvError, match="header but no data rows") as info:
        read_schema(path)
    assert info.value.line == 1
    path.write_text("a,b,y\n\n\n")  # blank lines only: caught while reading
    with pytest.raises(CsvError, match="no data rows"):
        list(iter_csv(path, header=True))


def test_skip_mode_counts_reasons_and_lines(tmp_path):
    body = "1,2,3\n4,NA,6\n7,8\nx,1,2\n9,9,9\n\n1,inf,1\n2,2,2\n1,,1\n"
    path = bad_file(tmp_path, body)
    blocks, X, y = collect(iter_csv(path, target="y", on_bad_rows="skip", block_rows=2))
    np.testing.assert_array_equal(X, [[1, 2], [9, 9], [2, 2]])
    np.testing.assert_array_equal(y, [3, 9, 2])
    total: dict = {}
    lines = []
    for b in blocks:
        for reason, count in b.skipped.items():
            total[reason] = total.get(reason, 0) + count
        lines += b.skipped_lines
    assert total == {"missing": 2, "ragged": 1, "non_numeric": 1, "non_finite": 1}
    assert lines == [3, 4, 5, 8, 10]
    np.testing.assert_array_equal(np.concatenate([b.line_numbers for b in blocks]), [2, 6, 9])
    assert "skipped 5 rows: 2 missing value" in fcsv.format_skipped(total, lines)


def test_skip_mode_with_every_row_bad(tmp_path):
    path = bad_file(tmp_path, "1,NA,3\n")
    with pytest.raises(CsvError, match="every row was bad"):
        list(iter_csv(path, target="y", on_bad_rows="skip"))


def test_argument_errors(tmp_path):
    path = bad_file(tmp_path, "1,2,3\n")
    with pytest.raises(ValueError, match="on_bad_rows"):
        iter_csv(path, on_bad_rows="ignore")
    with pytest.raises(ValueError, match="block_rows"):
        iter_csv(path, block_rows=0)
    with pytest.raises(ValueError, match="dtype"):
        iter_csv(path, dtype=np.int32)
    with pytest.raises(ValueError, match="features or drop"):
        read_schema(path, features=["a"], drop=["b"])


# ----------------------------------------------------------------------- prefetch


def test_prefetch_gives_the_same_blocks(tmp_path):
    path = tmp_path / "data.csv"
    write_numeric(path, n_rows=500)
    on = list(iter_csv(path, target="f0", block_rows=33, prefetch=True))
    off = list(iter_csv(path, target="f0", block_rows=33, prefetch=False))
    assert len(on) == len(off) == 16
    for a, b in zip(on, off, strict=True):
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.first_line == b.first_line and a.rows == b.rows


def test_prefetch_runs_on_another_thread_and_reraises(tmp_path, monkeypatch):
    path = tmp_path / "data.csv"
    write_numeric(path, n_rows=50)
    threads = []
    real_parse = fcsv._ChunkParser.parse

    def parse(self, first_line, data, n_lines):
        threads.append(threading.current_thread())
        if len(threads) > 1:
            raise RuntimeError("boom in the parser")
        return real_parse(self, first_line, data, n_lines)

    monkeypatch.setattr(fcsv, "MAX_CHUNK_BYTES", 64)  # several chunks
    monkeypatch.setattr(fcsv, "MIN_CHUNK_BYTES", 64)
    monkeypatch.setattr(fcsv._ChunkParser, "parse", parse)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="boom in the parser"):
        for _ in iter_csv(path, block_rows=1):
            pass
    assert threads[0] is not threading.main_thread()
    assert threading.active_count() == before


def test_breaking_out_leaves_no_thread(tmp_path, monkeypatch):
    path = tmp_path / "data.csv"
    write_numeric(path, n_rows=2000)
    monkeypatch.setattr(fcsv, "MAX_CHUNK_BYTES", 256)
    monkeypatch.setattr(fcsv, "MIN_CHUNK_BYTES", 256)
    before = threading.active_count()
    for count, _ in enumerate(iter_csv(path, block_rows=3)):
        assert threading.active_count() == before + 1
        if count == 5:
            break
    assert threading.active_count() == before
    blocks = iter_csv(path, block_rows=3)
    next(blocks)
    blocks.close()
    assert threading.active_count() == before


def test_bad_bytes_in_a_dropped_column_are_ignored(tmp_path):
    path = tmp_path / "notes.csv"
    # line 3 is bad for another reason, so its chunk takes the line-by-line path too
    path.write_bytes(b"a,note,y\n1,caf\xe9,2\nNA,,3\n5,ok,6\n")
    blocks = list(iter_csv(path, target="y", drop=["note"], on_bad_rows="skip"))
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1], [5]])
    assert sum(b.skipped.get("missing", 0) for b in blocks) == 1
    assert sum(b.skipped.get("encoding", 0) for b in blocks) == 0


def test_short_row_caught_when_the_missing_field_is_not_read(tmp_path):
    path = bad_file(tmp_path, "1,2,3\n4,5\n6,7,8\n", header="a,y,note")
    expect_error(path, 3, "note", "has 2 fields", target="y", drop=["note"])
    # an empty text cell in the last column is fine
    path = bad_file(tmp_path, "1,2,x\n4,5,\n6,7,z\n", header="a,y,note")
    _, X, y = collect(iter_csv(path, target="y", drop=["note"]))
    np.testing.assert_array_equal(X, [[1], [4], [6]])
    np.testing.assert_array_equal(y, [2, 5, 7])


def test_io_package_exports_each_submodules_public_names():
    import fastgd.io
    from fastgd.io import cache as fcache
    from fastgd.io import levels as flevels

    assert fastgd.io.__all__ == [*fcache.__all__, *fcsv.__all__, *flevels.__all__]
    for module in (fcache, fcsv, flevels):
        for name in module.__all__:
            assert getattr(fastgd.io, name) is getattr(module, name), name


def test_a_repeated_header_name_is_named_before_missing_data_rows(tmp_path):
    # both faults at once: the header's own fault is the one reported (as before the split)
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n")
    with pytest.raises(CsvError, match="names column 'a' twice") as info:
        read_schema(path)
    assert info.value.line == 1
    assert info.value.column == "a"
