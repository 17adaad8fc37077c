"""``fastgd.fit_csv``: training on a CSV through the engine, block by block.

The central property: with ``shuffle=False`` an epoch over the file's blocks takes the same
steps as ``fastgd.fit`` on the whole file in memory, whatever the block size (1 row, a few
rows, more rows than the file), for every strategy, because mini-batches run across block
boundaries and full batches sum the blocks' gradients before their one step.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastgd
from fastgd import stream
from fastgd.io import CacheNotice, CsvError
from fastgd.stream import fit_csv, held_out

N_ROWS = 300
#: fit_csv standardises by default; these tests compare it with fastgd.fit on the raw
#: columns, so they turn it off (test_standardize_* compare the standardised fits).
RAW = {"standardize": False}


def _write(path, X, y, names=None):
    names = names or [f"x{j}" for j in range(X.shape[1])]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join([*names, "target"]) + "\n")
        for row, target in zip(X, y, strict=True):
            handle.write(",".join(repr(float(v)) for v in (*row, target)) + "\n")
    return path


@pytest.fixture(scope="module")
def regression_csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_ROWS, 4)) * np.array([1.0, 3.0, 0.5, 10.0]) + 2.0
    y = X @ np.array([1.0, -2.0, 0.5, 0.1]) + 3.0 + 0.1 * rng.standard_normal(N_ROWS)
    path = _write(tmp_path_factory.mktemp("stream") / "data.csv", X, y)
    return path, X, y


@pytest.fixture(scope="module")
def classification_csv(tmp_path_factory):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N_ROWS, 3))
    y = np.where(X @ np.array([1.0, -1.0, 0.5]) + 0.2 * rng.standard_normal(N_ROWS) > 0, 7, 3)
    path = _write(tmp_path_factory.mktemp("stream") / "labels.csv", X, y)
    return path, X, y


SETTINGS = {"learning_rate": "constant", "eta0": 0.002, "max_iter": 3, "tol": None}


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
@pytest.mark.parametrize("strategy", ["sgd", "minibatch", "full"])
def test_file_order_epochs_equal_fit_in_memory(regression_csv, tmp_path, strategy, block_rows):
    path, X, y = regression_csv
    options = {**SETTINGS, "strategy": strategy, "batch_size": 16, "shuffle": False}
    streamed = fit_csv(
        path, target="target", block_rows=block_rows, cache_dir=tmp_path, **RAW, **options
    )
    in_memory = fastgd.fit(X, y, **options)
    # The arithmetic is the same except the order of the full batch's block sums.
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.intercept, in_memory.intercept, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        streamed.loss_history, in_memory.loss_history, rtol=1e-12, atol=1e-12
    )
    assert streamed.t == in_memory.t
    assert streamed.extras["rows"] == N_ROWS
    assert streamed.extras["feature_names"] == ["x0", "x1", "x2", "x3"]


def test_averaging_and_float32_follow_fit_in_memory(regression_csv, tmp_path):
    path, X, y = regression_csv
    options = {**SETTINGS, "strategy": "sgd", "shuffle": False, "average": 10}
    streamed = fit_csv(path, target="target", block_rows=50, cache_dir=tmp_path, **RAW, **options)
    in_memory = fastgd.fit(X, y, **options)
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-12)
    single = fit_csv(
        path, target="target", block_rows=50, cache_dir=tmp_path, dtype="float32", **RAW,
        **options,
    )  # fmt: skip
    assert single.coef.dtype == np.float32
    np.testing.assert_allclose(single.coef, in_memory.coef, rtol=1e-4, atol=1e-4)


def test_the_cache_is_written_once_and_reused(regression_csv, tmp_path):
    path, *_ = regression_csv
    first = fit_csv(path, target="target", cache_dir=tmp_path, random_state=0, **SETTINGS)
    second = fit_csv(path, target="target", cache_dir=tmp_path, random_state=0, **SETTINGS)
    assert not first.extras["from_cache"] and second.extras["from_cache"]
    np.testing.assert_array_equal(first.coef, second.coef)


def test_shuffled_epochs_are_seeded_and_converge(regression_csv, tmp_path):
    path, X, y = regression_csv
    options = {"block_rows": 32, "strategy": "sgd", "max_iter": 30, "random_state": 5}
    runs = [
        fit_csv(path, target="target", cache_dir=tmp_path, standardize=True, **options)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].coef, runs[1].coef)
    exact, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(N_ROWS)]), y, rcond=None)
    np.testing.assert_allclose(runs[0].coef, exact[:-1], rtol=0.05, atol=0.02)
    np.testing.assert_allclose(runs[0].intercept, exact[-1], atol=0.1)


def test_standardize_trains_on_scaled_features_and_returns_raw_coefficients(
    regression_csv, tmp_path
):
    path, X, y = regression_csv
    options = {**SETTINGS, "strategy": "full", "max_iter": 5, "shuffle": False}
    streamed = fit_csv(path, target="target", standardize=True, cache_dir=tmp_path, **options)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    np.testing.assert_allclose(streamed.extras["scaler"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.extras["scaler"]["scale"], scale, rtol=1e-12)
    scaled = fastgd.fit((X - mean) / scale, y, **options)
    np.testing.assert_allclose(streamed.extras["standardized_coef"], scaled.coef, rtol=1e-10)
    # The returned model applies to raw rows: the same predictions as the scaled model.
    np.testing.assert_allclose(
        streamed.decision_function(X), scaled.decision_function((X - mean) / scale), rtol=1e-10
    )


def test_classification_labels_map_to_the_two_classes(classification_csv, tmp_path):
    path, X, y = classification_csv
    options = {**SETTINGS, "loss": "hinge", "strategy": "sgd", "shuffle": False}
    streamed = fit_csv(path, target="target", block_rows=40, cache_dir=tmp_path, **RAW, **options)
    in_memory = fastgd.fit(X, y, **options)
    np.testing.assert_array_equal(streamed.classes, [3.0, 7.0])
    np.testing.assert_allclose(streamed.coef, in_memory.coef, rtol=1e-12)
    np.testing.assert_array_equal(streamed.predict(X), in_memory.predict(X))


def test_more_than_two_classes_train_one_weight_vector_each(tmp_path):
    # (issue 13: k classes; tests/test_kcli.py checks the model against fastgd.fit's)
    X = np.arange(12.0).reshape(6, 2)
    path = _write(tmp_path / "three.csv", X, np.array([0, 1, 2, 0, 1, 2]))
    result = fit_csv(path, target="target", loss="log_loss", cache_dir=tmp_path, max_iter=2)
    assert result.coef.shape == (3, 2) and result.classes.tolist() == [0, 1, 2]


def test_one_class_is_a_clear_error(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    path = _write(tmp_path / "one.csv", X, np.zeros(6))
    with pytest.raises(CsvError, match=r"two classes or more.*'target'"):
        fit_csv(path, target="target", loss="log_loss", cache_dir=tmp_path)


def test_validation_fraction_holds_rows_out_and_stops_early(regression_csv, tmp_path):
    path, X, y = regression_csv
    lines = np.arange(2, N_ROWS + 2)  # line 1 is the header
    mask = held_out(lines, 0.2)
    assert 0.1 < mask.mean() < 0.3
    result = fit_csv(
        path, target="target", cache_dir=tmp_path, validation_fraction=0.2, strategy="full",
        learning_rate="auto", max_iter=200, tol=1e-4, n_iter_no_change=3, shuffle=False,
        standardize=True,
    )  # fmt: skip
    assert result.extras["validation_rows"] == int(mask.sum())
    assert result.extras["rows"] == N_ROWS - int(mask.sum())
    assert result.converged and result.n_iter < 200
    assert result.validation_scores.shape == (result.n_iter,)
    # The score is the held-out R² of the model after each epoch.
    held = X[mask], y[mask]
    residual = held[1] - result.decision_function(held[0])
    r2 = 1 - (residual @ residual) / ((held[1] - held[1].mean()) ** 2).sum()
    assert result.validation_scores[-1] == pytest.approx(r2, rel=1e-9)
    assert r2 > 0.99


def test_progress_reports_each_block(regression_csv, tmp_path):
    path, *_ = regression_csv
    calls = []
    fit_csv(
        path, target="target", block_rows=100, cache_dir=tmp_path, max_iter=2, tol=None,
        progress=lambda epoch, done, total: calls.append((epoch, done, total)),
    )  # fmt: skip
    epochs = [call for call in calls if call[0] > 0]
    assert [done for _, done, _ in epochs] == [100, 200, 300, 100, 200, 300]
    assert {total for *_, total in epochs} == {N_ROWS}
    assert calls[0][0] == 0  # the first pass reports first


def test_bad_options_are_rejected_before_reading(regression_csv, tmp_path):
    path, *_ = regression_csv
    with pytest.raises(TypeError, match="sample_weight"):
        fit_csv(path, target="target", sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="on_bad_rows"):
        fit_csv(path, target="target", on_bad_rows="ignore")
    with pytest.raises(ValueError, match="validation_fraction"):
        fit_csv(path, target="target", validation_fraction=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        fit_csv(path, target="target", learning_rate="fast")
    with pytest.raises(CsvError, match="nope"):
        fit_csv(path, target="nope", cache_dir=tmp_path)


def test_divergence_is_reported_with_the_best_weights(regression_csv, tmp_path):
    path, *_ = regression_csv
    with pytest.raises(fastgd.DivergenceError) as caught:
        fit_csv(
            path, target="target", cache_dir=tmp_path, learning_rate="constant", eta0=10.0,
            strategy="sgd", max_iter=3,
        )  # fmt: skip
    assert np.isfinite(caught.value.coef).all()


def test_bad_rows_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 2))
    y = X @ np.array([1.0, 2.0])
    path = _write(tmp_path / "bad.csv", X, y)
    lines = path.read_text().splitlines()
    lines[5] = "1.0,,2.0"  # a missing cell on file line 6
    lines[9] = "1.0,abc,2.0"  # a non-numeric cell on file line 10
    path.write_text("\n".join(lines) + "\n")
    # missing="error": a missing cell is a bad row (the default, "impute", keeps it)
    fit_csv = functools.partial(stream.fit_csv, missing="error")
    with pytest.raises(CsvError, match="line 6"):
        fit_csv(path, target="target", cache_dir=tmp_path / "a")
    result = fit_csv(path, target="target", on_bad_rows="skip", cache_dir=tmp_path / "b")
    assert result.extras["rows"] == 18
    assert sum(result.extras["skipped"].values()) == 2
    assert result.extras["skipped_lines"] == [6, 10]
    # The cache that run wrote does not hide the bad rows from a run that must stop there.
    with pytest.raises(CsvError, match="line 6"):
        fit_csv(path, target="target", cache_dir=tmp_path / "b")
    again = fit_csv(path, target="target", on_bad_rows="skip", cache_dir=tmp_path / "b")
    assert again.extras["skipped_lines"] == [6, 10]


def test_estimator_partial_fit_over_iter_csv_blocks_equals_one_epoch_of_fit(regression_csv):
    """The estimators learn from a file block by block: partial_fit over iter_csv's blocks
    (file order) takes the same steps as one epoch of fit on the whole array."""
    path, X, y = regression_csv
    settings = {"learning_rate": "constant", "eta0": 0.002, "shuffle": False, "random_state": 0}
    streamed = fastgd.SGDRegressor(**settings)
    for block in fastgd.iter_csv(path, target="target", block_rows=64):
        streamed.partial_fit(block.X, block.y)
    whole = fastgd.SGDRegressor(**settings, max_iter=1, tol=None).fit(X, y)
    np.testing.assert_allclose(streamed.coef_, whole.coef_, rtol=1e-12)
    assert streamed.t_ == whole.t_


def _r2(result, X, y) -> float:
    predicted = X @ result.coef + result.intercept
    return 1.0 - float(((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_a_tampered_cache_is_rebuilt_not_trained_on(regression_csv, tmp_path):
    """Negated cached targets: the checksums catch it in the first pass, before any step;
    the cache is rebuilt from the CSV and the model is the one a clean run gives."""
    path, X, y = regression_csv
    options = {"cache_dir": tmp_path, "random_state": 0, "block_rows": 64, "max_iter": 20}
    clean = fit_csv(path, target="target", **options)
    assert _r2(clean, X, y) > 0.9  # a run on the negated targets: R² < -1
    generation = json.loads(Path(clean.extras["cache"]).read_text())["generation"]
    (y_path,) = tmp_path.glob(f"*.{generation}.y.bin")
    cached_y = np.fromfile(y_path)
    (-cached_y).tofile(y_path)
    with pytest.warns(CacheNotice, match=r"rebuilding the cache .*y file .*checksum"):
        again = fit_csv(path, target="target", **options)
    assert not again.extras["from_cache"]
    np.testing.assert_array_equal(again.coef, clean.coef)
    third = fit_csv(path, target="target", **options)
    assert third.extras["from_cache"] and _r2(third, X, y) > 0.9


def test_same_size_edit_with_mtime_put_back_rebuilds(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 2))
    y = X @ np.array([1.0, -1.0])
    path = _write(tmp_path / "edit.csv", X, y)
    first = fit_csv(path, target="target", cache_dir=tmp_path / "c", max_iter=2, tol=None)
    stat = os.stat(path)
    text = path.read_text()
    path.write_text(text.replace("-", "+", 1))  # same size: a value changes sign
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.warns(CacheNotice, match="sampled pages differs"):
        second = fit_csv(path, target="target", cache_dir=tmp_path / "c", max_iter=2, tol=None)
    assert not first.extras["from_cache"] and not second.extras["from_cache"]


def test_a_wrong_typed_header_field_is_named_and_the_cache_rebuilt(regression_csv, tmp_path):
    path, *_ = regression_csv
    options = {"cache_dir": tmp_path, "max_iter": 2, "tol": None, "random_state": 0}
    first = fit_csv(path, target="target", **options)
    header_path = first.extras["cache"]
    header = json.loads(Path(header_path).read_text())
    header["skipped"] = None  # once: "'NoneType' object is not iterable" on every run
    with open(header_path, "w") as handle:
        json.dump(header, handle)
    with pytest.warns(CacheNotice, match=r"rebuilding the cache .*'skipped'"):
        second = fit_csv(path, target="target", **options)
    assert not second.extras["from_cache"]
    np.testing.assert_array_equal(second.coef, first.coef)
    third = fit_csv(path, target="target", **options)
    assert third.extras["from_cache"]


# -- issue 10, review: huge features under standardize, failed first passes leave no folder --


def test_standardize_refuses_a_feature_whose_variance_overflows_without_numpy_warnings(tmp_path):
    """Features near 1e200: the moments are gathered without numpy's overflow warnings,
    and the column that cannot be standardised is named with the cure (not "standardise
    the features", which the user just asked for)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    X[:, 1] *= 1e200
    path = tmp_path / "huge.csv"
    rows = "".join(f"{a!r},{b!r},{c!r},{a!r}\n" for a, b, c in X.tolist())
    path.write_text("x0,x1,x2,y\n" + rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from numpy fails the test
        with pytest.raises(CsvError, match=r"column 'x1'.*cannot standardise") as info:
            fit_csv(path, target="y", standardize=True, cache_dir=tmp_path, max_iter=2)
    message = str(info.value)
    assert "log-transform" in message and "Rescale" in message and "e+200" in message
    # values up to 1e150: the variance fits, standardising works and trains
    X[:, 1] /= 1e50
    rows = "".join(f"{a!r},{b!r},{c!r},{a!r}\n" for a, b, c in X.tolist())
    path = tmp_path / "large.csv"
    path.write_text("x0,x1,x2,y\n" + rows)
    result = fit_csv(path, target="y", standardize=True, cache_dir=tmp_path, max_iter=5)
    assert np.isfinite(result.coef).all()


def test_a_failed_first_pass_leaves_no_cache_folder(tmp_path):
    """A corrupt .gz fails in the first pass: its partial cache and the folder fastgd made
    for it are removed."""
    import gzip

    text = "a,y\n" + "".join(f"{i},{i % 7}\n" for i in range(5_000))
    packed = gzip.compress(text.encode(), mtime=0)
    path = tmp_path / "data.csv.gz"
    path.write_bytes(packed[:-4])  # the trailer cut: every line read, then the error
    with pytest.raises(CsvError, match="truncated or corrupt after line 5001"):
        fit_csv(path, target="y", max_iter=2)
    assert sorted(os.listdir(tmp_path)) == ["data.csv.gz"]
