"""Issue 14, the reader: column types, text columns coded through a LevelTable, missing
cells kept, missing targets skipped, text labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fastgd.io import levels as levels_module
from fastgd.io.csv import CsvError, iter_csv, read_schema
from fastgd.io.levels import MISSING_CODE, UNSEEN_CODE, LevelTable


def write(tmp_path, text: str, name: str = "d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def read(path, **kwargs):
    blocks = list(iter_csv(path, **kwargs))
    good = [b for b in blocks if b.rows] or blocks[:1]
    X = np.concatenate([b.X for b in good])
    y = None if good[0].y is None else np.concatenate([b.y for b in good])
    codes = None if good[0].codes is None else np.concatenate([b.codes for b in good])
    return blocks, X, y, codes


DIAMONDS = "carat,cut,color,price\n0.2,Ideal,E,300\n0.3, Good ,NA,400\n0.25,Ideal,F,350\n"


def test_types_are_inferred_from_the_head_and_forced_by_categorical(tmp_path):
    path = write(tmp_path, DIAMONDS)
    schema = read_schema(path, target="price")
    assert schema.column_types == {
        "carat": "numeric",
        "cut": "text",
        "color": "text",
        "price": "numeric",
    }
    assert schema.numeric_features == ["carat"]
    assert schema.text_features == ["cut", "color"]
    forced = read_schema(path, target="price", categorical="carat")
    assert forced.column_types["carat"] == "text"
    assert forced.text_features == ["carat", "cut", "color"]
    # a dropped column gets no type
    assert "cut" not in read_schema(path, target="price", drop=["cut"]).column_types


def test_text_features_become_codes_and_x_keeps_the_numbers(tmp_path):
    path = write(tmp_path, DIAMONDS)
    blocks, X, y, codes = read(path, target="price", missing="keep")
    np.testing.assert_array_equal(X, [[0.2], [0.3], [0.25]])
    np.testing.assert_array_equal(y, [300, 400, 350])
    table = blocks[0].levels
    assert table.columns == ["cut", "color"]
    assert table.levels == [["Ideal", "Good"], ["E", "F"]]  # stripped, first-seen order
    np.testing.assert_array_equal(codes, [[0, 0], [1, MISSING_CODE], [0, 1]])
    assert codes.dtype == np.int32 and codes.flags.c_contiguous
    assert [c.tolist() for c in table.counts] == [[2, 1], [1, 1]]
    assert table.missing == [0, 1]


def test_an_all_numeric_file_has_no_codes(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n")
    blocks, X, _, codes = read(path, target="y")
    assert codes is None and blocks[0].levels is None
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])


def many_levels_file(tmp_path, rows: int, n_levels: int, seed: int = 0):
    """A file over several parse chunks (> 1 MiB) with a text column of ``n_levels``
    levels, a few-level one, and NA cells in each kind of column."""
    rng = np.random.default_rng(seed)
    tail = rng.integers(0, n_levels, rows)
    kind = rng.integers(0, 3, rows)
    x = np.round(rng.normal(size=rows), 3)
    na_x = rng.random(rows) < 0.05
    na_kind = rng.random(rows) < 0.05
    lines = ["x,tail,kind,y"]
    for i in range(rows):
        cells = [
            "NA" if na_x[i] else repr(float(x[i])),
            f"N{tail[i]:05d}",
            "" if na_kind[i] else "abc"[kind[i]] * 3,
            str(i % 7),
        ]
        lines.append(",".join(cells))
    path = write(tmp_path, "\n".join(lines) + "\n", "many.csv")
    return path, x, na_x, tail, kind, na_kind


def test_many_levels_over_several_chunks_keep_their_codes(tmp_path):
    rows = 60_000  # ~1.5 MB: two parse chunks at least
    path, x, na_x, tail, kind, na_kind = many_levels_file(tmp_path, rows, 5000)
    blocks, X, _, codes = read(path, target="y", missing="keep", block_rows=7000)
    assert len(blocks) > 2 and X.shape == (rows, 1) and codes.shape == (rows, 2)
    np.testing.assert_array_equal(np.isnan(X[:, 0]), na_x)
    np.testing.assert_array_equal(X[~na_x, 0], x[~na_x])
    table = blocks[0].levels
    names = np.array(table.levels[0])
    np.testing.assert_array_equal(names[codes[:, 0]], [f"N{t:05d}" for t in tail])
    first_seen = list(dict.fromkeys(f"N{t:05d}" for t in tail))
    assert table.levels[0] == first_seen  # codes in first-seen order, across chunks
    counts = Counter(f"N{t:05d}" for t in tail)
    assert table.counts[0].tolist() == [counts[name] for name in table.levels[0]]
    kinds = np.array(table.levels[1])
    np.testing.assert_array_equal(codes[:, 1] == MISSING_CODE, na_kind)
    np.testing.assert_array_equal(kinds[codes[~na_kind, 1]], ["abc"[k] * 3 for k in kind[~na_kind]])
    assert table.missing == [0, int(na_kind.sum())]


def test_missing_cells_are_errors_by_default_naming_line_and_column(tmp_path):
    path = write(tmp_path, DIAMONDS)
    with pytest.raises(CsvError, match="missing value") as info:
        read(path, target="price")
    assert (info.value.line, info.value.column) == (3, "color")
    blocks, X, *_ = read(path, target="price", on_bad_rows="skip")
    np.testing.assert_array_equal(X, [[0.2], [0.25]])
    assert blocks[-1].levels.levels == [["Ideal"], ["E", "F"]]  # nothing of the bad row
    assert sum(b.skipped.get("missing", 0) for b in blocks) == 1
    path = write(tmp_path, "a,b,y\n1,2,3\nNA,5,6\n", "num.csv")
    with pytest.raises(CsvError, match="missing value") as info:
        read(path, target="y")
    assert (info.value.line, info.value.column) == (3, "a")


@pytest.mark.parametrize("missing", ["error", "keep"])
def test_a_missing_target_skips_its_row_in_every_mode(tmp_path, missing):
    path = write(tmp_path, "a,c,y\n1,u,yes\n2,v,\n3,w,NA\n4,u,no\n")
    blocks, X, y, codes = read(path, target="y", missing=missing)
    np.testing.assert_array_equal(X, [[1], [4]])
    table = blocks[0].levels
    assert table.target_levels == ["yes", "no"]
    np.testing.assert_array_equal(y, [0.0, 1.0])  # text labels: level codes as floats
    assert y.dtype == np.float64
    np.testing.assert_array_equal(codes, [[0], [0]])
    assert table.levels == [["u"]]  # the skipped rows teach nothing
    assert sum(b.skipped.get("missing_target", 0) for b in blocks) == 2
    assert [line for b in blocks for line in b.skipped_lines] == [3, 4]


def test_numeric_labels_and_float32(tmp_path):
    path = write(tmp_path, "a,c,y\n1,u,1.5\n2,v,2.5\n")
    _, X, y, codes = read(path, target="y", dtype=np.float32)
    assert X.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(y, [1.5, 2.5])
    np.testing.assert_array_equal(codes, [[0], [1]])


def test_a_later_text_cell_in_a_numeric_column_names_line_and_column(tmp_path):
    numbers = "".join(f"{i},{i % 3},{i}\n" for i in range(10_000))  # beyond the head
    path = write(tmp_path, "a,b,y\n" + numbers + "7,oops,1\n" + numbers)
    assert read_schema(path, target="y").column_types["b"] == "numeric"
    with pytest.raises(CsvError, match="'oops' is not a number") as info:
        read(path, target="y")
    assert (info.value.line, info.value.column) == (10_002, "b")
    assert "categorical=['b']" in str(info.value) and "on_bad_rows='skip'" in str(info.value)
    # read as text, it is a category like the others
    blocks, X, _, codes = read(path, target="y", categorical=["b"])
    assert blocks[0].levels.levels == [["0", "1", "2", "oops"]]
    assert codes[10_000, 0] == 3 and X.shape == (20_001, 1)


def test_keep_still_refuses_short_rows_and_infinite_values(tmp_path):
    path = write(tmp_path, "a,c,b\n1,u,2\n3,v\n4,w,5\n")
    with pytest.raises(CsvError, match="has 2 fields") as info:
        read(path, missing="keep")
    assert info.value.line == 3
    path = write(tmp_path, "a,c,b\n1,u,\n3,v,\n4,w,inf\n", "inf.csv")
    with pytest.raises(CsvError, match="infinite") as info:
        read(path, missing="keep")
    assert (info.value.line, info.value.column) == (4, "b")
    _, X, _, _ = read(path, missing="keep", on_bad_rows="skip")
    assert np.isnan(X[:, 1]).all() and X.shape == (2, 2)


def test_padded_and_odd_missing_tokens_are_kept_as_missing(tmp_path):
    path = write(tmp_path, "a,b,y\n1, NA ,3\n n/a ,5,6\n7,8,9\n")
    _, X, y, _ = read(path, target="y", missing="keep")
    np.testing.assert_array_equal(np.isnan(X), [[False, True], [True, False], [False, False]])
    np.testing.assert_array_equal(y, [3, 6, 9])


def test_non_utf8_in_a_text_column_names_line_and_column(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"a,city,y\n1,Paris,3\n4,Orl\xe9ans,6\n7,Rome,9\n")
    with pytest.raises(CsvError, match="not valid UTF-8") as info:
        read(path, target="y")
    assert (info.value.line, info.value.column) == (3, "city")
    blocks, _, _, codes = read(path, target="y", on_bad_rows="skip")
    assert blocks[0].levels.levels == [["Paris", "Rome"]]
    np.testing.assert_array_equal(codes, [[0], [1]])


def test_a_frozen_table_codes_unseen_levels_and_learns_nothing(tmp_path):
    train = write(tmp_path, "a,c,y\n1,u,x\n2,v,z\n", "train.csv")
    blocks, *_ = read(train, target="y")
    table = blocks[0].levels
    frozen = table.frozen()
    assert frozen.is_frozen and not table.is_frozen
    test = write(tmp_path, "a,c,y\n1,w,z\n2,v,q\n3,NA,x\n", "test.csv")
    blocks, _, y, codes = read(test, target="y", levels=frozen, missing="keep")
    np.testing.assert_array_equal(codes[:, 0], [UNSEEN_CODE, 1, MISSING_CODE])
    np.testing.assert_array_equal(y, [1.0, UNSEEN_CODE, 0.0])
    assert frozen.levels == table.levels == [["u", "v"]]
    assert frozen.counts[0].tolist() == [1, 1] and frozen.missing == [0]
    # a growing table goes on learning where it stopped
    read(test, target="y", levels=table, missing="keep")
    assert table.levels == [["u", "v", "w"]] and table.target_levels == ["x", "z", "q"]
    assert table.counts[0].tolist() == [1, 2, 1] and table.missing == [1]


def test_a_table_for_other_columns_is_refused(tmp_path):
    path = write(tmp_path, DIAMONDS)
    with pytest.raises(ValueError, match="level table is for text columns"):
        read(path, target="price", levels=LevelTable(["cut"]), missing="keep")
    with pytest.raises(TypeError, match="LevelTable"):
        read(path, target="price", levels={"cut": []}, missing="keep")


def test_the_levels_limit_names_the_column_and_the_options(tmp_path, monkeypatch):
    monkeypatch.setattr(levels_module, "LEVELS_LIMIT", 3)
    rows = "".join(f"{i},id{i},{i % 2}\n" for i in range(10))
    path = write(tmp_path, "a,tailnum,y\n" + rows)
    with pytest.raises(CsvError, match="more than 3 distinct values") as info:
        read(path, target="y")
    assert info.value.column == "tailnum"
    assert "--drop tailnum" in str(info.value) and "--hash-features BITS" in str(info.value)
    read(path, target="y", drop=["tailnum"])  # dropped, it is fine


def test_level_table_round_trips_through_json(tmp_path):
    import json

    path = write(tmp_path, DIAMONDS.replace("300", "cheap").replace("400", "dear"))
    blocks, *_ = read(path, target="price", missing="keep", on_bad_rows="skip")
    table = blocks[0].levels
    data = json.loads(json.dumps(table.to_dict()))
    back = LevelTable.from_dict(data)
    assert back.columns == table.columns and back.levels == table.levels
    assert back.target == "price" and back.target_levels == table.target_levels
    assert [c.tolist() for c in back.counts] == [c.tolist() for c in table.counts]
    assert back.missing == table.missing and not back.is_frozen
    assert LevelTable.from_dict(table.frozen().to_dict()).is_frozen


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(columns="cut"), "'columns' list"),
        (lambda d: d["columns"][0].update(levels=["a", "a"]), "names a level twice"),
        (lambda d: d["columns"][0].update(counts=[1]), "non-negative integers"),
        (lambda d: d["columns"][0].update(counts=[1, -1]), "non-negative integers"),
        (lambda d: d["columns"][0].update(missing=True), "missing must be"),
        (lambda d: d["columns"].append(dict(d["columns"][0])), "named twice"),
        (lambda d: d.update(frozen="yes"), "'frozen'"),
        (lambda d: d.update(target=[]), "target must be a dict"),
    ],
)
def test_a_damaged_level_table_is_refused(mutate, match):
    good = {
        "columns": [{"name": "cut", "levels": ["a", "b"], "counts": [1, 2], "missing": 0}],
        "target": None,
        "frozen": False,
    }
    mutate(good)
    with pytest.raises(ValueError, match=match):
        LevelTable.from_dict(good)


def test_header_and_selection_problems_come_in_one_error(tmp_path):
    path = write(tmp_path, "a,b,a,y\n1,2,3,4\n")
    with pytest.raises(CsvError) as info:
        read_schema(path, target="price", drop=["zz", "qq"], categorical=["nope"])
    text = str(info.value)
    assert "4 problems" in text and info.value.line == 1
    for words in ("'a' twice", "target column 'price'", "'zz', 'qq' are not", "'nope'"):
        assert words in text


def test_iter_csv_takes_the_selection_keywords_of_read_schema(tmp_path):
    path = write(tmp_path, DIAMONDS)
    schema = read_schema(path, target="price")
    with pytest.raises(ValueError, match="CsvSchema and selection arguments"):
        iter_csv(schema, target="price")
    with pytest.raises(TypeError, match="unexpected keyword"):
        iter_csv(path, targte="price")
    with pytest.raises(ValueError, match="missing must be"):
        iter_csv(path, missing="impute")


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_bad_rows_skipped_beside_text_keep_codes_aligned(tmp_path, line_end):
    """The line-by-line path (bad rows skipped) gives the same codes as the fast one, on
    the lines kept; quoted text with the delimiter inside is one level."""
    lines = [
        "a,city,b",
        '1,"Paris, FR",2',
        "3,Rome",  # short
        "4,Oslo,x",  # not a number
        "5,Rome,inf",
        '6,"Paris, FR",',  # missing, kept
        "7,NA,8",
        "9,Oslo,10",
    ]
    path = write(tmp_path, line_end.join(lines) + line_end)
    blocks, X, _, codes = read(path, missing="keep", on_bad_rows="skip")
    table = blocks[0].levels
    assert table.levels == [["Paris, FR", "Oslo"]]  # Rome's rows were both bad
    np.testing.assert_array_equal(X[:, 0], [1, 6, 7, 9])
    np.testing.assert_array_equal(np.isnan(X[:, 1]), [False, True, False, False])
    np.testing.assert_array_equal(codes[:, 0], [0, 0, MISSING_CODE, 1])
    lines_kept = np.concatenate([b.line_numbers for b in blocks])
    np.testing.assert_array_equal(lines_kept, [2, 6, 7, 8])
    assert table.counts[0].tolist() == [2, 1] and table.missing == [1]
    skipped = Counter()
    for b in blocks:
        skipped.update(b.skipped)
    assert skipped == {"ragged": 1, "non_numeric": 1, "non_finite": 1}


def test_an_empty_last_text_cell_is_missing_not_a_short_row(tmp_path):
    rows = "".join(f"{i},{'' if i % 3 else 'v' + str(i % 4)}\n" for i in range(30))
    path = write(tmp_path, "a,note\n" + rows)
    _, X, _, codes = read(path, missing="keep")
    assert X.shape == (30, 1)
    np.testing.assert_array_equal(codes[:, 0] == MISSING_CODE, [i % 3 != 0 for i in range(30)])


def test_numbers_with_a_decimal_comma_are_read_as_text_with_a_warning(tmp_path):
    from fastgd.io.csv import CsvWarning

    rows = "".join(f"{i};{i % 5},{i % 10};x{i % 3}\n" for i in range(50))
    path = write(tmp_path, "y;length;kind\n" + rows)
    with pytest.warns(CsvWarning, match=r"'length' hold numbers written with a decimal comma"):
        schema = read_schema(path, target="y")
    assert schema.column_types["length"] == "text"
    import warnings

    with warnings.catch_warnings():  # a text column of words, or the column named as text
        warnings.simplefilter("error", CsvWarning)
        read_schema(path, target="y", drop=["length"])
        read_schema(path, target="y", categorical=["length"])
