"""fastgd.dask: training on a Dask cluster (a LocalCluster of 2 worker processes)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask
import dask.array as da
import dask.dataframe as dd
import pandas as pd
from scipy import sparse

import fastgd
import fastgd.dask as fastgd_dask
from fastgd import _frames, engine
from fastgd.sources import BlockSource

#: Full batch on Dask equals full batch in one process up to the rounding of partial sums.
FULL_BATCH_RTOL = 1e-10


def linear_problem(n=600, d=4, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + 0.5 + noise * rng.standard_normal(n)
    return X, y, w


def least_squares(X, y):
    A = np.column_stack([X, np.ones(X.shape[0])])
    solution = np.linalg.lstsq(A, y, rcond=None)[0]
    return solution[:-1], solution[-1]


@pytest.mark.parametrize("chunks", [200, 250, (100, 350, 150)])
def test_full_batch_equals_single_process(client, chunks):
    X, y, _ = linear_problem()
    reference = fastgd.fit(X, y, strategy="full", max_iter=15, tol=None, random_state=0)
    chunked = da.from_array(X, chunks=(chunks, 4))
    result = fastgd_dask.fit(
        chunked, y, strategy="full", max_iter=15, tol=None, random_state=0, client=client,
        standardize=False,
    )  # fmt: skip
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.intercept, reference.intercept, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)
    assert result.learning_rate == pytest.approx(reference.learning_rate, rel=FULL_BATCH_RTOL)
    assert result.t == reference.t
    assert result.extras["dask"]["partitions"] == len(chunked.chunks[0])


def test_full_batch_with_penalty_and_constant_step(client):
    X, y, _ = linear_problem(seed=1)
    options = dict(
        strategy="full", learning_rate="constant", eta0=0.05, penalty="l2", alpha=0.01,
        max_iter=10, tol=None,
    )  # fmt: skip
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(170, 4)), y, client=client, standardize=False, **options
    )
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)


@pytest.mark.parametrize("mode", ["average", "sample"])
def test_minibatch_reaches_least_squares(client, mode):
    X, y, _ = linear_problem(n=800, seed=2)
    coef, intercept = least_squares(X, y)
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(200, 4)), da.from_array(y, chunks=200), strategy="minibatch",
        minibatch_mode=mode, batch_size=32, fraction=0.25 if mode == "sample" else None,
        max_iter=20, tol=None, random_state=0, client=client,
    )  # fmt: skip
    np.testing.assert_allclose(result.coef, coef, atol=5e-3)
    assert result.intercept == pytest.approx(intercept, abs=5e-3)
    assert result.extras["dask"]["mode"] == mode


class ArrayBlocks(BlockSource):
    """Arrays in this process as blocks of ``block_rows`` rows: Dask's partitions, here."""

    def __init__(self, X, y, block_rows, sample_fraction):
        super().__init__(*X.shape, X.dtype, fit_intercept=True, block_rows=block_rows,
                         sample_fraction=sample_fraction)  # fmt: skip
        self.X, self.y = X, y

    def block_count(self):
        return -(-self.n_rows // self.block_rows)

    def blocks(self, order=None):
        for index in range(self.block_count()) if order is None else order:
            rows = slice(index * self.block_rows, (index + 1) * self.block_rows)
            yield self.X[rows].copy(), self.y[rows].copy()


def test_sample_mode_takes_the_steps_of_a_block_source(client):
    # The sampled epochs are BlockSource's: only the gradient sums come from the workers.
    X, y, _ = linear_problem(n=800, seed=7)
    options = dict(
        strategy="minibatch", learning_rate="constant", eta0=0.05, shuffle=False, max_iter=5,
        tol=None, random_state=0,
    )  # fmt: skip
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(200, 4)), y, minibatch_mode="sample", fraction=0.25,
        client=client, standardize=False, **options,
    )  # fmt: skip
    settings = engine.resolve_options(**{**engine.fit_defaults(), **options, "batch_size": 200})
    local = engine.train(ArrayBlocks(X, y, 200, 0.25), settings)
    np.testing.assert_allclose(result.coef, local.coef, rtol=FULL_BATCH_RTOL)
    assert result.intercept == pytest.approx(local.intercept, rel=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, local.loss_history, rtol=FULL_BATCH_RTOL)
    assert result.t == local.t == 1 + 4 * options["max_iter"]


def write_csv_parts(directory, columns_per_file=None, seed=3):
    X, y, w = linear_problem(n=450, d=3, seed=seed)
    paths = []
    for index, rows in enumerate(np.array_split(np.arange(450), 3)):
        frame = pd.DataFrame(X[rows], columns=["a", "b", "c"])
        frame.insert(1, "price", y[rows])  # the target is not the last column
        if columns_per_file and index in columns_per_file:
            frame[columns_per_file[index]] = 1.0
        path = directory / f"part-{index}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return X, y, w


def test_dataframe_from_csv_files_target_by_name(client, tmp_path):
    X, y, _ = write_csv_parts(tmp_path)
    frame = dd.read_csv(str(tmp_path / "part-*.csv"))
    assert frame.npartitions == 3
    reference = fastgd.fit(X, y, strategy="full", max_iter=10, tol=None)
    result = fastgd_dask.fit(
        frame, target="price", strategy="full", max_iter=10, tol=None, client=client,
        standardize=False,
    )  # fmt: skip
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    assert result.extras["feature_names"] == ["a", "b", "c"]
    assert result.extras["target"] == "price"
    # Features chosen by name, and y as a Series.
    picked = fastgd_dask.fit(
        frame[["a", "c"]], frame["price"], strategy="full", max_iter=5, tol=None, client=client
    )
    assert picked.coef.shape == (2,)


def test_partitions_with_other_columns_are_named(client):
    good = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0], "y": [1.0, 2.0]})
    odd = good.assign(extra=3.0)
    parts = [dask.delayed(good.copy)(), dask.delayed(odd.copy)(), dask.delayed(good.copy)()]
    frame = dd.from_delayed(parts, meta=good.iloc[:0], verify_meta=False)
    with pytest.raises(ValueError, match=r"partition 1 has 4 columns .*unexpected: \['extra'\]"):
        fastgd_dask.fit(frame, target="y", strategy="full", max_iter=2, client=client)


def test_unknown_target_and_input_errors(client):
    frame = dd.from_pandas(pd.DataFrame({"a": [1.0, 2.0], "y": [1.0, 2.0]}), npartitions=1)
    with pytest.raises(ValueError, match="target='z' is not a column"):
        fastgd_dask.fit(frame, target="z", client=client)
    with pytest.raises(TypeError, match=r"dask\.array\.Array or a dask\.dataframe\.DataFrame"):
        fastgd_dask.fit(np.zeros((3, 2)), np.zeros(3), client=client)
    with pytest.raises(TypeError, match="unsupported option"):
        fastgd_dask.fit(frame, target="y", sample_weight=[1, 1], client=client)


def test_worker_killed_mid_fit_gives_the_uninterrupted_model(client):
    X, y, _ = linear_problem(n=600, seed=4)
    options = dict(strategy="full", max_iter=6, tol=None, random_state=0)
    reference = fastgd.fit(X, y, **options)
    victim = sorted(client.nthreads())[0]

    def kill_one_worker(epoch, coef, intercept, loss):
        if epoch == 2:
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:  # the worker dies before it can answer
                pass

    result = fastgd_dask.fit(
        da.from_array(X, chunks=(100, 4)), y, callback=kill_one_worker, client=client,
        standardize=False, **options,
    )  # fmt: skip
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)
    client.wait_for_workers(2, timeout=60)


def test_steps_that_keep_failing_raise_worker_lost_with_the_model(client, monkeypatch):
    X, y, _ = linear_problem(n=300, seed=5)
    monkeypatch.setattr(fastgd_dask, "RETRY_PAUSE", 0.0)
    calls = {"n": 0}
    original = fastgd_dask._DaskSource._tree

    def failing_tree(self, futures):
        calls["n"] += 1
        if self.epochs_run >= 2:
            raise ConnectionResetError("worker went away")  # an OSError: "lost"
        return original(self, futures)

    monkeypatch.setattr(fastgd_dask._DaskSource, "_tree", failing_tree)
    good = fastgd.fit(X, y, strategy="full", max_iter=2, tol=None)
    with pytest.raises(fastgd_dask.WorkerLostError, match="Step 3 failed 3 times") as caught:
        fastgd_dask.fit(
            da.from_array(X, chunks=(100, 4)), y, strategy="full", max_iter=5, tol=None,
            client=client, standardize=False,
        )  # fmt: skip
    assert caught.value.step == 3
    np.testing.assert_allclose(caught.value.coef, good.coef, rtol=FULL_BATCH_RTOL)
    assert caught.value.intercept == pytest.approx(good.intercept, rel=FULL_BATCH_RTOL)


def test_estimators_under_dask_ml_incremental(client):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y, _ = linear_problem(n=600, seed=6)
    model = wrappers.Incremental(fastgd.SGDRegressor(random_state=0, eta0=0.05))
    model.fit(da.from_array(X, chunks=(150, 4)), da.from_array(y, chunks=150))
    assert model.estimator_.coef_.shape == (4,)
    assert model.score(X, y) > 0.99


def test_missing_extra_gives_a_clear_error():
    code = (
        "import sys; import fastgd; assert 'dask' not in sys.modules, 'fastgd imported dask'\n"
        "sys.modules['dask'] = None\n"
        "try:\n    import fastgd.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastgd.__file__))}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert "pip install 'fastgd[dask]'" in done.stdout


@pytest.mark.parametrize("optimizer", ["nesterov", "lbfgs"])
def test_full_batch_optimizers_equal_single_process(client, optimizer):
    """nesterov and lbfgs read only full-batch gradient sums: on a cluster they take the
    same iterations as in one process (optimizers, issue 12)."""
    X, y, _ = linear_problem()
    options = dict(strategy="full", optimizer=optimizer, penalty="l2", alpha=0.01,
                   max_iter=15, tol=1e-10, random_state=0)  # fmt: skip
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(
        da.from_array(X, chunks=(250, 4)), y, client=client, standardize=False, **options
    )
    np.testing.assert_allclose(result.coef, reference.coef, rtol=1e-8)
    assert result.n_iter == reference.n_iter


# ---------------------------------------------------------------------------------------------
# Real tables (issue 14): standardize, missing cells, categories, errors naming the column.
# ---------------------------------------------------------------------------------------------

FULL = dict(strategy="full", max_iter=12, tol=None, random_state=0)


def mixed_scale_problem(n=480, seed=8):
    """Columns on scales 1e3 apart (where an unscaled fit is useless)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)) * np.array([1000.0, 1.0, 0.001]) + np.array([50.0, 0, 3])
    y = X @ np.array([0.002, -1.0, 400.0]) + 0.5 + 0.01 * rng.standard_normal(n)
    return X, y


def fold(coef, intercept, mean, scale):
    raw = coef / scale
    return raw, intercept - raw @ mean


def test_standardize_trains_on_scaled_columns_and_returns_raw_weights(client):
    X, y = mixed_scale_problem()
    mean, scale = X.mean(axis=0), X.std(axis=0)
    reference = fastgd.fit((X - mean) / scale, y, **FULL)
    frame = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]).assign(y=y), npartitions=3)
    result = fastgd_dask.fit(frame, target="y", client=client, **FULL)  # standardize: default
    np.testing.assert_allclose(result.extras["scaler"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(result.extras["scaler"]["scale"], scale, rtol=1e-12)
    np.testing.assert_allclose(result.extras["standardized_coef"], reference.coef,
                               rtol=FULL_BATCH_RTOL)  # fmt: skip
    raw_coef, raw_intercept = fold(reference.coef, reference.intercept, mean, scale)
    np.testing.assert_allclose(result.coef, raw_coef, rtol=1e-9)
    assert result.intercept == pytest.approx(raw_intercept, rel=1e-9)
    # The raw weights predict from the raw columns.
    np.testing.assert_allclose(result.predict(X), reference.predict((X - mean) / scale),
                               rtol=1e-9, atol=1e-9)  # fmt: skip
    assert result.loss_history[-1] < 1e-2 * result.loss_history[0]
    with pytest.warns(UserWarning, match=r"differ in scale by [\d.]+e\+05: 'a' .* against 'c'"):
        unscaled = fastgd_dask.fit(frame, target="y", client=client, standardize=False, **FULL)
    assert unscaled.extras["scaler"] is None


def test_standardize_on_arrays_with_a_start_in_raw_space(client):
    X, y = mixed_scale_problem(seed=9)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    start = np.array([0.001, -0.5, 100.0])
    reference = fastgd.fit((X - mean) / scale, y, coef_init=start * scale,
                           intercept_init=0.1 + start @ mean, **FULL)  # fmt: skip
    result = fastgd_dask.fit(da.from_array(X, chunks=(160, 3)), y, coef_init=start,
                             intercept_init=0.1, client=client, **FULL)  # fmt: skip
    np.testing.assert_allclose(result.extras["standardized_coef"], reference.coef,
                               rtol=FULL_BATCH_RTOL)  # fmt: skip
    assert result.extras["feature_names"] == ["x0", "x1", "x2"]


def table(n=400, seed=10):
    """A table with a numeric column, a text column (levels of distinct frequencies) and
    its targets."""
    rng = np.random.default_rng(seed)
    cut = np.repeat(["Ideal", "Good", "Fair", "Poor"], [n // 2, 3 * n // 10, 3 * n // 20, n // 20])
    cut = rng.permutation(cut)
    carat = rng.standard_normal(n)
    effect = {"Ideal": 2.0, "Good": 1.0, "Fair": -1.0, "Poor": -3.0}
    y = 1.5 * carat + np.array([effect[c] for c in cut]) + 0.01 * rng.standard_normal(n)
    return pd.DataFrame({"carat": carat, "cut": pd.array(cut, dtype="string"), "price": y})


def test_categories_are_one_hot_with_a_shared_other_level(client):
    frame = table()
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=3), target="price",
                             max_categories=3, standardize=False, client=client,
                             **FULL)  # fmt: skip
    assert result.extras["feature_names"] == ["carat", "cut=Ideal", "cut=Good", "cut=<other>"]
    cut = frame["cut"].to_numpy()
    encoded = np.column_stack([
        frame["carat"], cut == "Ideal", cut == "Good", (cut == "Fair") | (cut == "Poor"),
    ]).astype(np.float64)  # fmt: skip
    reference = fastgd.fit(encoded, frame["price"].to_numpy(), **FULL)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    assert result.intercept == pytest.approx(reference.intercept, rel=FULL_BATCH_RTOL)


def test_predict_takes_unseen_levels_and_missing_cells(client):
    frame = table(seed=11)
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=2), target="price",
                             client=client, strategy="full", optimizer="lbfgs", max_iter=100,
                             tol=1e-12)  # fmt: skip
    names = result.extras["feature_names"]
    new = pd.DataFrame({"carat": [0.5, np.nan, 1.0], "cut": ["Good", "Ideal", "Astounding"]})
    predicted = fastgd_dask.predict(result, new)
    mean = frame["carat"].mean()
    weight = dict(zip(names, result.coef, strict=True))
    expected = result.intercept + np.array([
        0.5 * weight["carat"] + weight["cut=Good"],
        mean * weight["carat"] + weight["cut=Ideal"],  # the training mean, no indicator
        1.0 * weight["carat"] + weight["cut=<other>"],  # an unseen level: the shared one
    ])  # fmt: skip
    np.testing.assert_allclose(predicted, expected, rtol=1e-12)
    # The fit is good on the training rows, and a dask frame gives the same predictions.
    on_frame = fastgd_dask.predict(result, dd.from_pandas(frame, npartitions=2)).compute()
    residual = on_frame.to_numpy() - frame["price"].to_numpy()
    assert np.sqrt(np.mean(residual**2)) < 0.05
    np.testing.assert_allclose(on_frame.to_numpy(), fastgd_dask.predict(result, frame))


def holes(frame):
    """``frame`` with missing cells: numeric, text and target ones."""
    frame = frame.copy()
    frame.loc[[3, 40, 41], "carat"] = np.nan
    frame.loc[[7, 90], "cut"] = pd.NA
    frame.loc[[12, 200], "price"] = np.nan
    return frame


def test_missing_impute_gives_mean_indicator_and_missing_level(client):
    frame = holes(table(seed=12))
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=3), target="price",
                             standardize=False, client=client, **FULL)  # fmt: skip
    assert result.extras["feature_names"] == [
        "carat", "carat=missing", "cut=Ideal", "cut=Good", "cut=Fair", "cut=Poor",
        "cut=<other>", "cut=<missing>",
    ]  # fmt: skip
    assert result.extras["skipped"] == {"missing_target": 2, "missing_feature": 0}
    kept = frame[frame["price"].notna()]
    carat = kept["carat"].to_numpy()
    cut = kept["cut"].fillna("").to_numpy()  # ("" is no level: missing cells match none)
    encoded = np.column_stack(
        [np.where(np.isnan(carat), np.nanmean(carat), carat), np.isnan(carat)]
        + [cut == level for level in ["Ideal", "Good", "Fair", "Poor"]]
        + [np.zeros(len(kept)), kept["cut"].isna()]
    ).astype(np.float64)
    reference = fastgd.fit(encoded, kept["price"].to_numpy(), **FULL)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)


def test_missing_skip_drops_the_rows_and_counts_them(client):
    frame = holes(table(seed=13))
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=3), target="price",
                             missing="skip", standardize=False, client=client,
                             **FULL)  # fmt: skip
    assert result.extras["skipped"] == {"missing_target": 2, "missing_feature": 5}
    assert result.extras["rows"] == len(frame) - 7
    assert "carat=missing" not in result.extras["feature_names"]
    kept = frame.dropna()
    cut = kept["cut"].to_numpy()
    encoded = np.column_stack(
        [kept["carat"]] + [cut == level for level in ["Ideal", "Good", "Fair", "Poor"]]
        + [np.zeros(len(kept))]
    ).astype(np.float64)  # fmt: skip
    reference = fastgd.fit(encoded, kept["price"].to_numpy(), **FULL)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)


def test_missing_error_names_every_column_and_the_first_place(client):
    frame = holes(table(seed=14))
    with pytest.raises(ValueError, match="missing='error'") as caught:
        fastgd_dask.fit(dd.from_pandas(frame, npartitions=1), target="price", missing="error",
                        client=client, **FULL)  # fmt: skip
    message = str(caught.value)
    assert "column 'carat': 3 missing (the first in partition 0, row 3)" in message
    assert "column 'cut': 2 missing (the first in partition 0, row 7)" in message
    assert "price" not in message  # a missing target is dropped, never an error


def test_text_and_bad_cells_are_named_by_column(client):
    frame = table(n=40, seed=15)
    parts = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(ValueError, match=r"feature columns 'cut' \(string\) hold text"):
        fastgd_dask.fit(parts, target="price", categorical=False, client=client)
    with pytest.raises(ValueError, match=r"the target 'cut' holds text .* regression loss"):
        fastgd_dask.fit(parts, target="cut", client=client)
    with pytest.raises(ValueError, match=r"categorical=\['size'\] are not feature columns"):
        fastgd_dask.fit(parts, target="price", categorical=["size"], client=client)
    dated = frame.assign(when=pd.date_range("2013-01-01", periods=40, freq="h"))
    with pytest.raises(
        ValueError, match=r"'when' \(datetime64\[\w+\]\) are neither numbers nor text"
    ):
        fastgd_dask.fit(dd.from_pandas(dated, npartitions=2), target="price", client=client)
    as_levels = fastgd_dask.fit(dd.from_pandas(dated, npartitions=2), target="price",
                                categorical=["when"], max_categories=8, max_iter=1,
                                client=client)  # fmt: skip
    assert "when=2013-01-01 00:00:00" in as_levels.extras["feature_names"]
    infinite = frame.assign(carat=frame["carat"].where(frame.index != 30, np.inf))
    with pytest.raises(
        ValueError, match=r"column 'carat' holds an infinite value \(partition 1, row 10\)"
    ):
        fastgd_dask.fit(dd.from_pandas(infinite, npartitions=2), target="price", client=client)
    # A partition whose numeric column holds text (its meta said float).
    good = frame[["carat", "price"]].iloc[:20]
    odd = good.astype({"carat": object})
    odd.iloc[4, 0] = "1.2 ct"
    mixed = dd.from_delayed([dask.delayed(good.copy)(), dask.delayed(odd.copy)()],
                            meta=good.iloc[:0], verify_meta=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"partition 1, row 4 .*column 'carat' holds '1.2 ct'"):
        fastgd_dask.fit(mixed, target="price", client=client)


def test_integer_codes_as_categories_and_text_labels(client):
    rng = np.random.default_rng(16)
    code = rng.integers(0, 3, 300)
    frame = pd.DataFrame({"x": rng.standard_normal(300), "code": code,
                          "label": np.where(code == 2, "yes", "no")})  # fmt: skip
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=2), target="label",
                             categorical=["code"], loss="log_loss", client=client,
                             strategy="full", optimizer="lbfgs", max_iter=50)  # fmt: skip
    assert [name for name in result.extras["feature_names"] if name.startswith("code=")] == [
        f"code={level}" for level in pd.Series(code).value_counts().index.astype(str)
    ] + ["code=<other>"]
    assert set(fastgd_dask.predict(result, frame)) <= {"yes", "no"}
    assert (fastgd_dask.predict(result, frame) == frame["label"]).mean() == 1.0


def one_hot_csr(frame, numeric, columns, indicators=()):
    """A hand-made CSR encoding: the numeric columns (NaN: the column's mean), a missing
    indicator for those in ``indicators``, then per ``(name, levels)`` a one-hot block over
    ``levels`` and ``<other>`` (any other level), plus ``<missing>`` if listed last."""
    rows = len(frame)
    blocks = []
    for name in numeric:
        values = frame[name].to_numpy(dtype=np.float64)
        blocks.append(np.where(np.isnan(values), np.nanmean(values), values)[:, None])
    blocks += [frame[name].isna().to_numpy(dtype=np.float64)[:, None] for name in indicators]
    for name, levels in columns:
        index = {level: i for i, level in enumerate(levels)}
        other = index.get("<other>", len(levels))
        cells = frame[name].astype(object).where(frame[name].notna(), "<missing>")
        codes = np.array([index.get(str(cell), other) for cell in cells])
        blocks.append(
            sparse.csr_matrix(
                (np.ones(rows), (np.arange(rows), codes)),
                shape=(rows, len(levels) + ("<other>" not in index)),
            )
        )
    return sparse.hstack([sparse.csr_matrix(b) if isinstance(b, np.ndarray) else b
                          for b in blocks], format="csr")  # fmt: skip


def test_categorical_partitions_are_csr_and_equal_fit_on_the_same_csr_matrix(client):
    frame = holes(table(seed=20))
    parts = dd.from_pandas(frame, npartitions=3)
    result = fastgd_dask.fit(parts, target="price", standardize=False, client=client, **FULL)
    kept = frame[frame["price"].notna()]
    levels = ["Ideal", "Good", "Fair", "Poor", "<other>", "<missing>"]
    X = one_hot_csr(kept, ["carat"], [("cut", levels)], indicators=["carat"])
    assert result.extras["feature_names"] == ["carat", "carat=missing"] + [
        f"cut={level}" for level in levels
    ]
    reference = fastgd.fit(X, kept["price"].to_numpy(), **FULL)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    assert result.intercept == pytest.approx(reference.intercept, rel=FULL_BATCH_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)
    # The blocks the workers keep are CSR (one entry per categorical column a row); a
    # frame without a categorical column stays dense.
    layout = _frames.Layout(features=("carat", "cut"), categorical=("cut",), target="price",
                            columns=tuple(frame.columns), numeric_target=True)  # fmt: skip
    encoding = result.extras["encoding"]
    X_block, _ = fastgd_dask._encoded_block(kept, None, 0, layout, encoding, np.float32)
    assert sparse.issparse(X_block) and X_block.format == "csr" and X_block.has_canonical_format
    assert X_block.dtype == np.float32 and X_block.nnz == 3 * len(kept)
    assert not sparse.issparse(fastgd_dask.transform(
        fastgd_dask.fit(dd.from_pandas(frame[["carat", "price"]], npartitions=2),
                        target="price", client=client, max_iter=1).extras["encoding"],
        frame[["carat"]],
    ))  # fmt: skip


def test_minibatch_modes_train_on_csr_blocks(client):
    frame = table(seed=21)
    parts = dd.from_pandas(frame, npartitions=1)
    options = dict(strategy="minibatch", batch_size=16, learning_rate="constant", eta0=0.05,
                   shuffle=False, max_iter=3, tol=None, random_state=0,
                   standardize=False)  # fmt: skip
    averaged = fastgd_dask.fit(parts, target="price", client=client, **options)
    levels = ["Ideal", "Good", "Fair", "Poor", "<other>"]
    X = one_hot_csr(frame, ["carat"], [("cut", levels)])
    local = {k: v for k, v in options.items() if k != "standardize"}
    reference = fastgd.fit(X, frame["price"].to_numpy(), **local)
    # One partition: each round is one local epoch of fastgd.fit on the same CSR rows.
    np.testing.assert_allclose(averaged.coef, reference.coef, rtol=1e-9)
    # Sampled steps: BlockSource's, on the same CSR blocks in one process.
    sampled = fastgd_dask.fit(dd.from_pandas(frame, npartitions=4), target="price",
                              minibatch_mode="sample", fraction=0.25, client=client,
                              **options)  # fmt: skip
    settings = engine.resolve_options(**{**engine.fit_defaults(), **local, "batch_size": 100})
    blocks = engine.train(ArrayBlocks(X, frame["price"].to_numpy(), 100, 0.25), settings)
    np.testing.assert_allclose(sampled.coef, blocks.coef, rtol=FULL_BATCH_RTOL)
    np.testing.assert_allclose(sampled.loss_history, blocks.loss_history, rtol=FULL_BATCH_RTOL)
    with pytest.raises(ValueError, match=r"categorical columns \['cut'\] make sparse .*'pa1'"):
        fastgd_dask.fit(parts, target="price", strategy="sgd", learning_rate="pa1",
                        client=client)  # fmt: skip


def test_a_column_of_5000_levels_trains_without_a_width_limit(client):
    # Dense blocks were capped at 2,048 features; CSR rows store one entry per category.
    rng = np.random.default_rng(22)
    n, count = 10_000, 5_000  # (all rows in the sample behind "auto", as fastgd.fit)
    shop = np.concatenate([np.arange(count), rng.integers(0, count, n - count)])
    effect = rng.standard_normal(count)
    carat = rng.standard_normal(n)
    frame = pd.DataFrame({"carat": carat, "shop": [f"s{k:04d}" for k in shop],
                          "price": carat + effect[shop]})  # fmt: skip
    # A constant step: "auto" samples rows by the source's policy (fastgd.fit caps its
    # sample by bytes of dense copies, so it would draw other rows than the workers).
    options = {**FULL, "learning_rate": "constant", "eta0": 0.5}
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=4), target="price",
                             max_categories=count + 1, standardize=False, client=client,
                             **options)  # fmt: skip
    names = result.extras["feature_names"]
    assert len(names) == 1 + count + 1 and names[-1] == "shop=<other>"
    levels = [name.removeprefix("shop=") for name in names[1:]]
    counts = frame["shop"].value_counts()
    assert [counts[level] for level in levels[:-1]] == sorted(counts, reverse=True)
    reference = fastgd.fit(one_hot_csr(frame, ["carat"], [("shop", levels)]),
                           frame["price"].to_numpy(), **options)  # fmt: skip
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL, atol=1e-14)
    assert (np.diff(result.loss_history) < 0).all()  # full-batch descent, every step
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=FULL_BATCH_RTOL)


def test_hash_features_buckets_levels_as_the_csv_encoding(client):
    frame = holes(table(seed=23))
    bits = 3
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=3), target="price",
                             hash_features=bits, standardize=False, client=client,
                             **FULL)  # fmt: skip
    assert result.extras["feature_names"] == ["carat", "carat=missing"] + [
        f"cut#{b}" for b in range(2**bits)
    ]
    kept = frame[frame["price"].notna()]

    def bucket(key):  # Encoding's: crc32 of "column\0level" (a missing cell: "\0<missing>")
        return zlib.crc32(f"cut\x00{key}".encode()) & (2**bits - 1)

    keys = kept["cut"].astype(object).where(kept["cut"].notna(), "\x00<missing>")
    buckets = [bucket(key) for key in keys]
    X = sparse.hstack([
        one_hot_csr(kept, ["carat"], [], indicators=["carat"]),
        sparse.csr_matrix((np.ones(len(kept)), (np.arange(len(kept)), buckets)),
                          shape=(len(kept), 2**bits)),
    ], format="csr")  # fmt: skip
    reference = fastgd.fit(X, kept["price"].to_numpy(), **FULL)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=FULL_BATCH_RTOL)
    # At predict time a level never seen gets its own bucket (as fit_csv's models do).
    record = json.loads(json.dumps(result.extras["encoding"].to_dict()))
    assert record["encoding"]["hash_bits"] == bits
    new = pd.DataFrame({"carat": [1.0], "cut": ["Astounding"]})
    expected = result.intercept + result.coef[0] + result.coef[2 + bucket("Astounding")]
    np.testing.assert_allclose(fastgd_dask.predict(result, new), [expected], rtol=1e-12)


def test_encoding_options_are_checked():
    frame = dd.from_pandas(table(n=20), npartitions=1)
    with pytest.raises(
        ValueError, match=r"missing='drop'; allowed values: \['impute', 'skip', 'error'\]"
    ):
        fastgd_dask.fit(frame, target="price", missing="drop", client=object())
    with pytest.raises(ValueError, match="max_categories must be >= 2"):
        fastgd_dask.fit(frame, target="price", max_categories=1, client=object())
    with pytest.raises(ValueError, match="hash_features"):
        fastgd_dask.fit(frame, target="price", hash_features=0, client=object())
    with pytest.raises(ValueError, match="hash_features"):
        fastgd_dask.fit(frame, target="price", hash_features=21, client=object())


def test_profiles_merged_over_partitions_equal_the_whole_frame():
    """The first pass's merge (Chan's moments, level counts, first missing cell) does not
    depend on how the rows are split, empty partitions included."""
    frame = holes(table(seed=18))
    layout = _frames.Layout(features=("carat", "cut"), categorical=("cut",), target="price",
                            columns=tuple(frame.columns), numeric_target=True)  # fmt: skip
    cuts = [0, 0, 150, 151, 400]  # an empty partition first
    profiles = [
        _frames.profile_partition(frame.iloc[a:b], None, i, layout, "impute")
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
    ]
    merged = _frames.merge_profiles(profiles)
    kept = frame[frame["price"].notna()]
    assert merged.rows == len(kept) and merged.missing_target == 2
    np.testing.assert_allclose(merged.mean, [kept["carat"].mean()], rtol=1e-13)
    np.testing.assert_allclose(merged.m2 / merged.count, [kept["carat"].var(ddof=0)], rtol=1e-12)
    assert merged.levels[0] == kept["cut"].value_counts().to_dict()
    assert merged.missing.tolist() == [3, 2]
    assert merged.first_missing == [(1, 3), (1, 7)]  # partition 1 starts at row 0
    # Ties between level counts are broken by the level, so every run keeps the same ones.
    assert _frames._kept_levels({"b": 2, "a": 2, "c": 5}, 3) == ["c", "a"]


def test_encoding_round_trips_as_json_and_maps_unseen_levels_to_other():
    import json

    frame = table(n=40, seed=19)
    layout = _frames.Layout(features=("carat", "cut"), categorical=("cut",), target="price",
                            columns=tuple(frame.columns), numeric_target=True)  # fmt: skip
    profile = _frames.profile_partition(frame, None, 0, layout, "impute")
    encoding = _frames.FrameEncoding.learn(profile, layout, standardize=True, missing="impute",
                                           max_categories=2)  # fmt: skip
    again = _frames.FrameEncoding.from_dict(json.loads(json.dumps(encoding.to_dict())))
    assert again.feature_names == encoding.feature_names == ["carat", "cut=Ideal", "cut=<other>"]
    new = pd.DataFrame({"carat": [1.0, None], "cut": ["Poor", None]})
    X = _frames.transform(again, new)  # CSR: the encoding has a categorical column
    np.testing.assert_array_equal(X.toarray(), [[1.0, 0.0, 1.0], [frame["carat"].mean(), 0.0, 1.0]])
