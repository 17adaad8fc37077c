"""fastgd.dask.fit with k > 1 outputs: more than two classes (one-vs-rest), the softmax
model, and k target columns (multi-output regression), in minibatch_mode="average"."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask.array as da
import dask.dataframe as dd
import pandas as pd

import fastgd
import fastgd.dask as fastgd_dask
from fastgd.errors import DivergenceError

#: The same kernels on the same rows in the same order: equal up to float rounding.
SAME_RTOL = 1e-12
#: Plain constant-step SGD over the rows in order (the local epochs are then reproducible).
STEPS = dict(learning_rate="constant", eta0=0.05, shuffle=False, batch_size=8, tol=None)


def classes_problem(k, n=480, d=4, seed=0):
    """Labels 10, 20, ... of the k classes whose score ``x·w_c`` is the largest."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((k, d))
    labels = 10.0 * (1 + (X @ W.T + 0.3 * rng.standard_normal((n, k))).argmax(axis=1))
    return X, labels


def targets_problem(k=3, n=480, d=4, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * [1.0, 5.0, 0.2, 2.0] + [3.0, -1.0, 0.0, 10.0]
    W = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    return X, X @ W.T + b + 0.01 * rng.standard_normal((n, k)), W, b


def mixed_reference(X, y, chunks, rounds, **options):
    """The rounds of parameter mixing computed by hand: each partition's one-epoch
    ``fastgd.fit`` from the mixed model, averaged weighted by rows."""
    bounds = np.cumsum([0, *chunks])
    W = b = None
    t = 1.0
    for _ in range(rounds):
        fits = [
            fastgd.fit(X[lo:hi], y[lo:hi], coef_init=W, intercept_init=b, t_init=t, max_iter=1,
                       **options)
            for lo, hi in itertools.pairwise(bounds)
        ]  # fmt: skip
        weights = np.asarray(chunks, dtype=np.float64) / bounds[-1]
        W = sum(w * fit.coef for w, fit in zip(weights, fits, strict=True))
        b = sum(w * fit.intercept for w, fit in zip(weights, fits, strict=True))
        t = max(fit.t for fit in fits)
    return W, b


@pytest.mark.parametrize(("k", "multiclass"), [(3, "ovr"), (4, "ovr"), (2, "multinomial"),
                                               (4, "multinomial")])  # fmt: skip
def test_one_partition_equals_fastgd_fit(client, k, multiclass):
    X, y = classes_problem(k)
    options = dict(loss="log_loss", multiclass=multiclass, max_iter=3, **STEPS)
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(480, 4)), y, client=client,
                             standardize=False, **options)  # fmt: skip
    assert isinstance(result, fastgd.multi.MultiFitResult)
    assert result.coef.shape == (k, 4) and result.intercept.shape == (k,)
    np.testing.assert_array_equal(result.classes, 10.0 * np.arange(1, k + 1))
    assert result.multiclass == multiclass
    np.testing.assert_allclose(result.coef, reference.coef, rtol=SAME_RTOL)
    np.testing.assert_allclose(result.intercept, reference.intercept, rtol=SAME_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=SAME_RTOL)
    assert result.t == reference.t


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_one_partition_carries_the_rules_state_from_round_to_round(client, optimizer):
    """Each round starts from the driver's slots and step counter: on one partition,
    three rounds are fastgd.fit's three epochs of the same rule."""
    X, y = classes_problem(3)
    options = dict(loss="log_loss", multiclass="multinomial", optimizer=optimizer,
                   max_iter=3, **{**STEPS, "eta0": 0.01})  # fmt: skip
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(480, 4)), y, client=client,
                             standardize=False, **options)  # fmt: skip
    assert result.slots.shape == reference.slots.shape == (3, result.slots.shape[1], 5)
    np.testing.assert_allclose(result.slots, reference.slots, rtol=SAME_RTOL, atol=1e-15)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=SAME_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=SAME_RTOL)


def test_float32_blocks_keep_the_labels_as_given(client):
    X, y = classes_problem(3, seed=8)
    X, y = X.astype(np.float32), y / 100.0  # 0.1, 0.2, 0.3: not float32 numbers
    options = dict(loss="log_loss", max_iter=2, **STEPS)
    reference = fastgd.fit(X, y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(480, 4)), y, client=client,
                             standardize=False, **options)  # fmt: skip
    assert result.coef.dtype == np.float32
    np.testing.assert_array_equal(result.classes, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(result.coef, reference.coef, rtol=1e-6)
    assert set(fastgd_dask.predict(result, X)) <= {0.1, 0.2, 0.3}


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
def test_rounds_average_the_partitions_local_epochs(client, multiclass):
    X, y = classes_problem(4, seed=2)
    chunks = (100, 230, 150)
    classes = np.unique(y)
    options = dict(loss="log_loss", multiclass=multiclass, **STEPS)
    W, b = mixed_reference(X, y, chunks, rounds=2, classes=classes, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(chunks, 4)), y, client=client,
                             standardize=False, max_iter=2, **options)  # fmt: skip
    np.testing.assert_allclose(result.coef, W, rtol=1e-10)
    np.testing.assert_allclose(result.intercept, b, rtol=1e-10, atol=1e-14)
    assert result.extras["dask"]["partitions"] == 3 and result.n_iter == 2
    assert len(result.extras["dask"]["step_seconds"]) == 2


@pytest.mark.parametrize("multiclass", ["ovr", "multinomial"])
def test_accuracy_and_probabilities_close_to_fastgd_fit(client, multiclass):
    X, y = classes_problem(3, seed=3)
    X = X * [1.0, 10.0, 0.1, 3.0] + 5.0  # the scaler must be folded into the k rows
    options = dict(loss="log_loss", multiclass=multiclass, max_iter=20, random_state=0)
    reference = fastgd.fit((X - X.mean(axis=0)) / X.std(axis=0), y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(120, 4)), y, client=client, **options)
    expected = (reference.predict((X - X.mean(axis=0)) / X.std(axis=0)) == y).mean()
    predicted = fastgd_dask.predict(result, X)
    assert predicted.shape == (480,) and set(predicted) <= set(result.classes)
    assert (predicted == y).mean() >= expected - 0.02
    proba = result.predict_proba(fastgd_dask.transform(result.extras["encoding"], X))
    assert proba.shape == (480, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(result.classes[proba.argmax(axis=1)], predicted)
    # The raw-space weights give the trained (standardised-space) scores.
    scaler = result.extras["scaler"]
    standardized = (X - scaler["mean"]) / scaler["scale"]
    np.testing.assert_allclose(
        result.decision_function(X),
        standardized @ result.extras["standardized_coef"].T
        + result.extras["standardized_intercept"],
        rtol=1e-9, atol=1e-9,
    )  # fmt: skip


def test_dataframe_with_a_label_column_and_a_category(client):
    X, y = classes_problem(3, n=400, seed=4)
    shop = np.where(X[:, 3] > 0.5, "high", np.where(X[:, 3] < -0.5, "low", "mid"))
    frame = pd.DataFrame(
        {
            "a": X[:, 0],
            "b": X[:, 1],
            "c": X[:, 2],
            "shop": pd.array(shop, dtype="string"),
            "label": y.astype(int),
        }
    )
    parts = dd.from_pandas(frame, npartitions=3)
    result = fastgd_dask.fit(parts, target="label", loss="log_loss", multiclass="multinomial",
                             max_iter=15, random_state=0, client=client)  # fmt: skip
    assert result.coef.shape == (3, len(result.extras["feature_names"]))
    assert "shop=mid" in result.extras["feature_names"]
    np.testing.assert_array_equal(result.classes, [10, 20, 30])
    on_frame = fastgd_dask.predict(result, parts)
    assert isinstance(on_frame, dd.Series)
    labels = on_frame.compute()
    assert labels.dtype == np.int64 and (labels.to_numpy() == y).mean() > 0.8
    np.testing.assert_array_equal(fastgd_dask.predict(result, frame), labels.to_numpy())
    ovr = fastgd_dask.fit(parts, target="label", loss="hinge", max_iter=15, random_state=0,
                          client=client)  # fmt: skip
    assert ovr.multiclass == "ovr" and ovr.coef.shape[0] == 3
    assert (fastgd_dask.predict(ovr, frame) == y).mean() > 0.8


def test_target_columns_on_one_partition_equal_fastgd_fit(client):
    X, Y, _, _ = targets_problem()
    options = dict(STEPS, max_iter=3, eta0=0.002)
    reference = fastgd.fit(X, Y, **options)
    result = fastgd_dask.fit(da.from_array(X, chunks=(480, 4)), Y, client=client,
                             standardize=False, **options)  # fmt: skip
    assert result.classes is None and result.coef.shape == (3, 4)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=SAME_RTOL)
    np.testing.assert_allclose(result.intercept, reference.intercept, rtol=SAME_RTOL)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=SAME_RTOL)


def test_target_columns_reach_the_model_in_raw_space(client):
    X, Y, W, b = targets_problem()
    result = fastgd_dask.fit(da.from_array(X, chunks=(160, 4)), da.from_array(Y, chunks=(160, 3)),
                             max_iter=30, random_state=0, client=client)  # fmt: skip
    np.testing.assert_allclose(result.coef, W, atol=0.02)
    np.testing.assert_allclose(result.intercept, b, atol=0.05)
    assert fastgd_dask.predict(result, X).shape == (480, 3)
    # Starting from the model (raw space) with a tiny step keeps it.
    again = fastgd_dask.fit(da.from_array(X, chunks=(160, 4)), Y, coef_init=result.coef,
                            intercept_init=result.intercept, learning_rate="constant",
                            eta0=1e-12, max_iter=1, client=client)  # fmt: skip
    np.testing.assert_allclose(again.coef, result.coef, rtol=1e-6)
    np.testing.assert_allclose(again.intercept, result.intercept, rtol=1e-6)


def test_target_columns_of_a_dataframe_with_missing_targets(client):
    X, Y, _, _ = targets_problem(k=2, n=300)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    targets = pd.DataFrame(Y, columns=["low", "high"])
    targets.loc[[5, 150], "high"] = np.nan  # these rows have no whole target: dropped
    result = fastgd_dask.fit(dd.from_pandas(frame, npartitions=2),
                             dd.from_pandas(targets, npartitions=2), max_iter=20,
                             random_state=0, client=client)  # fmt: skip
    assert result.extras["skipped"]["missing_target"] == 2 and result.extras["rows"] == 298
    assert result.extras["targets"] == ["low", "high"]
    predicted = fastgd_dask.predict(result, dd.from_pandas(frame, npartitions=2))
    assert isinstance(predicted, dd.DataFrame) and list(predicted.columns) == ["low", "high"]
    values = predicted.compute().to_numpy()
    np.testing.assert_allclose(values, fastgd_dask.predict(result, frame), rtol=1e-12)
    assert np.abs(values - Y).max() < 0.1


def test_divergence_is_an_error_with_k_outputs(client):
    X, y = classes_problem(3, seed=5)
    with pytest.raises(
        DivergenceError, match=r"diverged in epoch \d: the loss became non-f"
    ) as caught:
        fastgd_dask.fit(da.from_array(X * 1e150, chunks=(240, 4)), y, loss="hinge",
                        learning_rate="constant", eta0=1e150, standardize=False,
                        client=client)  # fmt: skip
    # The error keeps the last finite model (k rows).
    assert caught.value.coef.shape == (3, 4) and np.isfinite(caught.value.coef).all()


def test_bad_input_with_k_outputs_gives_clear_errors(client):
    X, y = classes_problem(3, n=60, seed=6)
    chunked = da.from_array(X, chunks=(30, 4))
    text = np.array(["a", "b", "c"])[(y / 10 - 1).astype(int)]
    with pytest.raises(ValueError, match=r"not numbers.*map the labels to numbers"):
        fastgd_dask.fit(chunked, text, loss="log_loss", client=client)
    with pytest.raises(ValueError, match=r"does not cover y's labels: \[30.0\]"):
        fastgd_dask.fit(chunked, y, loss="log_loss", classes=[10.0, 20.0, 40.0], client=client)
    with pytest.raises(ValueError, match=r"3 target columns.*classification loss"):
        fastgd_dask.fit(chunked, np.column_stack([y, y, y]), loss="hinge", client=client)
    with pytest.raises(ValueError, match=r"strategy='full' with 3 classes: .*minibatch_mode="):
        fastgd_dask.fit(chunked, y, loss="log_loss", strategy="full", client=client)
    with pytest.raises(ValueError, match=r"minibatch_mode='sample' with 3 classes"):
        fastgd_dask.fit(chunked, y, loss="log_loss", minibatch_mode="sample", client=client)
    with pytest.raises(ValueError, match=r"optimizer='saga' keeps one stored derivative per row"):
        fastgd_dask.fit(chunked, np.column_stack([y, y, y]), optimizer="saga", client=client)
    with pytest.raises(ValueError, match=r"optimizer='adam' with learning_rate='auto' with 3"):
        fastgd_dask.fit(chunked, y, loss="log_loss", optimizer="adam", client=client)
    with pytest.raises(ValueError, match="softmax model of loss='log_loss'"):
        fastgd_dask.fit(chunked, y, loss="hinge", multiclass="multinomial", client=client)


def test_rounds_that_keep_failing_raise_worker_lost_with_the_k_rows(client, monkeypatch):
    X, y = classes_problem(3, n=240, seed=7)
    monkeypatch.setattr(fastgd_dask, "RETRY_PAUSE", 0.0)
    calls = {"n": 0}
    original = fastgd_dask._DaskSource._submit_each

    def failing_submit(self, function, *arguments, seeds=None):
        if function is fastgd_dask._local_k_epoch:
            calls["n"] += 1
            if calls["n"] > 2:  # rounds 1 and 2 run; every attempt of round 3 fails
                raise ConnectionResetError("worker went away")  # an OSError: "lost"
        return original(self, function, *arguments, seeds=seeds)

    monkeypatch.setattr(fastgd_dask._DaskSource, "_submit_each", failing_submit)
    options = dict(loss="log_loss", multiclass="multinomial", standardize=False, **STEPS)
    chunked = da.from_array(X, chunks=(120, 4))
    with pytest.raises(fastgd_dask.WorkerLostError, match="Step 3 failed 3 times") as caught:
        fastgd_dask.fit(chunked, y, max_iter=5, client=client, **options)
    assert caught.value.step == 3 and calls["n"] == 5
    monkeypatch.setattr(fastgd_dask._DaskSource, "_submit_each", original)
    good = fastgd_dask.fit(chunked, y, max_iter=2, client=client, **options)
    np.testing.assert_array_equal(caught.value.coef, good.coef)
    np.testing.assert_array_equal(caught.value.intercept, good.intercept)
