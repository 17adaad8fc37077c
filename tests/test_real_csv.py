"""Real CSV files (issue 14), end to end on generated tables: text columns with few and
many levels, missing cells in numeric, text and target columns, text labels, unseen levels
at predict time, the encoding kept in the model file; train -> save -> predict in-process."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest

import fastgd
from fastgd import cli
from fastgd.io.csv import CsvError
from fastgd.io.model import ModelFormatError, load
from fastgd.stream import ScaleWarning

CUTS = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
CUT_EFFECT = dict(zip(CUTS, [-3.0, -1.0, 0.5, 1.5, 2.0], strict=True))
FAST = {"max_iter": 8, "random_state": 0}


def _table(n, seed, *, shops=300, unseen=False, label=False):
    """Rows of a diamonds-like table: carat (~1), depth (~60), cut (5 levels, a strong
    effect), shop (many levels, none), NA cells in carat, cut and the target."""
    rng = np.random.default_rng(seed)
    carat = rng.gamma(4.0, 0.25, n)
    depth = rng.normal(61.0, 1.5, n)
    cut = rng.choice(CUTS, n, p=[0.05, 0.1, 0.25, 0.3, 0.3])
    shop = [f"s{k}" for k in rng.integers(0, shops, n)]
    if unseen:
        cut[:5] = "Astonishing"  # never seen in training
        shop[:5] = ["new-shop"] * 5
    price = 3.0 * carat + 0.2 * (depth - 61) + np.array([CUT_EFFECT.get(c, 0.0) for c in cut])
    price = price + 0.3 * rng.standard_normal(n)
    rows = []
    for i in range(n):
        values = [f"{carat[i]:.4f}", f"{depth[i]:.3f}", str(cut[i]), shop[i]]
        if i % 17 == 3:
            values[0] = "NA"
        if i % 23 == 5:
            values[2] = ""
        target = ("yes" if price[i] > 3.5 else "no") if label else f"{price[i]:.5f}"
        if i % 41 == 7:
            target = "NA"
        rows.append(",".join([*values, target]))
    return ["carat,depth,cut,shop,price", *rows], price


def write(path, n=1500, seed=0, **options):
    lines, price = _table(n, seed, **options)
    path.write_text("\n".join(lines) + "\n")
    return price


def _r2(y, predicted):
    return 1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)


def _predict_cli(model, data, out, capsys):
    code = cli.main(["predict", str(model), str(data), "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    return np.loadtxt(out, delimiter=",", skiprows=1, dtype=str)


def test_categories_train_save_predict_in_process(tmp_path, capsys):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write(train, seed=0)
    price = write(test, n=400, seed=1, unseen=True)
    model = tmp_path / "model.npz"
    code = cli.main(["train", str(train), "--target", "price", "--model", str(model),
                     "--max-categories", "50", "--epochs", "8", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = load(model)
    assert saved.encoding.text == ["cut", "shop"] and saved.encoding.indicators == ["carat"]
    names = saved.feature_names
    assert "cut=Ideal" in names and "cut=<missing>" in names and "shop=<other>" in names
    assert sum(name.startswith("shop=") for name in names) == 49 + 1  # top 49 + other
    predicted = _predict_cli(model, test, tmp_path / "pred.csv", capsys).astype(float)
    assert predicted.shape == (400,) and np.isfinite(predicted).all()  # unseen, NA: a value
    assert _r2(price, predicted) > 0.9
    # the same numbers from the weights, encoded by hand (imputed carat, one-hot cut)
    lines, _ = _table(400, 1, unseen=True)
    coef, intercept = saved.raw_weights()
    weight = dict(zip(names, coef, strict=True))
    mean_carat = saved.encoding.mean[0]
    for row, got in zip(lines[1:], predicted, strict=True):
        carat, depth, cut, shop, _ = row.split(",")
        value = intercept + weight["depth"] * float(depth)
        value += weight["carat"] * (mean_carat if carat == "NA" else float(carat))
        value += weight["carat=missing"] * (carat == "NA")
        cut = "<missing>" if cut == "" else cut
        value += weight.get(f"cut={cut}", weight["cut=<other>"])
        value += weight.get(f"shop={shop}", weight["shop=<other>"])
        assert got == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_categories_clearly_beat_dropping_them(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write(train, seed=0)
    price = write(test, n=400, seed=1)
    mask = np.ones(400, dtype=bool)
    mask[7::41] = False  # the rows whose target is NA

    def r2(**options):
        result = fastgd.fit_csv(train, target="price", cache_dir=tmp_path / "c", **FAST, **options)
        model = fastgd.io.model.as_model(result)
        from fastgd.cli._model import model_input, model_schema, read_options
        from fastgd.io.csv import iter_csv

        schema = model_schema(model, test, target="price")
        blocks = iter_csv(schema, **read_options(model))
        predicted = np.concatenate([model.decision_function(model_input(model, b)) for b in blocks])
        return _r2(price[mask], predicted)

    with_categories, without = r2(), r2(drop=["cut", "shop"])
    assert with_categories > 0.9 and with_categories > without + 0.2


def test_text_labels_come_back_as_written(tmp_path, capsys):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    price = write(train, label=True)
    write(test, n=300, seed=2, label=True)
    result = fastgd.fit_csv(train, target="price", loss="log_loss", **FAST)
    assert result.classes.tolist() == ["no", "yes"]
    assert result.extras["skipped"]["missing_target"] == len(range(7, 1500, 41))
    model = tmp_path / "labels.npz"
    assert cli.main(["train", str(train), "--target", "price", "--loss", "log_loss",
                     "--model", str(model), "--epochs", "8", "--quiet"]) == 0  # fmt: skip
    predicted = _predict_cli(model, test, tmp_path / "pred.csv", capsys)
    assert set(predicted.tolist()) == {"yes", "no"}
    _, truth = _table(300, 2, label=True)
    assert np.mean((truth > 3.5) == (predicted == "yes")) > 0.85
    assert price.shape == (1500,)
    with pytest.raises(CsvError, match=r"column 'price': the target column holds text"):
        fastgd.fit_csv(train, target="price", **FAST)  # a regression loss


def test_missing_skip_counts_rows_and_error_names_the_cell(tmp_path):
    data = tmp_path / "data.csv"
    write(data, n=300)
    skipped = fastgd.fit_csv(data, target="price", missing="skip", **FAST)
    incomplete = {i for i in range(300) if i % 17 == 3 or i % 23 == 5}
    no_target = {i for i in range(300) if i % 41 == 7}
    assert skipped.extras["skipped"]["missing"] == len(incomplete - no_target)
    assert skipped.extras["rows"] == 300 - len(incomplete | no_target)
    assert "carat=missing" not in skipped.extras["feature_names"]
    with pytest.raises(CsvError, match=r"line 5, column 'carat': missing value"):
        fastgd.fit_csv(data, target="price", missing="error", **FAST)


def test_unscaled_columns_of_different_scales_warn(tmp_path, capsys):
    data = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    lines = ["small,large,y"] + [
        f"{a:.6f},{b:.1f},{a + b / 1e4:.6f}" for a, b in zip(rng.normal(0, 0.01, 200),
                                                           rng.normal(0, 1e3, 200), strict=True)
    ]  # fmt: skip
    data.write_text("\n".join(lines) + "\n")
    with pytest.warns(ScaleWarning, match=r"'large'.*'small'"):
        fastgd.fit_csv(data, target="y", standardize=False, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        fastgd.fit_csv(data, target="y", max_iter=2)  # standardised: no warning
    code = cli.main(["train", str(data), "--target", "y", "--model", str(tmp_path / "m.npz"),
                     "--no-standardize", "--epochs", "2", "--quiet"])  # fmt: skip
    assert code == 0 and "fastgd: warning: " in capsys.readouterr().err


def test_hashing_and_the_cached_run(tmp_path):
    data = tmp_path / "data.csv"
    write(data, n=600)
    first = fastgd.fit_csv(data, target="price", hash_features=5, **FAST)
    again = fastgd.fit_csv(data, target="price", hash_features=5, **FAST)
    assert again.extras["from_cache"] and not first.extras["from_cache"]
    np.testing.assert_array_equal(first.coef, again.coef)
    names = first.extras["feature_names"]
    assert len(names) == 3 + 2 * 32 and names[3] == "cut#0"  # carat, depth, carat=missing


def test_all_numeric_clean_files_keep_the_old_coefficients(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3)) * [1.0, 50.0, 0.01]
    y = X @ [1.0, 0.02, 30.0] + 0.1 * rng.standard_normal(300)
    data = tmp_path / "clean.csv"
    rows = [",".join(repr(v) for v in row) for row in np.column_stack([X, y]).tolist()]
    data.write_text("a,b,c,y\n" + "\n".join(rows) + "\n")
    # (a constant step: "auto" would measure its step on a sample of its own in memory)
    options = {"shuffle": False, "strategy": "minibatch", "batch_size": 10, "max_iter": 5,
               "learning_rate": "constant", "eta0": 0.01, "tol": None}  # fmt: skip
    streamed = fastgd.fit_csv(data, target="y", **options)
    assert isinstance(streamed.extras["encoding"].encode(X[:2]), np.ndarray)  # dense
    mean, std = X.mean(axis=0), X.std(axis=0)
    in_memory = fastgd.fit((X - mean) / std, y, **options)
    np.testing.assert_allclose(streamed.extras["standardized_coef"], in_memory.coef, rtol=1e-10)
    np.testing.assert_allclose(streamed.coef, in_memory.coef / std, rtol=1e-10)


def test_a_malformed_encoding_record_is_refused(tmp_path):
    data, model = tmp_path / "data.csv", tmp_path / "model.npz"
    write(data, n=200)
    fastgd.save(fastgd.fit_csv(data, target="price", **FAST), model)
    assert load(model).encoding is not None
    changes = [{"scale": [1.0, -1.0]}, {"levels": "cut"}, {"numeric": ["carat", "x"]},
               {"mean": [0.0, 1.0]}, {"hash_bits": 3}]  # fmt: skip
    for change in changes:
        broken = tmp_path / "broken.npz"
        _rewrite(model, broken, lambda metadata, c=change: metadata["encoding"].update(c))
        with pytest.raises(ModelFormatError, match="encoding"):
            load(broken)


def _rewrite(path, target, change):
    """A copy of a model file with its metadata changed by ``change(metadata)``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    change(metadata)
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, json.dumps(metadata) if name == "metadata.json" else content)
    return target


def test_format_1_0_files_without_an_encoding_still_load(tmp_path):
    X = np.random.default_rng(0).normal(size=(50, 2))
    result = fastgd.fit(X, X @ [1.0, 2.0], max_iter=2, random_state=0)
    path = fastgd.save(result, tmp_path / "new.npz")

    def as_1_0(metadata):
        metadata["format_version"] = "1.0"
        del metadata["encoding"]

    old = load(_rewrite(path, tmp_path / "old.npz", as_1_0))
    assert old.format_version == (1, 0) and old.encoding is None
    np.testing.assert_array_equal(old.predict(X), result.predict(X))


def test_no_cache_streams_the_csv_every_epoch(tmp_path, capsys):
    data = tmp_path / "data.csv"
    write(data, n=500)
    options = {"shuffle": False, "max_categories": 10, **FAST}
    cached = fastgd.fit_csv(data, target="price", cache_dir=tmp_path / "c", **options)
    streamed = fastgd.fit_csv(data, target="price", use_cache=False, **options)
    assert streamed.extras["cache"] is None and not list(tmp_path.glob("*.fastgd-cache"))
    np.testing.assert_array_equal(streamed.coef, cached.coef)
    assert streamed.extras["skipped"] == cached.extras["skipped"]
    model = tmp_path / "m.npz"
    code = cli.main(["train", str(data), "--target", "price", "--model", str(model),
                     "--no-cache", "--epochs", "2", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert not list(tmp_path.glob("*.fastgd-cache"))


@pytest.mark.parametrize(
    ("flags", "shown"),
    [(["--hash-features", "21"], "must be in 1-20"), (["--max-categories", "1"], "must be >= 2"),
     (["--missing", "mean"], "invalid choice"),
     (["--standardize", "--no-standardize"], "not allowed with")],
)  # fmt: skip
def test_train_flags_are_checked(tmp_path, capsys, flags, shown):
    data = tmp_path / "data.csv"
    write(data, n=50)
    argv = ["train", str(data), "--target", "price", "--model", str(tmp_path / "m.npz"), *flags]
    assert cli.main(argv) == 2
    assert shown in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_standardize_flag_is_kept_as_the_default(tmp_path, capsys):
    data = tmp_path / "data.csv"
    write(data, n=200)
    for name, flags in (("plain", []), ("flag", ["--standardize"])):
        argv = ["train", str(data), "--target", "price", "--model", str(tmp_path / f"{name}.npz"),
                "--epochs", "2", "--quiet", "--random-state", "0", *flags]  # fmt: skip
        assert cli.main(argv) == 0, capsys.readouterr().err
    plain, flag = load(tmp_path / "plain.npz"), load(tmp_path / "flag.npz")
    assert plain.scaler is not None and plain.options["standardize"] is True
    np.testing.assert_array_equal(plain.coef, flag.coef)


def test_categorical_reads_numeric_codes_as_levels_at_train_and_predict_time(tmp_path, capsys):
    rng = np.random.default_rng(4)
    grade = rng.integers(1, 6, 400)
    x = rng.normal(size=400)
    y = x + np.array([0.0, -2.0, 3.0, 0.0, 5.0, -4.0])[grade] + 0.1 * rng.normal(size=400)
    data = tmp_path / "grades.csv"
    rows = [f"{g},{a:.5f},{t:.5f}" for g, a, t in zip(grade, x, y, strict=True)]
    data.write_text("grade,x,y\n" + "\n".join(rows) + "\n")
    model = tmp_path / "m.npz"
    code = cli.main(["train", str(data), "--target", "y", "--model", str(model), "--quiet",
                     "--categorical", "grade", "--epochs", "10"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert {f"grade={g}" for g in range(1, 6)} <= set(load(model).feature_names)
    predicted = _predict_cli(model, data, tmp_path / "pred.csv", capsys).astype(float)
    assert _r2(y, predicted) > 0.95  # read as one number, grade gives R² 0.07


def test_the_models_schema_finds_the_training_cache(tmp_path):
    from fastgd.cli._model import model_schema
    from fastgd.io.cache import BlockCache

    data = tmp_path / "mixed.csv"
    lines = ["a,colour,b,y"] + [f"{i % 7},c{i % 3},{i / 9:.3f},{i % 5}" for i in range(60)]
    data.write_text("\n".join(lines) + "\n")
    model = fastgd.io.model.as_model(fastgd.fit_csv(data, target="y", max_iter=2))
    assert model.encoding.columns == ["a", "colour", "b"]  # the file's order, not by type
    schema = model_schema(model, data, target="y")
    assert schema.feature_names == ["a", "colour", "b"]
    cache = BlockCache.open(schema, dtype=np.float64)
    assert cache is not None and cache.levels.levels == [["c0", "c1", "c2"]]
    cache.close()


def test_a_file_whose_features_are_all_text(tmp_path):
    rng = np.random.default_rng(0)
    effect = {"a": 1.0, "b": -1.0, "c": 2.0, "d": 0.0}
    cells = rng.choice(list(effect), 300)
    data = tmp_path / "text.csv"
    rows = [f"{c},{effect[c] + 0.01 * rng.normal():.4f}" for c in cells]
    data.write_text("col,y\n" + "\n".join(rows) + "\n")
    for _ in range(2):  # the CSV, then its cache (an empty numeric file)
        result = fastgd.fit_csv(data, target="y", max_iter=20, random_state=0)
        fitted = dict(zip(result.extras["feature_names"], result.coef, strict=True))
        for level, value in effect.items():
            assert fitted[f"col={level}"] + result.intercept == pytest.approx(value, abs=0.05)
    assert result.extras["from_cache"]


def _months_files(tmp_path, capsys):
    """A model trained on ``month`` written 1..12 (read as text) and ``hour`` h0..h23; a
    test file writing month as 4.0 (every cell unseen) and three hours never seen."""
    rng = np.random.default_rng(7)
    month, hour, x = rng.integers(1, 13, 240), rng.integers(0, 24, 240), rng.normal(size=240)
    y = x + 0.1 * month
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    rows = zip(month, hour, x, y, strict=True)
    train.write_text(
        "month,hour,x,y\n" + "".join(f"{m},h{h},{a:.4f},{t:.4f}\n" for m, h, a, t in rows)
    )
    hours = [f"h{h}" if i >= 3 else "h99" for i, h in enumerate(hour)]
    rows = zip(month, hours, x, y, strict=True)
    test.write_text(
        "month,hour,x,y\n" + "".join(f"{m}.0,{h},{a:.4f},{t:.4f}\n" for m, h, a, t in rows)
    )
    model = tmp_path / "m.npz"
    code = cli.main(["train", str(train), "--target", "y", "--model", str(model), "--quiet",
                     "--categorical", "month", "--epochs", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return model, train, test


def test_unseen_levels_are_counted_and_a_mismatched_column_warned(tmp_path, capsys):
    model, train, test = _months_files(tmp_path, capsys)
    said = "levels not seen in training: month 240 cells (e.g. '"
    for argv in (["predict", str(model), str(test), "-o", str(tmp_path / "p.csv")],
                 ["evaluate", str(model), str(test), "--block-rows", "50"]):  # fmt: skip
        assert cli.main(argv) == 0
        err = capsys.readouterr().err
        assert said in err and ".0'), hour 3 cells (e.g. 'h99')" in err, err
        warning = [line for line in err.splitlines() if line.startswith("fastgd: warning:")]
        assert len(warning) == 1 and "column 'month'" in warning[0], err
        assert "240 of its 240 non-missing cells (100%)" in warning[0]
        assert ".0';" in warning[0] and "training's levels: e.g. '" in warning[0]
    # the training file itself: every level seen, nothing said
    assert cli.main(["predict", str(model), str(train), "-o", str(tmp_path / "q.csv")]) == 0
    err = capsys.readouterr().err
    assert "not seen in training" not in err and "warning" not in err, err
    # a few unseen cells (3 of 240 hours): counted, no warning
    assert (
        cli.main(["predict", str(model), str(test), "-o", str(tmp_path / "p.csv"), "--quiet"]) == 0
    )
    err = capsys.readouterr().err
    assert "hour" not in err and "'month'" in err  # --quiet: the warning alone


def test_a_frozen_table_keeps_only_its_first_unseen_strings():
    import polars as pl

    from fastgd.io.levels import UNSEEN_CODE, UNSEEN_EXAMPLES_KEPT, LevelTable, code_series

    table = LevelTable.from_dict(
        {"columns": [{"name": "c", "levels": ["a", "b"], "counts": [1, 1]}], "frozen": True}
    )
    column = table.feature_columns()[0]
    for chunk in (["a", "x", " x ", "y"], ["z", "w", "b", "v"]):
        codes, new = code_series(column, pl.Series(chunk), grow=False, path="f.csv")
        assert (
            new == [] and ((codes == UNSEEN_CODE) == [c.strip() not in "ab" for c in chunk]).all()
        )
    assert table.unseen_examples == [["x", "y", "z"][:UNSEEN_EXAMPLES_KEPT]]
    assert table.levels == [["a", "b"]] and table.frozen().unseen_examples == [[]]
