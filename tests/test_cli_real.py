"""The command line on real files (issue 14): messages in the flags' spelling, predict's
--on-bad-rows / --id-columns / --proba, evaluate from the training cache, ``fastgd cache``,
and the train summary's cache and two-valued-target lines. In-process ``cli.main`` calls."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd import cli
from fastgd.cli._errors import flag_spelling


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_regression(path, n=200, seed=0, extra: str = ""):
    """Columns id, a, b, y (y = a + 2 b + 0.5); ``extra`` is appended verbatim."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = X @ np.array([1.0, 2.0]) + 0.5
    lines = ["id,a,b,y"]
    lines += [
        f"r{i},{a:.6f},{b:.6f},{t:.6f}" for i, ((a, b), t) in enumerate(zip(X, y, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def train(capsys, data, model, *extra):
    code, _, err = run(
        ["train", data, "--target", "y", "--drop", "id", "--model", model, *extra], capsys
    )
    assert code == 0, err
    return err


# -- messages in the flags' spelling -------------------------------------------------------------


def parser_of(command: str):
    return cli.build_parser()._subparsers._group_actions[0].choices[command]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("use on_bad_rows='skip'.", "use --on-bad-rows skip."),
        ("learning_rate='optimal' needs alpha > 0", "--learning-rate optimal needs --alpha > 0"),
        ("max_iter=5, penalty=None", "--epochs 5, --penalty none"),
        ("drop it (drop=['x y'], --drop 'x y') now", "drop it (--drop 'x y') now"),
        ("validation_fraction=0.5 held out", "--validation-fraction 0.5 held out"),
        ("block_rows must be >= 1; got 0", "block_rows must be >= 1; got 0"),  # no keyword=
        ("cell 'alpha=3' and --alpha > 0", "cell 'alpha=3' and --alpha > 0"),  # left alone
        ("unknown=1 stays", "unknown=1 stays"),
    ],
)
def test_flag_spelling_rewrites_the_keywords_the_command_has(message, expected):
    assert flag_spelling(message, parser_of("train")) == expected


def test_switches_read_as_their_flags():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--standardize", action="store_true")
    parser.add_argument("--no-standardize", dest="standardize", action="store_false")
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction)
    message = "standardize=False; standardize=True; cache=False; cache=True; cache=1"
    assert flag_spelling(message, parser) == (
        "--no-standardize; --standardize; --no-cache; --cache; cache=1"
    )


def test_a_keyword_the_command_has_no_flag_for_stays_python():
    assert flag_spelling("use max_iter=5", parser_of("info")) == "use max_iter=5"


def test_a_failing_train_run_names_the_flag(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv", extra="r9,1.0,2.0\n")  # a short row
    code, _, err = run(
        ["train", data, "--target", "y", "--drop", "id", "--model", tmp_path / "m.npz"], capsys
    )
    assert code == 1
    assert "--on-bad-rows skip" in err and "on_bad_rows" not in err, err
    assert "line 202" in err


# -- predict: --on-bad-rows skip, --id-columns, --proba ------------------------------------------

#: Data lines of a messy file: None marks a row the model cannot use, "blank" a blank line,
#: "imputed" a row with missing cells (the model's encoding imputes them: predicted).
MESSY = [
    ("x0,bad,1,1", None),  # a bad row before any good one
    ("x1,1,2,3", "good"),
    ("", "blank"),
    ("x2,NA,2,3", "imputed"),  # a missing cell
    ("x3,1,1,1", "good"),
    ("   \r", "blank"),  # spaces and a CRLF end: blank too
    ("x4,1", None),  # too few fields
    ("x5,0,0,0", "good"),
    ('"x,6",0.5,0.25,', "good"),  # a quoted id; the target is not read
    ("x7,2,3,4", "good"),
    ("x8,bad,1,1", None),  # bad rows after the last good one
    ("", "blank"),
    ("x9,,1,1", "imputed"),
    ("x10,1", None),  # too few fields, last
]


def write_messy(path):
    path.write_text("id,a,b,y\n" + "\n".join(line for line, _ in MESSY) + "\n")
    return path


def messy_expected(model):
    """(ids, predictions of the rows the model can use, where they are among the rows, bad
    line numbers). A missing cell takes its column's training mean."""
    rows = [(line, kind) for line, kind in MESSY if kind != "blank"]
    ids = ["x,6" if line.startswith('"') else line.split(",")[0] for line, _ in rows]
    usable = [i for i, (_, kind) in enumerate(rows) if kind in ("good", "imputed")]
    mean_a = model.encoding.mean[0]
    X = np.array(
        [[1, 2], [mean_a, 2], [1, 1], [0, 0], [0.5, 0.25], [2, 3], [mean_a, 1]], dtype=np.float64
    )
    bad_lines = [n + 2 for n, (_, kind) in enumerate(MESSY) if kind is None]
    return ids, model.predict(X), usable, bad_lines


@pytest.fixture
def regression_model(tmp_path, capsys):
    model = tmp_path / "m.npz"
    train(capsys, write_regression(tmp_path / "train.csv"), model)
    return model


@pytest.mark.parametrize("block_rows", ["1", "2", "65536"])
def test_predict_skip_gives_one_row_per_data_row(regression_model, tmp_path, capsys, block_rows):
    import csv

    import fastgd

    data = write_messy(tmp_path / "messy.csv")
    out = tmp_path / "p.csv"
    argv = ["predict", regression_model, data, "-o", out, "--block-rows", block_rows]
    code, _, err = run([*argv, "--on-bad-rows", "skip", "--id-columns", "id"], capsys)
    assert code == 0, err
    ids, predicted, good, bad_lines = messy_expected(fastgd.load(regression_model))
    with open(out, newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["id", "prediction"]
    assert [row[0] for row in table[1:]] == ids  # every data row, blank lines are not rows
    cells = [row[1] for row in table[1:]]
    assert [i for i, cell in enumerate(cells) if cell] == good
    np.testing.assert_allclose(np.array([float(cells[i]) for i in good]), predicted, rtol=1e-12)
    assert f"{len(ids)} rows written" in err and f"{len(bad_lines)} left empty" in err
    assert f"(lines {', '.join(map(str, bad_lines))})" in err, err
    # without --id-columns: the same prediction column
    code, _, err = run([*argv, "--on-bad-rows", "skip"], capsys)
    assert code == 0, err
    assert out.read_text().splitlines() == ["prediction", *cells]


def test_predict_stops_at_a_bad_row_by_default_and_names_the_flag(
    regression_model, tmp_path, capsys
):
    data = write_messy(tmp_path / "messy.csv")
    out = tmp_path / "p.csv"
    code, _, err = run(["predict", regression_model, data, "-o", out], capsys)
    assert code == 1 and "line 2" in err and "--on-bad-rows skip" in err, err
    assert not out.exists()  # nothing half-written


def test_predict_id_columns_must_exist(regression_model, tmp_path, capsys):
    data = write_messy(tmp_path / "messy.csv")
    code, _, err = run(["predict", regression_model, data, "--id-columns", "id,nope"], capsys)
    assert code == 1 and "--id-columns 'nope' not in the file's header" in err, err
    code, _, err = run(["predict", regression_model, data, "--id-columns", "id,id"], capsys)
    assert code == 2 and "named twice" in err, err


def test_predict_proba_writes_one_column_per_class(tmp_path, capsys):
    import fastgd

    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 2))
    labels = (X.sum(axis=1) > 0).astype(int)
    lines = ["id,a,b,y"] + [
        f"r{i},{a:.5f},{b:.5f},{t}" for i, ((a, b), t) in enumerate(zip(X, labels, strict=True))
    ]
    data = tmp_path / "c.csv"
    data.write_text("\n".join(lines) + "\n")
    model = tmp_path / "c.npz"
    train(capsys, data, model, "--loss", "log_loss")
    out = tmp_path / "p.csv"
    code, _, err = run(["predict", model, data, "--proba", "--id-columns", "id", "-o", out], capsys)
    assert code == 0, err
    header = out.read_text().splitlines()[0]
    assert header == "id,proba_0,proba_1"
    proba = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(1, 2))
    expected = fastgd.load(model).predict_proba(np.round(X, 5))
    np.testing.assert_allclose(proba, expected, rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


def test_predict_proba_of_a_model_without_probabilities_is_a_usage_error(
    regression_model, tmp_path, capsys
):
    data = write_messy(tmp_path / "messy.csv")
    code, _, err = run(["predict", regression_model, data, "--proba"], capsys)
    assert code == 2 and "--proba needs a classifier trained with --loss log_loss" in err, err
    assert "regressor" in err


def test_predict_skip_reads_compressed_files_alike(regression_model, tmp_path, capsys):
    import gzip

    data = write_messy(tmp_path / "messy.csv")
    packed = tmp_path / "messy.csv.gz"
    packed.write_bytes(gzip.compress(data.read_bytes()))
    outputs = []
    for source in (data, packed):
        out = tmp_path / f"p{len(outputs)}.csv"
        argv = ["predict", regression_model, source, "-o", out, "--on-bad-rows", "skip", "-q"]
        code, _, err = run([*argv, "--id-columns", "id", "--block-rows", "2"], capsys)
        assert code == 0, err
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 1 + sum(
        kind != "blank" for _, kind in MESSY
    )


# -- evaluate reads the training cache -----------------------------------------------------------


def cache_folder(data):
    return data.parent / f"{data.name}.fastgd-cache"


def test_evaluate_reads_the_training_cache_without_parsing(tmp_path, capsys, monkeypatch):
    data = write_regression(tmp_path / "d.csv", n=300)
    model = tmp_path / "m.npz"
    train(capsys, data, model)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed")

    monkeypatch.setattr("fastgd.io.csv.iter_csv", no_parsing)
    argv = ["evaluate", model, data, "--block-rows", "64"]
    for _ in range(2):
        code, from_cache, err = run(argv, capsys)
        assert code == 0, err
        assert "read the training cache" in err and str(cache_folder(data)) in err
    monkeypatch.undo()
    code, _, err = run(["cache", "clear", data], capsys)
    assert code == 0, err
    code, from_csv, err = run(argv, capsys)
    assert code == 0 and f"read {data}" in err, err
    assert from_cache == from_csv and "mse" in from_cache  # the same rows, the same sums


def test_evaluate_falls_back_to_the_csv(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv", extra="r9,1.0,2.0\n")  # a short row
    model = tmp_path / "m.npz"
    train(capsys, data, model, "--on-bad-rows", "skip")
    # the cache skipped a row; a run that must stop at bad rows reads the CSV and stops
    code, _, err = run(["evaluate", model, data], capsys)
    assert code == 1 and "line 202" in err and "--on-bad-rows skip" in err, err
    code, _, err = run(["evaluate", model, data, "--on-bad-rows", "skip"], capsys)
    assert code == 0 and "read the training cache" in err, err
    assert "skipped 1 row" in err and "(lines 202)" in err
    # another --dtype: not the cache's
    code, _, err = run(
        ["evaluate", model, data, "--on-bad-rows", "skip", "--dtype", "float32"], capsys
    )
    assert code == 0 and f"read {data}" in err, err


def test_evaluate_reads_the_csv_when_the_cache_is_damaged(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv")
    model = tmp_path / "m.npz"
    train(capsys, data, model)
    code, clean, _ = run(["evaluate", model, data, "-q"], capsys)
    (x_file,) = cache_folder(data).glob("*.X.bin")
    damaged = bytearray(x_file.read_bytes())
    damaged[8] ^= 0x40
    x_file.write_bytes(bytes(damaged))
    code, out, err = run(["evaluate", model, data], capsys)
    assert code == 0 and "is not used" in err and "checksum" in err and f"read {data}" in err
    assert out == clean


# -- fastgd cache, and the train summary's cache -------------------------------------------------


def test_train_says_where_the_cache_is_and_cache_clear_removes_only_its_files(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv")
    err = train(capsys, data, tmp_path / "m.npz")
    folder = cache_folder(data)
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert f"; cache {folder} (" in err and "'fastgd cache clear' removes it" in err, err
    code, out, err = run(["cache", "info", data], capsys)
    assert code == 0 and str(folder) in out and "200 rows x 2 feature(s)" in out and "valid" in out
    stranger = folder / "notes.txt"  # not a cache file: left alone, and so is the folder
    stranger.write_text("mine")
    code, out, err = run(["cache", "clear", data], capsys)
    assert code == 0, err
    assert f"removed 4 files ({cli.cache.format_bytes(size)})" in out, out
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    assert data.exists()
    stranger.unlink()
    code, out, err = run(["cache", "clear", data], capsys)
    assert code == 0 and "nothing to remove" in out, out
    code, out, err = run(["cache", "info", data], capsys)
    assert code == 0 and "no cache of" in out


def test_cache_clear_in_a_shared_cache_dir_removes_this_csvs_selections_only(tmp_path, capsys):
    shared = tmp_path / "shared"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_regression(tmp_path / "a" / "d.csv")
    other = write_regression(tmp_path / "b" / "d.csv", seed=1)
    for data in (one, other):  # the same file name, another file
        train(capsys, data, tmp_path / "m.npz", "--cache-dir", shared)
    assert len(list(shared.glob("*.json"))) == 2
    code, out, _ = run(["cache", "clear", one, "--cache-dir", shared], capsys)
    assert code == 0 and "removed 4 files" in out, out
    (left,) = shared.glob("*.json")
    assert str(other.resolve()) in left.read_text()
    code, out, _ = run(["cache", "info", other, "--cache-dir", shared], capsys)
    assert code == 0 and "1 selection(s)" in out


def test_cache_clear_with_the_csv_gone(tmp_path, capsys):
    data = write_regression(tmp_path / "d.csv")
    train(capsys, data, tmp_path / "m.npz")
    data.unlink()
    code, out, _ = run(["cache", "info", data], capsys)
    assert code == 0 and "stale" in out
    code, out, _ = run(["cache", "clear", data], capsys)
    assert code == 0 and "removed 4 files" in out and not cache_folder(data).exists()


@pytest.mark.parametrize(
    ("count", "unit"), [(812, "812 B"), (24_100, "24.1 kB"), (80_100_000, "80.1 MB")]
)
def test_format_bytes(count, unit):
    assert cli.cache.format_bytes(count) == unit


# -- a two-valued target with a regression loss --------------------------------------------------


def write_labels(path, labels=(0, 1), n=120):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, 2))
    y = np.where(X.sum(axis=1) > 0, labels[1], labels[0])
    lines = ["id,a,b,y"] + [
        f"r{i},{a:.5f},{b:.5f},{t}" for i, ((a, b), t) in enumerate(zip(X, y, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_two_valued_target_with_a_regression_loss_suggests_log_loss(tmp_path, capsys):
    data = write_labels(tmp_path / "d.csv", labels=(-1, 3))
    err = train(capsys, data, tmp_path / "m.npz", "-q", "--block-rows", "7")
    warning = [line for line in err.splitlines() if line.startswith("fastgd: warning:")]
    assert len(warning) == 1 and "two values only (-1 and 3)" in warning[0], err
    assert "--loss log_loss" in warning[0] and "--loss squared_error" in warning[0]
    err = train(capsys, data, tmp_path / "m.npz", "-q", "--loss", "log_loss")
    assert "warning" not in err  # a classification loss: nothing to say
    err = train(capsys, write_regression(tmp_path / "r.csv"), tmp_path / "m.npz", "-q")
    assert "warning" not in err  # a real regression target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_skip_lines_up_with_the_input_on_random_files(
    regression_model, tmp_path, capsys, seed
):
    """Random mixes of good rows, blank lines and rows the reader leaves out, cut into blocks
    of random sizes: every line that is not blank gets exactly one output row, in order."""
    import fastgd

    mean_a, mean_b = fastgd.load(regression_model).encoding.mean
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["good", "good", "good", "blank", "spaces", "missing", "short", "empty"], 60)
    kinds[30] = "good"  # the file needs a row the model can use (any line before it may not)
    lines, expected = [], []
    for i, kind in enumerate(kinds):
        a, b = rng.integers(-9, 9, size=2)
        line = {
            "good": f"i{i},{a},{b},0",
            "blank": "",
            "spaces": " \t ",
            "missing": f"i{i},{a},,0",
            "short": f"i{i},{a}",
            "empty": ",,,",
        }[kind]
        lines.append(line)
        if kind == "good":
            expected.append((f"i{i}", float(a + 2 * b + 0.5)))
        elif kind == "missing":  # b takes its training mean
            expected.append((f"i{i}", float(a + 2 * mean_b + 0.5)))
        elif kind == "short":
            expected.append((f"i{i}", None))
        elif kind == "empty":  # every feature imputed
            expected.append(("", float(mean_a + 2 * mean_b + 0.5)))
    data = tmp_path / "r.csv"
    data.write_text("id,a,b,y\n" + "\n".join(lines) + "\n")
    out = tmp_path / "p.csv"
    block_rows = str(rng.choice([1, 2, 3, 5, 64]))
    argv = ["predict", regression_model, data, "-o", out, "--on-bad-rows", "skip", "-q"]
    code, _, err = run([*argv, "--id-columns", "id", "--block-rows", block_rows], capsys)
    assert code == 0, err
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [row[0] for row in rows] == [name for name, _ in expected]
    for (_, value), (_, cell) in zip(expected, rows, strict=True):
        assert (cell == "") if value is None else abs(float(cell) - value) < 1e-3


def test_a_text_cell_in_a_numeric_column_names_the_flags(tmp_path, capsys):
    """The reader's advice in fastgd's keywords reads as the command's flags, once each;
    a bad target cell gets the advice that applies to a target (skip the row)."""
    numbers = "".join(f"r{i},{i % 7},{i % 3},{i}\n" for i in range(5000))
    data = tmp_path / "d.csv"
    data.write_text("id,a,b,y\n" + numbers + "r,1,oops,2\n" + "r,1,2,late\n")
    argv = ["train", data, "--target", "y", "--drop", "id", "--model", tmp_path / "m.npz"]
    code, _, err = run(argv, capsys)
    assert code == 1 and "line 5002" in err and "column 'b'" in err, err
    assert "--categorical b" in err and "--on-bad-rows skip" in err, err
    assert err.count("--categorical b") == 1 and "categorical=" not in err, err
    code, _, err = run([*argv, "--categorical", "b"], capsys)
    assert code == 1 and "line 5003" in err and "target" in err, err
    assert "--on-bad-rows skip" in err and "--categorical" not in err, err
